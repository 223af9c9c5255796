//! Helpers shared by the unit tests: requests described as JSON, as in the table files.

use serde_json::Value;

use crate::request::Request;

/// Builds a request from `{"host", "path", "method", "namespace", "serviceAccount", "labels",
/// "headers"}`; missing keys stay absent.
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
    let mut request = Request {
        path: text("path"),
        method: text("method"),
        headers: pairs("headers"),
        ..Request::default()
    };
    if let Some(host) = text("host") {
        request.set_host(&host);
    }
    request.source.namespace = text("namespace");
    request.source.service_account = text("serviceAccount");
    request.source.labels = pairs("labels");
    request
}
