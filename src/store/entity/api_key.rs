//! The `api_keys` table.

use sea_orm::entity::prelude::*;

/// One row of `api_keys`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    /// `pat` or `service_key`.
    pub kind: String,
    /// SHA-256 of the whole key, hex; the key itself is never stored.
    pub key_hash: String,
    pub prefix: String,
    pub last_chars: String,
    pub description: String,
    pub user_id: Option<String>,
    pub service_account_id: Option<String>,
    /// `organization` or `workspaces` for service keys.
    pub scope: Option<String>,
    /// JSON array of workspace ids for `workspaces`-scoped service keys.
    pub workspace_ids: String,
    /// For a key of a workspace-confined service account, that workspace:
    /// the key reaches it and nothing else.
    pub workspace_id: Option<String>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

/// No declared relations: queries join explicitly in the repository functions.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
