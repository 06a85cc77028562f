//! Human-friendly durations for the command line: `250ms`, `10s`, `5m`, `2h`, `1m30s`; a bare
//! number is seconds.

use std::time::Duration;

use crate::error::SimError;

/// Parses a duration such as `10s`, `250ms`, `1m30s` or `2.5s`.
pub fn parse_duration(raw: &str) -> Result<Duration, SimError> {
    let bad = || {
        SimError::config(format!(
            "{raw:?} is not a duration (e.g. 250ms, 10s, 5m, 1h)"
        ))
    };
    let text = raw.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if number_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let ok = |raw: &str| parse_duration(raw).unwrap();
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("2.5s"), Duration::from_millis(2500));
        assert_eq!(ok("3"), Duration::from_secs(3));
        for bad in ["", "s", "10x", "-1s", "-1", "1s-", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
