//! The authorization of every RPC, in one place. A caller's effective power
//! is its principal's power intersected with its key's limits
//! ([`crate::authz::power`]); this module reads the facts that decision needs
//! and asks it. Handlers and the rest of the domain never decide themselves.
//!
//! * **Read for a change, inside it.** A change passes its own transaction:
//!   the key, the principal's membership or account and the grants are read
//!   there (membership and account rows locked, see [`Reads`]), after the
//!   revision row that serializes writers, so no interleaving lets a removed
//!   member, a deleted account or a revoked key slip a change in afterwards.
//! * **Tiers.** An organization principal acts only in its key's
//!   organization. A platform account acting as itself holds the powers that
//!   cross organizations ([`platform`]); acting for a user (`x-act-as-user`) it
//!   has exactly that user's power, only in organizations the user belongs to
//!   and never beyond its key's reach.
//! * **Same answer for foreign and unknown.** A workspace or organization the
//!   caller cannot reach is refused with the same words whether it exists or
//!   not ([`unreachable_workspace`], [`unreachable_organization`]).
//! * **Delegation inside a workspace.** A workspace admin ([`workspace_admin`])
//!   manages the service accounts confined to their workspace and those
//!   accounts' keys ([`may_manage_account`], [`may_change_key`]), and, with
//!   `--workspace-invites`, invites people into it ([`may_invite_to_workspace`]).
//!   A confined account holds grants only in its workspace
//!   ([`may_hold_grant_in`]); its keys reach only it; what it is granted there
//!   passes [`may_change_grant`] like any grant, so it never holds more than
//!   the admin who granted it could give.
//! * **Authorize before caching.** [`check_caller`] decides on the cached key
//!   and the workspace's organization alone, before any resolved set of the
//!   asked-about principal is loaded or cached.

use sea_orm::ConnectionTrait;

use super::access;
use crate::{
    auth::{Caller, PrincipalId, ResolvedKey},
    authz::{
        OrgPermission, OrgRole,
        cache::Id,
        catalogue::{Catalogue, PermissionSet, SystemRole},
        engine::{Access, Scope, live_at},
        power::{self, CONFINED_ACCOUNT_ROLE, Denied, PlatformPower, Power, Reach},
    },
    clock::rfc3339,
    config::DeploymentMode,
    domain::rules::Plan,
    error::{Error, Result},
    state::AppState,
    store::{
        Reads,
        entity::{api_key, invite, membership, service_account, workspace},
        identity, keys, now_ms, teams,
    },
};

fn denied(d: Denied) -> Error {
    Error::PermissionDenied(d.0)
}

/// The answer for a workspace the caller cannot reach, whether it exists or not.
pub fn unreachable_workspace(id: &str) -> Error {
    Error::PermissionDenied(format!(
        "workspace `{id}` is not reachable with this key (it does not exist, or belongs to an organization the caller is not part of)"
    ))
}

/// The answer for an organization the caller cannot reach, whether it exists or not.
pub fn unreachable_organization(id: &str) -> Error {
    Error::PermissionDenied(format!(
        "organization `{id}` is not reachable with this key (it does not exist, or the caller is not part of it)"
    ))
}

fn org_role(stored: &str) -> Result<OrgRole> {
    // Stored data that does not parse fails closed.
    OrgRole::from_db(stored)
        .ok_or_else(|| Error::PermissionDenied("the principal's stored role is not valid".into()))
}

/// Confirms in storage that the calling key is still live: not revoked,
/// not expired, not deleted since it was cached.
async fn live_key<C: Reads>(conn: &C, caller: &Caller) -> Result<()> {
    let row = keys::api_key(conn, &caller.key.key.id)
        .await?
        .ok_or_else(revoked)?;
    still_live(&row)
}

/// Whether a key read back from storage is still live.
fn still_live(row: &api_key::Model) -> Result<()> {
    if row.revoked_at.is_some() {
        return Err(revoked());
    }
    if row.expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(Error::Unauthenticated("api key has expired".into()));
    }
    Ok(())
}

fn revoked() -> Error {
    Error::Unauthenticated("api key has been revoked".into())
}

