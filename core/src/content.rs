//! The content verdict, and element sets compared content and all.
//!
//! **The verdict.** Every deviation says, as a value of its own beside its severity, what its
//! content was judged to be against the baseline element it ran as ([`ContentVerdict`]): a
//! new element (nothing to judge against), an element the baseline holds but does not allow,
//! an approved content, an element not pinned to any content, a modified content (with the
//! content that ran and the approved ones), or an unverified one (the sensor could not hash
//! it). [`Baseline::judge_content`] decides it with the rule that decides the deviation itself
//! ([`content_of`], applied by [`Baseline::observe`] on the server and
//! [`crate::Matcher::check`] on the sensor), so the verdict and the deviation cannot disagree.
//! Incidents keep it for each sample, and for the incident the most serious of its events'
//! ([`ContentVerdict::concern`]: a replaced binary whose first run was also deleted under it
//! is still `modified`); the SIEM stream carries it on every deviation record
//! (docs/siem.md).
//!
//! **Element sets compared.** [`diff`] compares two element sets (two versions of a baseline,
//! or an import document and the stored baseline) element by element: the elements added and
//! removed (each named by executable, applet and script), the status and origin changes, the
//! approved contents each element gained or lost ([`ContentChange`]), and the origins of the
//! elements added or removed.

use crate::baseline::{content_of, Baseline, Content, Element, ElementKey, ElementStatus};
use crate::process::{Origin, ProcessEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Whether `h` is a content hash as the sensor writes it: 64 lowercase hex digits (sha256).
pub fn is_sha256(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// What an exec's content was judged to be against the baseline it deviated from. Decided
/// by [`Baseline::judge_content`]; documented for users in docs/siem.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentVerdict {
    /// The baseline has no element by this name (executable, applet, script): the element is
    /// new, and its content was not judged (there is nothing to judge it against).
    NewElement,
    /// The baseline holds the element but does not allow it (held for review, or rejected):
    /// the element is the deviation; its content was not judged.
    NotAllowed,
    /// The content is one of the allowed element's approved contents: what deviated was not
    /// the content (a memfd or deleted executable, whatever its content, never matches).
    Approved,
    /// The allowed element is not pinned to any content (only ever seen unhashed, added by
    /// name, imported without `sha256`): it is matched by name alone, its content not judged.
    Unpinned,
    /// The allowed element is pinned and this content is not one of its approved ones: the
    /// file at an allowed path was replaced ("modified executable").
    Modified,
    /// The allowed element is pinned and the sensor could not hash the executable: its
    /// content cannot be verified ("content unverified").
    Unverified,
}

impl ContentVerdict {
    /// How much the verdict says against the content, for an incident that groups several:
    /// modified, then unverified, then an element not allowed or new (content not judged),
    /// then unpinned, then approved.
    pub fn concern(self) -> u8 {
        match self {
            Self::Approved => 0,
            Self::Unpinned => 1,
            Self::NewElement | Self::NotAllowed => 2,
            Self::Unverified => 3,
            Self::Modified => 4,
        }
    }

    /// The name every output prints (`new-element`, `modified`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewElement => "new-element",
            Self::NotAllowed => "not-allowed",
            Self::Approved => "approved",
            Self::Unpinned => "unpinned",
            Self::Modified => "modified",
            Self::Unverified => "unverified",
        }
    }
}

impl std::fmt::Display for ContentVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Content> for ContentVerdict {
    fn from(c: Content) -> Self {
        match c {
            Content::Approved => Self::Approved,
            Content::Unpinned => Self::Unpinned,
            Content::Modified => Self::Modified,
            Content::Unverified => Self::Unverified,
        }
    }
}

/// A content verdict with the facts it was decided on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentCheck {
    /// The verdict.
    pub verdict: ContentVerdict,
    /// The content that ran (lowercase hex sha256); `None` when the sensor could not hash it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The element's approved contents when it was judged, oldest first; empty for a new
    /// element and for one not pinned.
    #[serde(default)]
    pub approved_sha256: Vec<String>,
}

