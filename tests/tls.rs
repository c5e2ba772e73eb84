//! TLS on the proxy port, end to end: certificates made here (rcgen) by a test CA, a
//! rustls client, a reference runner behind placerd.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Reply, eventually, runner, start};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use placerd::tls::{CertFiles, ServerTls, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA") }
    }

    /// A leaf for `names` (and 127.0.0.1): its certificate and key, PEM.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        self.leaf_with(names, |_| {})
    }

    fn leaf_with(&self, names: &[&str], tweak: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>()).expect("params");
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        tweak(&mut params);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }
}

/// Writes `cert` and `key` to `dir/NAME.crt` and `dir/NAME.key` (each renamed into
/// place, as a rotation does), returning the pair.
fn write_pair(dir: &Path, name: &str, (cert, key): &(String, String)) -> CertFiles {
    common::atomic_write(dir, &format!("{name}.crt"), cert.as_bytes());
    common::atomic_write(dir, &format!("{name}.key"), key.as_bytes());
    CertFiles { cert_file: dir.join(format!("{name}.crt")), key_file: dir.join(format!("{name}.key")) }
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).expect("root");
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one: a resumed session shows the certificate of the session
    // it resumes, not the one the server holds now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Connects over TLS to `addr` asking for `name`.
async fn connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).expect("name");
    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await
}

/// The certificate the server at `addr` answers `name` with.
async fn served_certificate(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
    let stream = connect(addr, config, name).await.expect("handshake");
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().expect("certificates")[0].to_vec()
}

/// One HTTP/1.1 client connection over TLS (hyper's client).
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn open(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Client> {
        let stream = connect(addr, config, "localhost").await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client { sender })
    }

    async fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let response = self.sender.send_request(request).await?;
        let (head, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: head.status, headers: head.headers, body })
    }
}

/// A placerd in front of one reference runner, its proxy port over TLS with `files`.
async fn placerd_with(files: TlsFiles, tweak: impl FnOnce(&mut placerd::config::Config)) -> common::Placerd {
    let r = runner(8, "r").await;
    let address = r.addr.to_string();
    std::mem::forget(r); // serves until the test process ends
    start(vec![address], "naive", |c| {
        c.tls = Some(files);
        tweak(c);
    })
    .await
}

fn one(files: CertFiles) -> TlsFiles {
    TlsFiles { default: Some(files), named: Vec::new() }
}

#[tokio::test]
async fn calls_over_tls_reach_the_runner_and_keep_their_connection() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let files = write_pair(dir.path(), "server", &ca.leaf(&["localhost"]));
    let p = placerd_with(one(files), |_| {}).await;
    let config = client_config(&ca);
    let mut client = Client::open(p.addr, &config).await.expect("TLS connection");
    for i in 0..20 {
        let body = vec![b'a' + (i % 26) as u8; 100 + i * 5000];
        let reply = client.send("POST", &format!("/t/app/f{i}"), &body).await.expect("answered");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert!(!reply.header("fn-placer").is_empty(), "placed by a placer");
    }
    // A large body each way, chunked to the runner and back.
    let big = vec![b'z'; 3 << 20];
    let reply = client.send("POST", "/t/app/echo", &big).await.expect("answered");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_asked() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let default = write_pair(dir.path(), "default", &ca.leaf(&["localhost"]));
    let a = write_pair(dir.path(), "a", &ca.leaf(&["a.test"]));
    let b = write_pair(dir.path(), "b", &ca.leaf(&["*.b.test"]));
    let der = |files: &CertFiles| {
        let pem = std::fs::read(&files.cert_file).expect("pem");
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).map(|c: CertificateDer<'_>| c.to_vec()).expect("der")
    };
    let (want_default, want_a, want_b) = (der(&default), der(&a), der(&b));
    let files =
        TlsFiles { default: Some(default), named: vec![(vec!["a.test".into()], a), (vec!["*.b.test".into()], b)] };
    let p = placerd_with(files, |_| {}).await;
    let config = client_config(&ca);
    assert_eq!(served_certificate(p.addr, &config, "a.test").await, want_a);
    assert_eq!(served_certificate(p.addr, &config, "x.b.test").await, want_b);
    assert_eq!(served_certificate(p.addr, &config, "localhost").await, want_default, "an unknown name: the default");
    // `*.b.test` covers one label only; the default certificate does not cover the
    // name, so the client refuses it.
    let e = connect(p.addr, &config, "y.x.b.test").await.expect_err("no certificate for the name");
    assert!(e.to_string().contains("NotValidForName") || e.to_string().contains("not valid"), "{e}");
}

