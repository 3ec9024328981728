//! Reading a process's container from `/proc/<pid>/cgroup`.
//!
//! Pure parsing, no I/O. Handles cgroup v1 (one line per hierarchy), v2 (`0::<path>`) and
//! hybrid hosts, and the path shapes containerd, CRI-O, Docker and Podman write under the
//! systemd and cgroupfs drivers (see `shared/reference/cgroup-paths.md`). The line that names a
//! container wins over lines that do not (a hybrid host's `0::/`).
//!
//! The kernel writes each path relative to the *reader's* cgroup namespace. A sensor in a
//! private cgroup namespace (every container on a cgroup-v2 node with containerd or CRI-O)
//! reads other processes' paths as `/../../kubepods.slice/…`. [`View`] holds the root of the
//! sensor's namespace in each hierarchy, as the host names it, so every path is resolved to
//! the host's absolute path before it is interpreted; `crate::cgroupns` decides the view at
//! startup. A path that leaves the view's root is unattributed, never guessed.

use procguard_core::{ContainerRuntime, QosClass};
use std::sync::Arc;

/// What a cgroup path says about its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A container (shared: every process of the container holds the same one, and a fork or
    /// an exec copies a pointer, not the ID and path).
    Container(Arc<ContainerRef>),
    /// A host process; `unit` is its systemd unit or scope when the path names one.
    Host {
        /// e.g. `sshd.service`.
        unit: Option<String>,
    },
    /// The path cannot be attributed (it lies outside the sensor's cgroup namespace and the
    /// namespace's root is unknown, or it is malformed).
    Unattributed,
}

/// A container found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// 64-hex container ID.
    pub id: String,
    /// Runtime, when the path shape names one.
    pub runtime: Option<ContainerRuntime>,
    /// Pod UID with dashes.
    pub pod_uid: Option<String>,
    /// QoS class, for pods.
    pub qos: Option<QosClass>,
    /// The container's cgroup path (for fanotify marks and diagnostics).
    pub path: String,
}

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads one segment as a container ID with its runtime.
fn container_segment(seg: &str) -> Option<(String, Option<ContainerRuntime>)> {
    let scope = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, rt) in [
        ("cri-containerd-", Some(ContainerRuntime::Containerd)),
        ("crio-", Some(ContainerRuntime::CriO)),
        ("docker-", Some(ContainerRuntime::Docker)),
        ("libpod-", Some(ContainerRuntime::Podman)),
    ] {
        if let Some(id) = scope.strip_prefix(prefix) {
            // crio-conmon-<id> is the runtime monitor, not the workload.
            return is_id(id).then(|| (id.to_string(), rt));
        }
    }
    is_id(seg).then(|| (seg.to_string(), None))
}

/// Reads one segment as a pod UID (`pod<uid>` or `...-pod<uid_>.slice`).
fn pod_segment(seg: &str) -> Option<String> {
    let s = seg.strip_suffix(".slice").unwrap_or(seg);
    let idx = s.rfind("pod")?;
    let uid = &s[idx + 3..];
    if idx > 0 && !s[..idx].ends_with('-') {
        return None;
    }
    let uid = uid.replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    // A static pod's UID is the kubelet's 32-hex hash of its manifest (the API's mirror pod
    // names it in its `kubernetes.io/config.mirror` annotation).
    let static_pod = uid.len() == 32 && uid.bytes().all(|b| b.is_ascii_hexdigit());
    (ok || static_pod).then_some(uid)
}

/// Longest cgroup path accepted: the kernel's `PATH_MAX`. A longer one cannot come from the
/// kernel, so it is unattributed rather than copied into events.
pub const MAX_PATH: usize = 4096;

