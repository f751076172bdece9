//! Accepting connections, before any request is read: at most
//! `--max-connections` are open at once (a connection beyond it is closed
//! at once), and a connection that sends nothing within
//! `--handshake-timeout` — not even the HTTP/2 preface or a TLS ClientHello —
//! is closed. Silent sockets would otherwise hold file descriptors until the
//! process could accept nothing more, health probes included.
//!
//! A connection is handed to the server once its first bytes have arrived;
//! from then on the HTTP/2 limits (`--max-streams-per-connection`) and the
//! front layer take over.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::Metrics;

/// An accepted connection, counted as open until dropped.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    _open: Open,
}

/// One open connection in the metrics, given back when dropped.
#[derive(Debug)]
struct Open(Arc<Metrics>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How connections are admitted.
#[derive(Clone, Copy, Debug)]
pub struct Admission {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a new connection may stay silent.
    pub handshake_timeout: Duration,
}

/// The connections `listener` accepts, admitted by `admission`, as a stream
/// for the server. Accepting stops when the server drops the stream.
pub fn incoming(
    listener: TcpListener,
    admission: Admission,
    metrics: Arc<Metrics>,
) -> ReceiverStream<io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(accept(listener, admission, metrics, tx));
    ReceiverStream::new(rx)
}

async fn accept(
    listener: TcpListener,
    admission: Admission,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<io::Result<Connection>>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !metrics.connection_opened(admission.max_connections) {
            drop(stream);
            continue;
        }
        let open = Open(metrics.clone());
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(admission.handshake_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {
                    let _ = tx
                        .send(Ok(Connection {
                            stream,
                            _open: open,
                        }))
                        .await;
                }
                // Closed, or failed, before saying anything.
                Ok(_) => {}
                Err(_) => metrics.record_handshake_timeout(),
            }
        });
    }
}
