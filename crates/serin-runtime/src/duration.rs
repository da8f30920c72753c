//! Go's duration syntax (`time.ParseDuration` and `Duration.String`), total: every input gives a
//! value or an error saying what is wrong, never a panic. Durations here are never negative; the
//! largest is Go's (2^63 - 1 nanoseconds, about 292 years). Pure.

use std::{fmt, time::Duration};

/// The largest duration Go can hold, in nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// The longest a controller waits before looking at an object again. Longer intervals are
/// legal in a spec, but the runtime's timer wheel panics on delays beyond about two years, and a
/// wake-up once a week costs nothing.
pub const MAX_REQUEUE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A delay safe to hand to the controller runtime's scheduler (at most [`MAX_REQUEUE`]).
pub fn requeue_delay(d: Duration) -> Duration {
    d.min(MAX_REQUEUE)
}

/// Why a duration did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Empty, or not a number followed by a unit.
    Invalid(String),
    /// A number without a unit (`30`).
    MissingUnit(String),
    /// A unit Go does not know (`1d`).
    UnknownUnit { unit: String, text: String },
    /// A negative duration (`-1s`), which no field of serin takes.
    Negative(String),
    /// Larger than Go's largest duration (about 292 years).
    Overflow(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(text) => write!(
                f,
                "invalid duration {text:?} (use a number and a unit: 30s, 1m, 1h30m, 500ms)"
            ),
            Self::MissingUnit(text) => {
                write!(f, "missing unit in duration {text:?} (use ns, us, ms, s, m or h)")
            }
            Self::UnknownUnit { unit, text } => {
                write!(
                    f,
                    "unknown unit {unit:?} in duration {text:?} (use ns, us, ms, s, m or h)"
                )
            }
            Self::Negative(text) => write!(f, "negative duration {text:?}"),
            Self::Overflow(text) => write!(f, "duration {text:?} is too large (at most 2562047h)"),
        }
    }
}

impl std::error::Error for DurationError {}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration: `0`, or a sequence of decimal numbers (with an optional fraction), each
/// with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`): `30s`, `1m30s`, `1.5h`, `500ms`. A leading
/// `+` is accepted as Go does; a negative value is an error.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let (negative, body) = match trimmed.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    match parse_unsigned(body, text)? {
        d if negative && !d.is_zero() => Err(DurationError::Negative(text.to_owned())),
        d => Ok(d),
    }
}

fn parse_unsigned(mut rest: &str, original: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(original.to_owned());
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (whole, tail) = rest.split_at(whole_len);
        let (fraction, tail) = match tail.strip_prefix('.') {
            Some(after) => {
                let len = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
                after.split_at(len)
            }
            None => ("", tail),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(original.to_owned()));
        }
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            text: original.to_owned(),
        })?;
        let overflow = || DurationError::Overflow(original.to_owned());
        // Leading zeros aside, more than 20 digits cannot fit.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 20 {
            return Err(overflow());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
        // The fraction, to the nanosecond (further digits are dropped, as Go does).
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        if total > MAX_NANOS {
            return Err(overflow());
        }
        rest = tail;
    }
    let secs = (total / 1_000_000_000) as u64;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration as Go's `Duration.String` does: `0s`, `500ms`, `1.5s`, `10m0s`, `1h0m0s`.
/// Durations beyond Go's range are printed all the same.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (unit, per) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("\u{b5}s", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(nanos, per));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = decimal(nanos % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / per` with the fraction's trailing zeros dropped.
fn decimal(value: u128, per: u128) -> String {
    let (whole, fraction) = (value / per, value % per);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = per.ilog10() as usize;
    let fraction = format!("{fraction:0width$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_parse() {
        let cases = [
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5m", Duration::from_secs(90)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("500ms", Duration::from_millis(500)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("1µs", Duration::from_micros(1)),
            ("1μs", Duration::from_micros(1)),
            ("0.0000000001s", Duration::ZERO),
            ("00000000000000000000000001s", Duration::from_secs(1)),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
            ("9223372036854775807ns", Duration::new(9_223_372_036, 854_775_807)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", "invalid duration \"\""),
            ("s", "invalid duration \"s\""),
            (".s", "invalid duration \".s\""),
            ("30", "missing unit in duration \"30\""),
            ("1d", "unknown unit \"d\" in duration \"1d\""),
            ("1m30", "missing unit in duration \"1m30\""),
            ("-1s", "negative duration \"-1s\""),
            (
                "99999999999999999999m",
                "duration \"99999999999999999999m\" is too large",
            ),
            ("2562048h", "is too large"),
            ("9223372036854775808ns", "is too large"),
            ("1e3s", "unknown unit \"e\""),
            ("340282366920938463463374607431768211456h", "is too large"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn formats_as_go_does() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(176), "176ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(600), "10m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::new(3723, 4_000_000), "1h2m3.004s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want);
            assert_eq!(parse(want), Ok(d), "{want} parses back");
        }
    }

    #[test]
    fn any_text_gives_a_value_or_an_error() {
        // A cheap exhaustive pass over short strings of the characters that matter.
        let alphabet = ['0', '9', '.', 'h', 'm', 's', 'n', 'u', '-', '+', 'µ'];
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            texts = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            for text in &texts {
                let _ = parse(text);
            }
        }
        for digits in 1..60 {
            let text = format!("{}h", "9".repeat(digits));
            assert_eq!(parse(&text).is_ok(), digits <= 6, "{text}");
        }
    }
}
