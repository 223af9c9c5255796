//! VirtualService-style routes: a host named by a route reaches only what its routes allow.
//!
//! Hosts are looked up most specific first, as Istio picks the VirtualService for a host: the
//! exact name, then `*.suffix` wildcards from the longest suffix to the shortest, then `*`. All
//! routes that name the winning host pattern are merged: any of their matches admits.

use std::collections::HashMap;

use regex::Regex;

use crate::config::{HttpMatchConfig, RouteConfig, StringMatchConfig};
use crate::error::ConfigError;
use crate::expr::one_line;
use crate::request::Request;

#[derive(Debug)]
pub enum StringMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    /// A prefix of whole path segments.
    PathPrefix(Box<str>),
    /// Anchored: must match the whole value, as Envoy's `safe_regex`.
    Regex(Regex),
}

impl StringMatch {
    /// `on_path`: the condition applies to a URI, where `prefix` means whole segments.
    fn compile(config: &StringMatchConfig, path: &str, on_path: bool) -> Result<Self, ConfigError> {
        match (
            &config.exact,
            &config.prefix,
            &config.raw_prefix,
            &config.regex,
        ) {
            (Some(exact), None, None, None) => Ok(Self::Exact(exact.as_str().into())),
            (None, Some(prefix), None, None) if on_path => {
                Ok(Self::PathPrefix(prefix.as_str().into()))
            }
            (None, Some(prefix), None, None) | (None, None, Some(prefix), None) => {
                Ok(Self::Prefix(prefix.as_str().into()))
            }
            (None, None, None, Some(regex)) => Regex::new(&format!("^(?:{regex})$"))
                .map(Self::Regex)
                .map_err(|e| {
                    ConfigError::new(
                        format!("{path}.regex"),
                        format!("invalid regex: {}", one_line(&e.to_string())),
                    )
                }),
            _ => Err(ConfigError::new(
                path,
                "exactly one of exact, prefix, rawPrefix, regex is required",
            )),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => **exact == *value,
            Self::Prefix(prefix) => value.starts_with(&**prefix),
            Self::PathPrefix(prefix) => has_path_prefix(value, prefix),
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

/// `/sport` is a path prefix of `/sport` and `/sport/x`, not of `/sports`.
pub fn has_path_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[derive(Debug)]
pub struct HttpMatch {
    uri: Option<StringMatch>,
    method: Option<StringMatch>,
    headers: Vec<(Box<str>, StringMatch)>,
}

impl HttpMatch {
    fn compile(
        config: &HttpMatchConfig,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Self> {
        let before = errors.len();
        let mut compile = |m: &StringMatchConfig, field: String, on_path: bool| {
            StringMatch::compile(m, &field, on_path)
                .map_err(|e| errors.push(e))
                .ok()
        };
        let uri = config
            .uri
            .as_ref()
            .and_then(|m| compile(m, format!("{path}.uri"), true));
        let method = config
            .method
            .as_ref()
            .and_then(|m| compile(m, format!("{path}.method"), false));
        let headers = config
            .headers
            .iter()
            .filter_map(|(name, m)| {
                let compiled = compile(m, format!("{path}.headers.{name}"), false)?;
                Some((name.to_ascii_lowercase().into_boxed_str(), compiled))
            })
            .collect();
        // A match with a broken condition must not survive as a looser one.
        (errors.len() == before).then_some(HttpMatch {
            uri,
            method,
            headers,
        })
    }

    fn matches(&self, request: &Request) -> bool {
        let test = |m: &Option<StringMatch>, value: Option<&str>| match m {
            None => true,
            Some(m) => value.is_some_and(|v| m.matches(v)),
        };
        test(&self.uri, request.url_path())
            && test(&self.method, request.method.as_deref())
            && self
                .headers
                .iter()
                .all(|(name, m)| request.header(name).is_some_and(|v| m.matches(v)))
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    matches: Vec<HttpMatch>,
}

/// What the routes say about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOutcome {
    /// No route names the host: routes do not restrict it.
    Unrouted,
    /// Route `0` admitted the request.
    Admitted(usize),
    /// The host has routes, the first being `0`, and none matched.
    Refused(usize),
    /// Routes exist but the request has no usable host.
    HostUnknown,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<Box<str>, Vec<usize>>,
    /// `*.cnn.com` stored as `.cnn.com`.
    wildcard: HashMap<Box<str>, Vec<usize>>,
    any: Vec<usize>,
}

impl RouteTable {
    pub fn compile(configs: &[RouteConfig], errors: &mut Vec<ConfigError>) -> Self {
        let mut table = RouteTable::default();
        for (i, config) in configs.iter().enumerate() {
            let path = format!("routes[{i}]");
            let name = config.name.clone().unwrap_or_else(|| path.clone());
            if let Some(name) = &config.name
                && let Err(message) = super::check_name(name)
            {
                errors.push(ConfigError::new(format!("{path}.name"), message));
            }
            if config.hosts.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.hosts"),
                    "at least one host is required",
                ));
            }
            for (h, host) in config.hosts.iter().enumerate() {
                let host_path = format!("{path}.hosts[{h}]");
                match host_key(host) {
                    Ok(HostKey::Exact(key)) => table.exact.entry(key.into()).or_default().push(i),
                    Ok(HostKey::Suffix(key)) => {
                        table.wildcard.entry(key.into()).or_default().push(i)
                    }
                    Ok(HostKey::Any) => table.any.push(i),
                    Err(message) => errors.push(ConfigError::new(host_path, message)),
                }
            }
            let matches = config
                .match_
                .iter()
                .enumerate()
                .filter_map(|(m, match_config)| {
                    HttpMatch::compile(match_config, &format!("{path}.match[{m}]"), errors)
                })
                .collect();
            table.routes.push(Route { name, matches });
        }
        table
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn route(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// Exact host names and wildcard suffixes (without `*.`) the routes name.
    pub fn host_literals(&self) -> (Vec<String>, Vec<String>) {
        let names = self.exact.keys().map(|k| k.to_string()).collect();
        let suffixes = self
            .wildcard
            .keys()
            .map(|k| k.trim_start_matches('.').to_owned())
            .collect();
        (names, suffixes)
    }

    /// Whether any route matches on this header, so the adapter knows to read it.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .flat_map(|r| r.matches.iter())
            .flat_map(|m| m.headers.iter().map(|(name, _)| &**name))
    }

    fn routes_for(&self, host: &str) -> Option<&[usize]> {
        if let Some(routes) = self.exact.get(host) {
            return Some(routes);
        }
        if !self.wildcard.is_empty() {
            for (i, _) in host.match_indices('.') {
                if i == 0 {
                    continue;
                }
                if let Some(routes) = host.get(i..).and_then(|suffix| self.wildcard.get(suffix)) {
                    return Some(routes);
                }
            }
        }
        if self.any.is_empty() {
            None
        } else {
            Some(&self.any)
        }
    }

    pub fn check(&self, request: &Request) -> RouteOutcome {
        if self.routes.is_empty() {
            return RouteOutcome::Unrouted;
        }
        let Some(host) = request.host.as_deref() else {
            return RouteOutcome::HostUnknown;
        };
        let Some(candidates) = self.routes_for(host) else {
            return RouteOutcome::Unrouted;
        };
        for &index in candidates {
            if let Some(route) = self.routes.get(index)
                && (route.matches.is_empty() || route.matches.iter().any(|m| m.matches(request)))
            {
                return RouteOutcome::Admitted(index);
            }
        }
        RouteOutcome::Refused(candidates.first().copied().unwrap_or(0))
    }
}

enum HostKey {
    Exact(String),
    Suffix(String),
    Any,
}

fn host_key(host: &str) -> Result<HostKey, String> {
    if host == "*" {
        return Ok(HostKey::Any);
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || !name.split('.').all(valid_label) {
        return Err(format!(
            "'{host}' is not a host name or a wildcard like '*.example.com' (no ports, no trailing dot)"
        ));
    }
    let name = name.to_ascii_lowercase();
    Ok(if wildcard {
        HostKey::Suffix(format!(".{name}"))
    } else {
        HostKey::Exact(name)
    })
}
