//! Organizations, users, memberships and invites: the rules of seed 000 on
//! who may join, with which role, and what joining gives.

use sea_orm::IntoActiveModel;
use serde_json::json;

use super::{
    Page,
    audit::{self, Actor, Change},
    authorize::{self, UserView},
    change::{Changed, Tx},
    rules::{self, Plan},
    workspaces,
};
use crate::{
    auth::{Caller, PrincipalId},
    authz::{OrgPermission, OrgRole, catalogue::SystemRole, power::PlatformPower},
    config::DeploymentMode,
    error::{Error, Result},
    state::AppState,
    store::{
        StoreError,
        entity::{grant, invite, membership, organization, user, workspace},
        finish_page, identity, keys, new_id, now_ms, page_size, roles, teams,
        workspaces as workspaces_store,
    },
};

/// A membership with the member's email.
#[derive(Clone, Debug)]
pub struct Member {
    pub membership: membership::Model,
    pub email: String,
}

/// The system role a member holds on their default workspace.
pub const DEFAULT_WORKSPACE_ROLE: &str = "WORKSPACE_ADMIN";

/// Most organizations one user may belong to: each costs a default
/// workspace, and anyone may create organizations.
pub const MAX_ORGANIZATIONS_PER_USER: u64 = 100;

/// Makes `user` a member of `org` with `role`: gives them their private default
/// workspace (reusing the one they had if they rejoin) and admin on it.
pub async fn join(
    tx: &Tx,
    org: &organization::Model,
    user: &user::Model,
    role: OrgRole,
) -> Result<Member> {
    let conn = tx.conn();
    if identity::count_memberships_of_user(conn, &user.id).await? >= MAX_ORGANIZATIONS_PER_USER {
        return Err(Error::FailedPrecondition(format!(
            "a user belongs to at most {MAX_ORGANIZATIONS_PER_USER} organizations"
        )));
    }
    let now = now_ms();
    let ws = match identity::default_workspace(conn, &org.id, &user.id).await? {
        Some(ws) => ws,
        None => {
            let hex: String = user.id.chars().filter(|c| *c != '-').collect();
            let ws = workspace::Model {
                id: new_id(),
                organization_id: org.id.clone(),
                key: format!("{}{hex}", rules::DEFAULT_WORKSPACE_PREFIX),
                name: format!("{}'s workspace", user.email),
                is_default: true,
                owner_user_id: Some(user.id.clone()),
                created_at: now,
            };
            identity::insert(conn, ws.clone().into_active_model()).await?;
            ws
        }
    };
    let admin_grant = grant::Model {
        id: new_id(),
        organization_id: org.id.clone(),
        workspace_id: ws.id.clone(),
        subject_type: "user".into(),
        subject_id: user.id.clone(),
        role: DEFAULT_WORKSPACE_ROLE.into(),
        scope: None,
        created_at: now,
        expires_at: None,
    };
    identity::insert(conn, admin_grant.into_active_model()).await?;
    let membership = membership::Model {
        organization_id: org.id.clone(),
        user_id: user.id.clone(),
        role: role.as_str().into(),
        default_workspace_id: ws.id,
        created_at: now,
    };
    identity::insert(conn, membership.clone().into_active_model()).await?;
    tx.changed(Changed::User(&user.id)).await?;
    Ok(Member {
        membership,
        email: user.email.clone(),
    })
}

/// Builds a new organization row.
pub fn new_organization(
    name: String,
    plan: Plan,
    personal_owner: Option<&str>,
) -> organization::Model {
    organization::Model {
        id: new_id(),
        name_key: personal_owner.is_none().then(|| name.to_lowercase()),
        name,
        plan: plan.as_str().into(),
        personal: personal_owner.is_some(),
        personal_owner_user_id: personal_owner.map(str::to_owned),
        pat_creation_disabled: false,
        created_at: now_ms(),
    }
}

async fn require_user(state: &AppState, id: &str) -> Result<user::Model> {
    identity::user(state.store.db(), id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user `{id}` not found")))
}

async fn require_org(state: &AppState, id: &str) -> Result<organization::Model> {
    identity::organization(state.store.db(), id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("organization `{id}` not found")))
}

