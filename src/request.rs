//! The attributes the policy core sees, built by the proxy-wasm adapter or by the CLI.
//!
//! Every attribute is optional: an attribute the host could not provide is absent, and absent
//! values never equal a literal (DESIGN §4). Strings are stored already decoded; bytes that are
//! not UTF-8 are replaced (`U+FFFD`) by [`lossy`] so that no list entry or literal can match them
//! by accident and nothing panics.

/// Request and source attributes available to decisions and log entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `request.host`: lower case, without port or trailing dot. Set it with [`Request::set_host`].
    pub host: Option<String>,
    /// `request.path`: path with query, as received.
    pub path: Option<String>,
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
    /// When the request arrived, in microseconds since the Unix epoch (the log entry's `time`).
    pub time_micros: Option<i64>,
    /// Why a presented identity was not accepted (logged), if it was not.
    pub identity_error: Option<crate::identity::IdentityError>,
}

/// Identity of the caller. Filled only from trusted sources (DESIGN §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// `source.namespace`.
    pub namespace: Option<String>,
    /// `source.serviceAccount`.
    pub service_account: Option<String>,
    /// `source.principal` (SPIFFE ID).
    pub principal: Option<String>,
    /// `source.user`.
    pub user: Option<String>,
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
    /// `response.duration`: milliseconds from the first request byte to the last response byte.
    pub duration_ms: Option<i64>,
}

impl Request {
    /// Sets `request.host` from an `:authority` or `Host` value: lower-cased, port and trailing
    /// dot removed. An empty or unusable authority (userinfo, characters no host name has,
    /// replaced non-UTF-8 bytes) leaves the host absent, which routes treat as "cannot be
    /// allowed".
    pub fn set_host(&mut self, authority: &str) {
        self.host = canonical_host(authority);
    }

    /// `request.url_path`: the path without its query string.
    pub fn url_path(&self) -> Option<&str> {
        self.path.as_deref().map(strip_query)
    }

    /// Value of a header the policy asked for, by lower-case name.
    pub fn header(&self, lower_name: &str) -> Option<&str> {
        lookup(&self.headers, lower_name)
    }
}

impl Source {
    /// Fills the identity attributes from a verified identity.
    pub fn set_identity(&mut self, identity: &crate::identity::Identity) {
        self.namespace = Some(identity.namespace.clone());
        self.service_account = Some(identity.service_account.clone());
        self.principal = Some(identity.principal());
        self.user = Some(identity.user());
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

/// The path up to the first `?`.
pub fn strip_query(path: &str) -> &str {
    match path.find('?') {
        Some(i) => path.get(..i).unwrap_or(path),
        None => path,
    }
}

/// Canonical form of an authority: `Edition.CNN.com.:80` -> `edition.cnn.com`,
/// `[::1]:8080` -> `[::1]`. Returns `None` for an empty host or one with userinfo, spaces or
/// control characters, which no policy should have to reason about.
pub fn canonical_host(authority: &str) -> Option<String> {
    let authority = authority.trim_matches(|c: char| c == ' ' || c == '\t');
    if authority.contains('@') || authority.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    let without_port = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        let end = rest.find(']')?;
        authority.get(..end + 2)?
    } else {
        match authority.rfind(':') {
            Some(i) if authority.get(i + 1..)?.bytes().all(|b| b.is_ascii_digit()) => {
                authority.get(..i)?
            }
            Some(_) => return None,
            None => authority,
        }
    };
    let host = without_port.strip_suffix('.').unwrap_or(without_port);
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b);
    if host.is_empty() || host.ends_with('.') || host.starts_with('.') || !host.bytes().all(allowed)
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// Decodes header bytes without failing: invalid UTF-8 becomes `U+FFFD`.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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
            "edition.cnn.com\u{fffd}",
            "a/b",
            ".cnn.com",
        ] {
            assert_eq!(canonical_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn url_path_drops_the_query() {
        let request = Request {
            path: Some("/sport?x=/politics".into()),
            ..Request::default()
        };
        assert_eq!(request.url_path(), Some("/sport"));
    }
}

/// Why a request is refused before any policy sees it: its path or host could mean different
/// things to the filter and to the server behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `:authority` is missing or not a host name (userinfo, spaces, bytes no host has).
    UnusableHost,
    NotOriginForm,
    ControlOrNonAscii,
    EncodedSlash,
    EncodedBackslash,
    EncodedDot,
    EncodedPercent,
    Backslash,
    Semicolon,
    Fragment,
    DotSegment,
}

