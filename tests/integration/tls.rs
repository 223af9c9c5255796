//! HTTPS and other TLS egress (README: HTTPS egress), end to end in a real Envoy: the source
//! documents' policy (`envoy/examples/s6-sni.json`) on the sidecar leg (mTLS from the mesh CA
//! around the application's own TLS, as Istio's sidecar opens it) and on plain passthrough.
//! The client (tests/tls-client) runs the application's TLS inside the mTLS leg byte for byte,
//! so the log's byte counts can be checked exactly; the TLS stand-in records every connection it
//! accepts, so a refused one provably never reached it.

use serde_json::Value;

use crate::support::Gateway;

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
    assert_eq!(
        gateway.counter_sum(";.;connections", &["decision=.=allow;.;"]),
        2
    );
    assert_eq!(
        gateway.counter(
            "wasmcustom.egress_policy.decision=.=deny;.;destination=.=mongo1.composedb.com;.;source_namespace=.=default;.;source_app=.=app-a;.;source_version=.=unknown;.;connections"
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
