//! The connection to the server: TLS and token from the flags, the API clients, and errors
//! that say what to check (`--server`, `--tls-ca`, `--tls-server-name`).

use crate::Cli;
use anyhow::Context;
use procguard_proto::v1 as pb;
use tonic::transport::Channel;

pub(crate) struct Client {
    pub(crate) channel: Channel,
    pub(crate) token: Option<String>,
}

impl Client {
    pub(crate) async fn connect(cli: &Cli) -> anyhow::Result<Self> {
        let rest = cli.server.strip_prefix("https://").ok_or_else(|| {
            usage(format!(
                "--server must be an https:// URL; got '{}'",
                cli.server
            ))
        })?;
        let host = rest.split(['/', ':']).next().unwrap_or("localhost");
        let ca = cli.tls_ca.as_ref().ok_or_else(|| {
            usage("--tls-ca (PROCGUARD_TLS_CA) is required: the CA that signed the server certificate".into())
        })?;
        let identity = match (&cli.tls_cert, &cli.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let tls = procguard_runtime::tls::client_config(
            ca,
            identity,
            cli.tls_server_name.as_deref().unwrap_or(host),
        )
        .map_err(|e| usage(e.0))?;
        let channel = Channel::from_shared(cli.server.clone())?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                let detail = error_chain(&e);
                let hint = connect_hint(&detail)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                anyhow::anyhow!("cannot connect to {}: {detail}{hint}", cli.server)
            })?;
        let token = match (&cli.token, &cli.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read --token-file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(Self { channel, token })
    }

    pub(crate) fn req<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().map_err(|_| {
                    usage("the token holds characters not allowed in a header".into())
                })?,
            );
        }
        Ok(r)
    }

    pub(crate) fn baselines(&self) -> pb::baseline_service_client::BaselineServiceClient<Channel> {
        pb::baseline_service_client::BaselineServiceClient::new(self.channel.clone())
    }
}

/// An error and its sources, each said once (transport errors repeat their source's text).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// What to check for a connection that failed, from what failed.
pub(crate) fn connect_hint(detail: &str) -> Option<&'static str> {
    let d = detail.to_ascii_lowercase();
    if d.contains("unknownissuer") || d.contains("unknown issuer") || d.contains("badsignature") {
        Some("the server's certificate is not signed by the CA given: check --tls-ca (PROCGUARD_TLS_CA)")
    } else if d.contains("notvalidforname") || d.contains("not valid for name") {
        Some("the server's certificate does not name this host: check --server, or --tls-server-name (PROCGUARD_TLS_SERVER_NAME)")
    } else if d.contains("certificate required") || d.contains("certificaterequired") {
        Some("the server asks for a client certificate: give --tls-cert and --tls-key")
    } else if d.contains("connection refused") {
        Some("nothing listens there: is the server running, and is --server (PROCGUARD_SERVER) its address and port?")
    } else if d.contains("timed out") || d.contains("deadline") {
        Some("no answer within 5 s: check --server (PROCGUARD_SERVER) and that the address is reachable")
    } else if d.contains("invalid content type")
        || d.contains("wrong version number")
        || d.contains("corrupt message")
    {
        Some("the other end does not speak TLS: check the port in --server (PROCGUARD_SERVER)")
    } else {
        None
    }
}

#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub(crate) fn usage(m: String) -> anyhow::Error {
    anyhow::Error::new(Usage(m))
}

/// An answer read into the domain through `procguard_proto::convert`; one this build cannot
/// read (a newer server) is an error that names `what` and what to do, never printed with a
/// guess.
pub(crate) fn read<T>(
    r: Result<T, procguard_proto::convert::ConvertError>,
    what: impl std::fmt::Display,
) -> anyhow::Result<T> {
    r.map_err(|e| {
        anyhow::anyhow!(
            "the server sent {what} in a form this procguardctl cannot read ({e}); \
             upgrade procguardctl to the server's version"
        )
    })
}