/// Registers a user of the identity provider (a platform power). Users belong
/// to no organization, so the change goes to the platform log.
pub async fn create_user(
    state: &AppState,
    caller: &Caller,
    external_subject: &str,
    email: &str,
) -> Result<(user::Model, u64)> {
    let subject = rules::subject("external_subject", external_subject)?;
    let email = rules::email("email", email)?;
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    authorize::platform(conn, caller, PlatformPower::RegisterUsers).await?;
    if identity::user_by_subject(conn, &subject).await?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "a user with external_subject `{subject}` already exists"
        )));
    }
    if identity::user_by_email(conn, &email).await?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "a user with email `{email}` already exists"
        )));
    }
    let user = user::Model {
        id: new_id(),
        external_subject: subject,
        email,
        created_at: now_ms(),
    };
    identity::insert(conn, user.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: None,
            action: "user.create",
            target_type: "user",
            target_id: &user.id,
            details: json!({ "email": user.email }),
        },
    );
    Ok((user, tx.commit().await?))
}

/// Reads a user: oneself, any user for platform accounts, or a member of the
/// caller's organization for those who may view members — without their
/// identity-provider subject, which only they and the platform read.
pub async fn get_user(state: &AppState, caller: &Caller, user_id: &str) -> Result<user::Model> {
    let user_id = rules::id("user_id", user_id)?;
    let view = authorize::may_read_user(state.store.db(), caller, user_id).await?;
    let mut user = require_user(state, user_id).await?;
    if view == UserView::WithoutSubject {
        user.external_subject = String::new();
    }
    Ok(user)
}

/// Creates a shared organization for a signed-in user, who becomes its
/// admin (the platform acts for them; a personal access token acts only in
/// its own organization). In
/// `saas` mode it starts on the personal plan: plans are the platform's to set.
pub async fn create_organization(
    state: &AppState,
    caller: &Caller,
    name: &str,
    plan: Option<Plan>,
) -> Result<(organization::Model, Member, u64)> {
    let name = rules::name("name", name)?;
    let plan = plan.unwrap_or(Plan::Personal);
    authorize::may_start_on(state.settings.deployment_mode, plan)?;
    let tx = Tx::begin(state, caller).await?;
    let user_id = authorize::signed_in_user(tx.conn(), caller)
        .await?
        .to_owned();
    let user = identity::user(tx.conn(), &user_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user `{user_id}` not found")))?;
    let org = new_organization(name, plan, None);
    identity::insert(tx.conn(), org.clone().into_active_model()).await?;
    let member = join(&tx, &org, &user, OrgRole::Admin).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org.id),
            action: "organization.create",
            target_type: "organization",
            target_id: &org.id,
            details: json!({ "name": org.name, "plan": org.plan }),
        },
    );
    Ok((org, member, tx.commit().await?))
}

/// Reads an organization the caller belongs to.
pub async fn get_organization(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
) -> Result<organization::Model> {
    let org_id = caller.organization(org_id);
    authorize::org(
        state.store.db(),
        caller,
        org_id,
        OrgPermission::ViewOrganization,
    )
    .await?;
    require_org(state, org_id).await
}

/// The organizations the caller belongs to.
pub async fn list_organizations(
    state: &AppState,
    caller: &Caller,
    page: Page<'_>,
) -> Result<(Vec<organization::Model>, String)> {
    let size = page_size(page.size);
    let conn = state.store.db();
    let rows = match &caller.principal {
        PrincipalId::User(user_id)
            if caller.is_acting() && caller.key.reach.is_whole_organization() =>
        {
            authorize::calling_user(conn, caller).await?;
            identity::organizations_of_user(conn, user_id, page.token, size + 1).await?
        }
        _ => {
            authorize::org(
                conn,
                caller,
                caller.key.organization_id(),
                OrgPermission::ViewOrganization,
            )
            .await?;
            let org = require_org(state, caller.key.organization_id()).await?;
            if org.id.as_str() > page.token {
                vec![org]
            } else {
                vec![]
            }
        }
    };
    Ok(finish_page(rows, size, |o| o.id.clone()))
}

/// The changes UpdateOrganization may make.
#[derive(Debug, Default)]
pub struct OrganizationUpdate {
    pub name: Option<String>,
    pub plan: Option<Plan>,
    pub pat_creation_disabled: Option<bool>,
}

