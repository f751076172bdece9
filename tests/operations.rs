//! Protection and observability: the concurrency limit sheds instead of
//! queueing, the request timeout answers DEADLINE_EXCEEDED and loses nothing,
//! message sizes are bounded, and the Prometheus endpoint reports RPCs,
//! decisions and caches. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::{Backend, TestServer, WriteBlock, assert_code, check_request, http_get, req, sample};
use portcullis::{authz::cache::CacheConfig, config::Settings, proto::v1 as pb};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn health(s: &TestServer) -> ServingStatus {
    harness::health_of(&s.channel, "portcullis.v1.CheckService").await
}

async fn team_names(s: &TestServer) -> Vec<String> {
    s.identity()
        .list_teams(req(pb::ListTeamsRequest::default(), s.key()))
        .await
        .unwrap()
        .into_inner()
        .teams
        .into_iter()
        .map(|t| t.name)
        .collect()
}

/// Polls the metrics until `series` reaches `value`.
async fn wait_for_sample(s: &TestServer, series: &str, value: f64) {
    harness::wait_until(
        series,
        Duration::from_secs(20),
        || async { sample(&s.scrape().await, series) },
        |v| *v == value,
    )
    .await;
}

const CHECK: &str = "method=\"portcullis.v1.CheckService/Check\"";

async fn beyond_the_concurrency_limit_calls_are_shed_at_once(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            max_concurrent_requests: 4,
            ..Settings::default()
        },
    )
    .await;
    let (ann, ws) = s.viewer_of_shared().await;
    assert!(s.allowed(&ann, &ws, "datasets:read", &[]).await);

    // Four writes wait for the revision row and hold every slot.
    let block = WriteBlock::hold(&s.db_url).await;
    let writers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(s.create_team_as(s.key(), &format!("held-{i}"))))
        .collect();
    wait_for_sample(&s, "portcullis_rpc_in_flight", 4.0).await;

    // Everything beyond the limit is refused while the four still wait.
    let checks: Vec<_> = (0..40)
        .map(|_| {
            let mut client = s.check();
            let request = req(check_request(&ann, &ws, "datasets:read", &[]), s.key());
            tokio::spawn(async move { client.check(request).await })
        })
        .collect();
    for check in checks {
        let status = check.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("limit of 4 concurrent requests"),
            "{status:?}"
        );
    }
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "the shed calls were answered while the slots were still held"
    );
    assert_eq!(
        health(&s).await,
        ServingStatus::Serving,
        "probes are never shed"
    );

    block.release().await;
    for writer in writers {
        writer
            .await
            .unwrap()
            .expect("a held write completes once storage frees up");
    }
    let names = team_names(&s).await;
    for i in 0..4 {
        assert!(names.contains(&format!("held-{i}")), "{names:?}");
    }
    assert!(s.allowed(&ann, &ws, "datasets:read", &[]).await);

    let scrape = s.scrape().await;
    assert_eq!(
        sample(&scrape, "portcullis_rpc_shed_total{reason=\"server\"}"),
        40.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("portcullis_rpc_requests_total{{{CHECK},code=\"RESOURCE_EXHAUSTED\"}}")
        ),
        40.0
    );
    assert_eq!(sample(&scrape, "portcullis_rpc_in_flight"), 0.0);
}

async fn a_call_past_the_request_timeout_is_answered_and_changes_nothing(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            request_timeout: Duration::from_millis(300),
            ..Settings::default()
        },
    )
    .await;
    let block = WriteBlock::hold(&s.db_url).await;
    let status = s.create_team_as(s.key(), "late").await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("deadline of 300 ms"),
        "{status:?}"
    );
    block.release().await;

    s.create_team_as(s.key(), "after")
        .await
        .expect("the server goes on");
    let names = team_names(&s).await;
    assert!(names.contains(&"after".to_owned()), "{names:?}");
    assert!(
        !names.contains(&"late".to_owned()),
        "an abandoned call's transaction is rolled back: {names:?}"
    );
    let scrape = s.scrape().await;
    assert_eq!(
        sample(
            &scrape,
            "portcullis_rpc_requests_total{method=\"portcullis.v1.IdentityService/CreateTeam\",code=\"DEADLINE_EXCEEDED\"}"
        ),
        1.0
    );
}

