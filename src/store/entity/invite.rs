//! The `invites` table.

use sea_orm::entity::prelude::*;

/// One row of `invites`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invites")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub role: String,
    pub created_by: String,
    /// A workspace invite: the workspace the invitee is given a role in on
    /// accepting (workspace-level invites, behind `--workspace-invites`).
    pub workspace_id: Option<String>,
    /// The role (a system role's name or a custom role's id) given in
    /// `workspace_id` on accepting.
    pub workspace_role: Option<String>,
    pub created_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
