//! The check path: resolve the principal and the workspace, authorize the
//! caller to ask, take the resolved set from the cache (or load it once),
//! and decide with a bit test; tags are looked at only when a scoped grant
//! could decide.
//!
//! Who may ask: a service key of the workspace's organization (within its
//! workspace scope) — that is what backends use; a user about themself; an
//! `ORG_ADMIN` about anyone in the organization.

use std::{collections::HashMap, sync::Arc};

use super::{
    access::{self, role_permissions, scope_from_json},
    resources::tags_from_json,
};
use crate::{
    auth::{Caller, KeyScope, PrincipalId, caller::resolve_key},
    authz::{
        OrgRole,
        cache::{Id, LoadError, PrincipalKind, ResolvedSet, SetKey, Verdict, parse_id},
        catalogue::Catalogue,
        engine::{Access, EffectiveGrant, Scope},
    },
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
    pub resource_type: String,
    pub id: String,
    /// Inline tags; when empty, the registered tags of (type, id) are used.
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
}

async fn catalogue_of(state: &AppState, org: Id, org_id: &str) -> Result<Arc<Catalogue>> {
    if let Some(c) = state.decisions.catalogue(org) {
        return Ok(c);
    }
    let epoch = state.decisions.epoch();
    let c = Arc::new(access::catalogue(state.store.db(), org_id).await?);
    state.decisions.put_catalogue(org, c.clone(), epoch);
    Ok(c)
}

/// Loads the resolved set of a principal in a workspace from storage.
async fn load_set(
    state: &AppState,
    principal: &PrincipalId,
    workspace_id: &str,
) -> Result<ResolvedSet> {
    let conn = state.store.db();
    // Read first: everything loaded after it is at least this fresh.
    let revision = state.store.revision().await?;
    let Some(ws) = identity::workspace(conn, workspace_id).await? else {
        return Ok(ResolvedSet::new(
            revision,
            None,
            None,
            Access::default(),
            Arc::new(Catalogue::new([])),
        ));
    };
    let org = parse_id(&ws.organization_id).unwrap_or_default();
    let role = match principal {
        PrincipalId::User(id) => identity::membership(conn, &ws.organization_id, id)
            .await?
            .and_then(|m| OrgRole::from_db(&m.role)),
        PrincipalId::ServiceAccount(id) => keys::service_account(conn, id)
            .await?
            .filter(|s| s.organization_id == ws.organization_id)
            .and_then(|s| OrgRole::from_db(&s.role)),
    };
    let catalogue = catalogue_of(state, org, &ws.organization_id).await?;
    let access = if role.is_some() {
        access::resolve(conn, &catalogue, &ws, principal, role).await?
    } else {
        Access::default()
    };
    Ok(ResolvedSet::new(
        revision,
        Some(org),
        role,
        access,
        catalogue,
    ))
}

