//! Workload identity: the key every baseline is learned for.
//!
//! An identity is structured (cluster, namespace, kind, workload name, container name), never
//! a free-form string, so that filters and selectors never have to parse one. [`WorkloadIdentity`]
//! does have a canonical text form, `cluster/namespace/kind/name/container`, for people and for
//! the CLI; [`WorkloadIdentity::parse`] reads it back.
//!
//! The keys, as the sensor builds them (`docs/sensor-events.md`, "Workload identity"):
//! - a pod container: `cluster/namespace/<owner kind>/<owner name>/<container name>`; before
//!   its pod metadata is known only the provisional `cluster//pod/pod-<uid>/<short id>`, which
//!   the server never learns (`ProcessEvent::awaits_pod_metadata`);
//! - a container in no pod: `cluster//container/<runtime>:compose:<project>/<service>`,
//!   `cluster//container/<runtime>:<name>/` or `cluster//container/<runtime>:id:<short id>/`;
//! - a host process: `cluster//host/<systemd unit, instances folded>/` or `cluster//host/host/`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of object that owns a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// A Deployment, resolved through its ReplicaSet.
    Deployment,
    /// A StatefulSet.
    StatefulSet,
    /// A DaemonSet.
    DaemonSet,
    /// A Job no CronJob owns.
    Job,
    /// A CronJob, resolved through its Job.
    CronJob,
    /// A pod with no (resolvable) controller.
    Pod,
    /// A ReplicaSet no Deployment owns.
    ReplicaSet,
    /// A container in no pod (plain Docker, Podman): named `<runtime>:compose:<project>` (with
    /// the service as container name), `<runtime>:<container name>` or `<runtime>:id:<short id>`.
    Container,
    /// A process on the node itself.
    Host,
}

impl WorkloadKind {
    /// Every kind, in a stable order.
    pub const ALL: [WorkloadKind; 9] = [
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::Job,
        Self::CronJob,
        Self::Pod,
        Self::ReplicaSet,
        Self::Container,
        Self::Host,
    ];

