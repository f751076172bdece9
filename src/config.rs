//! One typed configuration, parsed by clap from flags and `PORTCULLIS_*`
//! environment variables, and passed down; nothing deeper reads the environment.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, ValueEnum};

use crate::{auth::jwt::KeyPair, authz::cache::CacheConfig, clock::Clock};

/// How plan limits are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum DeploymentMode {
    /// A self-hosted installation: plan checks are bypassed, as in enterprise deployments.
    #[default]
    #[value(name = "self_hosted")]
    SelfHosted,
    /// The hosted service: plans gate roles, workspaces and custom roles.
    #[value(name = "saas")]
    Saas,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the database is.
#[derive(Args, Clone, Debug)]
pub struct DatabaseConfig {
    /// Database URL: `sqlite://FILE?mode=rwc` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "PORTCULLIS_DATABASE_URL",
        default_value = "sqlite://portcullis.db?mode=rwc"
    )]
    pub database_url: String,
}

/// Everything `portcullis serve` needs.
#[derive(Args, Clone, Debug)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Address the gRPC server listens on.
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// `self_hosted` bypasses plan checks; `saas` enforces them.
    #[arg(long, env = "PORTCULLIS_DEPLOYMENT_MODE", value_enum, default_value_t)]
    pub deployment_mode: DeploymentMode,

    /// Let workspace admins invite users to the organization with a role in
    /// their workspace (workspace-level invites, for self-hosted installations).
    #[arg(long, env = "PORTCULLIS_WORKSPACE_INVITES")]
    pub workspace_invites: bool,

    /// Do not apply pending migrations at start-up (run `portcullis migrate` instead).
    #[arg(long, env = "PORTCULLIS_NO_MIGRATE")]
    pub no_migrate: bool,

    /// How long in-flight calls may run after SIGTERM before the server exits.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    /// Most (principal, workspace) decision sets cached.
    #[arg(long, env = "PORTCULLIS_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,

    /// Most memory the decision cache may use, in MiB (estimated).
    #[arg(long, env = "PORTCULLIS_CACHE_MEMORY_MB", default_value_t = 256)]
    pub cache_memory_mb: u64,

    /// Age after which a cached decision set is reloaded whatever happened.
    #[arg(long, env = "PORTCULLIS_CACHE_TTL", value_parser = parse_duration, default_value = "60s")]
    pub cache_ttl: Duration,

    /// How often to read the change log for changes made elsewhere (a
    /// notification, when listening, wakes the reader at once).
    #[arg(long, env = "PORTCULLIS_REVISION_POLL", value_parser = parse_duration, default_value = "1s")]
    pub revision_poll: Duration,

    /// `LISTEN` for change notifications (PostgreSQL). Turn off behind a
    /// transaction-mode pooler or on a database without `LISTEN`: the change
    /// log is then read every `--revision-poll`.
    #[arg(long, env = "PORTCULLIS_LISTEN_FOR_CHANGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub listen_for_changes: bool,

    /// How long the change log keeps a change (replicas further behind, and
    /// watchers resuming from before it, start over).
    #[arg(long, env = "PORTCULLIS_CHANGE_LOG_RETENTION", value_parser = parse_duration, default_value = "24h")]
    pub change_log_retention: Duration,

    /// How often expired grants and team memberships are removed (and
    /// audited). They stop applying at their expiry whatever this is.
    #[arg(long, env = "PORTCULLIS_EXPIRY_SWEEP", value_parser = parse_duration, default_value = "60s")]
    pub expiry_sweep: Duration,

    /// Most changes the change log keeps.
    #[arg(
        long,
        env = "PORTCULLIS_CHANGE_LOG_MAX_ENTRIES",
        default_value_t = 1_000_000
    )]
    pub change_log_max_entries: u64,

    /// Most checks in one BatchCheck.
    #[arg(long, env = "PORTCULLIS_MAX_BATCH_SIZE", default_value_t = 1000)]
    pub max_batch_size: usize,

    /// How long cached decisions are still served after storage stops
    /// answering; then they are dropped and Checks fail closed (UNAVAILABLE).
    #[arg(long, env = "PORTCULLIS_UNAVAILABLE_GRACE", value_parser = parse_duration, default_value = "5s")]
    pub unavailable_grace: Duration,

    /// Also serve `portcullis.v1.NoopService`, the ceiling for benchmarks.
    #[arg(long, env = "PORTCULLIS_BENCH_NOOP")]
    pub bench_noop: bool,

    /// Address of the Prometheus metrics endpoint (`GET /metrics`), or `off`.
    #[arg(long, env = "PORTCULLIS_METRICS_LISTEN", value_parser = parse_listen_or_off, default_value = "127.0.0.1:9090")]
    pub metrics_listen: MetricsListen,

    /// Most RPCs served at once; beyond it calls are refused at once with
    /// RESOURCE_EXHAUSTED instead of queueing. Health and reflection are exempt.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CONCURRENT_REQUESTS",
        default_value_t = 1024
    )]
    pub max_concurrent_requests: usize,

    /// Most RPCs one principal (the calling key's user or service account)
    /// has in flight at once; beyond it its calls are refused at once with
    /// RESOURCE_EXHAUSTED. Keep it below `--max-concurrent-requests` so that
    /// no single principal can take the whole server.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CONCURRENT_PER_PRINCIPAL",
        default_value_t = 256
    )]
    pub max_concurrent_per_principal: usize,

    /// Most RPCs the keys of one organization have in flight at once, all
    /// its principals together; beyond it its calls are refused at once with
    /// RESOURCE_EXHAUSTED. Keep it below `--max-concurrent-requests` so that
    /// no single tenant can take the whole server (a single-tenant
    /// installation may set it equal).
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CONCURRENT_PER_ORGANIZATION",
        default_value_t = 512
    )]
    pub max_concurrent_per_organization: usize,

    /// Most concurrent HTTP/2 streams (calls) one client connection may open;
    /// clients wait for a stream to finish before opening more.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 256
    )]
    pub max_streams_per_connection: u32,

    /// Most client connections open at once; a connection beyond it is
    /// closed as soon as it is accepted.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Longest a new connection may stay silent (no HTTP/2 preface, no TLS
    /// ClientHello) before it is closed.
    #[arg(long, env = "PORTCULLIS_HANDSHAKE_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,

    /// Longest the whole request message may take to arrive after the
    /// request headers; a call whose message is later is answered
    /// DEADLINE_EXCEEDED before it takes a slot of the concurrency limit.
    #[arg(long, env = "PORTCULLIS_REQUEST_BODY_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub request_body_timeout: Duration,

    /// Longest an RPC may run before it is answered DEADLINE_EXCEEDED; a
    /// shorter client deadline (`grpc-timeout`) wins.
    #[arg(long, env = "PORTCULLIS_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,

    /// Largest request or response message, in bytes; a larger request is
    /// refused with OUT_OF_RANGE.
    #[arg(long, env = "PORTCULLIS_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// PEM certificate chain for TLS on the gRPC port (with `--tls-key`); plaintext without.
    #[arg(long, env = "PORTCULLIS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "PORTCULLIS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "PORTCULLIS_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    #[command(flatten)]
    pub credentials: CredentialsConfig,
}

