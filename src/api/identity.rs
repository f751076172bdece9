//! `IdentityService`: organizations, users, members, invites, teams, service
//! accounts and API keys.

use tonic::{Request, Response, Status};

use super::{caller, millis_opt, org_role, org_role_to_pb, principal, settings_update, timestamp};
use crate::{
    auth::key::KeyKind,
    authz::{engine::live_at, power::Reach},
    domain::{
        Page,
        keys::{self, KeyUpdate, ServiceKeyScope},
        organizations::{self, Member, OrganizationUpdate, WorkspaceInvite},
        rules::Plan,
        settings::{self, OrganizationSettings},
        teams::{self, TeamWithMembers},
    },
    error::Error,
    proto::v1::{self as pb, identity_service_server::IdentityService},
    state::AppState,
    store::{
        entity::{api_key, invite, organization, service_account, user},
        now_ms,
    },
};

/// The IdentityService handlers.
#[derive(Clone, Debug)]
pub struct IdentityApi {
    state: AppState,
}

impl IdentityApi {
    /// Handlers over shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn plan(field: &'static str, value: i32) -> Result<Option<Plan>, Error> {
    match pb::Plan::try_from(value) {
        Ok(pb::Plan::Unspecified) => Ok(None),
        Ok(pb::Plan::Personal) => Ok(Some(Plan::Personal)),
        Ok(pb::Plan::Plus) => Ok(Some(Plan::Plus)),
        Ok(pb::Plan::Enterprise) => Ok(Some(Plan::Enterprise)),
        Err(_) => Err(Error::invalid(field, format!("unknown plan {value}"))),
    }
}

fn plan_to_pb(stored: &str) -> i32 {
    match Plan::from_db(stored) {
        Some(Plan::Personal) => pb::Plan::Personal as i32,
        Some(Plan::Plus) => pb::Plan::Plus as i32,
        Some(Plan::Enterprise) => pb::Plan::Enterprise as i32,
        None => pb::Plan::Unspecified as i32,
    }
}

fn organization_settings_pb(s: OrganizationSettings) -> pb::OrganizationSettings {
    pb::OrganizationSettings {
        organization_id: s.organization_id,
        data_retention_days: s.data_retention_days,
        monthly_trace_limit: s.monthly_trace_limit,
    }
}

fn organization_pb(o: organization::Model) -> pb::Organization {
    pb::Organization {
        plan: plan_to_pb(&o.plan),
        id: o.id,
        name: o.name,
        personal: o.personal,
        pat_creation_disabled: o.pat_creation_disabled,
        created_at: Some(timestamp(o.created_at)),
    }
}

fn user_pb(u: user::Model) -> pb::User {
    pb::User {
        id: u.id,
        external_subject: u.external_subject,
        email: u.email,
        created_at: Some(timestamp(u.created_at)),
    }
}

fn member_pb(m: Member) -> pb::Member {
    pb::Member {
        role: org_role_to_pb(&m.membership.role),
        organization_id: m.membership.organization_id,
        user_id: m.membership.user_id,
        email: m.email,
        default_workspace_id: m.membership.default_workspace_id,
        joined_at: Some(timestamp(m.membership.created_at)),
    }
}

fn invite_pb(i: invite::Model) -> pb::Invite {
    pb::Invite {
        role: org_role_to_pb(&i.role),
        id: i.id,
        organization_id: i.organization_id,
        email: i.email,
        created_at: Some(timestamp(i.created_at)),
        workspace_id: i.workspace_id.unwrap_or_default(),
        workspace_role: i.workspace_role.unwrap_or_default(),
    }
}

/// A team as listed at instant `now_ms` (which says whether a membership has expired).
fn team_pb((t, members): TeamWithMembers, now_ms: i64) -> pb::Team {
    pb::Team {
        id: t.id,
        organization_id: t.organization_id,
        name: t.name,
        member_user_ids: members.iter().map(|m| m.user_id.clone()).collect(),
        members: members
            .into_iter()
            .map(|m| pb::TeamMember {
                expired: !live_at(m.expires_at, now_ms),
                expires_at: m.expires_at.map(timestamp),
                user_id: m.user_id,
            })
            .collect(),
        created_at: Some(timestamp(t.created_at)),
    }
}

