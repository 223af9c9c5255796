//! HTTPS and other TLS egress (README: HTTPS egress), end to end in a real Envoy: the source
//! documents' policy (`envoy/examples/s6-sni.json`) on the sidecar leg (mTLS from the mesh CA
//! around the application's own TLS, as Istio's sidecar opens it) and on plain passthrough.
//! The client (tests/tls-client) runs the application's TLS inside the mTLS leg byte for byte,
//! so the log's byte counts can be checked exactly; the TLS stand-in records every connection it
//! accepts, so a refused one provably never reached it.

use serde_json::Value;

use crate::support::{Gateway, STARTUP_TIMEOUT, wait_until};

const HTTP_GET: &str = "GET / HTTP/1.1\r\nHost: api.ibm.com\r\n\r\n";

/// The stand-in's connections for `sni` (or, with `None`, every one).
fn reached(gateway: &Gateway, sni: Option<&str>) -> Vec<Value> {
    gateway
        .tls_destinations
        .connections()
        .into_iter()
        .filter(|c| sni.is_none_or(|sni| c["sni"] == sni))
        .collect()
}

/// The log entries for connections to `destination`.
fn entries_for(entries: &[Value], destination: &str) -> Vec<Value> {
    entries
        .iter()
        .filter(|e| e["destination"] == destination)
        .cloned()
        .collect()
}

fn refused(report: &Value) -> bool {
    report["inner"] != "ok" && report["status"].is_null() && report["echo"].is_null()
}

