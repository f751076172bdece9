//! Fair share: one principal, or one organization, cannot take the server
//! from the others. Silent connections are closed after
//! `--handshake-timeout`, and no more than `--max-connections` are open. Calls
//! whose request message does not arrive hold no slot of the concurrency
//! limit and end DEADLINE_EXCEEDED after `--request-body-timeout`; a
//! principal beyond its share of the limit is shed while others are served;
//! each connection is held to `--max-streams-per-connection` streams, as h2
//! advertises. SQLite and PostgreSQL.
//!
//! The slow clients speak HTTP/2 directly (the `h2` crate): a tonic client
//! cannot send request headers without the message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use h2::{
    Ping, PingPong,
    client::{ResponseFuture, SendRequest},
};
use harness::{Backend, TestServer, WriteBlock, assert_code, check_request, req, sample};
use portcullis::{config::Settings, proto::v1 as pb};
use prost::{Message, bytes::Bytes};
use tokio::{net::TcpStream, sync::mpsc, time::timeout};
use tonic::{Code, codegen::http};
use tonic_health::pb::health_check_response::ServingStatus;

/// The longest any single wait of these tests may take.
const WAIT: Duration = Duration::from_secs(30);

const CHECK_PATH: &str = "/portcullis.v1.CheckService/Check";
const CHECK: &str = "method=\"portcullis.v1.CheckService/Check\"";

/// An HTTP/2 connection of the test's own: the handle that opens streams, the
/// one that pings, and the stream limit the server advertised.
struct RawConnection {
    send: SendRequest<Bytes>,
    ping: PingPong,
    max_streams: usize,
    _driver: tokio::task::JoinHandle<()>,
}

impl RawConnection {
    /// Connects and waits until the server's SETTINGS are known: a server
    /// sends them before it answers anything, so once a ping is answered the
    /// advertised limits are in force on this side.
    async fn open(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        let mut conn = Box::pin(conn);
        let mut ping = conn.ping_pong().expect("the ping handle");
        ping.send_ping(Ping::opaque()).unwrap();
        timeout(
            WAIT,
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    panic!("the connection ended during the handshake: {result:?}");
                }
                ping.poll_pong(cx)
            }),
        )
        .await
        .expect("the server answers a ping")
        .unwrap();
        let max_streams = conn.max_concurrent_send_streams();
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self {
            send,
            ping,
            max_streams,
            _driver: driver,
        }
    }

    /// Opens a Check stream with `key`: request headers only, no message yet.
    async fn open_check(&mut self, key: &str) -> (ResponseFuture, h2::SendStream<Bytes>) {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://portcullis{CHECK_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {key}"))
            .body(())
            .unwrap();
        let send = self.send.clone();
        let mut send = timeout(WAIT, send.ready())
            .await
            .expect("a stream can be opened")
            .unwrap();
        send.send_request(request, false).unwrap()
    }

    /// Returns once the server has read everything sent so far: it reads the
    /// connection in order, and answers a ping when it reads it.
    async fn barrier(&mut self) {
        timeout(WAIT, self.ping.ping(Ping::opaque()))
            .await
            .expect("the server answers a ping")
            .unwrap();
    }
}

/// How a raw call ended: its gRPC status and the response message, if any.
#[derive(Debug)]
struct Answer {
    code: Code,
    message: String,
    body: Vec<u8>,
}