fn service_account_pb(s: service_account::Model) -> pb::ServiceAccount {
    pb::ServiceAccount {
        role: org_role_to_pb(&s.role),
        id: s.id,
        organization_id: s.organization_id,
        name: s.name,
        platform: s.platform,
        created_at: Some(timestamp(s.created_at)),
        workspace_id: s.workspace_id.unwrap_or_default(),
    }
}

fn kind_pb(kind: Option<KeyKind>) -> i32 {
    match kind {
        Some(KeyKind::PersonalAccessToken) => pb::ApiKeyKind::PersonalAccessToken as i32,
        Some(KeyKind::ServiceKey) => pb::ApiKeyKind::ServiceKey as i32,
        None => pb::ApiKeyKind::Unspecified as i32,
    }
}

fn api_key_pb(k: api_key::Model) -> pb::ApiKey {
    let state = if k.revoked_at.is_some() {
        pb::ApiKeyState::Revoked
    } else if k.expires_at.is_some_and(|t| t <= now_ms()) {
        pb::ApiKeyState::Expired
    } else {
        pb::ApiKeyState::Active
    };
    let scope = match k.scope.as_deref() {
        Some("organization") => pb::ServiceKeyScope::Organization,
        Some("workspaces") => pb::ServiceKeyScope::Workspaces,
        _ => pb::ServiceKeyScope::Unspecified,
    };
    pb::ApiKey {
        kind: kind_pb(KeyKind::from_db(&k.kind)),
        workspace_ids: serde_json::from_str(&k.workspace_ids).unwrap_or_default(),
        id: k.id,
        organization_id: k.organization_id,
        prefix: k.prefix,
        last_chars: k.last_chars,
        description: k.description,
        user_id: k.user_id.unwrap_or_default(),
        service_account_id: k.service_account_id.unwrap_or_default(),
        scope: scope as i32,
        expires_at: k.expires_at.map(timestamp),
        revoked_at: k.revoked_at.map(timestamp),
        created_at: Some(timestamp(k.created_at)),
        state: state as i32,
    }
}

