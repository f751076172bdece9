//! Prometheus metrics: counters and histograms kept in plain atomics and
//! rendered in the Prometheus text format on demand.
//!
//! Every RPC path the server knows is registered at start-up, so recording an
//! RPC is a hash lookup of the path and three atomic additions: no lock and no
//! allocation on the request path. Cache figures are read from the caches when
//! scraped. [`serve`] answers `GET /metrics` on its own HTTP port.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method as HttpMethod, Request, Response, StatusCode, body::Bytes, service::service_fn,
};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::net::TcpListener;

use crate::state::AppState;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// gRPC status code names, indexed by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The method label of paths no service serves.
const UNKNOWN_METHOD: &str = "unknown";

/// Count, sum and buckets of one (method, code).
#[derive(Default)]
struct Cell {
    count: AtomicU64,
    sum_us: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
}

/// The cells of one method, one per status code.
struct MethodCells {
    name: String,
    codes: [Cell; CODE_NAMES.len()],
}

impl MethodCells {
    fn new(name: String) -> Self {
        Self {
            name,
            codes: Default::default(),
        }
    }
}

/// Which storage failure a counter counts.
#[derive(Clone, Copy, Debug)]
pub enum StorageErrorKind {
    /// The database could not be reached or gave no connection in time.
    Unavailable,
    /// Any other database error.
    Internal,
}

/// Which limit refused a call at once with `RESOURCE_EXHAUSTED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// The server's concurrency limit (`--max-concurrent-requests`).
    Server,
    /// The calling principal's share of it (`--max-concurrent-per-principal`).
    Principal,
    /// The calling key's organization's share of it
    /// (`--max-concurrent-per-organization`).
    Organization,
}

/// A method of the served services, as [`Metrics::method`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method(usize);

/// The counters of one server.
pub struct Metrics {
    index: HashMap<String, usize>,
    methods: Vec<MethodCells>,
    in_flight: AtomicI64,
    shed_server: AtomicU64,
    shed_principal: AtomicU64,
    shed_organization: AtomicU64,
    body_timeouts: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    handshake_timeouts: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    storage_up: AtomicU64,
    listener_up: AtomicU64,
    changes_applied: AtomicU64,
    flushes_trimmed: AtomicU64,
    flushes_unreachable: AtomicU64,
    log_trimmed: AtomicU64,
}

/// Why every cached decision was dropped at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushReason {
    /// The change log no longer held changes this replica had not applied.
    Trimmed,
    /// Storage stayed unreachable beyond the unavailable grace.
    Unreachable,
}

/// Storage failures of the process, by kind. They are counted where a database
/// error is converted, which knows no server, so these two are process-wide.
static STORAGE_UNAVAILABLE: AtomicU64 = AtomicU64::new(0);
static STORAGE_INTERNAL: AtomicU64 = AtomicU64::new(0);

