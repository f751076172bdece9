//! Who is calling: the API key format, key resolution and the caller identity.
//! [`crate::front`] authenticates every RPC with them. [`jwt`] is the format
//! of the temporary credentials the service issues.

pub mod caller;
pub mod jwt;
pub mod key;

pub use caller::{Caller, PrincipalId, ResolvedKey};
