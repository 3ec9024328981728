//! TLS material that follows its files: certificate, key and CA are read again whenever they
//! change on disk, and new connections use the new ones.
//!
//! **How a change is seen.** A watcher ([`Reloading::watch`]) reads the three files every
//! `--tls-reload-interval` and compares their bytes (sha256) with those in use. Reading by
//! path follows symlinks at each read, so a Kubernetes Secret volume update, an atomic swap of
//! the `..data` symlink that every file links through, is seen like any in-place write, and
//! polling needs no inotify watch that a swapped directory would invalidate. Three small reads
//! per interval cost nothing measurable.
//!
//! **A half-written update never breaks the running process.** The three files are read one
//! after the other, so a read may catch a new certificate beside the old key (a writer
//! between two files, or a swap between two reads). New material is used only once it is
//! consistent: every PEM parses, the key is the certificate's (its public key matches the
//! leaf's), and the CA holds at least one certificate. Until then the material in use stays,
//! one warning names what is wrong (once per distinct content, not once per poll), and the
//! next poll tries again. `procguard_tls_reloads_total{result}` counts both outcomes.
//!
//! **Expiry.** Each load records the earliest `notAfter` of each file in
//! `procguard_tls_certificate_expiry_timestamp_seconds` (the reload replaces the old value), and
//! while the material in use expires within [`EXPIRY_WARNING`] the watcher logs a warning once a
//! day.
//!
//! What a "material" becomes is the caller's: the server builds a rustls `ServerConfig`
//! ([`server_tls`]), the sensor a tonic `ClientTlsConfig` ([`client_tls`]). Connections already
//! open keep the certificate they were made with; the server never cuts them, and the sensor
//! reconnects on its own when its client certificate changes (`sensor::uplink`).

use crate::self_metrics::{earliest_not_after, record_certificate, record_reload};
use crate::ConfigError;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A warning is logged while the certificate (or CA) in use expires within this long: two
/// weeks, well after cert-manager's renewal point (30 days before expiry in `deploy/`), so it
/// fires only when renewal has failed for two weeks or a certificate was never renewed, and
/// leaves two weeks to act.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
/// The expiry warning is repeated at most this often.
const WARN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The three files of one TLS identity and its trust.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate (chain), PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// CA certificate(s) trusted for the peer, PEM.
    pub ca: PathBuf,
}

/// How the expiry metric labels the two certificate files (`server` and `client-ca` for the
/// server, `client` and `ca` for a client).
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    /// The certificate presented.
    pub cert: &'static str,
    /// The CA trusted.
    pub ca: &'static str,
}

/// The three files as read at one moment, checked to belong together.
#[derive(Clone)]
pub struct Material {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// CA certificate(s), PEM.
    pub ca_pem: String,
    /// Earliest `notAfter` of the chain and of the CA (seconds since the epoch).
    pub not_after: i64,
    /// The leaf certificate's serial (hex), to say in logs which one is in use.
    pub serial: String,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Material")
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Checks that the three files' contents belong together: every PEM parses, the key is the
    /// certificate's, and the CA holds a certificate.
    pub fn parse(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, String> {
        let text = |b: &[u8], what: &str| {
            String::from_utf8(b.to_vec()).map_err(|_| format!("the {what} is not PEM text"))
        };
        let (cert_pem, key_pem, ca_pem) = (
            text(cert, "certificate")?,
            text(key, "key")?,
            text(ca, "CA")?,
        );
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let leaf = chain
            .first()
            .ok_or("the certificate file holds no certificate")?;
        let private = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| format!("the key does not parse: {e}"))?
            .ok_or("the key file holds no private key")?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&private)
            .map_err(|e| format!("the key is not usable: {e}"))?;
        match rustls::sign::CertifiedKey::new(chain.clone(), signer).keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(format!(
                    "the key does not belong to the certificate ({e}); a certificate and key \
                     are used only as a pair"
                ))
            }
        }
        let cas = rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the CA does not parse: {e}"))?;
        if cas.is_empty() {
            return Err("the CA file holds no certificate".into());
        }
        let not_after = earliest_not_after(&cert_pem)
            .into_iter()
            .chain(earliest_not_after(&ca_pem))
            .min()
            .ok_or("the certificate's validity does not parse")?;
        let serial = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map(|(_, c)| c.raw_serial_as_string().replace(':', ""))
            .unwrap_or_default();
        Ok(Self {
            cert_pem,
            key_pem,
            ca_pem,
            not_after,
            serial,
        })
    }
}

