//! `egress-policy convert`: a Mixer-era egress configuration (README: Mixer and VirtualService →
//! egress-policy) as one plugin configuration.
//!
//! Reads `logentry`, `listentry` and generic `instance` resources, `stdio`, `listchecker` and
//! generic `handler` resources, `rule`s, and VirtualServices, from any number of YAML files in
//! the order given (a later resource of the same kind and name replaces an earlier one, as
//! `istioctl replace` did). Writes the configuration as JSON on standard output and says on
//! standard error, for each resource, what it could not translate and why. Nothing that would
//! change a decision is guessed: an expression the filter cannot evaluate with Mixer's meaning
//! stays as written, and the configuration is refused with the checker's error naming the
//! replacement.

#![allow(
    clippy::indexing_slicing,
    reason = "only serde_json::Value is indexed here, by key: a missing key reads as Null, never a panic"
)]

use std::process::ExitCode;

use std::collections::BTreeMap;

use egress_policy_core::config::{
    DenyReplyConfig, EntryType, ListConfig, LogConfig, LogLevel, PluginConfig, RuleConfig,
};
use egress_policy_core::policy::Policy;
use serde_json::{Value, json};

use crate::EXIT_INVALID;
use crate::load::read;

mod lists;
mod resources;
mod routes;
use lists::{list_config, listentry_value};
use resources::{Component, Resource, Resources, Role, components, find};
use routes::virtual_service_routes;