/// Waits for the answer to a raw call. An error is a trailers-only response
/// (the status is in the headers); otherwise it follows the body.
async fn answer(response: ResponseFuture) -> Answer {
    let status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(|code| {
                let message = h
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                (Code::from(code), message.to_owned())
            })
    };
    let response = timeout(WAIT, response)
        .await
        .expect("an answer in time")
        .unwrap();
    if let Some((code, message)) = status(response.headers()) {
        return Answer {
            code,
            message,
            body: Vec::new(),
        };
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = timeout(WAIT, body.data()).await.expect("the body in time") {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = timeout(WAIT, body.trailers())
        .await
        .expect("the trailers in time")
        .unwrap()
        .unwrap_or_default();
    let (code, message) = status(&trailers).expect("grpc-status in the trailers");
    Answer {
        code,
        message,
        body: bytes,
    }
}

/// A Check by `key` through the tonic client: allowed, or why not.
async fn check_allowed(s: &TestServer, key: &str, user: &str, ws: &str) -> Result<bool, String> {
    s.check()
        .check(req(check_request(user, ws, "datasets:read", &[]), key))
        .await
        .map(|r| r.into_inner().allowed)
        .map_err(|status| format!("{status:?}"))
}

async fn in_flight(s: &TestServer) -> f64 {
    sample(&s.scrape().await, "portcullis_rpc_in_flight")
}

async fn one_principal_holding_slow_streams_does_not_starve_others(b: Backend) {
    let body_timeout = Duration::from_secs(3);
    let s = harness::start_with_settings(
        b,
        Settings {
            max_concurrent_requests: 16,
            request_body_timeout: body_timeout,
            ..Settings::default()
        },
    )
    .await;
    let (ann, ws) = s.viewer_of_shared().await;
    // A: Ann's personal access token. B: the bootstrap service key.
    let ann_key = s.pat(&ann).await;
    assert_eq!(check_allowed(&s, &ann_key, &ann, &ws).await, Ok(true));

    // A opens more streams than the server has slots, over a few
    // connections, and never sends a message on any of them.
    let (connections, per_connection) = (3, 12);
    let slow = connections * per_connection;
    assert!(slow > 16);
    let ended = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..connections {
        let mut conn = RawConnection::open(s.addr).await;
        for _ in 0..per_connection {
            let (response, stream) = conn.open_check(&ann_key).await;
            held.push(stream);
            let ended = ended.clone();
            answers.push(tokio::spawn(async move {
                let answer = answer(response).await;
                ended.fetch_add(1, Ordering::SeqCst);
                answer
            }));
        }
        // The server has read every one of these streams' headers.
        conn.barrier().await;
        conns.push(conn);
    }

    // While they hang, B is served, again and again, and probes answer.
    for i in 0..10 {
        match check_allowed(&s, s.key(), &ann, &ws).await {
            Ok(allowed) => assert!(allowed, "B's Check {i} was denied"),
            Err(status) => panic!("B's Check {i} was refused while A's streams hung: {status}"),
        }
    }
    assert_eq!(
        harness::health_of(&s.channel, "portcullis.v1.CheckService").await,
        ServingStatus::Serving
    );
    assert_eq!(
        ended.load(Ordering::SeqCst),
        0,
        "B was served while every one of A's streams was still open"
    );

    // After the body timeout every one of A's streams is answered.
    for task in answers {
        let answer = task.await.unwrap();
        assert_eq!(answer.code, Code::DeadlineExceeded, "{answer:?}");
        assert!(
            answer.message.contains("--request-body-timeout"),
            "{answer:?}"
        );
    }
    drop((held, conns));
    let scrape = s.scrape().await;
    assert_eq!(
        sample(&scrape, "portcullis_request_body_timeouts_total"),
        slow as f64
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("portcullis_rpc_requests_total{{{CHECK},code=\"DEADLINE_EXCEEDED\"}}")
        ),
        slow as f64
    );
    assert_eq!(
        sample(&scrape, "portcullis_rpc_shed_total{reason=\"server\"}"),
        0.0
    );
    assert_eq!(sample(&scrape, "portcullis_rpc_in_flight"), 0.0);
    // A itself is served once it sends its messages.
    assert_eq!(check_allowed(&s, &ann_key, &ann, &ws).await, Ok(true));
}

async fn a_principal_beyond_its_share_is_shed_while_others_are_served(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            max_concurrent_requests: 8,
            max_concurrent_per_principal: 2,
            ..Settings::default()
        },
    )
    .await;
    let (ann, ws) = s.viewer_of_shared().await;
    // A: the bootstrap service key. B: Ann's personal access token. Both keys
    // and Ann's decisions are cached first, so nothing below needs storage
    // but A's writes.
    let ann_key = s.pat(&ann).await;
    assert_eq!(check_allowed(&s, &ann_key, &ann, &ws).await, Ok(true));
    assert_eq!(check_allowed(&s, s.key(), &ann, &ws).await, Ok(true));

    // Two of A's writes wait for the revision row and hold A's share. With
    // A's key cached, nothing between taking a slot of the server's limit
    // and taking A's share waits, so both are counted once both are in flight.
    let block = WriteBlock::hold(&s.db_url).await;
    let writers: Vec<_> = (0..2)
        .map(|i| tokio::spawn(s.create_team_as(s.key(), &format!("held-{i}"))))
        .collect();
    harness::wait_until(
        "A's writes in flight",
        WAIT,
        || in_flight(&s),
        |n| *n == 2.0,
    )
    .await;

    // A's third call is refused at once, whatever it is.
    assert_code(
        s.check()
            .check(req(check_request(&ann, &ws, "datasets:read", &[]), s.key()))
            .await,
        Code::ResourceExhausted,
        "this principal is at its share of 2 concurrent requests; retry with backoff",
    );
    // B is served, well within the server's limit.
    for i in 0..5 {
        assert_eq!(
            check_allowed(&s, &ann_key, &ann, &ws).await,
            Ok(true),
            "B's Check {i}"
        );
    }
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "the refusal and B's answers came while A's writes were still held"
    );
    let scrape = s.scrape().await;
    assert_eq!(
        sample(&scrape, "portcullis_rpc_shed_total{reason=\"principal\"}"),
        1.0
    );
    assert_eq!(
        sample(&scrape, "portcullis_rpc_shed_total{reason=\"server\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("portcullis_rpc_requests_total{{{CHECK},code=\"RESOURCE_EXHAUSTED\"}}")
        ),
        1.0
    );

    block.release().await;
    for writer in writers {
        timeout(WAIT, writer)
            .await
            .expect("a held write ends once storage frees up")
            .unwrap()
            .expect("a held write completes");
    }
    // The finished writes gave A's share back.
    harness::wait_until("nothing in flight", WAIT, || in_flight(&s), |n| *n == 0.0).await;
    for _ in 0..3 {
        assert_eq!(check_allowed(&s, s.key(), &ann, &ws).await, Ok(true));
    }
}