/// Interprets one cgroup path.
pub fn parse_path(path: &str) -> Placement {
    if path.starts_with("/..") || path.len() > MAX_PATH {
        return Placement::Unattributed;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some((idx, (id, mut runtime))) = segs
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| container_segment(s).map(|c| (i, c)))
    else {
        // A user's systemd manager (user@<uid>.service) is delegated its subtree and may
        // create cgroups of any name under it (even "sshd.service"): a process there is the
        // manager's, never a unit it names itself.
        let manager = segs
            .iter()
            .find(|s| s.starts_with("user@") && s.ends_with(".service"));
        let unit = manager
            .or_else(|| {
                segs.iter()
                    .rev()
                    .find(|s| s.ends_with(".service") || s.ends_with(".scope"))
            })
            .map(|s| s.to_string());
        return Placement::Host { unit };
    };
    let parents = &segs[..idx];
    let pod_uid = parents.iter().rev().find_map(|s| pod_segment(s));
    let in_kube = parents.iter().any(|s| s.contains("kubepods"));
    if runtime.is_none() && !in_kube && parents.first() == Some(&"docker") {
        runtime = Some(ContainerRuntime::Docker);
    }
    let qos = in_kube.then(|| {
        if parents.iter().any(|s| s.contains("besteffort")) {
            QosClass::BestEffort
        } else if parents.iter().any(|s| s.contains("burstable")) {
            QosClass::Burstable
        } else {
            QosClass::Guaranteed
        }
    });
    Placement::Container(Arc::new(ContainerRef {
        id,
        runtime,
        pod_uid,
        qos,
        path: path.to_string(),
    }))
}

/// Where the sensor's cgroup namespace is rooted, per hierarchy, in the host's tree.
///
/// [`View::host`] (no roots) is the host's own namespace: paths are taken as written. A view
/// with roots resolves every path of hierarchy `h` against `roots[h]`, which is what the
/// kernel does itself for a reader in the host's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// (hierarchy ID, absolute root of the sensor's namespace in it).
    roots: Vec<(u32, String)>,
}

impl View {
    /// The host's own cgroup namespace: paths are absolute as read.
    pub fn host() -> Self {
        Self::default()
    }

    /// A private namespace whose root in hierarchy `id` is the absolute path `root`.
    pub fn with_root(mut self, id: u32, root: &str) -> Self {
        let root = normalize("/", root).unwrap_or_else(|| "/".into());
        self.roots.retain(|(h, _)| *h != id);
        if root != "/" {
            self.roots.push((id, root));
        }
        self
    }

    /// Whether paths are read as the host writes them (no resolution needed).
    pub fn is_host(&self) -> bool {
        self.roots.is_empty()
    }

    /// The host's absolute form of `path` as read for hierarchy `id`; `None` when it leaves
    /// the host's root (only possible when the namespace's root is unknown).
    fn resolve<'a>(&self, id: Option<u32>, path: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        let root = id.and_then(|id| self.roots.iter().find(|(h, _)| *h == id));
        match root {
            None if path.starts_with("/..") => None,
            None => Some(std::borrow::Cow::Borrowed(path)),
            Some((_, root)) => normalize(root, path).map(std::borrow::Cow::Owned),
        }
    }
}

