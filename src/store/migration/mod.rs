//! Numbered, reversible schema migrations. The SQL is the portable subset that
//! SQLite and PostgreSQL both accept, so both backends share one schema.

use sea_orm_migration::prelude::*;

mod m0001_identity;
mod m0002_workspaces;
mod m0003_platform;
mod m0004_change_log;
mod m0005_expiry;
mod m0006_organization_settings;
mod m0007_delegation;
mod m0008_signing_keys;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_identity::Migration),
            Box::new(m0002_workspaces::Migration),
            Box::new(m0003_platform::Migration),
            Box::new(m0004_change_log::Migration),
            Box::new(m0005_expiry::Migration),
            Box::new(m0006_organization_settings::Migration),
            Box::new(m0007_delegation::Migration),
            Box::new(m0008_signing_keys::Migration),
        ]
    }
}

/// Runs each statement of a `;`-separated script.
async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.execute_unprepared(statement).await?;
    }
    Ok(())
}
