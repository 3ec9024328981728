//! Property tests of every parser that reads what the kernel or a process controls: cgroup
//! lines, `/proc/<pid>` files (status, stat, cmdline, exe link) and proc connector datagrams.
//! Whatever the bytes, parsing never panics and its output stays bounded.

use procguard_sensor::cgroup::{self, Placement};
use procguard_sensor::netlink::{parse_datagram, Received};
use procguard_sensor::procfs::{
    classify_exe, parse_cmdline, parse_stat, parse_status_ids, CmdlineParser, ExeFacts, ProcReader,
    MAX_ARGS, MAX_ARG_LEN,
};
use proptest::prelude::*;

/// Cgroup-looking lines: mostly plausible shapes, with hostile pieces mixed in.
fn cgroup_line() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        "[a-z0-9_.-]{0,20}",
        "(cri-containerd-|crio-|docker-|libpod-)?[0-9a-f]{64}(\\.scope)?",
        "kubepods(-besteffort|-burstable)?(\\.slice)?",
        "(kubepods-besteffort-)?pod[0-9a-f_-]{36}(\\.slice)?",
        "\\.\\.",
        "\\PC{0,40}",
    ];
    (
        "[0-9]{0,3}",
        "[a-z,=_]{0,30}",
        prop::collection::vec(seg, 0..12),
    )
        .prop_map(|(h, c, segs)| format!("{h}:{c}:/{}", segs.join("/")))
}

proptest! {
    // 512 cases each keep the whole file under a minute in a debug build.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cgroup_parsing_never_panics_and_stays_bounded(
        lines in prop::collection::vec(cgroup_line(), 0..20),
        junk in "\\PC{0,200}",
    ) {
        let content = format!("{}\n{junk}", lines.join("\n"));
        match cgroup::parse(&content) {
            Placement::Container(c) => {
                prop_assert_eq!(c.id.len(), 64);
                prop_assert!(c.path.len() <= cgroup::MAX_PATH);
                prop_assert!(c.pod_uid.as_ref().is_none_or(|u| u.len() == 36));
                prop_assert!(content.contains(&c.id));
            }
            Placement::Host { unit } => {
                prop_assert!(unit.is_none_or(|u| u.len() <= cgroup::MAX_PATH));
            }
            Placement::Unattributed => {}
        }
    }

    #[test]
    fn arbitrary_bytes_as_cgroup_content_never_panic(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = cgroup::parse(&String::from_utf8_lossy(&raw));
    }

    #[test]
    fn cmdline_parsing_is_bounded(raw in prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..20_000)) {
        let (argv, truncated) = parse_cmdline(&raw);
        prop_assert!(argv.len() <= MAX_ARGS);
        prop_assert!(argv.iter().all(|a| a.len() <= MAX_ARG_LEN));
        let pieces = raw.strip_suffix(&[0]).unwrap_or(&raw).split(|b| *b == 0).count();
        if !raw.is_empty() && pieces > MAX_ARGS {
            prop_assert!(truncated);
        }
    }

    #[test]
    fn cmdline_read_in_pieces_parses_as_a_whole(
        raw in prop::collection::vec(prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..5_000),
        cuts in prop::collection::vec(0usize..5_000, 0..8),
    ) {
        // The sensor parses /proc/<pid>/cmdline as it reads it, in pieces of whatever size a
        // read returns: the pieces must not change the result.
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(raw.len())).collect();
        cuts.sort_unstable();
        let mut p = CmdlineParser::default();
        let mut from = 0;
        for c in cuts.into_iter().chain([raw.len()]) {
            p.feed(&raw[from..c]);
            from = c;
        }
        prop_assert_eq!(p.finish(), parse_cmdline(&raw));
    }

    #[test]
    fn stat_and_status_parsing_never_panic(
        text in prop_oneof![
            "\\PC{0,300}",
            "[0-9]{1,7} \\(\\PC{0,80}\\) [A-Z]( -?[0-9]{1,25}){0,30}",
        ],
    ) {
        if let Some(s) = parse_stat(&text) {
            prop_assert!(s.comm.len() <= 64);
        }
        let _ = parse_status_ids(&text);
    }

    #[test]
    fn exe_links_never_shorten_without_the_kernels_word(
        t in "(/memfd:)?\\PC{0,300}( \\(deleted\\)){0,2}",
        nlink in prop::option::of(0u64..3),
        shmem in prop::option::of(any::<bool>()),
        same in prop::option::of(any::<bool>()),
    ) {
        let facts = ExeFacts { nlink, shmem, same_at_link_path: same };
        let got = classify_exe(&t, facts);
        prop_assert!(!(got.deleted && got.memfd));
        prop_assert!(got.path.len() <= t.len());
        // The text alone never makes a path shorter (a file named "x (deleted)" is never "x"):
        // only no link left, or no file by the printed name, does.
        let unlinked = nlink == Some(0) || (nlink.is_some() && same == Some(false));
        if got.path != t {
            prop_assert!(unlinked, "{t:?} {facts:?} -> {got:?}");
            prop_assert_eq!(format!("{} (deleted)", got.path), t.clone());
        }
        if !unlinked {
            prop_assert_eq!(&got.path, &t);
            prop_assert!(!got.deleted && !got.memfd);
        }
    }

    #[test]
    fn netlink_datagrams_never_panic_and_events_are_bounded(
        raw in prop::collection::vec(any::<u8>(), 0..2048),
        // A plausible header in front makes the fuzzer reach the message parser.
        len in 0u32..2100,
        ty in 0u16..6,
    ) {
        let mut buf = len.to_ne_bytes().to_vec();
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(&raw);
        for b in [&buf[..], &raw[..]] {
            match parse_datagram(b) {
                // Each event needs at least a netlink header.
                Received::Events(evs) => prop_assert!(evs.len() <= b.len() / 16),
                Received::Overrun => {}
            }
        }
    }
}

