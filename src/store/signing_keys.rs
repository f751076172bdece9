//! Repository functions for the keys that sign temporary credentials.

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    sea_query::Expr,
};

use super::{StoreResult, entity::signing_key};

/// The key that signs now, if any.
pub async fn current<C: ConnectionTrait>(conn: &C) -> StoreResult<Option<signing_key::Model>> {
    Ok(signing_key::Entity::find()
        .filter(signing_key::Column::CurrentKey.eq(1))
        .one(conn)
        .await?)
}

/// The current key and the keys retired after `retired_after` (ms), newest first.
pub async fn published<C: ConnectionTrait>(
    conn: &C,
    retired_after: i64,
) -> StoreResult<Vec<signing_key::Model>> {
    Ok(signing_key::Entity::find()
        .filter(
            Condition::any()
                .add(signing_key::Column::RetiredAt.is_null())
                .add(signing_key::Column::RetiredAt.gt(retired_after)),
        )
        .order_by_desc(signing_key::Column::CreatedAt)
        .order_by_asc(signing_key::Column::Id)
        .all(conn)
        .await?)
}

/// Stores a new key; a second current key breaks the unique `current_key`
/// and fails with a conflict.
pub async fn insert<C: ConnectionTrait>(conn: &C, row: signing_key::Model) -> StoreResult<()> {
    signing_key::Entity::insert(row.into_active_model())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Retires the current key at `now`: it signs no more and its private half
/// is forgotten; its public half stays. Returns how many keys were retired
/// (0 or 1).
pub async fn retire_current<C: ConnectionTrait>(conn: &C, now: i64) -> StoreResult<u64> {
    let done = signing_key::Entity::update_many()
        .col_expr(signing_key::Column::CurrentKey, Expr::value(None::<i32>))
        .col_expr(signing_key::Column::PrivateKey, Expr::value(String::new()))
        .col_expr(signing_key::Column::RetiredAt, Expr::value(now))
        .filter(signing_key::Column::CurrentKey.eq(1))
        .exec(conn)
        .await?;
    Ok(done.rows_affected)
}

/// Deletes the keys retired before `retired_before` (ms).
pub async fn delete_retired<C: ConnectionTrait>(conn: &C, retired_before: i64) -> StoreResult<u64> {
    let done = signing_key::Entity::delete_many()
        .filter(signing_key::Column::RetiredAt.lt(retired_before))
        .exec(conn)
        .await?;
    Ok(done.rows_affected)
}
