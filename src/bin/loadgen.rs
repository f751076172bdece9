//! Load generator for the gRPC path.
//!
//! Seeds a realistic data set (users, workspaces, teams, grants) into a fresh
//! database, starts `portcullis serve` as a separate process on loopback
//! (with the production log filter, `info`), and drives it for a fixed
//! duration. The throughput scenarios use a raw HTTP/2 client whose requests
//! are encoded before the run, so the generator takes as little as it can
//! of the cores it shares with the server.
//!
//! * `ceiling` — `grpc.health.v1.Health/Check` on a bare tonic server (the
//!   `ceiling` binary: no project layer), started beside Portcullis;
//! * `noop`  — `NoopService/Noop`: every production layer, no work;
//! * `hit`   — `Check` on a working set that fits the cache, about a user;
//! * `hit-key` — the same with an API key as the principal;
//! * `batch` — `BatchCheck` of 100 cache hits;
//! * `open`  — `Check` hits at fixed offered loads (`--rates`), open loop,
//!   latency from each call's scheduled start; the ceiling alike;
//! * `flush` — recovery from a flush of the whole cache under load: a time
//!   series of throughput and p99 per 100 ms;
//! * `miss`  — `Check` on random (user, workspace) pairs against a server
//!   whose cache holds 16 sets, so nearly every call resolves from storage;
//! * `overload` — a server limited to 8 concurrent requests, driven with
//!   misses at four times the concurrency;
//! * `invalidation` — decision sets dropped by one change of each kind
//!   (grant, revocation, team grant, team membership, custom role edit,
//!   resource tags); `--server-binary` runs an earlier build to compare;
//! * `revocation` (PostgreSQL) — two replicas; grant on A, warm B, revoke on
//!   A, poll B until it denies: the cross-replica revocation latency.
//!
//! `ceiling`, `noop`, `hit` and `hit-key` alternate (A B C D A B C D) at
//! each of `--levels`, and every figure is printed as a share of the
//! ceiling's at the same level.
//!
//! ```text
//! cargo build --release --bins && ./target/release/loadgen
//! ./target/release/loadgen --postgres postgres://postgres@127.0.0.1:5432
//! ```

// A benchmark tool: failing loudly is its error handling.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use portcullis::{
    config::parse_duration,
    proto::v1::{
        self as pb, check_service_client::CheckServiceClient,
        identity_service_client::IdentityServiceClient, roles_service_client::RolesServiceClient,
        workspace_service_client::WorkspaceServiceClient,
    },
    seed::{self, Rng, SeedSize, Seeded},
    store::Store,
};
use prost::Message as _;
use sea_orm::ConnectionTrait;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;

/// Drives a Portcullis server and prints a latency and throughput table.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Use a fresh database on this PostgreSQL server (dropped afterwards)
    /// instead of a temporary SQLite file.
    #[arg(long)]
    postgres: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 1_000)]
    workspaces: usize,
    #[arg(long, default_value_t = 100)]
    teams: usize,
    /// Total grants, including each user's grant on their default workspace.
    #[arg(long, default_value_t = 1_000_000)]
    grants: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured time per scenario.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Unmeasured time before each scenario.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Scenarios to run, comma separated (`overload`: a server limited to 8
    /// concurrent requests, driven with cache misses at 4x the concurrency).
    #[arg(
        long,
        default_value = "ceiling,noop,hit,hit-key,batch,miss,overload,revocation"
    )]
    scenarios: String,
    /// Requests in flight for the scenarios measured against the ceiling
    /// (`ceiling`, `noop`, `hit`, `hit-key`), comma separated.
    #[arg(long, default_value = "1,16,64")]
    levels: String,
    /// Alternating rounds at each level.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Offered loads of the open-loop scenario (`open`), Checks per second.
    #[arg(long, default_value = "5000,10000,20000")]
    rates: String,
    /// (principal, workspace) pairs the `flush` scenario keeps cached.
    #[arg(long, default_value_t = 20_000)]
    working_set: usize,
    /// Trials of the revocation scenario.
    #[arg(long, default_value_t = 200)]
    revocation_trials: usize,
    /// The server to drive (default: `portcullis` beside this binary), e.g.
    /// an earlier build to compare with.
    #[arg(long)]
    server_binary: Option<std::path::PathBuf>,
}

struct Server {
    child: Child,
    addr: String,
    /// Where it serves `/metrics`.
    metrics: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(50555)
}

/// The bare tonic server every gRPC figure is compared with.
fn start_ceiling() -> Server {
    let exe = std::env::current_exe().expect("own path");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(exe.with_file_name("ceiling"))
        .args(["--listen", &addr])
        .stdout(Stdio::null())
        .spawn()
        .expect("start ceiling (build it with `cargo build --release --bins` first)");
    Server {
        child,
        addr,
        metrics: String::new(),
    }
}

/// The server binary: `--server-binary`, else `portcullis` beside this one.
static SERVER_BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn start_server(url: &str, extra: &[&str]) -> Server {
    let bin = SERVER_BINARY.get_or_init(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("portcullis")
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .args([
            "serve",
            "--no-migrate",
            "--bench-noop",
            "--listen",
            &addr,
            "--metrics-listen",
            &metrics,
            "--database-url",
            url,
        ])
        .args(extra)
        // The production default filter (`info`): spans and all.
        .env("PORTCULLIS_LOG", "info")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start portcullis serve (build it with `cargo build --release` first)");
    Server {
        child,
        addr,
        metrics,
    }
}

async fn channels(addr: &str, n: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ep = Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .tcp_nodelay(true);
            match ep.connect().await {
                Ok(c) => {
                    out.push(c);
                    break;
                }
                Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    out
}

fn authed<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {key}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

fn check_req(user: &str, ws: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        principal: Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::UserId(user.to_owned())),
        }),
        workspace_id: ws.to_owned(),
        permission: "datasets:read".into(),
        resource: Some(pb::Resource {
            r#type: "datasets".into(),
            id: "d1".into(),
            tags: vec![pb::Tag {
                key: "Application".into(),
                value: "app".into(),
            }],
        }),
        at_least_revision: 0,
    }
}

/// One scenario's results.
struct Report {
    name: String,
    /// The scenario's name without its level.
    scenario: String,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// Latencies of the successful requests.
    latencies_us: Vec<u32>,
    /// Latencies of the refused ones (shed, in the overload scenario).
    error_latencies_us: Vec<u32>,
    checks_per_request: u64,
    /// Requests in flight.
    level: usize,
    /// The machine's processor time while it was measured (every process:
    /// the server, the database, this generator).
    cpu: Option<CpuUse>,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Busy share of the machine's processors, and busy processor time per
    /// request in microseconds, as table cells.
    fn cpu_cells(&self) -> (String, String) {
        match &self.cpu {
            Some(cpu) if cpu.total > 0 && self.requests > 0 => {
                let busy = cpu.busy as f64 / cpu.total as f64;
                let per_request = busy * cpu.processors as f64 * self.elapsed.as_secs_f64() * 1e6
                    / self.requests as f64;
                (format!("{:.0}", busy * 100.0), format!("{per_request:.0}"))
            }
            _ => ("–".into(), "–".into()),
        }
    }

    fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// Processor time of the whole machine over a measurement (`/proc/stat`,
/// in clock ticks summed over its processors).
#[derive(Clone, Copy, Debug)]
struct CpuUse {
    busy: u64,
    total: u64,
    processors: usize,
}

/// The machine's processor ticks so far: busy (all but idle and I/O wait),
/// total, and how many processors; `None` where `/proc/stat` is missing.
fn cpu_ticks() -> Option<CpuUse> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let fields: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    let processors = lines.filter(|l| l.starts_with("cpu")).count();
    Some(CpuUse {
        busy: total - idle,
        total,
        processors,
    })
}

/// The machine's processor time between `from` and `to`.
async fn cpu_between(from: Instant, to: Instant) -> Option<CpuUse> {
    tokio::time::sleep_until(from.into()).await;
    let start = cpu_ticks()?;
    tokio::time::sleep_until(to.into()).await;
    let end = cpu_ticks()?;
    Some(CpuUse {
        busy: end.busy.saturating_sub(start.busy),
        total: end.total.saturating_sub(start.total),
        processors: end.processors,
    })
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

/// Whether a Check answered OK and allowed: a hit scenario asks only
/// about granted pairs, so anything else is a failure.
fn allowed(message: Option<hyper::body::Bytes>) -> bool {
    message
        .and_then(|m| pb::CheckResponse::decode(m).ok())
        .is_some_and(|r| r.allowed)
}

/// Check on cache hits at a fixed offered load (open loop): calls start on
/// schedule whether or not earlier ones have finished, and each latency is
/// taken from the call's scheduled start, so a stall is not hidden by the
/// load generator waiting (no coordinated omission).
async fn open_loop(
    args: &Args,
    conns: &[raw::Conn],
    call: &Arc<raw::Call>,
    bodies: &Arc<Vec<hyper::body::Bytes>>,
    rate: u32,
    what: &str,
    ok: fn(Option<hyper::body::Bytes>) -> bool,
) -> Report {
    /// Calls outstanding beyond which the generator counts a call as
    /// failed instead of starting it: the server is not keeping up.
    const MAX_OUTSTANDING: usize = 20_000;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let outstanding = Arc::new(AtomicUsize::new(0));
    // The schedule runs on a thread of its own, which sleeps with the
    // operating system's resolution (tokio's timer has 1 ms), and starts
    // each call as a task on the runtime.
    let runtime = tokio::runtime::Handle::current();
    let (conns, call, bodies) = (conns.to_vec(), call.clone(), bodies.clone());
    let (warmup, total) = (args.warmup, args.warmup + args.duration);
    let (lat, err, out) = (latencies.clone(), errors.clone(), outstanding.clone());
    let now = Instant::now();
    let cpu = tokio::spawn(cpu_between(now + warmup, now + total));
    let handles = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let warm_until = started + warmup;
        let mut handles = Vec::new();
        let mut issued: u64 = 0;
        loop {
            let elapsed = started.elapsed();
            if elapsed >= total {
                break;
            }
            let due = (elapsed.as_secs_f64() * f64::from(rate)) as u64;
            while issued < due {
                let scheduled = started + Duration::from_secs_f64(issued as f64 / f64::from(rate));
                let measured = scheduled >= warm_until;
                let conn = conns[issued as usize % conns.len()].clone();
                let body = bodies[issued as usize % bodies.len()].clone();
                issued += 1;
                if out.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
                    if measured {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                out.fetch_add(1, Ordering::Relaxed);
                let (call, lat, err, out) = (call.clone(), lat.clone(), err.clone(), out.clone());
                handles.push(runtime.spawn(async move {
                    let ok = ok(raw::unary(conn, &call, body).await);
                    out.fetch_sub(1, Ordering::Relaxed);
                    if !measured {
                        return;
                    }
                    if ok {
                        let us = u32::try_from(scheduled.elapsed().as_micros()).unwrap_or(u32::MAX);
                        lat.lock().unwrap().push(us);
                    } else {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        handles
    })
    .await
    .expect("schedule thread");
    for h in handles {
        let _ = h.await;
    }
    let mut latencies_us = std::mem::take(&mut *latencies.lock().unwrap());
    latencies_us.sort_unstable();
    Report {
        name: format!("open loop: {what}, offered {rate}/s"),
        scenario: format!("open: {what}"),
        requests: latencies_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed: args.duration,
        latencies_us,
        error_latencies_us: Vec::new(),
        checks_per_request: 1,
        level: 0,
        cpu: cpu.await.ok().flatten(),
    }
}

/// Recovery from a full flush: caches `--working-set` (principal,
/// workspace) pairs, keeps 64 Checks in flight over them, drops every
/// cached set of the organization (a resource type registration
/// invalidates the whole organization, which holds the whole data set) and
/// prints throughput and p99 per 100 ms until load has run for 5 s after it.
async fn flush_recovery(args: &Args, url: &str, seeded: &Seeded) {
    const BUCKET: Duration = Duration::from_millis(100);
    const BEFORE: usize = 10; // buckets before the flush
    const AFTER: usize = 50;
    let server = start_server(url, &[]);
    channels(&server.addr, 1).await;
    let conns = raw::connect(&server.addr, args.connections).await;
    let call = raw::Call::new(
        &server.addr,
        "/portcullis.v1.CheckService/Check",
        Some(&seeded.key),
    );
    let pairs: Vec<_> = seeded.granted.iter().take(args.working_set).collect();
    let bodies: Arc<Vec<_>> = Arc::new(
        pairs
            .iter()
            .map(|(u, ws)| raw::frame(&check_req(u, ws)))
            .collect(),
    );
    // Warm: every pair once to load it, then once more as a hit, so that the
    // cache's housekeeping after the bulk of inserts is done before the
    // baseline is measured (without it the baseline ran 10–17 % below the
    // hit rate after the refill).
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..2 {
        for (i, body) in bodies.iter().enumerate() {
            let (conn, call, body) = (conns[i % conns.len()].clone(), call.clone(), body.clone());
            warm.spawn(async move { raw::unary(conn, &call, body).await });
            if warm.len() >= 64 {
                warm.join_next().await;
            }
        }
        while warm.join_next().await.is_some() {}
    }

    let started = Instant::now();
    let end = started + BUCKET * (BEFORE + AFTER) as u32;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (conn, call, bodies) = (conns[w % conns.len()].clone(), call.clone(), bodies.clone());
        workers.spawn(async move {
            // (finished at, latency) of every call.
            let mut done = Vec::new();
            let mut i = w * 7919;
            while Instant::now() < end {
                let t0 = Instant::now();
                let ok = allowed(
                    raw::unary(conn.clone(), &call, bodies[i % bodies.len()].clone()).await,
                );
                i += 1;
                if ok {
                    done.push((t0.elapsed(), Instant::now()));
                }
            }
            done
        });
    }
    tokio::time::sleep(BUCKET * BEFORE as u32).await;
    let flushed_at = Instant::now();
    let mut admin = RolesServiceClient::new(channels(&server.addr, 1).await.remove(0));
    admin
        .register_resource_type(authed(
            pb::RegisterResourceTypeRequest {
                organization_id: seeded.organization_id.clone(),
                resource_type: "bench_flush".into(),
                actions: vec!["read".into()],
            },
            &seeded.key,
        ))
        .await
        .expect("flush: RegisterResourceType");
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); BEFORE + AFTER + 1];
    while let Some(done) = workers.join_next().await {
        for (latency, at) in done.expect("worker") {
            let b = ((at - started).as_micros() / BUCKET.as_micros()) as usize;
            if let Some(bucket) = buckets.get_mut(b) {
                bucket.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
        }
    }
    let flush_bucket = ((flushed_at - started).as_micros() / BUCKET.as_micros()) as usize;
    let rate = |b: &Vec<u32>| b.len() as f64 / BUCKET.as_secs_f64();
    // The first bucket is partly warm-up of the workers; the rest before the flush are the baseline.
    let baseline =
        buckets[1..flush_bucket].iter().map(rate).sum::<f64>() / (flush_bucket - 1).max(1) as f64;
    println!();
    println!(
        "flush recovery: {} cached pairs, {} in flight, flush at {} ms; baseline {baseline:.0} checks/s",
        bodies.len(),
        args.concurrency,
        (flushed_at - started).as_millis()
    );
    println!("| t ms | checks/s | % of baseline | p99 ms |");
    println!("|---:|---:|---:|---:|");
    let mut recovered_at = None;
    let mut first_back = None;
    for (b, bucket) in buckets.iter_mut().enumerate().take(BEFORE + AFTER) {
        bucket.sort_unstable();
        let r = rate(bucket);
        let share = 100.0 * r / baseline;
        println!(
            "| {} | {r:.0} | {share:.1} | {:.3} |",
            b * BUCKET.as_millis() as usize,
            percentile(bucket, 0.99)
        );
        if b > flush_bucket && share >= 95.0 && recovered_at.is_none() {
            recovered_at = Some(b);
            first_back.get_or_insert(b);
        }
        if share < 95.0 && b > flush_bucket {
            recovered_at = None;
        }
    }
    let after_flush = |b: usize| {
        (b * BUCKET.as_millis() as usize)
            .saturating_sub((flushed_at - started).as_millis() as usize)
    };
    match first_back {
        Some(b) => println!(
            "first back to >= 95 % of the baseline {} ms after the flush",
            after_flush(b)
        ),
        None => println!("not back to >= 95 % of the baseline within the run"),
    }
    if let Some(b) = recovered_at {
        println!(
            "at >= 95 % in every 100 ms from {} ms after the flush on",
            after_flush(b)
        );
    }
}

/// The name of the ceiling's scenario.
const CEILING: &str = "ceiling: bare tonic, health Check";

/// How long a worker waits after a failed call before its next one.
const REFUSED_BACKOFF: Duration = Duration::from_millis(10);

/// Runs `make` concurrently for warm-up then the measured duration; a failed
/// call is followed by a [`REFUSED_BACKOFF`] pause (not measured).
async fn drive<F, Fut>(
    name: &str,
    args: &Args,
    concurrency: usize,
    checks_per_request: u64,
    make: F,
) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let make = Arc::new(make);
    let warm_until = Instant::now() + args.warmup;
    let stop_at = warm_until + args.duration;
    let cpu = tokio::spawn(cpu_between(warm_until, stop_at));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut err_lat) = (Vec::new(), Vec::new());
            let (mut ok, mut err) = (0u64, 0u64);
            let mut i = 0u64;
            loop {
                let started = Instant::now();
                if started >= stop_at {
                    break;
                }
                let success = make(worker, i).await;
                i += 1;
                if started >= warm_until {
                    let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                    if success {
                        lat.push(us);
                        ok += 1;
                    } else {
                        err_lat.push(us);
                        err += 1;
                    }
                }
                if !success {
                    // A well-behaved client backs off before retrying a refused call.
                    tokio::time::sleep(REFUSED_BACKOFF).await;
                }
            }
            (lat, err_lat, ok, err)
        }));
    }
    let (mut latencies_us, mut error_latencies_us) = (Vec::new(), Vec::new());
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((lat, err_lat, ok, err)) = t.await {
            latencies_us.extend(lat);
            error_latencies_us.extend(err_lat);
            requests += ok;
            errors += err;
        }
    }
    latencies_us.sort_unstable();
    error_latencies_us.sort_unstable();
    Report {
        name: format!("{name} @{concurrency}"),
        scenario: name.to_owned(),
        requests,
        errors,
        elapsed: args.duration,
        latencies_us,
        error_latencies_us,
        checks_per_request,
        level: concurrency,
        cpu: cpu.await.ok().flatten(),
    }
}

