//! The `resources` table.

use sea_orm::entity::prelude::*;

/// One row of `resources`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "resources")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub resource_type: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub resource_id: String,
    /// JSON object of tag key to value.
    pub tags: String,
    pub updated_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