/// A storage operation failed.
pub fn record_storage_error(kind: StorageErrorKind) {
    match kind {
        StorageErrorKind::Unavailable => &STORAGE_UNAVAILABLE,
        StorageErrorKind::Internal => &STORAGE_INTERNAL,
    }
    .fetch_add(1, Ordering::Relaxed);
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("methods", &self.methods.len())
            .finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counters for every method of the served services, health and reflection.
    pub fn new() -> Self {
        let mut paths = Vec::new();
        for set in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            if let Ok(set) = prost_types::FileDescriptorSet::decode(set) {
                for file in set.file {
                    let package = file.package().to_owned();
                    for service in &file.service {
                        for method in &service.method {
                            paths.push(format!("{package}.{}/{}", service.name(), method.name()));
                        }
                    }
                }
            }
        }
        for version in ["v1", "v1alpha"] {
            paths.push(format!(
                "grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
            ));
        }
        let mut index = HashMap::with_capacity(paths.len() + 1);
        let mut methods = Vec::with_capacity(paths.len() + 1);
        methods.push(MethodCells::new(UNKNOWN_METHOD.to_owned()));
        for name in paths {
            index.insert(format!("/{name}"), methods.len());
            methods.push(MethodCells::new(name));
        }
        Self {
            index,
            methods,
            in_flight: AtomicI64::new(0),
            shed_server: AtomicU64::new(0),
            shed_principal: AtomicU64::new(0),
            shed_organization: AtomicU64::new(0),
            body_timeouts: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            handshake_timeouts: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            storage_up: AtomicU64::new(1),
            listener_up: AtomicU64::new(0),
            changes_applied: AtomicU64::new(0),
            flushes_trimmed: AtomicU64::new(0),
            flushes_unreachable: AtomicU64::new(0),
            log_trimmed: AtomicU64::new(0),
        }
    }

    /// One change of the log applied (read by this replica's follower).
    pub fn record_change_applied(&self) {
        self.changes_applied.fetch_add(1, Ordering::Relaxed);
    }

    /// Every cached decision dropped at once.
    pub fn record_flush(&self, reason: FlushReason) {
        match reason {
            FlushReason::Trimmed => &self.flushes_trimmed,
            FlushReason::Unreachable => &self.flushes_unreachable,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Changes deleted from the log by this replica's trimming.
    pub fn record_log_trimmed(&self, rows: u64) {
        self.log_trimmed.fetch_add(rows, Ordering::Relaxed);
    }

    /// The method a request path names (`/package.Service/Method`); every
    /// unknown path is one method, `unknown`. No allocation.
    pub fn method(&self, path: &str) -> Method {
        Method(self.index.get(path).copied().unwrap_or(0))
    }

    /// The full name of `method` (`package.Service/Method`), for log spans.
    pub fn method_name(&self, method: Method) -> &str {
        self.methods
            .get(method.0)
            .map_or(UNKNOWN_METHOD, |m| &m.name)
    }

    /// Records a finished RPC of `method` with gRPC status `code`.
    pub fn record_rpc(&self, method: Method, code: u16, latency: Duration) {
        let Some(cell) = self
            .methods
            .get(method.0)
            .and_then(|m| m.codes.get(usize::from(code)))
        else {
            return;
        };
        cell.count.fetch_add(1, Ordering::Relaxed);
        cell.sum_us.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let secs = latency.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            cell.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One more (or, with `-1`, one fewer) RPC in progress.
    pub fn add_in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// An RPC refused at once because of the limit `reason` names.
    pub fn record_shed(&self, reason: ShedReason) {
        match reason {
            ShedReason::Server => &self.shed_server,
            ShedReason::Principal => &self.shed_principal,
            ShedReason::Organization => &self.shed_organization,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// An RPC answered because its request message did not arrive in time.
    pub fn record_body_timeout(&self) {
        self.body_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new connection open if fewer than `max` are; otherwise counts
    /// it refused and answers `false`.
    pub fn connection_opened(&self, max: usize) -> bool {
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        let admitted = self
            .connections_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.connections_refused.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// One connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection closed because it said nothing within the handshake deadline.
    pub fn record_handshake_timeout(&self) {
        self.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` decisions answered, allowed or not.
    pub fn record_decisions(&self, allowed: u64, denied: u64) {
        if allowed > 0 {
            self.allowed.fetch_add(allowed, Ordering::Relaxed);
        }
        if denied > 0 {
            self.denied.fetch_add(denied, Ordering::Relaxed);
        }
    }

    /// Whether the last storage probe succeeded.
    pub fn set_storage_up(&self, up: bool) {
        self.storage_up.store(u64::from(up), Ordering::Relaxed);
    }

    /// Whether the PostgreSQL change listener is listening.
    pub fn set_listener_up(&self, up: bool) {
        self.listener_up.store(u64::from(up), Ordering::Relaxed);
    }

    /// The metrics of `state` in the Prometheus text exposition format.
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_rpcs(&mut out);
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "portcullis_rpc_in_flight",
            "RPCs being served now.",
            self.in_flight.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_rpc_shed_total RPCs refused at once with RESOURCE_EXHAUSTED, by the limit that refused them: the server's concurrency limit, or the calling principal's or organization's share of it.\n\
             # TYPE portcullis_rpc_shed_total counter\n\
             portcullis_rpc_shed_total{{reason=\"server\"}} {}\n\
             portcullis_rpc_shed_total{{reason=\"principal\"}} {}\n\
             portcullis_rpc_shed_total{{reason=\"organization\"}} {}",
            self.shed_server.load(Ordering::Relaxed),
            self.shed_principal.load(Ordering::Relaxed),
            self.shed_organization.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "portcullis_connections_open",
            "Client connections open now (health probes included).",
            i64::try_from(self.connections_open.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        counter(
            &mut out,
            "portcullis_connections_refused_total",
            "Connections closed at once because --max-connections were open.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "portcullis_connection_handshake_timeouts_total",
            "Connections closed because they sent nothing within --handshake-timeout.",
            self.handshake_timeouts.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "portcullis_request_body_timeouts_total",
            "RPCs answered DEADLINE_EXCEEDED because their request message did not arrive within --request-body-timeout.",
            self.body_timeouts.load(Ordering::Relaxed),
        );
        let writes = state.store.write_load();
        let _ = writeln!(
            out,
            "# HELP portcullis_storage_writes Changes at the write gate: waiting for a turn (in the process, holding no storage connection), or writing.\n\
             # TYPE portcullis_storage_writes gauge\n\
             portcullis_storage_writes{{state=\"waiting\"}} {}\n\
             portcullis_storage_writes{{state=\"writing\"}} {}",
            writes.waiting(),
            writes.writing(),
        );
        gauge(
            &mut out,
            "portcullis_http2_max_concurrent_streams",
            "The configured most concurrent HTTP/2 streams per client connection (--max-streams-per-connection), as advertised to clients.",
            i64::from(state.settings.max_streams_per_connection),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_decisions_total Permission decisions answered (Check, BatchCheck items, ExplainCheck).\n\
             # TYPE portcullis_decisions_total counter\n\
             portcullis_decisions_total{{decision=\"allowed\"}} {}\n\
             portcullis_decisions_total{{decision=\"denied\"}} {}",
            self.allowed.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_storage_errors_total Failed storage operations.\n\
             # TYPE portcullis_storage_errors_total counter\n\
             portcullis_storage_errors_total{{kind=\"unavailable\"}} {}\n\
             portcullis_storage_errors_total{{kind=\"internal\"}} {}",
            STORAGE_UNAVAILABLE.load(Ordering::Relaxed),
            STORAGE_INTERNAL.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "portcullis_storage_up",
            "1 when the last storage probe succeeded, else 0.",
            i64::from(self.storage_up.load(Ordering::Relaxed) == 1),
        );
        gauge(
            &mut out,
            "portcullis_change_listener_up",
            "1 while the PostgreSQL change listener is listening (always 0 on SQLite).",
            i64::from(self.listener_up.load(Ordering::Relaxed) == 1),
        );
        gauge(
            &mut out,
            "portcullis_revision_applied",
            "The storage revision up to which this replica applied every change.",
            i64::try_from(state.applied_revision()).unwrap_or(i64::MAX),
        );
        counter(
            &mut out,
            "portcullis_changes_applied_total",
            "Changes read from the change log and applied (those made here are applied when they commit).",
            self.changes_applied.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "portcullis_change_log_trimmed_total",
            "Changes this replica deleted from the change log (retention).",
            self.log_trimmed.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_cache_flushes_total Times every cached decision was dropped at once: the change log no longer held changes this replica had not applied, or storage stayed unreachable beyond the grace.\n\
             # TYPE portcullis_cache_flushes_total counter\n\
             portcullis_cache_flushes_total{{reason=\"trimmed\"}} {}\n\
             portcullis_cache_flushes_total{{reason=\"unreachable\"}} {}",
            self.flushes_trimmed.load(Ordering::Relaxed),
            self.flushes_unreachable.load(Ordering::Relaxed),
        );
        let decisions = state.decisions.stats();
        let keys = state.keys.stats();
        let _ = writeln!(
            out,
            "# HELP portcullis_cache_hits_total Cache lookups answered from the cache.\n\
             # TYPE portcullis_cache_hits_total counter\n\
             portcullis_cache_hits_total{{cache=\"decision\"}} {}\n\
             portcullis_cache_hits_total{{cache=\"api_key\"}} {}\n\
             # HELP portcullis_cache_misses_total Cache lookups that loaded from storage.\n\
             # TYPE portcullis_cache_misses_total counter\n\
             portcullis_cache_misses_total{{cache=\"decision\"}} {}\n\
             portcullis_cache_misses_total{{cache=\"api_key\"}} {}\n\
             # HELP portcullis_cache_evictions_total Entries dropped for room (size) or age (expired); invalidations are not counted.\n\
             # TYPE portcullis_cache_evictions_total counter\n\
             portcullis_cache_evictions_total{{cache=\"decision\",cause=\"size\"}} {}\n\
             portcullis_cache_evictions_total{{cache=\"decision\",cause=\"expired\"}} {}\n\
             portcullis_cache_evictions_total{{cache=\"api_key\",cause=\"size\"}} {}\n\
             portcullis_cache_evictions_total{{cache=\"api_key\",cause=\"expired\"}} {}\n\
             # HELP portcullis_cache_invalidated_total Entries dropped because a change made them stale.\n\
             # TYPE portcullis_cache_invalidated_total counter\n\
             portcullis_cache_invalidated_total{{cache=\"decision\"}} {}\n\
             portcullis_cache_invalidated_total{{cache=\"api_key\"}} {}\n\
             # HELP portcullis_cache_entries Entries cached now.\n\
             # TYPE portcullis_cache_entries gauge\n\
             portcullis_cache_entries{{cache=\"decision\"}} {}\n\
             portcullis_cache_entries{{cache=\"api_key\"}} {}",
            decisions.hits,
            keys.hits,
            decisions.misses,
            keys.misses,
            decisions.evicted_size,
            decisions.evicted_expired,
            keys.evicted_size,
            keys.evicted_expired,
            decisions.invalidated,
            keys.invalidated,
            decisions.entries,
            keys.entries,
        );
        out
    }

    fn render_rpcs(&self, out: &mut String) {
        out.push_str(
            "# HELP portcullis_rpc_requests_total RPCs finished, by method and gRPC status code.\n\
             # TYPE portcullis_rpc_requests_total counter\n",
        );
        self.each_cell(|method, code, cell| {
            let _ = writeln!(
                out,
                "portcullis_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {}",
                cell.count.load(Ordering::Relaxed)
            );
        });
        out.push_str(
            "# HELP portcullis_rpc_duration_seconds Time from request headers to response, by method and gRPC status code.\n\
             # TYPE portcullis_rpc_duration_seconds histogram\n",
        );
        self.each_cell(|method, code, cell| {
            let labels = format!("method=\"{method}\",code=\"{code}\"");
            let mut cumulative = 0;
            for (le, bucket) in LATENCY_BUCKETS.iter().zip(&cell.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "portcullis_rpc_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let count = cell.count.load(Ordering::Relaxed);
            let sum = cell.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "portcullis_rpc_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n\
                 portcullis_rpc_duration_seconds_sum{{{labels}}} {sum}\n\
                 portcullis_rpc_duration_seconds_count{{{labels}}} {count}"
            );
        });
    }

    /// Calls `f` for every (method, code) that has seen at least one RPC.
    fn each_cell(&self, mut f: impl FnMut(&str, &str, &Cell)) {
        for method in &self.methods {
            for (code, cell) in CODE_NAMES.iter().zip(&method.codes) {
                if cell.count.load(Ordering::Relaxed) > 0 {
                    f(&method.name, code, cell);
                }
            }
        }
    }
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds the metrics port.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError { addr, source })
}

/// Answers `GET /metrics` (and `GET /`), and `GET /.well-known/jwks.json`
/// (the keys that verify temporary credentials), on `listener` until dropped.
pub async fn serve(listener: TcpListener, state: AppState) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&req, &state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "metrics: connection ended with an error");
            }
        });
    }
}

/// Where the key set that verifies temporary credentials is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

async fn respond<B>(req: &Request<B>, state: &AppState) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&HttpMethod::GET, "/metrics" | "/") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(state),
        ),
        // Read from storage on every request, so that a key is published
        // by every replica as soon as it is stored (before it signs).
        (&HttpMethod::GET, JWKS_PATH) => match crate::domain::credentials::jwks(state).await {
            Ok(jwks) => (StatusCode::OK, "application/jwk-set+json", jwks),
            Err(err) => {
                tracing::warn!(error = %err, "jwks: cannot read the signing keys");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "the key set cannot be read now; retry later\n".to_owned(),
                )
            }
        },
        (&HttpMethod::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("not found: metrics are at /metrics, the credential key set at {JWKS_PATH}\n"),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is served\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_paths_of_every_service_are_known() {
        let m = Metrics::new();
        for path in [
            "/portcullis.v1.CheckService/Check",
            "/portcullis.v1.IdentityService/CreateServiceKey",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(m.index.contains_key(path), "{path}");
        }
        assert!(!m.index.contains_key("/nope.Service/Nope"));
    }

    #[test]
    fn latencies_land_in_cumulative_buckets() {
        let m = Metrics::new();
        let path = "/portcullis.v1.CheckService/Check";
        m.record_rpc(m.method(path), 0, Duration::from_micros(300));
        m.record_rpc(m.method(path), 0, Duration::from_millis(3));
        m.record_rpc(m.method(path), 7, Duration::from_secs(30));
        m.record_rpc(
            m.method("/nope.Service/Nope"),
            12,
            Duration::from_micros(50),
        );
        let mut out = String::new();
        m.render_rpcs(&mut out);
        let check = "method=\"portcullis.v1.CheckService/Check\"";
        assert!(out.contains(&format!(
            "portcullis_rpc_requests_total{{{check},code=\"OK\"}} 2"
        )));
        assert!(out.contains(&format!(
            "portcullis_rpc_duration_seconds_bucket{{{check},code=\"OK\",le=\"0.00025\"}} 0"
        )));
        assert!(out.contains(&format!(
            "portcullis_rpc_duration_seconds_bucket{{{check},code=\"OK\",le=\"0.0005\"}} 1"
        )));
        assert!(out.contains(&format!(
            "portcullis_rpc_duration_seconds_bucket{{{check},code=\"OK\",le=\"0.005\"}} 2"
        )));
        // Beyond the last bucket: only +Inf counts it.
        assert!(out.contains(&format!(
            "portcullis_rpc_duration_seconds_bucket{{{check},code=\"PERMISSION_DENIED\",le=\"10\"}} 0"
        )));
        assert!(out.contains(&format!(
            "portcullis_rpc_duration_seconds_bucket{{{check},code=\"PERMISSION_DENIED\",le=\"+Inf\"}} 1"
        )));
        assert!(out.contains(
            "portcullis_rpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 1"
        ));
        // Cells never used are not rendered.
        assert!(!out.contains("code=\"DATA_LOSS\""));
    }
}
