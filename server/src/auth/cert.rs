//! What a client certificate says about its holder: its subject common names, and whether it
//! is a sensor certificate, marked by a procguard URI subject alternative name
//! (`procguard://sensor/<node>` or `procguard://sensor-fleet/<name>`, see
//! [`procguard_runtime::pki`]). The TLS layer has already checked the chain against the client
//! CA; this module only reads what the certificate names.
//!
//! The sensor mark is read from the URI SAN alone. The common name and DNS SANs of a
//! certificate decide nothing for sensors: API client certificates and the server's own
//! certificate carry names too, and none of them may open a sensor stream.

use procguard_runtime::pki::SensorMark;
use x509_parser::extensions::GeneralName;

/// The facts of one client certificate that the server decides on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// Subject common names.
    pub common_names: Vec<String>,
    /// Every procguard sensor URI among its SANs (valid or not: see [`PeerCert::sensor`]).
    pub marks: Vec<SensorMark>,
    /// Serial number (hex), to say in logs which certificate a peer used.
    pub serial: String,
}

/// A certificate whose sensor marks cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMark(pub String);

impl PeerCert {
    /// Parses a DER certificate; `None` if it does not parse (the TLS layer accepted it, so
    /// this does not happen for a verified chain).
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
        let mut marks = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::URI(u) = n {
                    marks.extend(SensorMark::of_uri(u));
                }
            }
        }
        Some(Self {
            common_names,
            marks,
            serial: cert.raw_serial_as_string().replace(':', ""),
        })
    }

    /// The client certificate of a request (the first of the chain the peer sent).
    pub fn of_request<T>(request: &tonic::Request<T>) -> Option<Self> {
        request
            .peer_certs()
            .and_then(|c| c.first().and_then(|d| Self::parse(d.as_ref())))
    }

    /// The sensor identity this certificate carries: `Ok(None)` for a certificate with no
    /// sensor URI (an API client's, the server's); an error for one with several, or with a
    /// name no node can have, which is refused rather than guessed at.
    pub fn sensor(&self) -> Result<Option<&SensorMark>, BadMark> {
        match self.marks.as_slice() {
            [] => Ok(None),
            [m] if m.is_valid() => Ok(Some(m)),
            [m] => Err(BadMark(format!(
                "its sensor URI '{}' does not name a node (1..=253 letters, digits, '-', '.', '_')",
                m.uri()
            ))),
            many => Err(BadMark(format!(
                "it carries {} sensor URIs ({}); a sensor certificate names exactly one node or fleet",
                many.len(),
                many.iter().map(SensorMark::uri).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// How logs and audit records name the holder: `CN=<name>` or the serial.
    pub fn describe(&self) -> String {
        match self.common_names.first() {
            Some(cn) => format!("CN={cn}"),
            None => format!("serial {}", self.serial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: &str, dns: &[&str], uris: &[&str]) -> PeerCert {
        let mut p =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        for u in uris {
            p.subject_alt_names
                .push(SanType::URI(u.to_string().try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        PeerCert::parse(p.self_signed(&key).unwrap().der()).unwrap()
    }

    #[test]
    fn only_the_uri_makes_a_sensor_certificate() {
        // A CN and DNS SAN that name a node are not a sensor identity.
        let api = cert("node-a", &["node-a"], &[]);
        assert_eq!(api.sensor(), Ok(None));
        // Other URIs are not either.
        let other = cert(
            "x",
            &[],
            &["spiffe://cluster/ns/x", "procguard://sensorx/node-a"],
        );
        assert_eq!(other.sensor(), Ok(None));
        let node = cert("anything", &[], &["procguard://sensor/node-a"]);
        assert_eq!(node.sensor(), Ok(Some(&SensorMark::Node("node-a".into()))));
        let fleet = cert("procguard-sensor", &[], &["procguard://sensor-fleet/ds"]);
        assert_eq!(fleet.sensor(), Ok(Some(&SensorMark::Fleet("ds".into()))));
    }

    #[test]
    fn several_or_malformed_marks_are_refused_not_guessed() {
        let two = cert(
            "n",
            &[],
            &["procguard://sensor/node-a", "procguard://sensor/node-b"],
        );
        assert!(two.sensor().unwrap_err().0.contains("2 sensor URIs"));
        let both = cert(
            "n",
            &[],
            &["procguard://sensor/node-a", "procguard://sensor-fleet/f"],
        );
        assert!(both.sensor().is_err());
        for bad in [
            "procguard://sensor/",
            "procguard://sensor/a/b",
            "procguard://sensor/a%2Fb",
        ] {
            assert!(cert("n", &[], &[bad]).sensor().is_err(), "{bad}");
        }
    }
}