#[derive(clap::Args)]
pub struct Args {
    /// Mixer and Istio YAML files ('-' is standard input), applied in order.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<String>,
    /// Write the configuration to this file instead of standard output.
    #[arg(short, long, value_name = "OUT")]
    output: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let mut resources = Resources::default();
    for file in &args.files {
        let text = match read(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
        if let Err(message) = resources.add(file, &text) {
            eprintln!("{file}: {message}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    let converted = convert(&resources);
    for note in &converted.report.notes {
        eprintln!("{note}");
    }
    for error in &converted.report.errors {
        eprintln!("error: {error}");
    }
    let Some(config) = converted.config else {
        return ExitCode::from(EXIT_INVALID);
    };
    // What is written must be what the filter accepts.
    match Policy::compile(&config) {
        Ok(_) => {
            let mut written = config.to_json_without_defaults();
            // A translated logentry is written even when it is the default: it is what the
            // Mixer configuration said.
            if converted.logs
                && let (Some(fields), Ok(log)) =
                    (written.as_object_mut(), serde_json::to_value(&config.log))
            {
                fields.insert("log".into(), log);
            }
            let text = serde_json::to_string_pretty(&written).unwrap_or_default() + "\n";
            match &args.output {
                None => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Some(path) => match std::fs::write(path, text) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("{path}: cannot write: {e}");
                        ExitCode::from(EXIT_INVALID)
                    }
                },
            }
        }
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("the converted configuration is invalid: {error}");
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// What a conversion says besides the configuration. A note is something translated
/// differently, or left out, that does not let through anything Mixer refused; an error is
/// something that would (a check that cannot be translated, a reference to nothing): with one,
/// nothing is written.
#[derive(Default)]
struct Report {
    notes: Vec<String>,
    errors: Vec<String>,
}

struct Converted {
    config: Option<PluginConfig>,
    /// A logentry was translated.
    logs: bool,
    report: Report,
}

/// Mixer templates whose handlers decide (a failed check refuses the request); the others
/// only report.
const CHECK_TEMPLATES: &[&str] = &["listentry", "checknothing", "authorization", "quota"];

fn convert(resources: &Resources) -> Converted {
    let instances = components(resources, Role::Instance);
    let handlers = components(resources, Role::Handler);
    let mut converter = Converter::default();
    let rules: Vec<RuleConfig> = resources
        .all()
        .filter(|r| r.kind == "rule")
        .filter_map(|rule| converter.rule(rule, &instances, &handlers))
        .collect();
    let Converter {
        mut report,
        log,
        lists,
    } = converter;
    let routes = virtual_service_routes(resources, &mut report);
    note_other_resources(resources, &mut report);
    if rules.is_empty() && routes.is_empty() && report.errors.is_empty() {
        report.errors.push("nothing to write: no rule with a stdio, listchecker or denier action, and no VirtualService URI route for a gateway".to_owned());
    }
    if !report.errors.is_empty() {
        return Converted {
            config: None,
            logs: false,
            report,
        };
    }
    Converted {
        logs: log.is_some(),
        config: Some(PluginConfig {
            log: log.map(|(_, log)| log).unwrap_or_default(),
            lists,
            rules,
            routes,
            ..PluginConfig::default()
        }),
        report,
    }
}

/// What the rules translate into, gathered rule by rule: the one log instance (its name and
/// configuration), the lists, and the report.
#[derive(Default)]
struct Converter {
    report: Report,
    log: Option<(String, LogConfig)>,
    lists: BTreeMap<String, ListConfig>,
}

/// What one rule's actions translate into.
#[derive(Default)]
struct RuleParts {
    level: Option<LogLevel>,
    checks: Vec<String>,
    deny_status: Option<u16>,
}

impl Converter {
    /// One Mixer rule as a rule of the configuration, or `None` when nothing of it translates.
    fn rule(
        &mut self,
        rule: &Resource,
        instances: &[Component<'_>],
        handlers: &[Component<'_>],
    ) -> Option<RuleConfig> {
        let at = rule.at();
        let condition = match rule.spec.get("match").and_then(Value::as_str) {
            Some(m) if !m.trim().is_empty() => m.to_owned(),
            // Mixer: an absent or empty match is every request.
            _ => "true".to_owned(),
        };
        let mut parts = RuleParts::default();
        for action in rule.spec["actions"].as_array().into_iter().flatten() {
            let handler_ref = action["handler"].as_str().unwrap_or_default();
            let Some(handler) = find(handlers, handler_ref) else {
                self.report.errors.push(format!(
                    "{at}: handler {handler_ref} is in none of the files (Mixer refused such a rule): add it"
                ));
                continue;
            };
            for instance_ref in action["instances"].as_array().into_iter().flatten() {
                let instance_ref = instance_ref.as_str().unwrap_or_default();
                let Some(instance) = find(instances, instance_ref) else {
                    self.report.errors.push(format!(
                        "{at}: instance {instance_ref} is in none of the files (Mixer refused such a rule): add it"
                    ));
                    continue;
                };
                self.action(&at, handler, instance, &mut parts);
            }
        }
        if parts.level.is_none() && parts.checks.is_empty() {
            self.report.notes.push(format!(
                "{at}: nothing to translate (no stdio, listchecker or denier action): skipped"
            ));
            return None;
        }
        Some(RuleConfig {
            name: rule.name.clone(),
            match_: Some(condition),
            log: parts.level,
            check: parts.checks,
            dry_run: false,
            deny: parts.deny_status.map(|status| DenyReplyConfig {
                status: Some(status),
                ..DenyReplyConfig::default()
            }),
        })
    }

    /// One handler and instance of a rule's action, by adapter and template.
    fn action(
        &mut self,
        at: &str,
        handler: &Component<'_>,
        instance: &Component<'_>,
        parts: &mut RuleParts,
    ) {
        let report = &mut self.report;
        match (handler.of.as_str(), instance.of.as_str()) {
            ("stdio", "logentry") => {
                parts.level = Some(stdio_level(handler, instance, report));
                match &self.log {
                    None => {
                        self.log = Some((
                            instance.resource.name.clone(),
                            log_config(instance, report),
                        ));
                    }
                    Some((first, _)) if *first != instance.resource.name => {
                        report.notes.push(format!(
                            "{at}: logentry {} is not translated: a configuration has one log instance ({first}), whose fields this rule's entries get",
                            instance.resource.name
                        ));
                    }
                    Some(_) => {}
                }
            }
            ("listchecker", "listentry") => {
                let name = handler.resource.name.clone();
                let value = listentry_value(instance);
                match self.lists.get(&name) {
                    Some(existing) if existing.value != value => {
                        report.errors.push(format!(
                            "{at}: listchecker {name} is checked with {value} here and with {} elsewhere; a list has one value: give each a listchecker of its own",
                            existing.value
                        ));
                    }
                    Some(_) => {}
                    None => {
                        if let Some(list) = list_config(handler, instance, report) {
                            self.lists.insert(name.clone(), list);
                        }
                    }
                }
                parts.checks.push(name);
            }
            ("denier", "checknothing") => {
                // Every request the rule matches is refused: a check against an empty
                // whitelist fails for every value, and for a connection, which has no host.
                let name = handler.resource.name.clone();
                self.lists.insert(
                    name.clone(),
                    ListConfig {
                        value: "request.host".into(),
                        entries: Vec::new(),
                        blacklist: false,
                        entry_type: EntryType::default(),
                        provider: None,
                        dry_run: false,
                    },
                );
                parts.checks.push(name.clone());
                parts.deny_status = Some(denier_status(handler));
                report.notes.push(format!(
                    "{at}: denier {name} is a check against the empty whitelist {name}, so every matching request is refused"
                ));
            }
            (adapter, template) if CHECK_TEMPLATES.contains(&template) => {
                report.errors.push(format!(
                    "{at}: the {adapter} handler with {template} instances decides requests and is not translated: without it, what it refused would be let through; express it as a list check (listchecker + listentry) or a denier"
                ));
            }
            (adapter, template) => report.notes.push(format!(
                "{at}: the {adapter} handler with {template} instances is not translated: it only reports (the filter logs with stdio + logentry; metrics: README, Metrics and the dashboard)"
            )),
        }
    }
}

/// Notes for the resources that are neither Mixer's nor a VirtualService.
fn note_other_resources(resources: &Resources, report: &mut Report) {
    for resource in resources.all() {
        let kind = resource.kind.as_str();
        if matches!(
            kind,
            "Gateway" | "DestinationRule" | "ServiceEntry" | "Sidecar"
        ) {
            report.notes.push(format!(
                "{}: routing, not policy: apply it unchanged (README: Deploying on Istio)",
                resource.at()
            ));
        } else if Role::of_kind(kind).is_none()
            && !matches!(kind, "rule" | "instance" | "handler" | "VirtualService")
        {
            report.notes.push(format!(
                "{}: not a Mixer or routing resource: ignored",
                resource.at()
            ));
        }
    }
}

/// The HTTP status of a denier's refusal: its gRPC `status.code` as Envoy maps it to HTTP
/// (Mixer's default, 7 PERMISSION_DENIED, is 403).
fn denier_status(handler: &Component) -> u16 {
    match handler.params["status"]["code"].as_i64().unwrap_or(7) {
        3 | 9 | 11 => 400,
        16 => 401,
        5 => 404,
        6 | 10 => 409,
        8 => 429,
        12 => 501,
        14 => 503,
        4 => 504,
        13 | 15 | 2 => 500,
        _ => 403,
    }
}

/// The level of the entries a stdio handler writes for a logentry: the logentry's severity (a
/// Mixer expression, in the documents a literal) mapped through the handler's
/// `severity_levels` (0 info, 1 warning, 2 error).
fn stdio_level(handler: &Component, instance: &Component, report: &mut Report) -> LogLevel {
    let severity = instance.params["severity"]
        .as_str()
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\''))
        .unwrap_or("info");
    let mapped = handler.params["severity_levels"]
        .get(severity)
        .or_else(|| handler.params["severityLevels"].get(severity))
        .and_then(Value::as_i64);
    let level = match (mapped, severity) {
        (Some(0), _) | (None, "info" | "INFO" | "default") => LogLevel::Info,
        (Some(1), _) | (None, "warning" | "WARNING" | "warn") => LogLevel::Warning,
        (Some(2), _) | (None, "error" | "ERROR") => LogLevel::Error,
        (other, _) => {
            report.notes.push(format!(
                "{}: severity {severity} (level {other:?}) has no equivalent: its entries are written as error",
                handler.resource.at()
            ));
            LogLevel::Error
        }
    };
    if handler.params.get("outputAsJson") == Some(&json!(false)) {
        report.notes.push(format!(
            "{}: outputAsJson false is not translated: entries are always JSON",
            handler.resource.at()
        ));
    }
    level
}

fn log_config(instance: &Component, report: &mut Report) -> LogConfig {
    let at = instance.resource.at();
    let mut fields = BTreeMap::new();
    for (name, expression) in instance.params["variables"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let expression = expression.as_str().unwrap_or_default();
        let renamed = rename_attributes(expression, LOG_RENAMES);
        if renamed != expression {
            report.notes.push(format!(
                "{at}: variables.{name}: {expression} is written {renamed} (the caller's identity comes from its certificate: source.serviceAccount, not Mixer's source.service)"
            ));
        }
        fields.insert(name.clone(), renamed);
    }
    if let Some(timestamp) = instance.params["timestamp"].as_str()
        && timestamp.trim() != "request.time"
    {
        report.notes.push(format!(
            "{at}: timestamp {timestamp} is not translated: every entry's time is the request's"
        ));
    }
    for ignored in ["monitored_resource_type", "monitoredResourceType", "labels"] {
        if instance.params.get(ignored).is_some() {
            report.notes.push(format!("{at}: {ignored} is not translated: it configured Mixer's other backends, not the stdio log"));
        }
    }
    LogConfig {
        instance: instance.resource.name.clone(),
        fields,
        ..LogConfig::default()
    }
}

/// Renames in log fields only: there the nearest attribute is harmless. In a decision a
/// different value could change what is allowed, so a rule keeps Mixer's name and the checker
/// refuses it with the replacement.
const LOG_RENAMES: &[(&str, &str)] = &[
    ("source.service", "source.serviceAccount"),
    ("source.name", "source.workload"),
];

/// `expression` with each attribute of `renames` replaced; string literals are left alone.
fn rename_attributes(expression: &str, renames: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(expression.len());
    let mut chars = expression.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' {
            out.push(c);
            while let Some((_, inner)) = chars.next() {
                out.push(inner);
                if inner == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        out.push(escaped);
                    }
                } else if inner == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, next)) = chars.peek() {
                if next.is_ascii_alphanumeric() || next == '_' || next == '.' {
                    end = i + next.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let name = expression.get(start..end).unwrap_or_default();
            let renamed = renames
                .iter()
                .find(|(from, _)| *from == name)
                .map_or(name, |(_, to)| to);
            out.push_str(renamed);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_attributes_but_not_strings() {
        assert_eq!(
            rename_attributes(
                r#"source.labels["app"] | source.service | "source.service""#,
                LOG_RENAMES
            ),
            r#"source.labels["app"] | source.serviceAccount | "source.service""#
        );
        assert_eq!(
            rename_attributes("source.services == 'a\\'b'", LOG_RENAMES),
            "source.services == 'a\\'b'"
        );
    }
}
