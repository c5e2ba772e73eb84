//! Runner discovery in a running placerd (issue 8): DNS against a DNS server on loopback
//! that this test runs (records added and removed while calls flow, resolver failures),
//! and a runner file that turns invalid.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, runner, send, start};
use hyper::StatusCode;
use placerd::config::RunnerSource;
use placerd::runner::reference::{RunnerHandle, RunnerOptions};
use tokio::net::UdpSocket;

/// A small authoritative DNS server on 127.0.0.1:0 (RFC 1035 over UDP): answers A queries
/// for any name with the current `records`, AAAA queries with no records, and SERVFAIL
/// while `failing` is set.
struct DnsServer {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Ipv4Addr>>>,
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    async fn start(records: Vec<Ipv4Addr>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let records = Arc::new(Mutex::new(records));
        let failing = Arc::new(AtomicBool::new(false));
        let (r, f) = (records.clone(), failing.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
                let answer = answer(&buf[..len], &r.lock().expect("lock"), f.load(Ordering::Relaxed));
                if let Some(reply) = answer {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        DnsServer { addr, records, failing, task }
    }

    fn set(&self, records: &[Ipv4Addr]) {
        *self.records.lock().expect("lock") = records.to_vec();
    }
}

/// The reply to one query, or `None` for a packet that is not one.
fn answer(query: &[u8], records: &[Ipv4Addr], failing: bool) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels up to the root, then QTYPE and QCLASS.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let qtype = u16::from_be_bytes([question[question.len() - 4], question[question.len() - 3]]);
    let answers: &[Ipv4Addr] = if qtype == 1 && !failing { records } else { &[] };
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[..2]); // id
    let rcode = if failing { 2 } else { 0 }; // SERVFAIL : NOERROR
    reply.extend_from_slice(&[0x84 | (query[2] & 0x01), 0x80 | rcode]); // QR, AA, RD copied; RA
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for ip in answers {
        reply.extend_from_slice(&[0xc0, 12]); // the name: a pointer to the question's
        reply.extend_from_slice(&[0, 1, 0, 1]); // A, IN
        reply.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: nobody caches
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// Reference runners on 127.0.0.2, .3, ... sharing one port, as pods behind a headless
/// Service share their container port.
async fn runners_on_one_port(count: u8) -> (u16, Vec<(Ipv4Addr, RunnerHandle)>) {
    'attempt: for _ in 0..20 {
        let first = RunnerHandle::spawn_on(
            "127.0.0.2:0".parse().expect("addr"),
            RunnerOptions { max_concurrency: 64, name: "10.2".into() },
        )
        .await
        .expect("runner");
        let port = first.addr.port();
        let mut runners = vec![(Ipv4Addr::new(127, 0, 0, 2), first)];
        for last in 3..2 + count {
            let ip = Ipv4Addr::new(127, 0, 0, last);
            let options = RunnerOptions { max_concurrency: 64, name: format!("10.{last}") };
            match RunnerHandle::spawn_on(SocketAddr::from((ip, port)), options).await {
                Ok(r) => runners.push((ip, r)),
                Err(_) => continue 'attempt, // the port is taken on that address: try another
            }
        }
        return (port, runners);
    }
    panic!("no free port shared by the loopback addresses");
}

async fn placements(addr: SocketAddr, functions: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..functions {
        let reply = send(addr, "POST", &format!("/t/app/fn-{i}"), &[], b"").await;
        assert_eq!(reply.status, StatusCode::OK);
        out.push(reply.header("fn-runner").to_string());
    }
    out
}

async fn addresses(admin: SocketAddr) -> Vec<String> {
    let runners = send(admin, "GET", "/admin/runners", &[], b"").await.json();
    runners
        .as_array()
        .map(|a| a.iter().filter_map(|r| Some(r["address"].as_str()?.to_string())).collect())
        .unwrap_or_default()
}

async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let text = String::from_utf8_lossy(&send(admin, "GET", "/metrics", &[], b"").await.body).into_owned();
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_added_and_removed_change_placement_within_an_interval() {
    const INTERVAL: Duration = Duration::from_millis(200);
    let (port, runners) = runners_on_one_port(4).await;
    let ips: Vec<Ipv4Addr> = runners.iter().map(|(ip, _)| *ip).collect();
    // Out of order on purpose: placerd sorts.
    let dns = DnsServer::start(vec![ips[2], ips[0], ips[1]]).await;
    let p = start(Vec::new(), "consistent-hash", |c| {
        c.discovery =
            RunnerSource::Dns { name: "runners.test".into(), port, interval: INTERVAL, server: Some(dns.addr) };
        c.placer_config.insert("consistent-hash".into(), vec![("hash".into(), "rendezvous".into())]);
        // Fewer status polls: a poll timing out on a loaded machine would mark a runner
        // unhealthy and move its calls, which this test would read as a membership effect.
        c.status_interval = Duration::from_secs(5);
    })
    .await;
    let sorted: Vec<String> = ips[..3].iter().map(|ip| format!("{ip}:{port}")).collect();
    assert_eq!(addresses(p.admin).await, sorted, "resolved before serving, sorted");
    let generation = metric(p.admin, "placerd_runner_set_generation").await;
    let before = placements(p.addr, 300).await;
    let name = |ip: &Ipv4Addr| format!("10.{}", ip.octets()[3]);
    for ip in &ips[..3] {
        assert!(before.contains(&name(ip)));
    }

    // A fourth record: within an interval or so, some functions move, all onto it.
    dns.set(&ips);
    let added = Instant::now();
    assert!(eventually(Duration::from_secs(5), async || addresses(p.admin).await.len() == 4).await);
    let took = added.elapsed();
    eprintln!("record added: placerd saw it after {took:?} (interval {INTERVAL:?})");
    assert!(took < INTERVAL * 5, "{took:?}");
    assert_eq!(metric(p.admin, "placerd_runner_set_generation").await, generation + 1.0);
    let after = placements(p.addr, 300).await;
    let moved: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
    assert!(!moved.is_empty());
    assert!(moved.iter().all(|&i| after[i] == name(&ips[3])), "functions moved between runners that stayed");

    // Remove the record of the second runner: only its functions move.
    dns.set(&[ips[0], ips[2], ips[3]]);
    assert!(eventually(Duration::from_secs(5), async || addresses(p.admin).await.len() == 3).await);
    let last = placements(p.addr, 300).await;
    for i in 0..after.len() {
        if after[i] != name(&ips[1]) {
            assert_eq!(last[i], after[i], "fn-{i} moved off a runner that stayed");
        } else {
            assert_ne!(last[i], name(&ips[1]));
        }
    }

    // The resolver fails: the last good set stays and the failures are counted.
    let errors = metric(p.admin, "lb_placer_rp_error_count_total").await;
    dns.failing.store(true, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), async || metric(p.admin, "lb_placer_rp_error_count_total").await > errors)
            .await
    );
    assert_eq!(addresses(p.admin).await.len(), 3);
    assert_eq!(placements(p.addr, 30).await, last[..30]);
    dns.failing.store(false, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_file_that_turns_invalid_keeps_the_last_good_set() {
    let (r1, r2) = (runner(8, "one").await, runner(8, "two").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("runners");
    std::fs::write(&file, format!("{} zone=a\n", r1.addr)).expect("write");
    let p = start(Vec::new(), "naive", |c| c.discovery = RunnerSource::File(file.clone())).await;
    assert_eq!(addresses(p.admin).await, vec![r1.addr.to_string()]);

    // Written in place, in two steps: the half-written version is invalid and skipped.
    std::fs::write(&file, format!("{} zone=a\n{} zone", r1.addr, r2.addr)).expect("write");
    let errors = metric(p.admin, "lb_placer_rp_error_count_total").await;
    assert!(
        eventually(Duration::from_secs(5), async || metric(p.admin, "lb_placer_rp_error_count_total").await > errors)
            .await
    );
    assert_eq!(addresses(p.admin).await, vec![r1.addr.to_string()], "the bad version was applied");
    assert_eq!(send(p.addr, "POST", "/t/app/f", &[], b"").await.status, StatusCode::OK);
    std::fs::write(&file, format!("{} zone=a\n{} zone=b\n", r1.addr, r2.addr)).expect("write");
    assert!(eventually(Duration::from_secs(5), async || addresses(p.admin).await.len() == 2).await);
    let served: HashMap<String, usize> = {
        let mut m = HashMap::new();
        for _ in 0..10 {
            *m.entry(send(p.addr, "POST", "/t/app/f", &[], b"").await.header("fn-runner").to_string()).or_default() +=
                1;
        }
        m
    };
    assert_eq!(served.len(), 2, "{served:?}");

    // Deleted: also kept (a ConfigMap swap or an editor can leave it missing for a moment).
    std::fs::remove_file(&file).expect("rm");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(addresses(p.admin).await.len(), 2);
}

#[tokio::test]
async fn a_missing_or_invalid_runner_file_stops_start_up_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("runners");
    std::fs::write(&bad, "127.0.0.1:1\nnot-an-address\n").expect("write");
    for (path, expect) in [(bad.clone(), "line 2"), (dir.path().join("missing"), "missing")] {
        let config = placerd::config::Config {
            discovery: RunnerSource::File(path),
            placers_dir: dir.path().join("placers"),
            ..placerd::config::Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let e = placerd::serve_with_admin(listener, None, config, std::future::pending()).await.expect_err("must fail");
        let e = format!("{e:#}");
        assert!(e.contains("runners.file") && e.contains(expect), "{e}");
    }
}

#[test]
fn the_kubernetes_config_map_holds_a_valid_config_for_dns_discovery() {
    // deploy/kubernetes/config.yaml embeds placerd.toml as a YAML block scalar.
    let yaml = include_str!("../deploy/kubernetes/config.yaml");
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "placerd.toml: |").skip(1);
    let mut toml = String::new();
    for line in lines.by_ref().take_while(|l| l.is_empty() || l.starts_with("    ")) {
        toml.push_str(line.strip_prefix("    ").unwrap_or(line));
        toml.push('\n');
    }
    let config = placerd::config::Config::from_toml(&toml).expect("deploy/kubernetes/config.yaml placerd.toml");
    assert!(matches!(config.discovery, RunnerSource::Dns { port: 8080, .. }), "{:?}", config.discovery);
    assert_eq!(config.placer_config["consistent-hash"][0], ("hash".to_string(), "rendezvous".to_string()));
}
