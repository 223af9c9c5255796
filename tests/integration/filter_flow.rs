//! The filter's flow (`egress_policy::adapter`) on the test kit's fake proxy: requests and
//! connections, the headers stripped, the replies, counters and log entries, natively.

use std::rc::Rc;

use egress_policy::adapter::*;
use egress_policy::core::policy::Policy;
use egress_policy_testkit::fake_host::FakeHost;

/// Status and details of every local reply.
fn replied(host: &FakeHost) -> Vec<(u16, String)> {
    host.replies
        .borrow()
        .iter()
        .map(|r| (r.status, r.details.clone()))
        .collect()
}

fn active(policy: Policy) -> Rc<Active> {
    Rc::new(Active::new(policy))
}

fn list_check_policy() -> Rc<Active> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/envoy/examples/s3-listcheck.json"
    );
    active(Policy::from_json(&std::fs::read(path).unwrap()).unwrap())
}

/// A request for edition.cnn.com with `path` through the list-check policy's request phase, which must answer it.
fn answered_by_s3(path: &[u8]) -> (FakeHost, RequestFilter) {
    let host = FakeHost::request(b"edition.cnn.com", path);
    let mut filter = RequestFilter::new(Some(list_check_policy()));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Stop);
    (host, filter)
}

#[test]
fn politics_is_answered_locally_and_logged_with_the_reply_status() {
    let (mut host, mut filter) = answered_by_s3(b"/politics");
    assert_eq!(
        replied(&host),
        vec![(
            404,
            "egress_policy_denied:rule=handle-cnn-access,list=path-checker".to_owned()
        )]
    );
    host.respond(404, 0);
    filter.on_log(&host);
    let entries = host.entries.borrow();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0],
        concat!(
            r#"{"level":"error","time":"2018-06-18T13:22:58.317448Z","instance":"egress-access","destination":"edition.cnn.com","path":"/politics","responseCode":404,"responseSize":0,"source":"unknown","sourceNamespace":"unknown","user":"unknown"}"#,
            "\n",
            r#"{"level":"info","time":"2018-06-18T13:22:58.317448Z","instance":"egress-access","destination":"edition.cnn.com","path":"/politics","responseCode":404,"responseSize":0,"source":"unknown","sourceNamespace":"unknown","user":"unknown"}"#
        )
    );
}

#[test]
fn sport_continues_upstream_and_logs_the_real_response() {
    let mut host = FakeHost::request(b"edition.cnn.com", b"/sport");
    let mut filter = RequestFilter::new(Some(list_check_policy()));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Continue);
    assert!(host.replies.borrow().is_empty());
    host.respond(200, 358_651);
    filter.on_log(&host);
    assert!(host.entries.borrow()[0].contains(r#""responseCode":200,"responseSize":358651"#));
}

#[test]
fn non_utf8_path_is_decided_without_panicking_and_denied() {
    let host = FakeHost::request(b"edition.cnn.com", b"/sport\xff\xfe");
    let mut filter = RequestFilter::new(Some(list_check_policy()));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Stop);
}

#[test]
fn non_utf8_host_is_refused_before_any_policy() {
    let policy = Policy::from_json(
        br#"{"routes": [{"hosts": ["edition.cnn.com"], "match": [{"uri": {"prefix": "/sport"}}]}]}"#,
    )
    .unwrap();
    let host = FakeHost::request(b"edition.cnn.com\xff", b"/politics");
    let mut filter = RequestFilter::new(Some(active(policy)));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Stop);
    assert_eq!(
        replied(&host)[0],
        (400, "egress_policy_rejected:unusable_host".to_owned())
    );
}

#[test]
fn huge_header_values_are_handled() {
    let huge = format!("/{}", "a".repeat(1 << 20));
    let host = FakeHost::request(b"edition.cnn.com", huge.as_bytes());
    let mut filter = RequestFilter::new(Some(list_check_policy()));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Stop);
}

#[test]
fn unconfigured_filter_refuses_every_request() {
    let host = FakeHost::request(b"edition.cnn.com", b"/sport");
    let mut filter = RequestFilter::new(None);
    assert_eq!(filter.on_request_headers(&host, true), Flow::Stop);
    assert_eq!(replied(&host)[0], (503, UNCONFIGURED_DETAILS.to_owned()));
    filter.on_log(&host);
    assert!(host.entries.borrow().is_empty());
}