#[tokio::test]
async fn a_plain_http_request_to_the_tls_port_gets_a_400_in_clear_and_a_close() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let p = placerd_with(one(write_pair(dir.path(), "s", &ca.leaf(&["localhost"]))), |_| {}).await;
    let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("sent");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("closed, not left hanging")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("HTTPS"), "{answer}");
    let metrics = common::send(p.admin, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("placerd_tls_handshakes_total{result=\"plain_http\"} 2"), "probe and this one:\n{text}");
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_by_the_header_timeout() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let files = one(write_pair(dir.path(), "s", &ca.leaf(&["localhost"])));
    let p = placerd_with(files, |c| c.client_header_timeout = Duration::from_millis(300)).await;
    // The first bytes of a ClientHello record, then nothing.
    let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
    tcp.write_all(&[22, 3, 1, 0, 200, 1]).await.expect("sent");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "closed by placerd");
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    let metrics = common::send(p.admin, "GET", "/metrics", &[], b"").await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("placerd_tls_handshakes_total{result=\"timeout\"} 1"));
}

#[tokio::test]
async fn bad_requests_over_tls_get_the_same_answers_as_in_clear() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let p = placerd_with(one(write_pair(dir.path(), "s", &ca.leaf(&["localhost"]))), |_| {}).await;
    let config = client_config(&ca);
    for (request, status) in [
        (&b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..], "400"),
        (b"GET / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "501"),
        (b"BREW\x01 / HTTP/1.1\r\n\r\n", "400"),
    ] {
        let mut stream = connect(p.addr, &config, "localhost").await.expect("handshake");
        stream.write_all(request).await.expect("sent");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.expect("closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{status}: {answer}");
    }
    // A head larger than allowed: 431.
    let mut stream = connect(p.addr, &config, "localhost").await.expect("handshake");
    let mut big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 128 << 10));
    let _ = stream.write_all(&big).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.expect("closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431 "), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn a_certificate_or_key_that_does_not_load_is_an_error_naming_the_file() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let good = write_pair(dir.path(), "good", &ca.leaf(&["localhost"]));
    let other = write_pair(dir.path(), "other", &ca.leaf(&["localhost"]));
    let missing = dir.path().join("missing.crt");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").expect("write");
    let cases: Vec<(CertFiles, PathBuf, &str)> = vec![
        (CertFiles { cert_file: missing.clone(), key_file: good.key_file.clone() }, missing, "tls.cert_file"),
        (CertFiles { cert_file: good.cert_file.clone(), key_file: garbage.clone() }, garbage.clone(), "tls.key_file"),
        (CertFiles { cert_file: garbage.clone(), key_file: good.key_file.clone() }, garbage, "tls.cert_file"),
        (
            CertFiles { cert_file: good.cert_file.clone(), key_file: other.key_file.clone() },
            other.key_file.clone(),
            "is not the key of",
        ),
    ];
    for (files, path, says) in cases {
        let e = ServerTls::load(&one(files)).expect_err("does not load").to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(says), "{e}");
    }
    assert!(ServerTls::load(&one(good)).is_ok());
}

#[tokio::test]
async fn placerd_does_not_start_with_a_certificate_that_does_not_load() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("nope.crt");
    let mut config = placerd::config::Config {
        tls: Some(one(CertFiles { cert_file: missing.clone(), key_file: dir.path().join("nope.key") })),
        placers_dir: dir.path().to_path_buf(),
        ..placerd::config::Config::default()
    };
    config.workers = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let e =
        placerd::serve_with_admin(listener, None, config, std::future::pending()).await.expect_err("refused to start");
    assert!(format!("{e:#}").contains(&missing.display().to_string()), "{e:#}");
}

