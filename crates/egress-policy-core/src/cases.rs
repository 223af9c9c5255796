//! Requests and connections described as JSON, as the test tables write them
//! (`tests/data/decisions.json`, `connections.json`, `attacks.json`): the one builder of
//! [`RequestFacts`] for the core's tests, the adapters' fake hosts, `explain`'s tests and the
//! fuzz seeds. Never in a shipped build (feature `cases`).

use serde_json::Value;

use crate::attributes::Attr;
use crate::described::{Described, mesh_principal};
use crate::request::{Opening, Protocol, Request, RequestFacts};

/// The headers of the reference request the per-request measurements run (the root package's
/// and the native crate's `request_cost` examples), with its path: what curl sends through a
/// sidecar.
pub fn reference_request_headers(path: &str) -> [(&str, &str); 8] {
    [
        (":authority", "edition.cnn.com"),
        (":path", path),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "curl/7.88.1"),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5b0c5d2e-9d0a-4c5e-8f0e-6f1f2b9d4a11"),
    ]
}

/// The fixed "now" of every table case: the source documents' log line time,
/// 2018-06-18T13:22:58.317448Z.
pub const FAKE_NOW_MICROS: i64 = 1_529_328_178_317_448;

/// The raw facts of a request described as JSON, as in the table files (a connection with
/// `"protocol": "tcp"`, `sni` and `port`): `host`, `path`,
/// `method` (default GET), `headers` (an object, or `[name, value]` pairs), `body` (bool), `principal` (the peer
/// certificate's URI SANs, comma-joined), or `namespace` + `serviceAccount` (a certificate for
/// `ns/NS/sa/SA` in `cluster.local`), `labels` (Istio peer metadata). Missing keys stay absent.
pub fn facts_from_case(case: &Value) -> RequestFacts {
    let text = |key: &str| case.get(key).and_then(Value::as_str).map(str::to_owned);
    // An object, or an array of [name, value] pairs where a name may repeat.
    let headers: Vec<(String, String)> = match case.get("headers") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(n, v)| (n.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|pair| {
                Some((
                    pair.get(0)?.as_str()?.to_owned(),
                    pair.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    let principal = text("principal").or_else(|| {
        let service_account = text("serviceAccount");
        text("namespace").map(|ns| {
            mesh_principal(
                "cluster.local",
                &ns,
                service_account.as_deref().unwrap_or("default"),
            )
        })
    });
    let labels = case
        .get("labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    Described {
        // A connection (`"protocol": "tcp"`): `sni` and `port` are what the network filter reads.
        protocol: if text("protocol").as_deref() == Some("tcp") {
            Protocol::Tcp
        } else {
            Protocol::Http
        },
        host: text("host"),
        path: text("path"),
        method: text("method"),
        scheme: None,
        headers,
        body: case.get("body").and_then(Value::as_bool).unwrap_or(false),
        principal,
        labels,
        texts: text("sni")
            .map(|sni| (Attr::ConnectionRequestedServerName, sni))
            .into_iter()
            .collect(),
        port: case.get("port").and_then(Value::as_i64),
        time_micros: Some(FAKE_NOW_MICROS),
        opening: opening_from_case(case.get("opening")),
    }
    .facts()
}

/// How a connection of a table case began: absent (not looked at, as in `explain`),
/// `"handshake_failed"`, `"closed_early"`, `{"clientHello": SNI or null, "hidesServerName":
/// bool}` (a ClientHello built here), or `{"bytes": TEXT}` (raw first bytes).
fn opening_from_case(opening: Option<&Value>) -> Opening {
    let Some(opening) = opening else {
        return Opening::Unseen;
    };
    match opening.as_str() {
        Some("handshake_failed") => return Opening::HandshakeFailed,
        Some("closed_early") => return Opening::ClosedEarly,
        _ => {}
    }
    if let Some(text) = opening.get("bytes").and_then(Value::as_str) {
        return Opening::FirstBytes(text.as_bytes().to_vec());
    }
    let sni = opening.get("clientHello").and_then(Value::as_str);
    let mut extra = Vec::new();
    if opening.get("hidesServerName").and_then(Value::as_bool) == Some(true) {
        extra.push((0xfe0d, vec![0; 32]));
    }
    Opening::FirstBytes(crate::tls::client_hello_records(sni, &extra, 16 * 1024))
}

/// Builds a canonical request from `{"host", "path", "method", "namespace", "serviceAccount",
/// "labels", "headers"}` for the core's own tests; missing keys stay absent.
pub fn request_from_json(value: &Value) -> Request {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let pairs = |key: &str| -> Vec<(String, String)> {
        value
            .get(key)
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut request = Request::default();
    request.method = text("method");
    request.headers = pairs("headers");
    if let Some(path) = text("path") {
        let _ = request.set_path(path.as_bytes());
    }
    if let Some(host) = text("host") {
        request.set_host(&host);
    }
    request.source.namespace = text("namespace");
    request.source.service_account = text("serviceAccount");
    request.source.labels = pairs("labels");
    request.source.ip = text("ip");
    request.reporter_uid = text("reporterUid");
    request.requested_server_name = text("sni");
    if value.get("protocol").and_then(Value::as_str) == Some("tcp") {
        request.protocol = Protocol::Tcp;
    }
    request
}

/// A canonical request for `path` (raw, decoded as the filter would).
pub fn request_with_path(path: &str) -> Request {
    let mut request = Request::default();
    let _ = request.set_path(path.as_bytes());
    request
}

/// The strings of a JSON array in a table file (`errors`, `args`); `None` when it is something
/// else.
pub fn json_strings(value: &Value) -> Option<Vec<&str>> {
    value.as_array()?.iter().map(Value::as_str).collect()
}
