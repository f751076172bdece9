//! TLS on the gRPC port: with a certificate the server speaks only TLS; with a
//! client CA it also requires a client certificate that CA signed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
#[path = "support/processes.rs"]
mod processes;

use harness::{Backend, TestServer, req};
use portcullis::{
    config::{Settings, TlsMaterial},
    proto::v1::{self as pb, identity_service_client::IdentityServiceClient},
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A certificate authority able to sign leaf certificates.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names`: (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

async fn serve_tls(ca: &Authority, client_ca: Option<&Authority>) -> TestServer {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    let settings = Settings {
        tls: Some(TlsMaterial {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            client_ca_pem: client_ca.map(|c| c.pem.clone().into_bytes()),
        }),
        ..Settings::default()
    };
    harness::start_with_settings(Backend::Sqlite, settings).await
}

async fn connect(
    s: &TestServer,
    trust: &Authority,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&trust.pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", s.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

async fn list_teams(channel: Channel, key: &str) -> Result<usize, tonic::Status> {
    IdentityServiceClient::new(channel)
        .list_teams(req(pb::ListTeamsRequest::default(), key))
        .await
        .map(|r| r.into_inner().teams.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_port_speaks_only_tls() {
    let ca = Authority::new("portcullis test CA");
    let s = serve_tls(&ca, None).await;

    let channel = connect(&s, &ca, None)
        .await
        .expect("a client trusting the CA connects");
    assert_eq!(list_teams(channel, s.key()).await.unwrap(), 0);

    // Plaintext is refused (the harness's own channel is plaintext).
    assert!(list_teams(s.channel.clone(), s.key()).await.is_err());
    // A client trusting another CA does not accept the server.
    let stranger = Authority::new("another CA");
    let refused = match connect(&s, &stranger, None).await {
        Ok(channel) => list_teams(channel, s.key()).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "the server's certificate is checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_a_client_certificate_is_required() {
    let ca = Authority::new("portcullis test CA");
    let clients = Authority::new("client CA");
    let s = serve_tls(&ca, Some(&clients)).await;

    let with_cert = connect(&s, &ca, Some(clients.leaf(&["backend.internal"])))
        .await
        .unwrap();
    assert_eq!(list_teams(with_cert, s.key()).await.unwrap(), 0);

    for identity in [
        None,
        Some(Authority::new("rogue CA").leaf(&["backend.internal"])),
    ] {
        let refused = match connect(&s, &ca, identity).await {
            Ok(channel) => list_teams(channel, s.key()).await.is_err(),
            Err(_) => true,
        };
        assert!(
            refused,
            "no client certificate, or one the client CA did not sign"
        );
    }
}

#[test]
fn unreadable_tls_files_stop_serve_with_a_clear_error() {
    let out = std::process::Command::new(processes::BIN)
        .args([
            "serve",
            "--database-url",
            "sqlite::memory:",
            "--metrics-listen",
            "off",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/cert.pem"),
        "{stderr}"
    );

    let out = std::process::Command::new(processes::BIN)
        .args(["serve", "--tls-cert", "/nonexistent/cert.pem"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses a certificate without a key"
    );
}