async fn the_stream_cap_is_advertised_and_enforced(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            max_streams_per_connection: 4,
            // Held streams must outlast the test: they end only when it says so.
            request_body_timeout: Duration::from_secs(60),
            ..Settings::default()
        },
    )
    .await;
    assert_eq!(
        sample(&s.scrape().await, "portcullis_http2_max_concurrent_streams"),
        4.0
    );
    let (ann, ws) = s.viewer_of_shared().await;
    let message = portcullis::codec::frame(&check_request(&ann, &ws, "datasets:read", &[]));

    let mut conn = RawConnection::open(s.addr).await;
    assert_eq!(conn.max_streams, 4, "the cap is advertised");

    // Four streams wait for their messages: the connection is full.
    let (events, mut order) = mpsc::unbounded_channel();
    let mut held = Vec::new();
    for i in 0..4 {
        let (response, stream) = conn.open_check(s.key()).await;
        held.push(stream);
        let events = events.clone();
        tokio::spawn(async move {
            let _ = events.send((format!("held-{i}"), answer(response).await));
        });
    }
    // A fifth, complete call is queued, not started.
    let (response, mut fifth) = conn.open_check(s.key()).await;
    fifth.send_data(message.clone(), true).unwrap();
    let waiting = tokio::spawn(async move { answer(response).await });
    conn.barrier().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.barrier().await;
    assert!(!waiting.is_finished(), "the fifth call was answered");
    assert_eq!(
        sample(
            &s.scrape().await,
            &format!("portcullis_rpc_requests_total{{{CHECK},code=\"OK\"}}")
        ),
        0.0,
        "the server answered a Check beyond the cap"
    );

    // One held call gets its message and finishes; only then the fifth starts.
    held[0].send_data(message, true).unwrap();
    let (first, answer) = timeout(WAIT, order.recv()).await.unwrap().unwrap();
    assert_eq!(first, "held-0");
    assert_eq!(answer.code, Code::Ok, "{answer:?}");
    let fifth_answer = timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(fifth_answer.code, Code::Ok, "{fifth_answer:?}");
    let decoded = pb::CheckResponse::decode(&fifth_answer.body[5..]).unwrap();
    assert!(decoded.allowed);
    drop(held);
}

/// Globex, a second tenant: its admin, his personal access token, his
/// default workspace.
async fn globex(s: &TestServer) -> (String, String, String) {
    let g = s.globex().await;
    let key = s.pat_in(&g.id, &g.admin).await;
    (g.admin, key, g.home)
}

