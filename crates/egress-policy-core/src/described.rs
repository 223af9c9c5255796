//! A request or connection described by its parts, as a person states it to `egress-policy
//! explain` or a test table writes it: the one constructor of [`RequestFacts`] outside the
//! adapters, so that the CLI and every test decide what the filter would see, built the same
//! way and without any host's wire format.

use crate::attributes::Attr;
use crate::headers::Headers;
use crate::request::{Fact, Opening, Protocol, RequestFacts};

/// The parts of a request (or, with [`Protocol::Tcp`], a connection). Absent parts stay absent
/// in the facts.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub protocol: Protocol,
    /// `:authority` as the client sends it.
    pub host: Option<String>,
    /// `:path` as the client sends it (empty when absent).
    pub path: Option<String>,
    /// A body follows the headers.
    pub body: bool,
    /// Other request headers, in order, names as given (they are lower-cased).
    pub headers: Vec<(String, String)>,
    /// Default `GET`.
    pub method: Option<String>,
    /// Default `http`.
    pub scheme: Option<String>,
    /// The verified peer certificate's URI SANs, comma-joined: a mesh caller over mTLS. None:
    /// no client certificate.
    pub principal: Option<String>,
    /// Istio peer metadata labels of the caller.
    pub labels: Vec<(String, String)>,
    /// Attributes read from properties (`source.ip`, `source.workload`, the SNI): text.
    pub texts: Vec<(Attr, String)>,
    /// `destination.port`.
    pub port: Option<i64>,
    pub time_micros: Option<i64>,
    pub opening: Opening,
}

/// The SPIFFE ID of a mesh workload's certificate.
pub fn mesh_principal(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

impl Described {
    pub fn facts(&self) -> RequestFacts {
        let headers = match self.protocol {
            // A connection has no headers: its SNI and port decide.
            Protocol::Tcp => Headers::default(),
            Protocol::Http => {
                let mut headers = Headers::default();
                if let Some(host) = &self.host {
                    headers.push(b":authority", host.as_bytes());
                }
                let method = self.method.as_deref().unwrap_or("GET");
                // A forward proxy's `CONNECT host:port` has neither path nor scheme.
                let tunnel = method == "CONNECT" && self.path.is_none();
                if !tunnel {
                    let path = self.path.as_deref().unwrap_or_default();
                    headers.push(b":path", path.as_bytes());
                }
                headers.push(b":method", method.as_bytes());
                if !tunnel {
                    let scheme = self.scheme.as_deref().unwrap_or("http");
                    headers.push(b":scheme", scheme.as_bytes());
                }
                for (name, value) in &self.headers {
                    headers.push(name.to_ascii_lowercase().as_bytes(), value.as_bytes());
                }
                headers
            }
        };
        let mut properties: Vec<(Attr, Fact)> = self
            .texts
            .iter()
            .map(|(attr, text)| (*attr, Fact::Text(text.clone().into_bytes())))
            .collect();
        if let Some(port) = self.port {
            properties.push((Attr::DestinationPort, Fact::Int(port)));
        }
        RequestFacts {
            protocol: self.protocol,
            headers,
            has_body: self.body,
            mtls: Some(self.principal.is_some()),
            peer_uri_sans: self.principal.clone().map(String::into_bytes),
            peer_labels: self
                .labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone().into_bytes()))
                .collect(),
            properties,
            time_micros: self.time_micros,
            opening: self.opening.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_request_has_its_pseudo_headers_then_its_headers_lower_cased() {
        let facts = Described {
            host: Some("Edition.CNN.com:80".into()),
            path: Some("/politics?x".into()),
            headers: vec![("X-Team".into(), "a".into())],
            principal: Some(mesh_principal("cluster.local", "default", "sleep")),
            ..Described::default()
        }
        .facts();
        let pairs: Vec<(&[u8], &[u8])> = facts.headers.iter().collect();
        assert_eq!(
            pairs,
            [
                (&b":authority"[..], &b"Edition.CNN.com:80"[..]),
                (b":path", b"/politics?x"),
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b"x-team", b"a"),
            ]
        );
        assert_eq!(facts.mtls, Some(true));
        assert_eq!(
            facts.peer_uri_sans.as_deref(),
            Some(&b"spiffe://cluster.local/ns/default/sa/sleep"[..])
        );
    }

    #[test]
    fn a_described_connection_has_no_headers_and_its_sni_and_port() {
        let facts = Described {
            protocol: Protocol::Tcp,
            host: Some("ignored".into()),
            texts: vec![(Attr::ConnectionRequestedServerName, "www.ibm.com".into())],
            port: Some(10443),
            ..Described::default()
        }
        .facts();
        assert!(facts.headers.is_empty());
        assert_eq!(facts.mtls, Some(false));
        assert_eq!(
            facts.text(Attr::ConnectionRequestedServerName),
            Some(&b"www.ibm.com"[..])
        );
        assert_eq!(facts.int(Attr::DestinationPort), Some(10443));
    }
}