fn print_table(backend: &str, args: &Args, reports: &[Report]) {
    println!();
    println!(
        "backend: {backend}; data: {} users, {} workspaces, {} teams, {} grants; concurrency {}; {} connections; {:?} per scenario",
        args.users,
        args.workspaces,
        args.teams,
        args.grants,
        args.concurrency,
        args.connections,
        args.duration
    );
    println!(
        "| scenario @in flight | requests/s | checks/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | CPU busy % | CPU µs/request |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let (busy, per_request) = r.cpu_cells();
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {busy} | {per_request} |",
            r.name,
            r.rps(),
            r.rps() * r.checks_per_request as f64,
            r.pct(0.50),
            r.pct(0.90),
            r.pct(0.99),
            r.pct(0.999),
            r.errors
        );
        if r.errors > 0 {
            let e = &r.error_latencies_us;
            println!(
                "| {}: refused | {:.0} | – | {:.3} | {:.3} | {:.3} | {:.3} | – | – | – |",
                r.name,
                r.errors as f64 / r.elapsed.as_secs_f64(),
                percentile(e, 0.50),
                percentile(e, 0.90),
                percentile(e, 0.99),
                percentile(e, 0.999),
            );
        }
    }
    print_shares(reports);
}

/// The mean requests/s of `scenario`'s runs at `level`, if it ran there.
fn mean_rps(reports: &[Report], scenario: &str, level: usize) -> Option<f64> {
    let runs: Vec<f64> = reports
        .iter()
        .filter(|r| r.scenario == scenario && r.level == level)
        .map(Report::rps)
        .collect();
    (!runs.is_empty()).then(|| runs.iter().sum::<f64>() / runs.len() as f64)
}

