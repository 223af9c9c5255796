//! The attributes the policy core sees, built by the proxy-wasm adapter or by the CLI.
//!
//! Every attribute is optional: an attribute the host could not provide is absent, and absent
//! values never equal a literal (see the README's Expressions section). The path is decoded once,
//! strictly ([`canonical_path`]): what the policy sees is what the destination will understand,
//! or the request is refused. Other bytes that are not UTF-8 are replaced (`U+FFFD`) by [`lossy`]
//! so that no list entry or literal can match them by accident and nothing panics.

use crate::attributes::Attr;
use crate::headers::HeaderMap;
use crate::lookalikes::is_lookalike_delimiter;

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
    pub headers: HeaderMap,
    /// A body follows the headers (they did not end the stream).
    pub has_body: bool,
    /// The connection presented a client certificate that Envoy verified (`connection.mtls`).
    pub mtls: Option<bool>,
    /// Every URI SAN of that certificate, comma-joined (Envoy's `%DOWNSTREAM_PEER_URI_SAN%`).
    pub peer_uri_sans: Option<Vec<u8>>,
    /// Istio peer metadata of the caller, by label key: used only for mTLS callers.
    pub peer_labels: Vec<(String, Vec<u8>)>,
    /// The attributes whose source is a property or peer metadata (see
    /// [`crate::attributes::Source`]), as the proxy gave them: `source.ip` is the downstream
    /// address with or without port (`10.1.2.3:5555`, `[::1]:80`).
    pub properties: Vec<(Attr, Vec<u8>)>,
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

impl RequestFacts {
    /// The raw value of a property-sourced attribute, if the proxy gave one.
    pub fn property(&self, attr: Attr) -> Option<&[u8]> {
        self.properties
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, value)| value.as_slice())
    }
}

/// An integer property as Envoy serializes it: 8 little-endian bytes.
pub fn int_property(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_le_bytes)
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
// Indexes below 256 in a constant: out of range would fail the build, never a request.
#[allow(clippy::indexing_slicing)]
const HOST_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        allowed[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'[' | b']' | b':');
        b += 1;
    }
    allowed
};

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

/// Why a request is refused before any policy sees it: some part of it could mean different
/// things to the filter and to the server behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `:authority` is missing or not a host name (userinfo, spaces, bytes no host has).
    UnusableHost,
    NotOriginForm,
    ControlOrNonAscii,
    Fragment,
    Backslash,
    Semicolon,
    DotSegment,
    /// `%` not followed by two hex digits (`%zz`, `%u002e`, a cut-off `%4`).
    MalformedEscape,
    EncodedSlash,
    EncodedBackslash,
    EncodedDot,
    EncodedPercent,
    /// An escape of `?`, `#` or `;`: a server that decodes the path and parses it again would
    /// end the path there (query, fragment, path parameters) where the policy saw one path.
    EncodedDelimiter,
    /// An escape that decodes to NUL or another control character.
    EncodedControl,
    /// A character that is not a delimiter but that a server normalising Unicode (NFKC) or
    /// converting to a Windows code page (best fit) reads as one: `／` (U+FF0F) as `/`, `．`
    /// (U+FF0E) as `.`, `∕` (U+2215) as `/`, `∖` (U+2216) as `\`; the table is
    /// `crates/egress-policy-core/src/lookalikes.tsv`.
    LookalikeDelimiter,
    /// Escapes that decode to bytes that are not shortest-form UTF-8 (`%c0%ae` is an overlong
    /// `.`, `%ff` is no UTF-8 at all).
    NotShortestUtf8,
    /// A header the policy decides on appears more than once: which one would the destination
    /// read?
    RepeatedHeader,
    /// GET, HEAD, OPTIONS or TRACE with a body, to a host not in `allowSafeMethodBodies`: a
    /// destination that ignores such bodies would read them as a second request.
    BodyOnSafeMethod,
    /// A TLS connection whose ClientHello names no server (no SNI): nothing to decide on.
    MissingServerName,
    /// The caller's TLS handshake with the gateway failed (no certificate, or one the mesh CA
    /// did not sign): the connection ended before anything could be decided.
    HandshakeFailed,
    /// The connection closed before the caller sent its first bytes (its ClientHello).
    ClosedBeforeClientHello,
    /// The caller's first bytes are not one well-formed TLS ClientHello: the gateway relays only
    /// TLS whose server name it has read.
    NotClientHello,
    /// The caller's ClientHello is larger than the gateway reads
    /// ([`crate::tls::MAX_CLIENT_HELLO_BYTES`]).
    ClientHelloTooLarge,
    /// The caller's ClientHello names no server, or another one than the connection's SNI, which
    /// decided and routed it: the destination would serve the name the policy did not see.
    ServerNameMismatch,
    /// The caller's ClientHello hides the server it wants (Encrypted Client Hello): the SNI is
    /// only a front for it.
    HiddenServerName,
    /// Envoy closed the connection before the policy filter ran (its TLS inspector could not
    /// read the ClientHello it needs for the sidecar leg's SNI). Written by the gateway's Envoy
    /// configuration (`envoy/gateway.yaml`), not by the filter, which never saw the connection.
    ClientHelloUnreadable,
}

