//! `compile(config) -> Policy`, once, when the configuration loads: every expression parsed and
//! type-checked, every list indexed, every name and reply checked. Each part of the
//! configuration has its own step; all of them report every problem with its field path, and any
//! problem refuses the whole configuration.

use crate::evidence::CheckpointEvery;
use std::collections::BTreeMap;

use super::list::EntryIndex;
use super::matchers::{HostPattern, HostTable};
use super::provider::Provider;
use super::route::RouteTable;
use super::{DenyReply, List, LogField, Policy, Rule, check_name};
use crate::addresses::AddressGuard;
use crate::attributes::Attr;
use crate::config::{self, PluginConfig};
use crate::error::{ConfigError, ConfigErrors};
use crate::expr::{self, Expr, Needs, Type, Use};
use crate::request::is_stripped_header;

/// What the steps share: the problems found so far and what the compiled expressions read.
#[derive(Default)]
struct Compiler {
    errors: Vec<ConfigError>,
    /// What decisions read (request phase).
    decision_needs: Needs,
    /// What log fields read (response phase).
    log_needs: Needs,
}

impl Policy {
    /// Compiles a parsed configuration, reporting every problem with its field path.
    pub fn compile(config: &PluginConfig) -> Result<Self, ConfigErrors> {
        let mut compiler = Compiler::default();
        compiler.reply_settings(config);
        let log_fields = compiler.log_fields(config);
        let lists = compiler.lists(config);
        let deny = global_deny(config);
        let rules = compiler.rules(config, &deny);
        compiler.identity(&config.identity);
        let safe_method_bodies = compiler.safe_method_bodies(&config.allow_safe_method_bodies);
        let routes = RouteTable::compile(&config.routes, &mut compiler.errors);
        let checkpoint_every = compiler.checkpoint_every(&config.log);
        let address_guard = AddressGuard::compile(&config.address_guard).unwrap_or_else(|errors| {
            compiler.errors.extend(errors);
            AddressGuard::default()
        });
        if config.rules.is_empty() && config.routes.is_empty() {
            compiler.errors.push(ConfigError::new(
                "",
                "the configuration has no rules and no routes: it would decide nothing and let every request through; \
                 add a rule or a route (a rule with only 'log' monitors without refusing anything)",
            ));
        }
        if !routes.is_empty() {
            for attr in [Attr::RequestHost, Attr::RequestUrlPath, Attr::RequestMethod] {
                compiler.decision_needs.add(attr);
            }
        }
        for name in routes.header_names() {
            compiler.decision_needs.headers.insert(name.to_owned());
        }

        let Compiler {
            errors,
            decision_needs,
            log_needs,
        } = compiler;
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut reads = decision_needs.clone();
        reads.merge(&log_needs);
        Ok(Policy {
            deny,
            reads,
            trust_domain: config.identity.trust_domain.clone(),
            trusted_header: config
                .identity
                .trusted_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            safe_method_bodies,
            address_guard,
            deny_status: config.deny_status,
            instance: config.log.instance.clone(),
            version: crate::evidence::policy_version(
                &serde_json::to_value(config).unwrap_or_default(),
            ),
            checkpoint_every,
            log_fields,
            lists,
            rules,
            routes,
            decision_needs,
            log_needs,
        })
    }
}

/// The fields the filter writes itself: no configured field may take their names, or a line
/// would carry two of them and a reader take either.
pub const RESERVED_LOG_FIELDS: [&str; 14] = [
    "level",
    "time",
    "instance",
    "policyVersion",
    "stream",
    "seq",
    "chain",
    "checkpoint",
    "relayed",
    "rejected",
    "addressGuard",
    "wouldDeny",
    "identityError",
    "listVersions",
];

impl Compiler {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// `log.checkpointLines`, `log.checkpointInterval`.
    fn checkpoint_every(&mut self, log: &crate::config::LogConfig) -> CheckpointEvery {
        if log.checkpoint_lines == 0 {
            self.error("log.checkpointLines", "must be at least 1");
        }
        let micros = match crate::duration::parse_micros(&log.checkpoint_interval) {
            Ok(micros) if micros > 0 => micros,
            Ok(_) => {
                self.error("log.checkpointInterval", "must be longer than 0s");
                0
            }
            Err(message) => {
                self.error("log.checkpointInterval", message);
                0
            }
        };
        CheckpointEvery {
            lines: u64::from(log.checkpoint_lines),
            micros,
        }
    }

