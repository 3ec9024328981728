//! Where an executed file came from ([`Origin`]): the container's image, its writable layer, a
//! volume or host path, no file at all, or the node itself. Decided from kernel facts, never
//! from a path's text.
//!
//! **Facts.** The executed file's mount ID and identity (device, inode), from the one `statx`
//! that reads its hash cache key ([`Opened`]: of the descriptor fanotify handed over, or of
//! `/proc/<pid>/exe`), so it costs no syscall of its own; and the container's mount table,
//! `/proc/<pid>/mountinfo` of a process in it, read once per container, and once more for a
//! process whose exec it cannot place, at most once per mount ([`Mounts`]). For an exec gone
//! before its container's table was read, a stand-in's table (its parent's) is read only
//! when the stand-in's `/proc/<pid>/ns/mnt` is the
//! mount namespace the kernel recorded at the exec (eBPF capture), before and after the read.
//! The table gives the root
//! mount (the line whose mount point is `/`), its superblock's device, the overlay's upper
//! directory and lower layers, and every other mount.
//!
//! **Rule** ([`reach`], [`in_layers`], then `procguard_core::process::classify`):
//! - the file's mount is the root mount, or its device is the root overlay's: it is on the
//!   root filesystem (a nested mount namespace has its own mount IDs, not its own superblock);
//! - its mount is another mount of the container: a volume, host path or tmpfs (`volume`);
//! - on the root overlay, the path the kernel named is looked up through the node's root
//!   (`--host-root`): in the upper directory (one `lstat` per exec, as before origins), and in
//!   the lower layers, top first (cached per layer stack and path: image layers do not
//!   change). A whiteout, or something other than a file, at the path, or a non-directory on
//!   the way, hides what lies below. Where fanotify handed over the layer's own file as well
//!   (overlayfs opens it as a backing file; its mount is one of the overlay's private layer
//!   mounts), its (device, inode) must be the very file found, so a file moved between the
//!   exec and the lookup is never taken for another one;
//! - found in the lower layers only: `image`; found in the upper directory: `writable-layer`,
//!   unless a lower layer has a file at the same path with the same size *and* the same
//!   sha256 (the copy-up of a `chmod`, `chown` or `touch`), compared where hashing happens
//!   (off the capture thread, both hashes through the hash cache) by [`settle_copy_up`];
//! - found nowhere (moved or removed since), facts that cannot be read: `unknown`, and
//!   `origin` is in the event's `missing`; a root that is not an overlay (another snapshotter,
//!   a root shared with the host): `unknown` too, but the facts were read and say so, so
//!   nothing is missing and the event stays `full`.
//!
//! What is left alone: opaque directories are not read (an `xattr` per directory); a file
//! hidden by one in a higher layer can still be found below it, which matters only to prove
//! a copy holds an image layer's content, and that content is an image layer's either way.
//! A process that changed its root inside the container names paths the layers do not have:
//! `unknown`.
//!
//! **Cost.** No syscall for a process on the host, a memfd or a deleted file, or a volume. For
//! the root overlay: the one `lstat` of the upper directory that the writable-layer check
//! always made; the lower layers once per image path; the mount table once per container
//! (again, at most once per mount, when it cannot place an exec of a live process).

use crate::procfs::{FileKey, HashCache, Opened, ProcReader};
use procguard_core::process::{classify, FilePlace, OriginFacts, UNREADABLE_EXE};
use procguard_core::{Origin, ProcessEvent};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writable directories: where no image says otherwise (a host process, an unknown origin) an
/// executable or script under them counts as in a writable location.
pub const WRITABLE_DIRS: &[&str] = &["/tmp/", "/dev/shm/", "/var/tmp/", "/run/shm/"];

/// Containers whose mount table is remembered; past it the memo starts over, which costs one
/// `mountinfo` read per container again, never memory.
const MAX_CONTAINERS: usize = 4_096;
/// Lower-layer lookups remembered (per layer stack and path); past it the memo starts over.
const MAX_LOWER_LOOKUPS: usize = 16_384;
/// Mount tables read again for a mount they did not list, remembered so that each mount
/// costs at most one read; past it the memo starts over.
const MAX_REREADS: usize = 4_096;

/// A container's root overlay: where its layers are, as paths of the node's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    /// The upper (writable) directory.
    pub upper: String,
    /// The lower (image) layers, top first. Data-only layers (after `::`) are left out: their
    /// files are not visible at their own paths.
    pub lowers: Vec<String>,
}

impl Layers {
    /// Names the lower layer stack, which containers of one image share.
    fn stack(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.lowers.hash(&mut h);
        h.finish()
    }
}

/// A container's mounts, from the `mountinfo` of a process in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounts {
    /// Mount ID of its root (the last line whose mount point is `/`: the one on top).
    pub root: u64,
    /// Device of the root's superblock.
    pub root_dev: u64,
    /// The root overlay's layers; `None` when the root is not an overlay.
    pub layers: Option<Layers>,
    /// Every other mount ID of its mount namespace.
    pub others: HashSet<u64>,
}

