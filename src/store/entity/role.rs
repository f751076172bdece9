//! The `roles` table.

use sea_orm::entity::prelude::*;

/// One row of `roles`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "roles")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    /// JSON array of permission names.
    pub permissions: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
