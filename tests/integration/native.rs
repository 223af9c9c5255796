//! The native build (crates/egress-policy-native, an Envoy dynamic module) in a real Envoy:
//! the reference scenario decided, answered and logged as the wasm build does it. The whole
//! suite runs on the native build with `EGRESS_BUILD=native`; these tests run it always.

use crate::support::{Build, Gateway, build_test_module, http_get, without_time};

const CNN: &str = "edition.cnn.com";

#[test]
fn the_native_module_refuses_politics_with_the_list_checks_404_and_details() {
    Build::force_native();
    let gateway = Gateway::example("s3-listcheck.json");
    assert_eq!(gateway.status(CNN, "/politics"), 404);
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    assert_eq!(gateway.status(CNN, "/health"), 200);
    assert_eq!(gateway.upstream.paths(), ["/sport", "/health"]);
    let access = gateway.access_log();
    let details: Vec<&str> = access
        .iter()
        .filter_map(|line| line["details"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("egress_policy_denied")),
        "Envoy's response code details name the decision: {details:?}\n{}",
        gateway.envoy_stderr()
    );
}

#[test]
fn the_native_module_writes_the_same_log_lines_as_the_wasm_module() {
    let lines = |build: Build| {
        match build {
            Build::Wasm => Build::force_wasm(),
            Build::Native => Build::force_native(),
        }
        let gateway = Gateway::example("s3-listcheck.json");
        for path in ["/politics", "/sport", "/health"] {
            gateway.status(CNN, path);
        }
        gateway.settle(3);
        let entries: Vec<_> = gateway
            .log_entries()
            .into_iter()
            .map(without_time)
            .collect();
        (entries, gateway.envoy_stderr())
    };
    let (wasm, _) = lines(Build::Wasm);
    let (native, stderr) = lines(Build::Native);
    assert!(!wasm.is_empty());
    assert_eq!(native, wasm, "{stderr}");
}

#[test]
fn the_native_module_counts_requests_with_real_labels() {
    Build::force_native();
    let gateway = Gateway::example("s3-listcheck.json");
    assert_eq!(gateway.status(CNN, "/politics"), 404);
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    gateway.settle(2);
    let (_, stats) = http_get(gateway.admin_port, "/stats/prometheus").unwrap();
    assert!(
        stats.lines().any(|line| line
            .starts_with("envoy_dynamicmodulescustom_egress_policy_requests{")
            && line.contains("decision=\"deny\"")
            && line.contains("destination=\"*.cnn.com\"")
            && line.ends_with(" 1")),
        "{stats}"
    );
}

/// The ABI the module pins (crates/egress-policy-native/abi/envoy-1.40.0.tsv) against the real
/// binaries: the Envoy it runs on exports every callback the module calls, and the module
/// exports every hook Envoy resolves.
#[test]
fn the_envoy_and_the_module_export_every_function_of_the_pinned_abi() {
    let exported = |binary: &std::path::Path| -> std::collections::BTreeSet<String> {
        let output = std::process::Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(binary)
            .output()
            .unwrap();
        assert!(output.status.success(), "nm {}", binary.display());
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().nth(2).map(str::to_owned))
            .collect()
    };
    let envoy = crate::support::envoy_binary();
    let envoy_symbols = exported(&envoy);
    let module_symbols =
        exported(&crate::support::native_module_dir().join("libegress_policy_native.so"));
    let abi = std::fs::read_to_string(
        crate::support::repo().join("crates/egress-policy-native/abi/envoy-1.40.0.tsv"),
    )
    .unwrap();
    let mut checked = 0;
    for line in abi.lines().filter(|line| !line.starts_with('#')) {
        let mut columns = line.split('\t');
        let (kind, name) = (columns.next().unwrap(), columns.next().unwrap());
        // What is read for the next steps must exist in Envoy; the module exports its hooks.
        let symbols = match kind {
            "callback" | "next-callback" => &envoy_symbols,
            "hook" => &module_symbols,
            _ => continue,
        };
        assert!(symbols.contains(name), "{kind} {name} is not exported");
        checked += 1;
    }
    assert!(checked > 30, "{checked}");
}

/// A test-only build of the module that panics on demand (`--features test-panic`), in a target
/// directory of its own so the module Envoy normally loads is never replaced.
fn panicking_module_dir() -> std::path::PathBuf {
    let args = ["-p", "egress-policy-native", "--features", "test-panic"];
    build_test_module(&args, "target/panic").join("release")
}