/// Every scenario measured against the ceiling, as a share of it at the
/// same level (the means of the alternating runs).
fn print_shares(reports: &[Report]) {
    let mut levels: Vec<usize> = reports
        .iter()
        .filter(|r| r.scenario == CEILING)
        .map(|r| r.level)
        .collect();
    levels.dedup();
    if levels.is_empty() {
        return;
    }
    let mut scenarios: Vec<&str> = Vec::new();
    for r in reports {
        if r.scenario != CEILING
            && r.checks_per_request <= 1
            && levels.contains(&r.level)
            && !scenarios.contains(&r.scenario.as_str())
        {
            scenarios.push(&r.scenario);
        }
    }
    println!();
    println!(
        "Share of the ceiling (bare tonic health Check) in requests/s, same level, mean of alternating runs:"
    );
    print!("| scenario |");
    for l in &levels {
        print!(" @{l} |");
    }
    println!();
    println!("|---|{}", "---:|".repeat(levels.len()));
    for scenario in [CEILING].into_iter().chain(scenarios) {
        print!("| {scenario} |");
        for &l in &levels {
            match (
                mean_rps(reports, scenario, l),
                mean_rps(reports, CEILING, l),
            ) {
                (Some(rps), _) if scenario == CEILING => print!(" {rps:.0}/s |"),
                (Some(rps), Some(ceiling)) => print!(" {:.1} % |", 100.0 * rps / ceiling),
                _ => print!(" – |"),
            }
        }
        println!();
    }
}

/// What `SetResourceTags` asks of storage, made from this process through
/// the storage layer alone: the write gate, the key with its account and the
/// workspace in one statement, the upsert, the publishing statement and the
/// commit; no gRPC, no authentication, no domain code. The floor a
/// single-row change stands on, on this machine, today.
#[derive(Clone)]
struct StorageWriter {
    store: Store,
    organization: String,
    tenant: u128,
    key_id: String,
    account_id: String,
}

impl StorageWriter {
    async fn new(url: &str, seeded: &Seeded) -> Self {
        use portcullis::store::entity::api_key;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let store = Store::connect(url).await.expect("connect to storage");
        let key = api_key::Entity::find()
            .filter(api_key::Column::OrganizationId.eq(seeded.organization_id.as_str()))
            .filter(api_key::Column::ServiceAccountId.is_not_null())
            .one(store.db())
            .await
            .expect("read the seeded key")
            .expect("the seeded service key");
        Self {
            tenant: portcullis::id::parse(&seeded.organization_id).expect("organization id"),
            organization: seeded.organization_id.clone(),
            key_id: key.id,
            account_id: key.service_account_id.unwrap_or_default(),
            store,
        }
    }

    async fn write(&self, workspace: &str, resource_id: String) -> bool {
        use portcullis::store::{
            Publication, entity, keys, new_id, now_ms, workspaces as ws_store,
        };
        let Ok(tx) = self.store.write(self.tenant).await else {
            return false;
        };
        match keys::service_key_held(tx.conn(), &self.key_id, &self.account_id, Some(workspace))
            .await
        {
            Ok(Some(held)) if held.workspace.is_some() => {}
            _ => return false,
        }
        let now = now_ms();
        let row = entity::resource::Model {
            workspace_id: workspace.to_owned(),
            resource_type: "datasets".into(),
            resource_id: resource_id.clone(),
            tags: r#"{"team":"bench"}"#.into(),
            updated_at: now,
        };
        if ws_store::put_resource(tx.conn(), row).await.is_err() {
            return false;
        }
        let event = entity::audit_event::Model {
            id: new_id(),
            organization_id: Some(self.organization.clone()),
            actor_type: "service_account".into(),
            actor_id: self.account_id.clone(),
            acting_for_user_id: None,
            action: "resource.set_tags".into(),
            target_type: "datasets".into(),
            target_id: resource_id.clone(),
            details: r#"{"tags":{"team":"bench"}}"#.into(),
            revision: 0,
            created_at: now,
        };
        let log = entity::change_log::Model {
            revision: 0,
            organization_id: Some(self.organization.clone()),
            created_at: now,
            invalidations: String::new(),
            events: format!(
                r#"[{{"action":"resource.set_tags","target_id":"{resource_id}","target_type":"datasets"}}]"#
            ),
        };
        tx.commit(Publication {
            log,
            audit: vec![event],
        })
        .await
        .is_ok()
    }
}

/// The workspace worker `worker`'s `i`-th single-row write goes to: the same
/// sequence through the storage layer alone and through the server.
fn write_workspace(workspaces: &[String], worker: usize, i: u64) -> &str {
    let mut rng = Rng::new((worker as u64) << 32 | i);
    &workspaces[rng.below(workspaces.len())]
}

