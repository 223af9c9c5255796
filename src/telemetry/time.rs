//! RFC 3339 timestamps with microseconds, as the source documents' log lines carry them.

use std::time::{Duration, UNIX_EPOCH};

/// Formats microseconds since the Unix epoch as `2018-06-18T13:22:58.317448Z`; `None` before
/// the epoch or beyond what a timestamp can show.
pub fn rfc3339_micros(micros: i64) -> Option<String> {
    let since_epoch = Duration::from_micros(u64::try_from(micros).ok()?);
    let time = UNIX_EPOCH.checked_add(since_epoch)?;
    Some(humantime::format_rfc3339_micros(time).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_seed_timestamp() {
        // 2018-06-18T13:22:58.317448Z, the first entry of the source documents.
        assert_eq!(
            rfc3339_micros(1_529_328_178_317_448).as_deref(),
            Some("2018-06-18T13:22:58.317448Z")
        );
    }

    #[test]
    fn formats_epoch_and_leap_day() {
        assert_eq!(
            rfc3339_micros(0).as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
        assert_eq!(
            rfc3339_micros(951_782_400_000_001).as_deref(),
            Some("2000-02-29T00:00:00.000001Z")
        );
        assert_eq!(rfc3339_micros(-1), None);
    }
}