fn page(size: u32, token: &str) -> Page<'_> {
    Page { size, token }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Reply<pb::CreateOrganizationResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let plan = plan("plan", req.plan)?;
        let (org, member, revision) =
            organizations::create_organization(&self.state, &caller, &req.name, plan).await?;
        Ok(Response::new(pb::CreateOrganizationResponse {
            organization: Some(organization_pb(org)),
            member: Some(member_pb(member)),
            revision,
        }))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Reply<pb::GetOrganizationResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let org =
            organizations::get_organization(&self.state, &caller, &req.organization_id).await?;
        Ok(Response::new(pb::GetOrganizationResponse {
            organization: Some(organization_pb(org)),
        }))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Reply<pb::ListOrganizationsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (orgs, next_page_token) = organizations::list_organizations(
            &self.state,
            &caller,
            page(req.page_size, &req.page_token),
        )
        .await?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: orgs.into_iter().map(organization_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Reply<pb::UpdateOrganizationResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let plan = match req.plan {
            Some(p) => Some(
                plan("plan", p)?
                    .ok_or_else(|| Error::invalid("plan", "must not be PLAN_UNSPECIFIED"))?,
            ),
            None => None,
        };
        let update = OrganizationUpdate {
            name: req.name,
            plan,
            pat_creation_disabled: req.pat_creation_disabled,
        };
        let (org, revision) =
            organizations::update_organization(&self.state, &caller, &req.organization_id, update)
                .await?;
        Ok(Response::new(pb::UpdateOrganizationResponse {
            organization: Some(organization_pb(org)),
            revision,
        }))
    }

    async fn ensure_personal_organization(
        &self,
        request: Request<pb::EnsurePersonalOrganizationRequest>,
    ) -> Reply<pb::EnsurePersonalOrganizationResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (org, member, created, revision) =
            organizations::ensure_personal_organization(&self.state, &caller, &req.user_id).await?;
        Ok(Response::new(pb::EnsurePersonalOrganizationResponse {
            organization: Some(organization_pb(org)),
            member: Some(member_pb(member)),
            created,
            revision,
        }))
    }

    async fn get_organization_settings(
        &self,
        request: Request<pb::GetOrganizationSettingsRequest>,
    ) -> Reply<pb::GetOrganizationSettingsResponse> {
        let caller = caller(&request)?;
        let defaults = settings::get_organization_settings(
            &self.state,
            &caller,
            &request.get_ref().organization_id,
        )
        .await?;
        Ok(Response::new(pb::GetOrganizationSettingsResponse {
            settings: Some(organization_settings_pb(defaults)),
        }))
    }

    async fn update_organization_settings(
        &self,
        request: Request<pb::UpdateOrganizationSettingsRequest>,
    ) -> Reply<pb::UpdateOrganizationSettingsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let update = settings_update(req.data_retention_days, req.monthly_trace_limit, &req.clear)?;
        let (defaults, revision) = settings::update_organization_settings(
            &self.state,
            &caller,
            &req.organization_id,
            update,
        )
        .await?;
        Ok(Response::new(pb::UpdateOrganizationSettingsResponse {
            settings: Some(organization_settings_pb(defaults)),
            revision,
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Reply<pb::CreateUserResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (user, revision) =
            organizations::create_user(&self.state, &caller, &req.external_subject, &req.email)
                .await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_pb(user)),
            revision,
        }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::GetUserResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let user = organizations::get_user(&self.state, &caller, &req.user_id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_pb(user)),
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Reply<pb::AddMemberResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role = org_role("role", req.role)?;
        let (member, revision) = organizations::add_member(
            &self.state,
            &caller,
            &req.organization_id,
            &req.user_id,
            role,
        )
        .await?;
        Ok(Response::new(pb::AddMemberResponse {
            member: Some(member_pb(member)),
            revision,
        }))
    }

    async fn update_member_role(
        &self,
        request: Request<pb::UpdateMemberRoleRequest>,
    ) -> Reply<pb::UpdateMemberRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role = org_role("role", req.role)?;
        let (member, revision) = organizations::update_member_role(
            &self.state,
            &caller,
            &req.organization_id,
            &req.user_id,
            role,
        )
        .await?;
        Ok(Response::new(pb::UpdateMemberRoleResponse {
            member: Some(member_pb(member)),
            revision,
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::RemoveMemberResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision =
            organizations::remove_member(&self.state, &caller, &req.organization_id, &req.user_id)
                .await?;
        Ok(Response::new(pb::RemoveMemberResponse { revision }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Reply<pb::ListMembersResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (members, next_page_token) = organizations::list_members(
            &self.state,
            &caller,
            &req.organization_id,
            page(req.page_size, &req.page_token),
        )
        .await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(member_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_invite(
        &self,
        request: Request<pb::CreateInviteRequest>,
    ) -> Reply<pb::CreateInviteResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role = org_role("role", req.role)?;
        let workspace = (!req.workspace_id.is_empty() || !req.workspace_role.is_empty()).then_some(
            WorkspaceInvite {
                workspace_id: &req.workspace_id,
                role: &req.workspace_role,
            },
        );
        if workspace.is_some() && req.workspace_id.is_empty() {
            return Err(Error::invalid("workspace_id", "is required with workspace_role").into());
        }
        let (invite, revision) = organizations::create_invite(
            &self.state,
            &caller,
            &req.organization_id,
            &req.email,
            role,
            workspace,
        )
        .await?;
        Ok(Response::new(pb::CreateInviteResponse {
            invite: Some(invite_pb(invite)),
            revision,
        }))
    }

    async fn list_invites(
        &self,
        request: Request<pb::ListInvitesRequest>,
    ) -> Reply<pb::ListInvitesResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (invites, next_page_token) = organizations::list_invites(
            &self.state,
            &caller,
            &req.organization_id,
            &req.workspace_id,
            page(req.page_size, &req.page_token),
        )
        .await?;
        Ok(Response::new(pb::ListInvitesResponse {
            invites: invites.into_iter().map(invite_pb).collect(),
            next_page_token,
        }))
    }

    async fn delete_invite(
        &self,
        request: Request<pb::DeleteInviteRequest>,
    ) -> Reply<pb::DeleteInviteResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision = organizations::delete_invite(
            &self.state,
            &caller,
            &req.organization_id,
            &req.invite_id,
        )
        .await?;
        Ok(Response::new(pb::DeleteInviteResponse { revision }))
    }

    async fn accept_invite(
        &self,
        request: Request<pb::AcceptInviteRequest>,
    ) -> Reply<pb::AcceptInviteResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (member, revision) =
            organizations::accept_invite(&self.state, &caller, &req.invite_id).await?;
        Ok(Response::new(pb::AcceptInviteResponse {
            member: Some(member_pb(member)),
            revision,
        }))
    }

    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Reply<pb::CreateTeamResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (team, revision) =
            teams::create_team(&self.state, &caller, &req.organization_id, &req.name).await?;
        Ok(Response::new(pb::CreateTeamResponse {
            team: Some(team_pb((team, Vec::new()), caller.at_ms)),
            revision,
        }))
    }

    async fn delete_team(
        &self,
        request: Request<pb::DeleteTeamRequest>,
    ) -> Reply<pb::DeleteTeamResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision =
            teams::delete_team(&self.state, &caller, &req.organization_id, &req.team_id).await?;
        Ok(Response::new(pb::DeleteTeamResponse { revision }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Reply<pb::ListTeamsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (teams, next_page_token) = teams::list_teams(
            &self.state,
            &caller,
            &req.organization_id,
            page(req.page_size, &req.page_token),
        )
        .await?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: teams
                .into_iter()
                .map(|t| team_pb(t, caller.at_ms))
                .collect(),
            next_page_token,
        }))
    }

    async fn add_team_member(
        &self,
        request: Request<pb::AddTeamMemberRequest>,
    ) -> Reply<pb::AddTeamMemberResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (team, revision) = teams::add_team_member(
            &self.state,
            &caller,
            &req.organization_id,
            &req.team_id,
            &req.user_id,
            millis_opt("expires_at", req.expires_at.as_ref())?,
        )
        .await?;
        Ok(Response::new(pb::AddTeamMemberResponse {
            team: Some(team_pb(team, caller.at_ms)),
            revision,
        }))
    }

    async fn remove_team_member(
        &self,
        request: Request<pb::RemoveTeamMemberRequest>,
    ) -> Reply<pb::RemoveTeamMemberResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (team, revision) = teams::remove_team_member(
            &self.state,
            &caller,
            &req.organization_id,
            &req.team_id,
            &req.user_id,
        )
        .await?;
        Ok(Response::new(pb::RemoveTeamMemberResponse {
            team: Some(team_pb(team, caller.at_ms)),
            revision,
        }))
    }

    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Reply<pb::CreateServiceAccountResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role = org_role("role", req.role)?;
        let (sa, revision) = keys::create_service_account(
            &self.state,
            &caller,
            &req.organization_id,
            &req.name,
            role,
            req.platform,
            &req.workspace_id,
        )
        .await?;
        Ok(Response::new(pb::CreateServiceAccountResponse {
            service_account: Some(service_account_pb(sa)),
            revision,
        }))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Reply<pb::ListServiceAccountsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (accounts, next_page_token) = keys::list_service_accounts(
            &self.state,
            &caller,
            &req.organization_id,
            &req.workspace_id,
            page(req.page_size, &req.page_token),
        )
        .await?;
        Ok(Response::new(pb::ListServiceAccountsResponse {
            service_accounts: accounts.into_iter().map(service_account_pb).collect(),
            next_page_token,
        }))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Reply<pb::DeleteServiceAccountResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let revision = keys::delete_service_account(
            &self.state,
            &caller,
            &req.organization_id,
            &req.service_account_id,
        )
        .await?;
        Ok(Response::new(pb::DeleteServiceAccountResponse { revision }))
    }

    async fn create_personal_access_token(
        &self,
        request: Request<pb::CreatePersonalAccessTokenRequest>,
    ) -> Reply<pb::CreatePersonalAccessTokenResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let created = keys::create_pat(
            &self.state,
            &caller,
            &req.organization_id,
            &req.description,
            millis_opt("expires_at", req.expires_at.as_ref())?,
        )
        .await?;
        Ok(Response::new(pb::CreatePersonalAccessTokenResponse {
            api_key: Some(api_key_pb(created.key)),
            key: created.secret,
            revision: created.revision,
        }))
    }

    async fn create_service_key(
        &self,
        request: Request<pb::CreateServiceKeyRequest>,
    ) -> Reply<pb::CreateServiceKeyResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let scope = match pb::ServiceKeyScope::try_from(req.scope) {
            Ok(pb::ServiceKeyScope::Organization) => {
                if !req.workspace_ids.is_empty() {
                    return Err(Error::invalid(
                        "workspace_ids",
                        "must be empty for an organization-scoped key",
                    )
                    .into());
                }
                Some(ServiceKeyScope::Organization)
            }
            Ok(pb::ServiceKeyScope::Workspaces) => {
                Some(ServiceKeyScope::Workspaces(req.workspace_ids))
            }
            // Workspaces named without the scope that uses them are refused,
            // not ignored.
            _ if !req.workspace_ids.is_empty() => {
                return Err(Error::invalid(
                    "workspace_ids",
                    "are used only with scope SERVICE_KEY_SCOPE_WORKSPACES",
                )
                .into());
            }
            _ => None,
        };
        let created = keys::create_service_key(
            &self.state,
            &caller,
            &req.organization_id,
            &req.service_account_id,
            &req.description,
            scope,
            millis_opt("expires_at", req.expires_at.as_ref())?,
        )
        .await?;
        Ok(Response::new(pb::CreateServiceKeyResponse {
            api_key: Some(api_key_pb(created.key)),
            key: created.secret,
            revision: created.revision,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Reply<pb::ListApiKeysResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (keys, next_page_token) = keys::list_api_keys(
            &self.state,
            &caller,
            &req.organization_id,
            &req.workspace_id,
            page(req.page_size, &req.page_token),
        )
        .await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key_pb).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Reply<pb::RevokeApiKeyResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (key, revision) =
            keys::revoke_api_key(&self.state, &caller, &req.organization_id, &req.api_key_id)
                .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            api_key: Some(api_key_pb(key)),
            revision,
        }))
    }

    async fn update_api_key(
        &self,
        request: Request<pb::UpdateApiKeyRequest>,
    ) -> Reply<pb::UpdateApiKeyResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        if req.clear_expiry && req.expires_at.is_some() {
            return Err(
                Error::invalid("clear_expiry", "cannot be set together with expires_at").into(),
            );
        }
        let expires_at = if req.clear_expiry {
            Some(None)
        } else {
            millis_opt("expires_at", req.expires_at.as_ref())?.map(Some)
        };
        let update = KeyUpdate {
            description: req.description,
            expires_at,
        };
        let (key, revision) = keys::update_api_key(
            &self.state,
            &caller,
            &req.organization_id,
            &req.api_key_id,
            update,
        )
        .await?;
        Ok(Response::new(pb::UpdateApiKeyResponse {
            api_key: Some(api_key_pb(key)),
            revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Reply<pb::AuthenticateResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let auth = keys::authenticate(&self.state, &caller, &req.api_key, &req.tenant_id).await?;
        Ok(Response::new(pb::AuthenticateResponse {
            principal: Some(principal(&auth.key.principal)),
            organization_id: auth.key.organization_id().to_owned(),
            workspace_id: auth.workspace.map(|w| w.id).unwrap_or_default(),
            api_key_id: auth.key.key.id.clone(),
            kind: kind_pb(Some(auth.key.kind)),
            org_role: org_role_to_pb(auth.key.org_role.as_str()),
        }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        let caller = caller(&request)?;
        let me = keys::who_am_i(&self.state, &caller).await?;
        let key_workspace_ids = match &caller.key.reach {
            Reach::Organization => Vec::new(),
            Reach::Workspaces(ids) => ids.clone(),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            principal: Some(principal(&caller.principal)),
            organization_id: caller.key.organization_id().to_owned(),
            workspace_id: me.workspace_id.unwrap_or_default(),
            api_key_id: caller.key.key.id.clone(),
            kind: kind_pb(Some(caller.key.kind)),
            org_role: me.org_role.map_or(pb::OrgRole::Unspecified as i32, |r| {
                org_role_to_pb(r.as_str())
            }),
            acting_service_account_id: caller.acting_service_account_id.clone().unwrap_or_default(),
            platform: me.platform,
            key_workspace_ids,
        }))
    }
}
