//! `lean-proxy LISTEN BACKEND...`: forwards every request to the backend picked by an
//! FNV-1a hash of its path, over per-backend keep-alive connections, on one current-thread
//! runtime. No placement, ids, headers, metrics or limits: the floor placerd's data path
//! is compared against in `bench/proxy.sh` (`LEAN=1`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Idle = Rc<Vec<RefCell<Vec<client::SendRequest<Full<Bytes>>>>>>;

async fn forward(req: Request<Incoming>, backends: Rc<Vec<SocketAddr>>, idle: Idle) -> std::io::Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    let hash = parts.uri.path().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let i = (hash % backends.len() as u64) as usize;
    let pooled = std::iter::from_fn(|| idle[i].borrow_mut().pop()).find(|s| s.is_ready());
    let mut sender = match pooled {
        Some(sender) => sender,
        None => {
            let stream = TcpStream::connect(backends[i]).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = client::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
            tokio::task::spawn_local(connection);
            sender
        }
    };
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder().method(parts.method).uri(uri).body(Full::new(body)).map_err(std::io::Error::other)?;
    *out.headers_mut() = parts.headers;
    let response = sender.send_request(out).await.map_err(std::io::Error::other)?;
    idle[i].borrow_mut().push(sender);
    let (head, body) = response.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    Ok(Response::from_parts(head, Full::new(body)))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("usage: lean-proxy LISTEN BACKEND...");
    let backends: Vec<SocketAddr> = args.map(|a| a.parse().expect("backend address")).collect();
    assert!(!backends.is_empty(), "usage: lean-proxy LISTEN BACKEND...");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let backends = Rc::new(backends);
        let idle: Idle = Rc::new(backends.iter().map(|_| RefCell::new(Vec::new())).collect());
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (backends, idle) = (backends.clone(), idle.clone());
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |req| forward(req, backends.clone(), idle.clone()));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
