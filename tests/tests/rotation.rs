//! Certificates rotated under live streams, the real server and sensor reading them from
//! directories laid out as Kubernetes Secret volumes (`file -> ..data/file`, `..data ->
//! ..<version>`, updated by an atomic swap of `..data`).
//!
//! The whole PKI is replaced at once (a new CA, new server and sensor certificates): the
//! hardest case, since nothing issued by the old CA is trusted afterwards. A half-written
//! update first (the new certificate beside the old key) must leave the server serving with
//! the old one. Then: the sensor reconnects with its new certificate (the only one the server
//! now trusts), the server presents its new certificate to new clients (which trust only the
//! new CA), a subscription opened before the rotation keeps streaming without a gap, the
//! sensor's execs from before, during and after the rotation all arrive, and the expiry
//! metrics follow the new files.

use procguard_proto::v1 as pb;
use procguard_runtime::tls::Material;
use procguard_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Writes `files` (name in the volume → source file) as a new version of the Secret volume
/// `vol`, and swaps `..data` to it atomically, as the kubelet does.
fn publish(vol: &Path, version: &str, files: &[(&str, PathBuf)]) {
    let dir = vol.join(format!("..{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, from) in files {
        std::fs::copy(from, dir.join(name)).unwrap();
    }
    let tmp = vol.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, vol.join("..data")).unwrap();
    for (name, _) in files {
        let link = vol.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
        }
    }
}

fn material(dir: &Path, cert: &str) -> Material {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    Material::parse(
        &read(&format!("{cert}.crt")),
        &read(&format!("{cert}.key")),
        &read("ca.crt"),
    )
    .unwrap()
}

fn leaf_not_after(dir: &Path, cert: &str) -> i64 {
    procguard_runtime::self_metrics::earliest_not_after(
        &std::fs::read_to_string(dir.join(format!("{cert}.crt"))).unwrap(),
    )
    .unwrap()
}

/// A copy of `/bin/true` named `name` in `dir`, run once: one exec the sensor reports.
fn exec_marker(dir: &Path, name: &str) -> String {
    let exe = dir.join(name);
    std::fs::copy("/bin/true", &exe).unwrap();
    assert!(Command::new(&exe).status().unwrap().success());
    exe.display().to_string()
}

