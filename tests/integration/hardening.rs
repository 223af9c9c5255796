//! What an outside attack suite and a review found open, each proven closed against a real
//! Envoy: headers and bodies the policy never saw, paths that are not canonical, a crashed VM,
//! reloads that reported what did not happen, a policy that decides nothing, and a metrics
//! label that matched the wrong hosts. (List servers that broke the VM: `tests/integration/lists.rs`; the
//! CLI and the filter deciding alike: `tests/integration/parity.rs`.)

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Gateway, TempDir, build_test_module, repo, wait_until};
use serde_json::Value;

const CNN: &str = "edition.cnn.com";

fn example(name: &str) -> PathBuf {
    repo().join("envoy/examples").join(name)
}

/// The names of every header the upstream received, over all requests.
fn upstream_header_names(gateway: &Gateway) -> Vec<String> {
    gateway
        .upstream
        .requests()
        .iter()
        .flat_map(|r| r["headers"].as_array().unwrap().clone())
        .map(|pair| pair[0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn headers_the_policy_never_saw_never_reach_the_destination() {
    let gateway = Gateway::example("s3-listcheck.json");
    let output = gateway.curl(
        &[
            "-w",
            "%{http_code}",
            "-H",
            "Host: edition.cnn.com",
            "-H",
            "x-envoy-original-path: /politics",
            "-H",
            "x-envoy-decorator-operation: politics",
            "-H",
            "X-Original-URL: /politics",
            "-H",
            "x-rewrite-url: /politics",
            "-H",
            "x-forwarded-prefix: /politics",
            "-H",
            "X-HTTP-Method-Override: DELETE",
            "-H",
            "x-forwarded-host: politics.example.com",
            "-H",
            "x-request-tag: kept",
        ],
        "/sport",
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200");
    let names = upstream_header_names(&gateway);
    assert!(names.contains(&"x-request-tag".to_owned()), "{names:?}");
    for name in &names {
        assert!(
            !egress_policy::core::request::is_stripped_header(name.as_bytes()),
            "{name} reached the destination: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("x-envoy-")),
        "Envoy's own x-envoy-* headers leave the mesh: {names:?}"
    );
}

#[test]
fn a_body_on_get_cannot_smuggle_a_second_request() {
    let gateway = Gateway::example("s3-listcheck.json");
    let smuggled = "GET /politics HTTP/1.1\r\nHost: edition.cnn.com\r\n\r\n";
    assert_eq!(smuggled.len(), 49);
    let request = format!(
        "GET /sport HTTP/1.1\r\nHost: edition.cnn.com\r\nContent-Length: 49\r\n\r\n{smuggled}"
    );
    assert_eq!(gateway.raw_request(request.as_bytes()), 400);
    let chunked = "HEAD /sport HTTP/1.1\r\nHost: edition.cnn.com\r\nTransfer-Encoding: chunked\r\n\r\n31\r\nGET /politics HTTP/1.1\r\nHost: edition.cnn.com\r\n\r\n\r\n0\r\n\r\n";
    assert_eq!(gateway.raw_request(chunked.as_bytes()), 400);
    // A POST with the same body is an ordinary request: decided and forwarded with its body.
    let post = format!(
        "POST /sport HTTP/1.1\r\nHost: edition.cnn.com\r\nContent-Length: 49\r\nConnection: close\r\n\r\n{smuggled}"
    );
    assert_eq!(gateway.raw_request(post.as_bytes()), 200);
    gateway.settle(3);
    let received = gateway.upstream.requests();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["method"], "POST");
    assert_eq!(received[0]["body"], smuggled);
    let entries = gateway.log_entries_without_time();
    let rejected: Vec<&Value> = entries.iter().filter(|e| e["level"] == "error").collect();
    assert_eq!(rejected.len(), 2, "{entries:?}");
    for entry in rejected {
        assert_eq!(
            entry["rejected"],
            "GET, HEAD, OPTIONS and TRACE requests may not carry a body"
        );
        assert_eq!(entry["responseCode"], 400);
    }
}

#[test]
fn get_bodies_reach_only_the_hosts_the_configuration_allows() {
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(example("s3-listcheck.json")).unwrap()).unwrap();
    config["allowSafeMethodBodies"] = serde_json::json!(["edition.cnn.com"]);
    let gateway = Gateway::with_config("safe-method-bodies", &config.to_string());
    let query = r#"{"query": {"match_all": {}}}"#;
    let request = |host: &str| {
        format!(
            "GET /sport HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{query}",
            query.len()
        )
    };
    assert_eq!(gateway.raw_request(request(CNN).as_bytes()), 200);
    assert_eq!(
        gateway.raw_request(request("www.example.com").as_bytes()),
        400
    );
    let received = gateway.upstream.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["body"], query);
}

/// Every look-alike of a delimiter in `crates/egress-policy-core/src/lookalikes.tsv` (Unicode compatibility forms and
/// Windows best-fit mappings of `/`, `\\`, `.`, `%`, `;`, `?`, `#`, `:`), percent-encoded behind
/// an allowed prefix, over HTTP/1.1 and HTTP/2: refused with 400 and an `error` entry naming
/// why, never let through as `/sport/...` to an origin that would normalise it into
/// `/politics`.
#[test]
fn lookalike_delimiters_behind_an_allowed_prefix_are_refused_over_http1_and_http2() {
    let gateway = Gateway::start(&repo().join("tests/data/configs/path-prefixes.json"));
    let table =
        std::fs::read_to_string(repo().join("crates/egress-policy-core/src/lookalikes.tsv"))
            .unwrap();
    let paths: Vec<String> = table
        .lines()
        .filter(|line| line.starts_with("U+"))
        .map(|line| {
            let hex = line[2..].split('\t').next().unwrap();
            let c = char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap();
            let mut utf8 = [0; 4];
            let escaped: String = c
                .encode_utf8(&mut utf8)
                .bytes()
                .map(|b| format!("%{b:02x}"))
                .collect();
            format!("/sport/..{escaped}..{escaped}politics")
        })
        .collect();
    assert!(paths.len() >= 60, "{}", paths.len());
    for protocol in ["--http1.1", "--http2-prior-knowledge"] {
        for path in &paths {
            let output = gateway.curl(
                &[
                    "--path-as-is",
                    protocol,
                    "-H",
                    &format!("Host: {CNN}"),
                    "-w",
                    "%{http_code}",
                ],
                path,
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                "400",
                "{protocol} {path}"
            );
        }
    }
    gateway.settle(2 * paths.len() as u64);
    let entries = gateway.log_entries_without_time();
    let errors: Vec<&Value> = entries.iter().filter(|e| e["level"] == "error").collect();
    assert_eq!(errors.len(), 2 * paths.len(), "{entries:?}");
    for entry in errors {
        assert_eq!(
            entry["rejected"],
            "path has a character that a server may read as a slash, backslash, dot, percent, semicolon, question mark, number sign or colon (a Unicode compatibility or Windows best-fit look-alike)"
        );
        assert_eq!(entry["responseCode"], 400);
    }
    assert!(
        gateway.upstream.paths().is_empty(),
        "{:?}",
        gateway.upstream.paths()
    );
}

/// Canonical-or-reject for a `PATH_PREFIXES` list and a route, with Envoy's normalization on
/// (as bundled): the escapes Envoy passes through are refused by the filter (400, an `error`
/// entry naming why), never decided on as `/sport/...`.
#[test]
fn paths_that_decode_ambiguously_are_refused_for_path_prefix_lists_and_routes() {
    let gateway = Gateway::start(&repo().join("tests/data/configs/path-prefixes.json"));
    let refused = [
        (
            "/sport/%c0%ae%c0%ae/politics",
            "path decodes to bytes that are not shortest-form UTF-8",
        ),
        (
            "/sport/%e0%80%ae%e0%80%ae/politics",
            "path decodes to bytes that are not shortest-form UTF-8",
        ),
        (
            "/sport/..%c0%afpolitics",
            "path decodes to bytes that are not shortest-form UTF-8",
        ),
        (
            "/sport/%u002e%u002e/politics",
            "path has a malformed percent escape",
        ),
        ("/sport/%zz/politics", "path has a malformed percent escape"),
    ];
    let status = |host: &str, path: &str| {
        let output = gateway.curl(
            &[
                "-w",
                "%{http_code}",
                "--path-as-is",
                "-H",
                &format!("Host: {host}"),
            ],
            path,
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for (path, _) in refused {
        assert_eq!(status(CNN, path), "400", "{path}");
        assert_eq!(status("api.example.com", path), "400", "route: {path}");
    }
    // Envoy refuses an encoded NUL itself (the filter would too: `encoded_control`).
    assert_eq!(status(CNN, "/sport/%00/politics"), "400");
    // One meaning of a trailing slash for lists and routes: `/sport/` is the segment `sport`.
    assert_eq!(status(CNN, "/sport"), "200");
    assert_eq!(status(CNN, "/sport/football"), "200");
    assert_eq!(status(CNN, "/sports"), "404");
    gateway.settle(2 * refused.len() as u64 + 1 + 3);
    let entries = gateway.log_entries_without_time();
    let errors: Vec<&Value> = entries.iter().filter(|e| e["level"] == "error").collect();
    assert_eq!(errors.len(), 2 * refused.len(), "{entries:?}");
    for (entry, (path, why)) in errors.iter().step_by(2).zip(refused) {
        assert_eq!(entry["path"], path);
        assert_eq!(entry["rejected"], why);
    }
    assert_eq!(gateway.upstream.paths(), ["/sport", "/sport/football"]);
    let details = |path: &str| -> Vec<String> {
        gateway
            .access_log()
            .iter()
            .filter(|a| a["authority"] == "api.example.com" && a["path"] == path)
            .map(|a| a["details"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(status("api.example.com", "/sports"), "404");
    assert_eq!(status("api.example.com", "/sport"), "503");
    gateway.settle(2 * refused.len() as u64 + 1 + 3 + 2);
    // The filter's route refuses /sports; /sport passes it and reaches the dynamic forward
    // proxy, for which api.example.com resolves nowhere (the test DNS does not know it).
    assert_eq!(details("/sports"), ["egress_policy_denied:route=api"]);
    assert_eq!(
        details("/sport"),
        ["dns_resolution_failure{cares_norecords:Domain_name_not_found}"]
    );
}

/// A test-only build of the module traps on demand (`--features test-trap`), in a target
/// directory of its own so the module Envoy normally loads is never replaced.
fn trapping_module() -> PathBuf {
    let args = [
        "--target",
        "wasm32-wasip1",
        "--lib",
        "--features",
        "test-trap",
    ];
    build_test_module(&args, "target/trap").join("wasm32-wasip1/release/egress_policy.wasm")
}

#[test]
fn a_crashed_vm_is_reloaded_and_refuses_requests_meanwhile() {
    let gateway = Gateway::example("s3-listcheck.json");
    assert!(gateway.reload_with_module(&example("s3-listcheck.json"), &trapping_module()));
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    let trap = gateway.status_with_header(CNN, "/politics", "x-egress-policy-test-trap: 1");
    assert_eq!(trap, 503, "a trapped VM refuses the request");
    // Envoy reloads the crashed VM on its worker's next request after a backoff; until then
    // that worker refuses. Other workers decide as always.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answers = Vec::new();
    while gateway.counter("wasm.egress-policy.vm_reload_success") == 0 {
        let sport = gateway.status(CNN, "/sport");
        let politics = gateway.status(CNN, "/politics");
        answers.push((sport, politics));
        assert!(
            Instant::now() < deadline,
            "the VM never came back: {answers:?}"
        );
    }
    assert!(
        answers
            .iter()
            .all(|(s, p)| matches!(s, 200 | 503) && matches!(p, 404 | 503)),
        "{answers:?}"
    );
    for _ in 0..4 {
        assert_eq!(gateway.status(CNN, "/sport"), 200, "after the reload");
        assert_eq!(gateway.status(CNN, "/politics"), 404, "after the reload");
    }
    assert!(
        gateway
            .upstream
            .paths()
            .iter()
            .all(|p| p.as_str() == "/sport"),
        "{:?}",
        gateway.upstream.paths()
    );
}

/// `scripts/reload` against a gateway: what it says is what Envoy then serves.
#[test]
fn reload_reports_what_envoy_serves_unchanged_reloaded_or_refused() {
    let gateway = Gateway::example("s3-listcheck.json");
    let reload = |args: &[&str]| {
        let output = Command::new(repo().join("scripts/reload"))
            .args(args)
            .env("EGRESS_RUN_DIR", &gateway.dir.0)
            .env("EGRESS_ADMIN_PORT", gateway.admin_port.to_string())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let s1 = example("s1-logging.json").display().to_string();
    let s3 = example("s3-listcheck.json").display().to_string();
    let (code, said) = reload(&[&s3]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("unchanged:"), "{said}");
    let (code, said) = reload(&[&s1]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("reloaded:"), "{said}");
    assert_eq!(
        gateway.status(CNN, "/politics"),
        200,
        "the logging policy only logs"
    );

    let dir = TempDir::new("reload-refused");
    let decides_nothing = dir.path("empty.json");
    std::fs::write(&decides_nothing, "{}").unwrap();
    let empty = decides_nothing.display().to_string();
    let (code, said) = reload(&[&empty]);
    assert_eq!(code, Some(1), "the CLI refuses it: {said}");
    assert!(said.contains("no rules and no routes"), "{said}");
    let (code, said) = reload(&["--no-check", &empty]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("refused: Envoy rejected"), "{said}");
    let (code, said) = reload(&["--no-check", &empty]);
    assert_eq!(code, Some(1), "the same refused content again: {said}");
    assert!(said.contains("when it was last sent"), "{said}");
    let (code, said) = reload(&[&s1]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("unchanged:"), "{said}");
    assert_eq!(
        gateway.status(CNN, "/politics"),
        200,
        "the logging policy still serves"
    );
    wait_until("Envoy's log", Duration::from_secs(10), || {
        gateway
            .envoy_stderr()
            .contains("the configuration has no rules and no routes")
    });
}

#[test]
fn the_destination_label_matches_whole_host_labels_only() {
    let gateway = Gateway::example("s3-listcheck.json");
    // S3 decides *.cnn.com only: evilcnn.com is forwarded, and the test DNS knows no such name.
    assert_eq!(gateway.status("evilcnn.com", "/politics"), 503);
    assert_eq!(gateway.status("money.cnn.com", "/politics"), 404);
    let requests = |destination: &str| gateway.metric("requests", &[("destination", destination)]);
    wait_until("the counters", Duration::from_secs(10), || {
        requests("other") >= 1 && requests("*.cnn.com") >= 1
    });
    assert_eq!(requests("other"), 1, "evilcnn.com is no *.cnn.com");
    assert_eq!(requests("*.cnn.com"), 1);
}
