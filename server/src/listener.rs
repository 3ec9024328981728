//! The gRPC port's connections: accepted, made [`Closable`], and put through the TLS handshake
//! with the certificate in use *at that moment* ([`Reloading`]), so a renewed certificate or
//! CA serves every new connection without a restart, and connections already open keep theirs.
//!
//! tonic's own TLS takes one configuration for the server's lifetime, so the handshake is done
//! here and tonic serves the finished TLS streams; tonic reads the client certificate from them
//! as before (`Request::peer_certs`).
//!
//! Handshakes run in their own tasks, at most [`HANDSHAKES`] at a time and each for at most
//! [`HANDSHAKE_TIMEOUT`], so a peer that never finishes one holds neither the accept loop nor
//! anyone else's handshake. Finished connections wait in a channel of [`READY`] for tonic;
//! when it is full, handshake tasks wait (backpressure to accept).

use crate::shutdown::Closable;
use procguard_runtime::tls::Reloading;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// TLS handshakes in progress at once; past it, accepting waits for one to end.
const HANDSHAKES: usize = 1024;
/// Longest a handshake may take; then the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken and not yet taken by tonic.
const READY: usize = 64;

/// A connection as tonic serves it.
pub type Conn = TlsStream<Closable<TcpStream>>;

/// Connections the kernel completes and holds for `accept` (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default). A fleet reconnects at once after a server restart;
/// with the 128 of a default listener, connections past it were half-open (the kernel drops
/// the handshake's last ACK while the queue is full), and 801 of 5,000 simulated sensors
/// connecting at 500 a second waited minutes for their `Welcome` (issue 18).
pub const BACKLOG: u32 = 4096;

/// Binds the gRPC port with [`BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts on `listener` until `shutdown`, and yields each connection once its handshake with
/// the TLS configuration current at accept time has finished. `close` closes every connection
/// (see [`crate::shutdown`]).
pub fn incoming(
    listener: TcpListener,
    tls: Reloading<ServerConfig>,
    close: CancellationToken,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(READY);
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = handshakes.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, mostly: wait a little rather than spin.
                        tracing::warn!(message = "Accepting a connection failed.", error = %e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current());
            let conn = Closable::new(tcp, &close);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(message = "TLS handshake failed.", %peer, error = %e)
                    }
                    Err(_) => tracing::debug!(message = "TLS handshake timed out.", %peer),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
