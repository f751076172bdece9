//! The change log: one row per committed revision, with what the change
//! invalidates and a short description of it. Replicas apply it in revision
//! order; `WatchService` streams an organization's rows.

use sea_orm_migration::prelude::*;

use super::run_script;

/// The change log.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_change_log"
    }
}

const UP: &str = r#"
CREATE TABLE change_log (
    revision BIGINT NOT NULL PRIMARY KEY,
    organization_id TEXT NULL,
    created_at BIGINT NOT NULL,
    invalidations TEXT NOT NULL,
    events TEXT NOT NULL
);
CREATE INDEX change_log_organization ON change_log (organization_id, revision);
CREATE INDEX change_log_time ON change_log (created_at)
"#;

const DOWN: &str = r#"
DROP INDEX change_log_time;
DROP INDEX change_log_organization;
DROP TABLE change_log
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
