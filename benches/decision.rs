//! In-process costs of the check path.
//!
//! * `decision/cache_hit` — the resolved set from the cache and a bit test.
//! * `decision/hit_path` — the same plus what a request adds before it:
//!   parsing the two ids and looking up the permission name.
//! * `resolve/cold_sqlite` — loading a resolved set from SQLite (a miss) in a
//!   data set of 2,000 users, 200 workspaces, 20 teams and 50,000 grants.
//!
//! * `rpc/check_cache_hit_in_process` — a whole Check RPC on a cache hit
//!   through the front layer, tonic's routing, codec and handler, without
//!   HTTP/2 or a socket; its heap allocations per call are printed first.
//!
//! `cargo bench --bench decision`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use portcullis::{
    auth::PrincipalId,
    authz::{
        OrgRole,
        cache::{
            CacheConfig, DecisionCache, Invalidation, PrincipalKind, ResolvedSet, SetKey, parse_id,
        },
        catalogue::{Catalogue, SystemRole},
        engine::{Access, EffectiveGrant, Scope, TagCondition},
    },
    clock::Clock,
    config::Settings,
    domain::check::resolved_set_for_authorized_caller,
    seed::{self, Rng, SeedSize},
    state::AppState,
    store::Store,
};

/// Counts heap allocations, to show that a cache hit makes none.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const USER: &str = "3f1c9a7e-2b4d-4e8f-9a1b-2c3d4e5f6a7b";
const WORKSPACE: &str = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

fn realistic_set(catalogue: &Arc<Catalogue>) -> ResolvedSet {
    let grant = |role: SystemRole, scope: Option<Scope>| EffectiveGrant {
        grant_id: "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e".into(),
        role: role.as_str().into(),
        via_team: None,
        permissions: catalogue.system_role(role),
        scope,
        expires_at: None,
    };
    let scope = Scope {
        conditions: vec![TagCondition {
            key: "Application".into(),
            values: vec!["checkout".into()],
        }],
    };
    let access = Access::at(
        false,
        vec![
            grant(SystemRole::Viewer, None),
            grant(SystemRole::Editor, Some(scope.clone())),
            grant(SystemRole::Admin, Some(scope)),
        ],
        0,
    );
    ResolvedSet::new(42, Some(1), Some(OrgRole::User), access, catalogue.clone())
}

fn cache_hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let catalogue = Arc::new(Catalogue::new([]));
    let cache = DecisionCache::new(CacheConfig::default(), Clock::default());
    let key = SetKey {
        kind: PrincipalKind::User,
        principal: parse_id(USER).unwrap(),
        workspace: parse_id(WORKSPACE).unwrap(),
    };
    let set = realistic_set(&catalogue);
    rt.block_on(cache.get_or_load(key, 0, async { Ok::<_, ()>(set) }))
        .unwrap();
    let read = catalogue.id("datasets:read").unwrap();

    // The hit path, measured for allocations before it is timed.
    let hits = 10_000u64;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    {
        for _ in 0..hits {
            let key = SetKey {
                kind: PrincipalKind::User,
                principal: parse_id(black_box(USER)).unwrap(),
                workspace: parse_id(black_box(WORKSPACE)).unwrap(),
            };
            let set = cache.get(&key, 0).unwrap();
            let permission = set.catalogue.id(black_box("datasets:read")).unwrap();
            black_box(set.verdict(permission));
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("hit path: {allocations} heap allocations in {hits} cache hits");
    // moka's housekeeping (run on reads every few hundred calls) is the only
    // allocator on this path: well under one allocation per hundred hits.
    assert!(allocations * 100 < hits, "a cache hit must not allocate");

    c.bench_function("decision/cache_hit", |b| {
        b.iter(|| {
            let set = cache.get(black_box(&key), 0).unwrap();
            black_box(set.verdict(black_box(read)))
        })
    });
    c.bench_function("decision/hit_path", |b| {
        b.iter(|| {
            let key = SetKey {
                kind: PrincipalKind::User,
                principal: parse_id(black_box(USER)).unwrap(),
                workspace: parse_id(black_box(WORKSPACE)).unwrap(),
            };
            let set = cache.get(&key, 0).unwrap();
            let permission = set.catalogue.id(black_box("datasets:read")).unwrap();
            black_box(set.verdict(permission))
        })
    });
}

fn cold_resolution(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let (state, seeded) = rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let size = SeedSize {
            users: 2_000,
            workspaces: 200,
            teams: 20,
            grants: 50_000,
        };
        let seeded = seed::seed(&store, size, 11).await.unwrap();
        (AppState::new(store, Settings::default()), seeded)
    });
    let mut rng = Rng::new(5);
    c.bench_function("resolve/cold_sqlite", |b| {
        b.to_async(&rt).iter_batched(
            || {
                state.decisions.invalidate(&Invalidation::All, u64::MAX);
                seeded.granted[rng.below(seeded.granted.len())].clone()
            },
            |(user, ws)| {
                let state = state.clone();
                async move {
                    let set = resolved_set_for_authorized_caller(
                        &state,
                        &PrincipalId::User(user),
                        &ws,
                        0,
                    )
                    .await
                    .unwrap();
                    black_box(set)
                }
            },
            BatchSize::SmallInput,
        )
    });
}