proptest! {
    // Each case writes a small /proc tree to disk: fewer cases, same shapes.
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn absurd_proc_files_are_read_without_panics(
        status in "\\PC{0,400}",
        stat in prop_oneof![
            "\\PC{0,200}",
            "[0-9]{1,6} \\(\\PC{0,40}\\) [A-Z] [-0-9 ]{0,120}",
        ],
        cmdline in prop::collection::vec(any::<u8>(), 0..5000),
        cgroup_text in prop::collection::vec(cgroup_line(), 0..5),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), "btime 1700000000\n").unwrap();
        let p = dir.path().join("42");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("status"), &status).unwrap();
        std::fs::write(p.join("stat"), &stat).unwrap();
        std::fs::write(p.join("cmdline"), &cmdline).unwrap();
        std::fs::write(p.join("cgroup"), cgroup_text.join("\n")).unwrap();
        let reader = ProcReader::new(dir.path());
        let info = reader.read(42);
        prop_assert_eq!(info.pid, 42);
        match &info.argv {
            Some(a) => prop_assert!(a.len() <= MAX_ARGS),
            // An empty command line of a process without an address space is argv gone, not
            // an empty argv (docs/sensor-events.md); nothing else makes argv unreadable here.
            None => prop_assert!(!reader.has_address_space(42), "argv lost with an address space"),
        }
        prop_assert!(info.cgroup.as_ref().is_some_and(|c| c.len() <= procguard_sensor::procfs::MAX_CGROUP_FILE));
    }
}

#[test]
fn stat_and_status_are_read_as_the_kernel_writes_them() {
    let s = parse_stat("4242 (my (odd) comm) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10 18446744073709551615").unwrap();
    assert_eq!(s.ppid, 17);
    assert_eq!(s.comm, "my (odd) comm");
    assert_eq!(s.start_ticks, 98765);
    assert_eq!(parse_stat(") 1 (x"), None);
    assert_eq!(
        parse_status_ids("Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t27\t27\t27\t27\n"),
        (Some(1000), Some(27))
    );
}

#[test]
fn a_huge_cgroup_file_is_read_only_up_to_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stat"), "btime 1700000000\n").unwrap();
    let p = dir.path().join("7");
    std::fs::create_dir(&p).unwrap();
    let line = format!("0::/{}\n", "a/".repeat(10_000));
    std::fs::write(p.join("cgroup"), line.repeat(20)).unwrap();
    let info = ProcReader::new(dir.path()).read(7);
    assert_eq!(
        info.cgroup.unwrap().len(),
        procguard_sensor::procfs::MAX_CGROUP_FILE
    );
    // A path longer than the kernel's PATH_MAX cannot be real: unattributed.
    let long = format!("0::/kubepods/{}/{}", "x".repeat(5000), "a".repeat(64));
    assert_eq!(cgroup::parse(&long), Placement::Unattributed);
}
