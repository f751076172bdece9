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

mod body;
mod share;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tokio::sync::Semaphore;
use tonic::{Status, body::Body, codegen::http};
use tower::{Layer, Service};
use tracing::{Instrument, field};

use self::{body::read_ahead, share::Shares};
use crate::{
    auth::{Caller, PrincipalId},
    metrics::{Method, Metrics, ShedReason},
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
        for (flag, share) in [
            (
                "--max-concurrent-per-principal",
                settings.max_concurrent_per_principal,
            ),
            (
                "--max-concurrent-per-organization",
                settings.max_concurrent_per_organization,
            ),
        ] {
            if share >= settings.max_concurrent_requests {
                tracing::warn!(
                    share,
                    max_concurrent_requests = settings.max_concurrent_requests,
                    "{flag} is not below --max-concurrent-requests: one tenant can take every slot"
                );
            }
        }
        let limits = Arc::new(Limits {
            permits: Semaphore::new(settings.max_concurrent_requests),
            shares: Shares::new(settings.max_concurrent_per_principal),
            organizations: Shares::new(settings.max_concurrent_per_organization),
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
    shares: Shares,
    /// Each organization's share of it: all its principals together.
    organizations: Shares,
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
    method: Method,
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
            .record_rpc(self.method, self.code, self.started.elapsed());
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
        let kind = classify(req.uri().path());
        let method = state.metrics.method(req.uri().path());
        Box::pin(async move {
            let mut record = Record {
                metrics: &state.metrics,
                method,
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
    // A unary message usually arrives with its headers: then no timer is set.
    let mut read = std::pin::pin!(read_ahead(body, settings.max_message_bytes));
    let arrived = match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        Poll::Ready(read) => Ok(read),
        Poll::Pending => tokio::time::timeout(settings.request_body_timeout, read).await,
    };
    let body = match arrived {
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

    // At `debug`: with the default `info` filter the span is disabled and
    // costs a level check; its fields are formatted only when it is enabled.
    let span = tracing::debug_span!(
        "rpc",
        method = state.metrics.method_name(record.method),
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
            if !span.is_disabled() {
                match &caller.principal {
                    PrincipalId::User(id) => span.record("principal", format!("user:{id}")),
                    PrincipalId::ServiceAccount(id) => {
                        span.record("principal", format!("service_account:{id}"))
                    }
                };
                if let Some(tenant) = &caller.tenant {
                    span.record("tenant", tenant.as_str());
                }
            }
            // The key's organization: however many principals a tenant
            // makes, together they take no more than its share.
            let Some(organization) = limits.organizations.try_enter(caller.key.ids.organization)
            else {
                state.metrics.record_shed(ShedReason::Organization);
                return Ok(Status::resource_exhausted(format!(
                    "this organization is at its share of {} concurrent requests; retry with backoff",
                    settings.max_concurrent_per_organization
                ))
                .into_http());
            };
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
            Some((organization, share))
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
        if !span.is_disabled() {
            if let Some(code) = code {
                span.record("code", code);
            }
            span.record("latency_us", started.elapsed().as_micros() as u64);
            tracing::debug!("rpc finished");
        }
        (response, code)
    }
    .instrument(span)
    .await;
    if let Some(code) = code {
        record.code = code;
    }
    response
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
}