/// Changes an organization's name or security settings (admins only) or its
/// plan: in `saas` mode a platform power (billing), otherwise the admins'.
pub async fn update_organization(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    update: OrganizationUpdate,
) -> Result<(organization::Model, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    if update.name.is_none() && update.plan.is_none() && update.pat_creation_disabled.is_none() {
        return Err(Error::invalid(
            "organization",
            "nothing to change: give name, plan or pat_creation_disabled",
        ));
    }
    let name = update
        .name
        .as_deref()
        .map(|n| rules::name("name", n))
        .transpose()?;
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    if update.name.is_some() || update.pat_creation_disabled.is_some() {
        authorize::org(conn, caller, &org_id, OrgPermission::ManageSecurity).await?;
    }
    if update.plan.is_some() {
        if state.settings.deployment_mode == DeploymentMode::Saas {
            authorize::platform(conn, caller, PlatformPower::SetPlans).await?;
        } else {
            authorize::org(conn, caller, &org_id, OrgPermission::ManageBilling).await?;
        }
    }
    let mut org = identity::organization(conn, &org_id)
        .await?
        .ok_or_else(|| authorize::unreachable_organization(&org_id))?;
    let before = json!({ "name": org.name, "plan": org.plan, "pat_creation_disabled": org.pat_creation_disabled });
    if let Some(name) = name {
        if !org.personal {
            org.name_key = Some(name.to_lowercase());
        }
        org.name = name;
    }
    if let Some(plan) = update.plan {
        if org.personal && plan != Plan::Personal {
            return Err(Error::FailedPrecondition(
                "a personal organization stays on the personal plan; create a shared organization"
                    .into(),
            ));
        }
        if state.settings.deployment_mode == DeploymentMode::Saas
            && plan < Plan::Plus
            && identity::count_members_without_role(conn, &org.id, OrgRole::Admin.as_str()).await?
                > 0
        {
            return Err(Error::FailedPrecondition(
                "the personal plan allows only ORG_ADMIN members; change the other members' roles first".into(),
            ));
        }
        org.plan = plan.as_str().into();
    }
    if let Some(disabled) = update.pat_creation_disabled {
        org.pat_creation_disabled = disabled;
    }
    identity::update_organization(conn, org.clone()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org.id),
            action: "organization.update",
            target_type: "organization",
            target_id: &org.id,
            details: json!({
                "before": before,
                "after": { "name": org.name, "plan": org.plan, "pat_creation_disabled": org.pat_creation_disabled },
            }),
        },
    );
    Ok((org, tx.commit().await?))
}

/// Returns the user's personal organization, creating it on first login.
pub async fn ensure_personal_organization(
    state: &AppState,
    caller: &Caller,
    user_id: &str,
) -> Result<(organization::Model, Member, bool, u64)> {
    let conn = state.store.db();
    let user_id = if user_id.is_empty() || caller.principal == PrincipalId::User(user_id.to_owned())
    {
        authorize::signed_in_user(conn, caller).await?.to_owned()
    } else {
        authorize::platform(conn, caller, PlatformPower::CreateOrganizations)
            .await
            .map_err(|_| {
                Error::PermissionDenied(
                    "only the user, or a platform account, may create a user's personal organization".into(),
                )
            })?;
        user_id.to_owned()
    };
    let user = require_user(state, &user_id).await?;
    if let Some((org, member, revision)) = existing_personal_organization(state, &user).await? {
        return Ok((org, member, false, revision));
    }
    match create_personal_organization(state, caller, &user).await {
        // A concurrent first login created it between the read and the write.
        Err(Error::Store(StoreError::Conflict(_))) => {
            let (org, member, revision) = existing_personal_organization(state, &user)
                .await?
                .ok_or_else(|| {
                    Error::Store(StoreError::Conflict("personal organization".into()))
                })?;
            Ok((org, member, false, revision))
        }
        Ok((org, member, revision)) => Ok((org, member, true, revision)),
        Err(e) => Err(e),
    }
}

async fn existing_personal_organization(
    state: &AppState,
    user: &user::Model,
) -> Result<Option<(organization::Model, Member, u64)>> {
    let Some(org) = identity::personal_organization(state.store.db(), &user.id).await? else {
        return Ok(None);
    };
    let membership = identity::membership(state.store.db(), &org.id, &user.id)
        .await?
        .ok_or_else(|| {
            Error::FailedPrecondition("the personal organization has lost its owner".into())
        })?;
    let member = Member {
        membership,
        email: user.email.clone(),
    };
    Ok(Some((org, member, state.store.revision().await?)))
}