/// Changes: single-row writes (`SetResourceTags`, a new resource each time)
/// at 1, 16 and 64 in flight, each level first through the storage layer
/// alone ([`StorageWriter`], no server running) and then through a server;
/// then batches of 1,000 grants (`BatchWriteAccess`, each into a workspace
/// made for it first).
async fn writes(args: &Args, url: &str, seeded: &Seeded) -> Vec<Report> {
    let key = Arc::new(seeded.key.clone());
    let workspaces = Arc::new(seeded.workspaces.clone());
    let mut reports = Vec::new();
    let storage = StorageWriter::new(url, seeded).await;
    // SQLite's WAL checkpoints, as the server runs them beside its writers.
    let checkpoints = tokio::spawn(storage.store.clone().checkpoints());
    for (round, concurrency) in [1, 16, 64].into_iter().enumerate() {
        // The same change through the storage layer alone, while no server
        // runs (a server would also read these changes from the log).
        let (alone, workspaces_alone) = (storage.clone(), workspaces.clone());
        reports.push(
            drive(
                "write, storage layer alone (same statements, no server)",
                args,
                concurrency,
                1,
                move |w, i| {
                    let alone = alone.clone();
                    let ws = write_workspace(&workspaces_alone, w, i).to_owned();
                    async move { alone.write(&ws, format!("alone-{round}-{w}-{i}")).await }
                },
            )
            .await,
        );
        let server = start_server(url, &[]);
        let chans = channels(&server.addr, args.connections).await;
        let (key, workspaces) = (key.clone(), workspaces.clone());
        reports.push(
            drive(
                "write (SetResourceTags)",
                args,
                concurrency,
                1,
                move |w, i| {
                    let mut c = WorkspaceServiceClient::new(chans[w % chans.len()].clone());
                    let req = authed(
                        pb::SetResourceTagsRequest {
                            workspace_id: write_workspace(&workspaces, w, i).to_owned(),
                            resource_type: "datasets".into(),
                            resource_id: format!("bench-{round}-{w}-{i}"),
                            tags: vec![pb::Tag {
                                key: "team".into(),
                                value: "bench".into(),
                            }],
                        },
                        &key,
                    );
                    async move { c.set_resource_tags(req).await.is_ok() }
                },
            )
            .await,
        );
    }
    checkpoints.abort();
    drop(storage);
    let server = start_server(url, &[]);
    let chans = channels(&server.addr, args.connections).await;
    const BATCH: usize = 1000;
    let users: Arc<Vec<String>> = Arc::new(seeded.users.iter().take(BATCH).cloned().collect());
    for concurrency in [1, 4] {
        let (chans, key, users) = (chans.clone(), key.clone(), users.clone());
        reports.push(
            drive(
                "batch write (1,000 grants)",
                args,
                concurrency,
                users.len() as u64,
                move |w, i| {
                    let chan = chans[w % chans.len()].clone();
                    let (key, users) = (key.clone(), users.clone());
                    async move {
                        let Ok(made) = WorkspaceServiceClient::new(chan.clone())
                            .create_workspace(authed(
                                pb::CreateWorkspaceRequest {
                                    key: format!("batch-{concurrency}-{w}-{i}"),
                                    ..Default::default()
                                },
                                &key,
                            ))
                            .await
                        else {
                            return false;
                        };
                        let ws = made
                            .into_inner()
                            .workspace
                            .map(|w| w.id)
                            .unwrap_or_default();
                        let operations = users
                            .iter()
                            .map(|u| pb::AccessOperation {
                                operation: Some(pb::access_operation::Operation::Grant(
                                    pb::GrantAccessRequest {
                                        workspace_id: ws.clone(),
                                        subject: Some(pb::Subject {
                                            kind: Some(pb::subject::Kind::UserId(u.clone())),
                                        }),
                                        role: "WORKSPACE_VIEWER".into(),
                                        scope: None,
                                        expires_at: None,
                                    },
                                )),
                            })
                            .collect();
                        WorkspaceServiceClient::new(chan)
                            .batch_write_access(authed(
                                pb::BatchWriteAccessRequest { operations },
                                &key,
                            ))
                            .await
                            .is_ok()
                    }
                },
            )
            .await,
        );
    }
    reports
}

