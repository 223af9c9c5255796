//! The attributes the policy core sees, built by the proxy-wasm adapter or by the CLI.
//!
//! Every attribute is optional: an attribute the host could not provide is absent, and absent
//! values never equal a literal (see the README's Expressions section). The path is decoded once,
//! strictly ([`canonical_path`]): what the policy sees is what the destination will understand,
//! or the request is refused. Other bytes that are not UTF-8 are replaced (`U+FFFD`) by [`lossy`]
//! so that no list entry or literal can match them by accident and nothing panics.

use crate::attributes::Attr;
use crate::headers::Headers;

// Each concern in its own module; their items keep their paths here.
pub use crate::path::{CanonicalPath, canonical_path};
pub use crate::rejection::Rejection;
pub use crate::stripped::{
    BODILESS_METHODS, STRIPPED_HEADERS, headers_to_strip, is_stripped_header,
};

/// What is being decided: an HTTP request (the HTTP filter) or a TCP connection, TLS as far as
/// its SNI (the network filter). `context.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Http,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// What the proxy knows about one request, as raw bytes: nothing here is decoded or trusted yet.
/// [`crate::policy::Policy::decide`] turns it into a canonical [`Request`], or refuses it. The
/// filter fills it from host calls, the CLI's `explain` from its arguments, so both decide the
/// same request the same way.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// An HTTP request, or a connection (no headers then; the SNI decides).
    pub protocol: Protocol,
    /// All request headers, pseudo-headers (`:path`, `:authority`, `:method`, `:scheme`) included.
    pub headers: Headers,
    /// A body follows the headers (they did not end the stream).
    pub has_body: bool,
    /// The connection presented a client certificate that Envoy verified (`connection.mtls`).
    pub mtls: Option<bool>,
    /// Every URI SAN of that certificate, comma-joined (Envoy's `%DOWNSTREAM_PEER_URI_SAN%`).
    pub peer_uri_sans: Option<Vec<u8>>,
    /// Istio peer metadata of the caller, by label key: used only for mTLS callers.
    pub peer_labels: Vec<(String, Vec<u8>)>,
    /// The attributes whose source is a property or peer metadata (see
    /// [`crate::attributes::Source`]), typed by the adapter that read them: `source.ip` is the
    /// downstream address with or without port (`10.1.2.3:5555`, `[::1]:80`).
    pub properties: Vec<(Attr, Fact)>,
    /// When the request arrived, in microseconds since the Unix epoch.
    pub time_micros: Option<i64>,
    /// How a connection began (connections only).
    pub opening: Opening,
}

/// How a connection began, as far as the network filter saw before deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Opening {
    /// Not looked at (`egress-policy explain`): the caller's ClientHello is taken to name the
    /// connection's SNI.
    #[default]
    Unseen,
    /// The caller's first bytes: a whole ClientHello, or all that came before the connection
    /// ended or the gateway stopped reading ([`crate::tls::MAX_FIRST_BYTES`]).
    FirstBytes(Vec<u8>),
    /// The TLS handshake with the gateway failed.
    HandshakeFailed,
    /// The connection closed before the caller sent a byte.
    ClosedEarly,
}

/// One attribute's value as a host gave it, in the type of the attribute table
/// ([`crate::attributes::Type`]): each adapter decodes its host's wire format (proxy-wasm's
/// eight little-endian bytes for an integer, say) before the core sees it. Text stays bytes: it
/// is untrusted, and the core decides how to read bytes that are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Text(Vec<u8>),
    Int(i64),
}

impl RequestFacts {
    /// The text of a property-sourced attribute, if the host gave one.
    pub fn text(&self, attr: Attr) -> Option<&[u8]> {
        self.properties.iter().find_map(|(a, value)| match value {
            Fact::Text(bytes) if *a == attr => Some(bytes.as_slice()),
            _ => None,
        })
    }

    /// The integer of a property-sourced attribute, if the host gave one.
    pub fn int(&self, attr: Attr) -> Option<i64> {
        self.properties.iter().find_map(|(a, value)| match value {
            Fact::Int(int) if *a == attr => Some(*int),
            _ => None,
        })
    }
}