/// The caller's effective power in organization `org_id`, read through `conn`.
pub async fn power<C: Reads>(conn: &C, caller: &Caller, org_id: &str) -> Result<Power> {
    let key = &caller.key;
    let home = org_id == key.organization_id();
    match &caller.acting_service_account_id {
        Some(account) => {
            live_key(conn, caller).await?;
            // A key limited to workspaces reaches nothing outside its own organization.
            if !home && !key.reach.is_whole_organization() {
                return Err(unreachable_organization(org_id));
            }
            keys::service_account_held(conn, account)
                .await?
                .filter(|a| a.platform)
                .ok_or_else(|| {
                    Error::PermissionDenied(
                        "`x-act-as-user` is a platform power: this account no longer holds it"
                            .into(),
                    )
                })?;
            let user = caller.user_id()?;
            let member = identity::membership_held(conn, org_id, user)
                .await?
                .ok_or_else(|| unreachable_organization(org_id))?;
            Ok(Power {
                role: org_role(&member.role)?,
                reach: key.reach.clone(),
                platform: false,
            })
        }
        None if !home => {
            live_key(conn, caller).await?;
            Err(unreachable_organization(org_id))
        }
        None => home_power(caller, read_home(conn, caller, None).await?),
    }
}

/// What a caller not acting for anyone stands on in its key's organization:
/// its key and its principal's standing there, with the workspace asked for.
enum Home {
    User(keys::KeyHeld<membership::Model>),
    Account(keys::KeyHeld<service_account::Model>),
}

impl Home {
    fn workspace(&self) -> Option<&workspace::Model> {
        match self {
            Home::User(held) => held.workspace.as_ref(),
            Home::Account(held) => held.workspace.as_ref(),
        }
    }
}

/// Reads [`Home`] back in one statement (the standing's row locked for a
/// change), with workspace `workspace` if asked for; `None`: the key or the
/// principal's standing is gone.
async fn read_home<C: Reads>(
    conn: &C,
    caller: &Caller,
    workspace: Option<&str>,
) -> Result<Option<Home>> {
    let key = &caller.key;
    Ok(match &key.principal {
        PrincipalId::User(user) => {
            keys::personal_key_held(conn, &key.key.id, key.organization_id(), user, workspace)
                .await?
                .map(Home::User)
        }
        PrincipalId::ServiceAccount(account) => {
            keys::service_key_held(conn, &key.key.id, account, workspace)
                .await?
                .map(Home::Account)
        }
    })
}

/// The power of a caller not acting for anyone, in its key's organization,
/// from what [`read_home`] read back.
fn home_power(caller: &Caller, home: Option<Home>) -> Result<Power> {
    match home.ok_or_else(revoked)? {
        Home::User(held) => {
            still_live(&held.key)?;
            Ok(Power {
                role: org_role(&held.principal.role)?,
                reach: Reach::Organization,
                platform: false,
            })
        }
        Home::Account(held) => {
            still_live(&held.key)?;
            let account = held.principal;
            let role = org_role(&account.role)?;
            let reach = match &account.workspace_id {
                // Stored data that breaks the confinement fails closed.
                Some(_) if !role.at_most(CONFINED_ACCOUNT_ROLE) => {
                    return Err(Error::PermissionDenied(
                        "the confined service account's stored role is not valid".into(),
                    ));
                }
                Some(ws) => caller.key.reach.confined_to(ws),
                None => caller.key.reach.clone(),
            };
            Ok(Power {
                role,
                reach,
                platform: account.platform,
            })
        }
    }
}

/// Authorizes an organization-wide action; returns the caller's power there.
pub async fn org<C: Reads>(
    conn: &C,
    caller: &Caller,
    org_id: &str,
    permission: OrgPermission,
) -> Result<Power> {
    let power = power(conn, caller, org_id).await?;
    power.org(permission).map_err(denied)?;
    Ok(power)
}

/// Authorizes a power that crosses organizations: the caller must be a
/// platform account acting as itself with a key reaching its whole
/// organization, as storage says now.
pub async fn platform<C: Reads>(conn: &C, caller: &Caller, wanted: PlatformPower) -> Result<()> {
    caller.tier().allows(wanted).map_err(denied)?;
    live_key(conn, caller).await?;
    let PrincipalId::ServiceAccount(account) = &caller.key.principal else {
        return Err(Error::PermissionDenied(
            "only platform accounts hold platform powers".into(),
        ));
    };
    keys::service_account_held(conn, account)
        .await?
        .filter(|a| a.platform)
        .ok_or_else(|| {
            Error::PermissionDenied(format!(
                "{} is a platform power: this account no longer holds it",
                wanted.describe()
            ))
        })?;
    Ok(())
}

