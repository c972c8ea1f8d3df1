//! Accepting gRPC connections, with or without TLS, and what the server
//! knows of each peer ([`PeerInfo`], in every request's extensions).

use crate::tls::ServerTls;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once, per listener. When all are taken
/// the accept loop waits and new connections queue in the kernel's
/// backlog: a flood of clients that connect and never finish their
/// handshake costs at most this many tasks and sockets, each for at most
/// [`HANDSHAKE_TIMEOUT`].
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// TLS handshakes in progress at once from one client address. Beyond
/// it a new connection from that address is closed unread, so one host
/// cannot take all [`MAX_PENDING_HANDSHAKES`] (and stall the port for
/// everyone for a handshake timeout). The fleet's callers open a few
/// long-lived HTTP/2 connections each, far below it.
pub const MAX_PENDING_HANDSHAKES_PER_IP: u32 = 32;

/// Handshakes in progress by client address.
type PendingByIp = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>>;

/// One pending handshake of `ip`, given back when dropped.
struct PendingSlot {
    by_ip: PendingByIp,
    ip: std::net::IpAddr,
}

impl PendingSlot {
    /// Takes a slot for `ip`, or `None` when it holds the most it may.
    fn take(by_ip: &PendingByIp, ip: std::net::IpAddr) -> Option<PendingSlot> {
        let mut m = by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_PENDING_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            by_ip: by_ip.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut m = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What a service knows of the peer of a connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// `None`: the connection is plain TCP (pozd's loopback, or a fleet
    /// started with `insecure = true`). `Some(ids)`: TLS, and `ids` are
    /// the DNS and URI SANs of the client certificate (empty: it
    /// presented none, or one that names none: see `certificate`).
    pub identities: Option<Arc<[String]>>,
    /// Whether the client presented a certificate (chained to the CA
    /// bundle: rustls checked it), so a refusal can say which of the two
    /// is missing, the certificate or a name in it.
    pub certificate: bool,
}

impl std::fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = self
            .remote_addr
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        match &self.identities {
            None => write!(f, "{addr} (plain TCP)"),
            Some(ids) if ids.is_empty() && self.certificate => {
                write!(f, "{addr} (client certificate without DNS or URI SAN)")
            }
            Some(ids) if ids.is_empty() => write!(f, "{addr} (no client certificate)"),
            Some(ids) => write!(f, "{addr} ({})", ids.join(", ")),
        }
    }
}

/// One accepted connection: plain TCP or TLS over it.
pub enum PeerIo {
    Plain(TcpStream, PeerInfo),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl tonic::transport::server::Connected for PeerIo {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        match self {
            PeerIo::Plain(_, p) | PeerIo::Tls(_, p) => p.clone(),
        }
    }
}

impl AsyncRead for PeerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerIo::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            PeerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerIo::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            PeerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerIo::Plain(s, _) => Pin::new(s).poll_flush(cx),
            PeerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerIo::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            PeerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerIo::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            PeerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            PeerIo::Plain(s, _) => s.is_write_vectored(),
            PeerIo::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// TCP_NODELAY and keepalive on an accepted or dialled socket.
///
/// TCP_NODELAY: a gRPC answer is often written as two small segments
/// (headers, then data and trailers), and with Nagle's algorithm the
/// second waits for the peer's delayed ACK, about 40 ms on Linux (seen:
/// every store read of the Provider API took 42-48 ms until this was
/// set). Keepalive probes find dead peers.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
}

/// How long a connection whose handshake failed is kept to drain.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection whose TLS handshake failed so that the client
/// reads the alert rustls sent (`unknown_ca`, `certificate_required`):
/// our side's FIN after it, and what the client still sends read and
/// dropped for up to [`LINGER`]. Why: closing a socket with unread data
/// makes the kernel send a reset, and a reset can reach the client before
/// it reads the alert, which then sees only "broken pipe" and cannot tell
/// a rejected certificate from a lost connection.
async fn linger(mut io: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = io.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The connections tonic serves from `listener`: accepted here, each TLS
/// handshake run in its own task (a slow client never holds up the
/// accept loop) with [`HANDSHAKE_TIMEOUT`]. The listener closes when
/// tonic drops the stream (drain).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<PeerIo>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<PeerIo>>(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let by_ip = PendingByIp::default();
    tokio::spawn(async move {
        loop {
            // A permit before the next accept, so a full set of pending
            // handshakes leaves new connections in the backlog.
            let permit = if tls.is_some() {
                tokio::select! {
                    p = pending.clone().acquire_owned() => match p {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                    _ = tx.closed() => return,
                }
            } else {
                None
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (stream, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tune(&stream);
            let Some(tls) = &tls else {
                let info = PeerInfo {
                    remote_addr: Some(addr),
                    identities: None,
                    certificate: false,
                };
                if tx.send(Ok(PeerIo::Plain(stream, info))).await.is_err() {
                    return;
                }
                continue;
            };
            let Some(slot) = PendingSlot::take(&by_ip, addr.ip()) else {
                crate::metrics::tls_handshake_failed("per_ip");
                tracing::debug!(peer = %addr, "too many TLS handshakes from this address: closed");
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let handshake = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    acceptor.accept(stream).into_fallible(),
                )
                .await;
                match handshake {
                    Ok(Ok(s)) => {
                        let leaf = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                        let ids: Vec<String> = leaf.map(crate::tls::identities).unwrap_or_default();
                        let info = PeerInfo {
                            remote_addr: Some(addr),
                            identities: Some(ids.into()),
                            certificate: leaf.is_some(),
                        };
                        drop(permit);
                        let _ = tx.send(Ok(PeerIo::Tls(Box::new(s), info))).await;
                    }
                    Ok(Err((e, io))) => {
                        crate::metrics::tls_handshake_failed("error");
                        tracing::info!(peer = %addr, error = %e, "TLS handshake failed");
                        linger(io).await;
                        drop(permit);
                    }
                    Err(_) => {
                        crate::metrics::tls_handshake_failed("timeout");
                        tracing::info!(peer = %addr, "TLS handshake timed out")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