#[test]
fn a_panic_in_the_native_module_fails_its_request_closed_and_envoy_serves_on() {
    Build::force_native_from(panicking_module_dir());
    let gateway = Gateway::example("s3-listcheck.json");
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    let panicked = gateway.status_with_header(CNN, "/sport", "x-egress-policy-test-panic: 1");
    assert_eq!(
        panicked, 500,
        "a request the module could not decide is refused"
    );
    assert_eq!(gateway.upstream.paths(), ["/sport"], "and never forwarded");
    for _ in 0..3 {
        assert_eq!(gateway.status(CNN, "/sport"), 200, "Envoy serves on");
        assert_eq!(gateway.status(CNN, "/politics"), 404);
    }
    let details: Vec<String> = gateway
        .access_log()
        .iter()
        .filter_map(|line| line["details"].as_str().map(str::to_owned))
        .collect();
    assert!(
        details.iter().any(|d| d == "egress_policy_internal_error"),
        "{details:?}"
    );
    assert!(
        gateway
            .envoy_stderr()
            .contains("panic in request_headers (x-egress-policy-test-panic); failing closed"),
        "{}",
        gateway.envoy_stderr()
    );
}

/// A configuration that reads what Envoy's dynamic-module ABI does not expose (the node id,
/// Istio's peer metadata) is refused by the native build, naming it: run without it, its rule
/// would never hold and let through what it refuses.
#[test]
fn the_native_module_refuses_a_configuration_that_reads_what_its_abi_does_not_expose() {
    Build::force_native();
    let config = r#"{"rules": [{"name": "at-this-gateway", "check": ["nowhere"],
        "match": "context.reporter.uid == \"egress-gateway\" || source.labels[\"app\"] == \"x\""}],
        "lists": {"nowhere": {"value": "request.host", "entries": []}}}"#;
    let gateway = Gateway::with_config("unavailable", config);
    assert_eq!(gateway.status(CNN, "/sport"), 500, "nothing passes");
    assert!(gateway.upstream.paths().is_empty());
    let stderr = gateway.envoy_stderr();
    for name in ["context.reporter.uid", "source.labels"] {
        assert!(
            stderr.contains(&format!(
                "egress-policy: invalid configuration: {name}: not available in the native build"
            )),
            "{name}: {stderr}"
        );
    }
}

/// The module checks the ABI of the Envoy that loads it, and refuses to load where it is not the
/// one it pins (Envoy itself only warns). A test build pins a surface no Envoy has: Envoy
/// 1.40.0 must then refuse the filter, with the module's reason in its log.
#[test]
fn the_native_module_refuses_to_load_on_an_envoy_whose_abi_it_does_not_pin() {
    let args = [
        "-p",
        "egress-policy-native",
        "--features",
        "test-foreign-abi",
    ];
    let module_dir = build_test_module(&args, "target/foreign-abi").join("release");
    let dir = crate::support::TempDir::new("foreign-abi");
    let config = dir.path("envoy.yaml");
    std::fs::write(&config, STATIC_NATIVE_GATEWAY).unwrap();
    let output = std::process::Command::new(crate::support::envoy_binary())
        .args(["-c", config.to_str().unwrap(), "--use-dynamic-base-id"])
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", &module_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "Envoy must refuse the filter: {stderr}"
    );
    assert!(
        stderr.contains(
            "egress-policy: this Envoy's dynamic-module ABI is not Envoy 1.40.0's, which this module is built for"
        ),
        "{stderr}"
    );
}

/// One listener whose HTTP filter is the native module (from ENVOY_DYNAMIC_MODULES_SEARCH_PATH).
const STATIC_NATIVE_GATEWAY: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          route_config: {virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]}
          http_filters:
          - name: egress-policy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: egress_policy_native}
              filter_name: egress-policy
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{}'
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
"#;

/// The network filter too: a panic closes its connection (never relayed), is logged, and Envoy
/// serves on.
#[test]
fn a_panic_in_the_native_network_filter_closes_its_connection_and_envoy_serves_on() {
    Build::force_native_from(panicking_module_dir());
    let mut gateway = Gateway::with_config(
        "panic-tls",
        r#"{"rules": [{"name": "all-tls", "log": "info", "match": "context.protocol == \"tcp\""}]}"#,
    );
    let panicked = gateway.tls_client(None, "egress-test-panic.example", &[]);
    assert_ne!(panicked["inner"], "ok", "closed, never relayed: {panicked}");
    let allowed = gateway.tls_client(None, "api.ibm.com", &[]);
    assert_eq!(allowed["inner"], "ok", "Envoy serves on: {allowed}");
    assert!(gateway.is_running());
    let stderr = gateway.envoy_stderr();
    assert!(
        stderr.contains(
            "egress-policy: panic in read (a ClientHello naming egress-test-panic); failing closed"
        ),
        "{stderr}"
    );
}