async fn an_organization_beyond_its_share_is_shed_while_others_are_served(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            max_concurrent_requests: 16,
            max_concurrent_per_organization: 3,
            max_concurrent_per_principal: 2,
            ..Settings::default()
        },
    )
    .await;
    let (zed, zed_key, zed_home) = globex(&s).await;
    // A second principal of the bootstrap organization: A1 and A2 are one tenant.
    let (_, second) = harness::account_key(&s, "second", pb::OrgRole::OrgAdmin, &[]).await;
    // Keys and decisions cached: nothing below needs storage but the writes.
    assert_eq!(check_allowed(&s, &zed_key, &zed, &zed_home).await, Ok(true));
    let (ann, ws) = s.viewer_of_shared().await;
    assert_eq!(check_allowed(&s, &second, &ann, &ws).await, Ok(true));

    let block = WriteBlock::hold(&s.db_url).await;
    let write = |key: &str, name: &str| tokio::spawn(s.create_team_as(key, name));
    let writers = vec![
        write(s.key(), "held-1"),
        write(s.key(), "held-2"),
        write(&second, "held-3"),
    ];
    // In flight is counted on admission; at the write gate, a call is past
    // its organization's share too.
    harness::wait_until(
        "the organization's writes past its share",
        WAIT,
        || async {
            let scrape = s.scrape().await;
            sample(&scrape, "portcullis_storage_writes{state=\"waiting\"}")
                + sample(&scrape, "portcullis_storage_writes{state=\"writing\"}")
        },
        |n| *n == 3.0,
    )
    .await;
    for (i, w) in writers.iter().enumerate() {
        assert!(!w.is_finished(), "write {i} ended early");
    }
    // A2 is within its own share, but its organization is at the tenant's.
    assert_code(
        s.check()
            .check(req(check_request(&ann, &ws, "datasets:read", &[]), &second))
            .await,
        Code::ResourceExhausted,
        "this organization is at its share of 3 concurrent requests; retry with backoff",
    );
    for i in 0..5 {
        assert_eq!(
            check_allowed(&s, &zed_key, &zed, &zed_home).await,
            Ok(true),
            "the other tenant's Check {i}"
        );
    }
    assert!(writers.iter().all(|w| !w.is_finished()));
    let scrape = s.scrape().await;
    assert_eq!(
        sample(
            &scrape,
            "portcullis_rpc_shed_total{reason=\"organization\"}"
        ),
        1.0
    );
    block.release().await;
    for writer in writers {
        timeout(WAIT, writer).await.unwrap().unwrap().unwrap();
    }
}

async fn queued_writes_of_one_tenant_leave_storage_to_the_others(b: Backend) {
    let s = harness::start(b).await;
    let (_, zed_key, _) = globex(&s).await;
    // Forty writes of one tenant wait for the revision row: beyond what the
    // pool has, were each holding a connection while it waits.
    let block = WriteBlock::hold(&s.db_url).await;
    let writers: Vec<_> = (0..40)
        .map(|i| tokio::spawn(s.create_team_as(s.key(), &format!("queued-{i}"))))
        .collect();
    harness::wait_until(
        "the writes in flight",
        WAIT,
        || in_flight(&s),
        |n| *n == 40.0,
    )
    .await;
    // The other tenant's reads need storage, and get it at once.
    for i in 0..5 {
        let mut client = s.identity();
        let read = client.list_members(req(pb::ListMembersRequest::default(), &zed_key));
        let answer = timeout(Duration::from_secs(4), read)
            .await
            .unwrap_or_else(|_| panic!("the other tenant's read {i} waited for storage"));
        assert!(answer.is_ok(), "read {i}: {answer:?}");
    }
    assert!(writers.iter().all(|w| !w.is_finished()));
    block.release().await;
    for writer in writers {
        timeout(WAIT, writer).await.unwrap().unwrap().unwrap();
    }
}

/// Whether the server closes `stream` within `within`: a read sees the end.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn silent_connections_are_closed_and_counted(b: Backend) {
    let s = harness::start_with_settings(
        b,
        Settings {
            max_connections: 8,
            handshake_timeout: Duration::from_millis(500),
            ..Settings::default()
        },
    )
    .await;
    let open = || async { sample(&s.scrape().await, "portcullis_connections_open") };
    let before = open().await;
    // Silent sockets up to the limit: each holds a connection until the deadline.
    let room = 8 - before as usize;
    let mut silent = Vec::new();
    for _ in 0..room {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    harness::wait_until("the silent connections open", WAIT, open, |n| *n == 8.0).await;
    // One more is closed at once.
    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(5)).await,
        "a connection beyond the limit was kept"
    );
    let scrape = s.scrape().await;
    assert!(sample(&scrape, "portcullis_connections_refused_total") >= 1.0);
    // The silent ones are closed after the handshake deadline, and counted.
    for stream in &mut silent {
        assert!(
            closed_by_server(stream, WAIT).await,
            "a silent connection was kept"
        );
    }
    harness::wait_until(
        "the silent connections counted",
        WAIT,
        || async {
            sample(
                &s.scrape().await,
                "portcullis_connection_handshake_timeouts_total",
            )
        },
        |n| *n == room as f64,
    )
    .await;
    // The server takes and serves connections again.
    let (ann, ws) = s.viewer_of_shared().await;
    assert_eq!(check_allowed(&s, s.key(), &ann, &ws).await, Ok(true));
    assert_eq!(
        harness::health_of(&s.channel, "").await,
        ServingStatus::Serving
    );
}

both_backends!(
    silent_connections_are_closed_and_counted,
    one_principal_holding_slow_streams_does_not_starve_others,
    a_principal_beyond_its_share_is_shed_while_others_are_served,
    an_organization_beyond_its_share_is_shed_while_others_are_served,
    queued_writes_of_one_tenant_leave_storage_to_the_others,
    the_stream_cap_is_advertised_and_enforced,
);