/// Whether the exported baselines hold `exe` (learned from the sensor's event).
fn learned(client: &Pki, server: &Server, exe: &str) -> bool {
    let out = ctl(client, server, "viewer", &["baselines", "export"]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(exe)
}

#[test]
fn certificates_rotated_under_live_sensor_and_subscriber_streams_lose_nothing() {
    if !require(
        is_root(),
        "the real sensor needs root for the kernel's process events",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let node = "rot-node";
    let old = Pki::create(&w.join("old"), &[node]);
    // Made at least a second later, so every notAfter differs from the old one's.
    std::thread::sleep(Duration::from_millis(1100));
    let new = Pki::create(&w.join("new"), &[node]);
    // The new PKI's tokens file is the old one's: only certificates rotate.
    std::fs::copy(old.file("tokens.yaml"), new.file("tokens.yaml")).unwrap();

    // The server's Secret volume, laid out as Server::start reads a PKI directory.
    let server_vol = w.join("server-tls");
    std::fs::create_dir_all(&server_vol).unwrap();
    let server_files = |p: &Pki| {
        vec![
            ("server.crt", p.file("server.crt")),
            ("server.key", p.file("server.key")),
            ("ca.crt", p.file("ca.crt")),
            ("tokens.yaml", p.file("tokens.yaml")),
        ]
    };
    publish(&server_vol, "v1", &server_files(&old));
    let server = Server::start(
        &Pki {
            dir: server_vol.clone(),
        },
        w,
        &["--tls-reload-interval", "200ms"],
    );
    // Clients (procguardctl, the subscription) trust `client/ca.crt` and hold the tokens.
    let client = Pki {
        dir: w.join("client"),
    };
    std::fs::create_dir_all(&client.dir).unwrap();
    for f in ["ca.crt", "viewer.token", "siem.token", "admin.token"] {
        std::fs::copy(old.file(f), client.file(f)).unwrap();
    }

    // The sensor's Secret volume and the real sensor.
    let sensor_vol = w.join("sensor-tls");
    std::fs::create_dir_all(&sensor_vol).unwrap();
    let sensor_files = |p: &Pki| {
        vec![
            ("tls.crt", p.file(&format!("sensor-{node}.crt"))),
            ("tls.key", p.file(&format!("sensor-{node}.key"))),
            ("ca.crt", p.file("ca.crt")),
        ]
    };
    publish(&sensor_vol, "v1", &sensor_files(&old));
    let sensor_admin = free_port();
    let mut cmd = Command::new(bin("procguard-sensor"));
    cmd.args(["--server", &server.url(), "--node-name", node])
        .args(["--tls-server-name", "localhost"])
        .arg("--tls-ca")
        .arg(sensor_vol.join("ca.crt"))
        .arg("--tls-cert")
        .arg(sensor_vol.join("tls.crt"))
        .arg("--tls-key")
        .arg(sensor_vol.join("tls.key"))
        .args(["--tls-reload-interval", "200ms"])
        .args(["--admin-addr", &format!("127.0.0.1:{sensor_admin}")])
        .arg("--spool-dir")
        .arg(w.join("spool"));
    let sensor = Proc::spawn(cmd, w.join("sensor.log"));
    let connected = || {
        metric(sensor_admin, "procguard_sensor_connected")
            .filter(|v| *v >= 1.0)
            .map(drop)
    };
    assert!(
        wait_for(Duration::from_secs(20), connected).is_some(),
        "sensor not connected:\n{}",
        sensor.log_text()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A subscription opened before the rotation, over a connection made with the old CA.
    let mut live = rt
        .block_on(procguard_tests::grpc::subscribe(
            &client,
            &server.url(),
            pb::start_position::Position::Now(true),
            &[],
        ))
        .unwrap();

    let bins = w.join("bins");
    std::fs::create_dir_all(&bins).unwrap();
    let before = exec_marker(&bins, "rotation-before");
    assert!(
        wait_for(Duration::from_secs(20), || learned(
            &client, &server, &before
        )
        .then_some(()))
        .is_some(),
        "the exec before the rotation did not arrive:\n{}",
        sensor.log_text()
    );

    // A half-written server update: the new certificate beside the old key. The server keeps
    // serving with its old certificate and says why.
    let mut half = server_files(&old);
    half[0].1 = new.file("server.crt");
    publish(&server_vol, "half", &half);
    assert!(
        wait_for(Duration::from_secs(10), || server
            .proc
            .log_text()
            .contains("Changed TLS files do not load")
            .then_some(()))
        .is_some(),
        "no warning about the mismatched pair:\n{}",
        server.proc.log_text()
    );
    let out = ctl(&client, &server, "viewer", &["baselines", "list"]);
    assert!(
        out.status.success(),
        "the server stopped serving its old certificate after a half-written update: {out:?}"
    );

    // The whole rotation: new CA, new server and sensor certificates, at once.
    publish(&server_vol, "v2", &server_files(&new));
    publish(&sensor_vol, "v2", &sensor_files(&new));
    let during = exec_marker(&bins, "rotation-during");

    // New clients trust only the new CA: they connect once the server presents its new
    // certificate, and a client trusting only the old CA no longer does.
    std::fs::copy(new.file("ca.crt"), client.file("ca.crt")).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || ctl(
            &client,
            &server,
            "viewer",
            &["baselines", "list"]
        )
        .status
        .success()
        .then_some(()))
        .is_some(),
        "the server does not present its new certificate:\n{}",
        server.proc.log_text()
    );
    assert!(
        !ctl(&old, &server, "viewer", &["baselines", "list"])
            .status
            .success(),
        "the server still presents the old certificate to new connections"
    );

    // The sensor reconnected with its new certificate: the server trusts only the new CA now,
    // and it logged the new certificate's serial.
    let new_serial = material(&new.dir, &format!("sensor-{node}")).serial;
    let old_serial = material(&old.dir, &format!("sensor-{node}")).serial;
    assert!(
        wait_for(Duration::from_secs(30), || server
            .proc
            .log_text()
            .lines()
            .any(|l| l.contains("Sensor connected.") && l.contains(&new_serial))
            .then_some(()))
        .is_some(),
        "the sensor did not reconnect with its new certificate ({new_serial}):\nserver:\n{}\nsensor:\n{}",
        server.proc.log_text(),
        sensor.log_text()
    );
    assert!(server
        .proc
        .log_text()
        .lines()
        .any(|l| l.contains("Sensor connected.") && l.contains(&old_serial)));
    assert!(sensor
        .log_text()
        .contains("TLS certificate changed; reconnecting with it."));

    let after = exec_marker(&bins, "rotation-after");
    for exe in [&before, &during, &after] {
        assert!(
            wait_for(Duration::from_secs(30), || learned(&client, &server, exe)
                .then_some(()))
            .is_some(),
            "{exe} did not arrive:\nsensor:\n{}",
            sensor.log_text()
        );
    }

    // The subscription opened before the rotation is still streaming, without a gap: the
    // audit records of the calls made after the rotation arrive on it.
    let marker = "rotation-subscriber-marker";
    let out = ctl(
        &client,
        &server,
        "admin",
        &["baselines", "get", &format!("c/{marker}/deployment/x/y")],
    );
    assert!(!out.status.success(), "a baseline that does not exist");
    let cursors = rt.block_on(async {
        let mut cursors = Vec::new();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(20), live.message())
                .await
                .expect("the subscription went quiet")
                .expect("the subscription failed")
                .expect("the subscription ended");
            cursors.push(r.cursor);
            let is_marker = matches!(
                &r.record,
                Some(pb::stream_record::Record::Audit(a)) if a.target.contains(marker)
            );
            if is_marker {
                return cursors;
            }
        }
    });
    assert!(cursors.len() >= 3, "{cursors:?}");
    // Every kind was asked for, so every record of the log arrives: contiguous cursors.
    assert!(
        cursors.windows(2).all(|p| p[1] == p[0] + 1),
        "a gap or a duplicate: {cursors:?}"
    );

    // The expiry metrics follow the files now in use, on both sides.
    let server_expiry = metric(
        server.admin_port,
        "procguard_tls_certificate_expiry_timestamp_seconds{certificate=\"server\"}",
    )
    .unwrap();
    assert_eq!(server_expiry as i64, leaf_not_after(&new.dir, "server"));
    assert_ne!(server_expiry as i64, leaf_not_after(&old.dir, "server"));
    let sensor_expiry = metric(
        sensor_admin,
        "procguard_tls_certificate_expiry_timestamp_seconds{certificate=\"client\"}",
    )
    .unwrap();
    assert_eq!(
        sensor_expiry as i64,
        leaf_not_after(&new.dir, &format!("sensor-{node}"))
    );
    for port in [server.admin_port, sensor_admin] {
        assert!(metric(port, "procguard_tls_reloads_total{result=\"ok\"}").unwrap_or(0.0) >= 1.0);
    }
    assert!(
        metric(
            server.admin_port,
            "procguard_tls_reloads_total{result=\"failed\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}
