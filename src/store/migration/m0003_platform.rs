//! The platform tier: service accounts whose powers cross organizations
//! (registering users, acting for users, setting plans) are marked as such,
//! and the platform audit log (events of no organization) is indexed.
//! Organization names stop being unique across tenants: a name is a display
//! name, and a unique one told every tenant which names the others use.

use sea_orm_migration::prelude::*;

use super::run_script;

/// The platform tier.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_platform"
    }
}

const UP: &str = r#"
ALTER TABLE service_accounts RENAME COLUMN act_for_users TO platform;
CREATE INDEX service_accounts_platform ON service_accounts (platform, id);
CREATE INDEX audit_events_time ON audit_events (organization_id, id);
DROP INDEX organizations_name_key;
CREATE INDEX organizations_name ON organizations (name_key)
"#;

const DOWN: &str = r#"
DROP INDEX organizations_name;
CREATE UNIQUE INDEX organizations_name_key ON organizations (name_key);
DROP INDEX audit_events_time;
DROP INDEX service_accounts_platform;
ALTER TABLE service_accounts RENAME COLUMN platform TO act_for_users
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