    /// `denyStatus`, `denyHeaders` and `log.instance`.
    fn reply_settings(&mut self, config: &PluginConfig) {
        if !(200..=599).contains(&config.deny_status) {
            self.error(
                "denyStatus",
                format!("{} is not an HTTP status (200..=599)", config.deny_status),
            );
        }
        check_reply(None, &config.deny_headers, "denyHeaders", &mut self.errors);
        if config.log.instance.is_empty() {
            self.error("log.instance", "must not be empty");
        }
    }

    /// Compiles an expression for `path`; records what it reads, or why it is refused.
    fn value(&mut self, path: &str, source: &str, usage: Use) -> Option<(Expr, Type)> {
        match expr::compile_value(source, usage) {
            Ok((value, ty, needs)) => {
                check_stripped_headers(path, &needs, &mut self.errors);
                match usage {
                    Use::Decision => self.decision_needs.merge(&needs),
                    Use::Log => self.log_needs.merge(&needs),
                }
                Some((value, ty))
            }
            Err(e) => {
                self.error(path, e.to_string());
                None
            }
        }
    }

    fn log_fields(&mut self, config: &PluginConfig) -> Vec<LogField> {
        let mut fields = Vec::new();
        for (name, source) in &config.log.fields {
            let path = format!("log.fields.{name}");
            if RESERVED_LOG_FIELDS.contains(&name.as_str()) || name.is_empty() {
                self.error(
                    &path,
                    format!(
                        "this field name is reserved ({} are written by the filter)",
                        RESERVED_LOG_FIELDS.join(", ")
                    ),
                );
                continue;
            }
            match self.value(&path, source, Use::Log) {
                Some((_, Type::Map)) => self.error(&path, "a map cannot be logged; index it"),
                Some((value, _)) => fields.push(LogField {
                    name: name.clone(),
                    value,
                }),
                None => {}
            }
        }
        fields
    }

    fn lists(&mut self, config: &PluginConfig) -> Vec<List> {
        let mut lists = Vec::new();
        for (name, list) in &config.lists {
            let path = format!("lists.{name}");
            if let Err(message) = check_name(name) {
                self.error(&path, format!("list name {message}"));
            }
            let value_path = format!("{path}.value");
            let value = match self.value(&value_path, &list.value, Use::Decision) {
                Some((value, Type::String)) => Some(value),
                Some((_, other)) => {
                    self.error(
                        &value_path,
                        format!("must yield a string, found {}", other.name()),
                    );
                    None
                }
                None => None,
            };
            let entries = match EntryIndex::build(list.entry_type, &list.entries) {
                Ok(entries) => Some(entries),
                Err(entry_errors) => {
                    for e in entry_errors {
                        let field = match e.index {
                            Some(index) => format!("{path}.entries[{index}]"),
                            None => format!("{path}.entries"),
                        };
                        self.error(field, e.message);
                    }
                    None
                }
            };
            // A provider that fails to compile has pushed its errors: the policy is refused.
            let provider = list
                .provider
                .as_ref()
                .and_then(|p| Provider::compile(p, &format!("{path}.provider"), &mut self.errors));
            if let (Some(value), Some(entries)) = (value, entries) {
                lists.push(List {
                    name: name.clone(),
                    value,
                    blacklist: list.blacklist,
                    entry_type: list.entry_type,
                    entries,
                    provider,
                    dry_run: list.dry_run,
                });
            }
        }
        lists
    }