/// Request and source attributes available to decisions and log entries, canonical: built by
/// [`crate::policy::Policy::decide`] from [`RequestFacts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `context.protocol`.
    pub protocol: Protocol,
    /// `destination.port`: the gateway port the caller connected to.
    pub destination_port: Option<i64>,
    /// `request.host`: lower case, without port or trailing dot. Set it with [`Request::set_host`].
    pub host: Option<String>,
    /// `request.port`: the port a `CONNECT` names (`CONNECT host:port`); absent for other
    /// requests, whose destination port the gateway chooses.
    pub port: Option<i64>,
    /// `request.path`: the decoded path, then the query as received. Set with
    /// [`Request::set_path`].
    path: Option<String>,
    /// Where the query starts in `path` (its `?`), if there is one.
    query_start: Option<usize>,
    /// `request.method`.
    pub method: Option<String>,
    /// `request.scheme`.
    pub scheme: Option<String>,
    /// `request.useragent`.
    pub useragent: Option<String>,
    /// `request.headers[...]`: only the headers the policy references, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Attributes of the calling workload.
    pub source: Source,
    /// `connection.mtls`.
    pub mtls: Option<bool>,
    /// `connection.requested_server_name` (SNI).
    pub requested_server_name: Option<String>,
    /// `context.reporter.uid`: the gateway proxy, as Mixer named it (read only when used).
    pub reporter_uid: Option<String>,
    /// When the request arrived, in microseconds since the Unix epoch (the log entry's `time`).
    pub time_micros: Option<i64>,
    /// Why a presented identity was not accepted (logged), if it was not.
    pub identity_error: Option<crate::identity::IdentityError>,
}

/// Identity of the caller. Filled only from trusted sources (see the README's Security section).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// `source.namespace`.
    pub namespace: Option<String>,
    /// `source.serviceAccount`.
    pub service_account: Option<String>,
    /// `source.principal` (SPIFFE ID); `source.user` is the same without its scheme.
    pub principal: Option<String>,
    /// `source.labels[...]`.
    pub labels: Vec<(String, String)>,
    /// `source.workload`.
    pub workload: Option<String>,
    /// `source.ip`.
    pub ip: Option<String>,
}

/// Response attributes, known only when the log entries are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Response {
    /// `response.code`.
    pub code: Option<i64>,
    /// `response.size`: body bytes sent to the client.
    pub size: Option<i64>,
    /// `response.duration`, `connection.duration`: milliseconds from the first request byte
    /// (or the connection's start) to the last response byte (or its close).
    pub duration_ms: Option<i64>,
    /// `connection.received.bytes`: bytes from the caller.
    pub received_bytes: Option<i64>,
    /// `connection.sent.bytes`: bytes to the caller.
    pub sent_bytes: Option<i64>,
    /// `connection.event`: `open` for a connection refused when it opened, `close` at its end.
    pub event: Option<&'static str>,
    /// `connection.relayed`: an upstream connection was made (connections only).
    pub relayed: Option<bool>,
}

impl Request {
    /// A forward proxy's tunnel request (`CONNECT host:port`), not an extended `CONNECT`
    /// (WebSocket over HTTP/2, which has a path).
    pub fn is_connect(&self) -> bool {
        self.protocol == Protocol::Http
            && self.method.as_deref() == Some("CONNECT")
            && self.path.is_none()
    }

    /// The name the decision is about: the host of a request, the SNI of a connection.
    pub fn destination(&self) -> Option<&str> {
        match self.protocol {
            Protocol::Http => self.host.as_deref(),
            Protocol::Tcp => self.requested_server_name.as_deref(),
        }
    }

    /// Sets `request.host` from an `:authority` or `Host` value: lower-cased, port and trailing
    /// dot removed. An empty or unusable authority (userinfo, characters no host name has,
    /// replaced non-UTF-8 bytes) leaves the host absent, which routes treat as "cannot be
    /// allowed".
    pub fn set_host(&mut self, authority: &str) {
        self.host = canonical_host(authority);
    }

    /// Sets `request.path` from the raw `:path`: the path part decoded ([`canonical_path`]), the
    /// query kept as received. A path that is not canonical is refused; the raw bytes are then
    /// kept (lossily decoded) so the log shows what was refused.
    pub fn set_path(&mut self, raw: &[u8]) -> Result<(), Rejection> {
        match canonical_path(raw) {
            Ok(canonical) => {
                self.query_start = canonical.query_start;
                self.path = Some(canonical.text).filter(|p| !p.is_empty());
                Ok(())
            }
            Err(problem) => {
                self.query_start = None;
                self.path = Some(lossy(raw)).filter(|p| !p.is_empty());
                Err(problem)
            }
        }
    }

