//! Standalone containers: the identity of a container outside any pod (plain Docker, Podman,
//! a runtime without Kubernetes), read from the runtime's own state on the host.
//!
//! A container ID changes every time a container is recreated, so a baseline keyed by it would
//! start over (and learn in silence) at every `docker rm` + `docker run`. The identity is the
//! runtime plus the most stable name the runtime records for the container:
//!
//! | what the runtime records | workload identity (text form) |
//! | --- | --- |
//! | Compose labels `com.docker.compose.project` and `com.docker.compose.service` | `<cluster>//container/<runtime>:compose:<project>/<service>` |
//! | a container name | `<cluster>//container/<runtime>:<name>/` |
//! | nothing readable | `<cluster>//container/<runtime>:id:<first 12 hex of the ID>/` |
//!
//! Names never contain `:` (Docker and Podman allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`), so the three
//! shapes cannot be mistaken for each other. A restarted container keeps its ID and so its
//! identity; a recreated one keeps its name or Compose service.
//!
//! Every name comes from a file only the runtime writes, never from anything the watched
//! process controls (its argv, environment, hostname or files inside its root):
//! - Docker: `<docker root>/containers/<id>/config.v2.json` (`Name`, `Config.Labels`), written
//!   by dockerd when the container is created, so before its first process runs.
//! - Podman: `<podman root>/overlay-containers/containers.json` (`names`), written by
//!   containers/storage when the container is created. Podman keeps labels in libpod's own
//!   database, not in these files, so a Podman container is identified by its name (podman
//!   compose names each container `<project>_<service>_<n>`).
//!
//! A host process is identified by its systemd unit, the last `.service` or `.scope` in its
//! cgroup path ([`host_identity`]), or the user manager (`user@<uid>.service`) it runs under,
//! whose delegated subtree the user names at will ([`crate::cgroup`]). Units systemd names per
//! instance are folded into one
//! stable name, so that each login or connection does not start a baseline of its own (which
//! would learn in silence): `session-<n>.scope` (a logind session; `c<n>` too) is
//! `session.scope`,
//! `name@<instance>.service` (a template instance, e.g. a socket-activated sshd per
//! connection) is `name@.service`, and `run-<id>.scope` / `.service` (systemd-run) is
//! `run.scope` / `run.service`.
//!
//! The roots are `--docker-root` and `--podman-root`. A root that is absent (a Kubernetes node,
//! where the DaemonSet mounts neither) leaves the ID fallback. Lookups are cached per container
//! ID, failures too, in a bounded memo ([`MAX_CACHED`]).

use crate::cgroup::ContainerRef;
use procguard_core::{ContainerRuntime, WorkloadIdentity, WorkloadKind};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Containers whose name is remembered; past it the memo starts over (one file read per
/// container again, never memory). A host runs far fewer standalone containers.
pub const MAX_CACHED: usize = 4_096;
/// Largest `config.v2.json` read. dockerd writes a few KiB (the container's config and
/// state); anything this large is not one.
pub const MAX_DOCKER_CONFIG: u64 = 4 << 20;
/// Largest `containers.json` read: about 600 bytes per container, so over ten thousand. It is
/// read (once per new container) on the capture thread, so it stays small enough to parse in
/// a few milliseconds.
pub const MAX_PODMAN_CONTAINERS: u64 = 8 << 20;

/// Compose's label for the project.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// Compose's label for the service.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// Why a runtime's record of a container could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any the runtime writes.
    #[error("{path} is {size} bytes, over the {limit} a runtime writes; not read")]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The file is not the JSON the runtime writes.
    #[error("{path} is not the runtime's JSON: {source}")]
    Json {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The stable name a runtime records for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A Compose service.
    Compose {
        /// `com.docker.compose.project`.
        project: String,
        /// `com.docker.compose.service`.
        service: String,
    },
    /// The container's name.
    Named(String),
}

/// Whether `s` is a name Docker, Podman or Compose could have given: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
/// at most 253 bytes. Anything else (a label value can be any string) is not used.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<DockerInnerConfig>,
}

