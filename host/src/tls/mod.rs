//! TLS on the proxy port: certificates read from PEM files, one chosen per connection by
//! the name the client asks for (SNI), replaced whole without a restart.
//!
//! [`ServerTls`] holds the rustls server configuration the workers accept with, and the
//! certificates it answers with behind one atomic pointer: a reload (`SIGHUP`,
//! `POST /admin/reload`, or a change in a folder holding one of the files) reads every file
//! again, and only if all of them load is the new set swapped in. A handshake in progress
//! keeps the certificate it chose; an open connection is not touched. A file that does not
//! load (missing, half written, a key that is not the certificate's) is an error naming
//! it: at start placerd does not start; at a reload the running certificates keep serving.
//!
//! TLS 1.2 and 1.3 only, ALPN `http/1.1`, the ring provider, stateless session tickets
//! and a session cache so returning clients resume.

mod client;
pub(crate) mod socket;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use crate::throttle::Throttle;
use crate::watch::{FolderWatch, watch};

pub use client::{ClientTls, RunnerTlsFiles, client_verifier};
pub use socket::Socket;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate first, then the intermediates that lead to a root.
    pub cert_file: PathBuf,
    /// The private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[tls]` as validated: the certificate for clients that name no server (or one no
/// other certificate has), and certificates for named servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `[tls] cert_file` and `key_file`; without them, the first `[[tls.certificates]]`.
    pub default: Option<CertFiles>,
    /// `[[tls.certificates]]`: `server_names` (lower case; `*.example.com` matches one
    /// label) and their files.
    pub named: Vec<(Vec<String>, CertFiles)>,
}

impl TlsFiles {
    /// Every file named.
    fn files(&self) -> impl Iterator<Item = &CertFiles> {
        self.default.iter().chain(self.named.iter().map(|(_, files)| files))
    }
}

/// Why a certificate did not load: the key and file, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key} {path}: {problem}")]
pub struct TlsError {
    pub(crate) key: String,
    pub(crate) path: String,
    pub(crate) problem: String,
}

impl TlsError {
    pub(crate) fn new(key: &str, path: &str, problem: String) -> TlsError {
        TlsError { key: key.into(), path: path.into(), problem }
    }
}

/// The certificates answering handshakes, swapped whole: read by [`ServerTls::prepare`],
/// put in force by [`ServerTls::install`].
#[derive(Debug)]
pub struct Certificates {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is kept as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Every certificate's DER, in order: tells a reload whether anything changed.
    fingerprint: Vec<Vec<u8>>,
}

/// Chooses the certificate for each handshake from the current set.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<Certificates>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certificates = self.current.load();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(key) = certificates.exact.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = certificates.wildcard.get(parent)
            {
                return Some(key.clone());
            }
        }
        certificates.default.clone()
    }
}

/// TLS for the proxy port: the acceptor the workers hand connections to, and the
/// certificates behind it.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<Resolver>,
    provider: Arc<CryptoProvider>,
    /// Rate limit of the "handshake failed" log lines (any client can fail one).
    failure_log: Throttle,
    /// The files the certificates in force were read from.
    files: std::sync::Mutex<TlsFiles>,
    /// The config table they come from (`tls`, `admin.tls`), for errors and logs.
    key: &'static str,
}

impl ServerTls {
    /// Reads every certificate and key `files` name and builds the server configuration.
    ///
    /// # Errors
    /// The first file that does not load, named with its key.
    pub fn load(files: &TlsFiles) -> Result<ServerTls, TlsError> {
        Self::load_as("tls", files)
    }

    /// [`ServerTls::load`] for the config table `key` (`admin.tls`).
    ///
    /// # Errors
    /// The first file that does not load, named with its key.
    pub fn load_as(key: &'static str, files: &TlsFiles) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let certificates = read_certificates(key, files, &provider)?;
        let resolver = Arc::new(Resolver { current: ArcSwap::from_pointee(certificates) });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError { key: "tls".into(), path: String::new(), problem: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        match rustls::crypto::ring::Ticketer::new() {
            Ok(ticketer) => config.ticketer = ticketer,
            Err(e) => tracing::warn!(error = %e, "tls: no session tickets (resumption by the session cache only)"),
        }
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            resolver,
            provider,
            failure_log: Throttle::new(10, std::time::Duration::from_secs(10)),
            files: std::sync::Mutex::new(files.clone()),
            key,
        })
    }

    /// Reads every file `files` names, for [`ServerTls::install`].
    ///
    /// # Errors
    /// The first file that does not load.
    pub fn prepare(&self, files: &TlsFiles) -> Result<Certificates, TlsError> {
        read_certificates(self.key, files, &self.provider)
    }

    /// The acceptor a server using these certificates hands its connections to.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// Answers new handshakes with `certificates`, read from `files`. Returns whether any
    /// certificate changed.
    pub fn install(&self, files: &TlsFiles, certificates: Certificates) -> bool {
        let changed = certificates.fingerprint != self.resolver.current.load().fingerprint;
        if changed {
            self.resolver.current.store(Arc::new(certificates));
        }
        *self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = files.clone();
        changed
    }

    /// The files the certificates in force were read from.
    pub fn files(&self) -> TlsFiles {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads the files in force again and, if all load, answers new handshakes with
    /// them. Returns whether any certificate changed.
    ///
    /// # Errors
    /// The first file that does not load; the certificates in force stay.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = self.files();
        let next = self.prepare(&files)?;
        Ok(self.install(&files, next))
    }

    /// Watches the folders holding the files in force and reloads the certificates after
    /// a change there (a file rewritten or renamed into place, a Kubernetes Secret's
    /// `..data` swapped), logging what happened. The watch lasts as long as the returned
    /// handles; a reload that names other files needs a new watch.
    pub fn watch(self: &Arc<Self>) -> Vec<FolderWatch> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for pair in self.files().files() {
            for path in [&pair.cert_file, &pair.key_file] {
                let dir = folder_of(path);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        let mut watches = Vec::new();
        for dir in dirs {
            let tls = self.clone();
            let watched = watch(&dir, move || {
                let tls = tls.clone();
                async move {
                    match tls.reload() {
                        Ok(true) => tracing::info!("tls: certificates changed on disk; new connections get them"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "tls: certificate files changed but do not load; the running certificates stay")
                        }
                    }
                }
            });
            match watched {
                Ok(w) => watches.push(w),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "tls: not watching; certificates reload on SIGHUP or POST /admin/reload only");
                }
            }
        }
        watches
    }
}

