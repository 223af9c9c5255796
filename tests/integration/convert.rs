//! `egress-policy convert` on the source documents' own Mixer configuration
//! (`tests/data/mixer/`, each step as the blog applies it): the configuration converted after
//! each step decides and logs exactly as the example of that step (`envoy/examples/s1-…` to `s4-…`), request by request,
//! through the filter's flow; the converted list-check policy in a real Envoy; and what cannot be translated
//! is refused or said.

use std::process::Output;
use std::rc::Rc;

use egress_policy::adapter::{Active, RequestFilter};
use egress_policy::core::policy::Policy;
use egress_policy_testkit::fake_host::FakeHost;
use serde_json::{Value, json};

use crate::support::{Gateway, TempDir, cli, cli_stdin, repo, without_time};

fn convert(files: &[&str]) -> Output {
    let mut args = vec!["convert"];
    args.extend_from_slice(files);
    cli(&args)
}

fn convert_stdin(yaml: &str) -> Output {
    cli_stdin(&["convert", "-"], yaml)
}

/// The seed's steps, cumulatively: after step N, the files 1..=N.
const STEPS: [&str; 6] = [
    "tests/data/mixer/1-logging.yaml",
    "tests/data/mixer/2-routing-by-uri.yaml",
    "tests/data/mixer/3-routing-restored.yaml",
    "tests/data/mixer/4-listchecker.yaml",
    "tests/data/mixer/5-rule-checks-the-list.yaml",
    "tests/data/mixer/6-politics-exempt.yaml",
];

/// What the filter does with one request: the local reply (status, details) if any, and the
/// log entries (without `time`) once a response of `code` has passed.
fn decide(policy: Policy, case: &Value) -> (Option<(u16, String)>, Vec<Value>) {
    let mut host = FakeHost::from_case(case);
    let mut filter = RequestFilter::new(Some(Rc::new(Active::new(policy))));
    filter.on_request_headers(&host, true);
    let reply = host
        .replies
        .borrow()
        .first()
        .map(|r| (r.status, r.details.clone()));
    let code = reply.as_ref().map_or(200, |(status, _)| i64::from(*status));
    host.respond(code, 150);
    filter.on_log(&host);
    let entries = host
        .entries
        .borrow()
        .iter()
        .flat_map(|e| e.lines().map(str::to_owned).collect::<Vec<_>>())
        .map(|line| without_time(serde_json::from_str(&line).unwrap()))
        .collect();
    (reply, entries)
}

