//! Baselines as YAML, for GitOps: the export format, and an import that validates everything
//! before it changes anything.
//!
//! ```yaml
//! apiVersion: procguard.io/v1
//! kind: BaselineList
//! items:
//! - workload: {cluster: prod, namespace: shop, kind: deployment, name: web, container: nginx}
//!   state: enforced
//!   labels: {app: web}
//!   elements:
//!   - exe: /usr/sbin/nginx
//!     sha256: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
//!     origins: [image]
//!   - exe: /usr/bin/python3
//!     script: /app/health.py
//!     status: approved
//! ```
//!
//! `sha256` lists the element's approved contents (lowercase hex, at most
//! [`APPROVED_SHA256_CAP`]); an element without it is matched by name alone, as one added by
//! hand. `origins` lists the origins the element may run from (`image`, `writable-layer`,
//! `volume`, `fileless`, `host`, `unknown`); a drift origin listed there is a person's
//! approval of that element from there, and an element without `origins` runs from no drift
//! origin. Unknown fields are errors (a typo must not silently drop an element). Every problem is
//! reported with its location (`items[2].elements[0].exe`), all of them at once.

use procguard_core::baseline::{Provenance, APPROVED_SHA256_CAP};
use procguard_core::content::is_sha256;
use procguard_core::{
    Baseline, BaselineState, Element, ElementKey, ElementStatus, Origin, WorkloadIdentity,
    WorkloadKind,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// The document's apiVersion.
pub const API_VERSION: &str = "procguard.io/v1";
/// The document's kind.
pub const KIND: &str = "BaselineList";
/// Longest executable or script path accepted.
pub const MAX_PATH: usize = 4096;

/// A whole document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaselineList {
    /// Always `procguard.io/v1`.
    pub api_version: String,
    /// Always `BaselineList`.
    pub kind: String,
    /// Baselines.
    #[serde(default)]
    pub items: Vec<BaselineDoc>,
}

/// One baseline.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineDoc {
    /// Whose.
    pub workload: WorkloadDoc,
    /// learning, pending-review or enforced.
    pub state: String,
    /// Workload labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Elements.
    #[serde(default)]
    pub elements: Vec<ElementDoc>,
}

/// A workload identity.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadDoc {
    /// Cluster.
    pub cluster: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Kind (deployment, statefulset, ...).
    pub kind: String,
    /// Workload name.
    pub name: String,
    /// Container name.
    #[serde(default)]
    pub container: String,
}

/// One element.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementDoc {
    /// Executable path inside the container.
    pub exe: String,
    /// Applet of a multi-call binary (busybox `wget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applet: Option<String>,
    /// What an interpreter, shell or loader ran: a script path (absolute or as invoked),
    /// `[inline]`, `-m MODULE`, or the loaded program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// learned, approved (default), needs-review or rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Approved contents: lowercase hex sha256 values, oldest first. Absent: not pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sha256: Vec<String>,
    /// Origins it may run from (`image`, `writable-layer`, `volume`, ...). Absent: none that
    /// is drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
}

fn status_name(s: ElementStatus) -> &'static str {
    match s {
        ElementStatus::Learned => "learned",
        ElementStatus::Approved => "approved",
        ElementStatus::NeedsReview => "needs-review",
        ElementStatus::Rejected => "rejected",
    }
}

