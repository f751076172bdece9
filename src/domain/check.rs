//! The check path: resolve the principal and the workspace, authorize the
//! caller to ask ([`authorize::check_caller`], on the cached key and the
//! workspace's organization, before anything about the principal is loaded or
//! cached), take the resolved set from the cache (or load it once), and decide
//! with a bit test; tags are looked at only when a scoped grant could decide.
//!
//! Tags: a registered resource's tags are authoritative. Inline tags (checked
//! by the same rules as registered ones) apply only to a resource that is not
//! registered or is sent without an id, so a caller cannot widen what the
//! registered tags say.

use std::{collections::HashMap, sync::Arc};

use super::{
    access::{self, role_permissions, scope_from_json},
    authorize,
    resources::tags_from_json,
    rules,
};
use crate::{
    auth::{Caller, PrincipalId, caller::resolve_key},
    authz::{
        OrgRole,
        cache::{
            Id, LoadError, PrincipalKind, ResolvedSet, SetKey, Verdict, WorkspacePlace, parse_id,
        },
        catalogue::Catalogue,
        engine::{EffectiveGrant, Scope, live_at},
    },
    clock::rfc3339,
    error::{Error, Result},
    state::AppState,
    store::{identity, keys, workspaces},
};

/// Who a check is about.
#[derive(Clone, Debug)]
pub enum CheckPrincipal {
    User(String),
    ServiceAccount(String),
    /// Authenticate this key and check its principal, within the key's limits.
    ApiKey(String),
}

/// The resource acted on.
#[derive(Clone, Debug, Default)]
pub struct Resource {
    /// Empty, or the permission's resource type.
    pub resource_type: String,
    pub id: String,
    /// Inline tags, for a resource that is not registered.
    pub tags: Vec<(String, String)>,
}

/// One question.
#[derive(Clone, Debug, Default)]
pub struct CheckInput {
    pub principal: Option<CheckPrincipal>,
    /// Empty: the caller's `x-tenant-id`.
    pub workspace_id: String,
    pub permission: String,
    pub resource: Resource,
    pub at_least_revision: u64,
}

/// An answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The storage revision the answer reflects.
    pub revision: u64,
}

/// What a check is evaluated against.
pub struct Subject {
    pub set: Arc<ResolvedSet>,
    pub principal: PrincipalId,
    pub workspace_id: String,
    /// Set when the principal came from a key outside whose limits the workspace lies.
    pub outside_key_limits: Option<&'static str>,
    /// Set when the principal's key could not be authenticated.
    pub bad_key: Option<String>,
    /// The principal is a platform account the caller may not see: it is
    /// answered as an account that does not exist.
    pub hidden: bool,
}

async fn catalogue_of(state: &AppState, org: u128, org_id: &str) -> Result<Arc<Catalogue>> {
    if let Some(c) = state.decisions.catalogue(org) {
        return Ok(c);
    }
    let epoch = state.decisions.epoch();
    let c = Arc::new(access::catalogue(state.store.db(), org_id).await?);
    state.decisions.put_catalogue(org, c.clone(), epoch);
    Ok(c)
}

/// Where a workspace lives, found just before a load, with the cache epoch
/// read before it: the load uses it instead of reading it again while no
/// change has been applied since (a change bumps the epoch).
#[derive(Clone)]
struct KnownWorkspace {
    epoch: u64,
    place: Arc<WorkspacePlace>,
}

/// Where `workspace_id` lives, from the cache or storage (and then cached);
/// `None` for a workspace that does not exist or whose stored organization
/// id does not parse (fails closed).
async fn workspace_place(
    state: &AppState,
    id: Id,
    workspace_id: &str,
) -> Result<Option<Arc<WorkspacePlace>>> {
    if let Some(place) = state.decisions.workspace(&id) {
        return Ok(Some(place));
    }
    let epoch = state.decisions.epoch();
    let Some(row) = identity::workspace(state.store.db(), workspace_id).await? else {
        return Ok(None);
    };
    let Some(organization) = parse_id(&row.organization_id) else {
        return Ok(None);
    };
    let place = Arc::new(WorkspacePlace {
        id: row.id,
        organization,
        organization_id: row.organization_id,
    });
    state.decisions.put_workspace(id, place.clone(), epoch);
    Ok(Some(place))
}

