//! Header maps in the proxy-wasm encoding: a little-endian `u32` count, then each name's and
//! value's length as `u32`s, then the bytes, every name and value followed by a NUL.
//!
//! The filter reads all request headers with one host call and decides on this map; the same
//! encoding carries the headers of a local reply. Decoding never panics: a malformed map ends
//! where it stops making sense, and what was not decoded is not there for the policy.

/// A serialized header map, as the proxy hands it over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    bytes: Vec<u8>,
}

impl HeaderMap {
    /// Wraps bytes in the proxy-wasm encoding.
    pub fn from_serialized(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// Encodes `pairs` (for tests, the CLI and local replies).
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Self {
        Self {
            bytes: serialize(pairs),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every (name, value) pair in order.
    pub fn iter(&self) -> Pairs<'_> {
        let count = read_u32(&self.bytes, 0).unwrap_or(0);
        Pairs {
            bytes: &self.bytes,
            remaining: count,
            index: 0,
            // Lengths come first: 4 bytes of count, then 8 bytes per pair.
            data: count.saturating_mul(8).saturating_add(4),
        }
    }

    /// The value of the first header called `name` (lower case, as the proxy stores names).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// How many headers are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.iter().filter(|(n, _)| *n == name.as_bytes()).count()
    }
}

/// Iterator over the pairs of a [`HeaderMap`].
pub struct Pairs<'a> {
    bytes: &'a [u8],
    remaining: usize,
    index: usize,
    data: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let lengths = 4 + self.index * 8;
        let name_len = read_u32(self.bytes, lengths)?;
        let value_len = read_u32(self.bytes, lengths + 4)?;
        let name_end = self.data.checked_add(name_len)?;
        let name = self.bytes.get(self.data..name_end)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let value = self.bytes.get(value_start..value_end)?;
        // Each string is NUL-terminated; a map without its terminators is cut short.
        if self.bytes.get(name_end) != Some(&0) || self.bytes.get(value_end) != Some(&0) {
            return None;
        }
        self.data = value_end.checked_add(1)?;
        self.index += 1;
        self.remaining -= 1;
        Some((name, value))
    }
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
    fn pairs_round_trip_in_order_with_repeats_and_empty_values() {
        let pairs: [(&[u8], &[u8]); 4] = [
            (b":path", b"/sport"),
            (b"x-a", b"1"),
            (b"x-a", b""),
            (b"x-bin", b"\xff\x00"),
        ];
        let map = HeaderMap::from_pairs(&pairs);
        let decoded: Vec<(&[u8], &[u8])> = map.iter().collect();
        assert_eq!(decoded, pairs);
        assert_eq!(map.get(":path"), Some(&b"/sport"[..]));
        assert_eq!(map.get("x-a"), Some(&b"1"[..]));
        assert_eq!(map.count("x-a"), 2);
        assert_eq!(map.get("missing"), None);
    }

    #[test]
    fn malformed_maps_decode_what_is_whole_and_never_panic() {
        assert_eq!(HeaderMap::default().iter().count(), 0);
        let whole = HeaderMap::from_pairs(&[("a", "1"), ("b", "2")]);
        for cut in 0..whole.as_bytes().len() {
            let truncated = HeaderMap::from_serialized(whole.as_bytes()[..cut].to_vec());
            assert!(truncated.iter().count() < 2, "cut at {cut}");
        }
        let lying = HeaderMap::from_serialized(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(lying.iter().count(), 0);
    }
}
