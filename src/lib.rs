//! # Portcullis
//!
//! A gRPC authorization service. Backend services ask it "may principal X do
//! Y on resource Z in workspace T?"; administrators manage organizations,
//! users, teams, workspaces, roles and API keys through the same API.
//!
//! ## Architecture
//!
//! ```text
//!  client ──gRPC──▶ server.rs ─ FrontLayer (front/): metrics, body deadline, limits,
//!                       │        span, key → Caller
//!                       ▼
//!                  api/*.rs        decode → call domain → encode (no rules)
//!                       │
//!                       ▼
//!           domain/*.rs, authz/    rules of the access model, permission tables;
//!                       │          domain/authorize.rs decides every authorization
//!                       ▼
//!                  store/          sea-orm entities, migrations, repository fns
//!                       │
//!                SQLite (default) or PostgreSQL
//! ```
//!
//! * Every RPC passes [`front::FrontLayer`]: it is counted in [`metrics`],
//!   its request message is read under a deadline, it is admitted under the
//!   concurrency limit or shed, bounded by the request timeout and, except
//!   health, reflection and the benchmark no-op, authenticated and held to
//!   its principal's share: `authorization: Bearer <api key>` becomes an
//!   [`auth::Caller`] in the request extensions. Keys have a recognisable
//!   prefix and a checksum ([`auth::key`]), so garbage never reaches storage;
//!   only their SHA-256 is stored. The [`codec`] holds every request field to
//!   the text rules first: no NUL, at most 1 KiB, ids in their one spelling
//!   ([`id`]).
//! * Every RPC is authorized in one place, [`domain::authorize`]: the
//!   caller's effective power is its principal's power intersected with its
//!   key's limits ([`authz::power`]); platform accounts hold the powers that
//!   cross organizations; a change is authorized inside its own transaction.
//! * Every change is one transaction ([`domain::change::Tx`] over
//!   [`store::WriteTx`]); its writer states what it changed, and what that
//!   makes stale follows ([`domain::change`]). Committing takes the next
//!   revision, appends the change's row to the change log with its audit
//!   events, and drops the stale entries from the local caches; other
//!   replicas read the log in revision order, woken by PostgreSQL `NOTIFY`
//!   or by their poll ([`domain::change::follow`]), and clients can watch an
//!   organization's changes ([`domain::change::watch`]).
//! * Checks ([`domain::check`]) authorize the caller, then take the resolved
//!   set of (principal, workspace) from the moka cache ([`authz::cache`]) — a
//!   hash lookup and a bit test — or load it once from storage, in one
//!   statement shared with the misses arriving beside it
//!   ([`store::standing`]); [`authz::engine`] evaluates scopes against
//!   resource tags only when a scoped grant could decide. Grants and team
//!   memberships may expire: a set records its earliest expiry and is not
//!   served from then on ([`clock`]); [`domain::expiry`] sweeps the rows.
//! * Temporary storage credentials ([`domain::credentials`]) are JWTs
//!   signed with Ed25519 ([`auth::jwt`]) carrying only permissions the
//!   caller holds; storage services verify them offline with the key set the
//!   metrics port serves at `/.well-known/jwks.json`.
//! * Errors: [`store::StoreError`] below, [`error::Error`] above, mapped to
//!   `tonic::Status` in exactly one place.
//!
//! Configuration is one typed struct ([`config::ServeConfig`]) parsed by clap
//! in `main.rs`; shared state is [`state::AppState`].

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod clock;
pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod front;
pub mod id;
pub mod listener;
pub mod metrics;
pub mod seed;
pub mod server;
pub mod state;
pub mod store;

/// Generated protobuf and gRPC code, and the descriptor set for reflection.
pub mod proto {
    /// `portcullis.v1`.
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("portcullis.v1");
    }

    /// The encoded `FileDescriptorSet` of every proto file, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("portcullis_descriptor");

    pub use prost_types::Timestamp;
}