async fn create_personal_organization(
    state: &AppState,
    caller: &Caller,
    user: &user::Model,
) -> Result<(organization::Model, Member, u64)> {
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    let org = new_organization("Personal".into(), Plan::Personal, Some(&user.id));
    identity::insert(conn, org.clone().into_active_model()).await?;
    let member = join(&tx, &org, user, OrgRole::Admin).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org.id),
            action: "organization.create_personal",
            target_type: "organization",
            target_id: &org.id,
            details: json!({ "owner": user.id }),
        },
    );
    Ok((org, member, tx.commit().await?))
}

/// Adds an existing user to an organization directly: a platform power (the
/// identity-provider integration, which knows the user consented).
/// Organizations bring people in by invite, which the invitee accepts.
pub async fn add_member(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    user_id: &str,
    role: Option<OrgRole>,
) -> Result<(Member, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let user_id = rules::id("user_id", user_id)?;
    let role =
        role.ok_or_else(|| Error::invalid("role", "must be ORG_ADMIN, ORG_USER or ORG_VIEWER"))?;
    let tx = Tx::begin(state, caller).await?;
    authorize::platform(tx.conn(), caller, PlatformPower::AddMembers).await?;
    let org = identity::organization(tx.conn(), &org_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("organization `{org_id}` not found")))?;
    rules::check_can_add_members(&org)?;
    rules::check_member_role(state.settings.deployment_mode, &org, role)?;
    let user = identity::user(tx.conn(), user_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user `{user_id}` not found")))?;
    if identity::membership(tx.conn(), &org.id, &user.id)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "user `{}` is already a member of the organization",
            user.id
        )));
    }
    let member = join(&tx, &org, &user, role).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org.id),
            action: "member.add",
            target_type: "user",
            target_id: &user.id,
            details: json!({ "role": role.as_str() }),
        },
    );
    Ok((member, tx.commit().await?))
}

async fn check_not_last_admin(tx: &Tx, member: &membership::Model, what: &str) -> Result<()> {
    if member.role == OrgRole::Admin.as_str()
        && identity::count_members_with_role(
            tx.conn(),
            &member.organization_id,
            OrgRole::Admin.as_str(),
        )
        .await?
            <= 1
    {
        return Err(Error::FailedPrecondition(format!(
            "cannot {what} the last ORG_ADMIN of the organization"
        )));
    }
    Ok(())
}

/// Changes a member's organization role (admins only).
pub async fn update_member_role(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    user_id: &str,
    role: Option<OrgRole>,
) -> Result<(Member, u64)> {
    let org_id = caller.organization(org_id).to_owned();
    let user_id = rules::id("user_id", user_id)?;
    let role =
        role.ok_or_else(|| Error::invalid("role", "must be ORG_ADMIN, ORG_USER or ORG_VIEWER"))?;
    let tx = Tx::begin(state, caller).await?;
    let power = authorize::org(tx.conn(), caller, &org_id, OrgPermission::ManageMembers).await?;
    authorize::may_give_role(&power, role)?;
    let org = identity::organization(tx.conn(), &org_id)
        .await?
        .ok_or_else(|| authorize::unreachable_organization(&org_id))?;
    rules::check_member_role(state.settings.deployment_mode, &org, role)?;
    let user = identity::user(tx.conn(), user_id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "user `{user_id}` is not a member of the organization"
        ))
    })?;
    let current = identity::membership(tx.conn(), &org_id, user_id)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "user `{user_id}` is not a member of the organization"
            ))
        })?;
    if role != OrgRole::Admin {
        check_not_last_admin(&tx, &current, "demote").await?;
    }
    let before = current.role.clone();
    let updated = identity::set_member_role(tx.conn(), current, role.as_str()).await?;
    tx.changed(Changed::User(user_id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "member.update_role",
            target_type: "user",
            target_id: user_id,
            details: json!({ "before": before, "after": role.as_str() }),
        },
    );
    let member = Member {
        membership: updated,
        email: user.email,
    };
    Ok((member, tx.commit().await?))
}

