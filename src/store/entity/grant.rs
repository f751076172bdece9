//! The `grants` table.

use sea_orm::entity::prelude::*;

/// One row of `grants`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "grants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub workspace_id: String,
    /// `user`, `team` or `service_account`.
    pub subject_type: String,
    pub subject_id: String,
    pub role: String,
    /// JSON of the scope, `None` for an unscoped grant.
    pub scope: Option<String>,
    pub created_at: i64,
    /// From this instant (ms since the Unix epoch) it no longer applies; `None`: never.
    pub expires_at: Option<i64>,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