async fn oversized_messages_and_batches_are_refused(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            max_message_bytes: 4096,
            max_batch_size: 10,
            ..Settings::default()
        },
    )
    .await;
    let status = s
        .create_team_as(s.key(), &"x".repeat(8192))
        .await
        .unwrap_err();
    // tonic's code for an oversized message.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("the limit is: 4096 bytes"),
        "{status:?}"
    );
    let names = team_names(&s).await;
    assert!(names.is_empty(), "{names:?}");

    let ws = s.workspace("shared").await;
    let admin = s.boot.admin_user_id.clone();
    let batch = |n: usize| pb::BatchCheckRequest {
        checks: (0..n)
            .map(|_| check_request(&admin, &ws, "datasets:read", &[]))
            .collect(),
    };
    assert_code(
        s.check().batch_check(req(batch(11), s.key())).await,
        Code::InvalidArgument,
        "at most 10 checks per batch, got 11",
    );
    let ok = s
        .check()
        .batch_check(req(batch(10), s.key()))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().results.len(), 10);
}

async fn metrics_report_rpcs_decisions_and_caches(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            // Room for one resolved set only, and short-lived: evictions of both causes.
            cache: CacheConfig {
                max_entries: 1,
                max_bytes: 4096,
                ttl: Duration::from_millis(300),
            },
            ..Settings::default()
        },
    )
    .await;
    let (ann, ws) = s.viewer_of_shared().await;
    assert!(s.allowed(&ann, &ws, "datasets:read", &[]).await);
    assert!(s.allowed(&ann, &ws, "datasets:read", &[]).await);
    assert!(!s.allowed(&ann, &ws, "datasets:delete", &[]).await);
    let batch = pb::BatchCheckRequest {
        checks: vec![
            check_request(&ann, &ws, "datasets:read", &[]),
            check_request(&ann, &ws, "datasets:delete", &[]),
            check_request(&ann, &ws, "no-such:permission", &[]),
        ],
    };
    s.check().batch_check(req(batch, s.key())).await.unwrap();
    assert_code(
        s.check()
            .check(req(
                check_request(&ann, &ws, "datasets:read", &[]),
                "pcv2_sk_nope",
            ))
            .await,
        Code::Unauthenticated,
        "malformed api key",
    );

    let scrape = s.scrape().await;
    // Three Checks and two decided batch items; the unknown permission is an error, not a decision.
    assert_eq!(
        sample(&scrape, "portcullis_decisions_total{decision=\"allowed\"}"),
        3.0
    );
    assert_eq!(
        sample(&scrape, "portcullis_decisions_total{decision=\"denied\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("portcullis_rpc_requests_total{{{CHECK},code=\"OK\"}}")
        ),
        3.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("portcullis_rpc_requests_total{{{CHECK},code=\"UNAUTHENTICATED\"}}")
        ),
        1.0
    );
    let ok = format!("{CHECK},code=\"OK\"");
    assert_eq!(
        sample(
            &scrape,
            &format!("portcullis_rpc_duration_seconds_bucket{{{ok},le=\"+Inf\"}}")
        ),
        3.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("portcullis_rpc_duration_seconds_count{{{ok}}}")
        ),
        3.0
    );
    assert!(
        sample(
            &scrape,
            &format!("portcullis_rpc_duration_seconds_sum{{{ok}}}")
        ) > 0.0
    );
    assert!(sample(&scrape, "portcullis_cache_hits_total{cache=\"decision\"}") >= 2.0);
    assert!(sample(&scrape, "portcullis_cache_misses_total{cache=\"decision\"}") >= 1.0);
    assert!(sample(&scrape, "portcullis_cache_hits_total{cache=\"api_key\"}") >= 1.0);
    assert_eq!(sample(&scrape, "portcullis_storage_up"), 1.0);
    assert!(sample(&scrape, "portcullis_revision_applied") >= 1.0);
    assert!(scrape.contains("# TYPE portcullis_rpc_duration_seconds histogram"));

    // Sets for other workspaces push the first out; waiting past the TTL expires the rest.
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        for i in 0..3 {
            let other = s.workspace(&format!("ws-{round}-{i}")).await;
            s.allowed(&s.boot.admin_user_id, &other, "datasets:read", &[])
                .await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.allowed(&ann, &ws, "datasets:read", &[]).await;
        let scrape = s.scrape().await;
        let size = sample(
            &scrape,
            "portcullis_cache_evictions_total{cache=\"decision\",cause=\"size\"}",
        );
        let expired = sample(
            &scrape,
            "portcullis_cache_evictions_total{cache=\"decision\",cause=\"expired\"}",
        );
        if size > 0.0 && expired > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no evictions counted: size {size}, expired {expired}"
        );
    }

    let (status, body) = http_get(s.metrics_addr, "/nope").await;
    assert_eq!(status, 404, "{body}");
}

