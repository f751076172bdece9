//! The `signing_keys` table.

use sea_orm::entity::prelude::*;

/// An Ed25519 key that signs (or signed) temporary credentials.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    /// The key id (`kid`): the RFC 7638 thumbprint of its public key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The 32-byte private key, base64url; emptied when the key is retired.
    pub private_key: String,
    /// The 32-byte public key, base64url (the JWK's `x`).
    pub public_key: String,
    /// 1 for the key that signs, `None` once retired (unique).
    pub current_key: Option<i32>,
    pub created_at: i64,
    /// When the key stopped signing; `None` while it is current.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("signing_key::Model")
            .field("id", &self.id)
            .field("current_key", &self.current_key)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// No declared relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
