//! The one way every command prints: a table, or `-o json` / `-o yaml` from one JSON value,
//! and the cells and names the tables share.
//!
//! Everything printed is a `procguard-core` domain value, read from the server's answer
//! through `procguard_proto::convert` (the one conversion seam); nothing here reads a
//! protobuf message, so every output of a fact shows the same fields.

use crate::Output;
use procguard_core::rfc3339::{self, Fraction};
use procguard_core::{ElementKey, Origin, WorkloadIdentity};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::SystemTime;

/// A workload's text form (`cluster/namespace/kind/name/container`), empty for none.
pub(crate) fn id_text(w: Option<&WorkloadIdentity>) -> String {
    w.map(|w| w.to_string()).unwrap_or_default()
}

/// A time as tables and listings print it: RFC 3339 to the second (`2026-12-03T04:00:00Z`),
/// `null` when absent.
pub(crate) fn ts(t: Option<SystemTime>) -> Value {
    t.map(|t| json!(seconds(t))).unwrap_or(Value::Null)
}

/// A time to the second, as tables and listings print it.
pub(crate) fn seconds(t: SystemTime) -> String {
    rfc3339::format_with(t, Fraction::Seconds)
}

/// A time to the millisecond, as the SIEM stream's lines print it (`...:00.123Z`).
pub(crate) fn millis(t: SystemTime) -> String {
    rfc3339::format_with(t, Fraction::Millis)
}

pub(crate) fn print(
    output: Output,
    value: &Value,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Table | Output::Wide => print!("{}", table()),
    }
    Ok(())
}

/// The server's export document as asked: YAML (its own form, also for `-o table`) or the
/// same document as JSON. Import takes either, since JSON is YAML.
pub(crate) fn export(output: Output, yaml: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let doc: Value = serde_yaml::from_str(yaml)
                .map_err(|e| anyhow::anyhow!("the server's export is not valid YAML: {e}"))?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Yaml | Output::Table | Output::Wide => print!("{yaml}"),
    }
    Ok(())
}

/// A cell as a terminal may show it: control characters (escape sequences a process put in
/// its argv or file name, line breaks) are written as `\u{..}` escapes, never passed through.
pub(crate) fn cell(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `s` in at most `max` characters: the middle is replaced by `…`, keeping more of the end,
/// where paths and workload identities differ most.
pub(crate) fn elide(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max || max < 3 {
        return s.to_string();
    }
    let keep = max - 1;
    let head = keep / 3;
    let tail = keep - head;
    let chars: Vec<char> = s.chars().collect();
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[n - tail..]);
    out
}

pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}

/// An element as people write it: `EXE [(APPLET)] [SCRIPT]`.
pub(crate) fn element_text(e: &ElementKey) -> String {
    e.to_string()
}

/// Origin names (`image`, `writable-layer`, ...), in the domain's order.
pub(crate) fn origin_names(origins: &BTreeSet<Origin>) -> Vec<&'static str> {
    origins.iter().map(|o| o.as_str()).collect()
}

/// An element's origins in a table cell; `-` for none (an element that runs from no drift
/// origin, stored before origins or added by name).
pub(crate) fn origins_cell(origins: &BTreeSet<Origin>) -> String {
    if origins.is_empty() {
        return "-".to_string();
    }
    origin_names(origins).join(",")
}

/// An element's approved contents in a table cell: each hash's first 12 hex digits, newest
/// last; `any` for an element not pinned to any content (matched by name alone).
pub(crate) fn content_cell(approved: &[String]) -> String {
    if approved.is_empty() {
        return "any".to_string();
    }
    approved
        .iter()
        .map(|h| &h[..h.len().min(12)])
        .collect::<Vec<_>>()
        .join(",")
}

/// A point in time as people type it: RFC 3339 (`2026-12-03T04:00:00Z`), or a duration ago
/// (`90s`, `30m`, `2h`, `7d`).
pub(crate) fn time_arg(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(ago) => std::time::SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("'{s}' reaches before the epoch")),
        Err(_) => Err(format!(
            "'{s}' is neither a time (2026-12-03T04:00:00Z) nor a duration ago (30m, 2h, 7d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn times_print_as_humantime_printed_them() {
        // The CLI printed its times with humantime before they were core::rfc3339's; every
        // output must stay byte for byte what it was.
        for (secs, nanos) in [
            (0, 0),
            (1, 1),
            (951_782_400, 999_999_999),
            (1_796_270_400, 123_456_789),
            (1_796_270_400, 1_000_000),
            (4_102_444_799, 999_000_000),
        ] {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(seconds(t), humantime::format_rfc3339_seconds(t).to_string());
            assert_eq!(millis(t), humantime::format_rfc3339_millis(t).to_string());
        }
    }

    #[test]
    fn times_are_read_as_instants_or_durations_ago() {
        assert_eq!(
            time_arg("2026-12-03T04:00:00Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_796_270_400)
        );
        let ago = SystemTime::now()
            .duration_since(time_arg("2h").unwrap())
            .unwrap();
        assert!(
            ago > Duration::from_secs(7190) && ago < Duration::from_secs(7260),
            "{ago:?}"
        );
        let e = time_arg("yesterday").unwrap_err();
        assert!(e.contains("30m, 2h, 7d"), "{e}");
    }
}
