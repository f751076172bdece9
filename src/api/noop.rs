//! `NoopService`: answers at once, touching nothing. Benchmarks measure Check's
//! throughput as a fraction of this ceiling. Served only with `--bench-noop`.

use tonic::{Request, Response, Status};

use crate::proto::v1::{NoopRequest, NoopResponse, noop_service_server::NoopService};

/// The no-op handler.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopApi;

#[tonic::async_trait]
impl NoopService for NoopApi {
    async fn noop(&self, _request: Request<NoopRequest>) -> Result<Response<NoopResponse>, Status> {
        Ok(Response::new(NoopResponse { ok: true }))
    }
}
