//! Reading a request's message before it is admitted: a call waiting for its
//! body holds nothing of the concurrency limit.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Bytes, Frame, SizeHint};
use tonic::{Status, body::Body, codegen::http::HeaderMap};

/// The gRPC frame header: a compression flag and a 4-byte big-endian length.
const FRAME_HEADER: usize = 5;

/// The message length a gRPC frame declares, once its header has arrived.
fn declared_len(received: &[u8]) -> Option<usize> {
    let len: [u8; 4] = received.get(1..FRAME_HEADER)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(len)).ok()
}

/// Reads a request body until it ends, or until it is known to be over the
/// message size limit `max_message`: its frame declares more, or more bytes
/// than a frame of that size have arrived. An oversized body is handed on
/// with its unread rest, so tonic answers it as it always has (OUT_OF_RANGE,
/// from the frame header), and no more than the limit is ever held here.
pub(super) async fn read_ahead(mut body: Body, max_message: usize) -> Result<ReadAhead, Status> {
    let limit = max_message.saturating_add(FRAME_HEADER);
    // The first DATA frame as received; a copy only when a second one comes.
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    let mut trailers = None;
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let data = match frame?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if joined.is_none() && first.is_empty() {
            first = data;
        } else {
            // The buffer grows with what arrived, not with what the header
            // declares: a client that declares 4 MiB and sends ten bytes
            // must not make the server hold 4 MiB while it waits.
            let buf = joined.get_or_insert_with(|| {
                let mut buf = Vec::with_capacity(first.len() + data.len());
                buf.extend_from_slice(&first);
                buf
            });
            buf.extend_from_slice(&data);
        }
        let received = joined.as_deref().unwrap_or(&first);
        if received.len() > limit || declared_len(received).is_some_and(|n| n > max_message) {
            return Ok(ReadAhead {
                data: Some(joined.map_or(first, Bytes::from)),
                rest: Some(body),
                trailers: None,
            });
        }
    }
    let data = joined.map_or(first, Bytes::from);
    Ok(ReadAhead {
        data: (!data.is_empty()).then_some(data),
        rest: None,
        trailers,
    })
}

/// A request body read ahead of admission, handed to the service in place
/// of the client's: the bytes received, then either the trailers (a complete
/// body) or the unread rest of the client's body (an oversized one).
pub(super) struct ReadAhead {
    data: Option<Bytes>,
    rest: Option<Body>,
    trailers: Option<HeaderMap>,
}

impl hyper::body::Body for ReadAhead {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(rest) = &mut this.rest {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.rest, &self.data) {
            (None, data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            (Some(_), _) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http;

    fn body(frames: Vec<Frame<Bytes>>) -> Body {
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(
            frames.into_iter().map(Ok::<_, Status>),
        )))
    }

    fn grpc_frame(declared: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&declared.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    async fn collect(read: ReadAhead) -> (Bytes, Option<HeaderMap>) {
        let collected = Body::new(read).collect().await.expect("a readable body");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_message_in_several_frames_is_read_whole_with_its_trailers() {
        let message = grpc_frame(6, b"abcdef");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-extra", http::HeaderValue::from_static("1"));
        let read = read_ahead(
            body(vec![
                Frame::data(Bytes::copy_from_slice(&message[..3])),
                Frame::data(Bytes::copy_from_slice(&message[3..])),
                Frame::trailers(trailers.clone()),
            ]),
            64,
        )
        .await
        .expect("read");
        assert!(read.rest.is_none(), "nothing left unread");
        assert_eq!(read.size_hint().exact(), Some(message.len() as u64));
        assert_eq!(collect(read).await, (Bytes::from(message), Some(trailers)));
    }

    #[tokio::test]
    async fn a_message_in_one_frame_is_kept_as_received() {
        let message = Bytes::from(grpc_frame(3, b"abc"));
        let read = read_ahead(body(vec![Frame::data(message.clone())]), 64)
            .await
            .expect("read");
        let data = read.data.as_ref().expect("data");
        assert_eq!(data.as_ptr(), message.as_ptr(), "not copied");
        assert_eq!(collect(read).await.0, message);
    }

    #[tokio::test]
    async fn an_oversized_message_is_handed_on_unread_with_its_rest() {
        // The header declares more than the limit: reading stops there.
        let message = grpc_frame(100, &[7; 100]);
        let frames = || {
            message
                .chunks(10)
                .map(|c| Frame::data(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>()
        };
        let read = read_ahead(body(frames()), 50).await.expect("read");
        assert_eq!(read.data.as_ref().map(Bytes::len), Some(10));
        assert!(read.rest.is_some());
        assert_eq!(collect(read).await.0, Bytes::from(message.clone()));

        // Within the limit by its header, but more bytes than a message may
        // have: reading stops past the limit.
        let mut two = grpc_frame(40, &[1; 40]);
        two.extend(grpc_frame(40, &[2; 40]));
        let read = read_ahead(
            body(
                two.chunks(10)
                    .map(|c| Frame::data(Bytes::copy_from_slice(c)))
                    .collect(),
            ),
            50,
        )
        .await
        .expect("read");
        assert_eq!(read.data.as_ref().map(Bytes::len), Some(60));
        assert_eq!(collect(read).await.0, Bytes::from(two));
    }
}
