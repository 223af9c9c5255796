//! What the gateway removes from every forwarded request, and the methods that carry no body.

use crate::headers::Headers;

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

/// The names of the request's headers to remove before it is forwarded, each once, in order:
/// every adapter removes them with its host's call, and fails closed if one cannot be.
pub fn headers_to_strip(headers: &Headers) -> Vec<&[u8]> {
    let mut names: Vec<&[u8]> = Vec::new();
    for (name, _) in headers.iter() {
        if is_stripped_header(name) && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

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

/// The manual as one text: the README, then the book's chapters in the order of
/// `docs/src/SUMMARY.md`.
#[cfg(test)]
pub(crate) fn manual_text() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
    let mut text = read("README.md");
    for line in read("docs/src/SUMMARY.md").lines() {
        if let Some(chapter) = line.split("](").nth(1).and_then(|r| r.strip_suffix(')')) {
            text.push('\n');
            text.push_str(&read(&format!("docs/src/{chapter}")));
        }
    }
    text
}

/// The rows of the manual's table under `heading`.
#[cfg(test)]
pub(crate) fn readme_table_rows(heading: &str) -> Vec<String> {
    let readme = manual_text();
    let section = readme.split(heading).nth(1).unwrap();
    section
        .lines()
        .skip_while(|l| !l.starts_with("|---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stripped_header_starts_with_x_dash() {
        for (pattern, _) in STRIPPED_HEADERS {
            assert!(pattern.starts_with("x-"), "{pattern}");
        }
        assert!(is_stripped_header(b"x-envoy-original-path"));
        assert!(!is_stripped_header(b"user-agent"));
    }

    /// The README's table of what is stripped is this list.
    #[test]
    fn the_readme_lists_what_is_stripped() {
        let stripped: Vec<String> = STRIPPED_HEADERS
            .iter()
            .map(|(name, why)| format!("| `{name}` | {why} |"))
            .collect();
        assert_eq!(readme_table_rows("### What the gateway strips"), stripped);
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
