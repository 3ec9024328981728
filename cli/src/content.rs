//! A content verdict as every output prints it (`-o json`, `incidents get`, each `watch`
//! format), and element content changes as `baselines diff` and `import --dry-run` print them.
//!
//! The verdict is the domain's [`ContentCheck`] (converted from protobuf in
//! `procguard_proto::convert::content`), serialised by serde under its domain names
//! (`{"verdict": "modified", "sha256": …, "approved_sha256": […]}`); a record without one (a
//! sensor finding, an older server) prints `null` / `unknown`, never a guess.

use procguard_core::content::ContentChange;
use procguard_core::ContentCheck;
use serde_json::{json, Value};

/// The first 12 hex digits of a content hash, as `baselines get` shows them.
pub fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// The verdict as JSON: the domain value, or `null`.
pub fn json(c: Option<&ContentCheck>) -> Value {
    c.and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(Value::Null)
}

/// The verdict for people: `modified (ran sha256 3d9f…; approved 1a2b…, 4c5d…)`.
pub fn text(c: Option<&ContentCheck>) -> String {
    let Some(c) = c else {
        return "unknown".into();
    };
    let ran = match &c.sha256 {
        Some(h) => format!("ran sha256 {}", short(h)),
        None => "ran unhashed".into(),
    };
    let approved = if c.approved_sha256.is_empty() {
        "no approved content".to_string()
    } else {
        format!(
            "approved {}",
            c.approved_sha256
                .iter()
                .map(|h| short(h))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!("{} ({ran}; {approved})", c.verdict)
}

/// Element content changes as JSON: each element (`EXE (APPLET) SCRIPT`) with the contents
/// it gains and loses, in full.
pub fn changes_json(changes: &[ContentChange]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| {
                json!({
                    "element": crate::element_text(&c.element),
                    "sha256_added": c.added,
                    "sha256_removed": c.removed,
                })
            })
            .collect(),
    )
}

/// One element's content change in a line: `sha256 +3d9f… -1a2b…`.
pub fn change_text(c: &ContentChange) -> String {
    let added = c.added.iter().map(|h| format!("+{}", short(h)));
    let removed = c.removed.iter().map(|h| format!("-{}", short(h)));
    format!(
        "sha256 {}",
        added.chain(removed).collect::<Vec<_>>().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::ContentVerdict;

    #[test]
    fn verdicts_print_their_facts() {
        let modified = ContentCheck {
            verdict: ContentVerdict::Modified,
            sha256: Some("b".repeat(64)),
            approved_sha256: vec!["a".repeat(64)],
        };
        assert_eq!(
            text(Some(&modified)),
            "modified (ran sha256 bbbbbbbbbbbb; approved aaaaaaaaaaaa)"
        );
        assert_eq!(json(Some(&modified))["verdict"], "modified");
        assert_eq!(json(Some(&modified))["sha256"], "b".repeat(64));
        assert_eq!(json(None), Value::Null);
        let new = ContentCheck {
            verdict: ContentVerdict::NewElement,
            sha256: None,
            approved_sha256: vec![],
        };
        assert_eq!(
            text(Some(&new)),
            "new-element (ran unhashed; no approved content)"
        );
        let change = ContentChange {
            element: "/bin/sh".parse().unwrap(),
            added: vec!["c".repeat(64)],
            removed: vec!["a".repeat(64)],
        };
        assert_eq!(change_text(&change), "sha256 +cccccccccccc -aaaaaaaaaaaa");
    }
}