/// Decision sets dropped by each kind of change. Builds its own corner of
/// the organization through the API (calls that builds before the change
/// log answer too), caches every set of it and the first 1,000 seeded
/// pairs, then makes one change of each kind and counts the sets the next
/// pass over every pair had to load again (`portcullis_cache_misses_total`).
async fn invalidation(url: &str, seeded: &Seeded) {
    const IN_WORKSPACE: usize = 200;
    const IN_TEAM: usize = 20;
    const WITH_ROLE: usize = 10;
    let server = start_server(url, &["--cache-ttl", "60m"]);
    let chan = channels(&server.addr, 1).await.remove(0);
    let key = seeded.key.as_str();
    let org = seeded.organization_id.clone();
    let mut workspaces = WorkspaceServiceClient::new(chan.clone());
    let mut identity = IdentityServiceClient::new(chan.clone());
    let mut roles = RolesServiceClient::new(chan.clone());
    let mut checks = CheckServiceClient::new(chan);
    let user = |u: &str| {
        Some(pb::Subject {
            kind: Some(pb::subject::Kind::UserId(u.to_owned())),
        })
    };

    // W: 200 users granted there (10 of them a custom role); a team of 20
    // of them; outside W, the first 1,000 seeded pairs.
    let ws = workspaces
        .create_workspace(authed(
            pb::CreateWorkspaceRequest {
                key: "invalidation".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("create workspace")
        .into_inner()
        .workspace
        .expect("workspace")
        .id;
    let role = roles
        .create_role(authed(
            pb::CreateRoleRequest {
                organization_id: org.clone(),
                name: "invalidation-reader".into(),
                description: String::new(),
                permissions: vec!["datasets:read".into()],
            },
            key,
        ))
        .await
        .expect("create role")
        .into_inner()
        .role
        .expect("role")
        .id;
    let members: Vec<String> = seeded.users.iter().take(IN_WORKSPACE).cloned().collect();
    let granting = workspaces.clone();
    let grant = |u: &str, role: &str| {
        let req = authed(
            pb::GrantAccessRequest {
                workspace_id: ws.clone(),
                subject: user(u),
                role: role.to_owned(),
                scope: None,
                expires_at: None,
            },
            key,
        );
        let mut c = granting.clone();
        async move {
            c.grant_access(req)
                .await
                .expect("grant")
                .into_inner()
                .grant
                .expect("grant")
                .id
        }
    };
    for (i, u) in members.iter().enumerate() {
        let r = if i < WITH_ROLE {
            role.as_str()
        } else {
            "WORKSPACE_VIEWER"
        };
        grant(u, r).await;
    }
    let team = identity
        .create_team(authed(
            pb::CreateTeamRequest {
                organization_id: org.clone(),
                name: "invalidation".into(),
            },
            key,
        ))
        .await
        .expect("create team")
        .into_inner()
        .team
        .expect("team")
        .id;
    for u in members.iter().skip(IN_WORKSPACE - IN_TEAM) {
        identity
            .add_team_member(authed(
                pb::AddTeamMemberRequest {
                    organization_id: org.clone(),
                    team_id: team.clone(),
                    user_id: u.clone(),
                    expires_at: None,
                },
                key,
            ))
            .await
            .expect("add team member");
    }
    let mut pairs: Vec<(String, String)> =
        members.iter().map(|u| (u.clone(), ws.clone())).collect();
    pairs.extend(seeded.granted.iter().take(1000).cloned());
    pairs.sort();
    pairs.dedup();

    // A member of W with the custom role, not yet in the team.
    let joiner = members[0].clone();
    let one = members[IN_WORKSPACE / 2].clone();
    let mut rows: Vec<(ChangeKind, f64)> = Vec::new();
    let mut revoke = None;
    let miss = "portcullis_cache_misses_total{cache=\"decision\"}";
    // Every pair cached, then each change: the sets it dropped are the
    // misses of the next pass over every pair.
    for (u, w) in &pairs {
        checks
            .check(authed(check_req(u, w), key))
            .await
            .expect("check");
    }
    for kind in ChangeKind::ALL {
        match kind {
            ChangeKind::UserGrant => revoke = Some(grant(&one, "WORKSPACE_ADMIN").await),
            ChangeKind::Revocation => {
                workspaces
                    .revoke_access(authed(
                        pb::RevokeAccessRequest {
                            workspace_id: ws.clone(),
                            grant_id: revoke.take().expect("granted first"),
                        },
                        key,
                    ))
                    .await
                    .expect("revoke");
            }
            ChangeKind::TeamGrant => {
                workspaces
                    .grant_access(authed(
                        pb::GrantAccessRequest {
                            workspace_id: ws.clone(),
                            subject: Some(pb::Subject {
                                kind: Some(pb::subject::Kind::TeamId(team.clone())),
                            }),
                            role: "WORKSPACE_EDITOR".into(),
                            scope: None,
                            expires_at: None,
                        },
                        key,
                    ))
                    .await
                    .expect("team grant");
            }
            ChangeKind::TeamMembership => {
                identity
                    .add_team_member(authed(
                        pb::AddTeamMemberRequest {
                            organization_id: org.clone(),
                            team_id: team.clone(),
                            user_id: joiner.clone(),
                            expires_at: None,
                        },
                        key,
                    ))
                    .await
                    .expect("add team member");
            }
            ChangeKind::RoleEdit => {
                roles
                    .update_role(authed(
                        pb::UpdateRoleRequest {
                            organization_id: org.clone(),
                            role_id: role.clone(),
                            permissions: Some(pb::PermissionList {
                                permissions: vec!["datasets:read".into(), "prompts:read".into()],
                            }),
                            ..Default::default()
                        },
                        key,
                    ))
                    .await
                    .expect("update role");
            }
            ChangeKind::ResourceTags => {
                workspaces
                    .set_resource_tags(authed(
                        pb::SetResourceTagsRequest {
                            workspace_id: ws.clone(),
                            resource_type: "datasets".into(),
                            resource_id: "invalidation".into(),
                            tags: vec![],
                        },
                        key,
                    ))
                    .await
                    .expect("set resource tags");
            }
        }
        // Applied on commit, here; a moment for what a replica would read.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = metric(&server, miss).await;
        for (u, w) in &pairs {
            checks
                .check(authed(check_req(u, w), key))
                .await
                .expect("check");
        }
        rows.push((kind, metric(&server, miss).await - before));
    }
    println!();
    println!(
        "invalidation: {} sets cached ({IN_WORKSPACE} in W, {} elsewhere in the organization); server {}",
        pairs.len(),
        pairs.len() - IN_WORKSPACE,
        SERVER_BINARY
            .get()
            .map_or_else(String::new, |b| b.display().to_string())
    );
    println!("| change | decision sets dropped |");
    println!("|---|---:|");
    for (kind, dropped) in rows {
        println!("| {} | {dropped:.0} |", kind.label());
    }
}

/// The changes of the `invalidation` scenario, in the order it makes them.
#[derive(Clone, Copy, Debug)]
enum ChangeKind {
    UserGrant,
    Revocation,
    TeamGrant,
    TeamMembership,
    RoleEdit,
    ResourceTags,
}

impl ChangeKind {
    const ALL: [Self; 6] = [
        Self::UserGrant,
        Self::Revocation,
        Self::TeamGrant,
        Self::TeamMembership,
        Self::RoleEdit,
        Self::ResourceTags,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::UserGrant => "grant to a user (in W)",
            Self::Revocation => "revoke that grant",
            Self::TeamGrant => "grant to a team of 20 (in W)",
            Self::TeamMembership => "team membership (team of 20 granted in W)",
            Self::RoleEdit => "custom role edit (held by 10 in W)",
            Self::ResourceTags => "resource tags (in W)",
        }
    }
}

/// One sample of the server's `/metrics`.
async fn metric(server: &Server, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(&server.metrics)
        .await
        .expect("connect to /metrics");
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        .await
        .expect("ask /metrics");
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.expect("read /metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn revocation(args: &Args, url: &str, seeded: &Seeded) -> Option<Report> {
    let a = start_server(url, &[]);
    let b = start_server(url, &[]);
    let ca = channels(&a.addr, 1).await.remove(0);
    let cb = channels(&b.addr, 1).await.remove(0);
    let mut admin = WorkspaceServiceClient::new(ca);
    let mut check_b = CheckServiceClient::new(cb);
    let key = &seeded.key;
    let mut rng = Rng::new(99);
    let mut lat = Vec::new();
    for _ in 0..args.revocation_trials {
        let user = &seeded.users[rng.below(seeded.users.len())];
        let ws = &seeded.workspaces[rng.below(seeded.workspaces.len())];
        let mut probe = check_req(user, ws);
        probe.permission = "roles:manage".into();
        probe.resource = Some(pb::Resource {
            r#type: "roles".into(),
            ..pb::Resource::default()
        });
        if check_b
            .check(authed(probe, key))
            .await
            .ok()?
            .into_inner()
            .allowed
        {
            // Already an admin there through seeded grants: revoking ours would change nothing.
            continue;
        }
        let granted = admin
            .grant_access(authed(
                pb::GrantAccessRequest {
                    workspace_id: ws.clone(),
                    subject: Some(pb::Subject {
                        kind: Some(pb::subject::Kind::UserId(user.clone())),
                    }),
                    role: "WORKSPACE_ADMIN".into(),
                    scope: Some(pb::Scope {
                        conditions: vec![pb::TagCondition {
                            key: "Environment".into(),
                            values: vec![format!("bench-{}", rng.next_u64())],
                        }],
                        application: String::new(),
                    }),
                    expires_at: None,
                },
                key,
            ))
            .await
            .ok()?
            .into_inner();
        let mut req = check_req(user, ws);
        req.permission = "roles:manage".into();
        req.resource = Some(pb::Resource {
            r#type: "roles".into(),
            id: String::new(),
            tags: vec![pb::Tag {
                key: "Environment".into(),
                value: granted
                    .grant
                    .as_ref()?
                    .scope
                    .as_ref()?
                    .conditions
                    .first()?
                    .values
                    .first()?
                    .clone(),
            }],
        });
        req.at_least_revision = granted.revision;
        let warm = check_b
            .check(authed(req.clone(), key))
            .await
            .ok()?
            .into_inner();
        if !warm.allowed {
            eprintln!("warm-up check was denied; skipping trial");
            continue;
        }
        req.at_least_revision = 0;
        admin
            .revoke_access(authed(
                pb::RevokeAccessRequest {
                    workspace_id: ws.clone(),
                    grant_id: granted.grant?.id,
                },
                key,
            ))
            .await
            .ok()?;
        let t0 = Instant::now();
        loop {
            let d = check_b
                .check(authed(req.clone(), key))
                .await
                .ok()?
                .into_inner();
            if !d.allowed {
                break;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                eprintln!("revocation not seen within 5 s");
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    lat.sort_unstable();
    Some(Report {
        name: format!("revocation seen on other replica ({} trials)", lat.len()),
        scenario: "revocation".into(),
        requests: lat.len() as u64,
        errors: 0,
        elapsed: Duration::from_secs(1),
        latencies_us: lat,
        error_latencies_us: Vec::new(),
        checks_per_request: 0,
        level: 0, // not compared with the ceiling
        cpu: None,
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(bin) = &args.server_binary {
        let _ = SERVER_BINARY.set(bin.clone());
    }
    let (url, pg_admin, dir) = match &args.postgres {
        Some(base) => {
            let name = format!("portcullis_bench_{}", uuid::Uuid::new_v4().simple());
            let admin = sea_orm::Database::connect(format!("{base}/postgres"))
                .await
                .expect("PostgreSQL");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
            (format!("{base}/{name}"), Some((admin, name)), None)
        }
        None => {
            let dir = tempfile_dir();
            (
                format!("sqlite://{}/bench.db?mode=rwc", dir.display()),
                None,
                Some(dir),
            )
        }
    };
    let backend = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let store = Store::connect(&url).await.expect("open database");
    store.migrate().await.expect("migrate");
    let started = Instant::now();
    let size = SeedSize {
        users: args.users,
        workspaces: args.workspaces,
        teams: args.teams,
        grants: args.grants,
    };
    let seeded = seed::seed(&store, size, 7).await.expect("seed");
    eprintln!("seeded {size:?} in {:?}", started.elapsed());
    // Settle storage before measuring: fresh statistics for the planner, and
    // no autovacuum or checkpoint after the bulk load running during a scenario.
    let settle: &[&str] = if args.postgres.is_some() {
        &["VACUUM ANALYZE", "CHECKPOINT"]
    } else {
        &["ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)"]
    };
    for sql in settle {
        store
            .db()
            .execute_unprepared(sql)
            .await
            .expect("settle storage");
    }
    drop(store);

    let wanted: Vec<&str> = args.scenarios.split(',').map(str::trim).collect();
    let levels: Vec<usize> = args
        .levels
        .split(',')
        .map(|l| {
            l.trim()
                .parse()
                .expect("--levels: numbers separated by commas")
        })
        .collect();
    let mut reports = Vec::new();
    {
        let server = start_server(&url, &[]);
        channels(&server.addr, 1).await; // waits until it listens
        let key = Arc::new(seeded.key.clone());
        // A working set that fits the cache: 1000 granted pairs.
        let hot: Arc<Vec<(String, String)>> =
            Arc::new(seeded.granted.iter().take(1000).cloned().collect());
        let ceiling = wanted.contains(&"ceiling").then(start_ceiling);
        let ceiling_conns = match &ceiling {
            Some(c) => {
                channels(&c.addr, 1).await; // waits until it listens
                raw::connect(&c.addr, args.connections).await
            }
            None => Vec::new(),
        };
        let conns = raw::connect(&server.addr, args.connections).await;
        let health_call = raw::Call::new(
            ceiling.as_ref().map_or("ceiling", |c| c.addr.as_str()),
            "/grpc.health.v1.Health/Check",
            None,
        );
        let health_body = raw::frame(&HealthCheckRequest {
            service: String::new(),
        });
        let noop_call = raw::Call::new(&server.addr, "/portcullis.v1.NoopService/Noop", None);
        let noop_body = raw::frame(&pb::NoopRequest {
            payload: String::new(),
        });
        let check_call = raw::Call::new(
            &server.addr,
            "/portcullis.v1.CheckService/Check",
            Some(&key),
        );
        let hot_users: Arc<Vec<_>> = Arc::new(
            hot.iter()
                .map(|(u, ws)| raw::frame(&check_req(u, ws)))
                .collect(),
        );
        let hot_keys: Arc<Vec<_>> = Arc::new(
            hot.iter()
                .map(|(_, ws)| {
                    let mut check = check_req("", ws);
                    check.principal = Some(pb::CheckPrincipal {
                        kind: Some(pb::check_principal::Kind::ApiKey(key.to_string())),
                    });
                    raw::frame(&check)
                })
                .collect(),
        );
        // The ceiling, the no-op and Check alternate (A B C A B C) at each
        // level so that drift in the machine's load affects all alike; the
        // shares use the means.
        for &level in &levels {
            for _ in 0..args.rounds {
                if ceiling.is_some() {
                    let (conns, call, body) = (
                        ceiling_conns.clone(),
                        health_call.clone(),
                        health_body.clone(),
                    );
                    reports.push(
                        drive(CEILING, &args, level, 0, move |w, _| {
                            let (conn, call, body) =
                                (conns[w % conns.len()].clone(), call.clone(), body.clone());
                            async move { raw::unary(conn, &call, body).await.is_some() }
                        })
                        .await,
                    );
                }
                if wanted.contains(&"noop") {
                    let (conns, call, body) = (conns.clone(), noop_call.clone(), noop_body.clone());
                    reports.push(
                        drive("noop", &args, level, 0, move |w, _| {
                            let (conn, call, body) =
                                (conns[w % conns.len()].clone(), call.clone(), body.clone());
                            async move { raw::unary(conn, &call, body).await.is_some() }
                        })
                        .await,
                    );
                }
                for (scenario, bodies) in
                    [("hit", hot_users.clone()), ("hit-key", hot_keys.clone())]
                {
                    if !wanted.contains(&scenario) {
                        continue;
                    }
                    let name = if scenario == "hit" {
                        "check (cache hit, user)"
                    } else {
                        "check (cache hit, api key)"
                    };
                    let (conns, call) = (conns.clone(), check_call.clone());
                    reports.push(
                        drive(name, &args, level, 1, move |w, i| {
                            let (conn, call) = (conns[w % conns.len()].clone(), call.clone());
                            let body = bodies[(w * 7919 + i as usize) % bodies.len()].clone();
                            async move { allowed(raw::unary(conn, &call, body).await) }
                        })
                        .await,
                    );
                }
            }
        }
        if wanted.contains(&"batch") {
            let call = raw::Call::new(
                &server.addr,
                "/portcullis.v1.CheckService/BatchCheck",
                Some(&key),
            );
            // Batches of 100 consecutive hot pairs, encoded before the run.
            let batches: Arc<Vec<_>> = Arc::new(
                (0..hot.len())
                    .map(|start| {
                        let checks = (0..100)
                            .map(|j| {
                                let (u, ws) = &hot[(start + j) % hot.len()];
                                check_req(u, ws)
                            })
                            .collect();
                        raw::frame(&pb::BatchCheckRequest { checks })
                    })
                    .collect(),
            );
            let conns = conns.clone();
            reports.push(
                drive(
                    "batch check (100 hits)",
                    &args,
                    args.concurrency,
                    100,
                    move |w, i| {
                        let (conn, call) = (conns[w % conns.len()].clone(), call.clone());
                        let body = batches[(w * 7919 + i as usize * 100) % batches.len()].clone();
                        async move {
                            raw::unary(conn, &call, body)
                                .await
                                .and_then(|m| pb::BatchCheckResponse::decode(m).ok())
                                .is_some_and(|r| r.results.iter().all(|c| c.allowed))
                        }
                    },
                )
                .await,
            );
        }
        if wanted.contains(&"open") {
            for rate in args.rates.split(',') {
                let rate: u32 = rate.trim().parse().expect("--rates: numbers");
                if ceiling.is_some() {
                    let bodies = Arc::new(vec![health_body.clone()]);
                    reports.push(
                        open_loop(
                            &args,
                            &ceiling_conns,
                            &health_call,
                            &bodies,
                            rate,
                            "ceiling",
                            |m| m.is_some(),
                        )
                        .await,
                    );
                }
                reports.push(
                    open_loop(
                        &args,
                        &conns,
                        &check_call,
                        &hot_users,
                        rate,
                        "check (cache hit)",
                        allowed,
                    )
                    .await,
                );
            }
        }
    }
    if wanted.contains(&"flush") {
        flush_recovery(&args, &url, &seeded).await;
    }
    if wanted.contains(&"miss") {
        let server = start_server(&url, &["--cache-capacity", "16"]);
        let chans = channels(&server.addr, args.connections).await;
        let key = Arc::new(seeded.key.clone());
        let pairs: Arc<Vec<(String, String)>> = Arc::new(seeded.granted.clone());
        for concurrency in [1, args.concurrency] {
            let (chans, key, pairs) = (chans.clone(), key.clone(), pairs.clone());
            reports.push(
                drive("check (cache miss)", &args, concurrency, 1, move |w, i| {
                    let mut c = CheckServiceClient::new(chans[w % chans.len()].clone());
                    let mut rng = Rng::new((w as u64) << 32 | i);
                    let (u, ws) = &pairs[rng.below(pairs.len())];
                    let req = authed(check_req(u, ws), &key);
                    async move { c.check(req).await.is_ok() }
                })
                .await,
            );
        }
    }
    if wanted.contains(&"overload") {
        // Eight slots, each held by a cache miss; four times the usual
        // concurrency asks. The excess must be refused at once, not queued;
        // refused workers back off 10 ms, as a well-behaved client would.
        let server = start_server(
            &url,
            &["--cache-capacity", "16", "--max-concurrent-requests", "8"],
        );
        let chans = channels(&server.addr, args.connections).await;
        let key = Arc::new(seeded.key.clone());
        let pairs: Arc<Vec<(String, String)>> = Arc::new(seeded.granted.clone());
        let concurrency = args.concurrency * 4;
        reports.push(
            drive(
                "overload: check (cache miss), limit 8",
                &args,
                concurrency,
                1,
                move |w, i| {
                    let mut c = CheckServiceClient::new(chans[w % chans.len()].clone());
                    let mut rng = Rng::new((w as u64) << 32 | i);
                    let (u, ws) = &pairs[rng.below(pairs.len())];
                    let req = authed(check_req(u, ws), &key);
                    async move {
                        match c.check(req).await {
                            Ok(_) => true,
                            Err(status) if status.code() == tonic::Code::ResourceExhausted => false,
                            Err(status) => panic!("overload: unexpected {status:?}"),
                        }
                    }
                },
            )
            .await,
        );
    }
    if wanted.contains(&"writes") {
        reports.extend(writes(&args, &url, &seeded).await);
    }
    if wanted.contains(&"invalidation") {
        invalidation(&url, &seeded).await;
    }
    if wanted.contains(&"revocation") && args.postgres.is_some() {
        match revocation(&args, &url, &seeded).await {
            Some(r) => reports.push(r),
            None => eprintln!("revocation: a call failed; no figure"),
        }
    }
    print_table(backend, &args, &reports);
    if let Some((admin, name)) = pg_admin {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A raw HTTP/2 gRPC client: requests encoded once before the run, no
/// tower stack, no per-call encoding, so the load generator takes as little
/// of the shared cores as it can and the server's differences show.
mod raw {
    use std::sync::Arc;

    use h2::client::SendRequest;
    use hyper::body::Bytes;
    use tonic::codegen::http::{self, HeaderValue};

    /// One connection's handle; clones share the connection.
    pub type Conn = SendRequest<Bytes>;

    /// Opens `n` connections to `addr`.
    pub async fn connect(addr: &str, n: usize) -> Vec<Conn> {
        let mut out = Vec::new();
        for _ in 0..n.max(1) {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect for the raw client");
            tcp.set_nodelay(true).expect("nodelay");
            let (send, connection) = h2::client::Builder::new()
                .initial_window_size(1 << 20)
                .initial_connection_window_size(1 << 24)
                .handshake(tcp)
                .await
                .expect("HTTP/2 handshake");
            tokio::spawn(async move {
                let _ = connection.await;
            });
            out.push(send);
        }
        out
    }

    pub use portcullis::codec::frame;

    /// What every call of a scenario sends.
    pub struct Call {
        pub uri: http::Uri,
        pub authorization: Option<HeaderValue>,
    }

    impl Call {
        pub fn new(addr: &str, path: &str, key: Option<&str>) -> Arc<Self> {
            Arc::new(Self {
                uri: format!("http://{addr}{path}").parse().expect("uri"),
                authorization: key.map(|k| format!("Bearer {k}").parse().expect("header")),
            })
        }
    }

    /// One unary call; the response message when the status is OK.
    pub async fn unary(conn: Conn, call: &Call, body: Bytes) -> Option<Bytes> {
        let mut conn = conn.ready().await.ok()?;
        let mut request = http::Request::post(call.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(auth) = &call.authorization {
            request = request.header("authorization", auth.clone());
        }
        let request = request.body(()).ok()?;
        let (response, mut send) = conn.send_request(request, false).ok()?;
        send.send_data(body, true).ok()?;
        let response = response.await.ok()?;
        let (parts, mut body) = response.into_parts();
        if let Some(status) = parts.headers.get("grpc-status") {
            // Trailers-only: an error, or OK with no message.
            return (status == "0").then(Bytes::new);
        }
        let mut message = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.ok()??;
        let ok = trailers.get("grpc-status")? == "0";
        let message = Bytes::from(message);
        ok.then(|| message.slice(message.len().min(5)..))
    }
}
