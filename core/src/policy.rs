//! Learning policy per namespace or label selector: how long learning lasts, and whether a
//! baseline is enforced when learning ends or waits for a person. The first matching rule wins;
//! with no match, the server's defaults apply. The default is to wait for approval.

use crate::baseline::{Baseline, LearningPolicy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `key=value` (or `key==value`).
    Equals(String, String),
    /// `key!=value` (true when the label is absent too, as in Kubernetes).
    NotEquals(String, String),
    /// `key`: the label exists.
    Exists(String),
    /// `!key`: the label does not exist.
    Absent(String),
}

/// A Kubernetes-style equality label selector (`app=web,tier!=db,canary,!legacy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<Term>,
}

impl LabelSelector {
    /// Parses a selector; an empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let t = if let Some((k, v)) = term.split_once("!=") {
                Term::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                Term::Absent(k.trim().into())
            } else {
                Term::Exists(term.into())
            };
            let key = match &t {
                Term::Equals(k, _) | Term::NotEquals(k, _) | Term::Exists(k) | Term::Absent(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['(', ')']) {
                return Err(format!(
                    "label selector term '{term}' is invalid; use key=value, key!=value, key or !key"
                ));
            }
            terms.push(t);
        }
        Ok(Self { terms })
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Equals(k, v) => labels.get(k) == Some(v),
            Term::NotEquals(k, v) => labels.get(k) != Some(v),
            Term::Exists(k) => labels.contains_key(k),
            Term::Absent(k) => !labels.contains_key(k),
        })
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// What happens when learning ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Enforce at once.
    AutoEnforce,
    /// Wait in pending-review for a person (the default).
    RequireApproval,
}

/// What an exec session into a workload with an enforced baseline raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecSessions {
    /// One "interactive session" incident per session (the default).
    Alert,
    /// Recorded with its events, no incident (e.g. a namespace where people debug by design).
    RecordOnly,
}

/// What a re-learning window (a new image digest of an approved baseline) does with the new
/// elements it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relearning {
    /// Allows them at once, attributed in the baseline's history (the default).
    Learn,
    /// Holds them for a person's review (reason `relearned`).
    Review,
}

/// One rule as written in the policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Namespace the rule applies to; absent for all.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector the workload's labels must match; absent for all.
    #[serde(default)]
    pub selector: Option<String>,
    /// What happens when learning ends.
    pub mode: Mode,
    /// Minimum learning window (e.g. "1h"); absent keeps the default.
    #[serde(default, with = "opt_duration")]
    pub min_window: Option<Duration>,
    /// Maximum learning window.
    #[serde(default, with = "opt_duration")]
    pub max_window: Option<Duration>,
    /// Quiet period.
    #[serde(default, with = "opt_duration")]
    pub quiet_period: Option<Duration>,
    /// Minimum distinct pods.
    #[serde(default)]
    pub min_pods: Option<usize>,
    /// Exec sessions into an enforced workload: `alert` (default) or `record-only`.
    #[serde(default)]
    pub exec_sessions: Option<ExecSessions>,
    /// New elements of a re-learning window: `learn` (default) or `review`.
    #[serde(default)]
    pub relearning: Option<Relearning>,
}

/// The policy file: `rules:` in order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Rules; the first match wins.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        super::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses durations like `90s`, `30m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("duration '{s}' must be a number and a unit: 90s, 30m, 1h, 2d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "duration '{s}' has unknown unit '{unit}'; use s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, Clone)]
struct Rule {
    namespace: Option<String>,
    selector: LabelSelector,
    policy: LearningPolicy,
}

/// Compiled policies.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    default: LearningPolicy,
    rules: Vec<Rule>,
}

impl Policies {
    /// Policies with only a default.
    pub fn new(default: LearningPolicy) -> Self {
        Self {
            default,
            rules: Vec::new(),
        }
    }

