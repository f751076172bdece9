//! Delegation inside a workspace: a service account may be confined to one
//! workspace (its keys then reach only it, and a workspace admin of it
//! manages them), and an invite may carry a workspace and a role in it (the
//! workspace-level invites of self-hosted installations).

use sea_orm_migration::prelude::*;

use super::run_script;

/// Workspace-confined service accounts and workspace invites.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0007_delegation"
    }
}

const UP: &str = r#"
ALTER TABLE service_accounts ADD COLUMN workspace_id TEXT NULL;
CREATE INDEX service_accounts_workspace ON service_accounts (workspace_id, id);
ALTER TABLE api_keys ADD COLUMN workspace_id TEXT NULL;
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, id);
ALTER TABLE invites ADD COLUMN workspace_id TEXT NULL;
ALTER TABLE invites ADD COLUMN workspace_role TEXT NULL;
CREATE INDEX invites_workspace ON invites (workspace_id, id)
"#;

const DOWN: &str = r#"
DROP INDEX invites_workspace;
ALTER TABLE invites DROP COLUMN workspace_role;
ALTER TABLE invites DROP COLUMN workspace_id;
DROP INDEX api_keys_workspace;
ALTER TABLE api_keys DROP COLUMN workspace_id;
DROP INDEX service_accounts_workspace;
ALTER TABLE service_accounts DROP COLUMN workspace_id
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
