//! Time-bound access: a grant or a team membership may carry the instant
//! (milliseconds since the Unix epoch) from which it no longer applies.
//! The partial indexes serve the sweep that removes expired rows.

use sea_orm_migration::prelude::*;

use super::run_script;

/// Expiring grants and team memberships.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_expiry"
    }
}

const UP: &str = r#"
ALTER TABLE grants ADD COLUMN expires_at BIGINT NULL;
ALTER TABLE team_members ADD COLUMN expires_at BIGINT NULL;
CREATE INDEX grants_expiry ON grants (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX team_members_expiry ON team_members (expires_at) WHERE expires_at IS NOT NULL
"#;

const DOWN: &str = r#"
DROP INDEX team_members_expiry;
DROP INDEX grants_expiry;
ALTER TABLE team_members DROP COLUMN expires_at;
ALTER TABLE grants DROP COLUMN expires_at
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