/// The user a call acts as, once storage confirms the key is live and, under
/// `x-act-as-user`, its account still a platform account: for what a user
/// does for themself (creating an organization, accepting an invite), which
/// reaches beyond any workspace, so a key limited to workspaces may not.
pub async fn calling_user<'a, C: Reads>(conn: &C, caller: &'a Caller) -> Result<&'a str> {
    let user = caller.user_id()?;
    if !caller.key.reach.is_whole_organization() {
        return Err(Error::PermissionDenied(
            "the key is limited to workspaces: it acts for a user only inside them".into(),
        ));
    }
    live_key(conn, caller).await?;
    if let Some(account) = &caller.acting_service_account_id {
        keys::service_account_held(conn, account)
            .await?
            .filter(|a| a.platform)
            .ok_or_else(|| {
                Error::PermissionDenied(
                    "`x-act-as-user` is a platform power: this account no longer holds it".into(),
                )
            })?;
    }
    Ok(user)
}

/// The user a call acts for, for what reaches beyond any one organization
/// (creating an organization, accepting an invite to another): done for a
/// signed-in user by the platform (`x-act-as-user`), never with a personal
/// access token, which acts only inside its own organization.
pub async fn signed_in_user<'a, C: Reads>(conn: &C, caller: &'a Caller) -> Result<&'a str> {
    if !caller.is_acting() {
        return Err(Error::PermissionDenied(
            "this is done for a signed-in user by the platform (a platform key with `x-act-as-user`); a personal access token acts only inside its own organization".into(),
        ));
    }
    calling_user(conn, caller).await
}

