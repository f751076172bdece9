//! Repository functions for the change log.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use super::{StoreResult, entity::change_log};

/// Appends a change (inside the transaction that makes it).
pub async fn append<C: ConnectionTrait>(conn: &C, row: change_log::Model) -> StoreResult<()> {
    change_log::Entity::insert(row.into_active_model())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Up to `limit` changes after `revision`, oldest first.
///
/// Bounded by the index on both sides (from the first revision after
/// `revision`, fewer than `limit` revisions on), so the planner has no reason
/// to scan the table: with `revision > $1 ORDER BY revision LIMIT`, the
/// statistics of a log that grew since it was last analysed made PostgreSQL
/// scan and sort every row on every read (seen under write load: thousands
/// of rows read per call). Revisions are gap-free, so the range holds the
/// same rows.
pub async fn after<C: ConnectionTrait>(
    conn: &C,
    revision: u64,
    limit: u64,
) -> StoreResult<Vec<change_log::Model>> {
    let sql = "SELECT revision, organization_id, created_at, invalidations, events \
               FROM change_log \
               WHERE revision > $1 \
                 AND revision < (SELECT min(revision) FROM change_log WHERE revision > $1) + $2 \
               ORDER BY revision LIMIT $2";
    Ok(change_log::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            conn.get_database_backend(),
            sql,
            [signed(revision).into(), signed(limit).into()],
        ))
        .all(conn)
        .await?)
}

/// Up to `limit` changes of one organization after `revision`, oldest first.
pub async fn of_organization_after<C: ConnectionTrait>(
    conn: &C,
    org_id: &str,
    revision: u64,
    limit: u64,
) -> StoreResult<Vec<change_log::Model>> {
    Ok(change_log::Entity::find()
        .filter(change_log::Column::OrganizationId.eq(org_id))
        .filter(change_log::Column::Revision.gt(signed(revision)))
        .order_by_asc(change_log::Column::Revision)
        .limit(limit)
        .all(conn)
        .await?)
}

/// The oldest revision the log still holds, if it holds any.
pub async fn oldest<C: ConnectionTrait>(conn: &C) -> StoreResult<Option<u64>> {
    let row = change_log::Entity::find()
        .order_by_asc(change_log::Column::Revision)
        .limit(1)
        .one(conn)
        .await?;
    Ok(row.and_then(|r| u64::try_from(r.revision).ok()))
}

/// Deletes the changes at or below `through` and those created before
/// `before_ms`; returns how many were deleted. Idempotent, so replicas may
/// trim together. Each bound is first compared with the oldest row (one
/// index lookup): a pass with nothing to delete writes nothing, so it takes
/// no write lock (SQLite's is the database's), and a delete walks an index.
pub async fn trim<C: ConnectionTrait>(conn: &C, through: u64, before_ms: i64) -> StoreResult<u64> {
    let mut deleted = 0;
    if oldest(conn).await?.is_some_and(|r| r <= through) {
        deleted += change_log::Entity::delete_many()
            .filter(change_log::Column::Revision.lte(signed(through)))
            .exec(conn)
            .await?
            .rows_affected;
    }
    let earliest = change_log::Entity::find()
        .order_by_asc(change_log::Column::CreatedAt)
        .limit(1)
        .one(conn)
        .await?;
    if earliest.is_some_and(|r| r.created_at < before_ms) {
        deleted += change_log::Entity::delete_many()
            .filter(change_log::Column::CreatedAt.lt(before_ms))
            .exec(conn)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

fn signed(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}
