//! Why a request or connection is refused before any policy sees it: one vocabulary for the
//! local reply's details, the log's `rejected`, the metrics and the README's table.

/// Why a request is refused before any policy sees it: some part of it could mean different
/// things to the filter and to the server behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `:authority` is missing or not a host name (userinfo, spaces, bytes no host has).
    UnusableHost,
    /// A `CONNECT` whose authority has no port (or not one from 1 to 65535): a tunnel is
    /// decided on the host and the port it opens.
    ConnectWithoutPort,
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
    pub const ALL: [Rejection; 27] = [
        Self::UnusableHost,
        Self::ConnectWithoutPort,
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
            Self::ConnectWithoutPort => "connect_without_port",
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
            Self::ConnectWithoutPort => "a CONNECT names no port (host:port, 1 to 65535)",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of what is refused is this list.
    #[test]
    fn the_readme_lists_what_is_refused() {
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
        assert_eq!(
            crate::stripped::readme_table_rows("### What is refused"),
            refused
        );
    }
}
