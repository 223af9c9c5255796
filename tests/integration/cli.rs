//! The `egress-policy` command line: check and explain, their exit codes and messages.
use crate::support::{cli, cli_stdin, repo};
use std::process::Output;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_example_config_passes_check() {
    let mut examples: Vec<String> = std::fs::read_dir(repo().join("envoy/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.display().to_string())
        .collect();
    examples.sort();
    assert!(examples.len() >= 3);
    let args: Vec<&str> = std::iter::once("check")
        .chain(examples.iter().map(String::as_str))
        .collect();
    let output = cli(&args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), examples.len());
}

#[test]
fn wasmplugin_manifest_passes_check_and_carries_the_s3_policy() {
    let output = cli(&["check", "manifests/wasmplugin.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("valid (2 rules, 1 lists, 0 routes)"));

    let text = std::fs::read_to_string(repo().join("manifests/wasmplugin.yaml")).unwrap();
    let manifest: serde_json::Value = serde_saphyr::from_multiple(&text).unwrap().remove(0);
    let s3: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("envoy/examples/s3-listcheck.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["spec"]["pluginConfig"], s3);
    assert_eq!(
        manifest["spec"]["selector"]["matchLabels"]["istio"],
        "egressgateway"
    );
    assert_eq!(manifest["spec"]["phase"], "AUTHZ");
    assert_eq!(manifest["spec"]["failStrategy"], "FAIL_CLOSE");
}

#[test]
fn yaml_plugin_config_is_accepted() {
    let yaml = "rules:\n- name: all\n  log: info\n";
    let output = cli_stdin(&["check", "-"], yaml);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn invalid_config_exits_2_with_every_error_and_its_path() {
    let config = r#"{"rules": [{"name": "a", "log": "info", "match": "request.path.startsWith(\"/x\""},
                              {"name": "b", "check": ["missing"]}]}"#;
    let output = cli_stdin(&["check", "-"], config);
    assert_eq!(output.status.code(), Some(2));
    let errors = stderr(&output);
    assert!(
        errors.contains("-: rules[0].match: expected ')', found end of expression at column 29"),
        "{errors}"
    );
    assert!(
        errors.contains("-: rules[1].check[0]: unknown list 'missing'; lists defined: none"),
        "{errors}"
    );
}

#[test]
fn malformed_yaml_and_manifests_without_plugin_config_are_refused() {
    let output = cli_stdin(&["check", "-"], "rules: [\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("invalid YAML"),
        "{}",
        stderr(&output)
    );
    let manifest = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: x}\nspec: {}\n";
    let output = cli_stdin(&["check", "-"], manifest);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("spec.pluginConfig: the WasmPlugin has no pluginConfig"));
    let output = cli(&["check", "no/such/file.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no/such/file.json: cannot read"));
}

#[test]
fn explain_denies_politics_naming_rule_list_and_entries() {
    let output = cli(&[
        "explain",
        "envoy/examples/s3-listcheck.json",
        "--host",
        "edition.cnn.com",
        "--path",
        "/politics",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.starts_with("decision: deny (404)\n"), "{text}");
    assert!(text.contains(
        "reason: denied by rule handle-cnn-access: \"/politics\" is not in whitelist path-checker"
    ));
    assert!(
        text.contains("details: egress_policy_denied:rule=handle-cnn-access,list=path-checker")
    );
    assert!(text.contains(
        "  handle-politics (log error)\n  handle-cnn-access (log info, check path-checker)"
    ));
    let entries: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["level"], "error");
    assert_eq!(entries[0]["responseCode"], 404);
}

#[test]
fn explain_allows_sport_and_logs_the_given_identity() {
    let output = cli(&[
        "explain",
        "envoy/examples/s3-listcheck.json",
        "--host",
        "edition.cnn.com",
        "--path",
        "/sport",
        "--namespace",
        "default",
        "--service-account",
        "sleep",
        "--label",
        "app=sleep",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("decision: allow\n"));
    assert!(
        text.contains(r#""source":"sleep","sourceNamespace":"default""#),
        "{text}"
    );
}

#[test]
fn explain_usage_errors_exit_2() {
    for command in [
        "explain envoy/examples/s3-listcheck.json --path /x",
        "explain envoy/examples/s3-listcheck.json --host a --path /x --label novalue",
        "explain envoy/examples/s3-listcheck.json --host a --path /x --bogus 1",
        "frobnicate",
        "",
    ] {
        let args: Vec<&str> = command.split_whitespace().collect();
        let output = cli(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains("error:") || stderr(&output).contains("Usage:"),
            "{args:?}"
        );
    }
}

#[test]
fn trusting_an_identity_header_is_valid_but_warned_about() {
    let config = r#"{"identity": {"trustedHeader": "x-spiffe-id"}, "rules": [{"name": "a", "log": "info"}]}"#;
    let output = cli_stdin(&["check", "-"], config);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("-: warning: identity.trustedHeader: requests without a client certificate may claim any identity in header 'x-spiffe-id'"),
        "{}",
        stderr(&output)
    );
    let output = cli(&["check", "envoy/examples/s4-exemption.json"]);
    assert!(stderr(&output).is_empty(), "no warning by default");
}

#[test]
fn the_gateway_extracts_every_label_the_filter_encodes() {
    use egress_policy::telemetry::metrics::{STATS_TAGS, stats_tag_regex};
    let expected: Vec<(String, String)> = STATS_TAGS
        .iter()
        .map(|tag| (tag.to_string(), stats_tag_regex(tag)))
        .collect();
    // The template's ${...} placeholders are not YAML until rendered; any value will do here.
    let template = std::fs::read_to_string(repo().join("envoy/gateway.yaml")).unwrap();
    let rendered = regex::Regex::new(r"\$\{[A-Z_]+(:-[^}]*)?\}")
        .unwrap()
        .replace_all(&template, "0");
    let gateway: serde_json::Value = serde_saphyr::from_str(&rendered).unwrap();
    let tags: Vec<(String, String)> = gateway["stats_config"]["stats_tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tag_name"].as_str().unwrap().to_owned(),
                t["regex"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(tags, expected);
}

/// The Istio gateway's Helm values are the CLI's output, so the tags Istio extracts are the
/// ones the filter encodes (README: Metrics and the dashboard).
#[test]
fn istio_gateway_values_are_generated_from_the_filters_tag_list() {
    let output = cli(&["istio", "gateway-values"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        std::fs::read_to_string(repo().join("manifests/egress-gateway-values.yaml")).unwrap(),
        "regenerate: target/release/egress-policy istio gateway-values > manifests/egress-gateway-values.yaml"
    );
}

/// Input that cannot be read makes the audit incomplete: exit 2, and standard output says so
/// first and never claims that nothing unauthorized was let through.
#[test]
fn audit_reports_unreadable_input_as_incomplete_and_exits_2() {
    let output = cli_stdin(
        &["audit"],
        "{\"level\":\"info\",\"responseCode\":200}\nnot json\n",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stdout(&output).starts_with("AUDIT INCOMPLETE: 1 input(s) could not be read"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("entries: 1\n"));
    assert!(!stdout(&output).contains("no unauthorized request was let through"));
    assert!(
        stderr(&output).contains("stdin:2: not JSON"),
        "{}",
        stderr(&output)
    );
    for args in [
        &["audit", "/no/such.log"][..],
        &["audit", "tests/data/attacks.json", "/no/such.log"],
    ] {
        let output = cli(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains("/no/such.log: cannot read"));
        assert!(stdout(&output).starts_with("AUDIT INCOMPLETE"), "{args:?}");
        assert!(
            !stdout(&output).contains("no unauthorized request was let through"),
            "{args:?}: {}",
            stdout(&output)
        );
    }
    let violation = cli_stdin(
        &["audit", "-"],
        "{\"level\":\"error\",\"responseCode\":200,\"destination\":\"d\",\"path\":\"/p\"}\nnot json\n",
    );
    assert_eq!(
        violation.status.code(),
        Some(1),
        "a violation outranks unreadable lines"
    );
}

/// `manifests/tls-egress.yaml` (README: HTTPS egress): every TLS host is declared, reaches the
/// gateway over ISTIO_MUTUAL with its own SNI, is routed out by its own Gateway server, and is
/// decided by the NETWORK plugin (manifests/wasmplugin.yaml) carrying the SNI policy.
#[test]
fn tls_egress_manifests_route_each_host_through_the_gateway_under_the_s6_policy() {
    let output = cli(&["check", "manifests/wasmplugin.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = std::fs::read_to_string(repo().join("manifests/tls-egress.yaml")).unwrap()
        + "\n---\n"
        + &std::fs::read_to_string(repo().join("manifests/wasmplugin.yaml")).unwrap();
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let of_kind = |kind: &str| -> Vec<&serde_json::Value> {
        documents.iter().filter(|d| d["kind"] == kind).collect()
    };
    let hosts: Vec<&str> = of_kind("ServiceEntry")[0]["spec"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        ["www.ibm.com", "api.ibm.com", "mongo1.composedb.com"]
    );
    let subsets = of_kind("DestinationRule")[0]["spec"]["subsets"]
        .as_array()
        .unwrap()
        .clone();
    for host in &hosts {
        let gateway = of_kind("Gateway")
            .into_iter()
            .find(|g| g["spec"]["servers"][0]["hosts"][0] == *host)
            .unwrap_or_else(|| panic!("no Gateway server for {host}"));
        let server = &gateway["spec"]["servers"][0];
        assert_eq!(server["tls"]["mode"], "ISTIO_MUTUAL", "{host}");
        assert_eq!(server["port"]["protocol"], "TLS", "{host}");
        let service = of_kind("VirtualService")
            .into_iter()
            .find(|v| v["spec"]["hosts"][0] == *host)
            .unwrap_or_else(|| panic!("no VirtualService for {host}"));
        let to_gateway = &service["spec"]["tls"][0];
        assert_eq!(to_gateway["match"][0]["sniHosts"][0], *host);
        let subset = to_gateway["route"][0]["destination"]["subset"]
            .as_str()
            .unwrap();
        let sni = subsets
            .iter()
            .find(|s| s["name"] == subset)
            .map(|s| &s["trafficPolicy"]["portLevelSettings"][0]["tls"]["sni"]);
        assert_eq!(sni, Some(&serde_json::json!(host)), "{host}: outer SNI");
        let out = &service["spec"]["tcp"][0];
        assert_eq!(out["match"][0]["gateways"][0], gateway["metadata"]["name"]);
        assert_eq!(out["route"][0]["destination"]["host"], *host);
    }
    let plugin = of_kind("WasmPlugin")
        .into_iter()
        .find(|p| p["spec"]["type"] == "NETWORK")
        .unwrap();
    assert_eq!(plugin["spec"]["type"], "NETWORK");
    // The root id under which the module runs as a network filter, as in envoy/gateway.yaml.
    assert_eq!(plugin["spec"]["pluginName"], "egress-policy-tcp");
    let s6: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("envoy/examples/s6-sni.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(plugin["spec"]["pluginConfig"], s6);
    let hold = &of_kind("EnvoyFilter")[0]["spec"]["configPatches"][0]["patch"]["value"];
    let gateway_yaml = std::fs::read_to_string(repo().join("envoy/gateway.yaml")).unwrap();
    let early = hold["typed_config"]["max_early_data_bytes"]
        .as_u64()
        .unwrap();
    assert!(gateway_yaml.contains(&format!("max_early_data_bytes: {early}")));
}

#[test]
fn pin_sets_every_plugins_image_and_refuses_what_istio_would_not_pull() {
    let sha = "a".repeat(64);
    let output = cli(&[
        "istio",
        "pin",
        "manifests/trafficextension.yaml",
        "--url",
        "oci://registry.local/egress-policy:1",
        "--sha256",
        &sha,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let pinned: Vec<serde_json::Value> = serde_saphyr::from_multiple(&stdout(&output)).unwrap();
    assert_eq!(pinned.len(), 2);
    for document in &pinned {
        assert_eq!(document["spec"]["wasm"]["sha256"], sha.as_str());
        assert_eq!(
            document["spec"]["wasm"]["url"],
            "oci://registry.local/egress-policy:1"
        );
    }
    for (args, expected) in [
        (
            vec!["--url", "registry.local/x:1", "--sha256", &sha],
            "expected an OCI image",
        ),
        (
            vec!["--url", "oci://r/x:1", "--sha256", "sha256:abc"],
            "expected 64 lower-case hex digits",
        ),
    ] {
        let mut all = vec!["istio", "pin", "manifests/wasmplugin.yaml"];
        all.extend(args);
        let output = cli(&all);
        assert_eq!(output.status.code(), Some(2));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
    let output = cli(&[
        "istio",
        "pin",
        "manifests/security.yaml",
        "--url",
        "oci://r/x:1",
        "--sha256",
        &sha,
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no WasmPlugin or TrafficExtension to pin"));
}

/// A manifest with both filters (`manifests/wasmplugin.yaml`, `trafficextension.yaml`):
/// `explain` decides a request with the HTTP filter's configuration and a connection (`--sni`)
/// with the network filter's.
#[test]
fn explain_takes_the_filter_that_decides_what_is_asked() {
    for manifest in [
        "manifests/wasmplugin.yaml",
        "manifests/trafficextension.yaml",
    ] {
        let request = cli(&[
            "explain",
            manifest,
            "--host",
            "edition.cnn.com",
            "--path",
            "/politics",
        ]);
        assert_eq!(request.status.code(), Some(1), "{}", stderr(&request));
        assert!(
            stdout(&request).contains("list=path-checker"),
            "{}",
            stdout(&request)
        );
        let connection = cli(&[
            "explain",
            manifest,
            "--sni",
            "api.ibm.com",
            "--namespace",
            "default",
            "--service-account",
            "app-a",
        ]);
        assert_eq!(connection.status.code(), Some(0), "{}", stderr(&connection));
        assert!(
            stdout(&connection).contains("app-a-to-ibm"),
            "{}",
            stdout(&connection)
        );
    }
}

/// `audit --verify` and `--baseline` given bad input: each names what is wrong; nothing
/// unreadable passes for verified.
#[test]
fn audit_verify_and_baseline_name_bad_input() {
    let public = crate::support::signing_public_key().display().to_string();
    let gateway_cert = crate::support::certs()
        .join("gateway.crt")
        .display()
        .to_string();
    let cases: [(&[&str], Option<&str>, i32, &str); 7] = [
        (&["audit", "--verify", "x.log"], None, 2, "--public-key"),
        (
            &["audit", "--verify", "--public-key", "/no/such.pub", "-"],
            Some(""),
            2,
            "--public-key /no/such.pub: cannot read",
        ),
        (
            &["audit", "--verify", "--public-key", &gateway_cert, "-"],
            Some(""),
            2,
            "no '-----BEGIN PUBLIC KEY-----' line",
        ),
        (
            &["audit", "--verify", "--public-key", &public, "-"],
            Some(""),
            1,
            "NOTHING VERIFIED",
        ),
        (
            &["audit", "--verify", "--public-key", &public, "-"],
            Some("{\"level\":\"info\",\"path\":\"/politics\"}\n"),
            1,
            "stdin:1: not sealed",
        ),
        (
            &["audit", "--baseline", "/no/such.log", "-"],
            Some(""),
            2,
            "/no/such.log: cannot read",
        ),
        (&["audit", "--json", "-"], Some(""), 2, "--json is for"),
    ];
    for (args, input, code, says) in cases {
        let output = match input {
            Some(input) => cli_stdin(args, input),
            None => cli(args),
        };
        let text = format!("{}{}", stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
}
