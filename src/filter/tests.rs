use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

/// The body and headers of one local reply.
type Reply = (Vec<u8>, Vec<(String, String)>);

/// A proxy that serves headers and properties from maps and records what the filter did.
#[derive(Default)]
struct FakeHost {
    headers: HashMap<String, Vec<u8>>,
    properties: HashMap<String, Vec<u8>>,
    replies: RefCell<Vec<(u16, String)>>,
    entries: RefCell<Vec<String>>,
    header_reads: RefCell<Vec<String>>,
    reply_bodies: RefCell<Vec<Reply>>,
    counters: RefCell<Vec<String>>,
}

impl FakeHost {
    fn request(host: &[u8], path: &[u8]) -> Self {
        let mut fake = FakeHost::default();
        fake.headers.insert(":authority".into(), host.to_vec());
        fake.headers.insert(":path".into(), path.to_vec());
        fake.headers.insert(":method".into(), b"GET".to_vec());
        fake
    }

    fn respond(&mut self, code: i64, size: i64) {
        self.properties
            .insert("response.code".into(), code.to_le_bytes().to_vec());
        self.properties
            .insert("response.size".into(), size.to_le_bytes().to_vec());
    }
}

impl Host for FakeHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.header_reads.borrow_mut().push(name.to_owned());
        self.headers.get(name).cloned()
    }
    fn response_header(&self, _name: &str) -> Option<Vec<u8>> {
        None
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }
    fn now_micros(&self) -> Option<i64> {
        Some(1_529_328_178_317_448)
    }
    fn send_local_reply(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> bool {
        self.replies.borrow_mut().push((status, details.to_owned()));
        self.reply_bodies
            .borrow_mut()
            .push((body.to_vec(), headers.to_vec()));
        true
    }
    fn increment(&self, counter: &str) {
        self.counters.borrow_mut().push(counter.to_owned());
    }
    fn write_log_entries(&self, entries: &str) -> bool {
        self.entries.borrow_mut().push(entries.to_owned());
        true
    }
    fn log_warning(&self, _message: &str) {}
}

fn active(policy: Policy) -> Rc<Active> {
    Rc::new(Active::new(policy))
}

fn s3() -> Rc<Active> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/envoy/examples/s3-listcheck.json"
    );
    active(Policy::from_json(&std::fs::read(path).unwrap()).unwrap())
}

