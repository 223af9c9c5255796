//! `egress-policy`: validate a plugin configuration and explain decisions, with the same core
//! the filter runs in Envoy.
//!
//! Exit codes: `check` 0 valid, 2 invalid; `explain` 0 allowed, 1 denied, 2 invalid
//! configuration or usage.

mod audit;

use std::io::Read;
use std::process::ExitCode;

use audit::Report;
use egress_policy::core::config::PluginConfig;
use egress_policy::core::error::{ConfigError, ConfigErrors};
use egress_policy::core::headers::HeaderMap;
use egress_policy::core::policy::Policy;
use egress_policy::core::policy::provider::RemoteLists;
use egress_policy::core::request::{RequestFacts, Response};
use egress_policy::telemetry::log_entry;

const USAGE: &str = "\
usage:
  egress-policy check CONFIG...
  egress-policy audit [LOGFILE...]
  egress-policy explain CONFIG --host HOST --path PATH [--method METHOD] [--scheme SCHEME]
        [--body] [--header NAME=VALUE]... [--principal SPIFFE_ID | --namespace NS
        [--service-account SA]] [--label KEY=VALUE]... [--workload NAME] [--source-ip IP]
        [--response-code CODE] [--response-size BYTES]

CONFIG is a plugin configuration in JSON or YAML, or an Istio WasmPlugin manifest whose
spec.pluginConfig is checked; '-' reads standard input.
check exits 0 when every CONFIG is valid, 2 otherwise.
audit reads the JSON log (LOGFILEs, or standard input) and prints counts per level, source,
destination and decision; it exits 1 when an error-level entry's request was let through
(an unauthorized request was sent), 2 when a file or line cannot be read, 0 otherwise.
explain decides the request exactly as the filter does (HOST and PATH as a client sends them,
raw): it exits 0 when the request would be forwarded (allow, dry_run_deny), 1 when it would be
answered locally (deny, reject), 2 on an invalid CONFIG or usage.";

const EXIT_DENIED: u8 = 1;
const EXIT_INVALID: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => check(args.get(1..).unwrap_or_default()),
        Some("explain") => explain(args.get(1..).unwrap_or_default()),
        Some("audit") => audit(args.get(1..).unwrap_or_default()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command '{other}'")),
        None => usage_error("a command is required"),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("egress-policy: {message}\n\n{USAGE}");
    ExitCode::from(EXIT_INVALID)
}