#[test]
fn the_documents_tls_policy_holds_on_the_sidecar_leg_with_one_log_line_per_connection() {
    let gateway = Gateway::example("s6-sni.json");

    // A reaches *.ibm.com: the inner handshake verifies the stand-in's certificate for
    // api.ibm.com, and an HTTP GET inside returns 200.
    let a_api = gateway.tls_client(Some("app-a"), "api.ibm.com", &["--request", HTTP_GET]);
    assert_eq!(a_api["inner"], "ok", "{a_api}");
    assert_eq!(a_api["status"], 200, "{a_api}");

    // A must not reach mongo1: refused before any byte is relayed.
    let a_mongo = gateway.tls_client(Some("app-a"), "mongo1.composedb.com", &["--echo", "find"]);
    assert!(refused(&a_mongo), "{a_mongo}");

    // B reaches mongo1; bytes other than HTTP are echoed through the tunnel.
    let b_mongo = gateway.tls_client(
        Some("app-b"),
        "mongo1.composedb.com",
        &["--echo", "isMaster"],
    );
    assert_eq!(b_mongo["echo"], "isMaster", "{b_mongo}");

    // B must not reach www.ibm.com.
    let b_www = gateway.tls_client(Some("app-b"), "www.ibm.com", &["--request", HTTP_GET]);
    assert!(refused(&b_www), "{b_www}");

    // A certificate claiming app-b from another CA fails the mTLS handshake.
    let forged = gateway.tls_client(
        Some("other-ca-app-b"),
        "mongo1.composedb.com",
        &["--echo", "x"],
    );
    assert!(refused(&forged), "{forged}");

    // An SNI outside the policy's destinations.
    let elsewhere = gateway.tls_client(Some("app-b"), "evil.example.com", &["--echo", "x"]);
    assert!(refused(&elsewhere), "{elsewhere}");

    // A allowed to api.ibm.com, asking the server behind it for mongo1 in its own ClientHello
    // (domain fronting inside the tunnel).
    let fronted = gateway.tls_client(
        Some("app-a"),
        "api.ibm.com",
        &["--inner-sni", "mongo1.composedb.com", "--echo", "x"],
    );
    assert!(refused(&fronted), "{fronted}");

    // Plain bytes instead of the application's TLS.
    let plain = gateway.tls_client(Some("app-a"), "api.ibm.com", &["--inner-raw", HTTP_GET]);
    assert!(plain["echo"].is_null(), "{plain}");

    gateway.settle_connections(8);

    // Only the two allowed connections reached the stand-in, each with its own SNI.
    let mut seen: Vec<String> = reached(&gateway, None)
        .iter()
        .map(|c| c["sni"].as_str().unwrap_or("none").to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["api.ibm.com", "mongo1.composedb.com"]);
    assert_eq!(
        reached(&gateway, Some("api.ibm.com"))[0]["http"],
        "GET / HTTP/1.1"
    );

    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), 8, "one entry per connection: {entries:#?}");
    let one = |destination: &str, principal: &str, decision: &str| -> Value {
        let matching: Vec<Value> = entries_for(&entries, destination)
            .into_iter()
            .filter(|e| e["principal"] == principal && e["decision"] == decision)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{destination} {principal} {decision}: {entries:#?}"
        );
        matching[0].clone()
    };
    let app = |name: &str| format!("spiffe://cluster.local/ns/default/sa/{name}");

    let allowed = one("mongo1.composedb.com", &app("app-b"), "allow");
    assert_eq!(allowed["level"], "info");
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["event"], "close");
    // Envoy's counts of what it relayed are exactly what the application sent and read.
    assert_eq!(allowed["receivedBytes"], b_mongo["sent"], "{allowed}");
    assert_eq!(allowed["sentBytes"], b_mongo["received"], "{allowed}");
    assert_eq!(allowed["destinationPort"], gateway.tls_port);

    let a_to_api = one("api.ibm.com", &app("app-a"), "allow");
    assert_eq!(a_to_api["decision"], "allow");
    assert_eq!(a_to_api["receivedBytes"], a_api["sent"]);

    let a_to_mongo = one("mongo1.composedb.com", &app("app-a"), "deny");
    assert_eq!(a_to_mongo["level"], "error");
    assert_eq!(a_to_mongo["source"], "app-a");
    assert_eq!(a_to_mongo["decision"], "deny");
    assert_eq!(
        a_to_mongo["deniedBy"],
        "egress_policy_denied:rule=app-a-elsewhere,list=nowhere"
    );
    assert_eq!(a_to_mongo["event"], "open");
    assert_eq!(a_to_mongo["receivedBytes"], 0);

    let b_to_www = one("www.ibm.com", &app("app-b"), "deny");
    assert_eq!(
        b_to_www["deniedBy"],
        "egress_policy_denied:rule=app-b-elsewhere,list=nowhere"
    );

    // The forged certificate's identity is never believed: no principal, a handshake failure.
    let forged_entry = one("mongo1.composedb.com", "", "reject");
    assert_eq!(forged_entry["source"], "unknown");
    assert_eq!(
        forged_entry["deniedBy"],
        "egress_policy_rejected:tls_handshake_failed"
    );

    assert_eq!(
        one("evil.example.com", &app("app-b"), "deny")["deniedBy"],
        "egress_policy_denied:rule=app-b-elsewhere,list=nowhere"
    );

    let api_refusals: Vec<String> = entries_for(&entries, "api.ibm.com")
        .iter()
        .filter(|e| e["decision"] == "reject")
        .map(|e| e["deniedBy"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        api_refusals,
        [
            "egress_policy_rejected:sni_mismatch",
            "egress_policy_rejected:not_client_hello"
        ]
    );

    // One metrics family for connections, labelled like requests' plus the outcome.
    assert_eq!(gateway.metric("connections", &[("decision", "allow")]), 2);
    assert_eq!(
        gateway.metric(
            "connections",
            &[
                ("decision", "deny"),
                ("destination", "mongo1.composedb.com"),
                ("source_namespace", "default"),
                ("source_app", "app-a"),
                ("source_version", "unknown"),
            ]
        ),
        1
    );
}

#[test]
fn passthrough_without_identity_follows_the_policy_for_unknown_sources() {
    let gateway = Gateway::example("s6-sni.json");
    let report = gateway.tls_client(None, "www.ibm.com", &["--request", HTTP_GET]);
    assert!(refused(&report), "{report}");
    gateway.settle_connections(1);
    assert!(reached(&gateway, None).is_empty());
    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["source"], "unknown");
    assert_eq!(entries[0]["destinationPort"], gateway.passthrough_port);
    assert_eq!(
        entries[0]["deniedBy"],
        "egress_policy_denied:rule=unknown-source,list=nowhere"
    );
}

