//! The tower layer in front of every service. For each RPC it, in order:
//!
//! 1. records it in the metrics (method, code, latency), whatever happens next;
//! 2. admits it under the concurrency limit, or sheds it at once with
//!    `RESOURCE_EXHAUSTED` rather than queueing it;
//! 3. bounds it by the request timeout, answering `DEADLINE_EXCEEDED` when it
//!    runs out (a client's own `grpc-timeout` is enforced by tonic, outside);
//! 4. opens its tracing span and authenticates the caller from the metadata,
//!    handing the [`Caller`] to the handler in the request extensions.
//!
//! Health and reflection skip 2 to 4: probes must be answered even when the
//! server is saturated. The benchmark no-op skips only authentication, so it
//! pays everything else a real RPC pays.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tokio::sync::Semaphore;
use tonic::{Status, codegen::http};
use tower::{Layer, Service};
use tracing::{Instrument, field};

use crate::{
    auth::{Caller, PrincipalId},
    metrics::{Metrics, ShedReason},
    state::AppState,
};

/// Builds [`Front`] services sharing one concurrency limit.
#[derive(Clone, Debug)]
pub struct FrontLayer {
    state: AppState,
    permits: Arc<Semaphore>,
}

impl FrontLayer {
    /// A layer with `state`'s limits, metrics, caches and store.
    pub fn new(state: AppState) -> Self {
        let permits = Arc::new(Semaphore::new(state.settings.max_concurrent_requests));
        Self { state, permits }
    }
}

impl<S> Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Front {
            inner,
            state: self.state.clone(),
            permits: self.permits.clone(),
        }
    }
}

/// The service [`FrontLayer`] builds.
#[derive(Clone, Debug)]
pub struct Front<S> {
    inner: S,
    state: AppState,
    permits: Arc<Semaphore>,
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

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Front<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The ready service is the one polled; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        let permits = self.permits.clone();
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
                guarded(inner, req, &state, &permits, kind, &mut record).await
            }
        })
    }
}

/// Steps 2 to 4 for everything but probes; sets `record`'s code.
async fn guarded<S, B, R>(
    mut inner: S,
    mut req: http::Request<B>,
    state: &AppState,
    permits: &Arc<Semaphore>,
    kind: Path,
    record: &mut Record<'_>,
) -> Result<http::Response<R>, S::Error>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    let Ok(_permit) = permits.clone().try_acquire_owned() else {
        state.metrics.record_shed(ShedReason::Server);
        record.code = tonic::Code::ResourceExhausted as u16;
        return Ok(Status::resource_exhausted(format!(
            "server is at its limit of {} concurrent requests; retry with backoff",
            state.settings.max_concurrent_requests
        ))
        .into_http());
    };
    state.metrics.add_in_flight(1);
    record.counted_in_flight = true;

    let deadline = state.settings.request_timeout;

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
        if kind == Path::Authenticated {
            match Caller::from_headers(state, req.headers()).await {
                Ok(caller) => {
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
                    req.extensions_mut().insert(caller);
                }
                Err(err) => return Ok(Status::from(err).into_http()),
            }
        }
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