/// Reads the three files; `Err` names the one that could not be read.
fn read(files: &TlsFiles) -> Result<[Vec<u8>; 3], String> {
    let one = |p: &PathBuf, what: &str| {
        std::fs::read(p).map_err(|e| format!("cannot read the {what} '{}': {e}", p.display()))
    };
    Ok([
        one(&files.cert, "certificate")?,
        one(&files.key, "key")?,
        one(&files.ca, "CA")?,
    ])
}

fn digest(bytes: &[Vec<u8>; 3]) -> [u8; 32] {
    let mut h = Sha256::new();
    for b in bytes {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    }
    h.finalize().into()
}

/// Builds what connections use from checked material.
type Build<T> = dyn Fn(&Material) -> Result<T, String> + Send + Sync;

struct State {
    /// Digest of the files in use.
    in_use: [u8; 32],
    /// Digest of the last content refused, so it is reported once.
    refused: Option<[u8; 32]>,
    /// Earliest `notAfter` of the material in use.
    not_after: i64,
    /// When the expiry warning was last logged.
    warned: Option<Instant>,
}

struct Shared<T> {
    files: TlsFiles,
    labels: Labels,
    build: Box<Build<T>>,
    tx: watch::Sender<Arc<T>>,
    state: Mutex<State>,
}

/// What one look at the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The files are those in use (or a content already refused).
    Unchanged,
    /// New material is in use from now on.
    Reloaded,
    /// The files changed but do not load; the material in use stays.
    Refused(String),
}

