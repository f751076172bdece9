//! The `change_log` table.

use sea_orm::entity::prelude::*;

/// One committed change: a row per revision.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "change_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub revision: i64,
    /// The organization the change belongs to; `None`: the platform, or a
    /// change spanning organizations (never shown to an organization).
    pub organization_id: Option<String>,
    pub created_at: i64,
    /// What the change makes stale in caches, encoded by `domain::change`.
    pub invalidations: String,
    /// What was done, a JSON list of `{action, target_type, target_id}`.
    pub events: String,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
