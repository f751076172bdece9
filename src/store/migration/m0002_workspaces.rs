//! Custom roles, organization resource types, applications, tagged resources
//! and workspace settings.

use sea_orm_migration::prelude::*;

use super::run_script;

/// The workspace and roles schema.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_workspaces"
    }
}

const UP: &str = r#"
CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX roles_org_name ON roles (organization_id, name);

CREATE TABLE resource_types (
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    actions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, name)
);

CREATE TABLE applications (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE resources (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    tags TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, resource_type, resource_id)
);

CREATE TABLE workspace_settings (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
    data_retention_days BIGINT NOT NULL,
    monthly_trace_limit BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX grants_role ON grants (organization_id, role);
CREATE INDEX workspaces_org ON workspaces (organization_id, id)
"#;

const DOWN: &str = r#"
DROP INDEX workspaces_org;
DROP INDEX grants_role;
DROP TABLE workspace_settings;
DROP TABLE resources;
DROP TABLE applications;
DROP TABLE resource_types;
DROP TABLE roles
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