    /// Compiles a policy file over `default`; errors name the rule and what is wrong.
    pub fn compile(default: LearningPolicy, file: &PolicyFile) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (i, r) in file.rules.iter().enumerate() {
            let selector = LabelSelector::parse(r.selector.as_deref().unwrap_or(""))
                .map_err(|e| format!("rule {i}: {e}"))?;
            let mut p = default.clone();
            p.auto_enforce = r.mode == Mode::AutoEnforce;
            if let Some(v) = r.min_window {
                p.min_window = v;
            }
            if let Some(v) = r.max_window {
                p.max_window = v;
            }
            if let Some(v) = r.quiet_period {
                p.quiet_period = v;
            }
            if let Some(v) = r.min_pods {
                p.min_pods = v;
            }
            if let Some(v) = r.exec_sessions {
                p.exec_session_alerts = v == ExecSessions::Alert;
            }
            if let Some(v) = r.relearning {
                p.relearn_review = v == Relearning::Review;
            }
            if p.min_window > p.max_window {
                return Err(format!("rule {i}: min_window exceeds max_window"));
            }
            rules.push(Rule {
                namespace: r.namespace.clone(),
                selector,
                policy: p,
            });
        }
        Ok(Self { default, rules })
    }

    /// The policy for a baseline: the first rule whose namespace and selector match.
    pub fn for_baseline(&self, b: &Baseline) -> &LearningPolicy {
        self.rules
            .iter()
            .find(|r| {
                r.namespace
                    .as_ref()
                    .is_none_or(|n| *n == b.workload.namespace)
                    && r.selector.matches(&b.labels)
            })
            .map(|r| &r.policy)
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{WorkloadIdentity, WorkloadKind};
    use std::time::SystemTime;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let check = |sel: &str, l: &[(&str, &str)], want: bool| {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&labels(l)),
                want,
                "{sel} on {l:?}"
            );
        };
        check("", &[], true);
        check("app=web", &[("app", "web")], true);
        check("app=web", &[("app", "db")], false);
        check("app==web,tier!=db", &[("app", "web")], true);
        check("tier!=db", &[("tier", "db")], false);
        check("canary", &[("canary", "")], true);
        check("!legacy", &[("legacy", "1")], false);
        assert!(LabelSelector::parse("=x").unwrap_err().contains("'=x'"));
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn first_matching_rule_wins_and_defaults_require_approval() {
        let file: PolicyFile = serde_json::from_str(
            r#"{"rules":[
                {"namespace":"dev","mode":"auto-enforce","max_window":"10m","min_window":"1m"},
                {"selector":"tier=batch","mode":"auto-enforce"}]}"#,
        )
        .unwrap();
        let p = Policies::compile(LearningPolicy::default(), &file).unwrap();
        let now = SystemTime::UNIX_EPOCH;
        let mut b = Baseline::new(
            WorkloadIdentity::new("c", "dev", WorkloadKind::Pod, "x", "y"),
            now,
        );
        assert!(p.for_baseline(&b).auto_enforce);
        assert_eq!(p.for_baseline(&b).max_window, Duration::from_secs(600));
        b.workload.namespace = "prod".into();
        assert!(
            !p.for_baseline(&b).auto_enforce,
            "default must require approval"
        );
        b.labels = labels(&[("tier", "batch")]);
        assert!(p.for_baseline(&b).auto_enforce);
    }

    #[test]
    fn relearning_learns_unless_a_rule_asks_for_review() {
        let f: PolicyFile = serde_json::from_str(
            r#"{"rules":[{"namespace":"payments","mode":"require-approval","relearning":"review"}]}"#,
        )
        .unwrap();
        let p = Policies::compile(LearningPolicy::default(), &f).unwrap();
        let mut b = crate::Baseline::new(
            crate::WorkloadIdentity::new(
                "c",
                "payments",
                crate::WorkloadKind::Deployment,
                "api",
                "app",
            ),
            std::time::UNIX_EPOCH,
        );
        assert!(p.for_baseline(&b).relearn_review);
        b.workload.namespace = "shop".into();
        assert!(!p.for_baseline(&b).relearn_review);
        let bad = serde_json::from_str::<PolicyFile>(
            r#"{"rules":[{"mode":"require-approval","relearning":"maybe"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("learn") && bad.contains("review"), "{bad}");
    }

    #[test]
    fn exec_sessions_alert_unless_a_rule_records_them_only() {
        let file: PolicyFile = serde_json::from_str(
            r#"{"rules":[
                {"namespace":"debug","mode":"require-approval","exec_sessions":"record-only"},
                {"namespace":"prod","mode":"require-approval","exec_sessions":"alert"}]}"#,
        )
        .unwrap();
        let p = Policies::compile(LearningPolicy::default(), &file).unwrap();
        let mut b = Baseline::new(
            WorkloadIdentity::new("c", "debug", WorkloadKind::Pod, "x", "y"),
            SystemTime::UNIX_EPOCH,
        );
        assert!(!p.for_baseline(&b).exec_session_alerts);
        b.workload.namespace = "prod".into();
        assert!(p.for_baseline(&b).exec_session_alerts);
        b.workload.namespace = "other".into();
        assert!(
            p.for_baseline(&b).exec_session_alerts,
            "alert is the default"
        );
        let bad: Result<PolicyFile, _> = serde_json::from_str(
            r#"{"rules":[{"mode":"require-approval","exec_sessions":"silence"}]}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("record-only"));
    }

    #[test]
    fn bad_policy_files_name_the_problem() {
        let e = serde_json::from_str::<PolicyFile>(r#"{"rules":[{"mode":"yolo"}]}"#).unwrap_err();
        assert!(e.to_string().contains("yolo"));
        let e = serde_json::from_str::<PolicyFile>(
            r#"{"rules":[{"mode":"auto-enforce","nmespace":"x"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nmespace"));
        let e = serde_json::from_str::<PolicyFile>(
            r#"{"rules":[{"mode":"auto-enforce","max_window":"ten"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("'ten'"), "{e}");
        let f: PolicyFile = serde_json::from_str(
            r#"{"rules":[{"mode":"auto-enforce","min_window":"2h","max_window":"1h"}]}"#,
        )
        .unwrap();
        assert!(Policies::compile(LearningPolicy::default(), &f)
            .unwrap_err()
            .contains("rule 0"));
    }
}