/// Removes a member: their PATs, team memberships and grants in the
/// organization go with them, in the same transaction.
pub async fn remove_member(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    user_id: &str,
) -> Result<u64> {
    let org_id = caller.organization(org_id).to_owned();
    let user_id = rules::id("user_id", user_id)?;
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    authorize::org(conn, caller, &org_id, OrgPermission::RemoveUsers).await?;
    let current = identity::membership(conn, &org_id, user_id)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "user `{user_id}` is not a member of the organization"
            ))
        })?;
    check_not_last_admin(&tx, &current, "remove").await?;
    identity::delete_membership(conn, &org_id, user_id).await?;
    let now = now_ms();
    let revoked = keys::revoke_user_pats(conn, &org_id, user_id, now).await?;
    teams::delete_user_from_teams(conn, &org_id, user_id).await?;
    let grants = identity::delete_grants_of_subject(conn, &org_id, "user", user_id).await?;
    tx.changed(Changed::User(user_id)).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "member.remove",
            target_type: "user",
            target_id: user_id,
            details: json!({ "role": current.role, "revoked_pats": revoked, "deleted_grants": grants }),
        },
    );
    tx.commit().await
}

/// Members of an organization, for anyone who may view members.
pub async fn list_members(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    page: Page<'_>,
) -> Result<(Vec<Member>, String)> {
    let org_id = caller.organization(org_id);
    authorize::org(state.store.db(), caller, org_id, OrgPermission::ViewMembers).await?;
    let size = page_size(page.size);
    let rows = identity::members(state.store.db(), org_id, page.token, size + 1).await?;
    let members = rows
        .into_iter()
        .map(|(membership, user)| Member {
            membership,
            email: user.email,
        })
        .collect();
    Ok(finish_page(members, size, |m| m.membership.user_id.clone()))
}

/// What a workspace invite adds to an invite: the workspace and the role
/// (a system role's name or alias, or a custom role's id or name) the
/// invitee is given there on accepting.
#[derive(Clone, Copy, Debug)]
pub struct WorkspaceInvite<'a> {
    pub workspace_id: &'a str,
    pub role: &'a str,
}

/// The refusal of a workspace invite while the server does not allow them.
fn workspace_invites_off() -> Error {
    Error::FailedPrecondition(
        "workspace_id: workspace invites are turned off on this server (enable them with `--workspace-invites` or PORTCULLIS_WORKSPACE_INVITES=true)".into(),
    )
}

/// Invites an email to an organization with a role (admins only). With
/// `workspace`, and only when the server allows workspace invites, a
/// workspace admin invites into their workspace: the invitee becomes
/// `ORG_USER` (the default) or `ORG_VIEWER` and is given `workspace.role`
/// there, no more than the inviter could grant.
pub async fn create_invite(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    email: &str,
    role: Option<OrgRole>,
    workspace: Option<WorkspaceInvite<'_>>,
) -> Result<(invite::Model, u64)> {
    let email = rules::email("email", email)?;
    if workspace.is_some() && !state.settings.workspace_invites {
        return Err(workspace_invites_off());
    }
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    let (org_id, role, into) = match workspace {
        None => {
            let role = role.ok_or_else(|| {
                Error::invalid("role", "must be ORG_ADMIN, ORG_USER or ORG_VIEWER")
            })?;
            let org_id = caller.organization(org_id).to_owned();
            let power = authorize::org(conn, caller, &org_id, OrgPermission::InviteUsers).await?;
            authorize::may_give_role(&power, role)?;
            (org_id, role, None)
        }
        Some(w) => {
            let role = role.unwrap_or(OrgRole::User);
            let (ws, power) = authorize::workspace_admin(conn, caller, w.workspace_id).await?;
            if !org_id.is_empty() && org_id != ws.organization_id {
                return Err(authorize::unreachable_workspace(&ws.id));
            }
            let ws_role =
                workspaces::resolve_role(&tx, &ws.organization_id, "workspace_role", w.role)
                    .await?;
            authorize::may_invite_to_workspace(conn, caller, &ws, &power, &ws_role, role).await?;
            (ws.organization_id.clone(), role, Some((ws.id, ws_role)))
        }
    };
    let org = identity::organization(conn, &org_id)
        .await?
        .ok_or_else(|| authorize::unreachable_organization(&org_id))?;
    rules::check_can_add_members(&org)?;
    rules::check_member_role(state.settings.deployment_mode, &org, role)?;
    if identity::invite_by_email(conn, &org_id, &email)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "`{email}` already has a pending invite"
        )));
    }
    if let Some(user) = identity::user_by_email(conn, &email).await?
        && identity::membership(conn, &org_id, &user.id)
            .await?
            .is_some()
    {
        return Err(Error::AlreadyExists(format!(
            "`{email}` is already a member of the organization"
        )));
    }
    let (workspace_id, workspace_role) = into.unzip();
    let invite = invite::Model {
        id: new_id(),
        organization_id: org_id.clone(),
        email,
        role: role.as_str().into(),
        created_by: Actor::of(caller).id,
        workspace_id,
        workspace_role,
        created_at: now_ms(),
    };
    identity::insert(conn, invite.clone().into_active_model()).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "invite.create",
            target_type: "invite",
            target_id: &invite.id,
            details: json!({
                "email": invite.email,
                "role": invite.role,
                "workspace_id": invite.workspace_id,
                "workspace_role": invite.workspace_role,
            }),
        },
    );
    Ok((invite, tx.commit().await?))
}

