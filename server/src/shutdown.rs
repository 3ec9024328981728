//! Bounded shutdown: connections that outlive the grace period are closed.
//!
//! On the shutdown token the gRPC server stops accepting, sends every connection an HTTP/2
//! GOAWAY, and waits for its streams to end: sensor streams and subscriptions end themselves
//! on the token. A peer that stopped reading never lets its last frames out (HTTP/2 flow
//! control holds them), so its connection would keep a graceful shutdown waiting forever.
//! Every accepted connection is therefore wrapped in [`Closable`]: once `--shutdown-grace`
//! has passed, [`crate::run`] cancels the close token, and every read and write of a
//! connection still open fails, which ends it. Nothing acknowledged is at risk: an ack is sent
//! only once its batch is on disk, and `run` flushes the store once more before it returns.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

/// A connection whose reads and writes fail once its close token is cancelled. The token is
/// polled with every read, so a connection idle in a read (as a connection whose peer stopped
/// reading is: it waits for a window update) wakes up and ends.
pub struct Closable<T> {
    inner: T,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<T> Closable<T> {
    /// Wraps `inner`, to be closed when `close` is cancelled.
    pub fn new(inner: T, close: &CancellationToken) -> Self {
        Self {
            inner,
            closed: Box::pin(close.clone().cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed: the shutdown grace period is over",
            ));
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Closable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Closable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Closable<T> {
    // The inner connection's, so that tonic still finds the peer address and, under TLS, the
    // client certificates.
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_waiting_for_data_fails_once_the_token_is_cancelled() {
        let (a, mut b) = tokio::io::duplex(64);
        let close = CancellationToken::new();
        let mut conn = Closable::new(a, &close);
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi", "an open connection passes data through");
        // The peer sends nothing more: the read waits until the token ends it.
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            conn.read(&mut buf).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!read.is_finished());
        close.cancel();
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("the read ended")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