#[derive(Deserialize)]
struct DockerInnerConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The name in a Docker `config.v2.json`: the Compose service when both Compose labels are
/// there and valid, else the container name (without Docker's leading `/`).
pub fn docker_name(config_v2: &str) -> Result<Option<Name>, serde_json::Error> {
    let c: DockerConfig = serde_json::from_str(config_v2)?;
    let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
    if let (Some(project), Some(service)) =
        (labels.get(COMPOSE_PROJECT), labels.get(COMPOSE_SERVICE))
    {
        if valid_name(project) && valid_name(service) {
            return Ok(Some(Name::Compose {
                project: project.clone(),
                service: service.clone(),
            }));
        }
    }
    let name = c.name.strip_prefix('/').unwrap_or(&c.name);
    Ok(valid_name(name).then(|| Name::Named(name.to_string())))
}

#[derive(Deserialize)]
struct PodmanContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
}

/// The name of container `id` in a Podman `containers.json` (its first name).
pub fn podman_name(containers_json: &str, id: &str) -> Result<Option<Name>, serde_json::Error> {
    let all: Vec<PodmanContainer> = serde_json::from_str(containers_json)?;
    Ok(all
        .into_iter()
        .find(|c| c.id == id)
        .and_then(|c| c.names.into_iter().next())
        .filter(|n| valid_name(n))
        .map(Name::Named))
}

/// The identity of a container outside any pod, given what its runtime records.
pub fn identity(
    cluster: &str,
    runtime: Option<ContainerRuntime>,
    id: &str,
    name: Option<&Name>,
) -> WorkloadIdentity {
    let rt = runtime.map(|r| r.as_str()).unwrap_or("container");
    let (workload, container) = match name {
        Some(Name::Compose { project, service }) => {
            (format!("{rt}:compose:{project}"), service.clone())
        }
        Some(Name::Named(n)) => (format!("{rt}:{n}"), String::new()),
        None => (
            format!("{rt}:id:{}", &id[..12.min(id.len())]),
            String::new(),
        ),
    };
    WorkloadIdentity::new(cluster, "", WorkloadKind::Container, workload, container)
}

/// The stable name of a systemd unit: per-instance names folded (see the module docs).
pub fn stable_unit(unit: &str) -> String {
    let Some((stem, suffix)) = unit.rsplit_once('.') else {
        return unit.to_string();
    };
    if let Some((template, _instance)) = stem.split_once('@') {
        if !template.is_empty() {
            return format!("{template}@.{suffix}");
        }
    }
    // logind numbers sessions `<n>`, or `c<n>` for those without a seat.
    let numbered = |rest: &str| {
        let n = rest.strip_prefix('c').unwrap_or(rest);
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    };
    if suffix == "scope" && stem.strip_prefix("session-").is_some_and(numbered) {
        return "session.scope".into();
    }
    // systemd-run names transient units run-r<hex>, run-u<n> or run-p<pid>_i<n>.
    if let Some(id) = stem.strip_prefix("run-") {
        let mut b = id.bytes();
        if matches!(b.next(), Some(b'r' | b'u' | b'p'))
            && id.len() > 1
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return format!("run.{suffix}");
        }
    }
    unit.to_string()
}

/// The identity of a host process in systemd unit `unit` (`None`: in no unit).
pub fn host_identity(cluster: &str, unit: Option<&str>) -> WorkloadIdentity {
    let name = unit.map(stable_unit).unwrap_or_else(|| "host".into());
    WorkloadIdentity::new(cluster, "", WorkloadKind::Host, name, "")
}

fn read_bounded(path: &Path, limit: u64) -> Result<String, Error> {
    use std::io::Read;
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read)?;
    let size = f.metadata().map_err(read)?.len();
    if size > limit {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    let mut s = String::with_capacity(size as usize);
    f.take(limit).read_to_string(&mut s).map_err(read)?;
    Ok(s)
}