/// `root` joined with `path` (which the kernel writes with a leading `/`), with `..` and `.`
/// segments applied; `None` when `..` climbs above `/`.
fn normalize(root: &str, path: &str) -> Option<String> {
    let mut segs: Vec<&str> = Vec::new();
    for seg in root.split('/').chain(path.split('/')) {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop()?;
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(root.len() + path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Interprets the whole content of `/proc/<pid>/cgroup` as read from the host's cgroup
/// namespace. See [`parse_in`].
pub fn parse(content: &str) -> Placement {
    parse_in(content, &View::host())
}

/// Interprets the whole content of `/proc/<pid>/cgroup`, read through `view`. A line naming a
/// container wins; the v1 lines of one process must agree on it, and disagreement is reported
/// as unattributed.
pub fn parse_in(content: &str, view: &View) -> Placement {
    let mut found: Option<Arc<ContainerRef>> = None;
    let mut host: Option<Placement> = None;
    for line in content.lines() {
        // hierarchy-ID:controller-list:path; the path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(path) = view.resolve(id.parse().ok(), path) else {
            continue;
        };
        match parse_path(&path) {
            Placement::Container(c) => match &found {
                Some(prev) if prev.id != c.id => return Placement::Unattributed,
                Some(_) => {}
                None => found = Some(c),
            },
            h @ Placement::Host { unit: Some(_) } => host = Some(h),
            h @ Placement::Host { unit: None } if host.is_none() => host = Some(h),
            _ => {}
        }
    }
    match (found, host) {
        (Some(c), _) => Placement::Container(c),
        (None, Some(h)) => h,
        (None, None) => Placement::Unattributed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3b5e8c1d2f4a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
    const UID: &str = "3f0c1e2a-1b2c-4d5e-8f90-123456789abc";
    const UID_: &str = "3f0c1e2a_1b2c_4d5e_8f90_123456789abc";

    fn check(content: &str, runtime: Option<ContainerRuntime>, pod: bool, qos: Option<QosClass>) {
        match parse(content) {
            Placement::Container(c) => {
                assert_eq!(c.id, ID, "{content}");
                assert_eq!(c.runtime, runtime, "{content}");
                assert_eq!(c.pod_uid.as_deref(), pod.then_some(UID), "{content}");
                assert_eq!(c.qos, qos, "{content}");
            }
            other => panic!("{content}: {other:?}"),
        }
    }

    #[test]
    fn every_reference_shape_is_attributed() {
        use ContainerRuntime::*;
        use QosClass::*;
        let cases: Vec<(String, Option<ContainerRuntime>, bool, Option<QosClass>)> = vec![
            (format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"), Some(Containerd), true, Some(Burstable)),
            (format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"), Some(Containerd), true, Some(BestEffort)),
            (format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"), Some(Containerd), true, Some(Guaranteed)),
            (format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"), Some(CriO), true, Some(Burstable)),
            (format!("0::/kubepods/burstable/pod{UID}/{ID}"), None, true, Some(Burstable)),
            (format!("0::/kubepods/pod{UID}/{ID}"), None, true, Some(Guaranteed)),
            (format!("0::/kubepods/besteffort/pod{UID}/{ID}"), None, true, Some(BestEffort)),
            (format!("0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"), Some(Containerd), true, Some(BestEffort)),
            (format!("0::/system.slice/docker-{ID}.scope"), Some(Docker), false, None),
            (format!("0::/docker/{ID}"), Some(Docker), false, None),
            (format!("0::/machine.slice/libpod-{ID}.scope"), Some(Podman), false, None),
            (format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"), Some(Podman), false, None),
        ];
        for (content, rt, pod, qos) in cases {
            check(&content, rt, pod, qos);
        }
    }

    #[test]
    fn v1_and_hybrid_hosts_pick_the_container_line() {
        let v1 = format!(
            "12:memory:/kubepods/burstable/pod{UID}/{ID}\n11:pids:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"
        );
        check(&v1, None, true, Some(QosClass::Burstable));
        let hybrid = format!("0::/\n4:memory:/kubepods/besteffort/pod{UID}/{ID}\n");
        check(&hybrid, None, true, Some(QosClass::BestEffort));
    }

    #[test]
    fn static_pods_carry_their_manifest_hash() {
        let hash = "7c2b6c0b8a7b4f1c9c8e0d1f2a3b4c5d";
        match parse(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
        )) {
            Placement::Container(c) => assert_eq!(c.pod_uid.as_deref(), Some(hash)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn disagreeing_v1_lines_are_not_guessed() {
        let other = ID.replace('3', "4");
        let content = format!("12:memory:/docker/{ID}\n11:pids:/docker/{other}\n");
        assert_eq!(parse(&content), Placement::Unattributed);
    }

    #[test]
    fn conmon_and_host_processes_are_not_containers() {
        let conmon = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope");
        assert!(matches!(parse(&conmon), Placement::Host { .. }));
        assert_eq!(
            parse("0::/system.slice/sshd.service\n"),
            Placement::Host {
                unit: Some("sshd.service".into())
            }
        );
        assert_eq!(
            parse("0::/user.slice/user-0.slice/session-3.scope"),
            Placement::Host {
                unit: Some("session-3.scope".into())
            }
        );
        assert_eq!(
            parse("0::/init.scope"),
            Placement::Host {
                unit: Some("init.scope".into())
            }
        );
        assert_eq!(parse("0::/\n"), Placement::Host { unit: None });
        // Under a user's delegated manager, a cgroup named like a system unit is the manager's.
        assert_eq!(
            parse("0::/user.slice/user-1000.slice/user@1000.service/app.slice/sshd.service\n"),
            Placement::Host {
                unit: Some("user@1000.service".into())
            }
        );
    }

    /// What the kernel writes for `abs` to a reader whose namespace is rooted at `root`: the
    /// common part dropped, one `..` per remaining segment of `root`, then the rest of `abs`.
    fn as_read_from(root: &str, abs: &str) -> String {
        let r: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
        let a: Vec<&str> = abs.split('/').filter(|s| !s.is_empty()).collect();
        let common = r.iter().zip(&a).take_while(|(x, y)| x == y).count();
        let mut out = String::new();
        for _ in common..r.len() {
            out.push_str("/..");
        }
        for s in &a[common..] {
            out.push('/');
            out.push_str(s);
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    #[test]
    fn every_shape_attributes_identically_from_a_private_namespace() {
        let sid = ID.replace('3', "9");
        let suid = "11111111_2222_3333_4444_555555555555";
        // Where a sensor's own container sits on the node shapes of the reference file.
        let sensor_roots = [
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{suid}.slice/cri-containerd-{sid}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{suid}.slice/crio-{sid}.scope"),
            format!("/kubepods/burstable/pod{}/{sid}", suid.replace('_', "-")),
            format!("/kubepods/besteffort/pod{}/{sid}", suid.replace('_', "-")),
            format!("/docker/{sid}"),
            format!("/machine.slice/libpod-{sid}.scope"),
            "/system.slice/procguard.service".to_string(),
        ];
        let targets = [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
            format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope"),
            "/system.slice/sshd.service".to_string(),
            "/init.scope".to_string(),
            "/".to_string(),
        ];
        for root in &sensor_roots {
            for abs in &targets {
                let expected = parse(&format!("0::{abs}\n"));
                // cgroup v2 (hierarchy 0).
                let read = format!("0::{}\n", as_read_from(root, abs));
                let view = View::host().with_root(0, root);
                assert_eq!(
                    parse_in(&read, &view),
                    expected,
                    "v2: {root} reading {read}"
                );
                // cgroup v1: a private namespace has a root per hierarchy.
                let read = format!(
                    "12:memory:{}\n1:name=systemd:{}\n0::/\n",
                    as_read_from(root, abs),
                    as_read_from(root, abs)
                );
                let view = View::host().with_root(12, root).with_root(1, root);
                assert_eq!(
                    parse_in(&read, &view),
                    expected,
                    "v1: {root} reading {read}"
                );
                // Without the view, a path outside the namespace is never guessed at.
                if as_read_from(root, abs).starts_with("/..") {
                    assert!(
                        !matches!(
                            parse(&format!("0::{}", as_read_from(root, abs))),
                            Placement::Container(_)
                        ),
                        "{root} reading {abs}"
                    );
                }
            }
        }
    }

    #[test]
    fn paths_leaving_the_root_are_not_resolved() {
        let view = View::host().with_root(0, "/a/b");
        assert_eq!(parse_in("0::/../../../x\n", &view), Placement::Unattributed);
        assert_eq!(normalize("/", "/../x"), None);
        assert_eq!(normalize("/a/b", "/../c/./d").as_deref(), Some("/a/c/d"));
        assert_eq!(normalize("/a", "/..").as_deref(), Some("/"));
        assert!(View::host().with_root(3, "/").is_host());
    }

    #[test]
    fn foreign_namespaces_and_garbage_are_unattributed() {
        assert_eq!(parse("0::/../../kubepods/x\n"), Placement::Unattributed);
        assert_eq!(parse(""), Placement::Unattributed);
        assert_eq!(
            parse("garbage without colons\n\u{0}\u{1}"),
            Placement::Unattributed
        );
        // A 63-hex segment is not an ID.
        assert!(matches!(
            parse(&format!("0::/docker/{}", &ID[1..])),
            Placement::Host { .. }
        ));
    }
}
