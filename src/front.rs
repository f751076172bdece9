//! The tower layer in front of every service. For each RPC it, in order:
//!
//! 1. records it in the metrics (method, code, latency), whatever happens next;
//! 2. reads the whole request message within `--request-body-timeout`, or
//!    answers `DEADLINE_EXCEEDED`: a client that sends headers and then
//!    trickles its message, or never sends it, holds nothing below;
//! 3. admits it under the concurrency limit, or sheds it at once with
//!    `RESOURCE_EXHAUSTED` rather than queueing it;
//! 4. bounds it by the request timeout, answering `DEADLINE_EXCEEDED` when it
//!    runs out (a client's own `grpc-timeout` is enforced by tonic, outside);
//! 5. opens its tracing span and authenticates the caller from the metadata,
//!    handing the [`Caller`] to the handler in the request extensions;
//! 6. admits it under the calling principal's share of the concurrency limit,
//!    or sheds it at once with `RESOURCE_EXHAUSTED`.
//!
//! Health and reflection skip 2 to 6: probes must be answered even when the
//! server is saturated. The benchmark no-op skips only 5 and 6, so it pays
//! everything else a real RPC pays.
//!
//! ## Fair share
//!
//! Three limits keep one tenant from taking the server from the others. The
//! per-connection stream cap (`--max-streams-per-connection`, applied by h2 in
//! [`crate::server`]) bounds the calls one connection holds open. Step 2 keeps
//! calls that wait for their message out of the concurrency limit, so open
//! streams cost a tenant its connection's streams, not everyone's slots. Step
//! 6 bounds the slots one principal's admitted calls take.
//!
//! What this costs per call: the message is held in memory from step 2 on,
//! as tonic's decoder held it before; a message that arrives in one HTTP/2
//! DATA frame (up to 16 KiB by default) is kept as received, without a copy,
//! and a longer one is copied once into one buffer. Then one allocation for
//! the body handed to the service, and two atomic operations on the
//! principal's counter. Nothing locks.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Bytes, Frame, SizeHint};
use tokio::sync::Semaphore;
use tonic::{
    Status,
    body::Body,
    codegen::http::{self, HeaderMap},
};
use tower::{Layer, Service};
use tracing::{Instrument, field};

use crate::{
    auth::{Caller, PrincipalId},
    metrics::{Metrics, ShedReason},
    state::AppState,
};

/// Builds [`Front`] services sharing one concurrency limit and one table of
/// principal shares.
#[derive(Clone, Debug)]
pub struct FrontLayer {
    state: AppState,
    limits: Arc<Limits>,
}

impl FrontLayer {
    /// A layer with `state`'s limits, metrics, caches and store.
    pub fn new(state: AppState) -> Self {
        let settings = &state.settings;
        if settings.max_concurrent_per_principal >= settings.max_concurrent_requests {
            tracing::warn!(
                max_concurrent_per_principal = settings.max_concurrent_per_principal,
                max_concurrent_requests = settings.max_concurrent_requests,
                "--max-concurrent-per-principal is not below --max-concurrent-requests: \
                 one principal can take every slot"
            );
        }
        let limits = Arc::new(Limits {
            permits: Semaphore::new(settings.max_concurrent_requests),
            shares: PrincipalShares::new(settings.max_concurrent_per_principal),
        });
        Self { state, limits }
    }
}

impl<S> Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Front {
            inner,
            state: self.state.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// The service [`FrontLayer`] builds.
#[derive(Clone, Debug)]
pub struct Front<S> {
    inner: S,
    state: AppState,
    limits: Arc<Limits>,
}

/// What the services of one server share: one allocation, cloned once per call.
#[derive(Debug)]
struct Limits {
    /// The concurrency limit.
    permits: Semaphore,
    /// Each principal's share of it.
    shares: PrincipalShares,
}

/// log2 of the number of principal share counters.
const SHARE_SLOTS_LOG2: u32 = 12;
/// The number of principal share counters: 4096, 16 KiB.
const SHARE_SLOTS: usize = 1 << SHARE_SLOTS_LOG2;

/// In-flight calls per principal, in a fixed table of counters indexed by a
/// hash of the principal's id: counting takes no lock and allocates nothing,
/// and the table never grows however many principals call. Principals whose
/// ids hash to the same counter share one budget; with 4096 counters that is
/// rare, and when it happens the two are still bounded together, never shed
/// below the share while alone.
struct PrincipalShares {
    share: u32,
    slots: Box<[AtomicU32; SHARE_SLOTS]>,
}

impl std::fmt::Debug for PrincipalShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalShares")
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

impl PrincipalShares {
    /// A table in which each principal may have `share` calls in flight.
    fn new(share: usize) -> Self {
        Self {
            share: u32::try_from(share).unwrap_or(u32::MAX),
            slots: Box::new(std::array::from_fn(|_| AtomicU32::new(0))),
        }
    }

