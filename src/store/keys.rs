//! Repository functions for service accounts and API keys.

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, IdenStatic,
    IntoActiveModel, Iterable, JoinType, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    SelectTwo,
    sea_query::{Alias, Expr, LockType, Query},
};

use super::{
    Reads, StoreResult,
    entity::{api_key, membership, service_account, workspace},
};

/// A service account by id.
pub async fn service_account<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> StoreResult<Option<service_account::Model>> {
    Ok(service_account::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?)
}

/// The service account a decision depends on; locked when read for a change.
pub async fn service_account_held<C: Reads>(
    conn: &C,
    id: &str,
) -> StoreResult<Option<service_account::Model>> {
    let query = service_account::Entity::find_by_id(id.to_owned());
    let query = if C::FOR_CHANGE {
        query.lock_shared()
    } else {
        query
    };
    Ok(query.one(conn).await?)
}

/// A key, its principal's standing and, when asked for, a workspace: what
/// authorizing a change in a workspace reads, in one statement.
#[derive(Debug)]
pub struct KeyHeld<P> {
    pub key: api_key::Model,
    /// The service account, or the user's membership of the organization.
    pub principal: P,
    /// The workspace asked for, if it exists (in any organization).
    pub workspace: Option<workspace::Model>,
}

/// A service key with the service account it belongs to, read together (one
/// statement), and workspace `workspace` if asked for; the account row is
/// locked when read for a change. `None` when the key or the account is gone.
pub async fn service_key_held<C: Reads>(
    conn: &C,
    key_id: &str,
    account_id: &str,
    workspace: Option<&str>,
) -> StoreResult<Option<KeyHeld<service_account::Model>>> {
    let query = api_key::Entity::find_by_id(key_id.to_owned())
        .join(
            JoinType::InnerJoin,
            api_key::Entity::belongs_to(service_account::Entity)
                .from(api_key::Column::ServiceAccountId)
                .to(service_account::Column::Id)
                .into(),
        )
        .filter(service_account::Column::Id.eq(account_id))
        .select_also(service_account::Entity);
    key_held(conn, query, service_account::Entity, workspace).await
}

/// A personal key with its user's membership of `org_id`, read together (one
/// statement), and workspace `workspace` if asked for; the membership row is
/// locked when read for a change. `None` when the key or the membership is gone.
pub async fn personal_key_held<C: Reads>(
    conn: &C,
    key_id: &str,
    org_id: &str,
    user_id: &str,
    workspace: Option<&str>,
) -> StoreResult<Option<KeyHeld<membership::Model>>> {
    let query = api_key::Entity::find_by_id(key_id.to_owned())
        .join(
            JoinType::InnerJoin,
            api_key::Entity::belongs_to(membership::Entity)
                .from(api_key::Column::UserId)
                .to(membership::Column::UserId)
                .into(),
        )
        .filter(membership::Column::OrganizationId.eq(org_id))
        .filter(membership::Column::UserId.eq(user_id))
        .select_also(membership::Entity);
    key_held(conn, query, membership::Entity, workspace).await
}

/// Runs a key-and-principal query, locking the principal's row for a change
/// and joining the workspace asked for (a left join on its id: the key's row
/// comes back whether the workspace exists or not).
async fn key_held<C: Reads, P: EntityTrait>(
    conn: &C,
    mut query: SelectTwo<api_key::Entity, P>,
    principal: P,
    workspace: Option<&str>,
) -> StoreResult<Option<KeyHeld<P::Model>>> {
    let select = QuerySelect::query(&mut query);
    if C::FOR_CHANGE {
        select.lock_with_tables(LockType::Share, [principal]);
    }
    select.join(
        JoinType::LeftJoin,
        workspace::Entity,
        workspace::Column::Id.eq(workspace.map(str::to_owned)),
    );
    for column in workspace::Column::iter() {
        select.expr_as(
            Expr::col((workspace::Entity, column)),
            Alias::new(format!("{WORKSPACE_PREFIX}{}", column.as_str())),
        );
    }
    let statement = query.build(conn.get_database_backend());
    let Some(row) = conn.query_one_raw(statement).await? else {
        return Ok(None);
    };
    // `select_also`'s prefixes: the key's columns, then the principal's.
    let key = api_key::Model::from_query_result(&row, "A_")?;
    let Some(principal) = P::Model::from_query_result_optional(&row, "B_")? else {
        return Ok(None);
    };
    let workspace = workspace::Model::from_query_result_optional(&row, WORKSPACE_PREFIX)?;
    Ok(Some(KeyHeld {
        key,
        principal,
        workspace,
    }))
}

/// The prefix of the workspace's columns in [`key_held`]'s statement.
const WORKSPACE_PREFIX: &str = "W_";

/// A service account of an organization by name.
pub async fn service_account_by_name<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    name: &str,
) -> StoreResult<Option<service_account::Model>> {
    Ok(service_account::Entity::find()
        .filter(service_account::Column::OrganizationId.eq(org_id))
        .filter(service_account::Column::Name.eq(name))
        .one(conn)
        .await?)
}

