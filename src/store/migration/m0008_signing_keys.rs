//! The keys that sign temporary credentials, shared by every replica. One
//! key is current (`current_key = 1`); a retired key keeps its public half
//! (published until the last credential it signed has expired) and loses
//! its private half.

use sea_orm_migration::prelude::*;

use super::run_script;

/// The signing keys of temporary credentials.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0008_signing_keys"
    }
}

// `current_key` is 1 for the key that signs and NULL for retired ones: a
// UNIQUE column holds many NULLs on both backends but one 1, so two
// replicas creating the first key at once, or two rotations at once, cannot
// both leave a current key.
const UP: &str = r#"
CREATE TABLE signing_keys (
    id TEXT NOT NULL PRIMARY KEY,
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    current_key INTEGER NULL UNIQUE,
    created_at BIGINT NOT NULL,
    retired_at BIGINT NULL
)
"#;

const DOWN: &str = r#"
DROP TABLE signing_keys
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, DOWN).await
    }
}