/// Undoes the octal escapes of `mountinfo` (`\040` for a space, `\072` for a colon, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a process's `mountinfo` into its [`Mounts`]; `None` without a root line.
pub fn parse_mounts(mountinfo: &str) -> Option<Mounts> {
    let mut ids = HashSet::new();
    let mut root = None;
    for l in mountinfo.lines() {
        // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let mut pre = pre.split(' ');
        let (Some(id), Some(_parent), Some(dev), Some(_root), Some(mount_point)) =
            (pre.next(), pre.next(), pre.next(), pre.next(), pre.next())
        else {
            continue;
        };
        let Ok(id) = id.parse::<u64>() else { continue };
        ids.insert(id);
        if mount_point != "/" {
            continue;
        }
        let dev = dev.split_once(':').and_then(|(major, minor)| {
            Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
        });
        let mut post = post.split(' ');
        let (fstype, superopts) = (post.next().unwrap_or(""), post.nth(1).unwrap_or(""));
        root = Some((
            id,
            dev,
            (fstype == "overlay").then(|| overlay_layers(superopts)),
        ));
    }
    let (root, root_dev, layers) = root?;
    ids.remove(&root);
    Some(Mounts {
        root,
        root_dev: root_dev?,
        layers: layers.flatten(),
        others: ids,
    })
}

/// The upper directory and lower layers in an overlay's super options (`upperdir=`,
/// `lowerdir=A:B` or `lowerdir+=A,lowerdir+=B`); `None` without an upper directory (a
/// read-only overlay has nothing written into it, but nothing to tell it by either).
fn overlay_layers(superopts: &str) -> Option<Layers> {
    let mut upper = None;
    let mut lowers = Vec::new();
    for o in superopts.split(',') {
        if let Some(u) = o.strip_prefix("upperdir=") {
            upper = Some(unescape(u));
        } else if let Some(l) = o.strip_prefix("lowerdir=") {
            let visible = l.split("::").next().unwrap_or("");
            lowers.extend(visible.split(':').filter(|p| !p.is_empty()).map(unescape));
        } else if let Some(l) = o.strip_prefix("lowerdir+=") {
            lowers.push(unescape(l));
        }
    }
    Some(Layers {
        upper: upper?,
        lowers,
    })
}

/// How the executed file was reached, against its container's mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the root mount, or on the root's superblock.
    Root,
    /// Through another mount of the container.
    OtherMount,
    /// Through a mount the table does not list: one of an overlay's private layer mounts (a
    /// backing file), or a mount made since the table was read.
    Unlisted,
}

/// Where `opened` (the exec's views of its file) lies among `m`'s mounts.
pub fn reach(opened: &[Opened], m: &Mounts) -> Reach {
    if opened.iter().any(|o| o.mount == Some(m.root)) {
        Reach::Root
    } else if opened
        .iter()
        .any(|o| o.mount.is_some_and(|id| m.others.contains(&id)))
    {
        Reach::OtherMount
    } else if opened.iter().any(|o| o.key.0 == m.root_dev) {
        Reach::Root
    } else {
        Reach::Unlisted
    }
}

/// What a lookup of the exec's path found in one place (the upper directory, or the lower
/// layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing at the path.
    Absent,
    /// A regular file, with its identity and version.
    File(FileKey),
    /// Something that hides the path (a whiteout, a directory, a non-directory on the way).
    Hidden,
    /// The lookup failed (unreadable).
    Failed,
}

/// Where on the root overlay the exec's file lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layered {
    /// Decided.
    Place(FilePlace),
    /// In the upper directory, with a file of the same size at the same path in a lower layer
    /// (`FileKey`): a copy of the image's file only if their contents are the same.
    CopyUp(FileKey),
}

/// Where on the root overlay (with device `root_dev`) the exec's file lies, from what its
/// path holds in the upper directory and the lower layers. The views of the file that are not
/// the overlay's own (device other than `root_dev`: a backing file) are the real file, and
/// must be the very file found.
pub fn in_layers(opened: &[Opened], root_dev: u64, upper: Found, lower: Found) -> Layered {
    let id = |k: &FileKey| (k.0, k.1);
    let real: Vec<(u64, u64)> = opened
        .iter()
        .filter(|o| o.key.0 != root_dev)
        .map(|o| id(&o.key))
        .collect();
    let in_upper = |key: FileKey| match lower {
        Found::File(l) if l.3 == key.3 => Layered::CopyUp(l),
        _ => Layered::Place(FilePlace::UpperLayer {
            image_content: false,
        }),
    };
    let unreadable = upper == Found::Failed || lower == Found::Failed;
    if !real.is_empty() {
        return match (upper, lower) {
            (Found::File(u), _) if real.contains(&id(&u)) => in_upper(u),
            (_, Found::File(l)) if real.contains(&id(&l)) => Layered::Place(FilePlace::LowerLayer),
            _ if unreadable => Layered::Place(FilePlace::Unknown),
            _ => Layered::Place(FilePlace::NotFound),
        };
    }
    // Only the overlay's own view of the file: its size is the exec'd file's (a running
    // executable cannot be written), so an upper file of another size is not what ran: it was
    // put there after the exec. The image's file of that size may have run: compared by
    // content, as a copy-up is (the image only if the contents are the same).
    let ran = opened.first().map(|o| o.key.3);
    match (upper, lower) {
        (Found::File(u), _) if ran.is_none_or(|s| s == u.3) => in_upper(u),
        (Found::File(_), Found::File(l)) if ran == Some(l.3) => Layered::CopyUp(l),
        (Found::File(_), _) => Layered::Place(FilePlace::NotFound),
        (Found::Hidden, _) => Layered::Place(FilePlace::NotFound),
        (Found::Failed, _) => Layered::Place(FilePlace::Unknown),
        (Found::Absent, Found::File(_)) => Layered::Place(FilePlace::LowerLayer),
        (Found::Absent, Found::Failed) => Layered::Place(FilePlace::Unknown),
        (Found::Absent, Found::Absent | Found::Hidden) => Layered::Place(FilePlace::NotFound),
    }
}

