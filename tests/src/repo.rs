//! The workspace as tests read it: its root, the deploy tree rendered by `kubectl
//! kustomize`, and the JSON-lines files the sensor writes. One copy of each, for every test
//! binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (where `deploy/`, `scripts/` and `docs/` are).
pub fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// Copies the tree at `from` to `to`, leaving out every `pki` directory (they hold real keys
/// from `procguardctl pki init`; a developer's keys stay where they are).
pub fn copy_without_pki(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "pki" {
                copy_without_pki(&source, &target);
            }
        } else {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}

/// `kubectl kustomize DIR`: the rendered YAML, or what went wrong (the command and its
/// stderr).
pub fn kustomize(dir: &Path) -> Result<String, String> {
    kustomize_with(Command::new("kubectl"), dir)
}

/// [`kustomize`] with a `kubectl` command of the caller's (a version found on another path).
pub fn kustomize_with(mut kubectl: Command, dir: &Path) -> Result<String, String> {
    let out = kubectl
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`kubectl kustomize {}` failed ({}):\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("kubectl printed invalid UTF-8: {e}"))
}

/// The objects of a rendered multi-document YAML stream (documents that do not parse are
/// left out).
pub fn objects(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .filter_map(|doc| serde_yaml::from_str(doc).ok())
        .collect()
}

/// The JSON-lines file at `path` as values, from line `from` on; a line that does not parse
/// (the one being written) and a file not there yet read as nothing.
pub fn jsonl_from(path: &Path, from: usize) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The whole JSON-lines file at `path`; see [`jsonl_from`].
pub fn jsonl(path: &Path) -> Vec<Value> {
    jsonl_from(path, 0)
}

/// How many lines the file at `path` has (0 when it is not there).
pub fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}