    fn rules(&mut self, config: &PluginConfig, global: &DenyReply) -> Vec<Rule> {
        let mut rules = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            if let Err(message) = check_name(&rule.name) {
                self.error(format!("{path}.name"), message);
            } else if config.rules.iter().take(i).any(|r| r.name == rule.name) {
                self.error(
                    format!("{path}.name"),
                    format!("'{}' is already the name of an earlier rule", rule.name),
                );
            }
            let condition = match &rule.match_ {
                None => None,
                Some(source) => {
                    let match_path = format!("{path}.match");
                    match expr::compile_condition(source, Use::Decision) {
                        Ok((condition, needs)) => {
                            check_stripped_headers(&match_path, &needs, &mut self.errors);
                            self.decision_needs.merge(&needs);
                            Some(condition)
                        }
                        Err(e) => {
                            self.error(match_path, e.to_string());
                            continue;
                        }
                    }
                }
            };
            let mut checks = Vec::new();
            for (c, list_name) in rule.check.iter().enumerate() {
                match config.lists.keys().position(|name| name == list_name) {
                    Some(index) => checks.push(index),
                    None => self.error(
                        format!("{path}.check[{c}]"),
                        format!(
                            "unknown list '{list_name}'; lists defined: {}",
                            known(config.lists.keys())
                        ),
                    ),
                }
            }
            if rule.log.is_none() && rule.check.is_empty() {
                self.error(
                    &path,
                    "a rule needs 'log', 'check' or both; this one does nothing",
                );
            }
            if let Some(reply) = &rule.deny {
                check_reply(
                    reply.status,
                    &reply.headers,
                    &format!("{path}.deny"),
                    &mut self.errors,
                );
            }
            rules.push(Rule {
                name: rule.name.clone(),
                condition,
                log: rule.log,
                checks,
                dry_run: rule.dry_run,
                deny: rule_deny(rule.deny.as_ref(), global),
            });
        }
        rules
    }

    fn identity(&mut self, identity: &config::IdentityConfig) {
        if !identity
            .trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            || identity.trust_domain.is_empty()
        {
            self.error(
                "identity.trustDomain",
                format!(
                    "'{}' is not a trust domain (lower-case letters, digits, '.', '-', '_')",
                    identity.trust_domain
                ),
            );
        }
        if let Some(header) = &identity.trusted_header
            && !is_header_name(header)
        {
            self.error(
                "identity.trustedHeader",
                format!("'{header}' is not a header name"),
            );
        }
    }

    fn safe_method_bodies(&mut self, hosts: &[String]) -> HostTable<()> {
        let mut table = HostTable::default();
        for (i, host) in hosts.iter().enumerate() {
            match HostPattern::parse(host) {
                Ok(pattern) => {
                    table.entry(pattern, || ());
                }
                Err(message) => self.error(format!("allowSafeMethodBodies[{i}]"), message),
            }
        }
        table
    }
}

/// The global local reply (`denyStatus`, `denyBody`, `denyHeaders`).
fn global_deny(config: &PluginConfig) -> DenyReply {
    DenyReply {
        status: config.deny_status,
        body: config.deny_body.clone().unwrap_or_default(),
        headers: config
            .deny_headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .collect(),
    }
}

/// A rule's reply: its own `deny` over the global one, header by header.
fn rule_deny(reply: Option<&config::DenyReplyConfig>, global: &DenyReply) -> DenyReply {
    let Some(reply) = reply else {
        return global.clone();
    };
    let mut headers = global.headers.clone();
    for (name, value) in &reply.headers {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_ascii_lowercase(), value.clone()));
    }
    DenyReply {
        status: reply.status.unwrap_or(global.status),
        body: reply.body.clone().unwrap_or_else(|| global.body.clone()),
        headers,
    }
}

/// A header the gateway strips before forwarding is never visible to the policy: deciding or
/// logging on it would silently read nothing.
pub(crate) fn stripped_header_error(path: &str, name: &str) -> Option<ConfigError> {
    is_stripped_header(name.as_bytes()).then(|| {
        ConfigError::new(
            path,
            format!(
                "request.headers[\"{name}\"] is always absent: the gateway strips that header before forwarding (README: Security)"
            ),
        )
    })
}

fn check_stripped_headers(path: &str, needs: &Needs, errors: &mut Vec<ConfigError>) {
    errors.extend(
        needs
            .headers
            .iter()
            .filter_map(|name| stripped_header_error(path, name)),
    );
}

/// An HTTP header name: one or more token characters (RFC 9110).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A reply's status and header names must be something Envoy can send.
fn check_reply(
    status: Option<u16>,
    headers: &BTreeMap<String, String>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(status) = status.filter(|s| !(200..=599).contains(s)) {
        errors.push(ConfigError::new(
            format!("{path}.status"),
            format!("{status} is not an HTTP status (200..=599)"),
        ));
    }
    for (name, value) in headers {
        let header_path = if path.ends_with("denyHeaders") {
            format!("{path}.{name}")
        } else {
            format!("{path}.headers.{name}")
        };
        if !is_header_name(name) {
            errors.push(ConfigError::new(
                &header_path,
                format!("'{name}' is not a header name"),
            ));
        } else if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
            errors.push(ConfigError::new(
                &header_path,
                "header values cannot contain control characters",
            ));
        }
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