#[test]
fn each_converted_step_decides_and_logs_as_its_example() {
    let requests: Vec<Value> = ["/politics", "/sport", "/health", "/sport?topic=x"]
        .iter()
        .flat_map(|path| {
            [
                json!({"host": "edition.cnn.com", "path": path}),
                json!({"host": "edition.cnn.com", "path": path, "namespace": "default", "serviceAccount": "sleep"}),
                json!({"host": "edition.cnn.com", "path": path, "namespace": "politics", "serviceAccount": "sleep", "labels": {"app": "sleep"}}),
                json!({"host": "money.cnn.com", "path": path}),
            ]
        })
        .collect();
    let mut failures = Vec::new();
    for (steps, example) in [
        (1, "s1-logging.json"),
        (2, "s2-routing.json"),
        (5, "s3-listcheck.json"),
        (6, "s4-exemption.json"),
    ] {
        let output = convert(&STEPS[..steps]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{example}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let converted = output.stdout;
        let expected = std::fs::read(repo().join("envoy/examples").join(example)).unwrap();
        for case in &requests {
            let got = decide(Policy::from_json(&converted).unwrap(), case);
            let want = decide(Policy::from_json(&expected).unwrap(), case);
            if got != want {
                failures.push(format!(
                    "{example} {case}: converted {got:?}, example {want:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn conversion_says_what_it_translated_differently_and_why() {
    let output = convert(&STEPS);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "logentry egress-access: variables.source: source.labels[\"app\"] | source.service | \"unknown\" is written source.labels[\"app\"] | source.serviceAccount | \"unknown\"",
        "logentry egress-access: monitored_resource_type is not translated",
        "listchecker path-checker: value request.path is checked as request.url_path",
        "VirtualService direct-through-egress-gateway: a gateway route admits every request: no route is written",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
}

/// A listchecker and its listentry in Mixer's generic kinds (`handler` with `compiledAdapter`,
/// `instance` with `compiledTemplate`), for a rule to use.
const GENERIC_LIST: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: paths}
spec:
  compiledAdapter: listchecker
  params: {overrides: ["/sport"], blacklist: false}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: path}
spec:
  compiledTemplate: listentry
  params: {value: request.path}
---"#;

/// A rule matching every request to edition.cnn.com, with these actions.
fn rule_with(actions: &str) -> String {
    format!(
        "\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {{name: cnn}}\nspec:\n  match: request.host == \"edition.cnn.com\"\n  actions: {actions}\n"
    )
}

/// Whatever would let through what Mixer refused is an error, and nothing is written: the
/// error says what to do instead.
#[test]
fn what_cannot_be_translated_is_refused_with_the_replacement() {
    let source_service = GENERIC_LIST.to_owned()
        + r#"
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: sleep-only}
spec:
  match: source.service == "sleep.default.svc.cluster.local"
  actions:
  - handler: paths
    instances: [path]
"#;
    let remote = GENERIC_LIST.replace(
        "blacklist: false}",
        "blacklist: true, providerUrl: \"https://iam.example.com/paths\"}",
    ) + &rule_with("[{handler: paths, instances: [path]}]");
    let quota = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quota}
spec: {compiledAdapter: memquota, params: {}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount}
spec: {compiledTemplate: quota, params: {}}"#
        .to_owned()
        + &rule_with("[{handler: quota, instances: [requestcount]}]");
    let query_params = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: cnn}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway]
  http:
  - match: [{gateways: [istio-egressgateway], uri: {prefix: /sport}, queryParams: {safe: {exact: "1"}}}]
    route: [{destination: {host: edition.cnn.com}}]
"#;
    for (name, yaml, expected) in [
        (
            "a decision on source.service",
            source_service,
            "the converted configuration is invalid: rules[0].match: unknown attribute 'source.service'; use source.serviceAccount or source.workload",
        ),
        (
            "a remote blacklist",
            remote,
            "error: -: handler paths: providerUrl https://iam.example.com/paths is not translated: a remote list is fetched through an Envoy cluster of the gateway; write lists.paths.provider",
        ),
        (
            "a handler that is not there",
            GENERIC_LIST.to_owned()
                + &rule_with("[{handler: elsewhere.listchecker, instances: [path]}]"),
            "error: -: rule cnn: handler elsewhere.listchecker is in none of the files",
        ),
        (
            "a quota check",
            quota,
            "error: -: rule cnn: the memquota handler with quota instances decides requests and is not translated",
        ),
        (
            "a route restricted by query parameters",
            query_params.to_owned(),
            "error: -: VirtualService cnn: a gateway match on queryParams is not translated",
        ),
    ] {
        let output = convert_stdin(&yaml);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(output.stdout.is_empty(), "{name}");
    }

    // Mixer's denier refuses what its rule matches, with its status.
    let denier = r#"
apiVersion: config.istio.io/v1alpha2
kind: denier
metadata: {name: deny-politics}
spec: {status: {code: 7, message: forbidden}}
---
apiVersion: config.istio.io/v1alpha2
kind: checknothing
metadata: {name: nothing}
spec: {}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: politics}
spec:
  match: request.path.startsWith("/politics")
  actions: [{handler: deny-politics.denier, instances: [nothing.checknothing]}]