/// Whether an executable counts as in a writable location
/// ([`ProcessEvent::exe_writable_location`], kept for consumers older than origins): the
/// writable layer or a volume, a memfd; and, where no image says otherwise (a host process, an
/// unknown origin, a deleted file), a path under [`WRITABLE_DIRS`]. A script under them is
/// added once the element is final (`crate::tracker::mark_writable_script`).
pub fn writable_location(origin: Origin, exe: &str, memfd: bool) -> bool {
    let under = |p: &str| WRITABLE_DIRS.iter().any(|d| p.starts_with(d));
    memfd
        || matches!(origin, Origin::WritableLayer | Origin::Volume)
        || (matches!(origin, Origin::Host | Origin::Unknown | Origin::Fileless) && under(exe))
}

/// A file in the upper directory whose content is compared with the image's file at the same
/// path ([`settle_copy_up`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyUp {
    /// The lower layer's file, as a path the sensor can open.
    pub lower: PathBuf,
    /// Its cache key when it was looked up.
    pub key: FileKey,
}

/// Settles the origin of an exec whose file was found in the upper directory, once its hash
/// and the image file's are known: `image` when both are known and equal (a copy-up),
/// `writable-layer` otherwise (a copy nothing proves to be the image's is the writable
/// layer's).
pub fn settle_copy_up(ev: &mut ProcessEvent, lower_sha256: Option<&str>) {
    let image_content = matches!(
        (ev.exe_sha256.as_deref(), lower_sha256),
        (Some(a), Some(b)) if a == b
    );
    ev.origin = classify(OriginFacts {
        in_container: ev.container.is_some(),
        fileless: ev.fileless(),
        place: FilePlace::UpperLayer { image_content },
    });
    ev.exe_writable_location = writable_location(ev.origin, &ev.exe_path, ev.exe_memfd);
}

/// What the sensor knows of one exec, to classify its origin.
#[derive(Debug, Clone, Copy)]
pub struct Exec<'a> {
    /// The process.
    pub pid: u32,
    /// `/proc` still showed it (its mount table can be read).
    pub alive: bool,
    /// Its mount namespace as the kernel recorded it at the exec (eBPF capture only).
    pub mnt_ns: Option<u32>,
    /// Processes through which its container's mount table may be read once it is gone (its
    /// parent): each only if `/proc/<pid>/ns/mnt` links to `mnt_ns`, so a table is never
    /// that of another mount namespace.
    pub stand_ins: &'a [u32],
    /// Its container's ID; `None` on the host.
    pub container: Option<&'a str>,
    /// The executable's path, as the kernel names it inside the process's root.
    pub exe: &'a str,
    /// The kernel's facts say it is a memfd or was deleted.
    pub fileless: bool,
    /// Whether it was deleted could not be told.
    pub deleted_unknown: bool,
    /// The file as the kernel opened it (one or two views).
    pub opened: &'a [Opened],
}

/// An exec's origin, as far as it could be established now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The origin (`writable-layer` while a copy-up's content is compared).
    pub origin: Origin,
    /// A copy-up whose content must still be compared ([`settle_copy_up`]).
    pub copy_up: Option<CopyUp>,
    /// The origin is unknown because facts could not be read (or the file was no longer
    /// where the kernel named it): `origin` belongs in the event's `missing`. A root that is
    /// not an overlay was read and is simply not layered: unknown, but nothing is missing.
    pub facts_missing: bool,
}

impl Classified {
    /// The origin of a file at `place` (no copy-up to compare).
    fn of(in_container: bool, fileless: bool, place: FilePlace) -> Self {
        let origin = classify(OriginFacts {
            in_container,
            fileless,
            place,
        });
        Classified {
            origin,
            copy_up: None,
            facts_missing: origin == Origin::Unknown
                && matches!(place, FilePlace::Unknown | FilePlace::NotFound),
        }
    }
}