#[test]
fn passthrough_relays_an_allowed_connection_untouched() {
    // Everything allowed and logged: the application's TLS reaches the destination through the
    // passthrough listener, SNI from its own ClientHello.
    let gateway = Gateway::with_config(
        "passthrough-allowed",
        r#"{"log": {"instance": "c", "fields": {"destination": "connection.requested_server_name | \"\"",
            "receivedBytes": "connection.received.bytes | 0"}},
            "rules": [{"name": "all-tls", "log": "info", "match": "context.protocol == \"tcp\""}]}"#,
    );
    let report = gateway.tls_client(None, "api.ibm.com", &["--request", HTTP_GET]);
    assert_eq!(report["status"], 200, "{report}");
    gateway.settle_connections(1);
    assert_eq!(reached(&gateway, Some("api.ibm.com")).len(), 1);
    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["receivedBytes"], report["sent"]);
}

/// api.ibm.com for anyone, everything else refused; every connection logged with what decided.
const API_IBM_COM_ONLY: &str = r#"{"log": {"instance": "c", "fields": {
        "destination": "connection.requested_server_name | \"\"", "decision": "policy.decision",
        "deniedBy": "policy.deniedBy | \"\"", "event": "connection.event | \"\""}},
    "lists": {"api": {"value": "connection.requested_server_name", "entries": ["api.ibm.com"]}},
    "rules": [{"name": "tls", "log": "info", "check": ["api"], "match": "context.protocol == \"tcp\""}]}"#;

/// The ClientHellos of post-quantum key shares and long ticket lists are larger than one TLS
/// record: up to 64 KiB they are read whole and decided, on both listeners; a larger one, and an
/// outer ClientHello Envoy's TLS inspector cannot read, is refused with a policy line and a
/// metric, never closed unseen.
#[test]
fn client_hellos_over_16_kib_are_decided_and_every_refusal_leaves_a_policy_line() {
    let gateway = Gateway::with_config("large-hello", API_IBM_COM_ONLY);
    let padded = ["--hello-padding", "20000", "--request", HTTP_GET];
    let sidecar_api = gateway.tls_client(Some("app-a"), "api.ibm.com", &padded);
    assert_eq!(sidecar_api["status"], 200, "{sidecar_api}");
    assert!(
        sidecar_api["sent"].as_u64().unwrap() > 20_000,
        "{sidecar_api}"
    );
    let sidecar_www = gateway.tls_client(Some("app-a"), "www.ibm.com", &padded);
    assert!(refused(&sidecar_www), "{sidecar_www}");
    let passthrough_api = gateway.tls_client(None, "api.ibm.com", &padded);
    assert_eq!(passthrough_api["status"], 200, "{passthrough_api}");
    let passthrough_www = gateway.tls_client(None, "www.ibm.com", &padded);
    assert!(refused(&passthrough_www), "{passthrough_www}");
    // Over 64 KiB (an ALPN list near its 64 KiB maximum, and the rest of the hello).
    let too_large = gateway.tls_client(
        None,
        "api.ibm.com",
        &["--hello-padding", "65400", "--request", HTTP_GET],
    );
    assert!(refused(&too_large), "{too_large}");
    // The sidecar's own ClientHello over 16 KiB: Envoy's TLS inspector resets it.
    let outer = gateway.tls_client(
        Some("app-a"),
        "api.ibm.com",
        &["--outer-hello-padding", "20000", "--request", HTTP_GET],
    );
    assert!(outer["outer"] != "ok", "{outer}");
    // The last never became a connection in Envoy's counts: five connections.
    gateway.settle_connections(5);

    let seen: Vec<String> = reached(&gateway, None)
        .iter()
        .map(|c| c["sni"].as_str().unwrap_or("none").to_owned())
        .collect();
    assert_eq!(seen, ["api.ibm.com", "api.ibm.com"]);
    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), 6, "one line per connection: {entries:#?}");
    let decided: Vec<(String, String, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["destination"].as_str().unwrap_or("").to_owned(),
                e["deniedBy"].as_str().unwrap().to_owned(),
                e["relayed"].as_bool().unwrap(),
            )
        })
        .collect();
    let line = |destination: &str, denied_by: &str, relayed: bool| {
        (destination.to_owned(), denied_by.to_owned(), relayed)
    };
    let not_listed = "egress_policy_denied:rule=tls,list=api";
    for expected in [
        line("api.ibm.com", "", true),
        line("www.ibm.com", not_listed, false),
        line("api.ibm.com", "", true),
        line("www.ibm.com", not_listed, false),
        line("", "egress_policy_rejected:client_hello_too_large", false),
        line("", "egress_policy_rejected:client_hello_unreadable", false),
    ] {
        assert!(decided.contains(&expected), "{expected:?} in {decided:#?}");
    }
    let unreadable = entries
        .iter()
        .find(|e| e["deniedBy"] == "egress_policy_rejected:client_hello_unreadable")
        .unwrap();
    assert_eq!(unreadable["level"], "error");
    assert_eq!(unreadable["decision"], "reject");
    assert_eq!(
        unreadable["rejected"],
        "Envoy's TLS inspector closed the connection before the policy filter saw it: its ClientHello was over 16 KiB, not TLS, or late"
    );
    // Counted: the filter's refusals in its own metric (the VMs hand their counts to Envoy on
    // their timer), the inspector's in Envoy's.
    wait_until("the refusal is counted", STARTUP_TIMEOUT, || {
        gateway.metric("connections", &[("decision", "reject")]) == 1
    });
    assert_eq!(gateway.counter("tls_inspector.client_hello_too_large"), 1);
    // Envoy's own refusal is outside every stream: the log verifies, and says so.
    let verified = crate::support::cli_command()
        .args(["audit", "--verify", "--public-key"])
        .arg(crate::support::signing_public_key())
        .arg(gateway.dir.path("egress.log"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(0), "{report}");
    assert!(
        report.contains("1 refusal(s) written by Envoy itself, outside every stream"),
        "{report}"
    );
}

