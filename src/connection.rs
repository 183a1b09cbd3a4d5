//! The life of one HTTP/2 connection on the server: served until the client closes it, the
//! server drains, or it has carried no call for `idle_timeout`. In the last two cases the
//! server sends GOAWAY (calls in flight finish) and the connection closes: an idle client
//! that went away without a word does not hold a connection, and its memory, forever.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::server::graceful::GracefulConnection;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Calls in flight on one connection, and when the last one ended. Each request of the
/// connection carries it in its extensions; the server's observe layer counts the call in
/// and out, whatever way the call ends (a reset stream included).
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A call ended `at` (the caller's clock reading, so that no call reads the clock twice).
    pub fn call_ended(&self, at: std::time::Instant) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        *self.last_active.lock().expect("never poisoned") = Instant::from_std(at);
    }

    /// Returns once no call has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let since = *self.last_active.lock().expect("never poisoned");
            let idle_until = since + limit;
            if self.in_flight.load(Ordering::SeqCst) == 0 && Instant::now() >= idle_until {
                return;
            }
            // Busy or not idle long enough yet: look again when it could first be true.
            tokio::time::sleep_until(idle_until.max(Instant::now() + limit / 4)).await;
        }
    }
}

/// How long a new connection has to send the HTTP/2 connection preface (and, with TLS,
/// to finish its handshake) before it is closed: sockets that say nothing hold no memory.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's HTTP/2 connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, is 24 bytes.
const PREFACE_BYTES: usize = 24;

/// Serves `connection` to its end, shutting it down gracefully on `shutdown` or when idle,
/// and closing it at once if its preface has not arrived by `preface_due` (the socket's
/// accept plus [`PREFACE_TIMEOUT`]: a TLS handshake counts against the same time).
pub async fn serve<C>(
    connection: C,
    activity: Arc<Activity>,
    preface: Arc<PrefaceSeen>,
    preface_due: Instant,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) where
    C: GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    let preface_due = tokio::time::sleep_until(preface_due);
    let mut preface_due = std::pin::pin!(preface_due);
    let mut waiting_for_preface = true;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = preface_due.as_mut(), if waiting_for_preface => {
                if !preface.seen() {
                    return; // dropped: the socket closes
                }
                waiting_for_preface = false;
                continue;
            }
            () = shutdown.cancelled(), if !closing => {}
            () = activity.idle_for(idle_timeout), if !closing => {}
        }
        connection.as_mut().graceful_shutdown();
        closing = true;
    }
}

/// Whether a connection's first [`PREFACE_BYTES`] have arrived.
#[derive(Debug, Default)]
pub struct PrefaceSeen(AtomicBool);

impl PrefaceSeen {
    fn seen(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A socket that tells its [`PrefaceSeen`] once the preface's bytes have been read.
    pub struct PrefaceWatch<IO> {
        #[pin]
        inner: IO,
        read: usize,
        seen: Arc<PrefaceSeen>,
    }
}

impl<IO> PrefaceWatch<IO> {
    pub fn new(inner: IO, seen: Arc<PrefaceSeen>) -> Self {
        Self { inner, read: 0, seen }
    }
}

impl<IO: AsyncRead> AsyncRead for PrefaceWatch<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if *this.read < PREFACE_BYTES {
            *this.read += buf.filled().len() - before;
            if *this.read >= PREFACE_BYTES {
                this.seen.0.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<IO: AsyncWrite> AsyncWrite for PrefaceWatch<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// An accepted socket: plaintext, or TLS once its handshake is done. One type for both, so
/// that one HTTP/2 connection type serves either port.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, data),
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }
}