    /// The lowercase name used in text forms (`deployment`, `statefulset`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::DaemonSet => "daemonset",
            Self::Job => "job",
            Self::CronJob => "cronjob",
            Self::Pod => "pod",
            Self::ReplicaSet => "replicaset",
            Self::Container => "container",
            Self::Host => "host",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workload kind name that is not one of [`WorkloadKind::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown workload kind '{0}'; expected one of deployment, statefulset, daemonset, job, cronjob, pod, replicaset, container, host")]
pub struct UnknownKind(pub String);

impl FromStr for WorkloadKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// Who a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadIdentity {
    /// Cluster name as configured on the sensor.
    pub cluster: String,
    /// Kubernetes namespace; empty for host processes and standalone containers.
    pub namespace: String,
    /// Kind of the owning workload.
    pub kind: WorkloadKind,
    /// Name of the owning workload.
    pub workload_name: String,
    /// Container name; empty for host processes.
    pub container_name: String,
}

/// Why a text identity could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// Wrong number of `/`-separated parts.
    #[error("workload '{0}' must be cluster/namespace/kind/name/container (5 parts separated by '/'; empty parts allowed, e.g. 'prod//host/host/')")]
    Shape(String),
    /// The kind part is not a known kind.
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    /// A part holds a character that no Kubernetes name may contain.
    #[error("workload part '{0}' contains a control character")]
    Control(String),
    /// The workload name is empty.
    #[error("workload name must not be empty in '{0}'")]
    EmptyName(String),
}

impl WorkloadIdentity {
    /// Builds an identity, checking that it is well formed.
    pub fn new(
        cluster: impl Into<String>,
        namespace: impl Into<String>,
        kind: WorkloadKind,
        workload_name: impl Into<String>,
        container_name: impl Into<String>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            namespace: namespace.into(),
            kind,
            workload_name: workload_name.into(),
            container_name: container_name.into(),
        }
    }

    /// Checks the invariants every stored identity holds: a non-empty workload name and no
    /// control characters or '/' inside a part (so the text form round-trips).
    pub fn validate(&self) -> Result<(), IdentityError> {
        for part in [
            &self.cluster,
            &self.namespace,
            &self.workload_name,
            &self.container_name,
        ] {
            if part.chars().any(|c| c.is_control() || c == '/') {
                return Err(IdentityError::Control(part.clone()));
            }
        }
        if self.workload_name.is_empty() {
            return Err(IdentityError::EmptyName(self.to_string()));
        }
        Ok(())
    }

    /// Reads the text form `cluster/namespace/kind/name/container`.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let parts: Vec<&str> = text.split('/').collect();
        let [cluster, namespace, kind, name, container] = parts.as_slice() else {
            return Err(IdentityError::Shape(text.to_string()));
        };
        let id = Self::new(*cluster, *namespace, kind.parse()?, *name, *container);
        id.validate()?;
        Ok(id)
    }
}

impl fmt::Display for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.cluster, self.namespace, self.kind, self.workload_name, self.container_name
        )
    }
}

/// One owner reference of a pod: its kind, its name, and whether it is the controller.
#[derive(Debug, Clone, Copy)]
pub struct PodOwner<'a> {
    /// `ReplicaSet`, `Job`, `StatefulSet`, `DaemonSet`, …
    pub kind: &'a str,
    /// The owner's name.
    pub name: &'a str,
    /// Whether it is the pod's controller.
    pub controller: bool,
}

/// The workload a pod belongs to, from its name, its `pod-template-hash` label and its owner
/// references, without reading any other object (the sensor's and the server's RBAC grant
/// pods only):
/// - a ReplicaSet owner whose name ends in `-<pod-template-hash>` is a Deployment named by the
///   rest; otherwise it stays a ReplicaSet;
/// - a Job owner named `<cronjob>-<digits>` with at least 8 digits is a CronJob (the CronJob
///   controller names every Job after its scheduled time in minutes since the epoch);
/// - StatefulSet and DaemonSet owners are taken as they are;
/// - a pod without a controller (or owned by a node: a static pod) is a bare pod named by
///   itself.
///
/// Sensors name the workload of each event this way, and the server checks a report against
/// the pod the API names the same way.
pub fn workload_of_pod<'a>(
    pod_name: &str,
    pod_template_hash: Option<&str>,
    owners: &[PodOwner<'a>],
) -> (WorkloadKind, String) {
    let Some(owner) = owners.iter().find(|o| o.controller).or(owners.first()) else {
        return (WorkloadKind::Pod, pod_name.to_string());
    };
    match owner.kind {
        "ReplicaSet" => match pod_template_hash
            .and_then(|h| owner.name.strip_suffix(&format!("-{h}")))
        {
            Some(deploy) if !deploy.is_empty() => (WorkloadKind::Deployment, deploy.to_string()),
            _ => (WorkloadKind::ReplicaSet, owner.name.to_string()),
        },
        "Job" => match cronjob_of(owner.name) {
            Some(cj) => (WorkloadKind::CronJob, cj.to_string()),
            None => (WorkloadKind::Job, owner.name.to_string()),
        },
        "StatefulSet" => (WorkloadKind::StatefulSet, owner.name.to_string()),
        "DaemonSet" => (WorkloadKind::DaemonSet, owner.name.to_string()),
        _ => (WorkloadKind::Pod, pod_name.to_string()),
    }
}

/// The CronJob that named a Job `<cronjob>-<scheduled minutes>`, if the name has that shape.
pub fn cronjob_of(job: &str) -> Option<&str> {
    let (prefix, digits) = job.rsplit_once('-')?;
    (digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()) && !prefix.is_empty())
        .then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let id = WorkloadIdentity::new("prod", "shop", WorkloadKind::Deployment, "web", "nginx");
        assert_eq!(id.to_string(), "prod/shop/deployment/web/nginx");
        assert_eq!(WorkloadIdentity::parse(&id.to_string()).unwrap(), id);
        let host = WorkloadIdentity::new("prod", "", WorkloadKind::Host, "sshd.service", "");
        assert_eq!(
            WorkloadIdentity::parse("prod//host/sshd.service/").unwrap(),
            host
        );
    }

    #[test]
    fn bad_text_forms_say_what_is_wrong() {
        assert!(matches!(
            WorkloadIdentity::parse("shop/web"),
            Err(IdentityError::Shape(_))
        ));
        let err = WorkloadIdentity::parse("c/ns/deploy/web/x").unwrap_err();
        assert!(err.to_string().contains("unknown workload kind 'deploy'"));
        assert!(matches!(
            WorkloadIdentity::parse("c/ns/pod//x"),
            Err(IdentityError::EmptyName(_))
        ));
        assert!(matches!(
            WorkloadIdentity::parse("c/ns/pod/a\u{7}/x"),
            Err(IdentityError::Control(_))
        ));
    }

    #[test]
    fn kinds_parse_case_insensitively() {
        for k in WorkloadKind::ALL {
            assert_eq!(
                k.as_str().to_uppercase().parse::<WorkloadKind>().unwrap(),
                k
            );
        }
    }
}
