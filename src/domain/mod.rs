//! The rules of the access model as plain Rust: identity (organizations,
//! users, members, invites), teams, service accounts and keys, workspaces and
//! grants, roles, applications, tags and settings. Each function has its
//! caller authorized by [`authorize`] (inside the change's transaction for a
//! change), validates, and makes its change in that one transaction, which
//! also records the audit event.

pub mod access;
pub mod audit;
pub mod authorize;
pub mod batch;
pub mod change;
pub mod check;
pub mod credentials;
pub mod expiry;
pub mod keys;
pub mod organizations;
pub mod resources;
pub mod roles;
pub mod rules;
pub mod settings;
pub mod teams;
pub mod workspaces;

/// A page request of a list RPC.
#[derive(Clone, Copy, Debug, Default)]
pub struct Page<'a> {
    /// Requested page size; 0 means the default.
    pub size: u32,
    /// The `next_page_token` of the previous page, or empty.
    pub token: &'a str,
}
