//! The Kubernetes side both binaries share (feature `kube`): the client they build from a
//! kubeconfig or the in-cluster service account, and how a pod names the workload it belongs
//! to. The sensor reads the pods of its node for their metadata; the server reads all pods to
//! check the sensors' reports against them. Both name a pod's workload with
//! [`workload_of`], so that a report and its check agree.

use k8s_openapi::api::core::v1::Pod;
use procguard_core::identity::{workload_of_pod, PodOwner};
use procguard_core::WorkloadKind;
use std::path::{Path, PathBuf};

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("cannot use kubeconfig '{path}': {source}; point --kubeconfig at a valid file")]
    Kubeconfig {
        /// Path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The in-cluster service account could not be used.
    #[error("cannot use the in-cluster service account: {0}; run as a pod with a service account, or pass --kubeconfig")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Builds a client from a kubeconfig file, or from the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::incluster().map_err(Error::InCluster)?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}

/// The workload `pod` belongs to, from its name, `pod-template-hash` label and owner
/// references ([`workload_of_pod`] has the rules).
pub fn workload_of(pod: &Pod) -> (WorkloadKind, String) {
    let owners: Vec<PodOwner<'_>> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| PodOwner {
            kind: &o.kind,
            name: &o.name,
            controller: o.controller == Some(true),
        })
        .collect();
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .map(String::as_str);
    workload_of_pod(
        pod.metadata.name.as_deref().unwrap_or_default(),
        hash,
        &owners,
    )
}