#[tokio::test]
async fn certificates_rotated_on_disk_under_load_drop_no_call_and_a_bad_rotation_is_refused() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let files = write_pair(dir.path(), "server", &ca.leaf(&["localhost"]));
    let p = placerd_with(one(files), |_| {}).await;
    let config = client_config(&ca);
    let first = served_certificate(p.addr, &config, "localhost").await;

    // Clients keep calling, on kept connections and on new ones, while the files change.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for fresh in [false, true] {
        let (stop, answered, failed, config, addr) =
            (stop.clone(), answered.clone(), failed.clone(), config.clone(), p.addr);
        clients.push(tokio::spawn(async move {
            let mut client = Client::open(addr, &config).await.expect("connection");
            while !stop.load(Ordering::Relaxed) {
                if fresh {
                    client = match Client::open(addr, &config).await {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("connect: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                }
                match client.send("POST", "/t/app/rotate", b"x").await {
                    Ok(r) if r.status == StatusCode::OK => answered.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("status {}", r.status);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A rotation: new certificate and key renamed into place.
    write_pair(dir.path(), "server", &ca.leaf(&["localhost"]));
    let config2 = config.clone();
    let addr = p.addr;
    assert!(
        eventually(Duration::from_secs(10), async || served_certificate(addr, &config2, "localhost").await != first)
            .await,
        "new connections get the rotated certificate"
    );
    let second = served_certificate(p.addr, &config, "localhost").await;

    // A bad rotation (a key that is not the certificate's): refused, the last good
    // certificate keeps serving.
    let (cert, _) = ca.leaf(&["localhost"]);
    let (_, wrong_key) = ca.leaf(&["localhost"]);
    write_pair(dir.path(), "server", &(cert, wrong_key));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_certificate(p.addr, &config, "localhost").await, second, "the running certificate stays");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "calls failed during rotation");
    assert!(answered.load(Ordering::Relaxed) > 20, "{} calls", answered.load(Ordering::Relaxed));
}

/// A reference runner on loopback serving TLS with `pair` (written to `dir` as `name`),
/// requiring client certificates from `client_ca` when given.
async fn tls_runner(
    dir: &Path,
    name: &str,
    pair: &(String, String),
    client_ca: Option<&Ca>,
) -> placerd::runner::reference::RunnerHandle {
    let files = write_pair(dir, name, pair);
    let ca_file = client_ca.map(|ca| {
        let path = dir.join(format!("{name}-client-ca.pem"));
        std::fs::write(&path, ca.issuer.pem()).expect("write");
        path
    });
    let acceptor = placerd::runner::reference::tls_acceptor(&files, ca_file.as_deref()).expect("runner TLS");
    let options = placerd::runner::reference::RunnerOptions { max_concurrency: 8, name: name.into() };
    placerd::runner::reference::RunnerHandle::spawn_with(SocketAddr::from(([127, 0, 0, 1], 0)), options, Some(acceptor))
        .await
        .expect("runner")
}

/// `[runners.tls]` trusting `ca`, with `client` as placerd's certificate if given.
fn runner_tls(dir: &Path, ca: &Ca, client: Option<&(String, String)>) -> placerd::tls::RunnerTlsFiles {
    let ca_file = dir.join("runner-ca.pem");
    std::fs::write(&ca_file, ca.issuer.pem()).expect("write");
    placerd::tls::RunnerTlsFiles {
        ca_file,
        client: client.map(|pair| write_pair(dir, "placerd-client", pair)),
        server_name: None,
    }
}

#[tokio::test]
async fn calls_reach_a_runner_over_mutual_tls_both_ends_encrypted() {
    let (runner_ca, placerd_ca, client_ca) = (Ca::new("runner CA"), Ca::new("placerd CA"), Ca::new("client CA"));
    let dir = tempfile::tempdir().expect("dir");
    let r = tls_runner(dir.path(), "r", &runner_ca.leaf(&["localhost"]), Some(&placerd_ca)).await;
    let runners = runner_tls(dir.path(), &runner_ca, Some(&placerd_ca.leaf(&["placerd"])));
    let proxy_files = one(write_pair(dir.path(), "proxy", &client_ca.leaf(&["localhost"])));
    let address = r.addr.to_string();
    let p = start(vec![address], "naive", |c| {
        c.tls = Some(proxy_files);
        c.runner_tls = Some(runners);
        c.status_interval = Duration::from_millis(50);
    })
    .await;
    let mut client = Client::open(p.addr, &client_config(&client_ca)).await.expect("TLS connection");
    for i in 0..30 {
        let reply = client.send("POST", &format!("/t/app/f{i}"), &vec![b'x'; 10 + i * 3000]).await.expect("answer");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    assert_eq!(r.stats.received(), 30);
    // The status polls went over mutual TLS too: the runner stays healthy.
    let runners = common::send(p.admin, "GET", "/admin/runners", &[], b"").await;
    assert!(!String::from_utf8_lossy(&runners.body).contains("\"healthy\":false"), "{:?}", runners.body);
}

#[tokio::test]
async fn a_runner_whose_certificate_does_not_verify_is_a_connect_failure_and_the_call_goes_on() {
    let (ca, other_ca) = (Ca::new("runner CA"), Ca::new("someone else's CA"));
    let dir = tempfile::tempdir().expect("dir");
    let past = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    };
    let elsewhere = |p: &mut CertificateParams| {
        p.subject_alt_names = vec![SanType::DnsName("elsewhere.test".try_into().expect("name"))]
    };
    let expired = tls_runner(dir.path(), "expired", &ca.leaf_with(&["localhost"], past), None).await;
    let wrong_ca = tls_runner(dir.path(), "wrong-ca", &other_ca.leaf(&["localhost"]), None).await;
    let wrong_name = tls_runner(dir.path(), "wrong-name", &ca.leaf_with(&["elsewhere.test"], elsewhere), None).await;
    // Wants a client certificate; placerd has none here.
    let mutual = tls_runner(dir.path(), "mutual", &ca.leaf(&["localhost"]), Some(&other_ca)).await;
    let good = tls_runner(dir.path(), "good", &ca.leaf(&["localhost"]), None).await;
    let bad = [&expired, &wrong_ca, &wrong_name, &mutual];
    let mut runners: Vec<String> = bad.iter().map(|r| r.addr.to_string()).collect();
    runners.push(good.addr.to_string());
    let files = runner_tls(dir.path(), &ca, None);
    let p = start(runners, "naive", |c| c.runner_tls = Some(files)).await;
    for i in 0..25 {
        let reply = common::send(p.addr, "POST", &format!("/t/app/f{i}"), &[], b"x").await;
        assert_eq!(reply.status, StatusCode::OK, "call {i}: {:?}", reply.body);
    }
    assert_eq!(good.stats.received(), 25, "every call ran once, on the good runner");
    for r in bad {
        assert_eq!(r.stats.received(), 0, "a runner that failed the handshake never got a request");
    }

    // Each failure names its reason (what the "runner connect failed" log line carries).
    let tls = placerd::tls::ClientTls::load(&runner_tls(dir.path(), &ca, None)).expect("client TLS");
    for (runner, says) in [(&expired, "expired"), (&wrong_ca, "issuer"), (&wrong_name, "name")] {
        let tcp = TcpStream::connect(runner.addr).await.expect("connect");
        let e = tls.connect(tcp, &runner.addr.to_string()).await.expect_err("does not verify").to_string();
        assert!(e.to_lowercase().contains(says), "{says}: {e}");
    }
}

#[tokio::test]
async fn the_admin_port_over_tls_answers_over_tls_only() {
    let ca = Ca::new("admin CA");
    let dir = tempfile::tempdir().expect("dir");
    let files = one(write_pair(dir.path(), "admin", &ca.leaf(&["localhost"])));
    let r = runner(8, "r").await;
    let p = start(vec![r.addr.to_string()], "naive", |c| c.admin_tls = Some(files)).await;
    let mut client = Client::open(p.admin, &client_config(&ca)).await.expect("TLS connection");
    let reply = client.send("GET", "/healthz", b"").await.expect("answer");
    assert_eq!(reply.status, StatusCode::OK);
    let reply = client.send("GET", "/admin/config", b"").await.expect("answer");
    assert_eq!(reply.status, StatusCode::OK);
    // In clear: no answer, the connection closes.
    let mut tcp = TcpStream::connect(p.admin).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("sent");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await.expect("closed");
    assert!(!String::from_utf8_lossy(&answer).contains("alive"), "{}", String::from_utf8_lossy(&answer));
    // The proxy port stays plain.
    assert_eq!(common::send(p.addr, "POST", "/t/app/f", &[], b"x").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_admin_reload_reads_certificates_again_and_refuses_ones_that_do_not_load() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("dir");
    let r = runner(8, "r").await;
    let first = write_pair(dir.path(), "first", &ca.leaf(&["localhost"]));
    let config = |files: &CertFiles| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplacers_dir = {:?}\ncache_dir = \"off\"\n\
             [runners]\nstatic = [\"{}\"]\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path().join("placers"),
            r.addr,
            files.cert_file,
            files.key_file,
        )
    };
    let path = dir.path().join("placerd.toml");
    std::fs::write(&path, config(&first)).expect("config");
    let (logged, addr, admin) = common::serve_config(&path);
    let client = client_config(&ca);
    let before = served_certificate(addr, &client, "localhost").await;

    // Other files: applied by the reload, reported as changed.
    let second = write_pair(dir.path(), "second", &ca.leaf(&["localhost"]));
    std::fs::write(&path, config(&second)).expect("config");
    let reply = common::send(admin, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(reply.json()["changed"].to_string().contains("\"tls\""), "{}", reply.json());
    let after = served_certificate(addr, &client, "localhost").await;
    assert_ne!(before, after, "new connections get the new certificate");

    // A key that is not the certificate's: refused, naming the file; the running
    // certificate stays and calls go on.
    let (cert, _) = ca.leaf(&["localhost"]);
    let (_, key) = ca.leaf(&["localhost"]);
    let third = write_pair(dir.path(), "third", &(cert, key));
    std::fs::write(&path, config(&third)).expect("config");
    let reply = common::send(admin, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", reply.body);
    let problems = reply.json()["problems"].to_string();
    assert!(problems.contains("third.key"), "{problems}");
    assert_eq!(served_certificate(addr, &client, "localhost").await, after);
    let mut calls = Client::open(addr, &client).await.expect("connection");
    assert_eq!(calls.send("POST", "/t/app/f", b"x").await.expect("answer").status, StatusCode::OK);
    drop(logged);
}

#[tokio::test]
async fn clients_that_refuse_the_proxy_ports_certificate_fail_cleanly_and_are_counted() {
    let (ca, other_ca) = (Ca::new("test CA"), Ca::new("another CA"));
    let dir = tempfile::tempdir().expect("dir");
    let expired = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    };
    let files = TlsFiles {
        default: Some(write_pair(dir.path(), "good", &ca.leaf(&["localhost"]))),
        named: vec![(vec!["old.test".into()], write_pair(dir.path(), "old", &ca.leaf_with(&["old.test"], expired)))],
    };
    let p = placerd_with(files, |_| {}).await;
    // A client that trusts another CA, one that asks for the expired certificate's name,
    // and one that asks for a name no certificate holds: each refuses, with its reason.
    for (config, name, says) in [
        (client_config(&other_ca), "localhost", "issuer"),
        (client_config(&ca), "old.test", "expired"),
        (client_config(&ca), "nobody.test", "name"),
    ] {
        let e = connect(p.addr, &config, name).await.expect_err("refused").to_string();
        assert!(e.to_lowercase().contains(says), "{name}: {e}");
    }
    // placerd hears each refusal as an alert: counted as a failed handshake, and the
    // proxy port goes on serving.
    let config = client_config(&ca);
    let metrics = async || {
        let text = common::send(p.admin, "GET", "/metrics", &[], b"").await.body;
        String::from_utf8_lossy(&text).contains("placerd_tls_handshakes_total{result=\"failed\"} 3")
    };
    assert!(eventually(Duration::from_secs(5), metrics).await, "three failed handshakes counted");
    let mut client = Client::open(p.addr, &config).await.expect("TLS connection");
    assert_eq!(client.send("POST", "/t/app/f", b"x").await.expect("answer").status, StatusCode::OK);
}
