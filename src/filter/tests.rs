use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

/// A proxy that serves headers and properties from maps and records what the filter did.
#[derive(Default)]
struct FakeHost {
    headers: HashMap<String, Vec<u8>>,
    properties: HashMap<String, Vec<u8>>,
    replies: RefCell<Vec<(u16, String)>>,
    entries: RefCell<Vec<String>>,
    header_reads: RefCell<Vec<String>>,
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
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }
    fn now_micros(&self) -> Option<i64> {
        Some(1_529_328_178_317_448)
    }
    fn send_local_reply(&self, status: u16, details: &str) -> bool {
        self.replies.borrow_mut().push((status, details.to_owned()));
        true
    }
    fn write_log_entries(&self, entries: &str) -> bool {
        self.entries.borrow_mut().push(entries.to_owned());
        true
    }
    fn log_warning(&self, _message: &str) {}
}

fn s3() -> Rc<Policy> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/envoy/examples/s3-listcheck.json"
    );
    Rc::new(Policy::from_json(&std::fs::read(path).unwrap()).unwrap())
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
fn non_utf8_host_is_absent_and_cannot_enter_a_routed_host() {
    let policy = Policy::from_json(
        br#"{"routes": [{"hosts": ["edition.cnn.com"], "match": [{"uri": {"prefix": "/sport"}}]}]}"#,
    )
    .unwrap();
    let host = FakeHost::request(b"edition.cnn.com\xff", b"/politics");
    let mut filter = RequestFilter::new(Some(Rc::new(policy)));
    assert_eq!(filter.on_request_headers(&host), Flow::Stop);
    assert_eq!(
        host.replies.borrow()[0].1,
        "egress_policy_denied:host_unknown"
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
fn only_the_headers_the_policy_uses_are_read() {
    let host = FakeHost::request(b"example.com", b"/");
    let mut filter = RequestFilter::new(Some(s3()));
    filter.on_request_headers(&host);
    let reads = host.header_reads.borrow();
    assert_eq!(*reads, vec![":authority".to_owned(), ":path".to_owned()]);
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
