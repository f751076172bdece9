//! Repository functions for the audit log.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{StoreResult, entity::audit_event};

/// Filters of an audit log listing.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Only events of this actor.
    pub actor_id: Option<String>,
    /// Only events with this action.
    pub action: Option<String>,
    /// Only events at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only events before this time (ms).
    pub until_ms: Option<i64>,
}

/// Events of an organization (`None`: the platform log, events of no
/// organization), newest first, before `before_id` when set.
pub async fn events<C: ConnectionTrait>(
    conn: &C,
    org_id: Option<&str>,
    filter: &AuditFilter,
    before_id: Option<&str>,
    limit: u64,
) -> StoreResult<Vec<audit_event::Model>> {
    let mut query = audit_event::Entity::find().filter(match org_id {
        Some(org_id) => audit_event::Column::OrganizationId.eq(org_id),
        None => audit_event::Column::OrganizationId.is_null(),
    });
    if let Some(actor) = &filter.actor_id {
        query = query.filter(audit_event::Column::ActorId.eq(actor.as_str()));
    }
    if let Some(action) = &filter.action {
        query = query.filter(audit_event::Column::Action.eq(action.as_str()));
    }
    if let Some(since) = filter.since_ms {
        query = query.filter(audit_event::Column::CreatedAt.gte(since));
    }
    if let Some(until) = filter.until_ms {
        query = query.filter(audit_event::Column::CreatedAt.lt(until));
    }
    if let Some(before) = before_id {
        query = query.filter(audit_event::Column::Id.lt(before));
    }
    Ok(query
        .order_by_desc(audit_event::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Inserts events (those of one change, inside its transaction).
pub async fn insert_all<C: ConnectionTrait>(
    conn: &C,
    events: Vec<audit_event::Model>,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    audit_event::Entity::insert_many(events.into_iter().map(IntoActiveModel::into_active_model))
        .exec_without_returning(conn)
        .await?;
    Ok(())
}
