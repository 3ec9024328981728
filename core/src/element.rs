//! What an exec actually ran: the applet of a multi-call binary, the script behind an
//! interpreter or shell, inline code, or the program a dynamic loader was asked to load.
//!
//! A baseline element that names only the executable lets anything through that reuses an
//! allowed file: every busybox applet is `/bin/busybox`, every script is `/bin/sh`, and
//! `ld-linux-x86-64.so.2 /tmp/miner` is the loader. [`identify`] reads the argv the kernel
//! recorded at exec, with the resolved executable, and names what ran.
//!
//! argv is written by whoever called `execve`, so it is never trusted for *which file* ran
//! (that is the resolved executable, a kernel fact). It is trusted only where the executed
//! program itself decides by it: a multi-call binary dispatches on `argv[0]` (or `argv[1]`
//! after its own name), an interpreter runs the file its arguments name, a loader loads the
//! program its arguments name. A caller who lies in argv there changes what runs, and is
//! judged by what runs. Whether a binary is multi-call is decided by the caller (the sensor
//! knows the well-known ones by name and recognises others by the kernel's facts: the name
//! invoked is a link to the very file that ran), never by argv alone.

/// Script slot value of inline code (`sh -c`, `python -c`, `perl -e`, code on stdin). Its
/// brackets cannot begin a script path: a relative script path that starts with `[` is
/// written with a leading `./` (see [`identify`]).
pub const INLINE: &str = "[inline]";

/// The multi-call binaries known by file name: busybox (any build suffix), toybox, and the
/// single-binary GNU coreutils.
pub fn is_known_multi_call(exe: &str) -> bool {
    let name = basename(exe);
    name == "busybox"
        || name.starts_with("busybox.")
        || name.starts_with("busybox-")
        || name == "toybox"
        || name == "coreutils"
}

/// What an exec ran, beyond its executable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The applet of a multi-call binary.
    pub applet: Option<String>,
    /// The script of an interpreter or shell, [`INLINE`] for inline code, or the program a
    /// loader run directly loads.
    pub script: Option<String>,
}

/// Element slot value of an applet or script that could not be read (the process's argv was
/// gone): it never matches an element learned from what was read.
pub const UNREADABLE: &str = "[unreadable]";

/// What an exec of `exe` ran when its argv could not be read: for a multi-call binary the
/// applet, for an interpreter, shell or loader the script, is [`UNREADABLE`], and its name is
/// pushed to `missing`. Anything else ran only itself.
pub fn unreadable(exe: &str, multi_call: bool, missing: &mut Vec<&'static str>) -> Invocation {
    let mut inv = Invocation::default();
    if multi_call {
        inv.applet = Some(UNREADABLE.to_string());
        missing.push("applet");
    } else if is_loader(exe) || syntax_of(basename(exe)).is_some() {
        inv.script = Some(UNREADABLE.to_string());
        missing.push("script");
    }
    inv
}

/// The dynamic loader, run as a program (`/lib64/ld-linux-x86-64.so.2 PROGRAM`).
pub fn is_loader(exe: &str) -> bool {
    let name = basename(exe);
    name == "ld.so"
        || ((name.starts_with("ld-linux") || name.starts_with("ld-musl")) && name.contains(".so"))
}

/// The option syntax of one interpreter family. Short options may be bundled (`sh -ec CODE`,
/// `python -Bc CODE`); a letter that takes a value ends the bundle, with the value attached
/// or in the next argument.
struct Syntax {
    /// Letters whose code follows (`-c`, `-e`) or that read code from standard input (`-s`).
    inline: &'static [char],
    /// Letters whose value is a module to run (`python -m mod`): the module is the script.
    module: &'static [char],
    /// Letters whose value is the script (`php -f file`).
    script: &'static [char],
    /// Letters that take a value (never the script).
    value: &'static [char],
    /// Long options followed by code.
    long_inline: &'static [&'static str],
    /// Long options that take the next argument.
    long_value: &'static [&'static str],
    /// Whether `+o`-style options exist (shells).
    plus: bool,
}

