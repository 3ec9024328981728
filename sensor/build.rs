//! Compiles the kernel side of eBPF capture (`bpf/exec.bpf.c`) with clang into an object the
//! sensor embeds (`OUT_DIR/exec.bpf.o`) and loads with aya at run time.
//!
//! clang is optional: without it (or without libbpf's headers) the build still succeeds, says
//! so in a warning, and the sensor captures with the netlink proc connector only (`--capture
//! auto` logs why at start; `--capture ebpf` refuses to start). `PROCGUARD_REQUIRE_EBPF=1`
//! turns the warning into a build failure (CI sets it, so a CI build always has both
//! backends). `CLANG` names another clang.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: &[&str] = &["bpf/exec.bpf.c", "bpf/core.h"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(procguard_ebpf)");
    for s in SOURCES {
        println!("cargo::rerun-if-changed={s}");
    }
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=PROCGUARD_REQUIRE_EBPF");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("exec.bpf.o");
    match compile(&object) {
        Ok(()) => println!("cargo::rustc-cfg=procguard_ebpf"),
        Err(why) => {
            if std::env::var("PROCGUARD_REQUIRE_EBPF").as_deref() == Ok("1") {
                panic!("PROCGUARD_REQUIRE_EBPF=1 but the eBPF program did not build: {why}");
            }
            println!(
                "cargo::warning=eBPF capture not built ({why}); this sensor captures with the netlink proc connector only. To enable eBPF: install clang and libbpf's headers (Debian: apt-get install clang libbpf-dev) and rebuild."
            );
            // An empty object keeps `include_bytes!` valid; it is never loaded.
            std::fs::write(&object, []).expect("write to OUT_DIR");
        }
    }
}

fn compile(object: &Path) -> Result<(), String> {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let (target_arch, multiarch) = match arch.as_str() {
        "x86_64" => ("x86", "x86_64-linux-gnu"),
        "aarch64" => ("arm64", "aarch64-linux-gnu"),
        other => return Err(format!("no eBPF build for target architecture {other}")),
    };
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-D__TARGET_ARCH_{target_arch}"))
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/exec.bpf.c", "-o"])
        .arg(object)
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("{clang} failed: {first}"));
    }
    Ok(())
}
