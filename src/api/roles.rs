//! `RolesService`: the permission catalogue and workspace roles.

use tonic::{Request, Response, Status};

use super::caller;
use crate::{
    authz::catalogue::Permission,
    domain::{
        Page,
        roles::{self, RoleUpdate, RoleView},
    },
    proto::v1::{self as pb, roles_service_server::RolesService},
    state::AppState,
};

/// The RolesService handlers.
#[derive(Clone, Debug)]
pub struct RolesApi {
    state: AppState,
}

impl RolesApi {
    /// Handlers over shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn permission_pb(p: Permission) -> pb::Permission {
    pb::Permission {
        name: p.name,
        resource_type: p.resource_type,
        action: p.action,
        builtin: p.builtin,
    }
}

fn role_pb(r: RoleView) -> pb::Role {
    pb::Role {
        id: r.id,
        organization_id: r.organization_id.unwrap_or_default(),
        name: r.name,
        description: r.description,
        permissions: r.permissions,
        system: r.system,
        aliases: r.aliases,
    }
}

#[tonic::async_trait]
impl RolesService for RolesApi {
    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Reply<pb::ListPermissionsResponse> {
        let caller = caller(&request)?;
        let perms =
            roles::list_permissions(&self.state, &caller, &request.get_ref().organization_id)
                .await?;
        Ok(Response::new(pb::ListPermissionsResponse {
            permissions: perms.into_iter().map(permission_pb).collect(),
        }))
    }

    async fn register_resource_type(
        &self,
        request: Request<pb::RegisterResourceTypeRequest>,
    ) -> Reply<pb::RegisterResourceTypeResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (perms, revision) = roles::register_resource_type(
            &self.state,
            &caller,
            &req.organization_id,
            &req.resource_type,
            &req.actions,
        )
        .await?;
        Ok(Response::new(pb::RegisterResourceTypeResponse {
            permissions: perms.into_iter().map(permission_pb).collect(),
            revision,
        }))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Reply<pb::CreateRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (role, revision) = roles::create_role(
            &self.state,
            &caller,
            &req.organization_id,
            &req.name,
            &req.description,
            &req.permissions,
        )
        .await?;
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(role_pb(role)),
            revision,
        }))
    }

    async fn get_role(&self, request: Request<pb::GetRoleRequest>) -> Reply<pb::GetRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role =
            roles::get_role(&self.state, &caller, &req.organization_id, &req.role_id).await?;
        Ok(Response::new(pb::GetRoleResponse {
            role: Some(role_pb(role)),
        }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Reply<pb::ListRolesResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = Page {
            size: req.page_size,
            token: &req.page_token,
        };
        let (rows, next_page_token) =
            roles::list_roles(&self.state, &caller, &req.organization_id, page).await?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: rows.into_iter().map(role_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Reply<pb::UpdateRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let update = RoleUpdate {
            name: req.name,
            description: req.description,
            permissions: req.permissions.map(|p| p.permissions),
        };
        let (role, revision) = roles::update_role(
            &self.state,
            &caller,
            &req.organization_id,
            &req.role_id,
            update,
        )
        .await?;
        Ok(Response::new(pb::UpdateRoleResponse {
            role: Some(role_pb(role)),
            revision,
        }))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Reply<pb::DeleteRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (revision, revoked) = roles::delete_role(
            &self.state,
            &caller,
            &req.organization_id,
            &req.role_id,
            req.revoke_grants,
        )
        .await?;
        Ok(Response::new(pb::DeleteRoleResponse {
            revision,
            revoked_grants: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }
}