/// Renders baselines as a YAML document.
pub fn export(baselines: &[Baseline]) -> String {
    let list = BaselineList {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        items: baselines
            .iter()
            .map(|b| BaselineDoc {
                workload: WorkloadDoc {
                    cluster: b.workload.cluster.clone(),
                    namespace: b.workload.namespace.clone(),
                    kind: b.workload.kind.to_string(),
                    name: b.workload.workload_name.clone(),
                    container: b.workload.container_name.clone(),
                },
                state: b.state.as_str().to_string(),
                labels: b.labels.clone(),
                elements: b
                    .elements
                    .iter()
                    .map(|(k, e)| ElementDoc {
                        exe: k.exe_path.clone(),
                        applet: (!k.applet.is_empty()).then(|| k.applet.clone()),
                        script: (!k.script_path.is_empty()).then(|| k.script_path.clone()),
                        status: (e.status != ElementStatus::Approved)
                            .then(|| status_name(e.status).to_string()),
                        sha256: e.approved_sha256.clone(),
                        origins: e.origins.iter().map(|o| o.as_str().to_string()).collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_yaml::to_string(&list).expect("plain data always serialises")
}

/// An executable path: absolute, or the sensor's `[unreadable]` (an export of a baseline that
/// learned one must import again).
fn check_path(errors: &mut Vec<String>, at: String, p: &str) {
    if !p.starts_with('/') && p != procguard_core::process::UNREADABLE_EXE {
        errors.push(format!(
            "{at}: must be an absolute path (start with '/') or '{}', got '{p}'",
            procguard_core::process::UNREADABLE_EXE
        ));
    } else {
        check_text(errors, at, p);
    }
}

/// A script, applet or loaded program: what argv named, so any text but empty, over-long or
/// with a NUL. Other control characters are accepted: a file name or argv may hold them (a
/// newline, an escape), the sensor learns them as they are, and the export writes them
/// escaped; refusing them would let whoever ran such a name during training make the whole
/// exported document unimportable. A NUL cannot come from the kernel (paths and arguments
/// end at one).
fn check_text(errors: &mut Vec<String>, at: String, p: &str) {
    if p.is_empty() {
        errors.push(format!(
            "{at}: must not be empty (leave the field out instead)"
        ));
    } else if p.len() > MAX_PATH {
        errors.push(format!("{at}: longer than {MAX_PATH} bytes"));
    } else if p.contains('\0') {
        errors.push(format!("{at}: contains a NUL character"));
    }
}

/// Parses and validates a document into baselines; every problem is listed.
pub fn parse(yaml: &str, now: SystemTime) -> Result<Vec<Baseline>, Vec<String>> {
    // Only broken YAML stops the reading: every other problem is collected with its location,
    // and each part of the document (header, item, element) is read on its own so that one
    // malformed part does not hide the problems of the others.
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| {
        vec![format!(
            "not a valid BaselineList document: {e} (export one with 'procguardctl baselines export' to see the format)"
        )]
    })?;
    let mut errors = Vec::new();
    let head: Option<ListHead> = read_part(&mut errors, "document", doc.clone(), LIST_FIELDS);
    let items = match &head {
        Some(h) => h.items.clone(),
        None => salvage_list(&doc, "items"),
    };
    if let Some(h) = &head {
        if h.api_version != API_VERSION {
            errors.push(format!(
                "apiVersion: must be '{API_VERSION}', got '{}'",
                h.api_version
            ));
        }
        if h.kind != KIND {
            errors.push(format!("kind: must be '{KIND}', got '{}'", h.kind));
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, raw) in items.into_iter().enumerate() {
        let Some(item) = read_part::<ItemHead>(
            &mut errors,
            &format!("items[{i}]"),
            raw.clone(),
            ITEM_FIELDS,
        ) else {
            // The elements of an item whose own fields are wrong are still checked.
            for (j, e) in salvage_list(&raw, "elements").into_iter().enumerate() {
                let _: Option<ElementDoc> = read_part(
                    &mut errors,
                    &format!("items[{i}].elements[{j}]"),
                    e,
                    ELEMENT_FIELDS,
                );
            }
            continue;
        };
        let elements: Vec<(usize, ElementDoc)> = item
            .elements
            .iter()
            .enumerate()
            .filter_map(|(j, e)| {
                read_part(
                    &mut errors,
                    &format!("items[{i}].elements[{j}]"),
                    e.clone(),
                    ELEMENT_FIELDS,
                )
                .map(|d| (j, d))
            })
            .collect();
        let w = &item.workload;
        let kind = match w.kind.parse::<WorkloadKind>() {
            Ok(k) => k,
            Err(e) => {
                errors.push(format!("items[{i}].workload.kind: {e}"));
                continue;
            }
        };
        let id = WorkloadIdentity::new(&w.cluster, &w.namespace, kind, &w.name, &w.container);
        if let Err(e) = id.validate() {
            errors.push(format!("items[{i}].workload: {e}"));
            continue;
        }
        if !seen.insert(id.clone()) {
            errors.push(format!(
                "items[{i}].workload: '{id}' appears more than once"
            ));
        }
        let state = match item.state.as_str() {
            "learning" => BaselineState::Learning,
            "pending-review" => BaselineState::PendingReview,
            "enforced" => BaselineState::Enforced,
            other => {
                errors.push(format!(
                    "items[{i}].state: must be learning, pending-review or enforced, got '{other}'"
                ));
                continue;
            }
        };
        let mut b = Baseline::new(id, now);
        b.state = state;
        b.labels = item.labels.clone();
        for (j, e) in &elements {
            let j = *j;
            check_path(&mut errors, format!("items[{i}].elements[{j}].exe"), &e.exe);
            if let Some(s) = &e.script {
                check_text(&mut errors, format!("items[{i}].elements[{j}].script"), s);
            }
            if let Some(a) = &e.applet {
                check_text(&mut errors, format!("items[{i}].elements[{j}].applet"), a);
                if a.contains('/') {
                    errors.push(format!(
                        "items[{i}].elements[{j}].applet: an applet is a name, not a path; got '{a}'"
                    ));
                }
            }
            let status = match e.status.as_deref().unwrap_or("approved") {
                "learned" => ElementStatus::Learned,
                "approved" => ElementStatus::Approved,
                "needs-review" => ElementStatus::NeedsReview,
                "rejected" => ElementStatus::Rejected,
                other => {
                    errors.push(format!(
                        "items[{i}].elements[{j}].status: must be learned, approved, needs-review or rejected, got '{other}'"
                    ));
                    continue;
                }
            };
            let key = ElementKey {
                exe_path: e.exe.clone(),
                applet: e.applet.clone().unwrap_or_default(),
                script_path: e.script.clone().unwrap_or_default(),
            };
            let mut element = Element {
                status,
                review_reasons: vec![],
                provenance: Provenance::new(now),
                manual: true,
                approved_sha256: Vec::new(),
                origins: BTreeSet::new(),
            };
            for (n, o) in e.origins.iter().enumerate() {
                match o.parse::<Origin>() {
                    Ok(o) => {
                        element.origins.insert(o);
                    }
                    Err(why) => errors.push(format!(
                        "items[{i}].elements[{j}].origins[{n}]: element '{key}': {why}"
                    )),
                }
            }
            if e.sha256.len() > APPROVED_SHA256_CAP {
                errors.push(format!(
                    "items[{i}].elements[{j}].sha256: at most {APPROVED_SHA256_CAP} approved contents per element, got {}",
                    e.sha256.len()
                ));
            }
            for (n, h) in e.sha256.iter().enumerate() {
                if is_sha256(h) {
                    element.approve_content(h);
                } else {
                    errors.push(format!(
                        "items[{i}].elements[{j}].sha256[{n}]: must be 64 lowercase hex digits, got '{h}'"
                    ));
                }
            }
            if b.elements.insert(key, element).is_some() {
                errors.push(format!(
                    "items[{i}].elements[{j}]: '{}' appears more than once",
                    e.exe
                ));
            }
        }
        out.push(b);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The document's header, with its items still unread.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListHead {
    api_version: String,
    kind: String,
    #[serde(default)]
    items: Vec<serde_yaml::Value>,
}

/// One item, with its elements still unread.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemHead {
    workload: WorkloadDoc,
    state: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    elements: Vec<serde_yaml::Value>,
}

/// The fields each part of the document may have: after a part failed to read, it is read
/// again with only these, to check its values too (the structs' `deny_unknown_fields` decides
/// what is valid).
const LIST_FIELDS: &[&str] = &["apiVersion", "kind", "items"];
const ITEM_FIELDS: &[&str] = &["workload", "state", "labels", "elements"];
const ELEMENT_FIELDS: &[&str] = &["exe", "applet", "script", "status", "sha256", "origins"];

/// Reads one part of the document. A problem is recorded at `at`; when it was only unknown
/// fields, the part is read again without them, so that its values are still checked.
fn read_part<T: serde::de::DeserializeOwned>(
    errors: &mut Vec<String>,
    at: &str,
    v: serde_yaml::Value,
    known: &[&str],
) -> Option<T> {
    match serde_yaml::from_value(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(format!("{at}: {e}"));
            let serde_yaml::Value::Mapping(mut fields) = v else {
                return None;
            };
            fields.retain(|k, _| k.as_str().is_some_and(|k| known.contains(&k)));
            serde_yaml::from_value(serde_yaml::Value::Mapping(fields)).ok()
        }
    }
}

/// The list under `key` of a part that did not read whole (so that its children are still
/// checked); empty when there is none.
fn salvage_list(v: &serde_yaml::Value, key: &str) -> Vec<serde_yaml::Value> {
    v.get(key)
        .and_then(serde_yaml::Value::as_sequence)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: procguard.io/v1
kind: BaselineList
items:
- workload: {cluster: prod, namespace: shop, kind: deployment, name: web, container: nginx}
  state: enforced
  labels: {app: web}
  elements:
  - exe: /usr/sbin/nginx
    sha256:
    - 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    - 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
    origins: [image, writable-layer]
  - exe: /usr/bin/python3
    script: /app/health.py
  - exe: /bin/sh
    status: rejected
";

    #[test]
    fn round_trips() {
        let now = SystemTime::UNIX_EPOCH;
        let parsed = parse(GOOD, now).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].elements.len(), 3);
        assert_eq!(
            parsed[0].elements[&ElementKey::exe("/bin/sh")].status,
            ElementStatus::Rejected
        );
        let again = parse(&export(&parsed), now).unwrap();
        assert_eq!(
            again[0].elements.keys().collect::<Vec<_>>(),
            parsed[0].elements.keys().collect::<Vec<_>>()
        );
        assert_eq!(again[0].workload, parsed[0].workload);
        assert_eq!(again[0].labels, parsed[0].labels);
        let nginx = ElementKey::exe("/usr/sbin/nginx");
        assert_eq!(
            parsed[0].elements[&nginx].approved_sha256,
            vec![
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
            ]
        );
        assert_eq!(
            parsed[0].elements[&nginx].origins,
            BTreeSet::from([Origin::Image, Origin::WritableLayer])
        );
        for (k, e) in &again[0].elements {
            assert_eq!(
                e.approved_sha256, parsed[0].elements[k].approved_sha256,
                "{k}"
            );
            assert_eq!(e.origins, parsed[0].elements[k].origins, "{k}");
        }
    }

    #[test]
    fn origins_are_validated_and_the_error_names_the_element_and_the_allowed_values() {
        let bad = GOOD.replace(
            "origins: [image, writable-layer]",
            "origins: [image, layer]",
        );
        let all = parse(&bad, SystemTime::UNIX_EPOCH).unwrap_err().join("\n");
        let want = "items[0].elements[0].origins[1]: element '/usr/sbin/nginx': unknown origin 'layer'; allowed: image, writable-layer, volume, fileless, host, unknown";
        assert!(all.contains(want), "missing '{want}' in:\n{all}");
    }

    #[test]
    fn approved_contents_are_validated() {
        let upper = GOOD.replace("9f86d08188", "9F86D08188");
        let short = GOOD.replace(
            "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
            "60303ae2",
        );
        let too_many = GOOD.replace(
            "    sha256:\n",
            &format!(
                "    sha256:\n{}",
                (0..APPROVED_SHA256_CAP)
                    .map(|n| format!("    - {n:064x}\n"))
                    .collect::<String>()
            ),
        );
        for (doc, want) in [
            (
                upper,
                "items[0].elements[0].sha256[0]: must be 64 lowercase hex digits",
            ),
            (
                short,
                "items[0].elements[0].sha256[1]: must be 64 lowercase hex digits",
            ),
            (
                too_many,
                "items[0].elements[0].sha256: at most 16 approved contents per element, got 18",
            ),
        ] {
            let all = parse(&doc, SystemTime::UNIX_EPOCH).unwrap_err().join("\n");
            assert!(all.contains(want), "missing '{want}' in:\n{all}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_location() {
        let bad = "apiVersion: procguard.io/v2
kind: BaselineList
items:
- workload: {cluster: c, kind: deploy, name: web}
  state: enforced
- workload: {cluster: c, kind: pod, name: p}
  state: locked
- workload: {cluster: c, kind: pod, name: q}
  state: enforced
  elements:
  - exe: bin/sh
  - exe: /ok
    status: maybe
";
        let errs = parse(bad, SystemTime::UNIX_EPOCH).unwrap_err();
        let all = errs.join("\n");
        for want in [
            "apiVersion: must be 'procguard.io/v1'",
            "items[0].workload.kind: unknown workload kind 'deploy'",
            "items[1].state: must be learning, pending-review or enforced, got 'locked'",
            "items[2].elements[0].exe: must be an absolute path",
            "items[2].elements[1].status: must be learned, approved, needs-review or rejected, got 'maybe'",
        ] {
            assert!(all.contains(want), "missing '{want}' in:\n{all}");
        }
    }

    #[test]
    fn every_kind_of_problem_is_reported_at_once() {
        // A typo'd field, a wrong type, an unknown top-level field and bad values, spread over
        // the document: each is reported, none hides another (the bad state of an item with a
        // typo'd field too).
        let bad = "apiVersion: procguard.io/v1
kind: BaselineList
extra: 1
items:
- workload: {cluster: c, kind: deployment, name: web}
  state: enforced
  elements:
  - exe: /ok
    stauts: approved
  - exe: relative
  - exe: /also-ok
    sha256: [nothex]
- workload: {cluster: c, kind: pod, name: p}
  state: locked
  labelz: {}
  elements:
  - exe: [not, a, string]
- workload: {cluster: c, kind: pod, name: q}
  state: enforced
  elements:
  - exe: /x
    status: maybe
";
        let errs = parse(bad, SystemTime::UNIX_EPOCH).unwrap_err();
        let all = errs.join("\n");
        for want in [
            "document: unknown field `extra`",
            "items[0].elements[0]: unknown field `stauts`",
            "items[0].elements[1].exe: must be an absolute path",
            "items[0].elements[2].sha256[0]: must be 64 lowercase hex digits",
            "items[1]: unknown field `labelz`",
            "items[1].state: must be learning, pending-review or enforced, got 'locked'",
            "items[1].elements[0]: invalid type: sequence, expected a string",
            "items[2].elements[0].status: must be learned, approved, needs-review or rejected",
        ] {
            assert!(all.contains(want), "missing '{want}' in:\n{all}");
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let typo = GOOD.replace(
            "  - exe: /usr/sbin/nginx",
            "  - exe: /usr/sbin/nginx\n    stauts: approved",
        );
        let errs = parse(&typo, SystemTime::UNIX_EPOCH).unwrap_err();
        assert!(errs[0].contains("unknown field `stauts`"), "{errs:?}");
        let errs = parse("{{{", SystemTime::UNIX_EPOCH).unwrap_err();
        assert!(errs[0].contains("not a valid BaselineList"), "{errs:?}");
    }

    /// Every element a baseline can learn exports and imports back unchanged: applets
    /// (`[unreadable]` included), scripts (`[inline]`, `[unreadable]`, relative, `./[x`,
    /// `-m MODULE`, names with spaces and control characters an attacker chose), an
    /// `[unreadable]` executable, several approved contents, an unpinned element, and every
    /// status. Learned through `Baseline::observe`, as the server learns.
    #[test]
    fn every_learned_element_round_trips() {
        use procguard_core::{
            BaselineState, Completeness, ContainerInfo, ExecContext, ProcessEvent, WorkloadIdentity,
        };
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let id = WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "web", "app");
        let ev = |exe: &str, applet: &str, script: &str, sha: Option<&str>| ProcessEvent {
            pid: 1,
            ppid: 0,
            ancestors: vec![],
            start_time: None,
            uid: 0,
            gid: 0,
            comm: String::new(),
            exe_path: exe.into(),
            argv: vec![exe.into()],
            argv_truncated: false,
            applet: (!applet.is_empty()).then(|| applet.to_string()),
            script_path: (!script.is_empty()).then(|| script.to_string()),
            exe_sha256: sha.map(str::to_string),
            exe_memfd: false,
            exe_deleted: false,
            exe_writable_location: exe.starts_with("/tmp/"),
            // Every origin an element can learn: the image's, the writable layer's (held for
            // review), and the unknown.
            origin: match exe {
                "[unreadable]" => procguard_core::Origin::Unknown,
                e if e.starts_with("/tmp/") => procguard_core::Origin::WritableLayer,
                _ => procguard_core::Origin::Image,
            },
            container: Some(ContainerInfo {
                container_id: "cid".into(),
                image_digest: Some("sha256:a".into()),
                ..Default::default()
            }),
            workload: id.clone(),
            context: ExecContext::Entrypoint,
            exec_session: None,
            completeness: Completeness::Full,
            missing: vec![],
            node_name: "n1".into(),
            attributed_late_ms: None,
        };
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut base = Baseline::new(id.clone(), now);
        for e in [
            ev("/bin/busybox", "wget", "", Some(&a)),
            ev("/bin/busybox", "[unreadable]", "", Some(&a)),
            ev("/bin/sh", "", "[inline]", Some(&b)),
            ev("/bin/sh", "", "[unreadable]", Some(&b)),
            ev("/bin/sh", "", "loop.sh", Some(&b)),
            ev("/bin/sh", "", "./[x.sh", Some(&b)),
            ev("/bin/busybox", "sh", "/tmp/a b.sh", Some(&a)),
            ev("/bin/sh", "", "/tmp/x\ny\u{1b}[31m.sh", Some(&b)),
            ev("/usr/bin/python3.11", "", "-m http.server", None),
            ev("[unreadable]", "", "", None),
            ev("/tmp/dropped", "", "", Some(&a)),
            ev("/app/\u{e9}t\u{e9} \t", "", "", Some(&a)),
        ] {
            base.observe(&e, now, std::time::Duration::from_secs(600), 4096);
        }
        // A second content from another image build, learned while training.
        let mut rebuilt = ev("/bin/busybox", "wget", "", Some(&b));
        rebuilt.container.as_mut().unwrap().image_digest = Some("sha256:b".into());
        base.observe(&rebuilt, now, std::time::Duration::from_secs(600), 4096);
        base.state = BaselineState::Enforced;
        let reject = ElementKey {
            exe_path: "/bin/sh".into(),
            applet: String::new(),
            script_path: "[unreadable]".into(),
        };
        base.elements.get_mut(&reject).unwrap().status = ElementStatus::Rejected;
        let wget = ElementKey {
            exe_path: "/bin/busybox".into(),
            applet: "wget".into(),
            script_path: String::new(),
        };
        assert_eq!(base.elements[&wget].approved_sha256, vec![a.clone(), b]);
        let statuses: std::collections::HashSet<ElementStatus> =
            base.elements.values().map(|e| e.status).collect();
        assert_eq!(statuses.len(), 3, "learned, needs review and rejected");

        let doc = export(std::slice::from_ref(&base));
        let back = parse(&doc, now).unwrap_or_else(|e| panic!("{e:?}\n{doc}"));
        assert_eq!(back.len(), 1);
        let d = procguard_core::content::diff(&base.elements, &back[0].elements);
        assert!(d.is_empty(), "{d:?}\n{doc}");
        assert_eq!(
            (back[0].state, &back[0].workload),
            (base.state, &base.workload)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any text at all: an answer (documents or located errors), never a panic.
            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
                let _ = parse(&text, SystemTime::UNIX_EPOCH);
            }

            /// A valid document with one line replaced by garbage is either still valid or
            /// refused with at least one message; nothing is half-accepted.
            #[test]
            fn a_damaged_document_is_refused_or_still_valid(line in 0usize..16, junk in "[ -~]{0,40}") {
                let mut lines: Vec<&str> = GOOD.lines().collect();
                let i = line % lines.len();
                lines[i] = &junk;
                match parse(&lines.join("\n"), SystemTime::UNIX_EPOCH) {
                    Ok(items) => {
                        for b in items {
                            prop_assert!(b.workload.validate().is_ok());
                            for k in b.elements.keys() {
                                prop_assert!(k.exe_path.starts_with('/'));
                            }
                        }
                    }
                    Err(errs) => prop_assert!(!errs.is_empty()),
                }
            }

            /// Any element names the sensor can report (any text but NUL, executables absolute)
            /// and any approved contents export and parse back to the same elements.
            #[test]
            fn any_element_round_trips(
                elements in proptest::collection::vec(
                    (
                        "/[^\u{0}]{0,40}",
                        proptest::option::of("[^/\u{0}]{1,20}"),
                        proptest::option::of("[^\u{0}]{1,40}"),
                        proptest::collection::vec("[0-9a-f]{64}", 0..3),
                    ),
                    0..8,
                ),
            ) {
                let now = SystemTime::UNIX_EPOCH;
                let mut b = parse(GOOD, now).unwrap().remove(0);
                for (exe, applet, script, shas) in elements {
                    let mut e = b.elements.values().next().unwrap().clone();
                    e.approved_sha256.clear();
                    for h in &shas {
                        e.approve_content(h);
                    }
                    let key = ElementKey {
                        exe_path: exe,
                        applet: applet.unwrap_or_default(),
                        script_path: script.unwrap_or_default(),
                    };
                    b.elements.insert(key, e);
                }
                let doc = export(std::slice::from_ref(&b));
                let again = parse(&doc, now);
                prop_assert!(again.is_ok(), "{:?}\n{}", again, doc);
                let d = procguard_core::content::diff(&b.elements, &again.unwrap()[0].elements);
                prop_assert!(d.is_empty(), "{:?}", d);
            }

            /// Whatever is exported parses back to the same elements.
            #[test]
            fn export_round_trips(paths in proptest::collection::btree_set("/[a-z0-9/._-]{1,30}", 0..8)) {
                let now = SystemTime::UNIX_EPOCH;
                let mut b = parse(GOOD, now).unwrap().remove(0);
                for p in &paths {
                    b.elements.insert(ElementKey::exe(p.clone()), b.elements.values().next().unwrap().clone());
                }
                let again = parse(&export(std::slice::from_ref(&b)), now).unwrap();
                prop_assert_eq!(again[0].elements.keys().collect::<Vec<_>>(), b.elements.keys().collect::<Vec<_>>());
            }
        }
    }
}