/// Temporary credentials: their issuer, lifetimes and signing key.
#[derive(Args, Clone, Debug)]
pub struct CredentialsConfig {
    /// The `iss` claim of temporary credentials.
    #[arg(
        long,
        env = "PORTCULLIS_TEMPORARY_CREDENTIALS_ISSUER",
        default_value = "portcullis"
    )]
    pub temporary_credentials_issuer: String,

    /// Lifetime of a temporary credential when the request names none.
    #[arg(long, env = "PORTCULLIS_TEMPORARY_CREDENTIALS_DEFAULT_TTL", value_parser = parse_duration, default_value = "15m")]
    pub temporary_credentials_default_ttl: Duration,

    /// Longest lifetime a temporary credential may ask for (at most 24h). A
    /// retired signing key stays published this long (and 5 s more) after
    /// its retirement.
    #[arg(long, env = "PORTCULLIS_TEMPORARY_CREDENTIALS_MAX_TTL", value_parser = parse_duration, default_value = "1h")]
    pub temporary_credentials_max_ttl: Duration,

    /// Sign temporary credentials with the Ed25519 key in this file (PEM
    /// PKCS#8, as `openssl genpkey -algorithm ed25519` writes it, or 32 raw
    /// bytes) instead of the keys kept in the database.
    #[arg(long, env = "PORTCULLIS_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
}