impl Rejection {
    /// Every rejection, for tests and documentation.
    pub const ALL: [Rejection; 26] = [
        Self::UnusableHost,
        Self::NotOriginForm,
        Self::ControlOrNonAscii,
        Self::Fragment,
        Self::Backslash,
        Self::Semicolon,
        Self::DotSegment,
        Self::MalformedEscape,
        Self::EncodedSlash,
        Self::EncodedBackslash,
        Self::EncodedDot,
        Self::EncodedPercent,
        Self::EncodedDelimiter,
        Self::EncodedControl,
        Self::LookalikeDelimiter,
        Self::NotShortestUtf8,
        Self::RepeatedHeader,
        Self::BodyOnSafeMethod,
        Self::MissingServerName,
        Self::HandshakeFailed,
        Self::ClosedBeforeClientHello,
        Self::NotClientHello,
        Self::ClientHelloTooLarge,
        Self::ServerNameMismatch,
        Self::HiddenServerName,
        Self::ClientHelloUnreadable,
    ];

    /// For response code details and metrics: no spaces.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnusableHost => "unusable_host",
            Self::NotOriginForm => "not_origin_form",
            Self::ControlOrNonAscii => "control_or_non_ascii",
            Self::Fragment => "fragment",
            Self::Backslash => "backslash",
            Self::Semicolon => "semicolon",
            Self::DotSegment => "dot_segment",
            Self::MalformedEscape => "malformed_escape",
            Self::EncodedSlash => "encoded_slash",
            Self::EncodedBackslash => "encoded_backslash",
            Self::EncodedDot => "encoded_dot",
            Self::EncodedPercent => "encoded_percent",
            Self::EncodedDelimiter => "encoded_delimiter",
            Self::EncodedControl => "encoded_control",
            Self::LookalikeDelimiter => "lookalike_delimiter",
            Self::NotShortestUtf8 => "not_shortest_utf8",
            Self::RepeatedHeader => "repeated_header",
            Self::BodyOnSafeMethod => "body_on_safe_method",
            Self::MissingServerName => "no_sni",
            Self::HandshakeFailed => "tls_handshake_failed",
            Self::ClosedBeforeClientHello => "closed_before_client_hello",
            Self::NotClientHello => "not_client_hello",
            Self::ClientHelloTooLarge => "client_hello_too_large",
            Self::ServerNameMismatch => "sni_mismatch",
            Self::HiddenServerName => "hidden_sni",
            Self::ClientHelloUnreadable => "client_hello_unreadable",
        }
    }

    /// For people: what is wrong with the request.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnusableHost => "host is missing or not a host name",
            Self::NotOriginForm => "path does not start with '/'",
            Self::ControlOrNonAscii => "path has control or non-ASCII bytes",
            Self::Fragment => "path has a '#' (fragment)",
            Self::Backslash => "path has a backslash",
            Self::Semicolon => "path has a ';' (path parameters)",
            Self::DotSegment => "path has a '.' or '..' segment",
            Self::MalformedEscape => "path has a malformed percent escape",
            Self::EncodedSlash => "path has an encoded slash (%2F)",
            Self::EncodedBackslash => "path has an encoded backslash (%5C)",
            Self::EncodedDot => "path has an encoded dot (%2E)",
            Self::EncodedPercent => "path has an encoded percent (%25)",
            Self::EncodedDelimiter => "path has an encoded '?', '#' or ';' (%3F, %23, %3B)",
            Self::EncodedControl => "path has an encoded control character or NUL",
            Self::LookalikeDelimiter => {
                "path has a character that a server may read as a slash, backslash, dot, percent, semicolon, question mark, number sign or colon (a Unicode compatibility or Windows best-fit look-alike)"
            }
            Self::NotShortestUtf8 => "path decodes to bytes that are not shortest-form UTF-8",
            Self::RepeatedHeader => "a header the policy decides on is repeated",
            Self::BodyOnSafeMethod => "GET, HEAD, OPTIONS and TRACE requests may not carry a body",
            Self::MissingServerName => "the TLS connection names no server (SNI)",
            Self::HandshakeFailed => "the caller's TLS handshake with the gateway failed",
            Self::ClosedBeforeClientHello => {
                "the connection closed before the caller sent a TLS ClientHello"
            }
            Self::NotClientHello => {
                "the caller's first bytes are not one well-formed TLS ClientHello"
            }
            Self::ClientHelloTooLarge => "the caller's ClientHello is larger than 64 KiB",
            Self::ServerNameMismatch => {
                "the caller's ClientHello names no server or another one than the connection's SNI"
            }
            Self::HiddenServerName => {
                "the caller's ClientHello hides its server name (Encrypted Client Hello)"
            }
            Self::ClientHelloUnreadable => {
                "Envoy's TLS inspector closed the connection before the policy filter saw it: its ClientHello was over 16 KiB, not TLS, or late"
            }
        }
    }
}

