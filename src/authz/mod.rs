//! The check engine: plain data in, decisions out. No gRPC, no SQL.
//!
//! * `org` — organization roles and the organization-level permission table.
//! * `catalogue` — the permission catalogue and the system workspace roles.
//! * `engine` — scopes, effective grants and the allow/deny evaluation.
//! * `cache` — resolved sets per (principal, workspace), invalidation.

pub mod cache;
pub mod catalogue;
pub mod engine;
pub mod org;

pub use org::{OrgPermission, OrgRole};
