//! The tower layer in front of every service: it opens the RPC's tracing span,
//! authenticates the caller from the metadata and hands the [`Caller`] to the
//! handler in the request extensions. Health checks, reflection and the
//! benchmark no-op pass without credentials; everything else without a valid
//! key is refused here.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::{Instrument, field};

use super::{Caller, PrincipalId};
use crate::state::AppState;

/// Authenticates every RPC except health and reflection.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    state: AppState,
}

impl AuthLayer {
    /// A layer resolving keys with `state`'s cache and store.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`AuthLayer`] builds.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    state: AppState,
}

/// Paths served without credentials: health, reflection, and the no-op
/// benchmark ceiling (served only with `--bench-noop`; it does nothing).
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
        || path.starts_with("/portcullis.v1.NoopService/")
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Auth<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The ready service is the one polled; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        let path = req.uri().path().to_owned();
        if is_public(&path) {
            return Box::pin(inner.call(req));
        }
        let span = tracing::info_span!(
            "rpc",
            method = %path,
            principal = field::Empty,
            tenant = field::Empty,
            decision = field::Empty,
            code = field::Empty,
            latency_us = field::Empty,
        );
        Box::pin(
            async move {
                let started = Instant::now();
                let response = match Caller::from_headers(&state, req.headers()).await {
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
                        inner.call(req).await
                    }
                    Err(err) => Ok(tonic::Status::from(err).into_http()),
                };
                let span = tracing::Span::current();
                if let Ok(resp) = &response {
                    // Errors travel as trailers-only responses: grpc-status is a header.
                    let code = resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0");
                    span.record("code", code);
                }
                span.record("latency_us", started.elapsed().as_micros() as u64);
                tracing::debug!("rpc finished");
                response
            }
            .instrument(span),
        )
    }
}