/// Containers' mount tables and image-layer lookups, looked up through the node's root.
#[derive(Debug)]
pub struct Origins {
    host_root: PathBuf,
    mounts: HashMap<String, Arc<Mounts>>,
    /// Lower-layer lookups by layer stack ([`Layers::stack`]) and path: what the path holds,
    /// and in which layer.
    lowers: HashMap<u64, HashMap<String, (Found, usize)>>,
    /// Entries in `lowers`.
    lower_entries: usize,
    /// (container, mount) pairs whose table was read again for that mount.
    rereads: HashSet<(String, u64)>,
}

impl Default for Origins {
    fn default() -> Self {
        Self::new(PathBuf::from("/"))
    }
}

impl Origins {
    /// Looks layers up under `host_root`: the node's root filesystem as the sensor reaches it.
    pub fn new(host_root: PathBuf) -> Self {
        Self {
            host_root,
            mounts: HashMap::new(),
            lowers: HashMap::new(),
            lower_entries: 0,
            rereads: HashSet::new(),
        }
    }

    /// Looks layers up under `root` from now on.
    pub fn set_host_root(&mut self, root: PathBuf) {
        self.host_root = root;
        self.lowers.clear();
        self.lower_entries = 0;
    }

    /// Containers whose mount table is known.
    pub fn containers(&self) -> usize {
        self.mounts.len()
    }

    /// Whether container `id`'s mount table is known (then no stand-in is needed).
    pub fn knows(&self, id: &str) -> bool {
        self.mounts.contains_key(id)
    }

    /// Reads container `id`'s mount table through the first of `e.stand_ins` that is still
    /// in the mount namespace `e`'s exec was recorded in (for an exec already gone).
    fn read_mounts_through(
        &mut self,
        reader: &ProcReader,
        e: &Exec<'_>,
        id: &str,
    ) -> Option<Arc<Mounts>> {
        let ns = e.mnt_ns?;
        let want = format!("mnt:[{ns}]");
        e.stand_ins.iter().find_map(|&pid| {
            let link = std::fs::read_link(reader.path(pid, "ns/mnt")).ok()?;
            if link.as_os_str() != want.as_str() {
                return None;
            }
            let m = self.read_mounts(reader, pid, id)?;
            // Still the same namespace after the read: the table is that namespace's, not
            // that of a process that moved (or of a pid reused) meanwhile.
            let again = std::fs::read_link(reader.path(pid, "ns/mnt")).ok();
            if again.as_deref().map(|l| l.as_os_str()) == Some(want.as_ref()) {
                Some(m)
            } else {
                self.mounts.remove(id);
                None
            }
        })
    }

    /// Reads `pid`'s mount table as container `id`'s.
    fn read_mounts(&mut self, reader: &ProcReader, pid: u32, id: &str) -> Option<Arc<Mounts>> {
        let mi = std::fs::read_to_string(reader.path(pid, "mountinfo")).ok()?;
        let m = Arc::new(parse_mounts(&mi)?);
        if self.mounts.len() >= MAX_CONTAINERS && !self.mounts.contains_key(id) {
            self.mounts.clear();
        }
        self.mounts.insert(id.to_string(), m.clone());
        Some(m)
    }

    /// The origin of one exec. What cannot be established is `unknown`.
    pub fn classify(&mut self, reader: &ProcReader, e: Exec<'_>) -> Classified {
        let place = |place| Classified::of(e.container.is_some(), e.fileless, place);
        let Some(id) = e.container else {
            return place(FilePlace::Unknown);
        };
        if e.fileless {
            return place(FilePlace::Unknown);
        }
        if e.deleted_unknown
            || e.exe == UNREADABLE_EXE
            || !e.exe.starts_with('/')
            || e.opened.is_empty()
        {
            return place(FilePlace::Unknown);
        }
        let m = match self.mounts.get(id) {
            Some(m) => m.clone(),
            None if e.alive => match self.read_mounts(reader, e.pid, id) {
                Some(m) => m,
                None => return place(FilePlace::Unknown),
            },
            None => match self.read_mounts_through(reader, &e, id) {
                Some(m) => m,
                None => return place(FilePlace::Unknown),
            },
        };
        let first = self.place_in(&m, e);
        if first.origin != Origin::Unknown || !e.alive {
            return first;
        }
        // A table read before the process entered the container's mount namespace (then it
        // is the host's), or a mount made since: read it again and look once more, at most
        // once per mount the kernel named.
        let mount = e.opened.iter().find_map(|o| o.mount).unwrap_or(0);
        if self.rereads.len() >= MAX_REREADS {
            self.rereads.clear();
        }
        if !self.rereads.insert((id.to_string(), mount)) {
            return first;
        }
        match self.read_mounts(reader, e.pid, id) {
            Some(again) if again != m => self.place_in(&again, e),
            _ => first,
        }
    }

