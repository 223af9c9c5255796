//! Logs as evidence in a real Envoy (README: Security, "Logs as evidence"): every line names the
//! policy version that decided it, the log verifies with the public key, and removing, editing,
//! moving or inserting any one line makes `audit --verify` fail naming where; a reopened log
//! verifies across its files; the baseline report surfaces application A trying mongo1.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{
    Gateway, TempDir, certs, cli_command, http_post, repo, signing_public_key, with_signing_key,
};

const CNN: &str = "edition.cnn.com";

/// The list-check policy with a checkpoint every `lines` lines, so a short run has several.
fn list_check_with_checkpoints_every(lines: u32) -> String {
    let text = std::fs::read_to_string(repo().join("envoy/examples/s3-listcheck.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    config["log"]["checkpointLines"] = lines.into();
    config.to_string()
}

fn verify(files: &[&Path], public_key: &Path) -> Output {
    cli_command()
        .args(["audit", "--verify", "--public-key"])
        .arg(public_key)
        .args(files)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Sends politics, sport and health `rounds` times and waits until their lines are written.
fn traffic(gateway: &Gateway, rounds: u64) {
    for _ in 0..rounds {
        for path in ["/politics", "/sport", "/health"] {
            gateway.status(CNN, path);
        }
    }
    gateway.settle(rounds * 3);
}

#[test]
fn lines_from_envoy_verify_and_removing_editing_moving_or_inserting_any_one_is_named() {
    let gateway = Gateway::with_config("evidence", &list_check_with_checkpoints_every(2));
    traffic(&gateway, 2);
    let log = gateway.dir.path("egress.log");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let checkpoints = lines
        .iter()
        .filter(|l| l.contains("\"checkpoint\":"))
        .count();
    assert!(
        checkpoints >= 2,
        "a checkpoint every second line of each stream: {lines:#?}"
    );
    let verified = verify(&[&log], &signing_public_key());
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(
        text(&verified).contains("every stream verifies"),
        "{}",
        text(&verified)
    );

    let dir = TempDir::new("tampered");
    let tampered = dir.path("egress.log");
    let check = |what: &str, at: usize, edited: Vec<String>| {
        std::fs::write(&tampered, edited.join("\n") + "\n").unwrap();
        let output = verify(&[&tampered], &signing_public_key());
        let report = text(&output);
        assert_eq!(output.status.code(), Some(1), "{what} line {at}: {report}");
        assert!(
            report.contains("VERIFICATION FAILED") && report.contains("stream "),
            "{what} line {at}: {report}"
        );
    };
    // Each worker (wasm VM) writes its own stream.
    let stream_of = |line: &str| -> String {
        serde_json::from_str::<Value>(line).unwrap()["stream"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let is_last_of_its_stream = |at: usize| {
        let stream = stream_of(&lines[at]);
        lines[at + 1..].iter().all(|l| stream_of(l) != stream)
    };
    for at in 0..lines.len() {
        let mut edited = lines.clone();
        edited[at] = edited[at].replacen(CNN, "edition.cnn.co", 1).replacen(
            "\"level\":\"info\"",
            "\"level\":\"debug\"",
            1,
        );
        assert_ne!(edited[at], lines[at]);
        check("edited", at, edited);
        let mut inserted = lines.clone();
        inserted.insert(at, lines[at].clone());
        check("inserted", at, inserted);
        // A stream's last line removed leaves a shorter stream that is consistent: a later
        // checkpoint, or the last one a verifier kept, tells (README: Security).
        if !is_last_of_its_stream(at) {
            let mut removed = lines.clone();
            removed.remove(at);
            check("removed", at, removed);
        }
        // Two lines of different streams swapped are each still in their stream's order.
        if at + 1 < lines.len() && stream_of(&lines[at]) == stream_of(&lines[at + 1]) {
            let mut swapped = lines.clone();
            swapped.swap(at, at + 1);
            check("swapped", at, swapped);
        }
    }

    // What a verifier keeps: the report's last checkpoints. A later copy cut before one of them
    // verifies on its own, but not against what was kept.
    let report = dir.path("verified.json");
    let json = cli_command()
        .args(["audit", "--verify", "--json", "--public-key"])
        .arg(signing_public_key())
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(0));
    std::fs::write(&report, &json.stdout).unwrap();
    let last_checkpoint = lines
        .iter()
        .rposition(|l| l.contains("\"checkpoint\":"))
        .unwrap();
    std::fs::write(&tampered, lines[..last_checkpoint].join("\n") + "\n").unwrap();
    let cut = verify(&[&tampered], &signing_public_key());
    assert_eq!(
        cut.status.code(),
        Some(0),
        "cut at a stream's end: {}",
        text(&cut)
    );
    let against_kept = cli_command()
        .args(["audit", "--verify", "--public-key"])
        .arg(signing_public_key())
        .arg("--kept-checkpoints")
        .arg(&report)
        .arg(&tampered)
        .output()
        .unwrap();
    assert_eq!(
        against_kept.status.code(),
        Some(1),
        "{}",
        text(&against_kept)
    );
    assert!(
        text(&against_kept).contains("is not in these logs"),
        "{}",
        text(&against_kept)
    );
    let whole = cli_command()
        .args(["audit", "--verify", "--public-key"])
        .arg(signing_public_key())
        .arg("--kept-checkpoints")
        .arg(&report)
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(whole.status.code(), Some(0), "{}", text(&whole));

    // A key that did not sign the log vouches for nothing.
    let other = dir.path("other.key");
    let other_pub = dir.path("other.pub");
    assert!(
        std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&other)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&other)
            .arg("-out")
            .arg(&other_pub)
            .status()
            .unwrap()
            .success()
    );
    let wrong_key = verify(&[&log], &other_pub);
    assert_eq!(wrong_key.status.code(), Some(1), "{}", text(&wrong_key));
    assert!(
        text(&wrong_key).contains("none of the public keys given"),
        "{}",
        text(&wrong_key)
    );
}

/// A checkpoint's signature is plain Ed25519 over a documented message: openssl checks it
/// without this program.
#[test]
fn openssl_alone_verifies_a_checkpoint_signature() {
    let gateway = Gateway::with_config("openssl-checkpoint", &list_check_with_checkpoints_every(2));
    traffic(&gateway, 1);
    let checkpoint = gateway
        .sealed_log_lines()
        .into_iter()
        .find(|line| line.get("checkpoint").is_some())
        .expect("a checkpoint after two lines");
    let signed = &checkpoint["checkpoint"];
    let message = format!(
        "egress-policy checkpoint v1 {} {} {}",
        checkpoint["stream"].as_str().unwrap(),
        signed["seq"],
        signed["chain"].as_str().unwrap()
    );
    let signature: Vec<u8> = (0..128)
        .step_by(2)
        .map(|i| u8::from_str_radix(&signed["signature"].as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect();
    let dir = TempDir::new("openssl-verify");
    std::fs::write(dir.path("message"), &message).unwrap();
    std::fs::write(dir.path("signature"), &signature).unwrap();
    let output = std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(signing_public_key())
        .arg("-in")
        .arg(dir.path("message"))
        .arg("-sigfile")
        .arg(dir.path("signature"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("Signature Verified Successfully"));
}

#[test]
fn every_line_of_a_reloaded_gateway_names_the_version_that_decided_it() {
    let logging = repo().join("envoy/examples/s1-logging.json");
    let list_check = repo().join("envoy/examples/s3-listcheck.json");
    let version_of = |config: &Path| -> String {
        let output = cli_command().arg("check").arg(config).output().unwrap();
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        out.trim()
            .rsplit("policyVersion ")
            .next()
            .unwrap()
            .to_owned()
    };
    let (v1, v2) = (version_of(&logging), version_of(&list_check));
    assert_ne!(v1, v2);
    let gateway = Gateway::start(&logging);
    assert_eq!(gateway.status(CNN, "/politics"), 200);
    gateway.settle(1);
    assert_eq!(gateway.metric("config_info", &[("policy_version", &v1)]), 1);
    assert!(gateway.reload(&list_check));
    assert_eq!(gateway.status(CNN, "/politics"), 404);
    gateway.settle(2);
    let versions: Vec<String> = gateway
        .sealed_log_lines()
        .iter()
        .filter(|line| line.get("checkpoint").is_none())
        .map(|line| {
            format!(
                "{} {}",
                line["responseCode"],
                line["policyVersion"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            format!("200 {v1}"),
            format!("200 {v1}"),
            format!("404 {v2}"),
            format!("404 {v2}")
        ],
        "error and info lines of each politics request"
    );
    assert_eq!(gateway.metric("config_info", &[("policy_version", &v2)]), 1);
    assert_eq!(
        gateway.metric("config_info", &[("policy_version", &v1)]),
        0,
        "the replaced version is no longer in force"
    );
    // The streams go on across the reload: the whole log still verifies.
    let log = gateway.dir.path("egress.log");
    let verified = verify(&[&log], &signing_public_key());
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    // audit groups the entries by the version that decided them.
    let audit = cli_command().arg("audit").arg(&log).output().unwrap();
    let report = text(&audit);
    assert!(
        report.contains(&format!(
            "by policy version:\n         2  {v1}\n         2  {v2}"
        )) || report.contains(&format!(
            "by policy version:\n         2  {v2}\n         2  {v1}"
        )),
        "{report}"
    );
}

/// Envoy reopening its log (logrotate: rename, then `/reopen_logs`) continues every stream in
/// the new file: the files verify given in order, and the new one alone says what is missing.
#[test]
fn a_reopened_log_verifies_across_its_files_given_in_order() {
    let gateway = Gateway::with_config("reopen", &list_check_with_checkpoints_every(4));
    traffic(&gateway, 1);
    let log = gateway.dir.path("egress.log");
    let rotated = gateway.dir.path("egress.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(http_post(gateway.admin_port, "/reopen_logs"), Some(200));
    traffic(&gateway, 4);
    assert!(log.exists(), "Envoy reopened the log");
    let both = verify(&[&rotated, &log], &signing_public_key());
    assert_eq!(both.status.code(), Some(0), "{}", text(&both));
    // A stream (a worker) that wrote to both files cannot be verified from the new one alone,
    // nor with the files out of order. Which workers took the requests is the kernel's choice.
    let streams = |path: &Path| -> std::collections::BTreeSet<String> {
        crate::support::read_json_lines(path)
            .iter()
            .filter_map(|l| l["stream"].as_str().map(str::to_owned))
            .collect()
    };
    let spanning = streams(&rotated).intersection(&streams(&log)).count();
    let alone = verify(&[&log], &signing_public_key());
    let reversed = verify(&[&log, &rotated], &signing_public_key());
    if spanning > 0 {
        assert_eq!(alone.status.code(), Some(1), "{}", text(&alone));
        assert!(text(&alone).contains("begins at seq"), "{}", text(&alone));
        assert_eq!(reversed.status.code(), Some(1), "{}", text(&reversed));
    } else {
        assert_eq!(alone.status.code(), Some(0), "{}", text(&alone));
    }
}

/// The documents' attack: application A, compromised, tries mongo1. Against a baseline in which
/// A reached only *.ibm.com, the report names the new pair and A's refusals.
#[test]
fn the_baseline_report_surfaces_application_a_trying_mongo1() {
    const GET: &str = "GET / HTTP/1.1\r\nHost: api.ibm.com\r\n\r\n";
    let gateway = Gateway::example("s6-sni.json");
    gateway.tls_client(Some("app-a"), "api.ibm.com", &["--request", GET]);
    gateway.tls_client(
        Some("app-b"),
        "mongo1.composedb.com",
        &["--echo", "isMaster"],
    );
    gateway.settle_connections(2);
    let log = gateway.dir.path("egress.log");
    let baseline = gateway.dir.path("baseline.log");
    std::fs::copy(&log, &baseline).unwrap();
    let before = std::fs::read_to_string(&log).unwrap().len();
    gateway.tls_client(Some("app-a"), "mongo1.composedb.com", &["--echo", "find"]);
    gateway.settle_connections(3);
    let today = gateway.dir.path("today.log");
    std::fs::write(&today, &std::fs::read(&log).unwrap()[before..]).unwrap();

    let output = cli_command()
        .arg("audit")
        .arg("--baseline")
        .arg(&baseline)
        .arg(&today)
        .output()
        .unwrap();
    let report = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "information, not a failure: {report}"
    );
    assert!(
        report.contains("new (source, destination) pairs: 1\n  app-a (default) -> mongo1.composedb.com  1 time(s), first 20"),
        "{report}"
    );
    assert!(
        report.contains(
            "sources with denied requests or connections: 1\n  app-a (default)  1 denied"
        ),
        "{report}"
    );
    assert!(
        report.contains("destinations first contacted: 0"),
        "{report}"
    );

    let output = cli_command()
        .args(["audit", "--json", "--baseline"])
        .arg(&baseline)
        .arg(&today)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["newPairs"][0]["source"], "app-a (default)");
    assert_eq!(report["newPairs"][0]["destination"], "mongo1.composedb.com");
    assert_eq!(report["deniedSources"][0]["denied"], 1);
}

/// A key that is set but unusable refuses the configuration (fail closed, the variable named),
/// rather than write lines nobody can vouch for.
#[test]
fn a_signing_key_that_is_set_but_unusable_refuses_the_configuration() {
    let gateway = with_signing_key("not a key", || Gateway::example("s3-listcheck.json"));
    assert_eq!(gateway.status(CNN, "/sport"), 500);
    assert!(gateway.upstream.paths().is_empty());
    let stderr = gateway.envoy_stderr();
    assert!(
        stderr.contains("egress-policy: configuration refused: EGRESS_LOG_SIGNING_KEY: no '-----BEGIN PRIVATE KEY-----' line"),
        "{stderr}"
    );
    // The mesh's own certificates are no signing key either.
    let ec_key = std::fs::read_to_string(certs().join("gateway.key")).unwrap();
    let gateway = with_signing_key(&ec_key, || Gateway::example("s3-listcheck.json"));
    assert_eq!(gateway.status(CNN, "/sport"), 500);
}

/// Remote lists are versioned apart from the policy: every line names the digest of each list
/// in force (`unloaded` before its first fetch), and a changed list, not a changed policy, moves
/// it.
#[test]
fn every_line_names_the_remote_lists_in_force() {
    let config = serde_json::json!({
        "lists": {"path-checker": {"value": "request.url_path", "entries": ["/health"],
            "provider": {"cluster": "egress_policy_lists", "path": "/paths.txt",
                         "refreshInterval": "100ms", "ttl": "60s"}}},
        "rules": [{"name": "handle-cnn-access", "match": "request.host.endsWith(\".cnn.com\")",
                   "log": "info", "check": ["path-checker"]}]
    });
    let gateway = Gateway::with_config("list-versions", &config.to_string());
    assert_eq!(gateway.status(CNN, "/health"), 200, "static entries");
    gateway.lists.write("paths.txt", "/sport\n");
    crate::support::wait_until("the first list", crate::support::STARTUP_TIMEOUT, || {
        gateway.status(CNN, "/sport") == 200
    });
    gateway.lists.write("paths.txt", "/sport\n/politics\n");
    crate::support::wait_until("the changed list", crate::support::STARTUP_TIMEOUT, || {
        gateway.status(CNN, "/politics") == 200
    });
    // Envoy writes the log on a timer: wait for the line of the request that passed.
    crate::support::wait_until(
        "the allowed politics line",
        crate::support::STARTUP_TIMEOUT,
        || {
            gateway
                .log_entries()
                .iter()
                .any(|l| l["path"] == "/politics" && l["responseCode"] == 200)
        },
    );
    let lines = gateway.sealed_log_lines();
    let versions: Vec<&str> = lines
        .iter()
        .filter(|l| l.get("checkpoint").is_none())
        .map(|l| l["listVersions"]["path-checker"].as_str().unwrap())
        .collect();
    assert_eq!(versions.first(), Some(&"unloaded"), "{versions:?}");
    let loaded: std::collections::BTreeSet<&str> = versions
        .iter()
        .copied()
        .filter(|v| *v != "unloaded")
        .collect();
    assert!(
        loaded.len() >= 2,
        "two lists in force one after the other: {:?}",
        lines
            .iter()
            .map(|l| format!("{} {} {}", l["path"], l["responseCode"], l["listVersions"]))
            .collect::<Vec<_>>()
    );
    assert!(loaded.iter().all(|v| v.len() == 16), "{loaded:?}");
    let policy: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["policyVersion"].as_str().unwrap())
        .collect();
    assert_eq!(policy.len(), 1, "the policy did not change: {policy:?}");
}
