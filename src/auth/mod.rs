//! Who is calling: the API key format, key resolution, the caller identity
//! and the tower layer that authenticates every RPC.

pub mod caller;
pub mod key;
pub mod layer;

pub use caller::{Caller, KeyScope, PrincipalId, ResolvedKey};
pub use layer::AuthLayer;