const SHELL: Syntax = Syntax {
    inline: &['c', 's'],
    module: &[],
    script: &[],
    value: &['o', 'O'],
    long_inline: &[],
    long_value: &["--rcfile", "--init-file"],
    plus: true,
};
const PYTHON: Syntax = Syntax {
    inline: &['c'],
    module: &['m'],
    script: &[],
    value: &['W', 'X'],
    long_inline: &[],
    long_value: &["--check-hash-based-pycs"],
    plus: false,
};
const PERL: Syntax = Syntax {
    inline: &['e', 'E'],
    module: &[],
    script: &[],
    value: &['I', 'M', 'm'],
    long_inline: &[],
    long_value: &[],
    plus: false,
};
const RUBY: Syntax = Syntax {
    inline: &['e'],
    module: &[],
    script: &[],
    value: &['I', 'r', 'C', 'E'],
    long_inline: &[],
    long_value: &["--encoding"],
    plus: false,
};
const NODE: Syntax = Syntax {
    inline: &['e', 'p'],
    module: &[],
    script: &[],
    value: &['r', 'C'],
    long_inline: &["--eval", "--print"],
    long_value: &[
        "--require",
        "--import",
        "--loader",
        "--input-type",
        "--conditions",
    ],
    plus: false,
};
const PHP: Syntax = Syntax {
    inline: &['r', 'R', 'B', 'E'],
    module: &[],
    script: &['f'],
    value: &['c', 'd', 'z', 't', 'S'],
    long_inline: &[],
    long_value: &[],
    plus: false,
};
const LUA: Syntax = Syntax {
    inline: &['e'],
    module: &[],
    script: &[],
    value: &['l'],
    long_inline: &[],
    long_value: &[],
    plus: false,
};

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Whether `name` is `base` or `base` followed by a version (`python3.11`, `perl5.36`).
fn versioned(name: &str, base: &str) -> bool {
    name == base
        || name
            .strip_prefix(base)
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// The option syntax of the interpreter or shell called `program`, if it is one.
fn syntax_of(program: &str) -> Option<&'static Syntax> {
    let p = program;
    if [
        "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "hush", "rbash",
    ]
    .contains(&p)
    {
        Some(&SHELL)
    } else if versioned(p, "python") || versioned(p, "pypy") {
        Some(&PYTHON)
    } else if versioned(p, "perl") {
        Some(&PERL)
    } else if versioned(p, "ruby") {
        Some(&RUBY)
    } else if p == "node" || p == "nodejs" || p == "deno" || p == "bun" {
        Some(&NODE)
    } else if versioned(p, "php") {
        Some(&PHP)
    } else if versioned(p, "lua") || p == "luajit" {
        Some(&LUA)
    } else {
        None
    }
}

/// A script path as an element names it: relative paths stay relative, but one that starts
/// with `[` gets `./` so that no file can pass for [`INLINE`].
fn script_name(arg: &str) -> String {
    if arg.starts_with('[') {
        format!("./{arg}")
    } else {
        arg.to_string()
    }
}

/// The script an interpreter with `syntax` runs, given its arguments after the program name.
fn script_of(syntax: &Syntax, args: &[String]) -> Option<String> {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let next = || args.get(i + 1).map(String::as_str);
        if a == "--" {
            return Some(next().map_or(INLINE.to_string(), script_name));
        }
        if a == "-" {
            return Some(INLINE.to_string());
        }
        if a.starts_with("--") {
            let name = a.split('=').next().unwrap_or(a);
            if syntax.long_inline.contains(&name) {
                return Some(INLINE.to_string());
            }
            i += if syntax.long_value.contains(&a) { 2 } else { 1 };
            continue;
        }
        let short = a
            .strip_prefix('-')
            .or_else(|| syntax.plus.then(|| a.strip_prefix('+')).flatten());
        let Some(letters) = short.filter(|l| !l.is_empty()) else {
            return Some(script_name(a));
        };
        let mut consumed = 1;
        for (at, ch) in letters.char_indices() {
            let attached = &letters[at + ch.len_utf8()..];
            let value = || {
                if attached.is_empty() {
                    next()
                } else {
                    Some(attached)
                }
            };
            if syntax.inline.contains(&ch) {
                return Some(INLINE.to_string());
            }
            if syntax.module.contains(&ch) {
                return value().map(|m| format!("-m {m}"));
            }
            if syntax.script.contains(&ch) {
                return value().map(script_name);
            }
            if syntax.value.contains(&ch) {
                if attached.is_empty() {
                    consumed = 2;
                }
                break;
            }
        }
        i += consumed;
    }
    // No script and no inline option: the code comes from standard input (an interactive
    // shell, `sh < file`).
    Some(INLINE.to_string())
}

/// The program a loader run directly loads, given its arguments after its own name.
fn loaded_program(args: &[String]) -> Option<String> {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--library-path"
            | "--preload"
            | "--audit"
            | "--argv0"
            | "--inhibit-rpath"
            | "--glibc-hwcaps-prepend"
            | "--glibc-hwcaps-mask" => i += 2,
            "--" => return args.get(i + 1).cloned(),
            _ if a.starts_with("--") => i += 1,
            _ => return Some(a.to_string()),
        }
    }
    None
}