#[test]
fn userinfo_and_missing_hosts_are_refused_and_logged() {
    for authority in [&b"user@edition.cnn.com"[..], b"", b"edition.cnn.com:x"] {
        let mut host = FakeHost::request(authority, b"/sport");
        let mut filter = RequestFilter::new(Some(list_check_policy()));
        assert_eq!(filter.on_request_headers(&host, true), Flow::Stop);
        assert_eq!(replied(&host)[0].0, 400);
        host.respond(400, 0);
        filter.on_log(&host);
        assert!(
            host.entries.borrow()[0].contains(r#""rejected":"host is missing or not a host name""#)
        );
    }
}

#[test]
fn a_plain_http_request_costs_one_property_read() {
    let host = FakeHost::request(b"example.com", b"/");
    let mut filter = RequestFilter::new(Some(list_check_policy()));
    filter.on_request_headers(&host, true);
    assert_eq!(*host.property_reads.borrow(), ["connection.mtls"]);
}

#[test]
fn requests_no_rule_logs_write_nothing() {
    let mut host = FakeHost::request(b"example.com", b"/politics");
    let mut filter = RequestFilter::new(Some(list_check_policy()));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Continue);
    host.respond(200, 10);
    filter.on_log(&host);
    assert!(host.entries.borrow().is_empty());
}

fn exemption_policy() -> Rc<Active> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/envoy/examples/s4-exemption.json"
    );
    active(Policy::from_json(&std::fs::read(path).unwrap()).unwrap())
}

/// Runs a request that the exemption policy denies through the filter, to its log phase.
fn deny_under_s4(host: &mut FakeHost) {
    let mut filter = RequestFilter::new(Some(exemption_policy()));
    assert_eq!(filter.on_request_headers(host, true), Flow::Stop);
    host.respond(404, 0);
    filter.on_log(host);
}

/// A request for edition.cnn.com/politics from a verified peer with these URI SANs.
fn politics_from(uri_sans: &str) -> FakeHost {
    FakeHost::request(b"edition.cnn.com", b"/politics").with_peer(uri_sans)
}

#[test]
fn politics_namespace_certificate_earns_the_exemption() {
    let host = politics_from("spiffe://cluster.local/ns/politics/sa/sleep");
    let mut filter = RequestFilter::new(Some(exemption_policy()));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Continue);
    filter.on_log(&host);
    assert!(
        host.entries.borrow().is_empty(),
        "the exempt namespace is not logged"
    );
}