/// The revision a set loaded now is tagged with: at least as old as what
/// the load reads. The revision this replica has applied is such a bound
/// (storage holds every change up to it) and costs no query; storage is
/// asked only when the caller wants a newer one (`at_least_revision`,
/// typically a change made through another replica).
async fn load_revision(state: &AppState, at_least_revision: u64) -> Result<u64> {
    let applied = state.applied_revision();
    if at_least_revision <= applied {
        Ok(applied)
    } else {
        Ok(state.store.revision().await?)
    }
}

/// Loads the resolved set of a principal in a workspace from storage.
async fn load_set(
    state: &AppState,
    principal: &PrincipalId,
    workspace_id: &str,
    at_least_revision: u64,
    known: Option<KnownWorkspace>,
) -> Result<ResolvedSet> {
    // Read first: everything loaded after it is at least this fresh.
    let revision = load_revision(state, at_least_revision).await?;
    let place = match known {
        Some(known) if known.epoch == state.decisions.epoch() => Some(known.place),
        _ => match parse_id(workspace_id) {
            Some(id) => workspace_place(state, id, workspace_id).await?,
            None => None,
        },
    };
    // Unknown, or stored data that does not parse: no organization, nothing allowed.
    let Some(ws) = place else {
        return Ok(ResolvedSet::nothing(revision));
    };
    let org = ws.organization;
    let catalogue = catalogue_of(state, org, &ws.organization_id).await?;
    let held = access::held(
        &state.store,
        &catalogue,
        (&ws.organization_id, &ws.id),
        principal,
        state.settings.clock.now_ms(),
    )
    .await?;
    let mut set = ResolvedSet::new(revision, Some(org), held.role, held.access, catalogue);
    set.platform_principal = held.platform;
    Ok(set)
}

fn set_key(principal: &PrincipalId, workspace_id: &str) -> Option<SetKey> {
    let (kind, id) = match principal {
        PrincipalId::User(id) => (PrincipalKind::User, id),
        PrincipalId::ServiceAccount(id) => (PrincipalKind::ServiceAccount, id),
    };
    Some(SetKey {
        kind,
        principal: parse_id(id)?,
        workspace: parse_id(workspace_id)?,
    })
}

/// The resolved set of `principal` in `workspace_id`, from the cache when it
/// is fresh enough, else loaded once and cached. Only for callers already
/// authorized to ask.
async fn resolved_set(
    state: &AppState,
    key: SetKey,
    principal: &PrincipalId,
    workspace_id: &str,
    at_least_revision: u64,
    known: Option<KnownWorkspace>,
) -> Result<Arc<ResolvedSet>> {
    for _ in 0..3 {
        match state
            .decisions
            .get_or_load(
                key,
                at_least_revision,
                load_set(
                    state,
                    principal,
                    workspace_id,
                    at_least_revision,
                    known.clone(),
                ),
            )
            .await
        {
            // A shared load that began before the asked-for revision, or
            // one of whose grants has expired since it was read: load again.
            Ok(set) if set.revision < at_least_revision => continue,
            Ok(set) if set.expired_at(state.settings.clock.now_ms()) => continue,
            Ok(set) => return Ok(set),
            Err(LoadError::Raced) => continue,
            Err(LoadError::Failed(e)) => return Err(e),
        }
    }
    // Changes keep racing the load: answer from a fresh, uncached load.
    let set = Arc::new(load_set(state, principal, workspace_id, at_least_revision, None).await?);
    check_fresh(set, at_least_revision)
}