    /// The counter of `principal`. Ids are UUIDs (v7: a timestamp in the high
    /// half, random bits in the low half); folding the halves and multiplying
    /// by 2^64/φ (Fibonacci hashing) moves every bit into the top ones, which
    /// pick the counter.
    fn slot_of(principal: u128) -> usize {
        let folded = (principal as u64) ^ ((principal >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARE_SLOTS_LOG2)) as usize
    }

    /// Counts one more call of `principal`, or `None` when it is at its share.
    /// The call is counted until the guard is dropped, on whatever path.
    fn try_enter(&self, principal: u128) -> Option<ShareGuard<'_>> {
        let slot = &self.slots[Self::slot_of(principal)];
        // Compare and swap rather than add and undo: an undone add could
        // shed another call of the same principal that had room.
        slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < self.share).then_some(n + 1)
        })
        .ok()?;
        Some(ShareGuard(slot))
    }
}

/// One call counted against a principal's share, until dropped.
struct ShareGuard<'a>(&'a AtomicU32);

impl Drop for ShareGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How much of the front an RPC goes through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Health and reflection: metrics only.
    Probe,
    /// The benchmark no-op: everything but authentication.
    Anonymous,
    /// Everything else.
    Authenticated,
}

fn classify(path: &str) -> Path {
    const PROBES: [&str; 3] = [
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.reflection.v1alpha.ServerReflection/",
    ];
    if PROBES.iter().any(|p| path.starts_with(p)) {
        Path::Probe
    } else if path.starts_with("/portcullis.v1.NoopService/") {
        Path::Anonymous
    } else {
        Path::Authenticated
    }
}

/// Records the RPC when dropped: with the response's code, or as `CANCELLED`
/// when the client went away before it finished.
struct Record<'a> {
    metrics: &'a Metrics,
    path: &'a str,
    started: Instant,
    code: u16,
    counted_in_flight: bool,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if self.counted_in_flight {
            self.metrics.add_in_flight(-1);
        }
        self.metrics
            .record_rpc(self.path, self.code, self.started.elapsed());
    }
}

/// The gRPC status code of a response: errors travel as trailers-only
/// responses, so it is a header; a normal response is OK.
fn response_code<B>(response: &http::Response<B>) -> u16 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Answers `status` at once, as `record`'s code.
fn refuse<R: Default>(record: &mut Record<'_>, status: Status) -> http::Response<R> {
    record.code = status.code() as u16;
    status.into_http()
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, R> Service<http::Request<Body>> for Front<S>
where
    S: Service<http::Request<Body>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The ready service is the one polled; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let kind = classify(&path);
            let mut record = Record {
                metrics: &state.metrics,
                path: &path,
                started: Instant::now(),
                code: 1, // CANCELLED unless a response says otherwise
                counted_in_flight: false,
            };
            if kind == Path::Probe {
                let mut inner = inner;
                let response = inner.call(req).await;
                if let Ok(response) = &response {
                    record.code = response_code(response);
                }
                response
            } else {
                guarded(inner, req, &state, &limits, kind, &mut record).await
            }
        })
    }
}