impl Baseline {
    /// The content verdict of `ev` against this baseline: [`content_of`] for an allowed
    /// element, as [`Baseline::observe`] and [`crate::Matcher::check`] decide it.
    pub fn judge_content(&self, ev: &ProcessEvent) -> ContentCheck {
        let element = self.elements.get(&ElementKey::of(ev));
        ContentCheck {
            verdict: verdict_of(element, ev),
            sha256: ev.exe_sha256.clone(),
            approved_sha256: element
                .map(|e| e.approved_sha256.clone())
                .unwrap_or_default(),
        }
    }
}

/// The verdict of `ev` against the baseline's element by its name (`None`: no such element).
pub(crate) fn verdict_of(element: Option<&Element>, ev: &ProcessEvent) -> ContentVerdict {
    match element {
        None => ContentVerdict::NewElement,
        Some(e) if !e.status.allowed() => ContentVerdict::NotAllowed,
        Some(e) => content_of(
            !e.approved_sha256.is_empty(),
            ev.exe_sha256.as_deref(),
            |h| e.approves(h),
        )
        .into(),
    }
}

/// An element whose status or origins differ between two element sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The element.
    pub element: ElementKey,
    /// Its status on the older side.
    pub before: ElementStatus,
    /// Its status on the newer side.
    pub after: ElementStatus,
    /// Its origins on the older side ([`Element::origins`]).
    pub origins_before: BTreeSet<Origin>,
    /// Its origins on the newer side.
    pub origins_after: BTreeSet<Origin>,
}

/// An element whose approved contents differ between two element sets: an element only on
/// the newer side has all of its contents added, one only on the older side all removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentChange {
    /// The element.
    pub element: ElementKey,
    /// Approved on the newer side only, in its order.
    pub added: Vec<String>,
    /// Approved on the older side only, in its order.
    pub removed: Vec<String>,
}

/// How two element sets differ, element by element (see [`diff`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementsDiff {
    /// Elements only on the newer side.
    pub added: Vec<ElementKey>,
    /// Elements only on the older side.
    pub removed: Vec<ElementKey>,
    /// Elements on both sides whose status or origins changed.
    pub status: Vec<StatusChange>,
    /// Elements whose approved contents changed (including added and removed elements that
    /// have any).
    pub content: Vec<ContentChange>,
    /// The origins of each added element (on the newer side) and each removed one (on the
    /// older side), for those that have any.
    pub origins: Vec<(ElementKey, BTreeSet<Origin>)>,
}

impl ElementsDiff {
    /// Whether the two sides hold the same elements with the same statuses and contents.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.status.is_empty()
            && self.content.is_empty()
    }
}