/// The resolved set of `principal` in `workspace_id` for a caller authorized
/// to ask about it. A cached set is authorized on the organization it holds;
/// otherwise the caller is authorized on the workspace's organization before
/// anything is loaded, so an unauthorized caller leaves nothing in any cache.
async fn authorized_set(
    state: &AppState,
    caller: &Caller,
    principal: &PrincipalId,
    workspace_id: &str,
    at_least_revision: u64,
) -> Result<Arc<ResolvedSet>> {
    // Ids are canonical by the time they get here (the codec and the
    // metadata parser refuse other spellings); anything else names nothing.
    let key = set_key(principal, workspace_id)
        .ok_or_else(|| authorize::unreachable_workspace(workspace_id))?;
    if let Some(set) = state.decisions.get(&key, at_least_revision) {
        let org = set
            .organization
            .ok_or_else(|| authorize::unreachable_workspace(workspace_id))?;
        authorize::check_caller(state, caller, org, workspace_id, principal).await?;
        return Ok(set);
    }
    let epoch = state.decisions.epoch();
    let place = workspace_place(state, key.workspace, workspace_id)
        .await?
        .ok_or_else(|| authorize::unreachable_workspace(workspace_id))?;
    let org = place.organization;
    authorize::check_caller(state, caller, org, workspace_id, principal).await?;
    let known = Some(KnownWorkspace { epoch, place });
    let set = resolved_set(
        state,
        key,
        principal,
        workspace_id,
        at_least_revision,
        known,
    )
    .await?;
    if set.organization != Some(org) {
        // The workspace went away while loading.
        return Err(authorize::unreachable_workspace(workspace_id));
    }
    Ok(set)
}

/// The resolved set of `principal` in `workspace_id`, cached or loaded,
/// with no authorization of its own: for code that has already decided the
/// caller may ask (and for benchmarks of the cold path).
pub async fn resolved_set_for_authorized_caller(
    state: &AppState,
    principal: &PrincipalId,
    workspace_id: &str,
    at_least_revision: u64,
) -> Result<Arc<ResolvedSet>> {
    let key = set_key(principal, workspace_id)
        .ok_or_else(|| authorize::unreachable_workspace(workspace_id))?;
    resolved_set(state, key, principal, workspace_id, at_least_revision, None).await
}

fn check_fresh(set: Arc<ResolvedSet>, at_least_revision: u64) -> Result<Arc<ResolvedSet>> {
    if set.revision < at_least_revision {
        return Err(Error::FailedPrecondition(format!(
            "at_least_revision {at_least_revision} is ahead of storage (latest revision is {})",
            set.revision
        )));
    }
    Ok(set)
}

/// Validates the resource of a question about `permission`: its type is
/// the permission's, its id and inline tags follow the registration rules.
fn check_resource(permission: &str, resource: &Resource) -> Result<()> {
    if !resource.resource_type.is_empty() {
        rules::resource_type_of(permission, &resource.resource_type)?;
    }
    if !resource.id.is_empty() {
        rules::resource_id("resource.id", &resource.id)?;
    }
    rules::check_tags("resource.tags", &resource.tags)
}

/// The workspace of a question that names none: the caller's `x-tenant-id`,
/// else its key's default workspace (a personal access token's user's
/// default workspace, or the one workspace a service key is limited to), as
/// for every other call. The caller's power there is decided afterwards like
/// for a named workspace.
pub async fn implied_workspace(state: &AppState, caller: &Caller) -> Result<String> {
    if let Some(tenant) = &caller.tenant {
        return Ok(tenant.clone());
    }
    authorize::default_workspace_id(state.store.db(), caller)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                "workspace_id",
                "is required (or send `x-tenant-id`): this key has no default workspace",
            )
        })
}

