//! `procguard-sensor`: parses flags and hands over to [`procguard_sensor::run`].

use clap::Parser;
use procguard_sensor::Config;

#[tokio::main]
async fn main() {
    let config = Config::parse();
    procguard_runtime::telemetry::init(config.log_format);
    let settings = match config.validate() {
        Ok(s) => s,
        Err(e) => e.exit("procguard-sensor"),
    };
    let shutdown = procguard_runtime::shutdown::on_signals();
    if let Err(e) = procguard_sensor::run(settings, shutdown).await {
        eprintln!("procguard-sensor: {e:#}");
        std::process::exit(1);
    }
}