/// Replicas starting together on a fresh PostgreSQL database all migrate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_take_turns() {
    let db = harness::TestDb::new(Backend::Postgres).await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move {
                let store = portcullis::store::Store::connect(&url).await.unwrap();
                store.migrate().await
            })
        })
        .collect();
    for run in runs {
        run.await
            .unwrap()
            .expect("every concurrent migration succeeds");
    }
    let store = portcullis::store::Store::connect(&db.url).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), 0);
}

async fn hostile_text_gets_a_clear_bounded_answer(b: Backend) {
    let s = harness::start(b).await;
    let get = |id: String| {
        let mut client = s.workspaces();
        let request = req(pb::GetWorkspaceRequest { workspace_id: id }, s.key());
        async move { client.get_workspace(request).await }
    };
    // NUL is refused for every string field before any storage sees it.
    let status = s.create_team_as(s.key(), "x\0y").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "name: must not contain the NUL character (U+0000)"
    );
    // An id field holds an id in its one spelling, or nothing.
    assert_code(
        get("a\0b".into()).await,
        Code::InvalidArgument,
        "workspace_id: must be an id in canonical form",
    );
    // No string is longer than 1024 bytes.
    assert_code(
        get("🦀".repeat(2500)).await,
        Code::InvalidArgument,
        "workspace_id: must be at most 1024 bytes",
    );
    // A long value is quoted, but the message stays short enough for any client.
    let ws = s.workspace("hostile").await;
    let status = s
        .workspaces()
        .set_resource_tags(req(
            pb::SetResourceTagsRequest {
                workspace_id: ws,
                resource_type: "prompts".into(),
                resource_id: "p".into(),
                tags: vec![pb::Tag {
                    key: "Environment".into(),
                    value: "é".repeat(300),
                }],
            },
            s.key(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().len() <= 512, "{}", status.message().len());
    assert!(status.message().ends_with('…'));
}

/// The entry gauges count what the caches hold at the moment of the
/// scrape, not what their housekeeping last got round to counting.
async fn cache_entry_gauges_show_what_is_cached_when_scraped(b: Backend) {
    let s = harness::start(b).await;
    let (ann, ws) = s.viewer_of_shared().await;
    // One miss, then three hits of the decision and api-key caches.
    for _ in 0..4 {
        assert!(s.allowed(&ann, &ws, "datasets:read", &[]).await);
    }
    let scrape = s.scrape().await;
    assert!(sample(&scrape, "portcullis_cache_hits_total{cache=\"api_key\"}") >= 3.0);
    assert!(sample(&scrape, "portcullis_cache_hits_total{cache=\"decision\"}") >= 3.0);
    assert!(
        sample(&scrape, "portcullis_cache_entries{cache=\"decision\"}") >= 1.0,
        "{scrape}"
    );
    assert!(
        sample(&scrape, "portcullis_cache_entries{cache=\"api_key\"}") >= 1.0,
        "{scrape}"
    );
}

both_backends!(
    cache_entry_gauges_show_what_is_cached_when_scraped,
    beyond_the_concurrency_limit_calls_are_shed_at_once,
    a_call_past_the_request_timeout_is_answered_and_changes_nothing,
    oversized_messages_and_batches_are_refused,
    metrics_report_rpcs_decisions_and_caches,
    hostile_text_gets_a_clear_bounded_answer,
);
