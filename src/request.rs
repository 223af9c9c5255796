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
