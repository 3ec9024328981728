//! Which node a sensor stream may report for, from its client certificate alone.
//!
//! Only a certificate marked as a sensor's opens `SensorService` ([`super::cert`]):
//!
//! - `procguard://sensor/<node>`: the stream reports for `<node>` and no other. This is the
//!   strong setting, one certificate per node (`procguardctl pki init --node`).
//! - `procguard://sensor-fleet/<name>`: a certificate shared by a whole DaemonSet (cert-manager
//!   issues one Secret for all pods). Accepted only when the server lists `<name>` in
//!   `--sensor-fleet-names`; its stream may name any node in its `Hello`, which is taken on
//!   trust and logged per stream. Everything else still binds it: the events of the stream
//!   must name the `Hello`'s node, and like every sensor certificate it never reaches the API.
//!
//! A certificate without the mark (an API client's, a viewer's, the server's, or a sensor's
//! issued before the mark existed) is refused before its `Hello` is read, with a message that
//! says how to issue a sensor certificate. There is no transition flag: a certificate named
//! only by CN or DNS SAN is exactly what an API client holds, so accepting it would reopen the
//! hole the mark closes.
//!
//! Refusals of a certificate the CA signed are audited (at most once a minute per
//! certificate, [`RefusalAudit`]) and all are counted; a stream without any certificate is
//! only counted, since anyone can open one.

use super::cert::PeerCert;
use procguard_runtime::pki::SensorMark;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Status;

/// A refused sensor stream: the status to answer, and who to audit it as (`None`: a peer
/// without a certificate, not audited).
#[derive(Debug)]
pub struct Refusal {
    /// The answer.
    pub status: Status,
    /// The certificate as logs and the audit record name it.
    pub certificate: Option<String>,
}

/// Checks the certificate before anything of the stream is read: it must carry one valid
/// sensor mark.
pub fn sensor_mark(cert: Option<&PeerCert>) -> Result<SensorMark, Refusal> {
    let Some(cert) = cert else {
        return Err(Refusal {
            status: Status::unauthenticated(
                "sensors must present a client certificate signed by the server's client CA, \
                 marked with the URI SAN procguard://sensor/<node> (docs/deploy.md, \"Sensor \
                 identity\")",
            ),
            certificate: None,
        });
    };
    let refuse = |why: String| Refusal {
        status: Status::permission_denied(why),
        certificate: Some(cert.describe()),
    };
    match cert.sensor() {
        Ok(Some(mark)) => Ok(mark.clone()),
        Err(bad) => Err(refuse(format!(
            "the client certificate ({}) is refused on the sensor stream: {}",
            cert.describe(),
            bad.0
        ))),
        Ok(None) => Err(refuse(format!(
            "the client certificate ({}) is not a sensor certificate: only a certificate with \
             the URI SAN procguard://sensor/<node> (or procguard://sensor-fleet/<name>) opens \
             the sensor stream, and API and server certificates never do. A sensor certificate \
             named only by its CN or DNS name must be reissued with the URI: \
             `procguardctl pki init --node <node>`, or `uris: [procguard://sensor/<node>]` in \
             its cert-manager Certificate (docs/deploy.md, \"Sensor identity\")",
            cert.describe()
        ))),
    }
}

/// Checks that `mark` may report for `node` (the `Hello`'s node name).
pub fn check_node(mark: &SensorMark, node: &str, fleet_names: &[String]) -> Result<(), Status> {
    match mark {
        SensorMark::Node(n) if n == node => Ok(()),
        SensorMark::Node(n) => Err(Status::permission_denied(format!(
            "node '{node}' is not the node your certificate names ({n}, {}); a sensor reports \
             only for its own node",
            mark.uri()
        ))),
        SensorMark::Fleet(f) if fleet_names.iter().any(|x| x == f) => Ok(()),
        SensorMark::Fleet(f) => Err(Status::permission_denied(format!(
            "the fleet certificate '{f}' ({}) is not accepted by this server: list '{f}' in \
             --sensor-fleet-names (PROCGUARD_SENSOR_FLEET_NAMES), or give each sensor its own \
             certificate (procguard://sensor/<node>)",
            mark.uri()
        ))),
    }
}

/// Most certificates remembered by [`RefusalAudit`]; past it the memory is cleared, so a
/// flood of distinct certificates (each one the CA signed) is audited at most this many times
/// a minute.
const REMEMBERED: usize = 4096;
/// One audit record per certificate at most this often; the rest are counted.
const AUDIT_EVERY: Duration = Duration::from_secs(60);

/// Decides which refusals are audited, so that a sensor retrying with a wrong certificate
/// every few seconds cannot write to the audit log at will.
#[derive(Debug, Default)]
pub struct RefusalAudit {
    last: Mutex<HashMap<String, Instant>>,
}

impl RefusalAudit {
    /// Whether the refusal of `certificate` at `now` is to be audited.
    pub fn due(&self, certificate: &str, now: Instant) -> bool {
        let mut last = self.last.lock().expect("refusal audit lock");
        if last
            .get(certificate)
            .is_some_and(|t| now.saturating_duration_since(*t) < AUDIT_EVERY)
        {
            return false;
        }
        if last.len() >= REMEMBERED {
            last.clear();
        }
        last.insert(certificate.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(marks: Vec<SensorMark>) -> PeerCert {
        PeerCert {
            common_names: vec!["x".into()],
            marks,
            serial: "01".into(),
        }
    }

    #[test]
    fn only_a_marked_certificate_opens_the_stream_and_names_its_node() {
        let none = sensor_mark(None).unwrap_err();
        assert_eq!(none.status.code(), tonic::Code::Unauthenticated);
        assert!(none.certificate.is_none(), "not audited");
        let api = sensor_mark(Some(&cert(vec![]))).unwrap_err();
        assert_eq!(api.status.code(), tonic::Code::PermissionDenied);
        assert!(api.status.message().contains("pki init --node"), "{api:?}");
        let node = sensor_mark(Some(&cert(vec![SensorMark::Node("a".into())]))).unwrap();
        assert!(check_node(&node, "a", &[]).is_ok());
        let other = check_node(&node, "b", &[]).unwrap_err();
        assert!(other
            .message()
            .contains("is not the node your certificate names"));
        // A node certificate is never a fleet one, whatever the fleet names say.
        assert!(check_node(&node, "b", &["a".into()]).is_err());
        let fleet = SensorMark::Fleet("ds".into());
        assert!(check_node(&fleet, "any-node", &["ds".into()]).is_ok());
        let unlisted = check_node(&fleet, "any-node", &["other".into()]).unwrap_err();
        assert!(unlisted.message().contains("--sensor-fleet-names"));
    }

    #[test]
    fn refusals_are_audited_once_a_minute_per_certificate() {
        let a = RefusalAudit::default();
        let t = Instant::now();
        assert!(a.due("CN=x", t));
        assert!(!a.due("CN=x", t + Duration::from_secs(30)));
        assert!(a.due("CN=y", t + Duration::from_secs(30)));
        assert!(a.due("CN=x", t + Duration::from_secs(61)));
    }
}
