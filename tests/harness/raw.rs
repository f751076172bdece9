//! A tonic codec for raw bytes: any body to any method, for the tests that
//! build requests from the served descriptors; and a bounded read of a
//! server stream of such bodies.

use std::time::Duration;

use prost::bytes::{Buf, BufMut};
use tokio::time::Instant;
use tonic::{
    Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// Sends and receives message bodies as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// The encoder and decoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// How long a server stream is read before the reader lets it go: an open
/// stream may stay silent for ever (a watch of changes from now on).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The longest the whole read may take.
    pub total: Duration,
    /// Once a message came, the longest to wait for the next one.
    pub idle: Duration,
    /// The most messages read.
    pub max_messages: usize,
}

/// What a server stream gave while it was read.
#[derive(Debug, Default)]
pub struct Read {
    /// The messages, in order.
    pub messages: Vec<Vec<u8>>,
    /// How the stream ended, if it ended while it was read: OK, the server's
    /// error, or an error the client made up (a broken connection).
    pub end: Option<Status>,
}

/// Reads `stream` within `window`; the caller then drops it, which cancels
/// the call on the server.
pub async fn read(stream: &mut Streaming<Vec<u8>>, window: Window) -> Read {
    let deadline = Instant::now() + window.total;
    let mut out = Read::default();
    while out.messages.len() < window.max_messages {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if out.messages.is_empty() {
            left
        } else {
            left.min(window.idle)
        };
        // A message not yet whole when the wait ends is not waited for again.
        match tokio::time::timeout(wait, stream.message()).await {
            Err(_) => break,
            Ok(Ok(Some(message))) => out.messages.push(message),
            Ok(Ok(None)) => {
                out.end = Some(Status::ok(""));
                break;
            }
            Ok(Err(status)) => {
                out.end = Some(status);
                break;
            }
        }
    }
    out
}

/// How a server-streaming call went.
#[derive(Debug)]
pub enum Streamed {
    /// Refused before any message: the server's status, or the client's
    /// (a broken connection: it has a source).
    Refused(Status),
    /// Opened, then read within the window.
    Read(Read),
    /// No answer: the channel was not ready, the stream did not open within
    /// the time given, or it broke while it was read.
    Lost(String),
}

/// Opens a server stream of `path` with `request` (it must open, or be
/// refused, within `open_within`), reads it within `window`, then drops it,
/// which cancels it on the server.
pub async fn stream(
    channel: &Channel,
    request: Request<Vec<u8>>,
    path: PathAndQuery,
    open_within: Duration,
    window: Window,
) -> Streamed {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let open = async {
        grpc.ready()
            .await
            .map_err(|e| Streamed::Lost(format!("channel not ready: {e}")))?;
        grpc.server_streaming(request, path, RawCodec)
            .await
            .map_err(Streamed::Refused)
    };
    let mut stream = match tokio::time::timeout(open_within, open).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(outcome)) => return outcome,
        Err(_) => return Streamed::Lost(format!("the stream did not open within {open_within:?}")),
    };
    let read = read(&mut stream, window).await;
    match &read.end {
        Some(status) if std::error::Error::source(status).is_some() => Streamed::Lost(format!(
            "the stream broke after {} messages: {status}",
            read.messages.len()
        )),
        _ => Streamed::Read(read),
    }
}
