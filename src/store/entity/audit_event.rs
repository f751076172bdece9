//! The `audit_events` table.

use sea_orm::entity::prelude::*;

/// One row of `audit_events`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: Option<String>,
    /// `user` or `service_account`.
    pub actor_type: String,
    pub actor_id: String,
    pub acting_for_user_id: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub details: String,
    pub revision: i64,
    pub created_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
