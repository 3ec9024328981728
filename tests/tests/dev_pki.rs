//! The development install, end to end on one host: the files `procguardctl pki init` writes
//! are exactly the files the dev overlay turns into Secrets, and a server and a sensor
//! configured exactly as the rendered manifests configure them (same environment, same Secret
//! keys at the same mount paths) accept each other, with the sensor verifying the server under
//! the in-cluster name it dials and reporting for a node other than its certificate's name.
//!
//! Only what a cluster would provide differently is changed: listen addresses (loopback
//! instead of the pod IP), the host `/proc` paths, the data and spool directories, and the
//! address the sensor connects to (loopback; the name it verifies stays the Service's).

use procguard_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Standard base64, as Kubernetes writes Secret data.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("invalid base64 character {:?}", c as char))
            as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A workload of the rendered manifest, with its Secret mounts materialised under `root`.
struct Workload {
    /// The container's literal environment.
    env: BTreeMap<String, String>,
    /// Secret files: mount path + key -> contents.
    files: BTreeMap<String, Vec<u8>>,
}

fn workload(objects: &[Value], kind: &str, name: &str) -> Workload {
    let owner = objects
        .iter()
        .find(|o| text(o, "/kind") == kind && text(o, "/metadata/name") == name)
        .unwrap_or_else(|| panic!("the dev overlay renders no {kind} {name}"));
    let pod = owner.pointer("/spec/template/spec").expect("pod spec");
    let c = &items(pod, "/containers")[0];
    let env = items(c, "/env")
        .iter()
        .filter_map(|e| {
            Some((
                text(e, "/name").to_string(),
                e.get("value")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let mut files = BTreeMap::new();
    for m in items(c, "/volumeMounts") {
        // A mount with no pod volume is a StatefulSet's claim: no Secret there.
        let Some(volume) = items(pod, "/volumes")
            .iter()
            .find(|v| text(v, "/name") == text(m, "/name"))
        else {
            continue;
        };
        let secret_name = text(volume, "/secret/secretName");
        if secret_name.is_empty() {
            continue;
        }
        let secret = objects
            .iter()
            .find(|o| text(o, "/kind") == "Secret" && text(o, "/metadata/name") == secret_name)
            .unwrap_or_else(|| panic!("{kind} {name} mounts Secret {secret_name}, which the dev overlay does not render"));
        for (key, value) in secret["data"].as_object().expect("Secret data") {
            files.insert(
                format!("{}/{key}", text(m, "/mountPath")),
                base64_decode(value.as_str().expect("base64 value")),
            );
        }
    }
    Workload { env, files }
}

impl Workload {
    /// Writes the Secret files under `root` and returns the environment with every path into
    /// a Secret mount moved there. A path the environment names that no Secret provides fails.
    fn materialise(&self, root: &Path) -> BTreeMap<String, String> {
        for (path, contents) in &self.files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, contents).unwrap();
        }
        let mut env = self.env.clone();
        for value in env.values_mut() {
            if value.starts_with("/etc/") {
                assert!(
                    self.files.contains_key(value.as_str()),
                    "the manifest points at {value}, which no mounted Secret key provides"
                );
                *value = root
                    .join(value.trim_start_matches('/'))
                    .display()
                    .to_string();
            }
        }
        env
    }
}

#[test]
fn pki_init_output_is_what_the_dev_overlay_mounts_and_it_connects() {
    if !require(is_root(), "the sensor needs root for the proc connector") {
        return;
    }
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        kubectl,
        "this test renders deploy/ with kubectl (>= 1.27) kustomize",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let deploy = work.path().join("deploy");
    repo::copy_without_pki(&repo::root().join("deploy"), &deploy);

    // The command docs/deploy.md gives, in the place it gives.
    let pki = deploy.join("overlays/dev/pki");
    let out = Command::new(bin("procguardctl"))
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .args(["--fleet", "procguard-sensor"])
        .output()
        .expect("procguardctl pki init");
    assert!(
        out.status.success(),
        "pki init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = repo::objects(
        &repo::kustomize(&deploy.join("overlays/dev")).unwrap_or_else(|e| {
            panic!("the dev overlay does not render with pki init's files: {e}")
        }),
    );

    let server_w = workload(&objects, "StatefulSet", "procguard-server");
    let sensor_w = workload(&objects, "DaemonSet", "procguard-sensor");
    // The Secrets carry pki init's files byte for byte.
    for (mounted, file) in [
        ("/etc/procguard/tls/tls.crt", "server.crt"),
        ("/etc/procguard/tls/tls.key", "server.key"),
        ("/etc/procguard/tls/ca.crt", "ca.crt"),
        ("/etc/procguard/tokens/tokens.yaml", "tokens.yaml"),
    ] {
        assert_eq!(
            server_w.files.get(mounted),
            Some(&std::fs::read(pki.join(file)).unwrap()),
            "the server's {mounted} is not pki init's {file}"
        );
    }
    for (mounted, file) in [
        ("/etc/procguard/tls/tls.crt", "sensor.crt"),
        ("/etc/procguard/tls/tls.key", "sensor.key"),
        ("/etc/procguard/tls/ca.crt", "ca.crt"),
    ] {
        assert_eq!(
            sensor_w.files.get(mounted),
            Some(&std::fs::read(pki.join(file)).unwrap()),
            "the sensor's {mounted} is not pki init's {file}"
        );
    }

    // The server, configured by the manifest's environment.
    let (grpc, admin) = (free_port(), free_port());
    let mut env = server_w.materialise(&work.path().join("server-root"));
    env.insert("PROCGUARD_GRPC_ADDR".into(), format!("127.0.0.1:{grpc}"));
    env.insert("PROCGUARD_ADMIN_ADDR".into(), format!("127.0.0.1:{admin}"));
    env.insert(
        "PROCGUARD_DATA_DIR".into(),
        work.path().join("data").display().to_string(),
    );
    // In a cluster the server reads pods (PROCGUARD_KUBE=on) through its service account; the
    // fake API server stands in for the cluster's here.
    let kube = procguard_tests::fake_kube::FakeKube::start();
    if env.get("PROCGUARD_KUBE").map(String::as_str) == Some("on") {
        env.insert(
            "PROCGUARD_KUBECONFIG".into(),
            kube.kubeconfig(work.path()).display().to_string(),
        );
    }
    let mut cmd = Command::new(bin("procguard-server"));
    cmd.envs(&env);
    let server = Proc::spawn(cmd, work.path().join("server.log"));
    assert!(
        wait_for(Duration::from_secs(15), || http_ok(admin, "/readyz")
            .then_some(()))
        .is_some(),
        "the server did not start with the dev overlay's configuration:\n{}",
        server.log_text()
    );

    // The sensor, configured by the manifest's environment, for a node whose name is not its
    // certificate's: the shared certificate is accepted because the server's fleet names say so.
    let dialled = env_host(&sensor_w.env["PROCGUARD_SERVER"]);
    let sensor_admin = free_port();
    let mut env = sensor_w.materialise(&work.path().join("sensor-root"));
    env.insert("NODE_NAME".into(), "dev-node-a".into());
    env.insert(
        "PROCGUARD_SERVER".into(),
        format!("https://127.0.0.1:{grpc}"),
    );
    env.insert("PROCGUARD_TLS_SERVER_NAME".into(), dialled.clone());
    env.insert(
        "PROCGUARD_ADMIN_ADDR".into(),
        format!("127.0.0.1:{sensor_admin}"),
    );
    env.insert("PROCGUARD_PROC_ROOT".into(), "/proc".into());
    env.insert("PROCGUARD_CGROUP_ROOT".into(), "/sys/fs/cgroup".into());
    env.remove("PROCGUARD_NETLINK_NETNS");
    env.insert("PROCGUARD_POD_METADATA".into(), "off".into());
    env.insert(
        "PROCGUARD_SPOOL_DIR".into(),
        work.path().join("spool").display().to_string(),
    );
    let mut cmd = Command::new(bin("procguard-sensor"));
    cmd.envs(&env);
    let sensor = Proc::spawn(cmd, work.path().join("sensor.log"));
    assert!(
        wait_for(Duration::from_secs(20), || metric(
            sensor_admin,
            "procguard_sensor_connected"
        )
        .filter(|v| *v >= 1.0))
        .is_some(),
        "the sensor did not connect with the dev overlay's certificates:\nsensor:\n{}\nserver:\n{}",
        sensor.log_text(),
        server.log_text()
    );

    // Security staff: pki init's ca.crt and admin.token, verifying the in-cluster name.
    let out = Command::new(bin("procguardctl"))
        .env("PROCGUARD_SERVER", format!("https://127.0.0.1:{grpc}"))
        .env("PROCGUARD_TLS_CA", pki.join("ca.crt"))
        .env("PROCGUARD_TLS_SERVER_NAME", &dialled)
        .env("PROCGUARD_TOKEN_FILE", pki.join("admin.token"))
        .args(["audit", "list", "-o", "json"])
        .output()
        .expect("procguardctl");
    assert!(
        out.status.success(),
        "procguardctl with pki init's ca.crt and admin.token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host of an `https://host:port` URL.
fn env_host(url: &str) -> String {
    url.strip_prefix("https://")
        .and_then(|rest| rest.split([':', '/']).next())
        .unwrap_or_else(|| panic!("PROCGUARD_SERVER {url:?} is not https://host:port"))
        .to_string()
}
