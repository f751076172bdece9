//! `WorkspaceService`: workspaces, grants, applications, resource tags and settings.

use tonic::{Request, Response, Status};

use super::{caller, millis_opt, settings_update, timestamp};
use crate::{
    authz::engine::{Scope, live_at},
    domain::{
        Page,
        access::scope_from_json,
        batch, credentials, resources,
        settings::{self, Source, WorkspaceSettings},
        workspaces::{self, ScopeInput, Subject},
    },
    error::Error,
    proto::v1::{self as pb, workspace_service_server::WorkspaceService},
    state::AppState,
    store::entity::{application, grant, workspace},
};

/// The WorkspaceService handlers.
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

type Reply<T> = Result<Response<T>, Status>;

fn workspace_pb(w: workspace::Model) -> pb::Workspace {
    pb::Workspace {
        id: w.id,
        organization_id: w.organization_id,
        key: w.key,
        name: w.name,
        default: w.is_default,
        owner_user_id: w.owner_user_id.unwrap_or_default(),
        created_at: Some(timestamp(w.created_at)),
    }
}

/// Encodes a scope; a plain application scope is shown as `application`.
pub fn scope_pb(scope: &Scope) -> pb::Scope {
    if let Some(app) = scope.application() {
        return pb::Scope {
            conditions: Vec::new(),
            application: app.to_owned(),
        };
    }
    pb::Scope {
        conditions: scope
            .conditions
            .iter()
            .map(|c| pb::TagCondition {
                key: c.key.clone(),
                values: c.values.clone(),
            })
            .collect(),
        application: String::new(),
    }
}

/// Encodes a subject stored as (type, id).
pub fn subject_pb(subject_type: &str, id: String) -> pb::Subject {
    let kind = match subject_type {
        "user" => pb::subject::Kind::UserId(id),
        "team" => pb::subject::Kind::TeamId(id),
        _ => pb::subject::Kind::ServiceAccountId(id),
    };
    pb::Subject { kind: Some(kind) }
}

/// A grant as listed at instant `now_ms` (which says whether it has expired).
fn grant_pb(g: grant::Model, now_ms: i64) -> pb::Grant {
    pb::Grant {
        expired: !live_at(g.expires_at, now_ms),
        expires_at: g.expires_at.map(timestamp),
        scope: g.scope.as_deref().map(|s| scope_pb(&scope_from_json(s))),
        subject: Some(subject_pb(&g.subject_type, g.subject_id)),
        id: g.id,
        workspace_id: g.workspace_id,
        role: g.role,
        created_at: Some(timestamp(g.created_at)),
    }
}

fn application_pb(a: application::Model) -> pb::Application {
    pb::Application {
        workspace_id: a.workspace_id,
        name: a.name,
        created_at: Some(timestamp(a.created_at)),
    }
}

fn source_pb(source: Source) -> i32 {
    match source {
        Source::Workspace => pb::SettingSource::Workspace as i32,
        Source::Organization => pb::SettingSource::Organization as i32,
        Source::Default => pb::SettingSource::Default as i32,
    }
}

fn settings_pb(s: WorkspaceSettings) -> pb::WorkspaceSettings {
    pb::WorkspaceSettings {
        workspace_id: s.workspace_id,
        data_retention_days: s.data_retention_days.value,
        monthly_trace_limit: s.monthly_trace_limit.value,
        data_retention_days_source: source_pb(s.data_retention_days.source),
        monthly_trace_limit_source: source_pb(s.monthly_trace_limit.source),
    }
}

/// Decodes a subject.
pub fn subject(s: Option<pb::Subject>) -> Option<Subject> {
    match s?.kind? {
        pb::subject::Kind::UserId(id) => Some(Subject::User(id)),
        pb::subject::Kind::TeamId(id) => Some(Subject::Team(id)),
        pb::subject::Kind::ServiceAccountId(id) => Some(Subject::ServiceAccount(id)),
    }
}

fn scope_input(s: Option<pb::Scope>) -> ScopeInput {
    s.map(|s| ScopeInput {
        conditions: s
            .conditions
            .into_iter()
            .map(|c| (c.key, c.values))
            .collect(),
        application: s.application,
    })
    .unwrap_or_default()
}

fn tags(tags: Vec<pb::Tag>) -> Vec<(String, String)> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

