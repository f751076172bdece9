//! The `organizations` table.

use sea_orm::entity::prelude::*;

/// One row of `organizations`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    /// Lower-cased name of a shared organization (unique); `None` for personal ones.
    pub name_key: Option<String>,
    pub plan: String,
    pub personal: bool,
    /// The owner of a personal organization (unique).
    pub personal_owner_user_id: Option<String>,
    pub pat_creation_disabled: bool,
    pub created_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
