//! The one decoder of a request's path: strict, once, so that the policy decides on what the
//! destination will understand, or the request is refused.

use crate::lookalikes::is_lookalike_delimiter;
use crate::rejection::Rejection;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
