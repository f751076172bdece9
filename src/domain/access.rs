//! Loading what a principal holds in a workspace: the catalogue, the grants
//! that reach it and their roles' permissions. Check and the authorization of
//! workspace actions (`authorize`) evaluate the same loaded data.

use std::collections::HashMap;

use sea_orm::ConnectionTrait;

use crate::{
    auth::PrincipalId,
    authz::{
        OrgRole,
        catalogue::{Catalogue, PermissionSet, SystemRole},
        engine::{Access, EffectiveGrant, Scope, TagCondition, live_at},
    },
    store::{
        Store, StoreResult,
        entity::grant,
        roles,
        standing::{HeldGrant, PrincipalTable, Standing, standings},
        workspaces,
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

/// The subjects through which a principal holds grants at instant
/// `now_ms`: itself and, for a user, the teams they are in then.
pub async fn subjects_of<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    principal: &PrincipalId,
    now_ms: i64,
) -> StoreResult<Vec<(&'static str, String)>> {
    Ok(match principal {
        PrincipalId::User(id) => {
            let mut subjects = vec![("user", id.clone())];
            for m in workspaces::memberships_of_user(conn, org_id, id).await? {
                if live_at(m.expires_at, now_ms) {
                    subjects.push(("team", m.team_id));
                }
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

/// Decodes a stored scope. A scope that does not parse matches nothing: a
/// damaged scoped grant must not become a grant on every resource.
pub fn scope_from_json(json: &str) -> Scope {
    let parsed: Option<Vec<TagCondition>> = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|value| {
            value["conditions"]
                .as_array()?
                .iter()
                .map(|c| {
                    let key = c["key"].as_str().filter(|k| !k.is_empty())?.to_owned();
                    let values = c["values"]
                        .as_array()?
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<String>>>()
                        .filter(|vs| !vs.is_empty())?;
                    Some(TagCondition { key, values })
                })
                .collect()
        });
    match parsed {
        Some(conditions) if !conditions.is_empty() => Scope { conditions },
        _ => Scope::nothing(),
    }
}

/// The permission sets of the roles grants of organization `org_id` name:
/// system roles from the catalogue, custom roles of that organization from
/// storage (a role of another organization grants nothing).
pub async fn role_permissions<C: ConnectionTrait>(
    conn: &C,
    catalogue: &Catalogue,
    org_id: &str,
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
    for role in roles::roles_by_ids(conn, org_id, &custom).await? {
        sets.insert(role.id, custom_permissions(catalogue, &role.permissions));
    }
    Ok(sets)
}

/// The permissions a custom role stores (a JSON list of names), as known to
/// the catalogue; stored data that does not parse grants nothing.
fn custom_permissions(catalogue: &Catalogue, json: &str) -> PermissionSet {
    let names: Vec<String> = serde_json::from_str(json).unwrap_or_default();
    let mut set = PermissionSet::default();
    for id in names.iter().filter_map(|n| catalogue.id(n)) {
        set.insert(id);
    }
    set
}

/// The permissions of one role a grant in organization `org_id` may name: a
/// system role's from the catalogue, a custom role's of that organization
/// from storage (none if it does not exist there).
pub async fn permissions_of_role<C: ConnectionTrait>(
    conn: &C,
    catalogue: &Catalogue,
    org_id: &str,
    role_id: &str,
) -> StoreResult<PermissionSet> {
    if let Some(role) = SystemRole::parse(role_id) {
        return Ok(catalogue.system_role(role));
    }
    Ok(roles::roles_by_ids(conn, org_id, &[role_id.to_owned()])
        .await?
        .first()
        .map(|role| custom_permissions(catalogue, &role.permissions))
        .unwrap_or_default())
}

/// What a principal holds in a workspace, for the check path.
#[derive(Default)]
pub struct Held {
    /// Its organization role; `None` when it is not a member (or an account)
    /// of the organization, or its stored role does not parse.
    pub role: Option<OrgRole>,
    /// It is a platform account.
    pub platform: bool,
    /// Its grants there (none without a role: fails closed).
    pub access: Access,
}

/// Where a principal's standing is read, and its id.
fn principal_table(principal: &PrincipalId) -> (PrincipalTable, &str) {
    match principal {
        PrincipalId::User(id) => (PrincipalTable::User, id),
        PrincipalId::ServiceAccount(id) => (PrincipalTable::ServiceAccount, id),
    }
}

/// The instant a grant stops reaching its holder: its own expiry or, held
/// through a team, the membership's, whichever comes first.
fn reach_expiry(grant: Option<i64>, membership: Option<i64>) -> Option<i64> {
    match (grant, membership) {
        (Some(g), Some(m)) => Some(g.min(m)),
        (g, m) => g.or(m),
    }
}

/// The grants of a standing as the engine evaluates them; a grant naming a
/// custom role that does not exist in the organization grants nothing.
fn effective_grants(catalogue: &Catalogue, grants: Vec<HeldGrant>) -> Vec<EffectiveGrant> {
    grants
        .into_iter()
        .filter_map(|g| {
            let permissions = match SystemRole::parse(&g.role) {
                Some(system) => catalogue.system_role(system),
                None => custom_permissions(catalogue, g.custom_permissions.as_deref()?),
            };
            let HeldGrant {
                id,
                subject_type,
                subject_id,
                role,
                scope,
                expires_at,
                membership_expires_at,
                ..
            } = g;
            Some(EffectiveGrant {
                expires_at: reach_expiry(expires_at, membership_expires_at),
                via_team: (subject_type == "team").then_some(subject_id),
                scope: scope.as_deref().map(scope_from_json),
                grant_id: id,
                role,
                permissions,
            })
        })
        .collect()
}

/// Loads what `principal` holds in a workspace (`(organization id,
/// workspace id)`) at instant `now_ms` in one round trip, shared with
/// concurrent misses: its standing in the organization and the grants
/// reaching it there, with their custom roles.
pub async fn held(
    store: &Store,
    catalogue: &Catalogue,
    (organization_id, workspace_id): (&str, &str),
    principal: &PrincipalId,
    now_ms: i64,
) -> StoreResult<Held> {
    let (table, id) = principal_table(principal);
    let standing = store
        .standing(table, (organization_id, id, workspace_id))
        .await?;
    let Some(Standing {
        role,
        platform,
        grants,
    }) = standing
    else {
        return Ok(Held::default());
    };
    let Some(role) = OrgRole::from_db(&role) else {
        // Nothing allowed, but a platform account stays one (and stays hidden).
        return Ok(Held {
            platform,
            ..Held::default()
        });
    };
    Ok(Held {
        role: Some(role),
        platform,
        access: Access::at(
            role == OrgRole::Admin,
            effective_grants(catalogue, grants),
            now_ms,
        ),
    })
}

/// Loads what `principal` holds in a workspace (`(organization id,
/// workspace id)`) at instant `now_ms` through `conn` (a change's
/// transaction, say), under `org_role`, the organization role its caller
/// acts with: the same statement as a miss, alone. A principal that is no
/// member or account of the organization holds nothing.
pub async fn resolve<C: ConnectionTrait>(
    conn: &C,
    catalogue: &Catalogue,
    (organization_id, workspace_id): (&str, &str),
    principal: &PrincipalId,
    org_role: Option<OrgRole>,
    now_ms: i64,
) -> StoreResult<Access> {
    let (table, id) = principal_table(principal);
    let wanted = (
        organization_id.to_owned(),
        id.to_owned(),
        workspace_id.to_owned(),
    );
    let grants = standings(conn, table, &[wanted])
        .await?
        .pop()
        .flatten()
        .map(|standing| effective_grants(catalogue, standing.grants))
        .unwrap_or_default();
    Ok(Access::at(org_role == Some(OrgRole::Admin), grants, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_damaged_ones_match_nothing() {
        let scope = Scope {
            conditions: vec![TagCondition {
                key: "Environment".into(),
                values: vec!["prod".into()],
            }],
        };
        assert_eq!(scope_from_json(&scope_to_json(&scope)), scope);
        let prod = [("Environment".to_owned(), "prod".to_owned())];
        for damaged in [
            "",
            "{",
            "{}",
            r#"{"conditions": []}"#,
            r#"{"conditions": [{"key": "Environment"}]}"#,
            r#"{"conditions": [{"key": "", "values": ["prod"]}]}"#,
            r#"{"conditions": [{"key": "Environment", "values": []}]}"#,
            r#"{"conditions": [{"key": "Environment", "values": [1]}]}"#,
        ] {
            assert!(
                !scope_from_json(damaged).matches(&prod),
                "{damaged:?} must match nothing"
            );
        }
    }
}