/// Looks up standalone containers' names in the runtimes' state, with a bounded memo.
#[derive(Debug)]
pub struct Names {
    docker_root: PathBuf,
    podman_root: PathBuf,
    /// By container ID: the runtime the name was found in, and the name (`None`: nothing
    /// readable, the ID is the identity).
    cache: Mutex<HashMap<String, Option<(ContainerRuntime, Name)>>>,
}

impl Names {
    /// Reads Docker's state under `docker_root` (`/var/lib/docker`) and Podman's under
    /// `podman_root` (`/var/lib/containers/storage`).
    pub fn new(docker_root: impl Into<PathBuf>, podman_root: impl Into<PathBuf>) -> Self {
        Self {
            docker_root: docker_root.into(),
            podman_root: podman_root.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Which roots exist (for the start-up log).
    pub fn roots_present(&self) -> (bool, bool) {
        (
            self.docker_root.join("containers").is_dir(),
            self.podman_root.join("overlay-containers").is_dir(),
        )
    }

    fn docker(&self, id: &str) -> Result<Option<Name>, Error> {
        let path = self
            .docker_root
            .join("containers")
            .join(id)
            .join("config.v2.json");
        let text = read_bounded(&path, MAX_DOCKER_CONFIG)?;
        docker_name(&text).map_err(|source| Error::Json { path, source })
    }

    fn podman(&self, id: &str) -> Result<Option<Name>, Error> {
        let path = self
            .podman_root
            .join("overlay-containers")
            .join("containers.json");
        let text = read_bounded(&path, MAX_PODMAN_CONTAINERS)?;
        podman_name(&text, id).map_err(|source| Error::Json { path, source })
    }

    /// What the runtimes record for container `id`, read once per container.
    fn lookup(
        &self,
        id: &str,
        runtime: Option<ContainerRuntime>,
    ) -> Option<(ContainerRuntime, Name)> {
        if let Some(hit) = self.cache.lock().ok()?.get(id) {
            return hit.clone();
        }
        // Only the runtime the cgroup path names is asked; a path that names none (a bare ID)
        // may be either. The ID is matched exactly, so no other container's name is taken.
        let tries: &[ContainerRuntime] = match runtime {
            Some(ContainerRuntime::Docker) => &[ContainerRuntime::Docker],
            Some(ContainerRuntime::Podman) => &[ContainerRuntime::Podman],
            Some(_) => &[],
            None => &[ContainerRuntime::Docker, ContainerRuntime::Podman],
        };
        let mut found = None;
        for rt in tries {
            let got = match rt {
                ContainerRuntime::Podman => self.podman(id),
                _ => self.docker(id),
            };
            match got {
                Ok(Some(name)) => {
                    found = Some((*rt, name));
                    break;
                }
                Ok(None) => {}
                // Absent on a host without that runtime (or a root not mounted): expected.
                Err(Error::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(message = "Cannot read a container's name from its runtime; it is identified by its ID.", container_id = id, runtime = rt.as_str(), %error)
                }
            }
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(id.to_string(), found.clone());
        }
        found
    }

    /// The identity of container `c`, which is in no pod.
    pub fn identity_of(&self, cluster: &str, c: &ContainerRef) -> WorkloadIdentity {
        match self.lookup(&c.id, c.runtime) {
            Some((rt, name)) => identity(cluster, Some(rt), &c.id, Some(&name)),
            None => identity(cluster, c.runtime, &c.id, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "56c7af83f6f4a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

    fn docker_config(name: &str, labels: &str) -> String {
        // The shape dockerd writes (trimmed): Name with its leading '/', labels under Config.
        format!(
            r#"{{"StreamConfig":{{}},"State":{{"Running":true,"Pid":4242}},"ID":"{ID}","Path":"/bin/sleep","Args":["3600"],"Config":{{"Hostname":"56c7af83f6f4","Env":["PATH=/bin"],"Cmd":["/bin/sleep","3600"],"Image":"procguard-test-busybox:2","Labels":{labels}}},"Name":"{name}","Driver":"overlay2","RestartCount":0}}"#
        )
    }

    fn check(cluster: &str, rt: Option<ContainerRuntime>, name: Option<Name>, expected: &str) {
        let id = identity(cluster, rt, ID, name.as_ref());
        assert_eq!(id.to_string(), expected);
        id.validate().unwrap();
        assert_eq!(WorkloadIdentity::parse(expected).unwrap(), id);
    }

    #[test]
    fn docker_configs_give_the_compose_service_or_the_name() {
        let compose = docker_config(
            "/p-web-1",
            r#"{"com.docker.compose.project":"p","com.docker.compose.service":"web","other":"x"}"#,
        );
        assert_eq!(
            docker_name(&compose).unwrap(),
            Some(Name::Compose {
                project: "p".into(),
                service: "web".into()
            })
        );
        let named = docker_config("/pg-web", "{}");
        assert_eq!(
            docker_name(&named).unwrap(),
            Some(Name::Named("pg-web".into()))
        );
        // Labels null (no labels at all), as dockerd writes for some containers.
        let null = docker_config("/a.b_c-1", "null");
        assert_eq!(
            docker_name(&null).unwrap(),
            Some(Name::Named("a.b_c-1".into()))
        );
        // Only one Compose label: not a Compose service.
        let half = docker_config("/solo", r#"{"com.docker.compose.project":"p"}"#);
        assert_eq!(
            docker_name(&half).unwrap(),
            Some(Name::Named("solo".into()))
        );
        // A label value no Compose would write (a '/' would also break the identity's text
        // form): the container name is used instead.
        let odd = docker_config(
            "/odd",
            r#"{"com.docker.compose.project":"a/b","com.docker.compose.service":"web"}"#,
        );
        assert_eq!(docker_name(&odd).unwrap(), Some(Name::Named("odd".into())));
        // No usable name at all.
        assert_eq!(docker_name(&docker_config("", "{}")).unwrap(), None);
        assert_eq!(docker_name(r#"{"ID":"x"}"#).unwrap(), None);
        assert!(docker_name("not json").is_err());
    }

    #[test]
    fn podman_containers_json_gives_the_name() {
        // As containers/storage writes it (one record shown as written by podman 4).
        let json = format!(
            r#"[{{"id":"{other}","names":["first"],"image":"3dec","layer":"e774","metadata":"{{}}","created":"2026-12-02T15:00:32.827061438Z","flags":{{"MountLabel":"","ProcessLabel":""}}}},{{"id":"{ID}","names":["pgid-web"],"image":"3dec66ce","layer":"e774c623","metadata":"{{\"image-name\":\"localhost/pgid:1\",\"name\":\"pgid-web\"}}","created":"2026-12-02T15:00:32.827061438Z","flags":{{}}}}]"#,
            other = ID.replace('5', "6")
        );
        assert_eq!(
            podman_name(&json, ID).unwrap(),
            Some(Name::Named("pgid-web".into()))
        );
        assert_eq!(podman_name(&json, &ID.replace('5', "7")).unwrap(), None);
        assert_eq!(podman_name("[]", ID).unwrap(), None);
        assert!(podman_name("{}", ID).is_err());
    }

    #[test]
    fn identities_name_the_runtime_and_cannot_be_confused() {
        use ContainerRuntime::*;
        check(
            "c",
            Some(Docker),
            Some(Name::Compose {
                project: "p".into(),
                service: "web".into(),
            }),
            "c//container/docker:compose:p/web",
        );
        check(
            "c",
            Some(Podman),
            Some(Name::Named("pg-web".into())),
            "c//container/podman:pg-web/",
        );
        check(
            "c",
            Some(Docker),
            None,
            "c//container/docker:id:56c7af83f6f4/",
        );
        check("c", None, None, "c//container/container:id:56c7af83f6f4/");
        // A container named like an ID prefix is still not the ID fallback.
        check(
            "c",
            Some(Docker),
            Some(Name::Named("56c7af83f6f4".into())),
            "c//container/docker:56c7af83f6f4/",
        );
    }

    #[test]
    fn names_are_read_from_the_runtime_roots_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        let podman = dir.path().join("storage");
        std::fs::create_dir_all(docker.join("containers").join(ID)).unwrap();
        std::fs::create_dir_all(podman.join("overlay-containers")).unwrap();
        std::fs::write(
            docker.join("containers").join(ID).join("config.v2.json"),
            docker_config("/pg-web", "{}"),
        )
        .unwrap();
        let pid = ID.replace('5', "9");
        std::fs::write(
            podman.join("overlay-containers").join("containers.json"),
            format!(r#"[{{"id":"{pid}","names":["pod-man"]}}]"#),
        )
        .unwrap();
        let names = Names::new(&docker, &podman);
        assert_eq!(names.roots_present(), (true, true));
        let c = |id: &str, runtime| ContainerRef {
            id: id.to_string(),
            runtime,
            pod_uid: None,
            qos: None,
            path: String::new(),
        };
        let d = c(ID, Some(ContainerRuntime::Docker));
        assert_eq!(
            names.identity_of("c", &d).to_string(),
            "c//container/docker:pg-web/"
        );
        // A bare-ID path: both runtimes are asked, the exact ID decides.
        let p = c(&pid, None);
        assert_eq!(
            names.identity_of("c", &p).to_string(),
            "c//container/podman:pod-man/"
        );
        // Podman is not asked about a container the path says is Docker's.
        let wrong = c(&pid, Some(ContainerRuntime::Docker));
        let other = Names::new(&docker, &podman);
        assert_eq!(
            other.identity_of("c", &wrong).to_string(),
            format!("c//container/docker:id:{}/", &pid[..12])
        );
        // Cached: the file is read once per container.
        std::fs::remove_dir_all(docker.join("containers").join(ID)).unwrap();
        assert_eq!(
            names.identity_of("c", &d).to_string(),
            "c//container/docker:pg-web/"
        );
        // A missing root is the ID fallback, not an error.
        let none = Names::new(dir.path().join("nope"), dir.path().join("nope2"));
        assert_eq!(none.roots_present(), (false, false));
        assert_eq!(
            none.identity_of("c", &d).to_string(),
            "c//container/docker:id:56c7af83f6f4/"
        );
    }

    #[test]
    fn host_processes_are_their_unit_with_instances_folded() {
        for (unit, expected) in [
            (Some("sshd.service"), "c//host/sshd.service/"),
            (Some("cron.service"), "c//host/cron.service/"),
            (Some("init.scope"), "c//host/init.scope/"),
            (None, "c//host/host/"),
            (Some("session-3.scope"), "c//host/session.scope/"),
            (Some("session-c2.scope"), "c//host/session.scope/"),
            (Some("session-x.scope"), "c//host/session-x.scope/"),
            (
                Some("sshd@3-10.0.0.1:22-10.0.0.2:51234.service"),
                "c//host/sshd@.service/",
            ),
            (Some("getty@tty1.service"), "c//host/getty@.service/"),
            (Some("user@1000.service"), "c//host/user@.service/"),
            (
                Some("run-r1b2c3d4e5f60718293a4b5c6d7e8f90a.scope"),
                "c//host/run.scope/",
            ),
            (Some("run-u42.service"), "c//host/run.service/"),
            (Some("run-p123_i0.service"), "c//host/run.service/"),
            (Some("runner.service"), "c//host/runner.service/"),
            (Some("run-.service"), "c//host/run-.service/"),
        ] {
            let id = host_identity("c", unit);
            assert_eq!(id.to_string(), expected, "{unit:?}");
            id.validate().unwrap();
        }
    }

    #[test]
    fn oversized_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.json");
        std::fs::write(&f, vec![b' '; 2048]).unwrap();
        assert!(matches!(
            read_bounded(&f, 1024),
            Err(Error::TooLarge { size: 2048, .. })
        ));
        assert_eq!(read_bounded(&f, 4096).unwrap().len(), 2048);
    }
}