/// A path decoded by [`canonical_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    /// The decoded path, then the query as received.
    pub text: String,
    /// Where the query (its `?`) starts in `text`.
    pub query_start: Option<usize>,
}

/// Decodes the raw `:path` once, strictly, so that the policy decides on what the destination
/// will understand. The path part (before the first `?`) must be origin-form, printable ASCII,
/// without `#`, `\`, `;`, `.` or `..` segments; its escapes must be well-formed, may not encode
/// `/`, `\`, `.`, `%`, `?`, `#`, `;` or a control character, and must decode to shortest-form UTF-8 without a
/// look-alike of a delimiter ([`crate::lookalikes`]). The query
/// is kept as received (its escapes are data); it may hold no control, non-ASCII or `#` bytes.
pub fn canonical_path(raw: &[u8]) -> Result<CanonicalPath, Rejection> {
    if raw.first() != Some(&b'/') {
        return Err(Rejection::NotOriginForm);
    }
    if raw.iter().any(|b| !(0x21..0x7f).contains(b)) {
        // Named precisely when the bytes are UTF-8 holding a look-alike of a delimiter.
        let lookalike =
            std::str::from_utf8(raw).is_ok_and(|text| text.chars().any(is_lookalike_delimiter));
        return Err(if lookalike {
            Rejection::LookalikeDelimiter
        } else {
            Rejection::ControlOrNonAscii
        });
    }
    if raw.contains(&b'#') {
        return Err(Rejection::Fragment);
    }
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(end) => (raw.get(..end).unwrap_or(raw), raw.get(end..)),
        None => (raw, None),
    };
    if path.contains(&b'\\') {
        return Err(Rejection::Backslash);
    }
    if path.contains(&b';') {
        return Err(Rejection::Semicolon);
    }
    if path
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
    {
        return Err(Rejection::DotSegment);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut bytes = path.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'%' {
            decoded.push(byte);
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.next().and_then(|b| hex_value(*b)),
            bytes.next().and_then(|b| hex_value(*b)),
        ) else {
            return Err(Rejection::MalformedEscape);
        };
        let byte = high << 4 | low;
        match byte {
            b'/' => return Err(Rejection::EncodedSlash),
            b'\\' => return Err(Rejection::EncodedBackslash),
            b'.' => return Err(Rejection::EncodedDot),
            b'%' => return Err(Rejection::EncodedPercent),
            b'?' | b'#' | b';' => return Err(Rejection::EncodedDelimiter),
            0..0x20 | 0x7f => return Err(Rejection::EncodedControl),
            _ => decoded.push(byte),
        }
    }
    // Rust's UTF-8 validation refuses overlong forms, surrogates and code points past U+10FFFF.
    let mut text = String::from_utf8(decoded).map_err(|_| Rejection::NotShortestUtf8)?;
    // Only escapes can bring in anything but ASCII: a pure-ASCII path costs one scan.
    if !text.is_ascii() {
        if text.chars().any(char::is_control) {
            return Err(Rejection::EncodedControl);
        }
        if text.chars().any(is_lookalike_delimiter) {
            return Err(Rejection::LookalikeDelimiter);
        }
    }
    let query_start = query.map(|query| {
        let start = text.len();
        // The query is printable ASCII, checked above.
        text.push_str(&String::from_utf8_lossy(query));
        start
    });
    Ok(CanonicalPath { text, query_start })
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Headers a client may not send through the gateway: the filter removes them before the request
/// is forwarded, so no destination or intermediate can act on what the policy did not decide on.
/// Each entry is a lower-case name, or a prefix ending in `*`.
pub const STRIPPED_HEADERS: &[(&str, &str)] = &[
    (
        "x-envoy-*",
        "Envoy's internal headers (original path, decorator operation, retry and timeout controls); a downstream client has no business setting them",
    ),
    (
        "x-original-url",
        "IIS and some frameworks serve this URL instead of the request's path",
    ),
    (
        "x-original-uri",
        "as x-original-url, for nginx-style setups",
    ),
    (
        "x-rewrite-url",
        "IIS URL Rewrite serves this URL instead of the request's path",
    ),
    (
        "x-forwarded-prefix",
        "Spring and other frameworks prepend it to the path they route on",
    ),
    (
        "x-forwarded-path",
        "some proxies and frameworks route on it instead of the path",
    ),
    (
        "x-forwarded-host",
        "frameworks build links and pick virtual hosts from it instead of the host",
    ),
    ("x-original-host", "as x-forwarded-host"),
    (
        "x-http-method-override",
        "frameworks run this method instead of the request's method",
    ),
    ("x-http-method", "as x-http-method-override"),
    ("x-method-override", "as x-http-method-override"),
];