/// The gateway relays a connection to the name the policy decided on, or says that nothing went
/// out: a trailing dot or upper case reaches the canonical destination, and a name the policy
/// allows but that resolves nowhere (the test DNS does not know it) is logged `allow` with
/// `"relayed":false`, never as if relayed.
#[test]
fn connections_go_where_they_were_decided_and_the_line_says_whether_they_went() {
    let everything = r#"{"log": {"instance": "c", "fields": {
            "destination": "connection.requested_server_name | \"\"",
            "decision": "policy.decision", "upstream": "connection.relayed"}},
        "rules": [{"name": "all-tls", "log": "info", "match": "context.protocol == \"tcp\""}]}"#;
    let gateway = Gateway::with_config("canonical-sni", everything);
    for sni in ["api.ibm.com.", "API.IBM.COM", "xn--pple-43d.ibm.org"] {
        gateway.tls_client(None, sni, &["--request", HTTP_GET]);
    }
    gateway.tls_client(
        Some("app-a"),
        "api.ibm.com.",
        &["--inner-sni", "api.ibm.com.", "--request", HTTP_GET],
    );
    gateway.settle_connections(4);
    assert_eq!(
        reached(&gateway, None).len(),
        3,
        "{:?}",
        reached(&gateway, None)
    );
    let entries = gateway.log_entries_without_time();
    let lines: Vec<(String, String, bool, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["destination"].as_str().unwrap().to_owned(),
                e["decision"].as_str().unwrap().to_owned(),
                e["relayed"].as_bool().unwrap(),
                e["upstream"].as_bool().unwrap(),
            )
        })
        .collect();
    let api = ("api.ibm.com".to_owned(), "allow".to_owned(), true, true);
    assert_eq!(
        lines,
        [
            api.clone(),
            api.clone(),
            (
                "xn--pple-43d.ibm.org".to_owned(),
                "allow".to_owned(),
                false,
                false
            ),
            api,
        ]
    );
}