/// TLS material (built into `T`) that follows its files; cheap to clone.
pub struct Reloading<T> {
    shared: Arc<Shared<T>>,
    rx: watch::Receiver<Arc<T>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            rx: self.rx.clone(),
        }
    }
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.shared.files)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Loads the files for the first time; any problem is a configuration error (exit 64).
    pub fn load(
        files: TlsFiles,
        labels: Labels,
        build: impl Fn(&Material) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        let problem = |e: String| {
            ConfigError(format!(
                "TLS files (certificate '{}', key '{}', CA '{}'): {e}; pass existing PEM files \
                 (see docs/deploy.md, \"Certificates\")",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            ))
        };
        let bytes = read(&files).map_err(problem)?;
        let material = Material::parse(&bytes[0], &bytes[1], &bytes[2]).map_err(problem)?;
        let built = build(&material).map_err(problem)?;
        record_certificate(labels.cert, &material.cert_pem);
        record_certificate(labels.ca, &material.ca_pem);
        let (tx, rx) = watch::channel(Arc::new(built));
        Ok(Self {
            shared: Arc::new(Shared {
                files,
                labels,
                build: Box::new(build),
                tx,
                state: Mutex::new(State {
                    in_use: digest(&bytes),
                    refused: None,
                    not_after: material.not_after,
                    warned: None,
                }),
            }),
            rx,
        })
    }

    /// What new connections use now.
    pub fn current(&self) -> Arc<T> {
        self.rx.borrow().clone()
    }

    /// What new connections use now, marked as seen: [`Reloading::changed`] waits for the
    /// next change after it.
    pub fn take_current(&mut self) -> Arc<T> {
        self.rx.borrow_and_update().clone()
    }

    /// Waits until new material is in use (after the last call, or since this handle was
    /// made). Never returns while nothing changes.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives as long as any handle, this one included: cannot happen.
            std::future::pending::<()>().await;
        }
    }

    /// Looks at the files once, and uses them from now on if they changed and load.
    pub fn check(&self) -> Outcome {
        let s = &self.shared;
        let bytes = match read(&s.files) {
            Ok(b) => b,
            // A file missing for a moment (being replaced) is the same as a half-written one.
            Err(e) => return self.refuse(None, e),
        };
        let d = digest(&bytes);
        {
            let state = s.state.lock().expect("tls reload state");
            if state.in_use == d || state.refused == Some(d) {
                return Outcome::Unchanged;
            }
        }
        let material = match Material::parse(&bytes[0], &bytes[1], &bytes[2]) {
            Ok(m) => m,
            Err(e) => return self.refuse(Some(d), e),
        };
        let built = match (s.build)(&material) {
            Ok(b) => b,
            Err(e) => return self.refuse(Some(d), e),
        };
        {
            let mut state = s.state.lock().expect("tls reload state");
            state.in_use = d;
            state.refused = None;
            state.not_after = material.not_after;
            state.warned = None;
        }
        record_certificate(s.labels.cert, &material.cert_pem);
        record_certificate(s.labels.ca, &material.ca_pem);
        s.tx.send_replace(Arc::new(built));
        record_reload(true);
        tracing::info!(
            message = "TLS certificate reloaded; new connections use it.",
            certificate = %s.files.cert.display(),
            serial = %material.serial,
            not_after = material.not_after
        );
        Outcome::Reloaded
    }

    fn refuse(&self, d: Option<[u8; 32]>, why: String) -> Outcome {
        let s = &self.shared;
        let mut state = s.state.lock().expect("tls reload state");
        // A missing file (no digest) is reported every time it is seen, but only while the
        // last look found something else; a refused content once.
        let new = match d {
            Some(d) => state.refused.replace(d) != Some(d),
            None => state.refused.replace([0; 32]) != Some([0; 32]),
        };
        drop(state);
        if new {
            record_reload(false);
            tracing::warn!(
                message = "Changed TLS files do not load; keeping the certificate in use until they do.",
                certificate = %s.files.cert.display(),
                error = %why
            );
        }
        Outcome::Refused(why)
    }

    /// Logs a warning if the material in use expires within [`EXPIRY_WARNING`] of `now`,
    /// at most once a day; returns whether it did.
    pub fn warn_if_expiring(&self, now: SystemTime) -> bool {
        let s = &self.shared;
        let mut state = s.state.lock().expect("tls reload state");
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let left = state.not_after.saturating_sub(now_secs);
        if left > EXPIRY_WARNING.as_secs() as i64
            || state.warned.is_some_and(|t| t.elapsed() < WARN_EVERY)
        {
            return false;
        }
        state.warned = Some(Instant::now());
        drop(state);
        tracing::warn!(
            message = "TLS certificate in use expires soon; renew it (the new files are picked up without a restart).",
            certificate = %s.files.cert.display(),
            ca = %s.files.ca.display(),
            days_left = left / 86_400,
            not_after = left.saturating_add(now_secs)
        );
        true
    }

    /// Looks at the files every `every` until `shutdown`, and warns of expiry.
    pub fn watch(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            this.warn_if_expiring(SystemTime::now());
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // File reads and a PEM parse: small, but blocking; off the async workers.
                let checker = this.clone();
                let _ = tokio::task::spawn_blocking(move || checker.check()).await;
                this.warn_if_expiring(SystemTime::now());
            }
        })
    }
}