/// Steps 2 to 6 for everything but probes; sets `record`'s code.
async fn guarded<S, R>(
    mut inner: S,
    req: http::Request<Body>,
    state: &AppState,
    limits: &Limits,
    kind: Path,
    record: &mut Record<'_>,
) -> Result<http::Response<R>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<R>>,
    R: Default,
{
    let settings = &state.settings;
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(
        settings.request_body_timeout,
        read_ahead(body, settings.max_message_bytes),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(status)) => return Ok(refuse(record, status)),
        Err(_) => {
            state.metrics.record_body_timeout();
            return Ok(refuse(
                record,
                Status::deadline_exceeded(format!(
                    "the request message did not arrive within --request-body-timeout ({} ms)",
                    settings.request_body_timeout.as_millis()
                )),
            ));
        }
    };
    let mut req = http::Request::from_parts(parts, Body::new(body));

    let Ok(_permit) = limits.permits.try_acquire() else {
        state.metrics.record_shed(ShedReason::Server);
        return Ok(refuse(
            record,
            Status::resource_exhausted(format!(
                "server is at its limit of {} concurrent requests; retry with backoff",
                settings.max_concurrent_requests
            )),
        ));
    };
    state.metrics.add_in_flight(1);
    record.counted_in_flight = true;

    let deadline = settings.request_timeout;

    let span = tracing::info_span!(
        "rpc",
        method = %record.path,
        principal = field::Empty,
        tenant = field::Empty,
        decision = field::Empty,
        code = field::Empty,
        latency_us = field::Empty,
    );
    let work = async {
        // Held until the handler finishes or is dropped (timeout, client gone).
        let _share = if kind == Path::Authenticated {
            let caller = match Caller::from_headers(state, req.headers()).await {
                Ok(caller) => caller,
                Err(err) => return Ok(Status::from(err).into_http()),
            };
            let span = tracing::Span::current();
            match &caller.principal {
                PrincipalId::User(id) => span.record("principal", format!("user:{id}")),
                PrincipalId::ServiceAccount(id) => {
                    span.record("principal", format!("service_account:{id}"))
                }
            };
            if let Some(tenant) = &caller.tenant {
                span.record("tenant", tenant.as_str());
            }
            // The key's own principal, not a user it acts for: the share
            // bounds what one credential can take.
            let Some(share) = limits.shares.try_enter(caller.key.ids.principal) else {
                state.metrics.record_shed(ShedReason::Principal);
                return Ok(Status::resource_exhausted(format!(
                    "this principal is at its share of {} concurrent requests; retry with backoff",
                    settings.max_concurrent_per_principal
                ))
                .into_http());
            };
            req.extensions_mut().insert(caller);
            Some(share)
        } else {
            None
        };
        inner.call(req).await
    };
    let started = record.started;
    let (response, code) = async move {
        let response = match tokio::time::timeout(deadline, work).await {
            Ok(response) => response,
            Err(_) => Ok(Status::deadline_exceeded(format!(
                "the call did not finish within its deadline of {} ms",
                deadline.as_millis()
            ))
            .into_http()),
        };
        let span = tracing::Span::current();
        let code = response.as_ref().ok().map(response_code);
        if let Some(code) = code {
            span.record("code", code);
        }
        span.record("latency_us", started.elapsed().as_micros() as u64);
        tracing::debug!("rpc finished");
        (response, code)
    }
    .instrument(span)
    .await;
    if let Some(code) = code {
        record.code = code;
    }
    response
}

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
async fn read_ahead(mut body: Body, max_message: usize) -> Result<ReadAhead, Status> {
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
struct ReadAhead {
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

    #[test]
    fn probes_skip_the_limits_and_the_noop_skips_only_auth() {
        assert!(classify("/grpc.health.v1.Health/Check") == Path::Probe);
        assert!(
            classify("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") == Path::Probe
        );
        assert!(classify("/portcullis.v1.NoopService/Noop") == Path::Anonymous);
        assert!(classify("/portcullis.v1.CheckService/Check") == Path::Authenticated);
        assert!(classify("/grpc.health.v1.Nope/x") == Path::Authenticated);
    }

    #[test]
    fn a_principal_is_held_to_its_share_until_a_call_ends() {
        let shares = PrincipalShares::new(2);
        let (a, b) = (
            uuid::Uuid::now_v7().as_u128(),
            uuid::Uuid::now_v7().as_u128(),
        );
        let first = shares.try_enter(a).expect("within the share");
        let _second = shares.try_enter(a).expect("within the share");
        assert!(shares.try_enter(a).is_none(), "beyond the share");
        if PrincipalShares::slot_of(a) != PrincipalShares::slot_of(b) {
            assert!(
                shares.try_enter(b).is_some(),
                "another principal has its own"
            );
        }
        drop(first);
        assert!(
            shares.try_enter(a).is_some(),
            "a finished call frees its place"
        );
    }

    #[test]
    fn principal_ids_spread_over_the_counters() {
        // Ids that differ only in their timestamp half, only in their random
        // half, and random ones: few land on a counter another already took.
        let distinct = |ids: &mut dyn Iterator<Item = u128>| {
            ids.map(PrincipalShares::slot_of)
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert!(distinct(&mut (0..1000u128).map(|i| i << 80)) > 900);
        assert!(distinct(&mut (0..1000u128)) > 900);
        assert!(distinct(&mut (0..1000).map(|_| uuid::Uuid::new_v4().as_u128())) > 800);
    }

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
