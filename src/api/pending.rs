//! Services whose RPCs are part of the API but not built yet. They still
//! authenticate (the auth layer) and resolve the workspace a call names, so
//! tenant rules hold from day one; then they answer `UNIMPLEMENTED`.

use tonic::{Request, Response, Status};

use super::caller;
use crate::{
    proto::v1::{
        self as pb, check_service_server::CheckService, roles_service_server::RolesService,
        workspace_service_server::WorkspaceService,
    },
    state::AppState,
};

fn unimplemented(service: &str, method: &str) -> Status {
    Status::unimplemented(format!("{service}.{method} is not implemented yet"))
}

/// WorkspaceService: workspaces, grants, applications, tags, settings.
#[derive(Clone, Debug)]
pub struct WorkspaceApi {
    state: AppState,
}

impl WorkspaceApi {
    /// Handlers over shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// Implements a service trait whose RPCs are all pending. Methods marked
/// `workspace` first resolve the workspace the call names.
macro_rules! pending_service {
    ($service:literal, $trait:path, $ty:ty; $($kind:ident $method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    pending_service!(@$kind self, request);
                    Err(unimplemented($service, stringify!($method)))
                }
            )*
        }
    };
    (@workspace $self:ident, $request:ident) => {
        let caller = caller(&$request)?;
        caller
            .workspace(&$self.state.store, &$request.get_ref().workspace_id)
            .await?;
    };
    (@plain $self:ident, $request:ident) => {
        let _ = (&$self, &$request);
    };
}

pending_service!("WorkspaceService", WorkspaceService, WorkspaceApi;
    plain create_workspace(pb::CreateWorkspaceRequest) -> pb::CreateWorkspaceResponse;
    plain list_workspaces(pb::ListWorkspacesRequest) -> pb::ListWorkspacesResponse;
    workspace get_workspace(pb::GetWorkspaceRequest) -> pb::GetWorkspaceResponse;
    workspace update_workspace(pb::UpdateWorkspaceRequest) -> pb::UpdateWorkspaceResponse;
    workspace delete_workspace(pb::DeleteWorkspaceRequest) -> pb::DeleteWorkspaceResponse;
    workspace grant_access(pb::GrantAccessRequest) -> pb::GrantAccessResponse;
    workspace revoke_access(pb::RevokeAccessRequest) -> pb::RevokeAccessResponse;
    workspace list_access(pb::ListAccessRequest) -> pb::ListAccessResponse;
    workspace create_application(pb::CreateApplicationRequest) -> pb::CreateApplicationResponse;
    workspace list_applications(pb::ListApplicationsRequest) -> pb::ListApplicationsResponse;
    workspace delete_application(pb::DeleteApplicationRequest) -> pb::DeleteApplicationResponse;
    workspace set_resource_tags(pb::SetResourceTagsRequest) -> pb::SetResourceTagsResponse;
    workspace get_resource_tags(pb::GetResourceTagsRequest) -> pb::GetResourceTagsResponse;
    workspace delete_resource(pb::DeleteResourceRequest) -> pb::DeleteResourceResponse;
    workspace get_settings(pb::GetSettingsRequest) -> pb::GetSettingsResponse;
    workspace update_settings(pb::UpdateSettingsRequest) -> pb::UpdateSettingsResponse;
);

/// RolesService: the permission catalogue and roles.
#[derive(Clone, Copy, Debug, Default)]
pub struct RolesApi;

pending_service!("RolesService", RolesService, RolesApi;
    plain list_permissions(pb::ListPermissionsRequest) -> pb::ListPermissionsResponse;
    plain register_resource_type(pb::RegisterResourceTypeRequest) -> pb::RegisterResourceTypeResponse;
    plain create_role(pb::CreateRoleRequest) -> pb::CreateRoleResponse;
    plain get_role(pb::GetRoleRequest) -> pb::GetRoleResponse;
    plain list_roles(pb::ListRolesRequest) -> pb::ListRolesResponse;
    plain update_role(pb::UpdateRoleRequest) -> pb::UpdateRoleResponse;
    plain delete_role(pb::DeleteRoleRequest) -> pb::DeleteRoleResponse;
);

/// CheckService: authorization decisions.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckApi;

pending_service!("CheckService", CheckService, CheckApi;
    plain check(pb::CheckRequest) -> pb::CheckResponse;
    plain batch_check(pb::BatchCheckRequest) -> pb::BatchCheckResponse;
    plain explain_check(pb::CheckRequest) -> pb::ExplainCheckResponse;
    plain list_principal_permissions(pb::ListPrincipalPermissionsRequest) -> pb::ListPrincipalPermissionsResponse;
    plain lookup_subjects(pb::LookupSubjectsRequest) -> pb::LookupSubjectsResponse;
);
