//! Durations in flags and environment variables, written as Go and Kubernetes write them
//! (`90s`, `1h30m`, `1.5h`, `500ms`): the grammar of Go's `time.ParseDuration`, the same one
//! Kubernetes `Duration` fields are read with, minus negative values. Kept here, free of
//! Kubernetes, so both processes parse their flags alike; a test pins it to the CRDs' reading.

use std::time::Duration;

const UNITS: &str = "expected one of 'ns', 'us', '\u{00b5}s', 'ms', 's', 'm', or 'h'";

/// Parses a non-negative Go-style duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = |reason: String| format!("invalid duration {s:?}: {reason}");
    if s.starts_with('-') {
        return Err(format!("duration {s:?} must not be negative"));
    }
    let mut rest = s.trim_start_matches('+').trim_start_matches('-');
    let mut total = Duration::ZERO;
    while !rest.is_empty() && rest != "0" {
        let unit_start = rest
            .find(char::is_alphabetic)
            .ok_or_else(|| invalid(format!("missing a unit: {UNITS}")))?;
        let (number, tail) = rest.split_at(unit_start);
        let number: f64 = number
            .parse()
            .map_err(|e| invalid(format!("invalid floating-point number: {e}")))?;
        let unit_end = tail
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        rest = tail;
        let unit = match unit {
            "ns" => Duration::from_nanos(1),
            "us" | "\u{00b5}s" | "\u{03bc}s" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(invalid(format!("invalid unit: {UNITS}"))),
        };
        let part = Duration::try_from_secs_f64(unit.as_secs_f64() * number)
            .map_err(|e| invalid(e.to_string()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| invalid("too long".into()))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        for (text, secs) in [
            ("90s", 90.0),
            ("1h", 3600.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("0", 0.0),
            ("", 0.0),
            ("+5m", 300.0),
            ("2us", 0.000_002),
            ("3\u{00b5}s", 0.000_003),
        ] {
            assert_eq!(
                parse_duration(text).map(|d| d.as_secs_f64()),
                Ok(secs),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_or_negative_durations_are_refused_not_panics() {
        for text in [
            "-5s",
            "-0s",
            "5",
            "5d",
            "abc",
            "1e3s",
            "5s-3s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert_eq!(
            parse_duration("-1h"),
            Err("duration \"-1h\" must not be negative".into())
        );
    }

    /// Whatever the Kubernetes `Duration` (the CRDs' fields) reads as a non-negative duration,
    /// this reads the same; whatever it refuses, this refuses.
    #[test]
    fn agrees_with_the_kubernetes_reading() {
        for text in [
            "90s",
            "1h",
            "1h30m",
            "1.5h",
            "500ms",
            "0",
            "",
            "+5m",
            "2us",
            "3\u{00b5}s",
            "4\u{03bc}s",
            "7ns",
            "1h1m1s1ms",
            "0.25s",
            "-5s",
            "5",
            "5d",
            "abc",
            "1e3s",
            "s",
            ".5s",
            "5.s",
            "1h-",
            "++5s",
            "+-5s",
        ] {
            let kube: Result<portcullis_crds::Duration, _> = text.parse();
            let ours = parse_duration(text);
            match kube {
                Ok(d) if !d.is_negative() => {
                    assert_eq!(ours, Ok(Duration::from(d)), "{text}");
                }
                _ => assert!(ours.is_err(), "{text}"),
            }
        }
    }
}
