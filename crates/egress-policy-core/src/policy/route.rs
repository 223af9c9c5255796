//! VirtualService-style routes: a host named by a route reaches only what its routes allow.
//!
//! Hosts are looked up most specific first, as Istio picks the VirtualService for a host: the
//! exact name, then `*.suffix` wildcards from the longest suffix to the shortest, then `*`. All
//! routes that name the winning host pattern are merged: any of their matches admits.

use regex::Regex;

use super::matchers::{HostPattern, HostTable, PathPrefix};
use crate::config::{HttpMatchConfig, RouteConfig, StringMatchConfig};
use crate::error::ConfigError;
use crate::expr::one_line;
use crate::request::Request;

#[derive(Debug)]
pub enum StringMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    /// A prefix of whole path segments.
    PathPrefix(PathPrefix),
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
            (None, Some(prefix), None, None) if on_path => PathPrefix::parse(prefix)
                .map(Self::PathPrefix)
                .map_err(|message| ConfigError::new(format!("{path}.prefix"), message)),
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
            Self::PathPrefix(prefix) => prefix.matches(value),
            Self::Regex(regex) => regex.is_match(value),
        }
    }
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
        for name in config.headers.keys() {
            let field = format!("{path}.headers.{name}");
            errors.extend(super::compile::stripped_header_error(
                &field,
                &name.to_ascii_lowercase(),
            ));
        }
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
    /// Route indices by host pattern: the routes that name the same pattern are merged.
    hosts: HostTable<Vec<usize>>,
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
                match HostPattern::parse(host) {
                    Ok(pattern) => table.hosts.entry(pattern, Vec::new).push(i),
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

    /// The host patterns the routes name.
    pub fn host_patterns(&self) -> impl Iterator<Item = HostPattern> + '_ {
        self.hosts.iter().map(|(pattern, _)| pattern)
    }

    /// Whether any route matches on this header, so the adapter knows to read it.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .flat_map(|r| r.matches.iter())
            .flat_map(|m| m.headers.iter().map(|(name, _)| &**name))
    }

    pub fn check(&self, request: &Request) -> RouteOutcome {
        if self.routes.is_empty() {
            return RouteOutcome::Unrouted;
        }
        let Some(host) = request.host.as_deref() else {
            return RouteOutcome::HostUnknown;
        };
        let Some(candidates) = self.hosts.lookup(host) else {
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
