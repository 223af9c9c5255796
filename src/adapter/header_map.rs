//! Header maps in the proxy-wasm encoding: a little-endian `u32` count, then each name's and
//! value's length as `u32`s, then the bytes, every name and value followed by a NUL.
//!
//! The filter reads all request headers with one host call; [`decode`] keeps that buffer and
//! points the core's [`Headers`] into it. The same encoding carries the headers of a local
//! reply ([`serialize`]). Decoding never panics: a malformed map ends where it stops making
//! sense, and what was not decoded is not there for the policy.

use crate::core::headers::{Headers, Span};

/// The headers of a serialized map, without copying their bytes.
pub fn decode(bytes: Vec<u8>) -> Headers {
    let pairs = spans(&bytes);
    Headers::from_spans(bytes, pairs).unwrap_or_default()
}

fn spans(bytes: &[u8]) -> Vec<Span> {
    let count = read_u32(bytes, 0).unwrap_or(0);
    // Lengths come first: 4 bytes of count, then 8 bytes per pair; a count the map cannot
    // hold allocates nothing.
    let mut data = count.saturating_mul(8).saturating_add(4);
    let mut pairs = Vec::with_capacity(if data <= bytes.len() { count } else { 0 });
    for index in 0..count {
        let Some(span) = pair(bytes, 4 + index * 8, data) else {
            break;
        };
        data = span.value.end + 1;
        pairs.push(span);
    }
    pairs
}

/// The pair whose lengths are at `lengths` and whose bytes start at `data`.
fn pair(bytes: &[u8], lengths: usize, data: usize) -> Option<Span> {
    let name_len = read_u32(bytes, lengths)?;
    let value_len = read_u32(bytes, lengths.checked_add(4)?)?;
    let name_end = data.checked_add(name_len)?;
    let value_start = name_end.checked_add(1)?;
    let value_end = value_start.checked_add(value_len)?;
    // Each string is NUL-terminated; a map without its terminators is cut short.
    if bytes.get(name_end) != Some(&0) || bytes.get(value_end) != Some(&0) {
        return None;
    }
    Some(Span {
        name: data..name_end,
        value: value_start..value_end,
    })
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

/// Encodes pairs in the proxy-wasm header map encoding.
pub fn serialize<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let length = |bytes: &[u8]| u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(0).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&length(name.as_ref()));
        out.extend_from_slice(&length(value.as_ref()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_decode_to_the_pairs_they_encode_in_order() {
        let pairs: [(&[u8], &[u8]); 4] = [
            (b":path", b"/sport"),
            (b"x-a", b"1"),
            (b"x-a", b""),
            (b"x-bin", b"\xff\x00"),
        ];
        let headers = decode(serialize(&pairs));
        assert_eq!(headers, Headers::from_pairs(&pairs));
    }

    #[test]
    fn malformed_maps_decode_what_is_whole_and_never_panic() {
        assert!(decode(Vec::new()).is_empty());
        let whole = serialize(&[("a", "1"), ("b", "2")]);
        for cut in 0..whole.len() {
            assert!(decode(whole[..cut].to_vec()).len() < 2, "cut at {cut}");
        }
        assert!(decode(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]).is_empty());
    }
}