/// Whether a request header (lower-case name, as the proxy stores it) is removed before the
/// request is forwarded; the policy never sees it either.
pub fn is_stripped_header(name: &[u8]) -> bool {
    // Every stripped name starts with `x-` (a test says so): most headers are ruled out here.
    if !name.starts_with(b"x-") {
        return false;
    }
    STRIPPED_HEADERS
        .iter()
        .any(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix.as_bytes()),
            None => name == pattern.as_bytes(),
        })
}

/// Methods that carry no body in HTTP's semantics: a body on them is refused unless the host is
/// in `allowSafeMethodBodies`.
pub const BODILESS_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "TRACE"];

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn every_stripped_header_starts_with_x_dash() {
        for (pattern, _) in STRIPPED_HEADERS {
            assert!(pattern.starts_with("x-"), "{pattern}");
        }
        assert!(is_stripped_header(b"x-envoy-original-path"));
        assert!(!is_stripped_header(b"user-agent"));
    }

    fn decoded(raw: &str) -> String {
        canonical_path(raw.as_bytes()).unwrap().text
    }

    #[test]
    fn canonical_paths_are_decoded_once_and_keep_their_query() {
        assert_eq!(decoded("/"), "/");
        assert_eq!(decoded("/sport"), "/sport");
        assert_eq!(decoded("/%70olitics"), "/politics");
        assert_eq!(decoded("/caf%C3%A9"), "/café");
        assert_eq!(decoded("/a.b/c..d/.e"), "/a.b/c..d/.e");
        assert_eq!(
            decoded("/sport/football?x=%2Fpolitics;a=b"),
            "/sport/football?x=%2Fpolitics;a=b"
        );
        assert_eq!(
            canonical_path(b"/s?q").unwrap().query_start,
            Some(2),
            "the query starts at the raw '?'"
        );
    }

    #[test]
    fn ambiguous_paths_are_refused_and_named() {
        use Rejection::*;
        for (path, problem) in [
            (&b"sport"[..], NotOriginForm),
            (b"", NotOriginForm),
            (b"/sport%2Fpolitics", EncodedSlash),
            (b"/sport%2fpolitics", EncodedSlash),
            (b"/sport%5c..%5cpolitics", EncodedBackslash),
            (b"/%2e%2e/politics", EncodedDot),
            (b"/%252e/politics", EncodedPercent),
            (b"/sport\\..\\politics", Backslash),
            (b"/sport;/../politics", Semicolon),
            (b"/politics#/sport", Fragment),
            (b"/sport/../politics", DotSegment),
            (b"/./politics", DotSegment),
            (b"/sport/..", DotSegment),
            (b"/sport\x00", ControlOrNonAscii),
            (b"/sport politics", ControlOrNonAscii),
            (b"/sp\xc3\xb6rt", ControlOrNonAscii),
            (b"/sport\x7f", ControlOrNonAscii),
            (b"/sport/%c0%ae%c0%ae/politics", NotShortestUtf8),
            (b"/sport/%e0%80%ae%e0%80%ae/politics", NotShortestUtf8),
            (b"/sport/..%c0%afpolitics", NotShortestUtf8),
            (b"/sport/%ed%a0%80", NotShortestUtf8),
            (b"/sport/%ff", NotShortestUtf8),
            (b"/sport/%u002e%u002e/politics", MalformedEscape),
            (b"/sport/%zz/politics", MalformedEscape),
            (b"/sport/%4", MalformedEscape),
            (b"/sport/%", MalformedEscape),
            (b"/sport%00", EncodedControl),
            (b"/sport%0a", EncodedControl),
            (b"/sport%7F", EncodedControl),
            (b"/sport%c2%85", EncodedControl),
            (b"/politics%23", EncodedDelimiter),
            (b"/politics%3Fsport", EncodedDelimiter),
            (b"/politics%3b/sport", EncodedDelimiter),
            (b"/sport/..%ef%bc%8f..%ef%bc%8fpolitics", LookalikeDelimiter),
            (b"/sport/%ef%bc%8e%ef%bc%8e/politics", LookalikeDelimiter),
            (b"/sport/..%e2%88%95politics", LookalikeDelimiter),
            (b"/sport/..%e2%88%96politics", LookalikeDelimiter),
            (b"/sport/..%EF%BC%BCpolitics", LookalikeDelimiter),
            (b"/sport/..%c2%a5..%c2%a5politics", LookalikeDelimiter),
            (b"/sport/%e2%80%a5/politics", LookalikeDelimiter),
            (b"/sport%ef%bc%9fx", LookalikeDelimiter),
            ("/sport/..\u{ff0f}politics".as_bytes(), LookalikeDelimiter),
        ] {
            assert_eq!(
                canonical_path(path),
                Err(problem),
                "{:?}",
                String::from_utf8_lossy(path)
            );
        }
    }

    /// The README's tables of what is stripped and what is refused are these lists.
    #[test]
    fn the_readme_lists_what_is_stripped_and_what_is_refused() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let rows = |heading: &str| -> Vec<String> {
            let section = readme.split(heading).nth(1).unwrap();
            section
                .lines()
                .skip_while(|l| !l.starts_with("|---"))
                .skip(1)
                .take_while(|l| l.starts_with('|'))
                .map(str::to_owned)
                .collect()
        };
        let stripped: Vec<String> = STRIPPED_HEADERS
            .iter()
            .map(|(name, why)| format!("| `{name}` | {why} |"))
            .collect();
        assert_eq!(rows("### What the gateway strips"), stripped);
        let refused: Vec<String> = Rejection::ALL
            .iter()
            .map(|r| {
                format!(
                    "| `egress_policy_rejected:{}` | {} |",
                    r.code(),
                    r.describe()
                )
            })
            .collect();
        assert_eq!(rows("### What is refused"), refused);
    }

    #[test]
    fn forwarding_controls_are_stripped_and_ordinary_headers_kept() {
        for name in [
            "x-envoy-original-path",
            "x-envoy-decorator-operation",
            "x-original-url",
            "x-rewrite-url",
            "x-forwarded-prefix",
            "x-http-method-override",
        ] {
            assert!(is_stripped_header(name.as_bytes()), "{name}");
        }
        for name in [
            "x-envoy",
            "user-agent",
            "x-forwarded-for",
            "x-forwarded-proto",
            "host",
        ] {
            assert!(!is_stripped_header(name.as_bytes()), "{name}");
        }
    }
}