#[tonic::async_trait]
impl WorkspaceService for WorkspaceApi {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Reply<pb::CreateWorkspaceResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (ws, revision) = workspaces::create_workspace(
            &self.state,
            &caller,
            &req.organization_id,
            &req.key,
            &req.name,
        )
        .await?;
        Ok(Response::new(pb::CreateWorkspaceResponse {
            workspace: Some(workspace_pb(ws)),
            revision,
        }))
    }

    async fn get_workspace(
        &self,
        request: Request<pb::GetWorkspaceRequest>,
    ) -> Reply<pb::GetWorkspaceResponse> {
        let caller = caller(&request)?;
        let ws = workspaces::get_workspace(&self.state, &caller, &request.get_ref().workspace_id)
            .await?;
        Ok(Response::new(pb::GetWorkspaceResponse {
            workspace: Some(workspace_pb(ws)),
        }))
    }

    async fn list_workspaces(
        &self,
        request: Request<pb::ListWorkspacesRequest>,
    ) -> Reply<pb::ListWorkspacesResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = Page {
            size: req.page_size,
            token: &req.page_token,
        };
        let (rows, next_page_token) =
            workspaces::list_workspaces(&self.state, &caller, &req.organization_id, page).await?;
        Ok(Response::new(pb::ListWorkspacesResponse {
            workspaces: rows.into_iter().map(workspace_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_workspace(
        &self,
        request: Request<pb::UpdateWorkspaceRequest>,
    ) -> Reply<pb::UpdateWorkspaceResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (ws, revision) = workspaces::update_workspace(
            &self.state,
            &caller,
            &req.workspace_id,
            req.key.as_deref(),
            req.name.as_deref(),
        )
        .await?;
        Ok(Response::new(pb::UpdateWorkspaceResponse {
            workspace: Some(workspace_pb(ws)),
            revision,
        }))
    }

    async fn delete_workspace(
        &self,
        request: Request<pb::DeleteWorkspaceRequest>,
    ) -> Reply<pb::DeleteWorkspaceResponse> {
        let caller = caller(&request)?;
        let revision =
            workspaces::delete_workspace(&self.state, &caller, &request.get_ref().workspace_id)
                .await?;
        Ok(Response::new(pb::DeleteWorkspaceResponse { revision }))
    }

    async fn grant_access(
        &self,
        request: Request<pb::GrantAccessRequest>,
    ) -> Reply<pb::GrantAccessResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (grant, revision) = workspaces::grant_access(
            &self.state,
            &caller,
            &req.workspace_id,
            subject(req.subject),
            &req.role,
            scope_input(req.scope),
            millis_opt("expires_at", req.expires_at.as_ref())?,
        )
        .await?;
        Ok(Response::new(pb::GrantAccessResponse {
            grant: Some(grant_pb(grant, caller.at_ms)),
            revision,
        }))
    }

    async fn revoke_access(
        &self,
        request: Request<pb::RevokeAccessRequest>,
    ) -> Reply<pb::RevokeAccessResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision =
            workspaces::revoke_access(&self.state, &caller, &req.workspace_id, &req.grant_id)
                .await?;
        Ok(Response::new(pb::RevokeAccessResponse { revision }))
    }

    async fn batch_write_access(
        &self,
        request: Request<pb::BatchWriteAccessRequest>,
    ) -> Reply<pb::BatchWriteAccessResponse> {
        use pb::access_operation::Operation as Op;
        let caller = caller(&request)?;
        let req = request.into_inner();
        let operations = req
            .operations
            .into_iter()
            .map(|o| {
                o.operation
                    .map(|op| {
                        Ok(match op {
                            Op::Grant(g) => batch::Operation::Grant {
                                expires_at: millis_opt("expires_at", g.expires_at.as_ref())?,
                                workspace_id: g.workspace_id,
                                subject: subject(g.subject),
                                role: g.role,
                                scope: scope_input(g.scope),
                            },
                            Op::Revoke(r) => batch::Operation::Revoke {
                                workspace_id: r.workspace_id,
                                grant_id: r.grant_id,
                            },
                            Op::AddTeamMember(m) => batch::Operation::AddTeamMember {
                                expires_at: millis_opt("expires_at", m.expires_at.as_ref())?,
                                organization_id: m.organization_id,
                                team_id: m.team_id,
                                user_id: m.user_id,
                            },
                            Op::RemoveTeamMember(m) => batch::Operation::RemoveTeamMember {
                                organization_id: m.organization_id,
                                team_id: m.team_id,
                                user_id: m.user_id,
                            },
                        })
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let (outcomes, revision) = batch::apply(&self.state, &caller, operations).await?;
        Ok(Response::new(pb::BatchWriteAccessResponse {
            results: outcomes
                .into_iter()
                .map(|grant| pb::AccessOperationResult {
                    grant: grant.map(|g| grant_pb(g, caller.at_ms)),
                })
                .collect(),
            revision,
        }))
    }

    async fn list_access(
        &self,
        request: Request<pb::ListAccessRequest>,
    ) -> Reply<pb::ListAccessResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let filter = match req.subject {
            Some(s) => Some(subject(Some(s)).ok_or_else(|| {
                Error::invalid("subject", "must name a user, team or service account")
            })?),
            None => None,
        };
        let page = Page {
            size: req.page_size,
            token: &req.page_token,
        };
        let (rows, next_page_token) =
            workspaces::list_access(&self.state, &caller, &req.workspace_id, filter, page).await?;
        Ok(Response::new(pb::ListAccessResponse {
            grants: rows
                .into_iter()
                .map(|g| grant_pb(g, caller.at_ms))
                .collect(),
            next_page_token,
        }))
    }

    async fn create_application(
        &self,
        request: Request<pb::CreateApplicationRequest>,
    ) -> Reply<pb::CreateApplicationResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (app, revision) =
            resources::create_application(&self.state, &caller, &req.workspace_id, &req.name)
                .await?;
        Ok(Response::new(pb::CreateApplicationResponse {
            application: Some(application_pb(app)),
            revision,
        }))
    }

    async fn list_applications(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Reply<pb::ListApplicationsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let page = Page {
            size: req.page_size,
            token: &req.page_token,
        };
        let (rows, next_page_token) =
            resources::list_applications(&self.state, &caller, &req.workspace_id, page).await?;
        Ok(Response::new(pb::ListApplicationsResponse {
            applications: rows.into_iter().map(application_pb).collect(),
            next_page_token,
        }))
    }

    async fn delete_application(
        &self,
        request: Request<pb::DeleteApplicationRequest>,
    ) -> Reply<pb::DeleteApplicationResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision =
            resources::delete_application(&self.state, &caller, &req.workspace_id, &req.name)
                .await?;
        Ok(Response::new(pb::DeleteApplicationResponse { revision }))
    }

    async fn set_resource_tags(
        &self,
        request: Request<pb::SetResourceTagsRequest>,
    ) -> Reply<pb::SetResourceTagsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision = resources::set_resource_tags(
            &self.state,
            &caller,
            &req.workspace_id,
            &req.resource_type,
            &req.resource_id,
            tags(req.tags),
        )
        .await?;
        Ok(Response::new(pb::SetResourceTagsResponse { revision }))
    }

    async fn get_resource_tags(
        &self,
        request: Request<pb::GetResourceTagsRequest>,
    ) -> Reply<pb::GetResourceTagsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let tags = resources::get_resource_tags(
            &self.state,
            &caller,
            &req.workspace_id,
            &req.resource_type,
            &req.resource_id,
        )
        .await?;
        Ok(Response::new(pb::GetResourceTagsResponse {
            tags: tags
                .into_iter()
                .map(|(key, value)| pb::Tag { key, value })
                .collect(),
        }))
    }

    async fn delete_resource(
        &self,
        request: Request<pb::DeleteResourceRequest>,
    ) -> Reply<pb::DeleteResourceResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision = resources::delete_resource(
            &self.state,
            &caller,
            &req.workspace_id,
            &req.resource_type,
            &req.resource_id,
        )
        .await?;
        Ok(Response::new(pb::DeleteResourceResponse { revision }))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Reply<pb::GetSettingsResponse> {
        let caller = caller(&request)?;
        let settings =
            settings::get_settings(&self.state, &caller, &request.get_ref().workspace_id).await?;
        Ok(Response::new(pb::GetSettingsResponse {
            settings: Some(settings_pb(settings)),
        }))
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Reply<pb::UpdateSettingsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let update = settings_update(req.data_retention_days, req.monthly_trace_limit, &req.clear)?;
        let (settings, revision) =
            settings::update_settings(&self.state, &caller, &req.workspace_id, update).await?;
        Ok(Response::new(pb::UpdateSettingsResponse {
            settings: Some(settings_pb(settings)),
            revision,
        }))
    }
    async fn create_temporary_credentials(
        &self,
        request: Request<pb::CreateTemporaryCredentialsRequest>,
    ) -> Reply<pb::CreateTemporaryCredentialsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let issued = credentials::create_temporary_credentials(
            &self.state,
            &caller,
            &req.workspace_id,
            req.permissions,
            scope_input(req.scope),
            req.ttl_seconds,
        )
        .await?;
        Ok(Response::new(pb::CreateTemporaryCredentialsResponse {
            token: issued.token,
            key_id: issued.key_id,
            credential_id: issued.id,
            expires_at: Some(timestamp(issued.expires_at_ms)),
            workspace_id: issued.workspace_id,
            permissions: issued.permissions,
            scope: issued.scope.as_ref().map(scope_pb),
            revision: issued.revision,
        }))
    }

    async fn get_credential_keys(
        &self,
        request: Request<pb::GetCredentialKeysRequest>,
    ) -> Reply<pb::GetCredentialKeysResponse> {
        // Any authenticated caller: the key set is public.
        caller(&request)?;
        let keys = credentials::published_keys(&self.state).await?;
        let jwks =
            crate::auth::jwt::jwks(keys.iter().map(|k| (k.id.as_str(), k.public_key.as_str())));
        Ok(Response::new(pb::GetCredentialKeysResponse {
            jwks,
            keys: keys
                .into_iter()
                .map(|k| pb::CredentialKey {
                    key_id: k.id,
                    public_key: k.public_key,
                    current: k.current,
                    retired_at: k.retired_at.map(timestamp),
                })
                .collect(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Reply<pb::RotateSigningKeyResponse> {
        let caller = caller(&request)?;
        let rotated = credentials::rotate_signing_key(&self.state, &caller).await?;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            key_id: rotated.key_id,
            retired_key_id: rotated.retired_key_id.unwrap_or_default(),
            revision: rotated.revision,
        }))
    }
}
