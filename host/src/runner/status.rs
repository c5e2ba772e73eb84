//! Polls each runner's `GET /v1/status` every `status_interval`: `active_request_count`
//! feeds `runner-load.reported-active`; a failed poll marks the runner unhealthy until the
//! next good one.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::pool::{DynamicPool, RunnerState};
use crate::tls::ClientTls;

/// The part of Fn's `RunnerStatus` placerd reads.
#[derive(Debug, Deserialize)]
struct Status {
    active_request_count: u32,
}

/// Largest status document accepted.
const MAX_STATUS_BYTES: usize = 64 * 1024;

/// Polls every runner of `pool` each `interval` until the task is aborted, over TLS while
/// `tls` holds a configuration (`[runners.tls]`, as the calls).
pub async fn poll_status(pool: Arc<DynamicPool>, interval: Duration, tls: Arc<ArcSwapOption<ClientTls>>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut polls = tokio::task::JoinSet::new();
        let tls = tls.load_full();
        for state in pool.membership().handles.iter() {
            let (state, tls) = (state.clone(), tls.clone());
            polls.spawn(async move {
                let fetched = fetch(&state.address, tls.as_deref());
                let result = tokio::time::timeout(interval.min(Duration::from_secs(2)), fetched).await;
                match result {
                    Ok(Ok(active)) => state.set_status(true, active),
                    Ok(Err(e)) => fail(&state, &e),
                    Err(_) => fail(&state, "timed out"),
                }
            });
        }
        polls.join_all().await;
    }
}

fn fail(state: &RunnerState, why: &str) {
    tracing::debug!(runner = %state.address, reason = why, "runner status poll failed");
    state.set_status(false, 0);
}

async fn fetch(address: &str, tls: Option<&ClientTls>) -> Result<u32, String> {
    let stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let io = match tls {
        None => Either::Left(stream),
        Some(tls) => Either::Right(tls.connect_stream(stream, address).await.map_err(|e| format!("TLS: {e}"))?),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get("/v1/status")
        .header(hyper::header::HOST, address)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body =
        Limited::new(response.into_body(), MAX_STATUS_BYTES).collect().await.map_err(|e| e.to_string())?.to_bytes();
    let status: Status = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(status.active_request_count)
}
