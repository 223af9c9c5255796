//! RFC 3339 timestamps with microseconds, as the source documents' log lines carry them.

/// Formats microseconds since the Unix epoch as `2018-06-18T13:22:58.317448Z`; `None` before
/// the epoch or beyond year 9999.
pub fn rfc3339_micros(micros: i64) -> Option<String> {
    let mut out = String::with_capacity(27);
    push_rfc3339_micros(&mut out, micros).then_some(out)
}

/// Appends `,"time":"…"` to an entry being written; nothing without a time, or for one that
/// has no timestamp.
pub fn push_time_field(out: &mut String, micros: Option<i64>) {
    if let Some(micros) = micros {
        let mark = out.len();
        out.push_str(",\"time\":\"");
        if push_rfc3339_micros(out, micros) {
            out.push('"');
        } else {
            out.truncate(mark);
        }
    }
}

/// Appends the timestamp of [`rfc3339_micros`] to `out`; `false` (and nothing written) when it
/// has none. Written per log entry, so without the formatting machinery: the civil date from the
/// day number by Hinnant's `civil_from_days`, then fixed-width digits.
pub fn push_rfc3339_micros(out: &mut String, micros: i64) -> bool {
    // 9999-12-31T23:59:59.999999Z
    const LAST: i64 = 253_402_300_799_999_999;
    if !(0..=LAST).contains(&micros) {
        return false;
    }
    let (days, micros_of_day) = (micros / 86_400_000_000, micros % 86_400_000_000);
    let (year, month, day) = civil_from_days(days);
    let seconds_of_day = micros_of_day / 1_000_000;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text, 0..4, year);
    put_digits(&mut text, 5..7, month);
    put_digits(&mut text, 8..10, day);
    put_digits(&mut text, 11..13, seconds_of_day / 3600);
    put_digits(&mut text, 14..16, seconds_of_day / 60 % 60);
    put_digits(&mut text, 17..19, seconds_of_day % 60);
    put_digits(&mut text, 20..26, micros_of_day % 1_000_000);
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    true
}

/// Writes `value` into `text[range]` as decimal digits, zero-padded to its width.
fn put_digits(text: &mut [u8], range: std::ops::Range<usize>, mut value: i64) {
    for digit in text.get_mut(range).unwrap_or_default().iter_mut().rev() {
        // value % 10 is in 0..10: the cast cannot truncate.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month (1–12) and day (1–31) of a day number since 1970-01-01, for days ≥ 0.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        assert_eq!(
            rfc3339_micros(253_402_300_799_999_999).as_deref(),
            Some("9999-12-31T23:59:59.999999Z")
        );
        assert_eq!(rfc3339_micros(253_402_300_800_000_000), None);
    }

    /// The same text as humantime's formatter, over four centuries of days and every part of a
    /// day.
    #[test]
    fn agrees_with_humantime_everywhere() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut micros: i64 = 0;
        while micros < 14_000_000_000_000_000 {
            let expected = humantime::format_rfc3339_micros(
                UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap()),
            )
            .to_string();
            assert_eq!(rfc3339_micros(micros).unwrap(), expected);
            micros += 86_400_000_000 / 7 * 3 + 1_234_567;
        }
    }
}
