//! Durations as scenario files write them: `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or a plain
//! number of seconds such as `"1.5"`.

use std::time::Duration;

/// The longest duration a scenario may ask for: long enough for any run, short enough that
/// adding it to `Instant::now()` cannot overflow.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("{text:?} is negative; durations are 0 or more"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h, as in \"500ms\" or \"2m\""
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (write it as \"500ms\", \"30s\" or \"2m\")"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs > MAX.as_secs_f64() {
        return Err(format!("{text:?} is longer than the limit of 365 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The shortest text that [`parse`] reads back as `d`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if d.subsec_nanos() % 1_000_000 != 0 {
        format!("{}s", d.as_secs_f64())
    } else if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if ms % 60_000 != 0 || ms == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}m", ms / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "s",
            "ten seconds",
            "5 days",
            "-1s",
            "1e400s",
            "99999999999h",
            "NaN",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in ["500ms", "30s", "2m", "90s", "1.25s", "0s"] {
            let parsed = parse(d).unwrap();
            assert_eq!(parse(&format(parsed)), Ok(parsed), "{d}");
        }
    }
}
