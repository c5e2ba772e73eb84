//! TLS to the runners (`[runners.tls]`): the CA bundle placerd trusts for them, the name
//! it verifies (the runner's host unless `server_name` says otherwise), and placerd's own
//! client certificate for runners that ask for one (mutual TLS). Sessions resume: rustls
//! keeps the tickets runners give, per name.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::{CertFiles, Socket, TlsError, certified_key, provider};

/// `[runners.tls]` as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerTlsFiles {
    /// `ca_file`: PEM, the certificates placerd trusts as roots for runners.
    pub ca_file: PathBuf,
    /// `cert_file` and `key_file`: placerd's client certificate, for runners that require
    /// one.
    pub client: Option<CertFiles>,
    /// `server_name`: the name every runner's certificate must hold; `None`: the host of
    /// the runner's address (a name or an IP address).
    pub server_name: Option<String>,
}

/// What placerd connects to runners with.
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA bundle and the client certificate, if any.
    ///
    /// # Errors
    /// The first file that does not load, named with its key; a `server_name` that is not
    /// a DNS name or IP address.
    pub fn load(files: &RunnerTlsFiles) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let fail = |key: &str, path: &std::path::Path, problem: String| TlsError {
            key: format!("runners.tls.{key}"),
            path: path.display().to_string(),
            problem,
        };
        let pem = std::fs::read(&files.ca_file).map_err(|e| fail("ca_file", &files.ca_file, e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| fail("ca_file", &files.ca_file, format!("not PEM certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| fail("ca_file", &files.ca_file, format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(fail("ca_file", &files.ca_file, "no certificate in it (PEM, BEGIN CERTIFICATE)".into()));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| fail("ca_file", &files.ca_file, e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &files.client {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                // Checked as a pair first (the key is the certificate's), then handed over.
                let certified = certified_key("runners.tls", pair, &provider)?;
                let key_pem =
                    std::fs::read(&pair.key_file).map_err(|e| fail("key_file", &pair.key_file, e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| fail("key_file", &pair.key_file, format!("no private key in it: {e}")))?;
                builder
                    .with_client_auth_cert(certified.cert.clone(), key)
                    .map_err(|e| fail("key_file", &pair.key_file, e.to_string()))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = match &files.server_name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| TlsError {
                key: "runners.tls.server_name".into(),
                path: name.clone(),
                problem: format!("not a DNS name or IP address: {e}"),
            })?),
        };
        Ok(ClientTls { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name })
    }

    /// Runs the handshake with the runner at `address` (`host:port`) on `tcp`. Nothing of
    /// a call has been written when it fails.
    ///
    /// # Errors
    /// The handshake failed: the runner's certificate did not verify (its reason is in the
    /// error), it wanted a client certificate placerd does not have, or it closed.
    pub async fn connect(&self, tcp: TcpStream, address: &str) -> std::io::Result<Socket> {
        let (tcp, conn) = self.connect_stream(tcp, address).await?.into_inner();
        Ok(Socket::tls(tcp, conn))
    }

    /// [`ClientTls::connect`] as a stream for hyper (the status poller's).
    ///
    /// # Errors
    /// As [`ClientTls::connect`].
    pub(crate) async fn connect_stream(
        &self,
        tcp: TcpStream,
        address: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_name(address)?,
        };
        self.connector.connect(name, tcp).await
    }
}

/// The name to verify for a runner at `address`: its host, a DNS name or an IP address.
fn host_name(address: &str) -> std::io::Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host} is not a name to verify: {e}"))
    })
}

/// A CA bundle a runner trusts for clients, as `rustls` wants it for requiring client
/// certificates (the reference runner's `--client-ca`).
///
/// # Errors
/// The file does not hold a usable certificate.
pub fn client_verifier(
    ca_file: &std::path::Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let fail = |problem: String| TlsError { key: "client CA".into(), path: ca_file.display().to_string(), problem };
    let pem = std::fs::read(ca_file).map_err(|e| fail(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| fail(e.to_string()))?).map_err(|e| fail(e.to_string()))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| fail(e.to_string()))
}