/// Service accounts of an organization, ordered by id; platform accounts
/// only when `include_platform`; only those confined to one workspace when
/// `workspace_id` is set.
pub async fn service_accounts<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    include_platform: bool,
    workspace_id: Option<&str>,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<service_account::Model>> {
    let mut query = service_account::Entity::find()
        .filter(service_account::Column::OrganizationId.eq(org_id))
        .filter(service_account::Column::Id.gt(after));
    if !include_platform {
        query = query.filter(service_account::Column::Platform.eq(false));
    }
    if let Some(ws) = workspace_id {
        query = query.filter(service_account::Column::WorkspaceId.eq(ws));
    }
    Ok(query
        .order_by_asc(service_account::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// The ids of the service accounts confined to a workspace.
pub async fn confined_account_ids<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
) -> StoreResult<Vec<String>> {
    Ok(service_account::Entity::find()
        .filter(service_account::Column::WorkspaceId.eq(workspace_id))
        .select_only()
        .column(service_account::Column::Id)
        .into_tuple()
        .all(conn)
        .await?)
}

/// Deletes a service account row.
pub async fn delete_service_account<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<()> {
    service_account::Entity::delete_by_id(id.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}

/// An API key by id.
pub async fn api_key<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> StoreResult<Option<api_key::Model>> {
    Ok(api_key::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// An API key by the hash of its secret.
pub async fn api_key_by_hash<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
) -> StoreResult<Option<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(hash))
        .one(conn)
        .await?)
}

/// Which keys of an organization a listing shows.
#[derive(Clone, Copy, Debug)]
pub enum KeyFilter<'a> {
    /// Every key.
    All,
    /// One user's personal access tokens.
    User(&'a str),
    /// The keys of the service accounts confined to one workspace.
    Workspace(&'a str),
}

/// API keys of an organization ordered by id, as `only` says; platform
/// accounts' keys only when `include_platform`.
pub async fn api_keys<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    only: KeyFilter<'_>,
    include_platform: bool,
    after: &str,
    limit: u64,
) -> StoreResult<Vec<api_key::Model>> {
    let mut query = api_key::Entity::find()
        .filter(api_key::Column::OrganizationId.eq(org_id))
        .filter(api_key::Column::Id.gt(after));
    match only {
        KeyFilter::All => {}
        KeyFilter::User(user_id) => query = query.filter(api_key::Column::UserId.eq(user_id)),
        KeyFilter::Workspace(ws) => query = query.filter(api_key::Column::WorkspaceId.eq(ws)),
    }
    if !include_platform {
        let platform_accounts = Query::select()
            .column(service_account::Column::Id)
            .from(service_account::Entity)
            .and_where(service_account::Column::Platform.eq(true))
            .to_owned();
        query = query.filter(
            Condition::any()
                .add(api_key::Column::ServiceAccountId.is_null())
                .add(api_key::Column::ServiceAccountId.not_in_subquery(platform_accounts)),
        );
    }
    Ok(query
        .order_by_asc(api_key::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Writes the mutable fields of a key (description, expiry, revocation).
pub async fn update_api_key<C: ConnectionTrait>(
    conn: &C,
    key: api_key::Model,
) -> StoreResult<api_key::Model> {
    let (description, expires_at, revoked_at) =
        (key.description.clone(), key.expires_at, key.revoked_at);
    let mut row = key.into_active_model();
    row.description = Set(description);
    row.expires_at = Set(expires_at);
    row.revoked_at = Set(revoked_at);
    Ok(row.update(conn).await?)
}

/// Revokes, at `now`, every live PAT of a user in an organization.
pub async fn revoke_user_pats<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    user_id: &str,
    now: i64,
) -> StoreResult<u64> {
    let res = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::OrganizationId.eq(org_id))
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

/// Revokes, at `now`, every live key of a service account.
pub async fn revoke_service_account_keys<C: ConnectionTrait>(
    conn: &C,
    service_account_id: &str,
    now: i64,
) -> StoreResult<u64> {
    let res = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::ServiceAccountId.eq(service_account_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

/// The ids of every platform account (they are few).
pub async fn platform_account_ids<C: ConnectionTrait>(conn: &C) -> StoreResult<Vec<String>> {
    Ok(service_account::Entity::find()
        .filter(service_account::Column::Platform.eq(true))
        .all(conn)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

/// The ids of an organization's service accounts holding `role`; platform
/// accounts only when `include_platform`.
pub async fn service_account_ids_with_role<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    role: &str,
    include_platform: bool,
) -> StoreResult<Vec<String>> {
    let mut query = service_account::Entity::find()
        .filter(service_account::Column::OrganizationId.eq(org_id))
        .filter(service_account::Column::Role.eq(role));
    if !include_platform {
        query = query.filter(service_account::Column::Platform.eq(false));
    }
    Ok(query
        .order_by_asc(service_account::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect())
}
