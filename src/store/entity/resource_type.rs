//! The `resource_types` table.

use sea_orm::entity::prelude::*;

/// One row of `resource_types`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "resource_types")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// JSON array of action names.
    pub actions: String,
    pub created_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