/// Longest `--temporary-credentials-max-ttl`.
pub const MAX_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

impl CredentialsConfig {
    /// The run-time settings; reads the key file if one is named.
    pub fn settings(&self) -> Result<CredentialSettings, String> {
        let issuer = self.temporary_credentials_issuer.trim();
        if issuer.is_empty() || issuer.len() > 256 {
            return Err("--temporary-credentials-issuer: must hold 1 to 256 bytes".into());
        }
        let (default_ttl, max_ttl) = (
            self.temporary_credentials_default_ttl,
            self.temporary_credentials_max_ttl,
        );
        if max_ttl < Duration::from_secs(1) || max_ttl > MAX_CREDENTIAL_TTL {
            return Err("--temporary-credentials-max-ttl: must be between 1s and 24h".into());
        }
        if default_ttl < Duration::from_secs(1) || default_ttl > max_ttl {
            return Err(
                "--temporary-credentials-default-ttl: must be between 1s and --temporary-credentials-max-ttl"
                    .into(),
            );
        }
        let key_file = match &self.signing_key_file {
            Some(path) => {
                let contents = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let key = KeyPair::from_file(&contents)
                    .map_err(|e| format!("--signing-key-file {}: {e}", path.display()))?;
                Some(Arc::new(key))
            }
            None => None,
        };
        Ok(CredentialSettings {
            issuer: issuer.to_owned(),
            default_ttl,
            max_ttl,
            key_file,
        })
    }
}

/// How temporary credentials are issued.
#[derive(Clone, Debug)]
pub struct CredentialSettings {
    /// The `iss` claim.
    pub issuer: String,
    /// Lifetime when the request names none.
    pub default_ttl: Duration,
    /// Longest lifetime a request may ask for.
    pub max_ttl: Duration,
    /// The key from `--signing-key-file`; `None`: the keys in the database.
    pub key_file: Option<Arc<KeyPair>>,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(3600),
            key_file: None,
        }
    }
}

/// Where the metrics endpoint listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

/// Parses a socket address, or `off` (or an empty value) for none.
pub fn parse_listen_or_off(s: &str) -> Result<MetricsListen, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(MetricsListen(None));
    }
    s.parse()
        .map(|addr| MetricsListen(Some(addr)))
        .map_err(|_| format!("`{s}` is not an address like 0.0.0.0:9090, nor `off`"))
}

