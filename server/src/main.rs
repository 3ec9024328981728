//! `procguard-server`: parses flags and hands over to [`procguard_server::run`].

use clap::Parser;
use procguard_server::Config;

// sled copies and frees tree nodes on every transaction; glibc's allocator spent about a
// quarter of the server's CPU on that under deviation ingest (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    procguard_runtime::telemetry::init(config.log_format);
    let settings = match config.validate() {
        Ok(s) => s,
        Err(e) => e.exit("procguard-server"),
    };
    let shutdown = procguard_runtime::shutdown::on_signals();
    procguard_server::run(settings, shutdown).await
}
