//! The one path decoder: any bytes as `:path`. Besides not crashing, what it accepts must be
//! what the policy may safely decide on: no dot segment, no look-alike of a delimiter, no
//! control character in the decoded path, and the query kept as received.
#![no_main]

use egress_policy_core::lookalikes::is_lookalike_delimiter;
use egress_policy_core::request::canonical_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Ok(canonical) = canonical_path(raw) else {
        return;
    };
    let text = &canonical.text;
    let path = match canonical.query_start {
        Some(start) => &text[..start],
        None => text.as_str(),
    };
    assert!(path.starts_with('/'), "{text:?}");
    assert!(
        !path
            .split('/')
            .any(|segment| segment == "." || segment == ".."),
        "{text:?}"
    );
    assert!(!path.chars().any(is_lookalike_delimiter), "{text:?}");
    assert!(!path.chars().any(char::is_control), "{text:?}");
    assert!(!path.contains(['\\', ';', '#', '?']), "{text:?}");
    if let Some(start) = canonical.query_start {
        let query_at = raw.iter().position(|&b| b == b'?').unwrap();
        assert_eq!(&text.as_bytes()[start..], &raw[query_at..]);
    }
});