/// Pending invites of an organization (admins only). With `workspace_id`,
/// the invites into that workspace, for its workspace admins.
pub async fn list_invites(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    workspace_id: &str,
    page: Page<'_>,
) -> Result<(Vec<invite::Model>, String)> {
    let conn = state.store.db();
    let size = page_size(page.size);
    if !workspace_id.is_empty() {
        let (ws, _) = authorize::workspace_admin(conn, caller, workspace_id).await?;
        if !org_id.is_empty() && org_id != ws.organization_id {
            return Err(authorize::unreachable_workspace(&ws.id));
        }
        let rows = identity::invites(
            conn,
            &ws.organization_id,
            Some(&ws.id),
            page.token,
            size + 1,
        )
        .await?;
        return Ok(finish_page(rows, size, |i| i.id.clone()));
    }
    let org_id = caller.organization(org_id);
    authorize::org(conn, caller, org_id, OrgPermission::InviteUsers).await?;
    let rows = identity::invites(conn, org_id, None, page.token, size + 1).await?;
    Ok(finish_page(rows, size, |i| i.id.clone()))
}

/// Deletes a pending invite (admins; an invite into a workspace, also the
/// workspace's admins).
pub async fn delete_invite(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
    invite_id: &str,
) -> Result<u64> {
    let org_id = caller.organization(org_id).to_owned();
    let invite_id = rules::id("invite_id", invite_id)?;
    let tx = Tx::begin(state, caller).await?;
    let found = identity::invite(tx.conn(), invite_id)
        .await?
        .filter(|i| i.organization_id == org_id);
    authorize::may_delete_invite(tx.conn(), caller, &org_id, found.as_ref()).await?;
    let invite = found.ok_or_else(|| Error::NotFound(format!("invite `{invite_id}` not found")))?;
    identity::delete_invite(tx.conn(), &invite.id).await?;
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org_id),
            action: "invite.delete",
            target_type: "invite",
            target_id: &invite.id,
            details: json!({ "email": invite.email, "workspace_id": invite.workspace_id }),
        },
    );
    tx.commit().await
}