fn check(files: &[String]) -> ExitCode {
    if files.is_empty() {
        return usage_error("check needs at least one CONFIG");
    }
    let mut all_valid = true;
    for file in files {
        match load(file) {
            Ok(policy) => {
                println!(
                    "{file}: valid ({} rules, {} lists, {} routes)",
                    policy.rules.len(),
                    policy.lists.len(),
                    policy.routes.len()
                );
                for warning in policy.warnings() {
                    eprintln!("{file}: warning: {warning}");
                }
            }
            Err(errors) => {
                all_valid = false;
                for error in &errors.0 {
                    eprintln!("{file}: {error}");
                }
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

/// Reads a configuration file (JSON, YAML or a WasmPlugin manifest) and compiles it.
fn load(file: &str) -> Result<Policy, ConfigErrors> {
    let text = read(file).map_err(|e| ConfigError::new("", format!("cannot read: {e}")))?;
    let looks_like_json = text.trim_start().starts_with('{') || text.trim_start().starts_with('[');
    let config = if looks_like_json {
        PluginConfig::from_json(text.as_bytes())?
    } else {
        PluginConfig::from_value(from_yaml(&text)?)?
    };
    Policy::compile(&config)
}

fn read(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

/// Parses YAML; from a WasmPlugin manifest (possibly among other documents) takes
/// `spec.pluginConfig`.
fn from_yaml(text: &str) -> Result<serde_json::Value, ConfigErrors> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)
            .map_err(|e| ConfigError::new("", format!("invalid YAML: {e}")))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let is_wasm_plugin =
        |v: &serde_json::Value| v.get("kind").and_then(|k| k.as_str()) == Some("WasmPlugin");
    if let Some(plugin) = documents.iter().find(|v| is_wasm_plugin(v)) {
        return plugin
            .get("spec")
            .and_then(|spec| spec.get("pluginConfig"))
            .cloned()
            .ok_or_else(|| {
                ConfigError::new("spec.pluginConfig", "the WasmPlugin has no pluginConfig").into()
            });
    }
    match documents.len() {
        1 => Ok(documents.swap_remove(0)),
        0 => Err(ConfigError::new("", "the file holds no configuration").into()),
        n => Err(ConfigError::new(
            "",
            format!("{n} YAML documents and none is a WasmPlugin; expected one configuration"),
        )
        .into()),
    }
}

/// What `explain` was asked: the facts of a request as a client and its connection present them.
struct ExplainArgs {
    config: String,
    /// Pseudo-headers and headers, in order.
    headers: Vec<(String, String)>,
    has_body: bool,
    principal: Option<String>,
    namespace: Option<String>,
    service_account: Option<String>,
    labels: Vec<(String, Vec<u8>)>,
    workload: Option<String>,
    source_ip: Option<String>,
    response: Response,
}

fn parse_explain(args: &[String]) -> Result<ExplainArgs, String> {
    let mut parsed = ExplainArgs {
        config: String::new(),
        headers: Vec::new(),
        has_body: false,
        principal: None,
        namespace: None,
        service_account: None,
        labels: Vec::new(),
        workload: None,
        source_ip: None,
        response: Response::default(),
    };
    let (mut config, mut host, mut path, mut method, mut scheme) = (None, None, None, None, None);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if !arg.starts_with("--") {
            if config.replace(arg.clone()).is_some() {
                return Err(format!("unexpected argument '{arg}'"));
            }
            continue;
        }
        if arg == "--body" {
            parsed.has_body = true;
            continue;
        }
        let value = iter
            .next()
            .ok_or_else(|| format!("{arg} needs a value"))?
            .clone();
        let pair = |what: &str| {
            value
                .split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("{what} takes KEY=VALUE, got '{value}'"))
        };
        let int = |what: &str| {
            value
                .parse::<i64>()
                .map_err(|_| format!("{what} takes a number, got '{value}'"))
        };
        match arg.as_str() {
            "--host" => host = Some(value),
            "--path" => path = Some(value),
            "--method" => method = Some(value),
            "--scheme" => scheme = Some(value),
            "--namespace" => parsed.namespace = Some(value),
            "--service-account" => parsed.service_account = Some(value),
            "--principal" => parsed.principal = Some(value),
            "--user" => {
                return Err(
                    "--user: source.user comes from the certificate; give --principal or --namespace"
                        .into(),
                );
            }
            "--workload" => parsed.workload = Some(value),
            "--source-ip" => parsed.source_ip = Some(value),
            "--label" => {
                let (key, value) = pair("--label")?;
                parsed.labels.push((key, value.into_bytes()));
            }
            "--header" => {
                let (name, value) = pair("--header")?;
                parsed.headers.push((name.to_ascii_lowercase(), value));
            }
            "--response-code" => parsed.response.code = Some(int("--response-code")?),
            "--response-size" => parsed.response.size = Some(int("--response-size")?),
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    parsed.config = config.ok_or("explain needs a CONFIG")?;
    let host = host.ok_or("explain needs --host")?;
    let path = path.ok_or("explain needs --path")?;
    if parsed.principal.is_some() && parsed.namespace.is_some() {
        return Err("give --principal or --namespace, not both".into());
    }
    let pseudo = [
        (":authority", host),
        (":path", path),
        (":method", method.unwrap_or_else(|| "GET".into())),
        (":scheme", scheme.unwrap_or_else(|| "http".into())),
    ];
    let mut headers: Vec<(String, String)> =
        pseudo.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    headers.append(&mut parsed.headers);
    parsed.headers = headers;
    Ok(parsed)
}

/// The facts the filter would see: the peer certificate's SPIFFE ID is `--principal`, or the
/// mesh's for `--namespace` and `--service-account` (default `default`).
fn explain_facts(args: &ExplainArgs, policy: &Policy) -> RequestFacts {
    let principal = args.principal.clone().or_else(|| {
        args.namespace.as_ref().map(|ns| {
            format!(
                "spiffe://{}/ns/{ns}/sa/{}",
                policy.trust_domain,
                args.service_account.as_deref().unwrap_or("default")
            )
        })
    });
    RequestFacts {
        headers: HeaderMap::from_pairs(&args.headers),
        has_body: args.has_body,
        mtls: Some(principal.is_some()),
        peer_uri_sans: principal.map(String::into_bytes),
        source_address: args.source_ip.clone().map(String::into_bytes),
        peer_labels: args.labels.clone(),
        peer_workload: args.workload.clone().map(String::into_bytes),
        requested_server_name: None,
        time_micros: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_micros()).ok()),
    }
}

fn explain(args: &[String]) -> ExitCode {
    let mut parsed = match parse_explain(args) {
        Ok(parsed) => parsed,
        Err(message) => return usage_error(&message),
    };
    let policy = match load(&parsed.config) {
        Ok(policy) => policy,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{}: {error}", parsed.config);
            }
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let facts = explain_facts(&parsed, &policy);
    let (request, decision) = policy.decide(&facts, &RemoteLists::default());
    if let Some(error) = &request.identity_error {
        println!("identity: none ({error})");
    }
    let outcome = decision.outcome();
    let response = &mut parsed.response;
    match policy.reply(&decision) {
        None => println!("decision: {}", outcome.as_str()),
        Some(reply) => {
            println!("decision: {} ({})", outcome.as_str(), reply.status);
            let reason = match (decision.rejected, &decision.denied) {
                (Some(problem), _) => format!("rejected: {}", problem.describe()),
                (None, Some(reason)) => policy.explain(reason, &request),
                (None, None) => String::new(),
            };
            println!("reason: {reason}");
            println!("details: {}", reply.details);
            response.code.get_or_insert(i64::from(reply.status));
            response.size.get_or_insert(0);
        }
    }
    for reason in &decision.dry_run {
        println!("would deny (dry run): {}", policy.explain(reason, &request));
    }
    if decision.fired.is_empty() {
        println!("rules matched: none");
    } else {
        println!("rules matched:");
        for &index in &decision.fired {
            let Some(rule) = usize::try_from(index)
                .ok()
                .and_then(|i| policy.rules.get(i))
            else {
                continue;
            };
            let mut actions = Vec::new();
            if let Some(level) = rule.log {
                actions.push(format!("log {}", level.as_str()));
            }
            for list in rule.checks.iter().filter_map(|&l| policy.lists.get(l)) {
                actions.push(format!("check {}", list.name));
            }
            println!("  {} ({})", rule.name, actions.join(", "));
        }
    }
    let entries = log_entry::render(&policy, &decision, &request, response);
    if entries.is_empty() {
        println!("log entries: none");
    } else {
        println!("log entries:");
        println!("{entries}");
    }
    if outcome.forwarded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}

fn audit(files: &[String]) -> ExitCode {
    let stdin = ["-".to_owned()];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let mut report = Report::default();
    let mut unreadable_files = 0;
    for file in files {
        match read(file) {
            Ok(content) => report.add(if file == "-" { "stdin" } else { file }, &content),
            Err(e) => {
                eprintln!("egress-policy: {file}: cannot read: {e}");
                unreadable_files += 1;
            }
        }
    }
    print!("{}", report.render());
    for problem in &report.unreadable {
        eprintln!("egress-policy: {problem}");
    }
    if !report.violations.is_empty() {
        ExitCode::from(EXIT_DENIED)
    } else if unreadable_files > 0 || !report.unreadable.is_empty() {
        eprintln!("egress-policy: some input could not be read, so the audit is incomplete");
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}
