//! Loading what a principal holds in a workspace, and authorizing workspace
//! actions with the check engine. The same evaluation answers Check.

use std::collections::HashMap;

use sea_orm::ConnectionTrait;

use crate::{
    auth::{Caller, PrincipalId},
    authz::{
        OrgRole,
        catalogue::{Catalogue, PermissionSet, SystemRole},
        engine::{Access, EffectiveGrant, Scope, TagCondition},
    },
    error::{Error, Result},
    state::AppState,
    store::{
        StoreResult,
        entity::{grant, workspace},
        roles, workspaces,
    },
};

/// The catalogue of an organization: built-in types and its own.
pub async fn catalogue<C: ConnectionTrait>(conn: &C, org_id: &str) -> StoreResult<Catalogue> {
    let types = roles::resource_types(conn, org_id).await?;
    let parsed: Vec<(String, Vec<String>)> = types
        .into_iter()
        .map(|t| {
            let actions = serde_json::from_str(&t.actions).unwrap_or_default();
            (t.name, actions)
        })
        .collect();
    Ok(Catalogue::new(
        parsed.iter().map(|(n, a)| (n.as_str(), a.as_slice())),
    ))
}

/// The subjects through which a principal holds grants: itself and, for a
/// user, the teams they are in.
pub async fn subjects_of<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    principal: &PrincipalId,
) -> StoreResult<Vec<(&'static str, String)>> {
    Ok(match principal {
        PrincipalId::User(id) => {
            let mut subjects = vec![("user", id.clone())];
            for team in workspaces::team_ids_of_user(conn, org_id, id).await? {
                subjects.push(("team", team));
            }
            subjects
        }
        PrincipalId::ServiceAccount(id) => vec![("service_account", id.clone())],
    })
}

/// Encodes a scope for storage.
pub fn scope_to_json(scope: &Scope) -> String {
    let conditions: Vec<serde_json::Value> = scope
        .conditions
        .iter()
        .map(|c| serde_json::json!({ "key": c.key, "values": c.values }))
        .collect();
    serde_json::json!({ "conditions": conditions }).to_string()
}

/// Decodes a stored scope.
pub fn scope_from_json(json: &str) -> Scope {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let conditions = value["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| TagCondition {
                    key: c["key"].as_str().unwrap_or_default().to_owned(),
                    values: c["values"]
                        .as_array()
                        .map(|vs| {
                            vs.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Scope { conditions }
}

/// The permission sets of the roles grants name: system roles from the
/// catalogue, custom roles from storage.
pub async fn role_permissions<C: ConnectionTrait>(
    conn: &C,
    catalogue: &Catalogue,
    grants: &[grant::Model],
) -> StoreResult<HashMap<String, PermissionSet>> {
    let mut sets = HashMap::new();
    let mut custom = Vec::new();
    for g in grants {
        if sets.contains_key(&g.role) {
            continue;
        }
        match SystemRole::parse(&g.role) {
            Some(role) => {
                sets.insert(g.role.clone(), catalogue.system_role(role));
            }
            None => custom.push(g.role.clone()),
        }
    }
    custom.sort();
    custom.dedup();
    for role in roles::roles_by_ids(conn, &custom).await? {
        let names: Vec<String> = serde_json::from_str(&role.permissions).unwrap_or_default();
        let mut set = PermissionSet::default();
        for id in names.iter().filter_map(|n| catalogue.id(n)) {
            set.insert(id);
        }
        sets.insert(role.id, set);
    }
    Ok(sets)
}

/// Loads what `principal` holds in `workspace`.
pub async fn resolve<C: ConnectionTrait>(
    conn: &C,
    catalogue: &Catalogue,
    ws: &workspace::Model,
    principal: &PrincipalId,
    org_role: Option<OrgRole>,
) -> StoreResult<Access> {
    let grants = match principal {
        PrincipalId::User(id) => {
            workspaces::grants_reaching_user(conn, &ws.organization_id, &ws.id, id).await?
        }
        PrincipalId::ServiceAccount(id) => {
            workspaces::grants_of_subjects(conn, &ws.id, &[("service_account", id.as_str())])
                .await?
        }
    };
    let sets = role_permissions(conn, catalogue, &grants).await?;
    let grants = grants
        .into_iter()
        .filter_map(|g| {
            let permissions = sets.get(&g.role)?.clone();
            Some(EffectiveGrant {
                via_team: (g.subject_type == "team").then(|| g.subject_id.clone()),
                scope: g.scope.as_deref().map(scope_from_json),
                grant_id: g.id,
                role: g.role,
                permissions,
            })
        })
        .collect();
    Ok(Access {
        org_admin: org_role == Some(OrgRole::Admin),
        grants,
    })
}

/// Authorizes a workspace-level action of the caller: `ORG_ADMIN`, or an
/// unscoped grant whose role holds `permission`.
pub async fn authorize_workspace(
    state: &AppState,
    caller: &Caller,
    ws: &workspace::Model,
    permission: &str,
) -> Result<()> {
    let org_role = caller.org_role(&state.store, &ws.organization_id).await?;
    if org_role == OrgRole::Admin {
        return Ok(());
    }
    let conn = state.store.db();
    let catalogue = catalogue(conn, &ws.organization_id).await?;
    let id = catalogue
        .id(permission)
        .ok_or_else(|| Error::FailedPrecondition(format!("unknown permission `{permission}`")))?;
    let access = resolve(conn, &catalogue, ws, &caller.principal, Some(org_role)).await?;
    if access.allows(id, &[]) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "missing permission `{permission}` in workspace `{}`",
        ws.key
    )))
}
