//! The connections a receiver run by [`super::serve_with`] takes: how many at
//! once, and for how long each.
//!
//! axum's `serve` takes every connection the kernel hands it and keeps each
//! as long as the sender likes (it gives hyper no timer, so not even the
//! headers have a time limit): a sender that opens connections and sends a
//! byte now and then would hold the receiver's memory and file descriptors
//! for ever. Hand-written rather than a tower layer: a layer sees requests,
//! not connections, and a connection that never finishes its headers is
//! never a request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// What a receiver run by [`super::serve_with`] allows its senders.
///
/// ```
/// use std::time::Duration;
/// let limits = taskpoll::webhook::ReceiverLimits::default()
///     .max_connections(64)
///     .connection_time(Duration::from_secs(10));
/// # let _ = limits;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverLimits {
    max_connections: usize,
    connection_time: Duration,
}

impl Default for ReceiverLimits {
    /// 256 connections at once, each closed 30 s after it was accepted.
    fn default() -> Self {
        Self { max_connections: 256, connection_time: Duration::from_secs(30) }
    }
}

impl ReceiverLimits {
    /// At most `n` connections open at once (at least 1; above
    /// tokio's `Semaphore::MAX_PERMITS`, that many). More wait in the kernel's accept
    /// queue until one closes.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Each connection is closed this long after it was accepted, whatever it
    /// is doing (at least 1 ms). A delivery cut short is not handed over; the
    /// sender's retry comes on a new connection.
    pub fn connection_time(mut self, limit: Duration) -> Self {
        self.connection_time = limit.max(Duration::from_millis(1));
        self
    }
}

/// A TCP listener that hands out at most `max_connections` connections at
/// once, each with its time limit.
pub(super) struct LimitedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    time_limit: Duration,
}

impl LimitedListener {
    pub(super) fn new(listener: TcpListener, limits: ReceiverLimits) -> Self {
        Self { listener, slots: Arc::new(Semaphore::new(limits.max_connections)), time_limit: limits.connection_time }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // A slot first: at the cap, connections wait in the kernel's queue, not in memory here.
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            // The semaphore is never closed; were it, no connection could be taken.
            return std::future::pending().await;
        };
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        (LimitedConnection { stream, closes_at: Box::pin(tokio::time::sleep(self.time_limit)), _slot: slot }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accepted connection: its reads and writes fail once its time is up
/// (hyper then closes it), and its slot is freed when it is dropped.
pub(super) struct LimitedConnection {
    stream: TcpStream,
    /// Polled with each read and write, so the time limit also wakes a
    /// connection that waits on a silent sender.
    closes_at: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl LimitedConnection {
    fn time_up(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.closes_at
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::TimedOut, "the connection's time limit is up"))
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.time_up(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = self.time_up(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.time_up(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.time_up(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing is never refused: it is what the time limit asks for.
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