impl Rejection {
    /// For response code details and metrics: no spaces.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnusableHost => "unusable_host",
            Self::NotOriginForm => "not_origin_form",
            Self::ControlOrNonAscii => "control_or_non_ascii",
            Self::EncodedSlash => "encoded_slash",
            Self::EncodedBackslash => "encoded_backslash",
            Self::EncodedDot => "encoded_dot",
            Self::EncodedPercent => "encoded_percent",
            Self::Backslash => "backslash",
            Self::Semicolon => "semicolon",
            Self::Fragment => "fragment",
            Self::DotSegment => "dot_segment",
        }
    }

    /// For people: what is wrong with the path.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnusableHost => "host is missing or not a host name",
            Self::NotOriginForm => "path does not start with '/'",
            Self::ControlOrNonAscii => "path has control or non-ASCII bytes",
            Self::EncodedSlash => "path has an encoded slash (%2F)",
            Self::EncodedBackslash => "path has an encoded backslash (%5C)",
            Self::EncodedDot => "path has an encoded dot (%2E)",
            Self::EncodedPercent => "path has an encoded percent (%25)",
            Self::Backslash => "path has a backslash",
            Self::Semicolon => "path has a ';' (path parameters)",
            Self::Fragment => "path has a '#' (fragment)",
            Self::DotSegment => "path has a '.' or '..' segment",
        }
    }
}

/// Checks the raw `:path` bytes. The query string is exempt from everything but control and
/// non-ASCII bytes and `#`: encoded slashes there are ordinary data.
pub fn ambiguous_path(raw: &[u8]) -> Option<Rejection> {
    if raw.first() != Some(&b'/') {
        return Some(Rejection::NotOriginForm);
    }
    if raw.iter().any(|b| !(0x21..0x7f).contains(b)) {
        return Some(Rejection::ControlOrNonAscii);
    }
    if raw.contains(&b'#') {
        return Some(Rejection::Fragment);
    }
    let path = match raw.iter().position(|&b| b == b'?') {
        Some(end) => raw.get(..end).unwrap_or(raw),
        None => raw,
    };
    for window in path.windows(3) {
        if let [b'%', high, low] = window {
            let problem = match (high, low.to_ascii_uppercase()) {
                (b'2', b'F') => Some(Rejection::EncodedSlash),
                (b'5', b'C') => Some(Rejection::EncodedBackslash),
                (b'2', b'E') => Some(Rejection::EncodedDot),
                (b'2', b'5') => Some(Rejection::EncodedPercent),
                _ => None,
            };
            if problem.is_some() {
                return problem;
            }
        }
    }
    if path.contains(&b'\\') {
        return Some(Rejection::Backslash);
    }
    if path.contains(&b';') {
        return Some(Rejection::Semicolon);
    }
    if path
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
    {
        return Some(Rejection::DotSegment);
    }
    None
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn canonical_paths_pass() {
        for ok in [
            "/",
            "/sport",
            "/sport/football?x=%2Fpolitics;a=b",
            "/a.b/c..d/.e",
            "/%41",
        ] {
            assert_eq!(ambiguous_path(ok.as_bytes()), None, "{ok}");
        }
    }

    #[test]
    fn ambiguous_paths_are_named() {
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
        ] {
            assert_eq!(
                ambiguous_path(path),
                Some(problem),
                "{:?}",
                String::from_utf8_lossy(path)
            );
        }
    }
}
