//! Compiles `procguard/v1/*.proto` with protox, a pure-Rust protobuf compiler, so that a fresh
//! machine needs no `protoc` binary.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dir = root.join("procguard/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds.clone())?;
    // The servers once more, with every message taken from `v1` except `StreamRecord`, which
    // becomes `crate::Encoded`: the SIEM stream sends records encoded once and shared by all
    // subscribers (see `Encoded`). Same service names and paths, so the wire is unchanged.
    let encoded = PathBuf::from(std::env::var("OUT_DIR")?).join("encoded");
    std::fs::create_dir_all(&encoded)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .out_dir(&encoded)
        .extern_path(".procguard.v1.StreamRecord", "crate::Encoded")
        .extern_path(".procguard.v1", "crate::v1")
        .compile_fds(fds.clone())?;
    // The clients once more, with `SensorMessage` replaced by `crate::Encoded`: the sensor
    // sends the events its spool holds as they are stored, never decoding them to encode them
    // again (see `Encoded::event_batch`). Same paths, so the wire is unchanged.
    let encoded_client = PathBuf::from(std::env::var("OUT_DIR")?).join("encoded_client");
    std::fs::create_dir_all(&encoded_client)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(&encoded_client)
        .extern_path(".procguard.v1.SensorMessage", "crate::Encoded")
        .extern_path(".procguard.v1", "crate::v1")
        .compile_fds(fds)?;
    Ok(())
}
