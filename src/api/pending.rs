//! Services whose RPCs are part of the API but not built yet: the auth layer
//! still authenticates every call; then they answer `UNIMPLEMENTED`.

use tonic::{Request, Response, Status};

use crate::proto::v1::{self as pb, check_service_server::CheckService};

fn unimplemented(service: &str, method: &str) -> Status {
    Status::unimplemented(format!("{service}.{method} is not implemented yet"))
}

/// Implements a service trait whose RPCs are all pending.
macro_rules! pending_service {
    ($service:literal, $trait:path, $ty:ty; $($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $(
                async fn $method(&self, _request: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(unimplemented($service, stringify!($method)))
                }
            )*
        }
    };
}

/// CheckService: authorization decisions.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckApi;

pending_service!("CheckService", CheckService, CheckApi;
    check(pb::CheckRequest) -> pb::CheckResponse;
    batch_check(pb::BatchCheckRequest) -> pb::BatchCheckResponse;
    explain_check(pb::CheckRequest) -> pb::ExplainCheckResponse;
    list_principal_permissions(pb::ListPrincipalPermissionsRequest) -> pb::ListPrincipalPermissionsResponse;
    lookup_subjects(pb::LookupSubjectsRequest) -> pb::LookupSubjectsResponse;
);
