//! The ceiling of the gRPC benchmarks: a bare tonic server answering
//! `grpc.health.v1.Health/Check`, with none of Portcullis' layers (no front
//! layer, no metrics, no limits, no tracing, no storage).
//!
//! `loadgen` starts it beside `portcullis serve`, on the same machine and
//! with the same server settings tonic is given there, and reports every
//! figure as a share of it.
//!
//! ```text
//! ceiling --listen 127.0.0.1:50600
//! ```

// A benchmark tool: failing loudly is its error handling.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use clap::Parser;
use tokio_stream::StreamExt;

/// The allocator `portcullis serve` runs with, so that the comparison is
/// of the layers, not of the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves only `grpc.health.v1.Health` on a bare tonic server.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50600")]
    listen: SocketAddr,
    /// HTTP/2 streams per connection, as `portcullis serve` is given.
    #[arg(long, default_value_t = 256)]
    max_streams_per_connection: u32,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .expect("bind --listen");
    // As Portcullis' listener does: no Nagle delay on small responses.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    tonic::transport::Server::builder()
        .max_concurrent_streams(args.max_streams_per_connection)
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}