impl ServerTls {
    /// Runs the TLS handshake of a client connection on the proxy port: it must end
    /// within `timeout` (the time a request head may take: a client that stalls
    /// mid-handshake is closed as one that stalls mid-head). A client that sends HTTP in
    /// clear instead gets a `400` in clear, saying so, and a close. `Ok(None)`: the client
    /// closed before its first byte.
    ///
    /// # Errors
    /// What to count it as (`failed`, `timeout`, `plain_http`) and the reason.
    pub(crate) async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
        timeout: std::time::Duration,
    ) -> Result<Option<Socket>, (&'static str, String)> {
        let failed = |e: std::io::Error| ("failed", e.to_string());
        let attempt = async {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await.map_err(failed)? == 0 {
                return Ok(None); // closed before a byte: not a handshake
            }
            // Every TLS connection starts with a handshake record (content type 22).
            if first[0] != 22 && first[0].is_ascii_uppercase() {
                socket::write_all(&tcp, PLAIN_HTTP_ANSWER).await.map_err(failed)?;
                // Closing with the request unread would reset the connection, and the
                // reset can overtake the answer: read what came, and close the sending
                // side first.
                let mut sink = [0u8; 4096];
                while matches!(tcp.try_read(&mut sink), Ok(n) if n > 0) {}
                let _ = tcp.into_std().map(|s| s.shutdown(std::net::Shutdown::Write));
                return Err(("plain_http", PLAIN_HTTP.to_string()));
            }
            let (tcp, conn) = self.acceptor.accept(tcp).await.map_err(failed)?.into_inner();
            Ok(Some(Socket::tls(tcp, conn)))
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(("timeout", format!("no handshake within {} ms", timeout.as_millis()))))
    }

    /// Logs a failed handshake from `peer` (rate limited: any client can fail one).
    pub(crate) fn log_failure(&self, peer: Option<std::net::SocketAddr>, reason: &str) {
        if let Some(dropped) = self.failure_log.admit() {
            tracing::info!(key = self.key, peer = ?peer, reason, dropped, "tls: handshake failed");
        }
    }
}

const PLAIN_HTTP: &str = "an HTTP request in clear on the TLS port";
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 52\r\nconnection: close\r\n\r\nThis port speaks HTTPS: send the request over TLS.\r\n";

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files()).finish_non_exhaustive()
    }
}

/// The crypto provider of every TLS configuration.
///
/// ring offers X25519 and the NIST curves but no post-quantum key exchange
/// (X25519MLKEM768, which aws-lc-rs has; rustls marks ring's provider deprecated for that).
/// ring builds from `cc` alone on a fresh machine; aws-lc-rs is the next to measure
/// against it.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Sessions a returning TLS 1.2 client (or a TLS 1.3 one without tickets) can resume.
const SESSION_CACHE: usize = 16 * 1024;

/// The folder a file is in (`.` for a bare name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn read_certificates(key: &str, files: &TlsFiles, provider: &CryptoProvider) -> Result<Certificates, TlsError> {
    let mut certificates =
        Certificates { default: None, exact: HashMap::new(), wildcard: HashMap::new(), fingerprint: Vec::new() };
    if let Some(default) = &files.default {
        let certified = certified_key(key, default, provider)?;
        certificates.fingerprint.extend(certified.cert.iter().map(|c| c.to_vec()));
        certificates.default = Some(Arc::new(certified));
    }
    for (i, (names, pair)) in files.named.iter().enumerate() {
        let certified = Arc::new(certified_key(&format!("{key}.certificates[{i}]"), pair, provider)?);
        certificates.fingerprint.extend(certified.cert.iter().map(|c| c.to_vec()));
        if certificates.default.is_none() {
            certificates.default = Some(certified.clone());
        }
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => certificates.wildcard.entry(parent.to_string()).or_insert_with(|| certified.clone()),
                None => certificates.exact.entry(name.clone()).or_insert_with(|| certified.clone()),
            };
        }
    }
    Ok(certificates)
}

/// Reads one certificate chain and its key, and checks that they belong together.
pub(crate) fn certified_key(key: &str, files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let fail = |which: &str, path: &Path, problem: String| TlsError {
        key: format!("{key}.{which}"),
        path: path.display().to_string(),
        problem,
    };
    let cert_pem = std::fs::read(&files.cert_file).map_err(|e| fail("cert_file", &files.cert_file, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| fail("cert_file", &files.cert_file, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(fail("cert_file", &files.cert_file, "no certificate in it (PEM, BEGIN CERTIFICATE)".into()));
    }
    let key_pem = std::fs::read(&files.key_file).map_err(|e| fail("key_file", &files.key_file, e.to_string()))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        fail("key_file", &files.key_file, format!("no private key in it (PEM: PKCS#8, PKCS#1 or SEC1): {e}"))
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| fail("key_file", &files.key_file, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        fail("key_file", &files.key_file, format!("is not the key of {}: {e}", files.cert_file.display()))
    })?;
    Ok(certified)
}
