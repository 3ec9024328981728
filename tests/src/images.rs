//! Test images `FROM scratch`: the host's busybox-static copied (real files, not symlinks, so
//! `/proc/<pid>/exe` names the applet's file as in a real image) to each applet name, plus
//! files and labels of the test's choosing. Built with the classic builder, so an image's ID
//! is the digest of its configuration: two images with the same binaries and another file or
//! label have different digests, as two releases of one application do.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Image tag.
    pub tag: &'a str,
    /// Directories (relative to `/`) and the applet names busybox is copied to in each.
    pub applets: &'a [(&'a str, &'a [&'a str])],
    /// Other files: path inside the image (absolute) and content.
    pub files: &'a [(&'a str, &'a str)],
    /// Image labels.
    pub labels: &'a [(&'a str, &'a str)],
    /// The image's `CMD`.
    pub cmd: &'a [&'a str],
}

/// The host's busybox-static; panics with how to install it when it is missing.
pub fn host_busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox-static is not installed (apt-get install busybox-static)")
}

/// Builds `spec` with `docker build`; panics with Docker's error when it fails.
pub fn build(spec: &Spec<'_>) {
    let busybox = host_busybox();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
    for (d, applets) in spec.applets {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
        for a in *applets {
            std::fs::copy(&busybox, root.join(d).join(a)).expect("copy busybox");
        }
    }
    for (path, content) in spec.files {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("a file in a directory")).expect("mkdir");
        std::fs::write(&p, content).expect("write image file");
    }
    let quote = |s: &str| serde_json::to_string(s).expect("a string");
    let mut dockerfile = String::from("FROM scratch\nCOPY rootfs/ /\n");
    for (k, v) in spec.labels {
        dockerfile.push_str(&format!("LABEL {}={}\n", quote(k), quote(v)));
    }
    let cmd: Vec<String> = spec.cmd.iter().map(|c| quote(c)).collect();
    dockerfile.push_str(&format!("CMD [{}]\n", cmd.join(", ")));
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    let out = Command::new("docker")
        .args(["build", "-q", "-t", spec.tag])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "docker build of {} failed: {}",
        spec.tag,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image built for one test, removed (`docker rmi -f`) when dropped.
#[derive(Debug)]
pub struct Image {
    /// Its tag.
    pub tag: String,
    /// Its `sha256:` ID, standing in for the registry digest of an image never pushed.
    pub digest: String,
}

impl Image {
    /// Builds `spec`.
    pub fn build(spec: &Spec<'_>) -> Self {
        build(spec);
        Self {
            tag: spec.tag.to_string(),
            digest: crate::fake_kube::image_digest(spec.tag),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
