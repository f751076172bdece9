//! The `service_accounts` table.

use sea_orm::entity::prelude::*;

/// One row of `service_accounts`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub role: String,
    /// A platform account: its powers cross organizations, and no organization administers it.
    pub platform: bool,
    /// The workspace the account is confined to: it holds grants only there,
    /// its keys reach only it, and a workspace admin of it manages it. `None`:
    /// an organization-wide account, managed by organization admins.
    pub workspace_id: Option<String>,
    pub created_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