/// Compares the element sets `before` and `after`, in element order.
pub fn diff(
    before: &BTreeMap<ElementKey, Element>,
    after: &BTreeMap<ElementKey, Element>,
) -> ElementsDiff {
    let none: &[String] = &[];
    let mut out = ElementsDiff::default();
    let keys: std::collections::BTreeSet<&ElementKey> = before.keys().chain(after.keys()).collect();
    for k in keys {
        let (old, new) = (before.get(k), after.get(k));
        match (old, new) {
            (None, Some(e)) | (Some(e), None) => {
                if old.is_none() {
                    out.added.push(k.clone());
                } else {
                    out.removed.push(k.clone());
                }
                if !e.origins.is_empty() {
                    out.origins.push((k.clone(), e.origins.clone()));
                }
            }
            (Some(o), Some(n)) if o.status != n.status || o.origins != n.origins => {
                out.status.push(StatusChange {
                    element: k.clone(),
                    before: o.status,
                    after: n.status,
                    origins_before: o.origins.clone(),
                    origins_after: n.origins.clone(),
                })
            }
            _ => {}
        }
        let old = old.map_or(none, |e| e.approved_sha256.as_slice());
        let new = new.map_or(none, |e| e.approved_sha256.as_slice());
        let added: Vec<String> = new.iter().filter(|h| !old.contains(h)).cloned().collect();
        let removed: Vec<String> = old.iter().filter(|h| !new.contains(h)).cloned().collect();
        if !added.is_empty() || !removed.is_empty() {
            out.content.push(ContentChange {
                element: k.clone(),
                added,
                removed,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineState, Provenance};
    use crate::identity::{WorkloadIdentity, WorkloadKind};
    use std::time::{Duration, SystemTime};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// An exec of `exe` running `applet`, content `sha` (`None`: unhashed): the incident
    /// tests' exec, in container `app` of image `sha256:a`.
    fn exec(exe: &str, applet: &str, sha: Option<&str>) -> ProcessEvent {
        let mut e = crate::incident::tests::exec(exe);
        e.comm = "x".into();
        e.applet = (!applet.is_empty()).then(|| applet.to_string());
        e.exe_sha256 = sha.map(str::to_string);
        if let Some(c) = e.container.as_mut() {
            c.image_digest = Some("sha256:a".into());
        }
        e.workload = WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "web", "app");
        e
    }

    fn element(status: ElementStatus, approved: &[&str]) -> Element {
        Element {
            status,
            review_reasons: vec![],
            provenance: Provenance::new(t(0)),
            manual: true,
            approved_sha256: approved.iter().map(|h| h.to_string()).collect(),
            origins: BTreeSet::from([Origin::Image]),
        }
    }

    fn key(exe: &str, applet: &str) -> ElementKey {
        ElementKey {
            exe_path: exe.into(),
            applet: applet.into(),
            script_path: String::new(),
        }
    }

    /// `/bin/busybox (sleep)` pinned to A, `/bin/big` unpinned, `/bin/rejected` rejected and
    /// `/bin/held` held for review: an enforced baseline.
    fn baseline() -> Baseline {
        let mut b = Baseline::new(exec("/x", "", None).workload, t(0));
        b.state = BaselineState::Enforced;
        for (k, e) in [
            (
                key("/bin/busybox", "sleep"),
                element(ElementStatus::Approved, &[A]),
            ),
            (key("/bin/big", ""), element(ElementStatus::Learned, &[])),
            (
                key("/bin/rejected", ""),
                element(ElementStatus::Rejected, &[A]),
            ),
            (
                key("/bin/held", ""),
                element(ElementStatus::NeedsReview, &[A]),
            ),
        ] {
            b.elements.insert(k, e);
        }
        b
    }

    /// One verdict case: the exec, and what it must be judged.
    fn check(ev: ProcessEvent, verdict: ContentVerdict, approved: &[&str]) {
        let b = baseline();
        let got = b.judge_content(&ev);
        assert_eq!(got.verdict, verdict, "{} ({:?})", ev.exe_path, ev.applet);
        assert_eq!(got.sha256, ev.exe_sha256);
        assert_eq!(got.approved_sha256, approved);
    }

    #[test]
    fn verdicts() {
        use ContentVerdict::*;
        check(exec("/bin/busybox", "sleep", Some(A)), Approved, &[A]);
        check(exec("/bin/busybox", "sleep", Some(B)), Modified, &[A]);
        check(exec("/bin/busybox", "sleep", None), Unverified, &[A]);
        // Another applet of the same file is another element: new, whatever its content.
        check(exec("/bin/busybox", "wget", Some(A)), NewElement, &[]);
        check(exec("/bin/busybox", "", Some(A)), NewElement, &[]);
        check(exec("/bin/big", "", Some(B)), Unpinned, &[]);
        check(exec("/bin/big", "", None), Unpinned, &[]);
        check(exec("/bin/rejected", "", Some(A)), NotAllowed, &[A]);
        check(exec("/bin/held", "", Some(B)), NotAllowed, &[A]);
        // A fileless exec at an allowed path is judged on its content like any other (its
        // deviation is that it is fileless, said by its flags and severity).
        let mut memfd = exec("/bin/busybox", "sleep", Some(B));
        memfd.exe_memfd = true;
        check(memfd, Modified, &[A]);
    }

    proptest::proptest! {
        /// The verdict agrees with the deviation: past learning and outside any re-learning
        /// window, `observe` reports a deviation for a file-backed exec exactly when the
        /// verdict is neither approved nor unpinned.
        #[test]
        fn the_verdict_agrees_with_the_deviation(
            exe in 0usize..5,
            applet in 0usize..2,
            sha in proptest::prop_oneof![
                proptest::strategy::Just(None),
                proptest::strategy::Just(Some(A)),
                proptest::strategy::Just(Some(B)),
            ],
        ) {
            let exe = ["/bin/busybox", "/bin/big", "/bin/rejected", "/bin/held", "/bin/new"][exe];
            let ev = exec(exe, ["", "sleep"][applet], sha);
            let mut b = baseline();
            b.image_digests.insert("sha256:a".into());
            let verdict = b.judge_content(&ev).verdict;
            let observed = b.observe(&ev, t(10), Duration::from_secs(600), 4096);
            let deviates = matches!(
                observed,
                crate::baseline::Observation::Deviation | crate::baseline::Observation::Refused
            );
            proptest::prop_assert_eq!(
                deviates,
                !matches!(verdict, ContentVerdict::Approved | ContentVerdict::Unpinned),
                "{:?} → {:?}",
                verdict,
                observed
            );
        }
    }

    #[test]
    fn diff_names_elements_statuses_and_contents() {
        let mut old = BTreeMap::new();
        old.insert(
            key("/bin/sleep", ""),
            element(ElementStatus::Approved, &[A]),
        );
        old.insert(
            key("/bin/busybox", "cat"),
            element(ElementStatus::Learned, &[]),
        );
        old.insert(key("/bin/gone", ""), element(ElementStatus::Approved, &[B]));
        let mut new = old.clone();
        assert!(diff(&old, &new).is_empty());
        new.remove(&key("/bin/gone", ""));
        new.get_mut(&key("/bin/sleep", ""))
            .unwrap()
            .approve_content(B);
        new.get_mut(&key("/bin/busybox", "cat")).unwrap().status = ElementStatus::Rejected;
        new.insert(
            key("/bin/busybox", "wget"),
            element(ElementStatus::Approved, &[A]),
        );
        let d = diff(&old, &new);
        assert_eq!(d.added, vec![key("/bin/busybox", "wget")]);
        assert_eq!(d.removed, vec![key("/bin/gone", "")]);
        assert_eq!(
            d.status,
            vec![StatusChange {
                element: key("/bin/busybox", "cat"),
                before: ElementStatus::Learned,
                after: ElementStatus::Rejected,
                origins_before: BTreeSet::from([Origin::Image]),
                origins_after: BTreeSet::from([Origin::Image]),
            }]
        );
        // The added and removed elements come with their origins.
        assert_eq!(
            d.origins,
            vec![
                (key("/bin/busybox", "wget"), BTreeSet::from([Origin::Image])),
                (key("/bin/gone", ""), BTreeSet::from([Origin::Image])),
            ]
        );
        // An origin a person approved is a change of the element, status unchanged.
        let mut approved = old.clone();
        approved
            .get_mut(&key("/bin/sleep", ""))
            .unwrap()
            .origins
            .insert(Origin::WritableLayer);
        let o = diff(&old, &approved);
        assert!(!o.is_empty());
        assert_eq!(
            o.status,
            vec![StatusChange {
                element: key("/bin/sleep", ""),
                before: ElementStatus::Approved,
                after: ElementStatus::Approved,
                origins_before: BTreeSet::from([Origin::Image]),
                origins_after: BTreeSet::from([Origin::Image, Origin::WritableLayer]),
            }]
        );
        let change = |exe: &str, applet: &str, added: &[&str], removed: &[&str]| ContentChange {
            element: key(exe, applet),
            added: added.iter().map(|h| h.to_string()).collect(),
            removed: removed.iter().map(|h| h.to_string()).collect(),
        };
        assert_eq!(
            d.content,
            vec![
                change("/bin/busybox", "wget", &[A], &[]),
                change("/bin/gone", "", &[], &[B]),
                change("/bin/sleep", "", &[B], &[]),
            ]
        );
        // Unpinning is a content change: every approved content removed.
        let mut unpinned = old.clone();
        unpinned
            .get_mut(&key("/bin/sleep", ""))
            .unwrap()
            .approved_sha256
            .clear();
        assert_eq!(
            diff(&old, &unpinned).content,
            vec![change("/bin/sleep", "", &[], &[A])]
        );
    }

    #[test]
    fn sha256_syntax() {
        assert!(is_sha256(A));
        assert!(!is_sha256(&A.to_uppercase()));
        assert!(!is_sha256(&A[1..]));
        assert!(!is_sha256(&format!("{}g", &A[1..])));
        assert!(!is_sha256(""));
    }
}