/// The resolved set of `principal` in `workspace_id`, from the cache when it
/// is fresh enough.
pub async fn resolved_set(
    state: &AppState,
    principal: &PrincipalId,
    workspace_id: &str,
    at_least_revision: u64,
) -> Result<Option<Arc<ResolvedSet>>> {
    let (kind, id) = match principal {
        PrincipalId::User(id) => (PrincipalKind::User, id),
        PrincipalId::ServiceAccount(id) => (PrincipalKind::ServiceAccount, id),
    };
    let (Some(principal_id), Some(workspace)) = (parse_id(id), parse_id(workspace_id)) else {
        // Not a UUID: names nothing Portcullis issued.
        return Ok(None);
    };
    let key = SetKey {
        kind,
        principal: principal_id,
        workspace,
    };
    for _ in 0..3 {
        match state
            .decisions
            .get_or_load(
                key,
                at_least_revision,
                load_set(state, principal, workspace_id),
            )
            .await
        {
            // A shared load that began before the asked-for revision: load again.
            Ok(set) if set.revision < at_least_revision => continue,
            Ok(set) => return Ok(Some(set)),
            Err(LoadError::Raced) => continue,
            Err(LoadError::Failed(e)) => return Err(e),
        }
    }
    // Changes keep racing the load: answer from a fresh, uncached load.
    let set = Arc::new(load_set(state, principal, workspace_id).await?);
    check_fresh(set, at_least_revision).map(Some)
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

fn id_string(id: Id) -> String {
    uuid::Uuid::from_u128(id).hyphenated().to_string()
}

/// Checks that the caller may ask about `principal` in a workspace of `org`.
async fn authorize_caller(
    state: &AppState,
    caller: &Caller,
    org: Id,
    workspace_id: &str,
    principal: &PrincipalId,
) -> Result<()> {
    let is_self = caller.principal == *principal;
    if caller.acting_service_account_id.is_some() {
        if is_self {
            return Ok(());
        }
        let role = caller.org_role(&state.store, &id_string(org)).await?;
        if role == OrgRole::Admin {
            return Ok(());
        }
        return Err(Error::PermissionDenied(
            "a user may check only their own access; ORG_ADMIN may check anyone's".into(),
        ));
    }
    if caller.key.ids.organization != org {
        return Err(Error::PermissionDenied(
            "the workspace belongs to another organization than the calling key".into(),
        ));
    }
    if let KeyScope::Workspaces(allowed) = &caller.key.scope
        && !allowed.iter().any(|w| w == workspace_id)
    {
        return Err(Error::PermissionDenied(format!(
            "the calling service key is not scoped to workspace `{workspace_id}`"
        )));
    }
    match &caller.principal {
        PrincipalId::ServiceAccount(_) => Ok(()),
        PrincipalId::User(_) if is_self || caller.key.org_role == OrgRole::Admin => Ok(()),
        PrincipalId::User(_) => Err(Error::PermissionDenied(
            "a user may check only their own access; ORG_ADMIN may check anyone's, and backends use a service key"
                .into(),
        )),
    }
}

/// Resolves who and where a check is about, and authorizes the caller.
pub async fn subject(
    state: &AppState,
    caller: &Caller,
    input: &CheckInput,
) -> Result<Option<Subject>> {
    let mut outside_key_limits = None;
    let mut key_org = None;
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
                    key_org = Some((key.ids.organization, key.scope.clone()));
                    key.principal.clone()
                }
                Err(Error::Unauthenticated(reason)) => {
                    return Ok(Some(Subject {
                        set: Arc::new(ResolvedSet::new(
                            state.applied_revision(),
                            None,
                            None,
                            Access::default(),
                            Arc::new(Catalogue::new([])),
                        )),
                        principal: PrincipalId::User(String::new()),
                        workspace_id: String::new(),
                        outside_key_limits: None,
                        bad_key: Some(reason),
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        Some(_) => return Err(Error::invalid("principal", "id must not be empty")),
    };
    let workspace_id = if !input.workspace_id.is_empty() {
        input.workspace_id.clone()
    } else if let Some(tenant) = &caller.tenant {
        tenant.clone()
    } else {
        return Err(Error::invalid(
            "workspace_id",
            "is required (or send `x-tenant-id`)",
        ));
    };
    let Some(set) = resolved_set(state, &principal, &workspace_id, input.at_least_revision).await?
    else {
        return Err(Error::NotFound(format!(
            "workspace `{workspace_id}` not found"
        )));
    };
    let Some(org) = set.organization else {
        return Err(Error::NotFound(format!(
            "workspace `{workspace_id}` not found"
        )));
    };
    authorize_caller(state, caller, org, &workspace_id, &principal).await?;
    if let Some((key_org, scope)) = key_org {
        if key_org != org {
            outside_key_limits = Some("the principal's api key belongs to another organization");
        } else if let KeyScope::Workspaces(allowed) = scope
            && !allowed.contains(&workspace_id)
        {
            outside_key_limits =
                Some("the principal's service key is not scoped to this workspace");
        }
    }
    Ok(Some(Subject {
        set,
        principal,
        workspace_id,
        outside_key_limits,
        bad_key: None,
    }))
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

/// The tags a decision looks at: inline, else registered, else none.
pub async fn resource_tags(
    state: &AppState,
    workspace_id: &str,
    resource: &Resource,
) -> Result<Arc<[(String, String)]>> {
    if !resource.tags.is_empty() || resource.id.is_empty() {
        return Ok(resource.tags.clone().into());
    }
    let Some(ws) = parse_id(workspace_id) else {
        return Ok(Arc::from([]));
    };
    let key = (ws, resource.resource_type.clone(), resource.id.clone());
    if let Some(tags) = state.decisions.resource_tags(&key) {
        return Ok(tags);
    }
    let epoch = state.decisions.epoch();
    let tags: Arc<[(String, String)]> = workspaces::resource(
        state.store.db(),
        workspace_id,
        &resource.resource_type,
        &resource.id,
    )
    .await?
    .map(|r| tags_from_json(&r.tags))
    .unwrap_or_default()
    .into();
    state
        .decisions
        .put_resource_tags(key, tags.clone(), epoch)
        .await;
    Ok(tags)
}

/// Answers one check.
pub async fn check(state: &AppState, caller: &Caller, input: &CheckInput) -> Result<Decision> {
    let Some(subject) = subject(state, caller, input).await? else {
        return Ok(Decision {
            allowed: false,
            revision: state.applied_revision(),
        });
    };
    let set = &subject.set;
    if subject.bad_key.is_some() || subject.outside_key_limits.is_some() {
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
            let tags = resource_tags(state, &subject.workspace_id, &input.resource).await?;
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
    pub revision: u64,
}

/// Explains a check: the grants, teams and roles that allow, or what is missing.
pub async fn explain(state: &AppState, caller: &Caller, input: &CheckInput) -> Result<Explanation> {
    let subject = subject(state, caller, input).await?;
    let Some(subject) = subject else {
        return Err(Error::NotFound("the workspace does not exist".into()));
    };
    let set = &subject.set;
    let denied = |reason: String| Explanation {
        allowed: false,
        reason,
        org_role: set.role,
        matched: Vec::new(),
        scope_mismatched: Vec::new(),
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
    let Some(role) = set.role else {
        return Ok(denied(
            "denied: the principal is not a member (or service account) of the workspace's organization".into(),
        ));
    };
    let tags = resource_tags(state, &subject.workspace_id, &input.resource).await?;
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
    } else if !scope_mismatched.is_empty() {
        format!(
            "denied: {} grant(s) hold `{}` but their scope does not match the resource's tags",
            scope_mismatched.len(),
            input.permission
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
    let Some(subject) = subject else {
        return Err(Error::NotFound("the workspace does not exist".into()));
    };
    let set = &subject.set;
    if subject.bad_key.is_some() || subject.outside_key_limits.is_some() || !set.active {
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
/// Asked by service keys of the organization or holders of `members:read`.
pub async fn lookup_subjects(
    state: &AppState,
    caller: &Caller,
    workspace_id: &str,
    permission: &str,
    resource: &Resource,
    at_least_revision: u64,
) -> Result<(Vec<SubjectMatch>, u64)> {
    let ws = caller.workspace(&state.store, workspace_id).await?;
    if !matches!(caller.principal, PrincipalId::ServiceAccount(_))
        || caller.acting_service_account_id.is_some()
    {
        access::authorize_workspace(state, caller, &ws, "members:read").await?;
    }
    let conn = state.store.db();
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
    let tags = resource_tags(state, &ws.id, resource).await?;
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
    for sa in
        keys::service_account_ids_with_role(conn, &ws.organization_id, OrgRole::Admin.as_str())
            .await?
    {
        push(
            PrincipalId::ServiceAccount(sa),
            "org_admin".into(),
            &mut out,
        );
    }
    let grants = workspaces::all_grants(conn, &ws.id).await?;
    let sets = role_permissions(conn, &catalogue, &grants).await?;
    for g in grants {
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
                for user in crate::store::teams::team_member_ids(conn, &g.subject_id).await? {
                    push(
                        PrincipalId::User(user),
                        format!("team:{}", g.subject_id),
                        &mut out,
                    );
                }
            }
        }
    }
    Ok((out, revision))
}
