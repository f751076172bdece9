//! Builds and runs the gRPC server: the per-connection stream cap, the front
//! layer, health, reflection, the services, and graceful shutdown.
//!
//! `run` takes a bound listener and a shutdown future so that `main` and the
//! tests drive it the same way.

use std::time::Duration;

use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{
        audit::AuditApi, check::CheckApi, identity::IdentityApi, noop::NoopApi, roles::RolesApi,
        watch::WatchApi, workspace::WorkspaceApi,
    },
    front::FrontLayer,
    proto::{
        self,
        v1::{
            audit_service_server::AuditServiceServer, check_service_server::CheckServiceServer,
            identity_service_server::IdentityServiceServer, noop_service_server::NoopServiceServer,
            roles_service_server::RolesServiceServer, watch_service_server::WatchServiceServer,
            workspace_service_server::WorkspaceServiceServer,
        },
    },
    state::AppState,
};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Applies the message size limits to a generated service.
macro_rules! limited {
    ($server:ident, $api:expr, $state:expr) => {
        $server::new($api)
            .max_decoding_message_size($state.settings.max_message_bytes)
            .max_encoding_message_size($state.settings.max_message_bytes)
    };
}

/// The fully qualified names of the served services, for health.
pub const SERVICE_NAMES: &[&str] = &[
    "portcullis.v1.IdentityService",
    "portcullis.v1.WorkspaceService",
    "portcullis.v1.RolesService",
    "portcullis.v1.CheckService",
    "portcullis.v1.AuditService",
    "portcullis.v1.WatchService",
];

/// A health name that is SERVING from start-up until shutdown, whatever
/// storage does: for liveness probes, since restarting a replica does not
/// bring a database back.
pub const LIVENESS: &str = "liveness";

/// Sets the readiness names: `""` and every service.
async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}

/// Keeps health in step with storage: NOT_SERVING while it cannot be reached.
async fn watch_storage(state: AppState, reporter: HealthReporter, every: Duration) {
    let mut serving = true;
    loop {
        tokio::time::sleep(every).await;
        let up = state.store.ping().await.is_ok();
        state.metrics.set_storage_up(up);
        if up != serving {
            serving = up;
            if up {
                tracing::info!("storage reachable again; serving");
                set_status(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!("storage unreachable; health is NOT_SERVING");
                set_status(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then drains in-flight calls
/// for at most the configured grace period.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if state.settings.credentials.key_file.is_none() {
        // Beside serving, not before it: start-up never waits for storage.
        // Not fatal either: the first credential or key set asked for makes it.
        let store = state.store.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::domain::credentials::ensure_signing_key(&store).await {
                tracing::warn!(error = %err, "cannot make the first credential signing key yet");
            }
        });
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    set_status(&reporter, ServingStatus::Serving).await;
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    // grpcurl asks v1 first and falls back to v1alpha; older clients only know v1alpha.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let watcher = tokio::spawn(watch_storage(
        state.clone(),
        reporter.clone(),
        state.settings.health_probe_interval,
    ));
    let follower = tokio::spawn(crate::domain::change::follow::run(state.clone()));
    let checkpoints = tokio::spawn(state.store.clone().checkpoints());
    let expiry = tokio::spawn(crate::domain::expiry::run(
        state.clone(),
        state.settings.expiry_sweep,
    ));
    let grace = state.settings.shutdown_grace;
    let (draining_tx, draining_rx) = oneshot::channel::<()>();
    let signal_reporter = reporter.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
        set_status(&signal_reporter, ServingStatus::NotServing).await;
        signal_reporter
            .set_service_status(LIVENESS, ServingStatus::NotServing)
            .await;
        let _ = draining_tx.send(());
    };

    let noop = state
        .settings
        .bench_noop
        .then(|| limited!(NoopServiceServer, NoopApi, state));
    // h2 advertises the cap in its SETTINGS and refuses streams beyond it, so
    // one connection cannot hold more than its share of calls waiting for a
    // request body; well-behaved clients queue until a stream finishes.
    let mut builder =
        Server::builder().max_concurrent_streams(state.settings.max_streams_per_connection);
    if let Some(tls) = &state.settings.tls {
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(config)?;
    }
    let router = builder
        .layer(FrontLayer::new(state.clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(
            IdentityServiceServer,
            IdentityApi::new(state.clone()),
            state
        ))
        .add_service(limited!(
            WorkspaceServiceServer,
            WorkspaceApi::new(state.clone()),
            state
        ))
        .add_service(limited!(
            RolesServiceServer,
            RolesApi::new(state.clone()),
            state
        ))
        .add_service(limited!(
            CheckServiceServer,
            CheckApi::new(state.clone()),
            state
        ))
        .add_service(limited!(
            AuditServiceServer,
            AuditApi::new(state.clone()),
            state
        ))
        .add_service(limited!(
            WatchServiceServer,
            WatchApi::new(state.clone()),
            state
        ))
        .add_optional_service(noop);
    let incoming = crate::listener::incoming(
        listener,
        crate::listener::Admission {
            max_connections: state.settings.max_connections,
            handshake_timeout: state.settings.handshake_timeout,
        },
        state.metrics.clone(),
    );
    let serve = router.serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(serve);
    let result = tokio::select! {
        result = &mut serve => result.map_err(ServerError::from),
        () = async {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; dropping unfinished calls");
            Ok(())
        }
    };
    watcher.abort();
    follower.abort();
    checkpoints.abort();
    expiry.abort();
    result
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
