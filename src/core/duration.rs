//! Durations as configuration strings, in the form Istio and Envoy users write them: `500ms`,
//! `30s`, `5m`, `1h`.

/// Parses a duration into microseconds.
pub fn parse_micros(text: &str) -> Result<i64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: i64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 500ms, 30s, 5m or 1h"))?;
    let scale = match unit {
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        _ => {
            return Err(format!(
                "'{text}' is not a duration like 500ms, 30s, 5m or 1h"
            ));
        }
    };
    value
        .checked_mul(scale)
        .filter(|micros| *micros > 0)
        .ok_or_else(|| format!("'{text}' must be greater than zero and at most a few centuries"))
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
    }

    #[test]
    fn refuses_what_is_not_a_positive_duration() {
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "0s",
            "10 s",
            "1d",
            "99999999999999999999h",
        ] {
            assert!(parse_micros(bad).is_err(), "{bad}");
        }
    }
}
