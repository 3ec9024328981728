//! The server in-process: the real `procguard_server` library on loopback, with real TLS and
//! a real sled database on disk, bound to `127.0.0.1:0` so the OS chooses its ports (no
//! `free_port` race). For API-level tests: what the gRPC API does, not how the binary starts
//! (the quickstart, deploy and fault tests run the binary, [`crate::Server`]).
//!
//! It runs on a runtime of its own in its own thread, so a test that blocks (running
//! `procguardctl`, polling) never stalls it. Its flags are the binary's, parsed and validated
//! by the same `Config`.

use crate::{Pki, ServerHandle};
use clap::Parser;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A `procguard_server` running in this process.
#[derive(Debug)]
pub struct InProcessServer {
    /// The gRPC address the OS gave.
    pub grpc_addr: SocketAddr,
    /// The admin port the OS gave.
    pub admin_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl InProcessServer {
    /// Starts a server with `pki` and `extra` flags (as the binary takes them); panics, with
    /// the server's error, if it does not start. Unless `extra` says otherwise, the shutdown
    /// grace is 1 s, so that a test's clients still connected when it ends cost it little.
    pub fn start(pki: &Pki, work: &Path, extra: &[&str]) -> Self {
        let data_dir = work.join("server-data");
        let file = |name: &str| pki.file(name).display().to_string();
        let mut args: Vec<String> = [
            "procguard-server",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend([
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--tls-cert".into(),
            file("server.crt"),
            "--tls-key".into(),
            file("server.key"),
            "--tls-client-ca".into(),
            file("ca.crt"),
            "--tokens-file".into(),
            file("tokens.yaml"),
        ]);
        if !extra.contains(&"--shutdown-grace") {
            args.extend(["--shutdown-grace".into(), "1s".into()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let settings = procguard_server::Config::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("server flags {args:?}: {e}"))
            .validate()
            .unwrap_or_else(|e| panic!("server configuration: {e}"));
        let shutdown = CancellationToken::new();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("in-process-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("in-process-server")
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?;
                rt.block_on(async move {
                    let bound = procguard_server::bind(settings)
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    let _ = bound_tx.send((bound.grpc_addr(), bound.admin_addr()));
                    bound.serve(token).await.map_err(|e| format!("{e:#}"))
                })
            })
            .expect("spawn the server thread");
        let (grpc_addr, admin_addr) = match bound_rx.recv() {
            Ok(addrs) => addrs,
            Err(_) => panic!(
                "the in-process server did not start: {}",
                match thread.join() {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => "it stopped at once".into(),
                    Err(_) => "it panicked".into(),
                }
            ),
        };
        Self {
            grpc_addr,
            admin_port: admin_addr.port(),
            data_dir,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl ServerHandle for InProcessServer {
    fn url(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    fn admin_port(&self) -> u16 {
        self.admin_port
    }
}

impl Drop for InProcessServer {
    /// Stops it as SIGTERM stops the binary (the one shutdown token), and waits for it to
    /// drain and flush; a failure to stop cleanly fails the test, unless it is failing already.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let outcome = thread.join();
            if !std::thread::panicking() {
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => panic!("the in-process server failed: {e}"),
                    Err(_) => panic!("the in-process server panicked"),
                }
            }
        }
    }
}