/// PEM material for TLS on the gRPC port.
#[derive(Clone)]
pub struct TlsMaterial {
    /// Certificate chain.
    pub cert_pem: Vec<u8>,
    /// Private key.
    pub key_pem: Vec<u8>,
    /// CA bundle client certificates must chain to, for mutual TLS.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsMaterial")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// The settings the server needs at run time, derived from [`ServeConfig`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Plan enforcement mode.
    pub deployment_mode: DeploymentMode,
    /// Workspace admins may invite users with a role in their workspace.
    pub workspace_invites: bool,
    /// Serve the no-op benchmark service.
    pub bench_noop: bool,
    /// How long in-flight calls may run after shutdown starts.
    pub shutdown_grace: Duration,
    /// How often storage is probed for the health status.
    pub health_probe_interval: Duration,
    /// Decision and key cache bounds.
    pub cache: CacheConfig,
    /// How often the storage revision is polled, the fallback when a change
    /// notification from another replica is lost.
    pub revision_poll_interval: Duration,
    /// Whether to `LISTEN` for change notifications (PostgreSQL).
    pub listen_for_changes: bool,
    /// How long the change log keeps a change.
    pub change_log_retention: Duration,
    /// How often expired grants and team memberships are removed.
    pub expiry_sweep: Duration,
    /// The clock grant and membership expiries are judged by.
    pub clock: Clock,
    /// Most changes the change log keeps.
    pub change_log_max_entries: u64,
    /// Most checks in one BatchCheck.
    pub max_batch_size: usize,
    /// How long cached decisions are served after storage stops answering.
    pub unavailable_grace: Duration,
    /// Most RPCs served at once (health and reflection exempt).
    pub max_concurrent_requests: usize,
    /// Most RPCs one principal has in flight at once.
    pub max_concurrent_per_principal: usize,
    /// Most RPCs one organization's keys have in flight at once.
    pub max_concurrent_per_organization: usize,
    /// Most concurrent HTTP/2 streams per client connection.
    pub max_streams_per_connection: u32,
    /// Longest the request message may take to arrive, before admission.
    pub request_body_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Longest a new connection may stay silent.
    pub handshake_timeout: Duration,
    /// Longest an RPC may run.
    pub request_timeout: Duration,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// TLS for the gRPC port; plaintext when `None`.
    pub tls: Option<TlsMaterial>,
    /// Temporary credentials.
    pub credentials: CredentialSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            deployment_mode: DeploymentMode::default(),
            workspace_invites: false,
            bench_noop: false,
            shutdown_grace: Duration::from_secs(10),
            health_probe_interval: Duration::from_secs(2),
            cache: CacheConfig::default(),
            revision_poll_interval: Duration::from_secs(1),
            listen_for_changes: true,
            change_log_retention: Duration::from_secs(24 * 3600),
            expiry_sweep: Duration::from_secs(60),
            clock: Clock::default(),
            change_log_max_entries: 1_000_000,
            max_batch_size: 1000,
            unavailable_grace: Duration::from_secs(5),
            max_concurrent_requests: 1024,
            max_concurrent_per_principal: 256,
            max_concurrent_per_organization: 512,
            max_streams_per_connection: 256,
            request_body_timeout: Duration::from_secs(2),
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
            tls: None,
            credentials: CredentialSettings::default(),
        }
    }
}

impl ServeConfig {
    /// The run-time settings; reads the TLS files if any are named.
    pub fn settings(&self) -> Result<Settings, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsMaterial {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
                client_ca_pem: self.tls_client_ca.as_ref().map(read).transpose()?,
            }),
            _ => None,
        };
        Ok(Settings {
            deployment_mode: self.deployment_mode,
            workspace_invites: self.workspace_invites,
            bench_noop: self.bench_noop,
            shutdown_grace: self.shutdown_grace,
            cache: CacheConfig {
                max_entries: self.cache_capacity.max(1),
                max_bytes: self.cache_memory_mb.max(1) * 1024 * 1024,
                ttl: self.cache_ttl,
            },
            revision_poll_interval: self.revision_poll,
            listen_for_changes: self.listen_for_changes,
            change_log_retention: self.change_log_retention,
            expiry_sweep: self.expiry_sweep.max(Duration::from_millis(100)),
            clock: Clock::default(),
            change_log_max_entries: self.change_log_max_entries.max(1),
            max_batch_size: self.max_batch_size.max(1),
            unavailable_grace: self.unavailable_grace,
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            max_concurrent_per_principal: self.max_concurrent_per_principal.max(1),
            max_concurrent_per_organization: self.max_concurrent_per_organization.max(1),
            max_streams_per_connection: self.max_streams_per_connection.max(1),
            request_body_timeout: self.request_body_timeout.max(Duration::from_millis(1)),
            max_connections: self.max_connections.max(1),
            handshake_timeout: self.handshake_timeout.max(Duration::from_millis(1)),
            request_timeout: self.request_timeout.max(Duration::from_millis(1)),
            max_message_bytes: self.max_message_bytes.max(1024),
            tls,
            credentials: self.credentials.settings()?,
            ..Settings::default()
        })
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 10s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(18_000)));
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn metrics_listen_takes_an_address_or_off() {
        assert_eq!(parse_listen_or_off("off"), Ok(MetricsListen(None)));
        assert_eq!(parse_listen_or_off(""), Ok(MetricsListen(None)));
        assert_eq!(
            parse_listen_or_off("0.0.0.0:9090"),
            Ok(MetricsListen(Some("0.0.0.0:9090".parse().unwrap())))
        );
        assert!(parse_listen_or_off("9090").is_err());
    }
}