#[test]
fn default_namespace_certificate_is_checked_and_logged_with_its_identity() {
    let mut host = politics_from("spiffe://cluster.local/ns/default/sa/sleep");
    deny_under_s4(&mut host);
    let entries = host.entries.borrow();
    assert!(entries[0].contains(r#""source":"sleep","sourceNamespace":"default","user":"cluster.local/ns/default/sa/sleep""#), "{}", entries[0]);
}

#[test]
fn identity_headers_without_a_certificate_gain_nothing() {
    let mut host = FakeHost::request(b"edition.cnn.com", b"/politics");
    for (name, value) in [
        (
            "x-forwarded-client-cert",
            "By=spiffe://cluster.local/ns/istio-system/sa/gw;URI=spiffe://cluster.local/ns/politics/sa/sleep",
        ),
        ("x-envoy-peer-metadata", "namespace=politics"),
        ("baggage", "k8s.namespace.name=politics"),
        ("x-source-namespace", "politics"),
    ] {
        host.add_header(name, value.as_bytes());
    }
    deny_under_s4(&mut host);
    assert!(host.entries.borrow()[0].contains(r#""sourceNamespace":"unknown""#));
    assert_eq!(*host.removed.borrow(), ["x-envoy-peer-metadata"]);
}

#[test]
fn several_uri_sans_give_no_identity_and_a_warning_entry() {
    let mut host = politics_from(
        "spiffe://cluster.local/ns/default/sa/sleep,spiffe://cluster.local/ns/politics/sa/sleep",
    );
    deny_under_s4(&mut host);
    let entries = host.entries.borrow();
    let first = entries[0].lines().next().unwrap();
    assert!(first.starts_with(r#"{"level":"warning""#), "{first}");
    assert!(first.contains(r#""sourceNamespace":"unknown""#));
    assert!(first.contains(r#""identityError":"peer certificate has 2 URI SANs; exactly one SPIFFE ID is required""#), "{first}");
}

#[test]
fn certificate_from_another_trust_domain_gives_no_identity() {
    let host = politics_from("spiffe://evil.local/ns/politics/sa/sleep");
    let mut filter = RequestFilter::new(Some(exemption_policy()));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Stop);
}

#[test]
fn trusted_header_is_identity_only_when_configured_and_without_a_certificate() {
    let config = br#"{"identity": {"trustedHeader": "X-Spiffe-Id"},
        "rules": [{"name": "deny-default", "match": "source.namespace == \"politics\"", "log": "info"}]}"#;
    let policy = active(Policy::from_json(config).unwrap());
    assert!(
        policy
            .policy
            .warnings()
            .iter()
            .any(|w| w.starts_with("identity.trustedHeader"))
    );
    let mut host = FakeHost::request(b"edition.cnn.com", b"/politics");
    host.add_header(
        "x-spiffe-id",
        b"spiffe://cluster.local/ns/politics/sa/sleep",
    );
    let mut filter = RequestFilter::new(Some(policy.clone()));
    filter.on_request_headers(&host, true);
    filter.on_log(&host);
    assert_eq!(
        host.entries.borrow().len(),
        1,
        "the header's namespace was used"
    );

    let host = host_with_header().with_peer("spiffe://cluster.local/ns/default/sa/sleep");
    let mut filter = RequestFilter::new(Some(policy));
    filter.on_request_headers(&host, true);
    filter.on_log(&host);
    assert!(
        host.entries.borrow().is_empty(),
        "a certificate outranks the header"
    );
}

fn host_with_header() -> FakeHost {
    let mut host = FakeHost::request(b"edition.cnn.com", b"/politics");
    host.add_header(
        "x-spiffe-id",
        b"spiffe://cluster.local/ns/politics/sa/sleep",
    );
    host
}

#[test]
fn ambiguous_path_is_refused_with_400_and_an_error_entry() {
    let (mut host, mut filter) = answered_by_s3(b"/sport;/../politics");
    assert_eq!(
        replied(&host)[0],
        (400, "egress_policy_rejected:semicolon".to_owned())
    );
    host.respond(400, 0);
    filter.on_log(&host);
    let entries = host.entries.borrow();
    assert_eq!(entries[0].lines().count(), 1);
    assert!(entries[0].starts_with(r#"{"level":"error""#));
    assert!(entries[0].contains(r#""path":"/sport;/../politics""#));
    assert!(
        entries[0].ends_with(r#""rejected":"path has a ';' (path parameters)"}"#),
        "{}",
        entries[0]
    );
}

#[test]
fn workload_labels_come_from_istio_peer_metadata_never_from_headers() {
    let mut host = FakeHost::request(b"edition.cnn.com", b"/sport")
        .with_peer("spiffe://cluster.local/ns/default/sa/sleep-sa");
    host.add_header("x-envoy-peer-metadata", b"app=forged");
    let mut filter = RequestFilter::new(Some(exemption_policy()));
    filter.on_request_headers(&host, true);
    host.respond(200, 1);
    filter.on_log(&host);
    assert!(
        host.entries.borrow()[0].contains(r#""source":"sleep-sa""#),
        "no label: the service account"
    );

    host.properties
        .insert("downstream_peer.labels.app".into(), b"sleep".to_vec());
    host.entries.borrow_mut().clear();
    let mut filter = RequestFilter::new(Some(exemption_policy()));
    filter.on_request_headers(&host, true);
    filter.on_log(&host);
    assert!(
        host.entries.borrow()[0].contains(r#""source":"sleep""#),
        "{}",
        host.entries.borrow()[0]
    );
}

#[test]
fn dry_run_rule_logs_and_counts_what_it_would_deny_without_denying() {
    let policy = Policy::from_json(
        br#"{"lists": {"paths": {"value": "request.url_path", "entries": ["/sport"]}},
            "rules": [{"name": "trial", "check": ["paths"], "dryRun": true, "log": "info"}],
            "log": {"fields": {"path": "request.path", "decision": "policy.decision", "deniedBy": "policy.deniedBy | \"\""}}}"#,
    )
    .unwrap();
    let mut host = FakeHost::request(b"edition.cnn.com", b"/politics");
    let mut filter = RequestFilter::new(Some(active(policy)));
    assert_eq!(filter.on_request_headers(&host, true), Flow::Continue);
    host.respond(200, 10);
    filter.on_log(&host);
    assert_eq!(
        *host.counters.borrow(),
        vec![
            "egress_policy.decision=.=dry_run_deny;.;destination=.=other;.;source_namespace=.=unknown;.;source_app=.=unknown;.;source_version=.=unknown;.;response_code=.=200;.;requests".to_owned(),
            "egress_policy.rule=.=trial;.;list=.=paths;.;dry_run_denied".to_owned(),
            "egress_policy.rule=.=trial;.;decision=.=dry_run_deny;.;rule_matches".to_owned(),
        ]
    );
    let entries = host.entries.borrow();
    let lines: Vec<&str> = entries[0].lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(r#"{"level":"warning""#));
    assert!(lines[0].ends_with(r#""decision":"dry_run_deny","deniedBy":"","path":"/politics","wouldDeny":"egress_policy_denied:rule=trial,list=paths"}"#), "{}", lines[0]);
    assert!(lines[1].starts_with(r#"{"level":"info""#));
}

#[test]
fn deny_reply_comes_from_the_deciding_rule_then_the_global_settings() {
    let policy = Policy::from_json(
        br#"{"denyStatus": 403, "denyBody": "forbidden by policy\n", "denyHeaders": {"X-Egress-Policy": "denied", "Cache-Control": "no-store"},
            "lists": {"paths": {"value": "request.url_path", "entries": ["/sport"]}},
            "rules": [{"name": "politics", "match": "request.url_path == \"/politics\"", "check": ["paths"],
                       "deny": {"status": 451, "headers": {"x-egress-policy": "politics"}}},
                      {"name": "rest", "check": ["paths"]}]}"#,
    )
    .unwrap();
    let host = FakeHost::request(b"edition.cnn.com", b"/politics");
    RequestFilter::new(Some(active(policy))).on_request_headers(&host, true);
    assert_eq!(
        replied(&host)[0],
        (
            451,
            "egress_policy_denied:rule=politics,list=paths".to_owned()
        )
    );
    let reply = host.replies.borrow()[0].clone();
    let (body, headers) = (reply.body, reply.headers);
    assert_eq!(body, b"forbidden by policy\n");
    assert_eq!(
        headers,
        vec![
            ("cache-control".to_owned(), "no-store".to_owned()),
            ("x-egress-policy".to_owned(), "politics".to_owned())
        ]
    );
}

/// `tests/data/connections.json` through the network filter's flow, as Envoy drives it: a new
/// connection, its first bytes (or its end before any), and for an allowed one, its close. The
/// log entries must be the table's, as for the decision core.
#[test]
fn connection_table_cases_pass_through_the_network_filter_alike() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/connections.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/examples/").to_owned()
            + case["config"].as_str().unwrap();
        let policy = Policy::from_json(&std::fs::read(config).unwrap()).unwrap();
        let mut host = FakeHost::from_case(&case["request"]);
        let end = &case["response"];
        for (property, key) in [
            ("request.size", "receivedBytes"),
            ("response.size", "sentBytes"),
        ] {
            if let Some(bytes) = end[key].as_i64() {
                host.properties
                    .insert(property.into(), bytes.to_le_bytes().to_vec());
            }
        }
        if end["relayed"] == true {
            host.properties
                .insert("upstream.local_address".into(), b"127.0.0.1:40000".to_vec());
        }
        let mut filter = ConnectionFilter::new(Some(active(policy)));
        assert_eq!(filter.on_new_connection(&host), Flow::Stop, "{name}");
        let first_bytes = host.downstream.borrow().len();
        let forwarded = case["outcome"] == "allow" || case["outcome"] == "dry_run_deny";
        if first_bytes > 0 {
            let flow = filter.on_downstream_data(&host, first_bytes, false);
            let expected = if forwarded {
                Flow::Continue
            } else {
                Flow::Stop
            };
            if flow != expected || host.closed.get() == forwarded {
                failures.push(format!("{name}: {flow:?}, closed {}", host.closed.get()));
            }
        }
        if forwarded {
            assert_eq!(filter.on_upstream_data(), Flow::Continue, "{name}");
            let millis = end["duration"].as_i64().unwrap_or(0);
            host.now.set(host.now.get() + millis * 1_000);
        }
        filter.on_downstream_close(&host);
        let mut entries: Vec<serde_json::Value> = host
            .entries
            .borrow()
            .iter()
            .flat_map(|e| {
                e.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        for entry in &mut entries {
            entry.as_object_mut().unwrap().remove("time");
        }
        if entries != *case["entries"].as_array().unwrap() {
            failures.push(format!("{name}: {entries:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A connection from app-a to api.ibm.com over the sidecar leg, its ClientHello waiting.
fn app_a_to_api_ibm_com() -> FakeHost {
    FakeHost::from_case(&serde_json::json!({"protocol": "tcp", "sni": "api.ibm.com",
        "port": 10444, "namespace": "default", "serviceAccount": "app-a"}))
}

fn sni_policy() -> Rc<Active> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/examples/s6-sni.json");
    active(Policy::from_json(&std::fs::read(path).unwrap()).unwrap())
}

#[test]
fn a_client_hello_in_pieces_is_waited_for_and_nothing_passes_meanwhile() {
    let host = app_a_to_api_ibm_com();
    let whole = host.downstream.borrow().clone();
    let mut filter = ConnectionFilter::new(Some(sni_policy()));
    filter.on_new_connection(&host);
    *host.downstream.borrow_mut() = whole[..30].to_vec();
    assert_eq!(filter.on_downstream_data(&host, 30, false), Flow::Stop);
    assert_eq!(filter.on_upstream_data(), Flow::Stop);
    *host.downstream.borrow_mut() = whole.clone();
    assert_eq!(
        filter.on_downstream_data(&host, whole.len(), false),
        Flow::Continue
    );
    assert!(!host.closed.get());
    assert_eq!(filter.on_downstream_data(&host, 10, false), Flow::Continue);
}

#[test]
fn a_client_hello_cut_off_by_the_end_of_the_stream_is_refused() {
    let host = app_a_to_api_ibm_com();
    host.downstream.borrow_mut().truncate(60);
    let mut filter = ConnectionFilter::new(Some(sni_policy()));
    filter.on_new_connection(&host);
    assert_eq!(filter.on_downstream_data(&host, 60, true), Flow::Stop);
    assert!(host.closed.get());
    assert!(host.entries.borrow()[0].contains("egress_policy_rejected:not_client_hello"));
    filter.on_downstream_close(&host);
    assert_eq!(host.entries.borrow().len(), 1, "one entry per connection");
}

#[test]
fn unconfigured_filter_closes_every_connection() {
    let host = FakeHost::default();
    let mut filter = ConnectionFilter::new(None);
    assert_eq!(filter.on_new_connection(&host), Flow::Stop);
    assert!(host.closed.get());
    assert_eq!(filter.on_downstream_data(&host, 10, false), Flow::Stop);
    filter.on_downstream_close(&host);
    assert!(host.entries.borrow().is_empty());
}

#[test]
fn property_paths_are_joined_by_nul_or_refused_when_they_do_not_fit() {
    let mut buffer = [0u8; 64];
    for path in [
        &["connection", "mtls"][..],
        &["filter_state", "egress_policy.peer_uri_sans"],
        &["xds"],
        &[],
        &["", "a", ""],
    ] {
        assert_eq!(
            egress_policy::adapter::encode_property_path(path, &mut buffer),
            Some(path.join("\0").as_bytes()),
            "{path:?}"
        );
    }
    let long = [
        "downstream_peer",
        "labels",
        "a-label-key-long-enough-not-to-fit-64-bytes",
    ];
    assert_eq!(
        egress_policy::adapter::encode_property_path(&long, &mut buffer),
        None
    );
}

#[test]
fn counts_gathered_between_flushes_are_handed_over_once_each() {
    use egress_policy::telemetry::metrics::{Counter, CounterEvent, counter_name};
    let mut pending = egress_policy::adapter::PendingCounters::default();
    let a = CounterEvent::new(Counter::RuleMatches, &["r", "allow"]);
    let b = CounterEvent::new(
        Counter::Requests,
        &["deny", "*.cnn.com", "default", "sleep", "unknown", "404"],
    );
    for event in [a, b, a] {
        pending.count(&event);
    }
    let mut flushed = Vec::new();
    pending.flush(|name, count| flushed.push((name.to_owned(), count)));
    flushed.sort();
    let mut expected = [(counter_name(&a), 2), (counter_name(&b), 1)];
    expected.sort();
    assert_eq!(flushed, expected);
    pending.count(&b);
    let mut again = Vec::new();
    pending.flush(|name, count| again.push((name.to_owned(), count)));
    assert_eq!(
        again,
        [(counter_name(&b), 1)],
        "nothing twice, nothing at zero"
    );
}

/// A new connection under `active` whose waiting first bytes are handed to the filter: the
/// filter and what it said to them.
fn opened(host: &FakeHost, active: Rc<Active>) -> (ConnectionFilter, Flow) {
    let mut filter = ConnectionFilter::new(Some(active));
    filter.on_new_connection(host);
    let first_bytes = host.downstream.borrow().len();
    let flow = filter.on_downstream_data(host, first_bytes, false);
    (filter, flow)
}

#[test]
fn an_allowed_connection_is_routed_to_the_canonical_name_it_was_decided_on() {
    let host = FakeHost::from_case(&serde_json::json!({"protocol": "tcp",
        "sni": "API.ibm.com.", "port": 10444, "namespace": "default", "serviceAccount": "app-a"}));
    assert_eq!(opened(&host, sni_policy()).1, Flow::Continue);
    assert_eq!(*host.routed_to.borrow(), ["api.ibm.com"]);
}

/// A policy that allows api.ibm.com to anyone and refuses the rest.
fn api_ibm_com_only() -> Rc<Active> {
    active(
        Policy::from_json(
            br#"{"lists": {"api": {"value": "connection.requested_server_name", "entries": ["api.ibm.com"]}},
                 "log": {"fields": {"destination": "connection.requested_server_name | \"\""}},
                 "rules": [{"name": "tls", "log": "info", "check": ["api"],
                            "match": "context.protocol == \"tcp\""}]}"#,
        )
        .unwrap(),
    )
}

#[test]
fn without_tls_of_its_own_a_connection_is_decided_on_its_client_hellos_server_name() {
    for (hello, routed) in [
        ("api.ibm.com.", &["api.ibm.com"][..]),
        ("mongo1.composedb.com", &[][..]),
    ] {
        let host = FakeHost::from_case(&serde_json::json!({"protocol": "tcp", "port": 10445,
            "opening": {"clientHello": hello}}));
        let (mut filter, _) = opened(&host, api_ibm_com_only());
        assert_eq!(*host.routed_to.borrow(), routed, "{hello}");
        assert_eq!(host.closed.get(), routed.is_empty(), "{hello}");
        filter.on_downstream_close(&host);
        let canonical = hello.trim_end_matches('.');
        assert!(
            host.entries.borrow()[0].contains(&format!("\"destination\":\"{canonical}\"")),
            "{:?}",
            host.entries.borrow()
        );
    }
}

#[test]
fn a_client_hello_larger_than_the_gateway_reads_is_refused_as_too_large() {
    let host = FakeHost::default();
    *host.downstream.borrow_mut() = egress_policy::core::tls::client_hello_records(
        Some("api.ibm.com"),
        &[
            egress_policy::core::tls::alpn_padding(65_400),
            (21, vec![0; 400]),
        ],
        16 * 1024,
    );
    assert_eq!(opened(&host, api_ibm_com_only()).1, Flow::Stop);
    assert!(host.closed.get());
    assert!(
        host.entries.borrow()[0].contains("the caller's ClientHello is larger than 64 KiB"),
        "{:?}",
        host.entries.borrow()
    );
}