/// Answers whether the caller is a platform account acting as itself (it
/// then sees and manages platform accounts); confirmed in storage.
pub async fn is_platform<C: Reads>(conn: &C, caller: &Caller) -> Result<bool> {
    if !caller.tier().platform_key || caller.is_acting() {
        return Ok(false);
    }
    match platform(conn, caller, PlatformPower::ManagePlatformAccounts).await {
        Ok(()) => Ok(true),
        Err(Error::PermissionDenied(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The workspace a call acts in — `requested` (a request field), else
/// `x-tenant-id`, else the key's default — and the caller's power in its
/// organization. The workspace must be within the key's reach.
pub async fn workspace<C: Reads>(
    conn: &C,
    caller: &Caller,
    requested: &str,
) -> Result<(workspace::Model, Power)> {
    let named = if requested.is_empty() {
        caller.tenant.as_deref()
    } else {
        Some(requested)
    };
    // The caller's standing is read the same way whether the workspace is
    // its organization's, another's or nobody's, so neither the answer nor
    // the time it takes tells them apart: in its key's organization (read
    // with the named workspace in one statement), or, acting for a user, in
    // the workspace's organization.
    let (ws, standing_in, standing) = match named {
        Some(id) if !caller.is_acting() => {
            let home = read_home(conn, caller, Some(id)).await?;
            let ws = home.as_ref().and_then(Home::workspace).cloned();
            let standing = home_power(caller, home);
            (ws, caller.key.organization_id().to_owned(), standing)
        }
        _ => {
            let ws = match named {
                Some(id) => identity::workspace(conn, id).await?,
                None => Some(default_workspace(conn, caller).await?),
            };
            let standing_in = match (&ws, caller.is_acting()) {
                (Some(ws), true) => ws.organization_id.clone(),
                _ => caller.key.organization_id().to_owned(),
            };
            let standing = power(conn, caller, &standing_in).await;
            (ws, standing_in, standing)
        }
    };
    let Some(ws) = ws else {
        standing?;
        return Err(unreachable_workspace(named.unwrap_or_default()));
    };
    let power = match standing {
        Ok(power) if ws.organization_id == standing_in => power,
        Ok(_) | Err(Error::PermissionDenied(_)) => return Err(unreachable_workspace(&ws.id)),
        Err(e) => return Err(e),
    };
    power.reaches(&ws.id).map_err(denied)?;
    Ok((ws, power))
}

/// The id of the workspace a call without a workspace id and without
/// `x-tenant-id` acts in: a personal access token's user's default
/// workspace in the key's organization, or the one workspace a service key
/// is limited to; `None` for a key that has none.
pub async fn default_workspace_id<C: ConnectionTrait>(
    conn: &C,
    caller: &Caller,
) -> Result<Option<String>> {
    Ok(match (&caller.principal, &caller.key.reach) {
        (PrincipalId::User(user), _) => {
            identity::membership(conn, caller.key.organization_id(), user)
                .await?
                .map(|m| m.default_workspace_id)
        }
        (PrincipalId::ServiceAccount(_), Reach::Workspaces(ids)) if ids.len() == 1 => {
            Some(ids[0].clone())
        }
        _ => None,
    })
}

async fn default_workspace<C: ConnectionTrait>(
    conn: &C,
    caller: &Caller,
) -> Result<workspace::Model> {
    let id = default_workspace_id(conn, caller).await?.ok_or_else(|| {
        Error::PermissionDenied(
            "x-tenant-id is required: name the target workspace (this key has no default workspace)"
                .into(),
        )
    })?;
    identity::workspace(conn, &id)
        .await?
        .ok_or_else(|| unreachable_workspace(&id))
}

/// Authorizes a workspace-level action: `ORG_ADMIN` (within the key's
/// reach), or an unscoped grant whose role holds `permission`.
pub async fn workspace_action<C: Reads>(
    conn: &C,
    caller: &Caller,
    requested: &str,
    permission: &str,
) -> Result<(workspace::Model, Power)> {
    let (ws, power) = workspace(conn, caller, requested).await?;
    if power.admin_of_reached_workspaces() {
        return Ok((ws, power));
    }
    let catalogue = access::catalogue(conn, &ws.organization_id).await?;
    let id = catalogue
        .id(permission)
        .ok_or_else(|| Error::FailedPrecondition(format!("unknown permission `{permission}`")))?;
    let held = held_in(conn, &catalogue, caller, &ws, &power).await?;
    if held.allows(id, &[]) {
        return Ok((ws, power));
    }
    Err(Error::PermissionDenied(format!(
        "missing permission `{permission}` in workspace `{}`",
        ws.key
    )))
}

/// What the caller itself holds in `ws`: its grants and its teams', under
/// its organization role.
async fn held_in<C: Reads>(
    conn: &C,
    catalogue: &Catalogue,
    caller: &Caller,
    ws: &workspace::Model,
    power: &Power,
) -> Result<Access> {
    Ok(access::resolve(
        conn,
        catalogue,
        (&ws.organization_id, &ws.id),
        &caller.principal,
        Some(power.role),
        caller.at_ms,
    )
    .await?)
}

/// Authorizes organization permissions exercised on every workspace at once
/// (the organization's default settings): the key must reach the whole
/// organization.
pub async fn org_every_workspace<C: Reads>(
    conn: &C,
    caller: &Caller,
    org_id: &str,
    permissions: &[OrgPermission],
) -> Result<Power> {
    let power = power(conn, caller, org_id).await?;
    for permission in permissions {
        power.org_every_workspace(*permission).map_err(denied)?;
    }
    Ok(power)
}

/// Authorizes administering workspace `requested`: `ORG_ADMIN` (within the
/// key's reach), or holding every permission of `WORKSPACE_ADMIN` there over
/// every resource (an unscoped `WORKSPACE_ADMIN` grant, direct or through a
/// team, or custom roles that add up to it). Such a caller could grant
/// `WORKSPACE_ADMIN` itself, so nothing it delegates there exceeds it.
pub async fn workspace_admin<C: Reads>(
    conn: &C,
    caller: &Caller,
    requested: &str,
) -> Result<(workspace::Model, Power)> {
    let (ws, power) = workspace(conn, caller, requested).await?;
    if power.admin_of_reached_workspaces() {
        return Ok((ws, power));
    }
    let catalogue = access::catalogue(conn, &ws.organization_id).await?;
    let admin = catalogue.system_role(SystemRole::Admin);
    let held = held_in(conn, &catalogue, caller, &ws, &power).await?;
    if held.first_not_covered(&admin, None).is_none() {
        return Ok((ws, power));
    }
    Err(Error::PermissionDenied(format!(
        "workspace admin of `{}` needed (ORG_ADMIN, or an unscoped WORKSPACE_ADMIN grant there)",
        ws.key
    )))
}

/// Authorizes managing service account `account` (`None`: unknown to the
/// organization) with organization permission `permission`: those who hold
/// it manage every account; a workspace admin manages only the accounts
/// confined to a workspace they administer. Anyone else gets one answer,
/// whether the account exists or not.
pub async fn may_manage_account<C: Reads>(
    conn: &C,
    caller: &Caller,
    org_id: &str,
    account: Option<&service_account::Model>,
    permission: OrgPermission,
) -> Result<Power> {
    let power = power(conn, caller, org_id).await?;
    let denied = match power.org(permission) {
        Ok(()) => return Ok(power),
        Err(d) => d,
    };
    if let Some(ws) = account.and_then(|a| a.workspace_id.as_deref()) {
        match workspace_admin(conn, caller, ws).await {
            Ok((_, power)) => return Ok(power),
            Err(Error::PermissionDenied(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::PermissionDenied(format!(
        "{}; a workspace admin manages only the service accounts confined to a workspace they administer, and their keys",
        denied.0
    )))
}

/// Decides whether service account `account` may hold a grant in `ws`: an
/// account confined to a workspace holds grants there and nowhere else.
pub fn may_hold_grant_in(account: &service_account::Model, ws: &workspace::Model) -> Result<()> {
    match &account.workspace_id {
        Some(confined) if *confined != ws.id => Err(Error::FailedPrecondition(format!(
            "subject: service account `{}` is confined to another workspace and may hold grants only there",
            account.id
        ))),
        _ => Ok(()),
    }
}

/// Authorizes a workspace invite into `ws`, which the caller administers
/// (`power` from [`workspace_admin`]): the caller calls with a key that
/// reaches the whole organization (the invitee joins the organization),
/// gives an organization role no higher than its own and never `ORG_ADMIN`,
/// and could grant `role` (a role id) there itself.
pub async fn may_invite_to_workspace<C: Reads>(
    conn: &C,
    caller: &Caller,
    ws: &workspace::Model,
    power: &Power,
    role: &str,
    org_role: OrgRole,
) -> Result<()> {
    if !power.reach.is_whole_organization() {
        return Err(Error::PermissionDenied(
            "a workspace invite brings a person into the organization: it needs a key that reaches the whole organization".into(),
        ));
    }
    if org_role == OrgRole::Admin {
        return Err(Error::PermissionDenied(
            "role: a workspace invite makes the invitee ORG_USER or ORG_VIEWER, never ORG_ADMIN (organization admins invite admins without a workspace)".into(),
        ));
    }
    may_give_role(power, org_role)?;
    may_change_grant(conn, caller, ws, power, role, None, GrantChange::Give)
        .await
        .map_err(|e| match e {
            Error::PermissionDenied(m) => Error::PermissionDenied(format!("workspace_{m}")),
            other => other,
        })
}

/// Authorizes deleting `invite` (`None`: unknown to the organization): those
/// who may delete invites delete any; a workspace admin only the invites
/// into a workspace they administer. Anyone else gets one answer, whether
/// the invite exists or not.
pub async fn may_delete_invite<C: Reads>(
    conn: &C,
    caller: &Caller,
    org_id: &str,
    invite: Option<&invite::Model>,
) -> Result<()> {
    let power = power(conn, caller, org_id).await?;
    let denied = match power.org(OrgPermission::DeleteInvites) {
        Ok(()) => return Ok(()),
        Err(d) => d,
    };
    if let Some(ws) = invite.and_then(|i| i.workspace_id.as_deref()) {
        match workspace_admin(conn, caller, ws).await {
            Ok(_) => return Ok(()),
            Err(Error::PermissionDenied(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::PermissionDenied(format!(
        "{}; a workspace admin deletes only the invites into a workspace they administer",
        denied.0
    )))
}

/// Authorizes an organization permission exercised on one workspace (its
/// settings): the workspace must be within the key's reach.
pub async fn org_in_workspace<C: Reads>(
    conn: &C,
    caller: &Caller,
    requested: &str,
    permissions: &[OrgPermission],
) -> Result<(workspace::Model, Power)> {
    let (ws, power) = workspace(conn, caller, requested).await?;
    for permission in permissions {
        power.org_in(*permission, &ws.id).map_err(denied)?;
    }
    Ok((ws, power))
}

/// Giving a grant or taking one away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantChange {
    Give,
    Take,
}

/// What `role` (a role id) needs and what the caller holds in `ws`, to
/// decide a grant of it; `None` for an organization admin (within its key's
/// reach), who holds everything there for good.
async fn grant_inputs<C: Reads>(
    conn: &C,
    caller: &Caller,
    ws: &workspace::Model,
    power: &Power,
    role: &str,
) -> Result<Option<(Catalogue, PermissionSet, Access)>> {
    if power.admin_of_reached_workspaces() {
        return Ok(None);
    }
    let catalogue = access::catalogue(conn, &ws.organization_id).await?;
    let permissions =
        access::permissions_of_role(conn, &catalogue, &ws.organization_id, role).await?;
    let held = held_in(conn, &catalogue, caller, ws, power).await?;
    Ok(Some((catalogue, permissions, held)))
}

/// Refuses a change of a grant needing `permissions` over `scope` when
/// `held` does not cover them all.
fn covers(
    catalogue: &Catalogue,
    held: &Access,
    permissions: &PermissionSet,
    scope: Option<&Scope>,
    change: GrantChange,
) -> Result<()> {
    let Some(p) = held.first_not_covered(permissions, scope) else {
        return Ok(());
    };
    let name = catalogue.get(p).map_or("?", |p| p.name.as_str());
    Err(Error::PermissionDenied(match change {
        GrantChange::Give => format!(
            "role: the caller does not hold `{name}` over every resource the grant would cover; nothing delegates more than its caller holds"
        ),
        GrantChange::Take => format!(
            "the caller does not hold `{name}` over every resource the grant covers; nothing takes away what its caller could not give"
        ),
    }))
}

/// Authorizes giving (or taking away) a grant of `role` (a role id),
/// optionally scoped: the caller must hold every permission of the role over
/// at least every resource the grant covers. Nothing delegates more than its
/// caller holds, and nothing takes away what its caller could not have given.
pub async fn may_change_grant<C: Reads>(
    conn: &C,
    caller: &Caller,
    ws: &workspace::Model,
    power: &Power,
    role: &str,
    scope: Option<&Scope>,
    change: GrantChange,
) -> Result<()> {
    match grant_inputs(conn, caller, ws, power, role).await? {
        Some((catalogue, permissions, held)) => {
            covers(&catalogue, &held, &permissions, scope, change)
        }
        None => Ok(()),
    }
}

/// Authorizes giving `subject` (type, id) a grant of `role` over `scope`
/// until `expires_at` (`None`: for good) in `ws`, as [`may_change_grant`]
/// does, and, when the grant would reach the caller itself (it names the
/// caller, or a team the caller is a member of now), no longer than the
/// caller's own hold on the role's permissions there: time-bound access is
/// not prolonged by its holder. Organization admins (within their key's
/// reach) hold them for good. Grants to others are not bounded by the
/// giver's expiry.
#[allow(clippy::too_many_arguments)]
pub async fn may_give_grant<C: Reads>(
    conn: &C,
    caller: &Caller,
    ws: &workspace::Model,
    power: &Power,
    (subject_type, subject_id): (&str, &str),
    role: &str,
    scope: Option<&Scope>,
    expires_at: Option<i64>,
) -> Result<()> {
    let Some((catalogue, permissions, held)) = grant_inputs(conn, caller, ws, power, role).await?
    else {
        return Ok(());
    };
    covers(&catalogue, &held, &permissions, scope, GrantChange::Give)?;
    let reaches_caller = match (subject_type, &caller.principal) {
        ("user", PrincipalId::User(id)) | ("service_account", PrincipalId::ServiceAccount(id)) => {
            id == subject_id
        }
        ("team", PrincipalId::User(id)) => teams::team_member(conn, subject_id, id)
            .await?
            .is_some_and(|m| live_at(m.expires_at, caller.at_ms)),
        _ => false,
    };
    let Some(until) = held
        .covered_until(&permissions, scope)
        .filter(|_| reaches_caller)
    else {
        return Ok(());
    };
    if expires_at.is_some_and(|t| t <= until) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "expires_at: the grant would reach the caller, who holds this role's permissions in workspace `{}` only until {}; time-bound access is not prolonged by its holder",
        ws.key,
        rfc3339(until)
    )))
}

/// Authorizes a temporary credential carrying `wanted` over `scope` in `ws`
/// (reached with `power`, see [`workspace`]): the caller itself must hold
/// every one of them there now, as the check engine resolves its own
/// principal. A permission held only under a scoped grant passes only to a
/// credential whose scope lies within that grant's; an unscoped grant (or
/// `ORG_ADMIN`) passes it to any scope. A credential never carries more than
/// its caller holds, nor for longer: the answer is the instant the caller's
/// covering grants or its calling key expire, whichever comes first
/// (`None`: neither does), which caps its `exp`.
pub async fn may_hold_credential<C: Reads>(
    conn: &C,
    caller: &Caller,
    ws: &workspace::Model,
    power: &Power,
    catalogue: &Catalogue,
    wanted: &PermissionSet,
    scope: Option<&Scope>,
) -> Result<Option<i64>> {
    let held = held_in(conn, catalogue, caller, ws, power).await?;
    let Some(p) = held.first_not_covered(wanted, scope) else {
        // A credential outlives neither the grants it is drawn from nor
        // the key that asks for it.
        let grants = held.covered_until(wanted, scope);
        let key = caller.key.key.expires_at;
        return Ok(match (grants, key) {
            (Some(g), Some(k)) => Some(g.min(k)),
            (g, k) => g.or(k),
        });
    };
    let name = catalogue.get(p).map_or("?", |p| p.name.as_str());
    Err(Error::PermissionDenied(format!(
        "permissions: the caller does not hold `{name}` in workspace `{}` over every resource the credential would cover; a credential carries only what its caller holds",
        ws.key
    )))
}

/// The service accounts the caller must not see in listings, logs or
/// answers: the platform accounts (of whichever organization: they act in
/// many), unless the caller is one.
pub async fn hidden_accounts<C: Reads>(conn: &C, caller: &Caller) -> Result<Vec<String>> {
    if is_platform(conn, caller).await? {
        return Ok(Vec::new());
    }
    Ok(keys::platform_account_ids(conn).await?)
}

/// Answers whether the caller may see a Check's principal that is a
/// platform account (`principal_is_platform`): to anyone but a platform
/// account acting as itself it does not exist. Decided on the cached key.
pub fn sees_principal(caller: &Caller, principal_is_platform: bool) -> bool {
    !principal_is_platform || (caller.key.platform && !caller.is_acting())
}

/// Authorizes giving a new key `reach`, living until `expires_at`: no more
/// reach and no longer life than the calling key's own.
pub fn may_mint(
    caller: &Caller,
    power: &Power,
    reach: &Reach,
    expires_at: Option<i64>,
) -> Result<()> {
    power.may_give_reach(reach).map_err(denied)?;
    may_outlive(caller, expires_at)
}

/// Authorizes a key's life until `expires_at` (`None`: forever): no longer
/// than the calling key's.
pub fn may_outlive(caller: &Caller, expires_at: Option<i64>) -> Result<()> {
    power::may_outlive(caller.key.key.expires_at, expires_at).map_err(denied)
}

/// Authorizes giving a new account `role`: no higher than the caller's.
pub fn may_give_role(power: &Power, role: OrgRole) -> Result<()> {
    power.may_give_role(role).map_err(denied)
}

/// Decides whether the caller may ask about `principal` in workspace
/// `workspace_id` of organization `org`: a service key of the organization
/// within its reach (what backends use), a user about themself, an
/// `ORG_ADMIN` about anyone. Decided on the cached key, before anything about
/// `principal` is loaded; under `x-act-as-user` the user's membership is read.
pub async fn check_caller(
    state: &AppState,
    caller: &Caller,
    org: Id,
    workspace_id: &str,
    principal: &PrincipalId,
) -> Result<()> {
    let key = &caller.key;
    // Only a platform account acting for a user, with a key that is not
    // limited to workspaces, asks outside its own organization.
    let reaches_org =
        key.ids.organization == org || (caller.is_acting() && key.reach.is_whole_organization());
    if !reaches_org {
        return Err(unreachable_workspace(workspace_id));
    }
    if !key.reach.includes(workspace_id) {
        return Err(Error::PermissionDenied(format!(
            "the calling key is not scoped to workspace `{workspace_id}`"
        )));
    }
    let is_self = caller.principal == *principal;
    let role = if caller.is_acting() {
        let user = caller.user_id()?;
        let member = identity::membership(state.store.db(), &crate::id::format(org), user)
            .await?
            .ok_or_else(|| unreachable_workspace(workspace_id))?;
        org_role(&member.role)?
    } else {
        if matches!(key.principal, PrincipalId::ServiceAccount(_)) {
            return Ok(());
        }
        key.org_role
    };
    if is_self || role == OrgRole::Admin {
        return Ok(());
    }
    Err(Error::PermissionDenied(
        "a user may check only their own access; ORG_ADMIN may check anyone's, and backends use a service key"
            .into(),
    ))
}

/// Why a key presented as a Check's principal cannot act in `workspace_id`
/// of `org`, if it cannot: its own limits bound what it may be allowed.
pub fn key_principal_limit(key: &ResolvedKey, org: Id, workspace_id: &str) -> Option<&'static str> {
    if key.ids.organization != org {
        Some("the principal's api key belongs to another organization")
    } else if !key.reach.includes(workspace_id) {
        Some("the principal's service key is not scoped to this workspace")
    } else {
        None
    }
}

/// Decides whether the caller may look up who holds a permission in a
/// workspace: service keys of the organization, or holders of `members:read`.
pub async fn lookup_subjects<C: Reads>(
    conn: &C,
    caller: &Caller,
    requested: &str,
) -> Result<workspace::Model> {
    if matches!(caller.principal, PrincipalId::ServiceAccount(_)) {
        return Ok(workspace(conn, caller, requested).await?.0);
    }
    Ok(workspace_action(conn, caller, requested, "members:read")
        .await?
        .0)
}

/// What is done to an API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// Revoking takes power away: one's own PAT, or any key for those who manage keys.
    Revoke,
    /// Changing the description or expiry: extending one's own PAT is like
    /// creating one, so it needs the permission to create PATs.
    Update,
}

/// Authorizes a change to `key`, a key of the organization `power` was
/// computed for. Keys of platform accounts exist only for platform callers.
pub async fn may_change_key<C: Reads>(
    conn: &C,
    caller: &Caller,
    power: &Power,
    key: &api_key::Model,
    change: KeyChange,
) -> Result<()> {
    if let Some(account) = &key.service_account_id
        && keys::service_account(conn, account)
            .await?
            .is_some_and(|a| a.platform)
        && !is_platform(conn, caller).await?
    {
        return Err(Error::NotFound(format!("api key `{}` not found", key.id)));
    }
    let own =
        matches!(&caller.principal, PrincipalId::User(u) if key.user_id.as_deref() == Some(u));
    let needed = match change {
        KeyChange::Revoke if own => return Ok(()),
        KeyChange::Update if own => OrgPermission::CreatePat,
        _ => OrgPermission::ManageApiKeys,
    };
    // A workspace admin manages the keys of the accounts confined to it.
    if !own
        && power.org(needed).is_err()
        && let Some(account) = &key.service_account_id
        && let Some(ws) = keys::service_account(conn, account)
            .await?
            .and_then(|a| a.workspace_id)
    {
        match workspace_admin(conn, caller, &ws).await {
            Ok(_) => return Ok(()),
            Err(Error::PermissionDenied(_)) => {}
            Err(e) => return Err(e),
        }
    }
    power.org(needed).map_err(|d| {
        Error::PermissionDenied(if own {
            d.0
        } else {
            format!(
                "{} may manage only its own personal access tokens (`{}` needed for others)",
                power.role.as_str(),
                OrgPermission::ManageApiKeys.name()
            )
        })
    })
}

/// Which keys of an organization the caller lists: every key (`None`) for
/// those who manage keys, else the calling user's own PATs.
pub fn listed_keys<'a>(caller: &'a Caller, power: &Power) -> Result<Option<&'a str>> {
    if power.org(OrgPermission::ManageApiKeys).is_ok() {
        return Ok(None);
    }
    Ok(Some(caller.user_id()?))
}

/// Authorizes resolving (`Authenticate`) another `key`: one of the caller's
/// own organization, or any for a platform account. Returns the caller's
/// power when the key is of its organization.
pub async fn may_resolve_key<C: Reads>(
    conn: &C,
    caller: &Caller,
    key: &ResolvedKey,
) -> Result<Option<Power>> {
    if key.organization_id() == caller.key.organization_id() {
        return Ok(Some(power(conn, caller, key.organization_id()).await?));
    }
    platform(conn, caller, PlatformPower::ResolveKeys)
        .await
        .map_err(|_| {
            Error::PermissionDenied("the api key belongs to another organization".into())
        })?;
    Ok(None)
}

/// Authorizes showing the workspace a resolved key acts in: a caller whose
/// key is limited to workspaces sees only keys acting in them.
pub fn may_see_resolved(power: Option<&Power>, ws: Option<&workspace::Model>) -> Result<()> {
    match power {
        Some(power)
            if !power.reach.is_whole_organization()
                && !ws.is_some_and(|ws| power.reach.includes(&ws.id)) =>
        {
            Err(Error::PermissionDenied(
                "the calling key is limited to workspaces: it may resolve only keys acting in them (name one with tenant_id)".into(),
            ))
        }
        _ => Ok(()),
    }
}

/// Decides the plan a new organization may start on: any when self-hosted;
/// in `saas` mode only the personal plan, since plans are the platform's to set.
pub fn may_start_on(mode: DeploymentMode, plan: Plan) -> Result<()> {
    if mode == DeploymentMode::Saas && plan != Plan::Personal {
        return Err(Error::PermissionDenied(
            "plan: in saas mode an organization starts on the personal plan; plans are set by the platform (UpdateOrganization by a platform account)".into(),
        ));
    }
    Ok(())
}

/// What of a user the caller may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserView {
    /// Everything: the user themself, or a platform account.
    Full,
    /// Everything but the identity-provider subject: another member of the
    /// caller's organization, for those who may view members.
    WithoutSubject,
}

/// Authorizes reading user `user_id`. Users outside the caller's
/// organization are not found, whether they exist or not.
pub async fn may_read_user<C: Reads>(conn: &C, caller: &Caller, user_id: &str) -> Result<UserView> {
    if caller.principal == PrincipalId::User(user_id.to_owned()) {
        calling_user(conn, caller).await?;
        return Ok(UserView::Full);
    }
    if platform(conn, caller, PlatformPower::ReadUsers)
        .await
        .is_ok()
    {
        return Ok(UserView::Full);
    }
    let org_id = caller.key.organization_id();
    org(conn, caller, org_id, OrgPermission::ViewMembers).await?;
    if identity::membership(conn, org_id, user_id).await?.is_none() {
        return Err(Error::NotFound(format!(
            "user `{user_id}` is not a member of your organization"
        )));
    }
    Ok(UserView::WithoutSubject)
}