/// The codec's check that no string field of a request holds NUL, on a
/// typical Check request (paid once per RPC, before decoding).
fn text_check(c: &mut Criterion) {
    use prost::Message as _;
    let request = portcullis::proto::v1::CheckRequest {
        principal: Some(portcullis::proto::v1::CheckPrincipal {
            kind: Some(portcullis::proto::v1::check_principal::Kind::UserId(
                uuid::Uuid::new_v4().to_string(),
            )),
        }),
        workspace_id: uuid::Uuid::new_v4().to_string(),
        permission: "datasets:read".into(),
        resource: Some(portcullis::proto::v1::Resource {
            r#type: "datasets".into(),
            id: "d1".into(),
            tags: vec![portcullis::proto::v1::Tag {
                key: "Application".into(),
                value: "checkout".into(),
            }],
        }),
        at_least_revision: 0,
    }
    .encode_to_vec();
    c.bench_function("codec/text_check_check_request", |b| {
        b.iter(|| {
            portcullis::codec::text_violation::<portcullis::proto::v1::CheckRequest>(
                std::hint::black_box(&request),
            )
        })
    });
}

/// A whole Check RPC on a cache hit, in process: the front layer (metrics,
/// body read, limits, timeout, span, authentication, shares), tonic's
/// routing, the codec's check and decoding, the handler, and encoding the
/// response; everything a call costs but HTTP/2 and the socket. Counts its
/// heap allocations per call, then times it.
fn whole_rpc(c: &mut Criterion) {
    use http_body_util::BodyExt as _;
    use portcullis::{
        api::check::CheckApi,
        front::FrontLayer,
        proto::v1::{self as pb, check_service_server::CheckServiceServer},
    };
    use prost::Message as _;
    use tonic::{body::Body, codegen::http, service::Routes};
    use tower::{Layer as _, Service as _};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/rpc.db?mode=rwc", dir.path().display());
    let (state, seeded) = rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let size = SeedSize {
            users: 200,
            workspaces: 20,
            teams: 5,
            grants: 2_000,
        };
        let seeded = seed::seed(&store, size, 13).await.unwrap();
        (AppState::new(store, Settings::default()), seeded)
    });
    let (user, ws) = seeded.granted[0].clone();
    let frame = portcullis::codec::frame(&pb::CheckRequest {
        principal: Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::UserId(user)),
        }),
        workspace_id: ws,
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
    });
    let authorization = format!("Bearer {}", seeded.key);
    let service = FrontLayer::new(state.clone()).layer(Routes::new(CheckServiceServer::new(
        CheckApi::new(state.clone()),
    )));
    let request = || {
        http::Request::post("http://bench/portcullis.v1.CheckService/Check")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", authorization.as_str())
            .body(Body::new(http_body_util::Full::new(frame.clone())))
            .unwrap()
    };
    let call = |mut service: portcullis::front::Front<Routes>| {
        let request = request();
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .unwrap();
            let response = service.call(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap();
            let trailers = body.trailers().cloned().unwrap_or_default();
            let message = body.to_bytes();
            assert_eq!(
                trailers.get("grpc-status").map(|v| v.as_bytes()),
                Some(&b"0"[..]),
                "{trailers:?}"
            );
            let answer = pb::CheckResponse::decode(message.slice(5..)).unwrap();
            assert!(answer.allowed);
        }
    };
    // Warm the key and decision caches, then count.
    rt.block_on(call(service.clone()));
    let calls = 10_000u64;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    rt.block_on(async {
        for _ in 0..calls {
            call(service.clone()).await;
        }
    });
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    // What building the request costs the bench itself (a client's work).
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..calls {
        black_box(request());
    }
    let own = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "whole Check RPC on a cache hit: {:.1} heap allocations per call ({allocations} in {calls}), of which {:.1} build the request and {:.1} are the server's and reading the response",
        allocations as f64 / calls as f64,
        own as f64 / calls as f64,
        (allocations - own) as f64 / calls as f64,
    );
    c.bench_function("rpc/check_cache_hit_in_process", |b| {
        b.to_async(&rt).iter(|| call(service.clone()))
    });
}

criterion_group!(benches, cache_hits, cold_resolution, text_check, whole_rpc);
criterion_main!(benches);
