//! A connection's I/O: the TLS stream, with vectored writes and a note of when writes wait.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::connections::ConnState;

/// One TLS record's worth: small buffers are gathered into one write (a response head and a
/// small body go out in one record).
pub(super) const GATHER: usize = 16 * 1024;

thread_local! {
    /// Where [`ConnIo::poll_write_vectored`] gathers small buffers: one per thread, allocated
    /// once, not cleared for each write.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(GATHER));
}

/// The TLS stream of a connection, noting when writes wait for the client. It accepts vectored
/// writes, so hyper queues response chunks (shared `Bytes`) instead of copying them into a
/// buffer of its own: a client that stops reading a large list pins no copy of it.
pub(super) struct ConnIo {
    pub(super) inner: SslStream<TcpStream>,
    pub(super) conn: Arc<ConnState>,
}

impl ConnIo {
    pub(super) fn note<T>(&self, r: &Poll<std::io::Result<T>>) {
        let blocked = &self.conn.write_blocked_since_ms;
        match r {
            Poll::Pending => {
                if blocked.load(Ordering::Relaxed) == 0 {
                    blocked.store(self.conn.now_ms().max(1), Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => blocked.store(0, Ordering::Relaxed),
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(&r);
        r
    }

    /// OpenSSL writes one buffer at a time: a large first buffer is written as it is; small ones
    /// are gathered up to one record. A write that must wait is retried by hyper with the same
    /// buffers (nothing was consumed), so the gathered bytes start the same and are at least as
    /// many, as OpenSSL requires of a retried write.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = nonempty.next() else { return Poll::Ready(Ok(0)) };
        if first.len() >= GATHER || bufs.len() == 1 {
            return self.poll_write(cx, first);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            for b in std::iter::once(first).chain(nonempty) {
                let take = b.len().min(GATHER - scratch.len());
                scratch.extend_from_slice(&b[..take]);
                if scratch.len() == GATHER {
                    break;
                }
            }
            self.poll_write(cx, scratch)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
