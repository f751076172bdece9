//! sea-orm entities, one file per table. Hand-written to match `migration`.

pub mod api_key;
pub mod application;
pub mod audit_event;
pub mod change_log;
pub mod grant;
pub mod invite;
pub mod membership;
pub mod organization;
pub mod organization_settings;
pub mod resource;
pub mod resource_type;
pub mod revision;
pub mod role;
pub mod service_account;
pub mod signing_key;
pub mod team;
pub mod team_member;
pub mod user;
pub mod workspace;
pub mod workspace_settings;