    /// `request.path`: the decoded path and the raw query.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// `request.url_path`: the decoded path without the query string.
    pub fn url_path(&self) -> Option<&str> {
        let path = self.path.as_deref()?;
        match self.query_start {
            Some(end) => path.get(..end),
            None => Some(path),
        }
    }

    /// Value of a header the policy asked for, by lower-case name.
    pub fn header(&self, lower_name: &str) -> Option<&str> {
        lookup(&self.headers, lower_name)
    }
}

impl Source {
    /// Fills the identity attributes from a verified identity.
    pub fn set_identity(&mut self, identity: &crate::identity::Identity<'_>) {
        self.principal = Some(identity.principal.to_owned());
        self.namespace = Some(identity.namespace.to_owned());
        self.service_account = Some(identity.service_account.to_owned());
    }

    /// `source.user`: Istio's principal form, the SPIFFE ID without `spiffe://`.
    pub fn user(&self) -> Option<&str> {
        self.principal.as_deref()?.strip_prefix("spiffe://")
    }

    /// Value of a workload label.
    pub fn label(&self, key: &str) -> Option<&str> {
        lookup(&self.labels, key)
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Canonical form of an authority: `Edition.CNN.com.:80` -> `edition.cnn.com`,
/// `[::1]:8080` -> `[::1]`. Returns `None` for an empty host, a port that is not digits, or a host
/// with any byte a host name or IP literal does not have (userinfo's `@`, spaces, control
/// characters, non-ASCII), which no policy should have to reason about.
pub fn canonical_host(authority: &str) -> Option<String> {
    let authority = authority.trim_matches(|c: char| c == ' ' || c == '\t');
    let is_port = |port: &str| port.bytes().all(|b| b.is_ascii_digit());
    let without_port = if authority.starts_with('[') {
        // IPv6 literal: keep the brackets; only a port may follow them.
        let end = authority.find(']')?;
        let after = authority.get(end + 1..)?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        authority.get(..=end)?
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return None,
            None => authority,
        }
    };
    let host = without_port.strip_suffix('.').unwrap_or(without_port);
    if host.is_empty()
        || host.ends_with('.')
        || host.starts_with('.')
        || !host
            .bytes()
            .all(|b| HOST_BYTES.get(usize::from(b)) == Some(&true))
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// Bytes a host name or IP literal may have: ASCII letters, digits, `-._[]:`.
const HOST_BYTES: [bool; 256] = byte_table!(
    |c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'[' | b']' | b':')
);

/// [`lossy`] without the copy when the bytes are UTF-8 (nearly always): the fast validator, and
/// the lossy decoder only for bytes that need it.
pub fn lossy_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Decodes header bytes without failing: invalid UTF-8 becomes `U+FFFD`.
pub fn lossy(bytes: &[u8]) -> String {
    // Valid UTF-8 (nearly always) is checked by the fast validator and copied once.
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_lower_cased_and_loses_port_and_trailing_dot() {
        assert_eq!(
            canonical_host("Edition.CNN.com.:80").as_deref(),
            Some("edition.cnn.com")
        );
        assert_eq!(
            canonical_host("edition.cnn.com").as_deref(),
            Some("edition.cnn.com")
        );
        assert_eq!(canonical_host("[::1]:8080").as_deref(), Some("[::1]"));
    }

    #[test]
    fn unusable_authorities_leave_the_host_absent() {
        for bad in [
            "",
            ":80",
            ".",
            "a..",
            "user@edition.cnn.com",
            "a b",
            "host:port",
            "[::1",
            "[::1]evil.com",
            "[::1]:80x",
            "edition.cnn.com\u{fffd}",
            "edition.cnn.com\u{85}",
            "edition.cnn.com:\u{85}",
            "a/b",
            ".cnn.com",
        ] {
            assert_eq!(canonical_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn url_path_is_decoded_and_drops_the_query() {
        let mut request = Request::default();
        request.set_path(b"/sp%6Frt?x=%2Fpolitics").unwrap();
        assert_eq!(request.url_path(), Some("/sport"));
        assert_eq!(request.path(), Some("/sport?x=%2Fpolitics"));
        // A decoded '?' would be no query to the policy, and a query to a server that parses
        // the decoded path again: refused, never decided either way.
        assert_eq!(
            request.set_path(b"/a%3Fb"),
            Err(Rejection::EncodedDelimiter)
        );
    }
}
