//! Organizations, users, memberships, workspaces, grants, teams, service
//! accounts, API keys, invites, the audit log and the revision counter.

use sea_orm_migration::prelude::*;

use super::run_script;

/// The first schema.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_identity"
    }
}

const UP: &str = r#"
CREATE TABLE revision (
    id INTEGER PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NULL,
    plan TEXT NOT NULL,
    personal BOOLEAN NOT NULL,
    personal_owner_user_id TEXT NULL,
    pat_creation_disabled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX organizations_name_key ON organizations (name_key);
CREATE UNIQUE INDEX organizations_personal_owner ON organizations (personal_owner_user_id);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    external_subject TEXT NOT NULL,
    email TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_external_subject ON users (external_subject);
CREATE UNIQUE INDEX users_email ON users (email);

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    is_default BOOLEAN NOT NULL,
    owner_user_id TEXT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX workspaces_org_key ON workspaces (organization_id, key);
CREATE INDEX workspaces_owner ON workspaces (organization_id, owner_user_id);

CREATE TABLE memberships (
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL,
    default_workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX grants_workspace_subject ON grants (workspace_id, subject_type, subject_id);
CREATE INDEX grants_subject ON grants (subject_type, subject_id, organization_id);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX teams_org_name ON teams (organization_id, name);

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id, organization_id);

CREATE TABLE service_accounts (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    act_for_users BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX service_accounts_org_name ON service_accounts (organization_id, name);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    kind TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    prefix TEXT NOT NULL,
    last_chars TEXT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT NULL,
    service_account_id TEXT NULL,
    scope TEXT NULL,
    workspace_ids TEXT NOT NULL,
    expires_at BIGINT NULL,
    revoked_at BIGINT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);
CREATE INDEX api_keys_org ON api_keys (organization_id, created_at);
CREATE INDEX api_keys_user ON api_keys (user_id, organization_id);
CREATE INDEX api_keys_service_account ON api_keys (service_account_id);

CREATE TABLE invites (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX invites_org_email ON invites (organization_id, email);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    organization_id TEXT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    acting_for_user_id TEXT NULL,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    details TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_events_org ON audit_events (organization_id, revision)
"#;

const DOWN: &str = r#"
DROP TABLE audit_events;
DROP TABLE invites;
DROP TABLE api_keys;
DROP TABLE service_accounts;
DROP TABLE team_members;
DROP TABLE teams;
DROP TABLE grants;
DROP TABLE memberships;
DROP TABLE workspaces;
DROP TABLE users;
DROP TABLE organizations;
DROP TABLE revision
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