"#;
    let output = convert_stdin(denier);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (path, status) in [("/politics", Some(403)), ("/sport", None)] {
        let (reply, _) = decide(
            Policy::from_json(&output.stdout).unwrap(),
            &json!({"host": "edition.cnn.com", "path": path}),
        );
        assert_eq!(reply.map(|(s, _)| s), status, "{path}");
    }

    // Mixer's generic instance/handler kinds and functions convert like the old kinds.
    let output = convert_stdin(
        &(GENERIC_LIST.to_owned()
            + r#"
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: cnn}
spec:
  match: match(destination.service.host, "*.cnn.com") && context.reporter.kind == "outbound" && source.ip != ip("10.0.0.1")
  actions:
  - handler: paths.handler.istio-system
    instances: [path.instance.istio-system]
---
apiVersion: config.istio.io/v1alpha2
kind: prometheus
metadata: {name: handler}
spec: {}
"#),
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["rules"][0]["check"], json!(["paths"]));
    assert_eq!(config["lists"]["paths"]["entries"], json!(["/sport"]));
    let policy = Policy::from_json(&output.stdout).unwrap();
    let (politics, _) = decide(
        policy,
        &json!({"host": "edition.cnn.com", "path": "/politics"}),
    );
    assert_eq!(politics.unwrap().0, 404);

    // Nothing convertible, unreadable input: exit 2 with the reason.
    let output = convert_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to write"));
    let output = convert_stdin("kind: [\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid YAML"));
}

/// The converted list-check policy in a real Envoy: the documents' three requests, their statuses and log.
#[test]
fn converted_s3_enforces_in_envoy() {
    let output = convert(&STEPS[..5]);
    assert_eq!(output.status.code(), Some(0));
    let dir = TempDir::new("converted-s3");
    let path = dir.path("converted-s3.json");
    std::fs::write(&path, &output.stdout).unwrap();
    let gateway = Gateway::start(&path);
    let statuses: Vec<u16> = ["/politics", "/sport", "/health"]
        .iter()
        .map(|p| gateway.status("edition.cnn.com", p))
        .collect();
    assert_eq!(statuses, [404, 200, 200]);
    gateway.settle(3);
    let levels: Vec<(String, String, u64)> = gateway
        .log_entries()
        .iter()
        .map(|e| {
            (
                e["level"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["responseCode"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("error", "/politics", 404),
            ("info", "/politics", 404),
            ("info", "/sport", 200),
            ("info", "/health", 200)
        ]
        .map(|(l, p, c)| (l.to_owned(), p.to_owned(), c))
    );
    assert_eq!(gateway.upstream.paths(), ["/sport", "/health"]);
}

/// Mixer's reporter attributes have their meaning in Envoy: `context.reporter.uid` is read from
/// the proxy's node id (`egress-gateway` in envoy/gateway.yaml), `context.reporter.kind` is
/// `outbound`, `destination.service.host` the request's host.
#[test]
fn mixer_reporter_and_destination_attributes_decide_in_envoy() {
    // The node id is not in the native build's ABI: that build refuses the configuration
    // (native::the_native_module_refuses_a_configuration_that_reads_what_its_abi_does_not_expose).
    crate::support::Build::force_wasm();
    let config = json!({
        "lists": {"nowhere": {"value": "request.host", "entries": []}},
        "rules": [{"name": "politics-at-this-gateway", "log": "error", "check": ["nowhere"],
            "match": "context.reporter.uid == \"egress-gateway\" && context.reporter.kind == \"outbound\" && match(destination.service.host, \"*.cnn.com\") && request.path.startsWith(\"/politics\")"}]
    });
    let mut config = config;
    config["log"] = json!({"fields": {"uid": "context.reporter.uid | \"absent\"",
        "kind": "context.reporter.kind", "service": "destination.service.host | \"absent\""}});
    let gateway = Gateway::with_config("reporter", &config.to_string());
    assert_eq!(gateway.status("edition.cnn.com", "/politics"), 404);
    gateway.settle(1);
    let entry = &gateway.log_entries()[0];
    assert_eq!(
        (&entry["uid"], &entry["kind"], &entry["service"]),
        (
            &json!("egress-gateway"),
            &json!("outbound"),
            &json!("edition.cnn.com")
        )
    );
    assert_eq!(gateway.status("edition.cnn.com", "/sport"), 200);
}