    /// The origin of `e` among the container's mounts `m`.
    fn place_in(&mut self, m: &Mounts, e: Exec<'_>) -> Classified {
        let place = |place| Classified::of(true, false, place);
        let r = reach(e.opened, m);
        if r == Reach::OtherMount {
            return place(FilePlace::OtherMount);
        }
        let Some(layers) = &m.layers else {
            // Through a mount nobody lists, on a root without layers: nothing to go by.
            return place(if r == Reach::Root {
                FilePlace::UnlayeredRoot
            } else {
                FilePlace::Unknown
            });
        };
        // On the root overlay, or through a mount nobody lists: then only the identity of a
        // layer's own file (in_layers) can place it; anything else is unknown (NotFound).
        let rel = e.exe.trim_start_matches('/');
        let upper = lookup(
            &self.host_root.join(layers.upper.trim_start_matches('/')),
            rel,
        );
        let (lower, layer) = self.lower(layers, e.exe);
        match in_layers(e.opened, m.root_dev, upper, lower) {
            Layered::Place(p) => place(p),
            Layered::CopyUp(key) => Classified {
                copy_up: Some(CopyUp {
                    lower: self
                        .host_root
                        .join(layers.lowers[layer].trim_start_matches('/'))
                        .join(rel),
                    key,
                }),
                ..place(FilePlace::UpperLayer {
                    image_content: false,
                })
            },
        }
    }

    /// What the lower layers hold at `exe`, top first, and in which layer (cached: image
    /// layers do not change).
    fn lower(&mut self, layers: &Layers, exe: &str) -> (Found, usize) {
        let stack = layers.stack();
        if let Some(hit) = self.lowers.get(&stack).and_then(|m| m.get(exe)) {
            return *hit;
        }
        let rel = exe.trim_start_matches('/');
        let mut found = (Found::Absent, 0);
        for (i, layer) in layers.lowers.iter().enumerate() {
            match lookup(&self.host_root.join(layer.trim_start_matches('/')), rel) {
                Found::Absent => continue,
                f => {
                    found = (f, i);
                    break;
                }
            }
        }
        if found.0 != Found::Failed {
            if self.lower_entries >= MAX_LOWER_LOOKUPS {
                self.lowers.clear();
                self.lower_entries = 0;
            }
            self.lowers
                .entry(stack)
                .or_default()
                .insert(exe.to_string(), found);
            self.lower_entries += 1;
        }
        found
    }
}

