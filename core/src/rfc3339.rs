//! RFC 3339 time stamps in UTC (`2026-12-02T22:34:46.123456789Z`), for the times people and
//! SIEMs read in process events. Pure arithmetic on the civil calendar: no clock, no time zone
//! database.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How much of the second a stamp shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// Nanoseconds, when the time has any (`...:46.123456789Z`), else none (`...:46Z`).
    Nanos,
    /// Always three digits, cut, not rounded (`...:46.123Z`): the SIEM stream's times.
    Millis,
    /// None, cut (`...:46Z`): the times of tables and listings.
    Seconds,
}

/// `t` as RFC 3339 in UTC, with nanoseconds when it has any.
pub fn format(t: SystemTime) -> String {
    format_with(t, Fraction::Nanos)
}

/// `t` as RFC 3339 in UTC, its second shown as `fraction` says.
pub fn format_with(t: SystemTime, fraction: Fraction) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos());
            if n == 0 {
                (s, 0)
            } else {
                (s - 1, 1_000_000_000 - n)
            }
        }
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let frac = match fraction {
        Fraction::Nanos if nanos != 0 => format!(".{nanos:09}"),
        Fraction::Nanos | Fraction::Seconds => String::new(),
        Fraction::Millis => format!(".{:03}", nanos / 1_000_000),
    };
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}Z")
}

/// The UTC time an RFC 3339 stamp names (`Z` or a numeric offset; fraction optional).
pub fn parse(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mi, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || hh > 23 || mi > 59 || ss > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let h = num(s.len() - 5..s.len() - 3)?;
            let m = num(s.len() - 2..s.len())?;
            let v = h * 3600 + m * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + hh * 3600 + mi * 60 + ss - offset;
    let at = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Some(at + Duration::from_nanos(nanos.into()))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Serde for `Option<SystemTime>` as an RFC 3339 string or `null`. Reading also takes serde's
/// own `{secs_since_epoch, nanos_since_epoch}` form, which earlier versions wrote.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(*t)),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Struct(SystemTime),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<Either>::deserialize(d)? {
            None => Ok(None),
            Some(Either::Struct(t)) => Ok(Some(t)),
            Some(Either::Text(s)) => parse(&s).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an RFC 3339 time stamp (like 2026-12-02T22:34:46.5Z)"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_is_shown_as_asked_and_cut_not_rounded() {
        let t = UNIX_EPOCH + Duration::new(1_795_361_244, 999_999_999);
        assert_eq!(format_with(t, Fraction::Millis), "2026-11-22T15:27:24.999Z");
        assert_eq!(format_with(t, Fraction::Seconds), "2026-11-22T15:27:24Z");
        let whole = UNIX_EPOCH + Duration::from_secs(1_795_361_244);
        assert_eq!(
            format_with(whole, Fraction::Millis),
            "2026-11-22T15:27:24.000Z"
        );
        assert_eq!(format_with(whole, Fraction::Nanos), "2026-11-22T15:27:24Z");
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_795_361_244, 580_000_000);
        assert_eq!(format(t), "2026-11-22T15:27:24.580000000Z");
        // A leap day, and the day after a century that is not a leap year.
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_secs(4_107_542_400)),
            "2100-03-01T00:00:00Z"
        );
        assert_eq!(
            format(UNIX_EPOCH - Duration::from_nanos(1)),
            "1969-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for secs in [0u64, 1, 86_399, 951_782_400, 1_795_361_244, 4_107_542_400] {
            for nanos in [0u32, 1, 580_000_000, 999_999_999] {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                assert_eq!(parse(&format(t)), Some(t), "{}", format(t));
            }
        }
        assert_eq!(
            parse("1970-01-01T01:00:00+01:00"),
            Some(UNIX_EPOCH),
            "an offset is applied"
        );
        assert_eq!(
            parse("1970-01-01T00:00:00.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(500))
        );
        for bad in [
            "",
            "1970-01-01",
            "1970-13-01T00:00:00Z",
            "1970-01-01T00:00:00",
            "x970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn serde_writes_text_and_reads_both_forms() {
        #[derive(serde::Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "option")]
            at: Option<SystemTime>,
        }
        let t = T {
            at: Some(UNIX_EPOCH + Duration::new(1_795_361_244, 580_000_000)),
        };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(text, r#"{"at":"2026-11-22T15:27:24.580000000Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), t);
        let old = r#"{"at":{"secs_since_epoch":1795361244,"nanos_since_epoch":580000000}}"#;
        assert_eq!(serde_json::from_str::<T>(old).unwrap(), t);
        let none = T { at: None };
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"at":null}"#);
        assert_eq!(serde_json::from_str::<T>(r#"{"at":null}"#).unwrap(), none);
        let err = serde_json::from_str::<T>(r#"{"at":"yesterday"}"#).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}
