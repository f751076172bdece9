//! The `portcullis` command line: `serve`, `migrate`, `bootstrap`, `health`
//! and `rotate-signing-key`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::{
    bootstrap::{self, BootstrapInput},
    config::{DatabaseConfig, LogFormat, ServeConfig},
    domain::credentials,
    metrics, server,
    state::AppState,
    store::Store,
};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: a call allocates a few dozen
/// small objects, which glibc's malloc serves slower (and its large
/// request buffers consolidate its free lists on every call).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portcullis: a gRPC authorization service.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "PORTCULLIS_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: LogFormat,

    /// Log filter, in `tracing` syntax (e.g. `info`, `portcullis=debug`).
    #[arg(long, env = "PORTCULLIS_LOG", default_value = "info", global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    // Boxed: the server's flags make it much larger than the other commands.
    /// Migrates the database (creating a SQLite file if needed) and serves gRPC.
    Serve(Box<ServeConfig>),
    /// Applies pending database migrations and exits.
    Migrate(DatabaseConfig),
    /// Asks a running server's grpc.health.v1 service; exits 0 when SERVING
    /// (for container health checks: the image has no other gRPC client).
    Health {
        /// The server's gRPC address (plaintext).
        #[arg(
            long,
            env = "PORTCULLIS_HEALTH_ADDR",
            default_value = "127.0.0.1:50051"
        )]
        addr: String,
        /// The health name: `` (readiness: storage reachable), `liveness`, or a service.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Retires the key that signs temporary credentials and makes a new one
    /// in the database (every replica signs with it from then on); prints
    /// one JSON object with the new and the retired key ids.
    RotateSigningKey(DatabaseConfig),
    /// Creates the first organization, its admin and an organization-scoped
    /// service key; prints one JSON object with the key, shown only once.
    Bootstrap {
        #[command(flatten)]
        database: DatabaseConfig,
        /// Name of the first organization.
        #[arg(
            long,
            env = "PORTCULLIS_BOOTSTRAP_ORGANIZATION",
            default_value = "default"
        )]
        organization_name: String,
        /// Email of the first admin.
        #[arg(
            long,
            env = "PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL",
            default_value = "admin@localhost.localdomain"
        )]
        admin_email: String,
        /// The admin's subject id at the identity provider.
        #[arg(
            long,
            env = "PORTCULLIS_BOOTSTRAP_ADMIN_SUBJECT",
            default_value = "admin"
        )]
        admin_subject: String,
    },
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn open_store(database: &DatabaseConfig) -> Result<Store, String> {
    let store = Store::connect(&database.database_url)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot migrate the database: {e}"))?;
    Ok(store)
}

async fn serve(config: ServeConfig) -> Result<(), String> {
    let store = if config.no_migrate {
        Store::connect(&config.database.database_url)
            .await
            .map_err(|e| format!("cannot open the database: {e}"))?
    } else {
        open_store(&config.database).await?
    };
    let settings = config.settings()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let state = AppState::new(store, settings);
    let metrics = match config.metrics_listen.0 {
        Some(addr) => {
            let listener = metrics::bind(addr).await.map_err(|e| e.to_string())?;
            tracing::info!(listen = %addr, "metrics at /metrics");
            Some(tokio::spawn(metrics::serve(listener, state.clone())))
        }
        None => None,
    };
    tracing::info!(
        listen = %config.listen,
        tls = state.settings.tls.is_some(),
        mode = ?config.deployment_mode,
        "serving"
    );
    let result = server::run(listener, state, server::shutdown_signal())
        .await
        .map_err(|e| e.to_string());
    if let Some(task) = metrics {
        task.abort();
    }
    result
}

async fn health(addr: &str, service: String) -> Result<(), String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(2));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|e| format!("health check failed: {}", e.message()))?
        .into_inner()
        .status();
    println!("{}", status.as_str_name());
    if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
        Ok(())
    } else {
        Err(format!("{addr} is {}", status.as_str_name()))
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Health { addr, service } => health(&addr, service).await,
        Command::RotateSigningKey(database) => {
            let store = open_store(&database).await?;
            let rotated = credentials::rotate_signing_key_offline(&store)
                .await
                .map_err(|e| format!("rotation failed: {e}"))?;
            println!(
                "{}",
                serde_json::json!({
                    "key_id": rotated.key_id,
                    "retired_key_id": rotated.retired_key_id,
                    "revision": rotated.revision,
                })
            );
            Ok(())
        }
        Command::Migrate(database) => {
            open_store(&database).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Bootstrap {
            database,
            organization_name,
            admin_email,
            admin_subject,
        } => {
            let store = open_store(&database).await?;
            let input = BootstrapInput {
                organization_name,
                admin_email,
                admin_subject,
            };
            let out = bootstrap::run(&store, &input)
                .await
                .map_err(|e| format!("bootstrap failed: {e}"))?;
            println!("{}", out.to_json());
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("portcullis: {message}");
            ExitCode::FAILURE
        }
    }
}