/// Names what an exec of `exe` (the resolved executable) with `argv` ran. `multi_call`: the
/// executable is a multi-call binary (known by name, or verified by the caller).
pub fn identify(exe: &str, argv: &[String], multi_call: bool) -> Invocation {
    let own = basename(exe);
    let invoked = argv
        .first()
        .map(|a| basename(a).trim_start_matches('-'))
        .unwrap_or(own);
    let mut rest: &[String] = argv.get(1..).unwrap_or(&[]);
    let mut applet = None;
    if multi_call {
        // `busybox APPLET ...` names the applet in argv[1] (only under the multi-call
        // binary's own well-known name, as busybox, toybox and coreutils dispatch); otherwise
        // argv[0] is the applet.
        if is_known_multi_call(invoked) {
            match rest.first() {
                Some(a) if !a.starts_with('-') => {
                    applet = Some(basename(a).to_string());
                    rest = &rest[1..];
                }
                // `busybox` alone or `busybox --list`: the multi-call binary itself.
                _ => {}
            }
        } else if !invoked.is_empty() {
            applet = Some(invoked.to_string());
        }
    }
    // For any other binary the file decides what it is, whatever argv[0] claims: an
    // interpreter is recognised by its own name (python3.11, dash).
    let program = applet.as_deref().unwrap_or(own);
    let script = if is_loader(exe) {
        loaded_program(rest)
    } else if let Some(syntax) = syntax_of(program) {
        script_of(syntax, rest)
    } else {
        None
    };
    // An applet that is the file's own name says nothing the executable does not: only a
    // different one is recorded, so an element does not change with how the binary was found
    // to be multi-call.
    Invocation {
        applet: applet.filter(|a| a != own),
        script,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(exe: &str, argv: &[&str], multi: bool, applet: Option<&str>, script: Option<&str>) {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let got = identify(exe, &argv, multi);
        assert_eq!(
            (got.applet.as_deref(), got.script.as_deref()),
            (applet, script),
            "{exe} {argv:?}"
        );
    }

    #[test]
    fn multi_call_binaries_name_their_applet() {
        check(
            "/bin/busybox",
            &["wget", "http://x"],
            true,
            Some("wget"),
            None,
        );
        check(
            "/bin/busybox",
            &["/usr/bin/wget", "-q"],
            true,
            Some("wget"),
            None,
        );
        check(
            "/bin/busybox",
            &["busybox", "wget", "x"],
            true,
            Some("wget"),
            None,
        );
        check(
            "/bin/busybox",
            &["/bin/busybox", "id"],
            true,
            Some("id"),
            None,
        );
        check("/bin/busybox", &["busybox"], true, None, None);
        check("/bin/busybox", &["busybox", "--list"], true, None, None);
        check("/usr/bin/toybox", &["ls", "-l"], true, Some("ls"), None);
        check(
            "/usr/bin/toybox",
            &["toybox", "cat", "f"],
            true,
            Some("cat"),
            None,
        );
        check("/usr/bin/coreutils", &["ls"], true, Some("ls"), None);
        // A copy of the binary under the applet's own name: the file says it all.
        check("/bin/sleep", &["sleep", "1"], true, None, None);
        check("/bin/sh", &["sh", "/x.sh"], true, None, Some("/x.sh"));
        check("/bin/sleep", &["wget", "x"], true, Some("wget"), None);
        // A login shell's argv[0] has a leading dash.
        check("/bin/busybox", &["-sh"], true, Some("sh"), Some(INLINE));
        // Not multi-call: argv[0] changes nothing.
        check("/usr/bin/id", &["wget"], false, None, None);
    }

    #[test]
    fn shells_name_their_script_or_inline_code() {
        check(
            "/bin/busybox",
            &["sh", "/tmp/x.sh"],
            true,
            Some("sh"),
            Some("/tmp/x.sh"),
        );
        check(
            "/bin/busybox",
            &["busybox", "sh", "/tmp/x.sh"],
            true,
            Some("sh"),
            Some("/tmp/x.sh"),
        );
        check(
            "/bin/busybox",
            &["sh", "-c", "wget x"],
            true,
            Some("sh"),
            Some(INLINE),
        );
        check(
            "/bin/busybox",
            &["ash", "-ec", "id"],
            true,
            Some("ash"),
            Some(INLINE),
        );
        check(
            "/usr/bin/dash",
            &["sh", "-e", "/entry.sh", "a"],
            false,
            None,
            Some("/entry.sh"),
        );
        check(
            "/usr/bin/bash",
            &["bash", "-o", "pipefail", "run.sh"],
            false,
            None,
            Some("run.sh"),
        );
        check(
            "/usr/bin/bash",
            &["bash", "-xc", "ls"],
            false,
            None,
            Some(INLINE),
        );
        check("/usr/bin/bash", &["bash"], false, None, Some(INLINE));
        check("/usr/bin/bash", &["bash", "-s"], false, None, Some(INLINE));
        check(
            "/usr/bin/bash",
            &["bash", "--", "x.sh"],
            false,
            None,
            Some("x.sh"),
        );
        // A file named like the inline marker cannot pass for it.
        check(
            "/usr/bin/bash",
            &["bash", "[inline]"],
            false,
            None,
            Some("./[inline]"),
        );
    }

    #[test]
    fn interpreters_parse_their_options() {
        check(
            "/usr/bin/python3.11",
            &["python3", "-W", "ignore", "x.py"],
            false,
            None,
            Some("x.py"),
        );
        check(
            "/usr/bin/python3.11",
            &["python3", "-u", "/app/main.py"],
            false,
            None,
            Some("/app/main.py"),
        );
        check(
            "/usr/bin/python3.11",
            &["python3", "-c", "print(1)"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/python3.11",
            &["python3", "-m", "http.server"],
            false,
            None,
            Some("-m http.server"),
        );
        check(
            "/usr/bin/python3.11",
            &["python3", "-mhttp.server"],
            false,
            None,
            Some("-m http.server"),
        );
        check(
            "/usr/bin/python3.11",
            &["python3", "-"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/python3.11",
            &["python3", "-Bc", "x"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/python3.11",
            &["python3", "-Werror::ResourceWarning", "a.py"],
            false,
            None,
            Some("a.py"),
        );
        check(
            "/usr/bin/php8.2",
            &["php", "-f", "/var/www/i.php"],
            false,
            None,
            Some("/var/www/i.php"),
        );
        check(
            "/usr/bin/bash",
            &["bash", "+o", "posix", "s.sh"],
            false,
            None,
            Some("s.sh"),
        );
        check(
            "/usr/bin/node",
            &["node", "--eval=1"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/perl",
            &["perl", "-e", "print 1"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/perl",
            &["perl", "-eprint"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/perl",
            &["perl", "-I", "/lib", "x.pl"],
            false,
            None,
            Some("x.pl"),
        );
        check(
            "/usr/bin/ruby3.1",
            &["ruby", "-r", "json", "x.rb"],
            false,
            None,
            Some("x.rb"),
        );
        check(
            "/usr/bin/node",
            &["node", "--require", "m", "srv.js"],
            false,
            None,
            Some("srv.js"),
        );
        check(
            "/usr/bin/node",
            &["node", "-e", "1"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/php8.2",
            &["php", "-r", "echo 1;"],
            false,
            None,
            Some(INLINE),
        );
        check(
            "/usr/bin/lua5.4",
            &["lua", "-e", "x()"],
            false,
            None,
            Some(INLINE),
        );
        // Recognised by the file, whatever argv[0] claims.
        check(
            "/usr/bin/python3.11",
            &["totally-not-python", "x.py"],
            false,
            None,
            Some("x.py"),
        );
        // A multi-call binary run as an ordinary applet has no script.
        check("/bin/busybox", &["sleep", "1"], true, Some("sleep"), None);
        check("/usr/bin/id", &["id", "x"], false, None, None);
    }

    #[test]
    fn what_could_not_be_read_is_named_unreadable() {
        let mut missing = vec![];
        let inv = unreadable("/bin/busybox", true, &mut missing);
        assert_eq!(inv.applet.as_deref(), Some(UNREADABLE));
        let inv = unreadable("/usr/bin/python3.11", false, &mut missing);
        assert_eq!(inv.script.as_deref(), Some(UNREADABLE));
        assert_eq!(
            unreadable("/usr/bin/id", false, &mut missing),
            Invocation::default()
        );
        assert_eq!(missing, ["applet", "script"]);
    }

    #[test]
    fn a_loader_run_directly_names_the_program_it_loads() {
        let ld = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        check(
            ld,
            &["/lib64/ld-linux-x86-64.so.2", "/tmp/miner", "-o", "x"],
            false,
            None,
            Some("/tmp/miner"),
        );
        check(
            ld,
            &[
                "ld.so",
                "--library-path",
                "/tmp",
                "--argv0",
                "bash",
                "/tmp/m",
            ],
            false,
            None,
            Some("/tmp/m"),
        );
        check(
            "/lib/ld-musl-x86_64.so.1",
            &["ld", "/tmp/m"],
            false,
            None,
            Some("/tmp/m"),
        );
        check(ld, &["ld.so", "--list"], false, None, None);
    }
}