/// Accepts an invite addressed to the calling user's email.
pub async fn accept_invite(
    state: &AppState,
    caller: &Caller,
    invite_id: &str,
) -> Result<(Member, u64)> {
    let invite_id = rules::id("invite_id", invite_id)?;
    let tx = Tx::begin(state, caller).await?;
    let conn = tx.conn();
    let user_id = authorize::signed_in_user(conn, caller).await?;
    let user = identity::user(conn, user_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user `{user_id}` not found")))?;
    // An invite addressed to someone else is not found, like one that does not exist.
    let invite = identity::invite(conn, invite_id)
        .await?
        .filter(|i| i.email == user.email)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "invite `{invite_id}` not found (invites are accepted by the email they are addressed to)"
            ))
        })?;
    let org = identity::organization(conn, &invite.organization_id)
        .await?
        .ok_or_else(|| Error::NotFound("the organization of the invite no longer exists".into()))?;
    let role = OrgRole::from_db(&invite.role)
        .ok_or_else(|| Error::FailedPrecondition("the invite has an unknown role".into()))?;
    rules::check_member_role(state.settings.deployment_mode, &org, role)?;
    if identity::membership(conn, &org.id, &user.id)
        .await?
        .is_some()
    {
        return Err(Error::AlreadyExists(
            "you are already a member of the organization".into(),
        ));
    }
    let into = match (&invite.workspace_id, &invite.workspace_role) {
        (None, None) => None,
        (Some(ws), Some(ws_role)) => {
            if !state.settings.workspace_invites {
                return Err(workspace_invites_off());
            }
            Some(invited_workspace(&tx, &org.id, ws, ws_role, role).await?)
        }
        // Stored data that does not parse fails closed.
        _ => {
            return Err(Error::FailedPrecondition(
                "the invite names a workspace without a role, or a role without a workspace".into(),
            ));
        }
    };
    identity::delete_invite(conn, &invite.id).await?;
    let member = join(&tx, &org, &user, role).await?;
    let granted = match into {
        Some((ws, ws_role)) => Some(grant_invited(&tx, &ws, &user.id, ws_role).await?),
        None => None,
    };
    audit::record(
        &tx,
        &Actor::of(caller),
        Change {
            organization_id: Some(&org.id),
            action: "invite.accept",
            target_type: "invite",
            target_id: &invite.id,
            details: json!({
                "user_id": user.id,
                "role": invite.role,
                "workspace_id": invite.workspace_id,
                "workspace_role": invite.workspace_role,
                "grant_id": granted,
            }),
        },
    );
    Ok((member, tx.commit().await?))
}

/// The workspace and role of a workspace invite being accepted, as storage
/// holds them now: the workspace still of the organization, the role still
/// a system role or a custom role of it, the organization role never
/// `ORG_ADMIN`. Anything else fails closed.
async fn invited_workspace(
    tx: &Tx,
    org_id: &str,
    workspace_id: &str,
    role: &str,
    org_role: OrgRole,
) -> Result<(workspace::Model, String)> {
    let conn = tx.conn();
    if org_role == OrgRole::Admin {
        return Err(Error::FailedPrecondition(
            "a workspace invite cannot make an ORG_ADMIN".into(),
        ));
    }
    let ws = identity::workspace(conn, workspace_id)
        .await?
        .filter(|w| w.organization_id == org_id)
        .ok_or_else(|| {
            Error::FailedPrecondition("the workspace of the invite no longer exists".into())
        })?;
    let role = match SystemRole::parse(role) {
        Some(system) => system.as_str().to_owned(),
        None => {
            roles::role(conn, role)
                .await?
                .filter(|r| r.organization_id == org_id)
                .ok_or_else(|| {
                    Error::FailedPrecondition("the role of the invite no longer exists".into())
                })?
                .id
        }
    };
    Ok((ws, role))
}

/// Gives the new member `user_id` the invite's role in `ws`, through the
/// change log like any grant; returns the grant's id.
async fn grant_invited(
    tx: &Tx,
    ws: &workspace::Model,
    user_id: &str,
    role: String,
) -> Result<String> {
    let existing =
        workspaces_store::grants_of_subjects(tx.conn(), &ws.id, &[("user", user_id)]).await?;
    if let Some(same) = existing
        .iter()
        .find(|g| g.role == role && g.scope.is_none())
    {
        // The invite's grant does not expire: one that would is made permanent.
        if same.expires_at.is_some() {
            workspaces_store::set_grant_expiry(tx.conn(), &same.id, None).await?;
            tx.changed(Changed::Grant {
                workspace_id: &ws.id,
                subject_type: "user",
                subject_id: user_id,
            })
            .await?;
        }
        return Ok(same.id.clone());
    }
    let row = grant::Model {
        id: new_id(),
        organization_id: ws.organization_id.clone(),
        workspace_id: ws.id.clone(),
        subject_type: "user".into(),
        subject_id: user_id.into(),
        role,
        scope: None,
        created_at: now_ms(),
        expires_at: None,
    };
    identity::insert(tx.conn(), row.clone().into_active_model()).await?;
    tx.changed(Changed::Grant {
        workspace_id: &ws.id,
        subject_type: "user",
        subject_id: user_id,
    })
    .await?;
    Ok(row.id)
}
