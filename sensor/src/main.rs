//! `procguard-sensor`: parses flags and hands over to [`procguard_sensor::run`].

use clap::Parser;
use procguard_sensor::Config;

fn main() {
    let config = Config::parse();
    procguard_runtime::telemetry::init(config.log_format);
    let mut settings = match config.validate() {
        Ok(s) => s,
        Err(e) => e.exit("procguard-sensor"),
    };
    // A cgroup namespace belongs to a thread and is inherited by the threads it creates, so
    // the host's is entered here, while this is the only thread, before the runtime starts.
    let established = procguard_sensor::cgroupns::establish(
        &settings.host_cgroupns,
        &settings.proc_root,
        &settings.cgroup_root,
    );
    settings.cgroup_view = established.view;
    settings.cgroup_mode = established.mode;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.runtime_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("procguard-sensor: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        let shutdown = procguard_runtime::shutdown::on_signals();
        if let Err(e) = procguard_sensor::run(settings, shutdown).await {
            eprintln!("procguard-sensor: {e:#}");
            std::process::exit(1);
        }
    });
}