#[test]
fn politics_is_answered_locally_and_logged_with_the_reply_status() {
    let mut host = FakeHost::request(b"edition.cnn.com", b"/politics");
    let mut filter = RequestFilter::new(Some(s3()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    assert_eq!(
        *host.replies.borrow(),
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
    let mut filter = RequestFilter::new(Some(s3()));
    assert_eq!(filter.on_request_headers(&host), Flow::Continue);
    assert!(host.replies.borrow().is_empty());
    host.respond(200, 358_651);
    filter.on_log(&host);
    assert!(host.entries.borrow()[0].contains(r#""responseCode":200,"responseSize":358651"#));
}

#[test]
fn non_utf8_path_is_decided_without_panicking_and_denied() {
    let host = FakeHost::request(b"edition.cnn.com", b"/sport\xff\xfe");
    let mut filter = RequestFilter::new(Some(s3()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
}

#[test]
fn non_utf8_host_is_refused_before_any_policy() {
    let policy = Policy::from_json(
        br#"{"routes": [{"hosts": ["edition.cnn.com"], "match": [{"uri": {"prefix": "/sport"}}]}]}"#,
    )
    .unwrap();
    let host = FakeHost::request(b"edition.cnn.com\xff", b"/politics");
    let mut filter = RequestFilter::new(Some(active(policy)));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    assert_eq!(
        host.replies.borrow()[0],
        (400, "egress_policy_rejected:unusable_host".to_owned())
    );
}

#[test]
fn huge_header_values_are_handled() {
    let huge = format!("/{}", "a".repeat(1 << 20));
    let host = FakeHost::request(b"edition.cnn.com", huge.as_bytes());
    let mut filter = RequestFilter::new(Some(s3()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
}

#[test]
fn unconfigured_filter_refuses_every_request() {
    let host = FakeHost::request(b"edition.cnn.com", b"/sport");
    let mut filter = RequestFilter::new(None);
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    assert_eq!(
        host.replies.borrow()[0],
        (503, UNCONFIGURED_DETAILS.to_owned())
    );
    filter.on_log(&host);
    assert!(host.entries.borrow().is_empty());
}

#[test]
fn userinfo_and_missing_hosts_are_refused_and_logged() {
    for authority in [&b"user@edition.cnn.com"[..], b"", b"edition.cnn.com:x"] {
        let mut host = FakeHost::request(authority, b"/sport");
        let mut filter = RequestFilter::new(Some(s3()));
        assert_eq!(filter.on_request_headers(&host), Flow::Stop);
        assert_eq!(host.replies.borrow()[0].0, 400);
        host.respond(400, 0);
        filter.on_log(&host);
        assert!(
            host.entries.borrow()[0].contains(r#""rejected":"host is missing or not a host name""#)
        );
    }
}

#[test]
fn only_the_headers_the_policy_uses_are_read() {
    let host = FakeHost::request(b"example.com", b"/");
    let mut filter = RequestFilter::new(Some(s3()));
    filter.on_request_headers(&host);
    let reads = host.header_reads.borrow();
    assert_eq!(*reads, vec![":path".to_owned(), ":authority".to_owned()]);
}

#[test]
fn requests_no_rule_logs_write_nothing() {
    let mut host = FakeHost::request(b"example.com", b"/politics");
    let mut filter = RequestFilter::new(Some(s3()));
    assert_eq!(filter.on_request_headers(&host), Flow::Continue);
    host.respond(200, 10);
    filter.on_log(&host);
    assert!(host.entries.borrow().is_empty());
}

#[test]
fn source_ip_loses_its_port() {
    assert_eq!(strip_port("10.1.2.3:5555"), "10.1.2.3");
    assert_eq!(strip_port("[::1]:5555"), "::1");
    assert_eq!(strip_port("10.1.2.3"), "10.1.2.3");
}

fn s4() -> Rc<Active> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/envoy/examples/s4-exemption.json"
    );
    active(Policy::from_json(&std::fs::read(path).unwrap()).unwrap())
}

fn with_peer(mut host: FakeHost, uri_sans: &str) -> FakeHost {
    host.properties.insert("connection.mtls".into(), vec![1]);
    host.properties.insert(
        format!("filter_state.{PEER_URI_SANS}"),
        uri_sans.as_bytes().to_vec(),
    );
    host
}

#[test]
fn politics_namespace_certificate_earns_the_exemption() {
    let host = with_peer(
        FakeHost::request(b"edition.cnn.com", b"/politics"),
        "spiffe://cluster.local/ns/politics/sa/sleep",
    );
    let mut filter = RequestFilter::new(Some(s4()));
    assert_eq!(filter.on_request_headers(&host), Flow::Continue);
    filter.on_log(&host);
    assert!(
        host.entries.borrow().is_empty(),
        "the exempt namespace is not logged"
    );
}

#[test]
fn default_namespace_certificate_is_checked_and_logged_with_its_identity() {
    let mut host = with_peer(
        FakeHost::request(b"edition.cnn.com", b"/politics"),
        "spiffe://cluster.local/ns/default/sa/sleep",
    );
    let mut filter = RequestFilter::new(Some(s4()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    host.respond(404, 0);
    filter.on_log(&host);
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
        host.headers.insert(name.into(), value.as_bytes().to_vec());
    }
    let mut filter = RequestFilter::new(Some(s4()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    host.respond(404, 0);
    filter.on_log(&host);
    assert!(host.entries.borrow()[0].contains(r#""sourceNamespace":"unknown""#));
    assert!(
        !host
            .header_reads
            .borrow()
            .iter()
            .any(|h| h.contains("forwarded") || h.contains("peer") || h == "baggage")
    );
}

#[test]
fn several_uri_sans_give_no_identity_and_a_warning_entry() {
    let mut host = with_peer(
        FakeHost::request(b"edition.cnn.com", b"/politics"),
        "spiffe://cluster.local/ns/default/sa/sleep,spiffe://cluster.local/ns/politics/sa/sleep",
    );
    let mut filter = RequestFilter::new(Some(s4()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    host.respond(404, 0);
    filter.on_log(&host);
    let entries = host.entries.borrow();
    let first = entries[0].lines().next().unwrap();
    assert!(first.starts_with(r#"{"level":"warning""#), "{first}");
    assert!(first.contains(r#""sourceNamespace":"unknown""#));
    assert!(first.contains(r#""identityError":"peer certificate has 2 URI SANs; exactly one SPIFFE ID is required""#), "{first}");
}

#[test]
fn certificate_from_another_trust_domain_gives_no_identity() {
    let host = with_peer(
        FakeHost::request(b"edition.cnn.com", b"/politics"),
        "spiffe://evil.local/ns/politics/sa/sleep",
    );
    let mut filter = RequestFilter::new(Some(s4()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
}

#[test]
fn trusted_header_is_identity_only_when_configured_and_without_a_certificate() {
    let config = br#"{"identity": {"trustedHeader": "X-Spiffe-Id"},
        "rules": [{"name": "deny-default", "match": "source.namespace == \"politics\"", "log": "info"}]}"#;
    let policy = active(Policy::from_json(config).unwrap());
    assert_eq!(policy.policy.warnings().len(), 1);
    let mut host = FakeHost::request(b"edition.cnn.com", b"/politics");
    host.headers.insert(
        "x-spiffe-id".into(),
        b"spiffe://cluster.local/ns/politics/sa/sleep".to_vec(),
    );
    let mut filter = RequestFilter::new(Some(policy.clone()));
    filter.on_request_headers(&host);
    filter.on_log(&host);
    assert_eq!(
        host.entries.borrow().len(),
        1,
        "the header's namespace was used"
    );

    let host = with_peer(
        host_with_header(),
        "spiffe://cluster.local/ns/default/sa/sleep",
    );
    let mut filter = RequestFilter::new(Some(policy));
    filter.on_request_headers(&host);
    filter.on_log(&host);
    assert!(
        host.entries.borrow().is_empty(),
        "a certificate outranks the header"
    );
}

fn host_with_header() -> FakeHost {
    let mut host = FakeHost::request(b"edition.cnn.com", b"/politics");
    host.headers.insert(
        "x-spiffe-id".into(),
        b"spiffe://cluster.local/ns/politics/sa/sleep".to_vec(),
    );
    host
}

#[test]
fn ambiguous_path_is_refused_with_400_and_an_error_entry() {
    let mut host = FakeHost::request(b"edition.cnn.com", b"/sport;/../politics");
    let mut filter = RequestFilter::new(Some(s3()));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    assert_eq!(
        host.replies.borrow()[0],
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
    let mut host = with_peer(
        FakeHost::request(b"edition.cnn.com", b"/sport"),
        "spiffe://cluster.local/ns/default/sa/sleep-sa",
    );
    host.headers
        .insert("x-envoy-peer-metadata".into(), b"app=forged".to_vec());
    let mut filter = RequestFilter::new(Some(s4()));
    filter.on_request_headers(&host);
    host.respond(200, 1);
    filter.on_log(&host);
    assert!(
        host.entries.borrow()[0].contains(r#""source":"sleep-sa""#),
        "no label: the service account"
    );

    host.properties
        .insert("downstream_peer.labels.app".into(), b"sleep".to_vec());
    host.entries.borrow_mut().clear();
    let mut filter = RequestFilter::new(Some(s4()));
    filter.on_request_headers(&host);
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
    assert_eq!(filter.on_request_headers(&host), Flow::Continue);
    host.respond(200, 10);
    filter.on_log(&host);
    assert_eq!(
        *host.counters.borrow(),
        vec![
            "egress_policy.requests.decision.dry_run_deny.destination.other.source_namespace.unknown.source_app.unknown.source_version.unknown.response_code.200".to_owned(),
            "egress_policy.dry_run_denied.rule.trial.list.paths".to_owned(),
            "egress_policy.rule_matches.rule.trial.decision.dry_run_deny".to_owned(),
        ]
    );
    let entries = host.entries.borrow();
    let lines: Vec<&str> = entries[0].lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(r#"{"level":"warning""#));
    assert!(lines[0].ends_with(r#""decision":"allow","deniedBy":"","path":"/politics","wouldDeny":"egress_policy_denied:rule=trial,list=paths"}"#), "{}", lines[0]);
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
    RequestFilter::new(Some(active(policy))).on_request_headers(&host);
    assert_eq!(
        host.replies.borrow()[0],
        (
            451,
            "egress_policy_denied:rule=politics,list=paths".to_owned()
        )
    );
    let (body, headers) = host.reply_bodies.borrow()[0].clone();
    assert_eq!(body, b"forbidden by policy\n");
    assert_eq!(
        headers,
        vec![
            ("cache-control".to_owned(), "no-store".to_owned()),
            ("x-egress-policy".to_owned(), "politics".to_owned())
        ]
    );
}
