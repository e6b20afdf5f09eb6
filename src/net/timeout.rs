//! A stream wrapper that fails a read or write that makes no progress for too long.
//!
//! async-imap has no command timeouts, so every IMAP connection runs over this layer. The
//! read timeout can be switched off through a [`TimeoutHandle`] while the connection sits in
//! IDLE (where silence is normal) and back on afterwards, even though the stream itself is
//! buried under TLS and the IMAP client by then.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Shared control over a [`TimeoutStream`]'s read timeout, and its byte counters.
#[derive(Debug, Clone)]
pub struct TimeoutHandle {
    read_ms: Arc<AtomicU64>,
    default_ms: u64,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    read: AtomicU64,
    written: AtomicU64,
}

impl TimeoutHandle {
    /// No read timeout until [`TimeoutHandle::restore`] (for IDLE).
    pub fn suspend_reads(&self) {
        self.read_ms.store(0, Ordering::Relaxed);
    }
    /// Back to the configured read timeout.
    pub fn restore(&self) {
        self.read_ms.store(self.default_ms, Ordering::Relaxed);
    }
    /// Bytes received and sent so far on this connection.
    pub fn bytes(&self) -> (u64, u64) {
        (self.counters.read.load(Ordering::Relaxed), self.counters.written.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
pub struct TimeoutStream<S> {
    inner: S,
    read_ms: Arc<AtomicU64>,
    counters: Arc<Counters>,
    write_timeout: Duration,
    read_deadline: Option<Pin<Box<Sleep>>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> TimeoutStream<S> {
    pub fn new(inner: S, read_timeout: Duration, write_timeout: Duration) -> (Self, TimeoutHandle) {
        let default_ms = read_timeout.as_millis() as u64;
        let read_ms = Arc::new(AtomicU64::new(default_ms));
        let counters = Arc::new(Counters::default());
        let handle = TimeoutHandle { read_ms: read_ms.clone(), default_ms, counters: counters.clone() };
        let stream =
            TimeoutStream { inner, read_ms, counters, write_timeout, read_deadline: None, write_deadline: None };
        (stream, handle)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Polls `deadline` (arming it with `after` first); `Ready` means the time is up.
fn expired(deadline: &mut Option<Pin<Box<Sleep>>>, after: Duration, cx: &mut Context<'_>) -> bool {
    let sleep = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + after)));
    sleep.as_mut().poll(cx).is_ready()
}

fn timed_out(what: &str, after: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("no {what} progress for {} s", after.as_secs()))
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for TimeoutStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_deadline = None;
                this.counters.read.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
                Poll::Ready(result)
            }
            Poll::Pending => {
                let ms = this.read_ms.load(Ordering::Relaxed);
                if ms == 0 {
                    this.read_deadline = None;
                    return Poll::Pending;
                }
                let after = Duration::from_millis(ms);
                if expired(&mut this.read_deadline, after, cx) {
                    this.read_deadline = None;
                    return Poll::Ready(Err(timed_out("read", after)));
                }
                Poll::Pending
            }
        }
    }
}

impl<S> TimeoutStream<S> {
    /// Applies the write deadline to a write-side poll of the inner stream.
    fn write_deadline<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.write_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending if expired(&mut self.write_deadline, self.write_timeout, cx) => {
                self.write_deadline = None;
                Poll::Ready(Err(timed_out("write", self.write_timeout)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimeoutStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &polled {
            this.counters.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        this.write_deadline(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_deadline(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out_unless_suspended() {
        let (client, mut server) = tokio::io::duplex(64);
        let (mut stream, handle) = TimeoutStream::new(client, Duration::from_secs(5), Duration::from_secs(5));
        let mut buf = [0u8; 4];
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        handle.suspend_reads();
        let read = tokio::spawn(async move {
            let n = stream.read(&mut buf).await.unwrap();
            (n, buf)
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        server.write_all(b"ok").await.unwrap();
        let (n, buf) = read.await.unwrap();
        assert_eq!(&buf[..n], b"ok");
    }
}
