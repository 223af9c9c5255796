//! Request headers as the core takes them: name/value pairs of bytes, in the order the proxy
//! gave them, pseudo-headers (`:path`, `:authority`) included and repeats kept.
//!
//! One buffer holds every name and value and a list of spans points into it, so that an adapter
//! whose host hands over all headers in one buffer (proxy-wasm does) keeps that buffer and only
//! adds the spans ([`Headers::from_spans`]), and every lookup is a walk over spans rather than a
//! decoding. Names are lower case, as HTTP/2 and Envoy keep them.

use std::ops::Range;

/// Request header pairs. Equal when their pairs are, however they are laid out.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    pairs: Vec<Span>,
}

/// Where one header's name and value are in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

impl Headers {
    /// Room for `pairs` headers of `bytes` bytes in all: one allocation each, however many are
    /// pushed up to that.
    pub fn with_capacity(bytes: usize, pairs: usize) -> Self {
        Headers {
            bytes: Vec::with_capacity(bytes),
            pairs: Vec::with_capacity(pairs),
        }
    }

    /// Copies `pairs`, in order.
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Self {
        let bytes = pairs
            .iter()
            .map(|(name, value)| name.as_ref().len() + value.as_ref().len())
            .sum();
        let mut headers = Headers::with_capacity(bytes, pairs.len());
        for (name, value) in pairs {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }

    /// Adds a header after the others.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name_start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let value_start = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.pairs.push(Span {
            name: name_start..value_start,
            value: value_start..self.bytes.len(),
        });
    }

    /// Headers whose bytes are already in one buffer: `None` when a span is outside it or
    /// backwards, so that nothing the host sent can be misread later.
    pub fn from_spans(bytes: Vec<u8>, pairs: Vec<Span>) -> Option<Self> {
        let within = |range: &Range<usize>| range.start <= range.end && range.end <= bytes.len();
        pairs
            .iter()
            .all(|pair| within(&pair.name) && within(&pair.value))
            .then_some(Headers { bytes, pairs })
    }

    /// Every (name, value) pair in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|pair| {
            (
                self.bytes.get(pair.name.clone()).unwrap_or_default(),
                self.bytes.get(pair.value.clone()).unwrap_or_default(),
            )
        })
    }

    /// The value of the first header called `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// How many headers are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.iter().filter(|(n, _)| *n == name.as_bytes()).count()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_keep_their_order_repeats_empty_values_and_any_bytes() {
        let pairs: [(&[u8], &[u8]); 4] = [
            (b":path", b"/sport"),
            (b"x-a", b"1"),
            (b"x-a", b""),
            (b"x-bin", b"\xff\x00"),
        ];
        let headers = Headers::from_pairs(&pairs);
        assert_eq!(headers.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(headers.get(":path"), Some(&b"/sport"[..]));
        assert_eq!(headers.get("x-a"), Some(&b"1"[..]));
        assert_eq!(headers.count("x-a"), 2);
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn spans_outside_the_buffer_are_refused() {
        let span = |name: Range<usize>, value: Range<usize>| Span { name, value };
        assert!(Headers::from_spans(b"ab".to_vec(), vec![span(0..1, 1..2)]).is_some());
        assert!(Headers::from_spans(b"ab".to_vec(), vec![span(0..1, 1..3)]).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = span(1..0, 1..2);
        assert!(Headers::from_spans(b"ab".to_vec(), vec![backwards]).is_none());
    }
}
