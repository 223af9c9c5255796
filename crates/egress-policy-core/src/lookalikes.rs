//! Characters a server may read as a path delimiter though they are not one: the table in
//! `lookalikes.tsv` (Unicode compatibility forms and Windows best-fit mappings of `/`, `\`, `.`,
//! `%`, `;`, `?`, `#`, `:`). A decoded path holding one is refused
//! ([`crate::request::Rejection::LookalikeDelimiter`]).
//!
//! The table is data, read when the crate is compiled: a row that does not parse, or rows out of
//! order, fail the build, never a request.

/// The table as shipped: comments (`#`) and one row per code point.
const TABLE: &str = include_str!("lookalikes.tsv");

const COUNT: usize = count_rows(TABLE.as_bytes());

/// Every look-alike's code point, ascending.
static CODE_POINTS: [u32; COUNT] = parse_rows(TABLE.as_bytes());

/// Whether `c` may be read as a path delimiter by a server that normalises Unicode (NFKC) or
/// converts the path to a Windows ANSI code page.
pub fn is_lookalike_delimiter(c: char) -> bool {
    !c.is_ascii() && CODE_POINTS.binary_search(&u32::from(c)).is_ok()
}

/// Every code point of the table, ascending (for tests and tools).
pub fn code_points() -> &'static [u32] {
    &CODE_POINTS
}

#[allow(clippy::indexing_slicing)] // compile time only, as below
const fn is_row(bytes: &[u8], start: usize) -> bool {
    start + 1 < bytes.len() && bytes[start] == b'U' && bytes[start + 1] == b'+'
}

#[allow(clippy::indexing_slicing)] // compile time only, as below
const fn next_line(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && bytes[at] != b'\n' {
        at += 1;
    }
    at + 1
}

// Compile-time only: indexes are bounds-checked by the loop conditions, and a panic here is a
// build error naming the bad table, never a request's.
#[allow(clippy::indexing_slicing)]
const fn count_rows(bytes: &[u8]) -> usize {
    let mut rows = 0;
    let mut at = 0;
    while at < bytes.len() {
        if is_row(bytes, at) {
            rows += 1;
        }
        at = next_line(bytes, at);
    }
    rows
}

#[allow(clippy::indexing_slicing, clippy::panic)]
const fn parse_rows(bytes: &[u8]) -> [u32; COUNT] {
    let mut out = [0u32; COUNT];
    let mut row = 0;
    let mut at = 0;
    while at < bytes.len() {
        if is_row(bytes, at) {
            let mut i = at + 2;
            let mut value: u32 = 0;
            let mut digits = 0;
            while i < bytes.len() && bytes[i] != b'\t' {
                let digit = match bytes[i] {
                    b'0'..=b'9' => bytes[i] - b'0',
                    b'A'..=b'F' => bytes[i] - b'A' + 10,
                    _ => panic!("lookalikes.tsv: a code point is not upper-case hex"),
                };
                value = value * 16 + digit as u32;
                digits += 1;
                i += 1;
            }
            if digits < 4 || digits > 6 || i >= bytes.len() {
                panic!("lookalikes.tsv: a row is not `U+XXXX<TAB>...`");
            }
            if row > 0 && value <= out[row - 1] {
                panic!("lookalikes.tsv: code points are not ascending");
            }
            if value < 0x80 || value > 0x10FFFF {
                panic!("lookalikes.tsv: a code point is ASCII or past U+10FFFF");
            }
            out[row] = value;
            row += 1;
        }
        at = next_line(bytes, at);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization;

    const DELIMITERS: &[char] = &['/', '\\', '.', '%', ';', '?', '#', ':'];

    struct Row {
        code_point: u32,
        reads_as: String,
        source: String,
    }

    fn rows() -> Vec<Row> {
        TABLE
            .lines()
            .filter(|line| line.starts_with("U+"))
            .map(|line| {
                let columns: Vec<&str> = line.split('\t').collect();
                assert_eq!(columns.len(), 4, "{line}");
                Row {
                    code_point: u32::from_str_radix(&columns[0][2..], 16).unwrap(),
                    reads_as: columns[1].to_owned(),
                    source: columns[2].to_owned(),
                }
            })
            .collect()
    }

    /// Every character whose NFKC form holds a delimiter, from the Unicode data the
    /// `unicode-normalization` crate carries.
    fn nfkc_lookalikes() -> Vec<(u32, String)> {
        (0x80..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter_map(|c| {
                let normal: String = std::iter::once(c).nfkc().collect();
                normal
                    .contains(DELIMITERS)
                    .then_some((u32::from(c), normal))
            })
            .collect()
    }

    #[test]
    fn the_nfkc_rows_are_exactly_the_characters_whose_compatibility_form_holds_a_delimiter() {
        let table: Vec<(u32, String)> = rows()
            .into_iter()
            .filter(|row| row.source.starts_with("NFKC"))
            .map(|row| (row.code_point, row.reads_as))
            .collect();
        assert_eq!(table, nfkc_lookalikes());
    }

    #[test]
    fn every_best_fit_row_reads_as_a_delimiter_and_names_its_code_pages() {
        let best_fit: Vec<Row> = rows()
            .into_iter()
            .filter(|row| row.source.contains("best-fit "))
            .collect();
        assert!(best_fit.len() >= 19, "{}", best_fit.len());
        for row in best_fit {
            let pages = row.source.rsplit("best-fit ").next().unwrap();
            assert!(
                pages.split(',').all(|p| p.parse::<u16>().is_ok()),
                "{pages}"
            );
            assert!(row.reads_as.contains(DELIMITERS), "{}", row.reads_as);
        }
    }

    #[test]
    fn the_compiled_table_is_every_row_of_the_data() {
        let parsed: Vec<u32> = rows().iter().map(|row| row.code_point).collect();
        assert_eq!(code_points(), parsed.as_slice());
    }

    #[test]
    fn the_reported_lookalikes_are_in_the_table_and_ascii_never_is() {
        // From the attack report: fullwidth solidus and full stop, division slash, set minus;
        // and the best-fit classics: yen and won signs read as '\' in Japanese and Korean.
        for c in [
            '\u{FF0F}', '\u{FF0E}', '\u{2215}', '\u{2216}', '\u{FF3C}', '\u{00A5}', '\u{20A9}',
            '\u{2024}', '\u{FE52}', '\u{FF1F}', '\u{FF03}', '\u{FF05}', '\u{FF1B}', '\u{FF1A}',
        ] {
            assert!(is_lookalike_delimiter(c), "U+{:04X}", u32::from(c));
        }
        for c in (0..0x80).filter_map(char::from_u32) {
            assert!(!is_lookalike_delimiter(c));
        }
        assert!(!is_lookalike_delimiter('é'));
        assert!(!is_lookalike_delimiter('ö'));
    }
}