/// The server's TLS from material: its certificate, and client certificates verified against
/// the CA but optional (API callers may authenticate with a token alone; the sensor service
/// demands a sensor certificate itself). HTTP/2 only, as gRPC needs.
pub fn server_tls(m: &Material) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut m.ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| format!("the CA does not parse: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("the CA is not usable: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("the CA is not usable: {e}"))?;
    let chain = rustls_pemfile::certs(&mut m.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let key = rustls_pemfile::private_key(&mut m.key_pem.as_bytes())
        .map_err(|e| format!("the key does not parse: {e}"))?
        .ok_or("the key file holds no private key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key are not usable: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A client's TLS from material, verifying the server as `domain`.
pub fn client_tls(m: &Material, domain: &str) -> Result<tonic::transport::ClientTlsConfig, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&m.ca_pem))
        .identity(Identity::from_pem(&m.cert_pem, &m.key_pem))
        .domain_name(domain.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKI in `dir`, and the files of its `sensor-node-a` identity.
    fn pki(dir: &std::path::Path) -> TlsFiles {
        crate::pki::init(dir, &["localhost".into()], &["node-a".into()]).unwrap();
        TlsFiles {
            cert: dir.join("sensor-node-a.crt"),
            key: dir.join("sensor-node-a.key"),
            ca: dir.join("ca.crt"),
        }
    }

    const LABELS: Labels = Labels {
        cert: "test-client",
        ca: "test-ca",
    };

    fn serial(r: &Reloading<Material>) -> String {
        r.current().serial.clone()
    }

    /// Kubernetes' Secret volume layout: `name -> ..data/name`, `..data -> ..<version>`.
    fn secret_volume(dir: &std::path::Path, version: &str, from: &TlsFiles) {
        let v = dir.join(format!("..{version}"));
        std::fs::create_dir_all(&v).unwrap();
        std::fs::copy(&from.cert, v.join("tls.crt")).unwrap();
        std::fs::copy(&from.key, v.join("tls.key")).unwrap();
        std::fs::copy(&from.ca, v.join("ca.crt")).unwrap();
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        // The atomic swap the kubelet does.
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for f in ["tls.crt", "tls.key", "ca.crt"] {
            let link = dir.join(f);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(format!("..data/{f}"), link).unwrap();
            }
        }
    }

    #[test]
    fn a_secret_volume_swap_is_picked_up_and_a_half_written_pair_is_not() {
        let work = tempfile::tempdir().unwrap();
        let old = pki(&work.path().join("old"));
        let new = pki(&work.path().join("new"));
        let vol = work.path().join("secret");
        std::fs::create_dir_all(&vol).unwrap();
        secret_volume(&vol, "v1", &old);
        let files = TlsFiles {
            cert: vol.join("tls.crt"),
            key: vol.join("tls.key"),
            ca: vol.join("ca.crt"),
        };
        let r = Reloading::load(files.clone(), LABELS, |m| Ok(m.clone())).unwrap();
        let first = serial(&r);
        assert_eq!(r.check(), Outcome::Unchanged);

        // Half-written: the new certificate beside the old key. Refused, old kept, reported
        // once however often it is seen.
        let half = vol.join("..half");
        std::fs::create_dir_all(&half).unwrap();
        std::fs::copy(&new.cert, half.join("tls.crt")).unwrap();
        std::fs::copy(&old.key, half.join("tls.key")).unwrap();
        std::fs::copy(&old.ca, half.join("ca.crt")).unwrap();
        std::os::unix::fs::symlink("..half", vol.join("..data_tmp")).unwrap();
        std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
        match r.check() {
            Outcome::Refused(why) => assert!(why.contains("does not belong"), "{why}"),
            other => panic!("a mismatched pair was {other:?}"),
        }
        assert_eq!(r.check(), Outcome::Unchanged, "reported once");
        assert_eq!(serial(&r), first, "the material in use stays");
        // A truncated key (a writer mid-file) is refused too.
        std::fs::write(half.join("tls.key"), b"-----BEGIN PRIVATE KEY-----\nMIGH").unwrap();
        assert!(matches!(r.check(), Outcome::Refused(_)));
        assert_eq!(serial(&r), first);

        // The complete new pair, by the kubelet's swap.
        secret_volume(&vol, "v2", &new);
        assert_eq!(r.check(), Outcome::Reloaded);
        assert_ne!(serial(&r), first);
        assert_eq!(
            r.current().cert_pem,
            std::fs::read_to_string(&new.cert).unwrap()
        );
        assert_eq!(r.check(), Outcome::Unchanged);
    }

    #[test]
    fn expiry_is_warned_within_two_weeks_once_a_day() {
        let work = tempfile::tempdir().unwrap();
        let files = pki(work.path());
        let r = Reloading::load(files, LABELS, |m| Ok(m.clone())).unwrap();
        let not_after = UNIX_EPOCH + Duration::from_secs(r.current().not_after as u64);
        assert!(!r.warn_if_expiring(not_after - EXPIRY_WARNING - Duration::from_secs(60)));
        assert!(r.warn_if_expiring(not_after - Duration::from_secs(3600)));
        assert!(
            !r.warn_if_expiring(not_after - Duration::from_secs(60)),
            "once a day"
        );
    }

    #[test]
    fn both_builders_accept_consistent_material_and_the_initial_load_says_which_file() {
        let work = tempfile::tempdir().unwrap();
        let files = pki(work.path());
        let r = Reloading::load(files.clone(), LABELS, server_tls).unwrap();
        assert_eq!(r.current().alpn_protocols, vec![b"h2".to_vec()]);
        Reloading::load(files.clone(), LABELS, |m| client_tls(m, "localhost")).unwrap();
        let e = Reloading::load(
            TlsFiles {
                key: work.path().join("server.key"),
                ..files
            },
            LABELS,
            server_tls,
        )
        .unwrap_err();
        assert!(e.0.contains("does not belong to the certificate"), "{e}");
    }
}
