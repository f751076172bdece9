//! The check engine: plain data in, decisions out. No gRPC, no SQL.
//!
//! `org` holds the organization-level permission table of the access model;
//! the workspace engine (resolved sets, scopes, explain) builds on it.

pub mod org;

pub use org::{OrgPermission, OrgRole};
