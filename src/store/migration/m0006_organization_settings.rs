//! Organization defaults for workspace settings, and workspace settings that
//! may be left unset (NULL: inherit the organization's default).
//!
//! Before, a workspace's retention of 0 meant "the organization default" and
//! a limit of 0 "unlimited", written together whichever was asked for; both
//! become NULL (inherit), which reads as before while no default is set.

use sea_orm_migration::prelude::*;

use super::run_script;

/// Organization settings; nullable workspace settings.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_organization_settings"
    }
}

const UP: &str = r#"
CREATE TABLE organization_settings (
    organization_id TEXT PRIMARY KEY REFERENCES organizations (id),
    data_retention_days BIGINT NULL,
    monthly_trace_limit BIGINT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE workspace_settings_next (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
    data_retention_days BIGINT NULL,
    monthly_trace_limit BIGINT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO workspace_settings_next (workspace_id, data_retention_days, monthly_trace_limit, updated_at)
    SELECT workspace_id,
           CASE WHEN data_retention_days = 0 THEN NULL ELSE data_retention_days END,
           CASE WHEN monthly_trace_limit = 0 THEN NULL ELSE monthly_trace_limit END,
           updated_at
    FROM workspace_settings;
DROP TABLE workspace_settings;
ALTER TABLE workspace_settings_next RENAME TO workspace_settings
"#;

const DOWN: &str = r#"
CREATE TABLE workspace_settings_prev (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
    data_retention_days BIGINT NOT NULL,
    monthly_trace_limit BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO workspace_settings_prev (workspace_id, data_retention_days, monthly_trace_limit, updated_at)
    SELECT workspace_id, COALESCE(data_retention_days, 0), COALESCE(monthly_trace_limit, 0), updated_at
    FROM workspace_settings;
DROP TABLE workspace_settings;
ALTER TABLE workspace_settings_prev RENAME TO workspace_settings;
DROP TABLE organization_settings
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// The table is rebuilt in one transaction on every backend: on one
    /// connection, and never left half-copied.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, DOWN).await
    }
}
