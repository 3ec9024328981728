//! Test fixtures shared by every crate's tests (feature `test-util`, and this crate's own
//! tests): one way to write a process event, so that a field added to [`ProcessEvent`] is
//! added here once instead of in each crate's copy.
//!
//! [`ProcessEvent::test`] is a full, well-formed exec of an image file by a container's
//! entrypoint in the `c/shop/deployment/web/nginx` workload; the chained setters change only
//! what a test is about (`ProcessEvent::test("/bin/sh").argv(&["sh", "-c", "id"]).on_node("n1")`).

use crate::{
    Completeness, ContainerInfo, ExecContext, Origin, ProcessEvent, WorkloadIdentity, WorkloadKind,
};

/// The workload [`ProcessEvent::test`] runs in.
pub fn web() -> WorkloadIdentity {
    WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "web", "nginx")
}

impl ProcessEvent {
    /// A full exec of `exe` (argv `[exe]`, from the image, unhashed) by the entrypoint of pod
    /// `web-1` in [`web`], on node `node-a`, PID 10.
    pub fn test(exe: &str) -> Self {
        ProcessEvent {
            pid: 10,
            ppid: 1,
            ancestors: vec![],
            start_time: None,
            uid: 0,
            gid: 0,
            comm: exe
                .rsplit('/')
                .next()
                .unwrap_or(exe)
                .chars()
                .take(15)
                .collect(),
            exe_path: exe.to_string(),
            argv: vec![exe.to_string()],
            argv_truncated: false,
            applet: None,
            script_path: None,
            exe_sha256: None,
            exe_memfd: false,
            exe_deleted: false,
            exe_writable_location: false,
            origin: Origin::Image,
            container: Some(ContainerInfo {
                container_id: "cid".into(),
                pod_name: Some("web-1".into()),
                ..Default::default()
            }),
            workload: web(),
            context: ExecContext::Entrypoint,
            exec_session: None,
            completeness: Completeness::Full,
            missing: vec![],
            node_name: "node-a".into(),
            attributed_late_ms: None,
        }
    }

    /// In workload `w`.
    pub fn in_workload(mut self, w: &WorkloadIdentity) -> Self {
        self.workload = w.clone();
        self
    }

    /// With this argv.
    pub fn argv(mut self, argv: &[&str]) -> Self {
        self.argv = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    /// With this PID.
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = pid;
        self
    }

    /// On this node.
    pub fn on_node(mut self, node: &str) -> Self {
        self.node_name = node.to_string();
        self
    }

    /// Started this way.
    pub fn context(mut self, context: ExecContext) -> Self {
        self.context = context;
        self
    }

    /// Its executable's content.
    pub fn sha256(mut self, sha256: &str) -> Self {
        self.exe_sha256 = Some(sha256.to_string());
        self
    }

    /// Its executable's origin.
    pub fn origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// On the host: no container, origin `host`.
    pub fn on_host(mut self) -> Self {
        self.container = None;
        self.origin = Origin::Host;
        self
    }
}
