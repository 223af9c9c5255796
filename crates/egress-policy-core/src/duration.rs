//! Durations as configuration strings, in the form Istio and Envoy users write them (`500ms`,
//! `30s`, `5m`, `1h`, combined `1m30s`, or decimal `1.5s`), parsed by `humantime`.

/// Parses a positive duration into microseconds.
pub fn parse_micros(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration like 500ms, 30s, 5m or 1h: {e}"))?;
    i64::try_from(duration.as_micros())
        .ok()
        .filter(|micros| *micros > 0)
        .ok_or_else(|| format!("'{text}' must be at least 1us and at most a few centuries"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_units() {
        assert_eq!(parse_micros("500ms"), Ok(500_000));
        assert_eq!(parse_micros("30s"), Ok(30_000_000));
        assert_eq!(parse_micros("5m"), Ok(300_000_000));
        assert_eq!(parse_micros("1h"), Ok(3_600_000_000));
        assert_eq!(parse_micros("1m30s"), Ok(90_000_000));
        assert_eq!(parse_micros("1.5s"), Ok(1_500_000));
    }

    #[test]
    fn refuses_what_is_not_a_positive_duration() {
        for bad in [
            "",
            "30",
            "s",
            "-1s",
            "0s",
            "99999999999999999999h",
            "500 parsecs",
        ] {
            assert!(parse_micros(bad).is_err(), "{bad}");
        }
    }
}
