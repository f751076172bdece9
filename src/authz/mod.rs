//! The check engine: plain data in, decisions out. No gRPC, no SQL.
//!
//! * `org` — organization roles and the organization-level permission table.
//! * `catalogue` — the permission catalogue and the system workspace roles.
//! * `engine` — scopes, effective grants and the allow/deny evaluation.
//! * `cache` — resolved sets per (principal, workspace), invalidation.
//! * `power` — effective power: the principal's, bounded by its key's limits.

pub mod cache;
pub mod catalogue;
pub mod engine;
pub mod org;
pub mod power;

pub use org::{OrgPermission, OrgRole};
