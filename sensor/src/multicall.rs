//! Multi-call binaries recognised by their content: one file's bytes seen under two or more
//! file names (busybox images that copy, rather than link, the binary to every applet name).
//!
//! The tracker already knows the well-known multi-call binaries by name and finds the ones
//! reached through a link to the very file that ran; neither sees an image that *copies* the
//! binary: `/bin/sh` and `/bin/sleep` are then two files with one content, and `exec -a wget
//! /bin/sleep` runs busybox's wget applet from an allowed path. Once the executable's sha256 is
//! known (after hashing, see [`crate::capture`]), this registry remembers the file names each
//! content was run as; a content seen under two names, or one the tracker found multi-call, is
//! multi-call from then on, and an exec of it under a name other than its file's own is read
//! as that applet.
//!
//! Only the applet differing from the file's own name is ever recorded, so when this registry
//! learns a content is multi-call changes nothing for the workload's ordinary execs (argv[0]
//! is the file's name): it only decides how a renamed invocation reads.

use procguard_core::element;
use procguard_core::ProcessEvent;
use std::collections::{HashMap, HashSet};

/// Contents remembered (file names per content, and contents known multi-call); past it the
/// memo starts over, which forgets, never grows.
const MAX_CONTENTS: usize = 16_384;
/// File names remembered per content; two suffice to decide.
const NAMES_PER_CONTENT: usize = 2;

/// See the module docs.
#[derive(Debug, Default)]
pub struct MultiCall {
    names: HashMap<String, HashSet<String>>,
    multi: HashSet<String>,
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

impl MultiCall {
    /// Learns from `ev` (hash known) and, when its content is multi-call and it was run under
    /// another name than its file's, names the applet (and what that applet ran).
    pub fn complete(&mut self, ev: &mut ProcessEvent) {
        let Some(hash) = ev.exe_sha256.clone() else {
            return;
        };
        if self.names.len() >= MAX_CONTENTS {
            self.names.clear();
        }
        if self.multi.len() >= MAX_CONTENTS {
            self.multi.clear();
        }
        let own = basename(&ev.exe_path);
        if ev.applet.is_some() || element::is_known_multi_call(&ev.exe_path) {
            self.multi.insert(hash.clone());
        } else if !self.multi.contains(&hash) {
            let names = self.names.entry(hash.clone()).or_default();
            if names.len() < NAMES_PER_CONTENT && !names.contains(own) {
                names.insert(own.to_string());
            }
            if names.len() >= NAMES_PER_CONTENT {
                self.names.remove(&hash);
                self.multi.insert(hash.clone());
            }
        }
        if ev.applet.is_none() && self.multi.contains(&hash) {
            if ev.missing.iter().any(|m| m == "argv") {
                // A multi-call content whose argv was gone: which applet ran is unknown, and
                // the bare file must not stand for it.
                let mut missing = Vec::new();
                let inv = element::unreadable(&ev.exe_path, true, &mut missing);
                ev.applet = inv.applet;
                for m in missing {
                    ev.mark_missing(m);
                }
            } else {
                let inv = element::identify(&ev.exe_path, &ev.argv, true);
                if inv.applet.is_some() {
                    ev.applet = inv.applet;
                    ev.script_path = inv.script;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::{ExecContext, WorkloadIdentity, WorkloadKind};

    fn exec(exe: &str, argv: &[&str], hash: &str) -> ProcessEvent {
        ProcessEvent::test(exe)
            .on_host()
            .in_workload(&WorkloadIdentity::new(
                "c",
                "",
                WorkloadKind::Host,
                "host",
                "",
            ))
            .context(ExecContext::Host)
            .argv(argv)
            .sha256(hash)
    }

    #[test]
    fn one_content_under_two_names_is_multi_call() {
        let mut m = MultiCall::default();
        // The image's own execs: each copy under its own name; nothing changes.
        let mut sh = exec("/bin/sh", &["sh", "-c", "x"], "bb");
        m.complete(&mut sh);
        assert_eq!(sh.applet, None);
        let mut sleep = exec("/bin/sleep", &["sleep", "1"], "bb");
        m.complete(&mut sleep);
        assert_eq!(sleep.applet, None);
        // A renamed invocation of an allowed copy is the applet it runs.
        let mut wget = exec("/bin/sleep", &["wget", "http://x"], "bb");
        m.complete(&mut wget);
        assert_eq!(wget.applet.as_deref(), Some("wget"));
        let mut id = exec("/bin/sh", &["busybox", "id"], "bb");
        m.complete(&mut id);
        assert_eq!(id.applet.as_deref(), Some("id"));
        // Its argv gone: the applet is unreadable, never the bare (allowed) file.
        let mut gone = exec("/bin/sleep", &[], "bb");
        gone.missing.push("argv".into());
        m.complete(&mut gone);
        assert_eq!(gone.applet.as_deref(), Some(element::UNREADABLE));
        assert!(gone.missing.iter().any(|m| m == "applet"));
        // Another content renamed in argv is not read as an applet.
        let mut py = exec("/usr/bin/python3.11", &["python3", "x.py"], "py");
        m.complete(&mut py);
        assert_eq!(py.applet, None);
    }
}