/// Resolves who and where a check is about, and authorizes the caller.
pub async fn subject(state: &AppState, caller: &Caller, input: &CheckInput) -> Result<Subject> {
    check_resource(&input.permission, &input.resource)?;
    let mut principal_key = None;
    let principal = match &input.principal {
        None => {
            return Err(Error::invalid(
                "principal",
                "must name a user, a service account or an api key",
            ));
        }
        Some(CheckPrincipal::User(id)) if !id.is_empty() => PrincipalId::User(id.clone()),
        Some(CheckPrincipal::ServiceAccount(id)) if !id.is_empty() => {
            PrincipalId::ServiceAccount(id.clone())
        }
        Some(CheckPrincipal::ApiKey(secret)) if !secret.is_empty() => {
            match resolve_key(state, secret).await {
                Ok(key) => {
                    let principal = key.principal.clone();
                    principal_key = Some(key);
                    principal
                }
                Err(Error::Unauthenticated(reason)) => {
                    return Ok(Subject {
                        set: Arc::new(ResolvedSet::nothing(state.applied_revision())),
                        principal: PrincipalId::User(String::new()),
                        workspace_id: String::new(),
                        outside_key_limits: None,
                        bad_key: Some(reason),
                        hidden: false,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Some(_) => return Err(Error::invalid("principal", "id must not be empty")),
    };
    let workspace_id = if !input.workspace_id.is_empty() {
        input.workspace_id.clone()
    } else {
        implied_workspace(state, caller).await?
    };
    let set = authorized_set(
        state,
        caller,
        &principal,
        &workspace_id,
        input.at_least_revision,
    )
    .await?;
    let outside_key_limits = match (&principal_key, set.organization) {
        (Some(key), Some(org)) => authorize::key_principal_limit(key, org, &workspace_id),
        _ => None,
    };
    let hidden = !authorize::sees_principal(caller, set.platform_principal);
    Ok(Subject {
        set,
        principal,
        workspace_id,
        outside_key_limits,
        bad_key: None,
        hidden,
    })
}

/// The id of a permission in the set's catalogue.
pub fn permission_id(set: &ResolvedSet, permission: &str) -> Result<u16> {
    if permission
        .split_once(':')
        .is_none_or(|(t, a)| t.is_empty() || a.is_empty())
    {
        return Err(Error::invalid(
            "permission",
            "must be `<resource_type>:<action>`, e.g. `prompts:read`",
        ));
    }
    set.catalogue
        .id(permission)
        .ok_or_else(|| Error::invalid("permission", format!("unknown permission `{permission}`")))
}

/// Where the tags a decision looked at came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagSource {
    /// The resource is registered: its registered tags, whatever was sent inline.
    Registered,
    /// The resource is not registered (or was sent without an id): the inline tags.
    Inline,
}

/// The tags a decision about `permission` looks at: a registered
/// resource's own, else the inline ones (see the module doc). The resource
/// is of the permission's type.
pub async fn resource_tags(
    state: &AppState,
    workspace_id: &str,
    permission: &str,
    resource: &Resource,
) -> Result<(Arc<[(String, String)]>, TagSource)> {
    let inline = || (Arc::from(resource.tags.clone()), TagSource::Inline);
    if resource.id.is_empty() {
        return Ok(inline());
    }
    let Some(ws) = parse_id(workspace_id) else {
        return Ok(inline());
    };
    let resource_type = rules::resource_type_of(permission, &resource.resource_type)?;
    let key = (ws, resource_type.to_owned(), resource.id.clone());
    let registered = match state.decisions.resource_tags(&key) {
        Some(known) => known,
        None => {
            let epoch = state.decisions.epoch();
            let known: Option<Arc<[(String, String)]>> =
                workspaces::resource(state.store.db(), workspace_id, resource_type, &resource.id)
                    .await?
                    .map(|r| tags_from_json(&r.tags).into());
            state
                .decisions
                .put_resource_tags(key, known.clone(), epoch)
                .await;
            known
        }
    };
    Ok(match registered {
        Some(tags) => (tags, TagSource::Registered),
        None => inline(),
    })
}

/// Answers one check.
pub async fn check(state: &AppState, caller: &Caller, input: &CheckInput) -> Result<Decision> {
    let subject = subject(state, caller, input).await?;
    let set = &subject.set;
    if subject.bad_key.is_some() || subject.outside_key_limits.is_some() || subject.hidden {
        return Ok(Decision {
            allowed: false,
            revision: set.revision,
        });
    }
    let permission = permission_id(set, &input.permission)?;
    let allowed = match set.verdict(permission) {
        Verdict::Allowed => true,
        Verdict::Denied => false,
        Verdict::NeedsTags => {
            let (tags, _) = resource_tags(
                state,
                &subject.workspace_id,
                &input.permission,
                &input.resource,
            )
            .await?;
            set.access.allows(permission, &tags)
        }
    };
    tracing::Span::current().record("decision", if allowed { "allowed" } else { "denied" });
    Ok(Decision {
        allowed,
        revision: set.revision,
    })
}

/// Why a check is answered as it is.
pub struct Explanation {
    pub allowed: bool,
    pub reason: String,
    pub org_role: Option<OrgRole>,
    /// Grants that allow.
    pub matched: Vec<EffectiveGrant>,
    /// Grants whose role holds the permission but whose scope misses the resource.
    pub scope_mismatched: Vec<EffectiveGrant>,
    /// Grants that would allow but had expired when the set was resolved.
    pub expired: Vec<EffectiveGrant>,
    pub revision: u64,
}

/// Explains a check: the grants, teams and roles that allow, or what is missing.
pub async fn explain(state: &AppState, caller: &Caller, input: &CheckInput) -> Result<Explanation> {
    let subject = subject(state, caller, input).await?;
    let set = &subject.set;
    let denied = |reason: String| Explanation {
        allowed: false,
        reason,
        org_role: set.role.filter(|_| !subject.hidden),
        matched: Vec::new(),
        scope_mismatched: Vec::new(),
        expired: Vec::new(),
        revision: set.revision,
    };
    if let Some(reason) = &subject.bad_key {
        return Ok(denied(format!(
            "denied: the api key is not valid ({reason})"
        )));
    }
    if let Some(reason) = subject.outside_key_limits {
        return Ok(denied(format!("denied: {reason}")));
    }
    let permission = permission_id(set, &input.permission)?;
    let Some(role) = set.role.filter(|_| !subject.hidden) else {
        return Ok(denied(
            "denied: the principal is not a member (or service account) of the workspace's organization".into(),
        ));
    };
    let (tags, source) = resource_tags(
        state,
        &subject.workspace_id,
        &input.permission,
        &input.resource,
    )
    .await?;
    let holding: Vec<&EffectiveGrant> = set
        .access
        .grants
        .iter()
        .filter(|g| g.permissions.contains(permission))
        .collect();
    let matched: Vec<EffectiveGrant> = holding
        .iter()
        .filter(|g| g.allows(permission, &tags))
        .map(|g| (*g).clone())
        .collect();
    let scope_mismatched: Vec<EffectiveGrant> = holding
        .iter()
        .filter(|g| !g.allows(permission, &tags))
        .map(|g| (*g).clone())
        .collect();
    let expired: Vec<EffectiveGrant> = set
        .access
        .expired
        .iter()
        .filter(|g| g.allows(permission, &tags))
        .cloned()
        .collect();
    let allowed = role == OrgRole::Admin || !matched.is_empty();
    let reason = if role == OrgRole::Admin {
        "allowed: ORG_ADMIN is admin of every workspace of the organization".to_owned()
    } else if let Some(g) = matched.first() {
        match &g.via_team {
            Some(team) => format!(
                "allowed: grant `{}` of team `{team}` with role `{}`",
                g.grant_id, g.role
            ),
            None => format!("allowed: grant `{}` with role `{}`", g.grant_id, g.role),
        }
    } else if let Some(g) = expired.first() {
        let through = g
            .via_team
            .as_ref()
            .map(|team| format!(" of team `{team}`"))
            .unwrap_or_default();
        format!(
            "denied: grant `{}`{through} with role `{}` expired at {}",
            g.grant_id,
            g.role,
            g.expires_at.map(rfc3339).unwrap_or_default()
        )
    } else if !scope_mismatched.is_empty() {
        format!(
            "denied: {} grant(s) hold `{}` but their scope does not match the resource's {} tags",
            scope_mismatched.len(),
            input.permission,
            match source {
                TagSource::Registered => "registered",
                TagSource::Inline => "inline",
            }
        )
    } else {
        format!(
            "denied: no grant of the principal in this workspace holds `{}`",
            input.permission
        )
    };
    Ok(Explanation {
        allowed,
        reason,
        org_role: Some(role),
        matched,
        scope_mismatched,
        expired,
        revision: set.revision,
    })
}

/// What a principal may do in a workspace, grouped by scope (`None`: every resource).
pub struct PrincipalPermissions {
    pub org_admin: bool,
    pub entries: Vec<(Option<Scope>, Vec<String>)>,
    pub revision: u64,
}

/// Lists what a principal may do in a workspace.
pub async fn list_permissions(
    state: &AppState,
    caller: &Caller,
    input: &CheckInput,
) -> Result<PrincipalPermissions> {
    let subject = subject(state, caller, input).await?;
    let set = &subject.set;
    if subject.bad_key.is_some()
        || subject.outside_key_limits.is_some()
        || subject.hidden
        || !set.active
    {
        return Ok(PrincipalPermissions {
            org_admin: false,
            entries: Vec::new(),
            revision: set.revision,
        });
    }
    if set.access.org_admin {
        let all = set
            .catalogue
            .permissions()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        return Ok(PrincipalPermissions {
            org_admin: true,
            entries: vec![(None, all)],
            revision: set.revision,
        });
    }
    let mut groups: Vec<(Option<Scope>, crate::authz::catalogue::PermissionSet)> = Vec::new();
    for g in &set.access.grants {
        match groups.iter_mut().find(|(s, _)| *s == g.scope) {
            Some((_, perms)) => perms.union_with(&g.permissions),
            None => groups.push((g.scope.clone(), g.permissions.clone())),
        }
    }
    groups.sort_by_key(|(s, _)| s.is_some());
    let entries = groups
        .into_iter()
        .map(|(scope, perms)| (scope, set.catalogue.names_of(&perms)))
        .collect();
    Ok(PrincipalPermissions {
        org_admin: false,
        entries,
        revision: set.revision,
    })
}

/// A principal that may perform a permission, and how.
pub struct SubjectMatch {
    pub principal: PrincipalId,
    /// `org_admin`, `grant` or `team:<id>`.
    pub via: String,
}

/// Who may perform `permission` on a resource in a workspace: organization
/// admins, and holders of matching grants directly or through a team.
/// Platform accounts are listed to platform callers only.
/// Asked by service keys of the organization or holders of `members:read`.
pub async fn lookup_subjects(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    permission: &str,
    resource: &Resource,
    at_least_revision: u64,
) -> Result<(Vec<SubjectMatch>, u64)> {
    check_resource(permission, resource)?;
    let conn = state.store.db();
    let ws = authorize::lookup_subjects(conn, caller, workspace_id).await?;
    let revision = state.store.revision().await?;
    if revision < at_least_revision {
        return Err(Error::FailedPrecondition(format!(
            "at_least_revision {at_least_revision} is ahead of storage (latest revision is {revision})"
        )));
    }
    let catalogue = access::catalogue(conn, &ws.organization_id).await?;
    let perm = catalogue.id(permission).ok_or_else(|| {
        Error::invalid("permission", format!("unknown permission `{permission}`"))
    })?;
    let (tags, _) = resource_tags(state, &ws.id, permission, resource).await?;
    let mut out: Vec<SubjectMatch> = Vec::new();
    let mut seen: HashMap<PrincipalId, ()> = HashMap::new();
    let mut push = |principal: PrincipalId, via: String, out: &mut Vec<SubjectMatch>| {
        if seen.insert(principal.clone(), ()).is_none() {
            out.push(SubjectMatch { principal, via });
        }
    };
    for user in
        identity::member_ids_with_role(conn, &ws.organization_id, OrgRole::Admin.as_str()).await?
    {
        push(PrincipalId::User(user), "org_admin".into(), &mut out);
    }
    let platform = authorize::is_platform(conn, caller).await?;
    for sa in keys::service_account_ids_with_role(
        conn,
        &ws.organization_id,
        OrgRole::Admin.as_str(),
        platform,
    )
    .await?
    {
        push(
            PrincipalId::ServiceAccount(sa),
            "org_admin".into(),
            &mut out,
        );
    }
    let hidden = authorize::hidden_accounts(conn, caller).await?;
    let grants = workspaces::all_grants(conn, &ws.id).await?;
    let sets = role_permissions(conn, &catalogue, &ws.organization_id, &grants).await?;
    for g in grants {
        if g.subject_type == "service_account" && hidden.contains(&g.subject_id) {
            continue;
        }
        if !live_at(g.expires_at, caller.at_ms) {
            continue;
        }
        let holds = sets.get(&g.role).is_some_and(|s| s.contains(perm));
        let in_scope = g
            .scope
            .as_deref()
            .is_none_or(|s| scope_from_json(s).matches(&tags));
        if !holds || !in_scope {
            continue;
        }
        match g.subject_type.as_str() {
            "user" => push(PrincipalId::User(g.subject_id), "grant".into(), &mut out),
            "service_account" => push(
                PrincipalId::ServiceAccount(g.subject_id),
                "grant".into(),
                &mut out,
            ),
            _ => {
                for m in crate::store::teams::team_members(conn, &g.subject_id).await? {
                    if !live_at(m.expires_at, caller.at_ms) {
                        continue;
                    }
                    push(
                        PrincipalId::User(m.user_id),
                        format!("team:{}", g.subject_id),
                        &mut out,
                    );
                }
            }
        }
    }
    Ok((out, revision))
}