/// What `dir` holds at the relative path `rel` (one `lstat`).
fn lookup(dir: &Path, rel: &str) -> Found {
    match std::fs::symlink_metadata(dir.join(rel)) {
        Ok(m) if m.file_type().is_file() => Found::File(HashCache::key_of_meta(&m)),
        Ok(_) => Found::Hidden,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Absent,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Found::Hidden,
        Err(_) => Found::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = "75 51 0:40 / / rw,relatime master:2 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work\n76 75 0:43 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n91 77 0:48 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k\n92 75 254:0 /tmp/exp/hostdir /mnt rw,relatime - ext4 /dev/vda rw\n";

    #[test]
    fn a_containers_mountinfo_names_its_root_layers_and_other_mounts() {
        let m = parse_mounts(DOCKER).unwrap();
        assert_eq!(m.root, 75);
        assert_eq!(m.root_dev, libc::makedev(0, 40));
        assert_eq!(
            m.layers,
            Some(Layers {
                upper: "/var/lib/docker/overlay2/abc/diff".into(),
                lowers: vec![
                    "/var/lib/docker/overlay2/l/A".into(),
                    "/var/lib/docker/overlay2/l/B".into()
                ],
            })
        );
        assert_eq!(m.others, HashSet::from([76, 91, 92]));
        // Not an overlay: no layers to tell apart.
        let ext4 = parse_mounts("25 1 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap();
        assert_eq!(ext4.layers, None);
        // No root line: nothing to go by.
        assert_eq!(parse_mounts("76 75 0:43 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn escaped_and_new_style_layer_options_are_read() {
        let mi = "9 1 0:50 / / rw - overlay overlay rw,lowerdir+=/l/one\\054x,lowerdir+=/l/two,datadir+=/d,upperdir=/u\\040dir,workdir=/w\n";
        let l = parse_mounts(mi).unwrap().layers.unwrap();
        assert_eq!(l.upper, "/u dir");
        assert_eq!(l.lowers, vec!["/l/one,x", "/l/two"]);
        // Data-only layers (after "::") hold no file at its own path.
        let mi = "9 1 0:50 / / rw - overlay overlay rw,lowerdir=/a:/b\\072c::/data,upperdir=/u\n";
        let l = parse_mounts(mi).unwrap().layers.unwrap();
        assert_eq!(l.lowers, vec!["/a", "/b:c"]);
        // Mounts stacked on "/": the last one is on top.
        let mi = "9 1 0:50 / / rw - ext4 /dev/a rw\n10 9 0:51 / / rw - overlay overlay rw,lowerdir=/a,upperdir=/u\n";
        assert_eq!(parse_mounts(mi).unwrap().root, 10);
    }

    fn opened(dev: u64, ino: u64, mount: u64) -> Opened {
        Opened {
            key: (dev, ino, 1, 100),
            mount: Some(mount),
        }
    }

    #[test]
    fn the_mount_the_kernel_reached_decides_root_or_volume() {
        let m = parse_mounts(DOCKER).unwrap();
        let overlay = libc::makedev(0, 40);
        let ext4 = libc::makedev(254, 0);
        // The overlay's file, through the root mount.
        assert_eq!(reach(&[opened(overlay, 7, 75)], &m), Reach::Root);
        // A layer's backing file first, then the overlay's: one exec, on the root.
        assert_eq!(
            reach(&[opened(ext4, 8, 46), opened(overlay, 7, 75)], &m),
            Reach::Root
        );
        // A host path bind-mounted into the container, on the same filesystem as the layers.
        assert_eq!(reach(&[opened(ext4, 9, 92)], &m), Reach::OtherMount);
        // /dev/shm.
        assert_eq!(
            reach(&[opened(libc::makedev(0, 48), 3, 91)], &m),
            Reach::OtherMount
        );
        // The root overlay seen from a nested mount namespace (its own mount IDs).
        assert_eq!(reach(&[opened(overlay, 7, 500)], &m), Reach::Root);
        // A backing file alone: a private layer mount nobody lists.
        assert_eq!(reach(&[opened(ext4, 8, 46)], &m), Reach::Unlisted);
    }

    #[test]
    fn the_layers_tell_image_from_writable_layer_and_from_nothing() {
        use FilePlace::*;
        let overlay = libc::makedev(0, 40);
        let ext4 = libc::makedev(254, 0);
        let view = [opened(overlay, 7, 75)];
        let upper = Found::File((ext4, 20, 5, 100));
        let lower = Found::File((ext4, 10, 1, 100));
        let other_size = Found::File((ext4, 10, 1, 999));
        let place = |opened: &[Opened], u, l| in_layers(opened, overlay, u, l);
        let writable = Layered::Place(UpperLayer {
            image_content: false,
        });
        // Only in the image.
        assert_eq!(
            place(&view, Found::Absent, lower),
            Layered::Place(LowerLayer)
        );
        // Written into the container at a path the image does not have.
        assert_eq!(place(&view, upper, Found::Absent), writable);
        // Over an image file of another size: no content can be the same.
        assert_eq!(place(&view, upper, other_size), writable);
        // Over an image file of the same size: compare contents (a chmod's copy-up?).
        assert_eq!(
            place(&view, upper, lower),
            Layered::CopyUp((ext4, 10, 1, 100))
        );
        // Replaced since the exec (an upper file of another size than the one that ran): the
        // image's file of the size that ran is compared by content; no such file, not found.
        let ran_other = [Opened {
            key: (overlay, 7, 1, 999),
            mount: Some(75),
        }];
        assert_eq!(
            place(&ran_other, upper, other_size),
            Layered::CopyUp((ext4, 10, 1, 999))
        );
        assert_eq!(place(&ran_other, upper, lower), Layered::Place(NotFound));
        assert_eq!(
            place(&ran_other, upper, Found::Absent),
            Layered::Place(NotFound)
        );
        // Moved or removed since the exec: a whiteout, a directory, or nothing anywhere.
        assert_eq!(place(&view, Found::Hidden, lower), Layered::Place(NotFound));
        assert_eq!(
            place(&view, Found::Absent, Found::Absent),
            Layered::Place(NotFound)
        );
        assert_eq!(
            place(&view, Found::Absent, Found::Hidden),
            Layered::Place(NotFound)
        );
        // Unreadable: unknown, never the image.
        assert_eq!(place(&view, Found::Failed, lower), Layered::Place(Unknown));
        assert_eq!(
            place(&view, Found::Absent, Found::Failed),
            Layered::Place(Unknown)
        );
    }

    #[test]
    fn a_backing_file_must_be_the_very_file_found() {
        use FilePlace::*;
        let overlay = libc::makedev(0, 40);
        let ext4 = libc::makedev(254, 0);
        let upper = Found::File((ext4, 20, 5, 100));
        let lower = Found::File((ext4, 10, 1, 100));
        let backing = |ino| [opened(ext4, ino, 46), opened(overlay, 7, 75)];
        let place = |opened: &[Opened], u, l| in_layers(opened, overlay, u, l);
        // The kernel ran the lower file, though the upper directory now has one there (it was
        // written after the exec): the image's file ran.
        assert_eq!(
            place(&backing(10), upper, lower),
            Layered::Place(LowerLayer)
        );
        // The kernel ran the upper file.
        assert_eq!(
            place(&backing(20), upper, lower),
            Layered::CopyUp((ext4, 10, 1, 100))
        );
        // The kernel ran a file that is neither (replaced since the exec): not found, never
        // the image.
        assert_eq!(place(&backing(30), upper, lower), Layered::Place(NotFound));
        assert_eq!(
            place(&backing(30), Found::Absent, lower),
            Layered::Place(NotFound)
        );
    }

    #[test]
    fn writable_location_follows_the_origin() {
        use Origin::*;
        for (origin, exe, memfd, want) in [
            (Image, "/usr/bin/x", false, false),
            // A copy-up of an image file under /tmp is the image's: not writable.
            (Image, "/tmp/x", false, false),
            (WritableLayer, "/usr/bin/x", false, true),
            (Volume, "/mnt/x", false, true),
            (Fileless, "memfd:x", true, true),
            (Fileless, "/tmp/x", false, true),
            (Host, "/tmp/x", false, true),
            (Host, "/usr/bin/x", false, false),
            (Unknown, "/dev/shm/x", false, true),
            (Unknown, "/usr/bin/x", false, false),
        ] {
            assert_eq!(
                writable_location(origin, exe, memfd),
                want,
                "{origin} {exe}"
            );
        }
    }

    #[test]
    fn a_copy_up_is_the_image_only_when_both_contents_are_known_and_equal() {
        let mut ev: ProcessEvent = serde_json::from_value(serde_json::json!({
            "pid": 1, "ppid": 0, "ancestors": [], "start_time": null, "uid": 0, "gid": 0,
            "comm": "cat", "exe_path": "/bin/cat", "argv": [], "argv_truncated": false,
            "script_path": null, "exe_sha256": "a", "exe_memfd": false, "exe_deleted": false,
            "exe_writable_location": true, "origin": "writable-layer",
            "container": {"container_id": "c"},
            "workload": {"cluster": "c", "namespace": "", "kind": "container",
                         "workload_name": "docker:x", "container_name": ""},
            "context": "descendant", "completeness": "full", "missing": [], "node_name": "n"
        }))
        .unwrap();
        settle_copy_up(&mut ev, Some("a"));
        assert_eq!(ev.origin, Origin::Image);
        assert!(!ev.exe_writable_location);
        for lower in [Some("b"), None] {
            settle_copy_up(&mut ev, lower);
            assert_eq!(ev.origin, Origin::WritableLayer, "{lower:?}");
            assert!(ev.exe_writable_location);
        }
        ev.exe_sha256 = None;
        settle_copy_up(&mut ev, None);
        assert_eq!(ev.origin, Origin::WritableLayer, "unhashed: unproven");
    }

    /// Real layers on disk: an upper directory and two lower layers, with a whiteout.
    #[test]
    fn lookups_honour_whiteouts_and_non_directories_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for p in ["upper/bin", "l1/bin", "l2/bin", "l2/opt", "l1"] {
            std::fs::create_dir_all(d.join(p)).unwrap();
        }
        std::fs::write(d.join("l2/bin/sh"), "sh").unwrap();
        std::fs::write(d.join("l2/bin/gone"), "gone").unwrap();
        std::fs::write(d.join("l2/opt/tool"), "tool").unwrap();
        std::fs::write(d.join("upper/bin/new"), "new").unwrap();
        // l1 hides /bin/gone with a file of another kind, and /opt with a non-directory.
        std::os::unix::fs::symlink("x", d.join("l1/bin/gone")).unwrap();
        std::fs::write(d.join("l1/opt"), "").unwrap();
        let mut o = Origins::new(d.to_path_buf());
        let lowers = Layers {
            upper: "/upper".into(),
            lowers: vec!["/l1".to_string(), "/l2".to_string()],
        };
        assert!(matches!(o.lower(&lowers, "/bin/sh"), (Found::File(_), 1)));
        assert_eq!(o.lower(&lowers, "/bin/gone").0, Found::Hidden);
        assert_eq!(o.lower(&lowers, "/opt/tool").0, Found::Hidden);
        assert_eq!(o.lower(&lowers, "/bin/none").0, Found::Absent);
        assert!(matches!(
            lookup(&d.join("upper"), "bin/new"),
            Found::File(_)
        ));
        assert_eq!(lookup(&d.join("upper"), "bin/sh"), Found::Absent);
    }

    /// A container's mount table read while its first process was still in the host's mount
    /// namespace (the host's table) is read again once an exec cannot be placed by it; and a
    /// process gone before its container's table was read is unknown, never the image.
    #[test]
    fn a_wrong_mount_table_is_read_again_and_a_gone_process_is_unknown() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        for d in ["upper/bin", "lower/bin", "proc/42"] {
            std::fs::create_dir_all(h.join(d)).unwrap();
        }
        std::fs::write(h.join("lower/bin/sh"), "sh").unwrap();
        std::fs::write(h.join("upper/bin/x"), "x").unwrap();
        let reader = ProcReader::new(h.join("proc"));
        let mut o = Origins::new(h.to_path_buf());
        // The root overlay's device (0:40), as statx reports it for its files.
        const OVERLAY: u64 = 40;
        assert_eq!(OVERLAY, libc::makedev(0, 40));
        let exec = |exe: &'static str, opened: &'static [Opened], alive| Exec {
            pid: 42,
            alive,
            mnt_ns: None,
            stand_ins: &[],
            container: Some("c1"),
            exe,
            fileless: false,
            deleted_unknown: false,
            opened,
        };
        static SH: [Opened; 1] = [Opened {
            key: (OVERLAY, 7, 1, 2),
            mount: Some(75),
        }];
        // Gone, and nothing known of its container: unknown.
        let gone = o.classify(&reader, exec("/bin/sh", &SH, false));
        assert_eq!(gone.origin, Origin::Unknown);
        // The host's table first (an ext4 root).
        std::fs::write(
            h.join("proc/42/mountinfo"),
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n",
        )
        .unwrap();
        let host_view = o.classify(&reader, exec("/bin/sh", &SH, true));
        assert_eq!(host_view.origin, Origin::Unknown);
        // Then the container's: read again once the exec could not be placed.
        let container = format!(
            "75 51 0:40 / / rw - overlay overlay rw,lowerdir={l},upperdir={u},workdir=/w\n",
            l = "/lower",
            u = "/upper"
        );
        std::fs::write(h.join("proc/42/mountinfo"), container).unwrap();
        // Once per mount: the same mount is not read again...
        assert_eq!(
            o.classify(&reader, exec("/bin/sh", &SH, true)).origin,
            Origin::Unknown
        );
        // ...but another one is, and then every exec of the container is placed.
        static X: [Opened; 1] = [Opened {
            key: (OVERLAY, 8, 1, 1),
            mount: Some(76),
        }];
        let x = o.classify(&reader, exec("/bin/x", &X, true));
        assert_eq!(
            x.origin,
            Origin::WritableLayer,
            "the overlay's device: the root, whatever mount 76 is"
        );
        static ROOT_X: [Opened; 1] = [Opened {
            key: (OVERLAY, 8, 1, 1),
            mount: Some(75),
        }];
        assert_eq!(
            o.classify(&reader, exec("/bin/x", &ROOT_X, false)).origin,
            Origin::WritableLayer
        );
        assert_eq!(
            o.classify(&reader, exec("/bin/sh", &SH, false)).origin,
            Origin::Image
        );
    }

    /// An exec gone before its container's mount table was read is placed through a process
    /// still in the mount namespace the kernel recorded at the exec, and only through one: a
    /// process of another namespace (the host's, a nested one, a pid reused) never stands in.
    #[test]
    fn a_gone_exec_is_placed_through_a_process_of_its_own_mount_namespace_only() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        for d in [
            "upper/bin",
            "lower/bin",
            "proc/50/ns",
            "proc/51/ns",
            "proc/52/ns",
        ] {
            std::fs::create_dir_all(h.join(d)).unwrap();
        }
        std::fs::write(h.join("lower/bin/sh"), "sh").unwrap();
        let container =
            "75 51 0:40 / / rw - overlay overlay rw,lowerdir=/lower,upperdir=/upper,workdir=/w\n";
        // 50: the host's namespace and table; 51: the container's namespace, no table
        // readable (gone meanwhile); 52: the container's namespace and table.
        for (pid, ns, table) in [
            (
                50,
                4026531841u32,
                Some("27 1 254:0 / / rw - ext4 /dev/vda rw\n"),
            ),
            (51, 4026532999, None),
            (52, 4026532999, Some(container)),
        ] {
            std::os::unix::fs::symlink(format!("mnt:[{ns}]"), h.join(format!("proc/{pid}/ns/mnt")))
                .unwrap();
            if let Some(t) = table {
                std::fs::write(h.join(format!("proc/{pid}/mountinfo")), t).unwrap();
            }
        }
        let reader = ProcReader::new(h.join("proc"));
        static SH: [Opened; 1] = [Opened {
            key: (40, 7, 1, 2),
            mount: Some(75),
        }];
        let gone = |mnt_ns, stand_ins| Exec {
            pid: 42,
            alive: false,
            mnt_ns,
            stand_ins,
            container: Some("c1"),
            exe: "/bin/sh",
            fileless: false,
            deleted_unknown: false,
            opened: &SH,
        };
        let mut o = Origins::new(h.to_path_buf());
        // Only the host's namespace at hand: unknown, its facts missing, nothing kept.
        let c = o.classify(&reader, gone(Some(4026532999), &[50]));
        assert_eq!((c.origin, c.facts_missing), (Origin::Unknown, true));
        assert!(!o.knows("c1"));
        // No namespace recorded (the proc connector): no stand-in at all.
        let c = o.classify(&reader, gone(None, &[52]));
        assert_eq!((c.origin, c.facts_missing), (Origin::Unknown, true));
        assert!(!o.knows("c1"));
        // The host's, then one of its own namespace that is gone, then one that reads.
        let c = o.classify(&reader, gone(Some(4026532999), &[50, 51, 52]));
        assert_eq!((c.origin, c.facts_missing), (Origin::Image, false));
        assert!(o.knows("c1"));
    }
}
