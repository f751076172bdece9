//! The `workspace_settings` table.

use sea_orm::entity::prelude::*;

/// One row of `workspace_settings`: a workspace's own values (NULL:
/// inherit the organization's default).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "workspace_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: String,
    pub data_retention_days: Option<i64>,
    pub monthly_trace_limit: Option<i64>,
    pub updated_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
