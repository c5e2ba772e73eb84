//! The client-facing HTTP server: one request becomes a call, is placed and forwarded, and
//! becomes a response. Three steps, one file each:
//!
//! 1. `request`: route, limits and headers checked, the body buffered up to
//!    `max_body_bytes` within `body_timeout_ms` and counted against `max_buffered_bytes`
//!    (`budget`), and the [`Call`] and [`Forward`](crate::runner::Forward) built;
//! 2. here: the route's placer orders the runners and the placement loop
//!    ([`lifecycle::place`]) sends the call to them; a small response body is read whole;
//! 3. `response`: the runner's response (or the error) shaped for the client, then the
//!    access log and the trace line.
//!
//! The client's connection is served by `conn`, placerd's own HTTP/1.1 server. If the client
//! goes away, it drops the call's future: placement stops and no further runner is tried
//! (counted in `lb_placer_client_cancelled_count_total`, logged as 499).

mod budget;
mod conn;
mod request;
mod response;
mod rollout;
mod routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper::{Method, Response, StatusCode};
use tracing::Instrument;

pub use conn::serve_connection;
pub use request::{ClientError, MAX_HEADER_BYTES};
pub use response::{BodyError, ProxyBody, json, json_error};
pub use rollout::{
    LiveAndShadow, LiveAndShadowRatio, OVERLAP_K, ROLLBACK_FAULT_PERCENT, ROLLBACK_MIN_FAULTS, Rollback, Rollout,
    SHADOW_QUEUE, ShadowReport,
};
pub use routes::{RouteTable, Routes};

use self::budget::{BodyBudget, Held};
use self::conn::RequestBody;
use self::request::{CallIds, Deadlines, Parsed};
use self::response::{Access, Trace};
use self::rollout::Recording;
use crate::config::Config;
use crate::http1::RequestHead;
use crate::lifecycle::{self, Outcome};
use crate::metrics::Metrics;
use crate::placer::{Call, NativePlacer, Order, PlacerSource, PlacerVersion};
use crate::reload::Registry;
use crate::runner::{Attempt, DynamicPool, Forward, NotPlaced, RunnerClient, RunnerState, RunnerTimeouts, TryExec};
use crate::throttle::Throttle;

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    /// Validated config, swapped whole by a reload (limits and deadlines are read from it
    /// per call).
    config: ArcSwap<Config>,
    /// The runners.
    pub pool: Arc<DynamicPool>,
    /// Sends calls to the runners of `pool`.
    client: RunnerClient,
    /// The placers.
    pub placers: Arc<Registry>,
    /// The live `[[routes]]`, replaced whole by `PUT /admin/routes`.
    pub routes: RouteTable,
    /// Metrics, recorded per call.
    pub metrics: Arc<Metrics>,
    /// `--record-trace`: where each call's JSON line goes.
    trace: Option<Trace>,
    /// `--native-placement`: the built-ins' native twins by placer name.
    native: HashMap<String, NativePlacer>,
    /// Host sequence number of the next call.
    seq: AtomicU64,
    /// Request body bytes held across calls (`max_buffered_bytes`).
    budget: BodyBudget,
    /// Rate limit of "route names a placer that is gone" (its file was deleted).
    missing_placer_log: Throttle,
    /// The routes' shadows and canaries.
    pub rollout: Rollout,
}

/// The placers of one call: the one that serves it, and a shadow to run beside it.
struct Chosen {
    /// The live placer, or the canary.
    placer: Arc<PlacerVersion>,
    /// True when `placer` is the route's canary.
    canary: bool,
    /// The route's own `runner_read_timeout_ms`, if it sets one.
    read_timeout: Option<Duration>,
    /// The route's shadow, when this call is in its share, with the route's label.
    shadow: Option<(Arc<PlacerVersion>, String)>,
}

impl Proxy {
    /// A proxy over `pool` with the placers of `placers`, routing by `routes`.
    ///
    /// # Errors
    /// The trace file (`record_trace`) cannot be created, or a built-in's config is
    /// rejected by its native twin (`native_placement`).
    pub fn new(
        config: Arc<Config>,
        pool: Arc<DynamicPool>,
        placers: Arc<Registry>,
        routes: RouteTable,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let trace = config.record_trace.as_deref().map(Trace::create).transpose()?;
        let mut native = HashMap::new();
        if config.native_placement {
            for info in placers.infos() {
                let placer_config = config.placer_config.get(&info.name).map_or(&[][..], Vec::as_slice);
                match NativePlacer::builtin(&info.name, placer_config) {
                    Ok(Some(placer)) => {
                        native.insert(info.name.clone(), placer);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(std::io::Error::other(format!("placer `{}`: {e}", info.name))),
                }
            }
            tracing::warn!(placers = ?native.keys().collect::<Vec<_>>(), "--native-placement: built-in placers run natively, outside the sandbox");
        }
        let client = RunnerClient::new(pool.clone(), config.connect_timeout);
        let budget = BodyBudget::new(config.max_buffered_bytes);
        let missing_placer_log = Throttle::new(1, Duration::from_secs(10));
        let rollout = Rollout::new(metrics.clone())?;
        Ok(Proxy {
            config: ArcSwap::new(config),
            pool,
            client,
            placers,
            routes,
            metrics,
            trace,
            native,
            seq: AtomicU64::new(0),
            budget,
            missing_placer_log,
            rollout,
        })
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// How long a client connection may idle between requests, and take over a request
    /// head (`client_idle_timeout_ms`, `client_header_timeout_ms`), as now configured.
    /// New runner connections (and status polls) speak TLS with `tls` (plain with `None`).
    pub fn set_runner_tls(&self, tls: Option<Arc<crate::tls::ClientTls>>) {
        self.client.set_tls(tls);
    }

    /// The TLS of new runner connections, as the status poller reads it.
    pub fn runner_tls(&self) -> Arc<arc_swap::ArcSwapOption<crate::tls::ClientTls>> {
        self.client.tls()
    }

    pub(crate) fn client_timeouts(&self) -> (Duration, Duration) {
        let config = self.config.load();
        (config.client_idle_timeout, config.client_header_timeout)
    }

    /// A reloaded config: calls that start from now on use its limits and deadlines
    /// (`max_body_bytes`, `body_timeout_ms`, `max_buffered_bytes`, `connect_timeout_ms`,
    /// `retry_all_delay_ms`, the placer timeouts); calls in flight keep theirs.
    pub fn set_config(&self, config: Arc<Config>) {
        self.client.set_connect_timeout(config.connect_timeout);
        self.budget.set_limit(config.max_buffered_bytes);
        self.config.store(config);
    }

    /// Answers one client request: every failure is an HTTP response.
    pub(crate) async fn serve(&self, head: RequestHead, body: RequestBody<'_>) -> Response<ProxyBody> {
        let mut guard = CancelGuard {
            metrics: &self.metrics,
            method: head.method.clone(),
            started: Instant::now(),
            call_id: None,
            done: false,
        };
        let response = self.call(head, body, &mut guard).await;
        guard.done = true;
        self.metrics.record_status(response.status().as_u16());
        response
    }

    async fn call(
        &self,
        mut head: RequestHead,
        mut body: RequestBody<'_>,
        guard: &mut CancelGuard<'_>,
    ) -> Response<ProxyBody> {
        // 1. The request becomes a call. Its body stays counted until the call ends.
        let mut held = self.budget.hold();
        let mut parsed = match self.parse(&mut head, &mut body, &mut held).await {
            Ok(parsed) => parsed,
            Err(e) => return response::client_error(&e),
        };
        guard.call_id = Some(parsed.id_value.clone());
        // 2. Placed and forwarded.
        let Some(Chosen { placer, canary, read_timeout, shadow }) = self.placers_for(&parsed.call) else {
            let message = format!("no placer named `{}`", self.routes.default_placer());
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, &message);
        };
        if let Some(read) = read_timeout {
            parsed.forward.timeouts.read = read;
        }
        let span = tracing::info_span!(
            "call",
            call_id = %parsed.call.id,
            app = %parsed.call.app_id,
            r#fn = %parsed.call.fn_id,
            placer = %placer.name(),
            sha256 = &placer.sha256()[..12],
            attempts = tracing::field::Empty,
            runner = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let outcome = match shadow {
            None => self.place(&parsed, &placer, None).instrument(span.clone()).await,
            Some((shadow, route)) => {
                let recording = Recording::new(&*placer);
                let outcome = self.place(&parsed, &placer, Some(&recording)).instrument(span.clone()).await;
                self.rollout.submit(route, placer.name(), shadow, &parsed.call, recording);
                outcome
            }
        };
        if canary {
            self.metrics.record_canary_call(placer.name());
            self.rollout.after_canary(&placer, &self.routes);
        }
        self.metrics.record_outcome(&outcome);
        span.record("attempts", outcome.attempts);
        span.record("runner", outcome.runner.as_deref().unwrap_or("-"));
        match &outcome.result {
            Ok(_) => span.record("outcome", "placed"),
            Err(e) => span.record("outcome", tracing::field::display(e)),
        };
        // 3. Logged, and shaped into the client's response.
        let status = match &outcome.result {
            Ok(response) => response.status(),
            Err(e) => e.status(),
        };
        let call = &parsed.call;
        if let Some(trace) = &self.trace {
            trace.write(call, placer.name(), &outcome, status.as_u16());
        }
        let access = Access {
            method: head.method.as_str(),
            path: head.uri.path(),
            placer: placer.name(),
            status: status.as_u16(),
            total: guard.started.elapsed(),
        };
        span.in_scope(|| response::log_access(call, &access, &outcome));
        response::shape(outcome.result, call, &parsed.id_value, placer.label())
    }

    /// Step 1: checks the head, reads the body and builds the call.
    async fn parse(
        &self,
        head: &mut RequestHead,
        body: &mut RequestBody<'_>,
        held: &mut Held<'_>,
    ) -> Result<Parsed, ClientError> {
        // The limits in force when the call starts, read once: no config guard is held
        // while the body arrives.
        let (limit, timeout, deadlines, runner_timeouts) = {
            let config = self.config.load();
            let deadlines = Deadlines {
                retry_all_delay: config.retry_all_delay,
                sync: config.placer_timeout,
                detached: config.detached_placer_timeout,
            };
            let runner = RunnerTimeouts { read: config.runner_read_timeout, write: config.runner_write_timeout };
            (config.max_body_bytes, config.body_timeout, deadlines, runner)
        };
        let target = request::check_head(head, limit)?;
        let body = tokio::time::timeout(timeout, request::read_body(body, limit, held))
            .await
            .map_err(|_| ClientError::BodyTimeout(timeout))??;
        let now = SystemTime::now();
        let ids = CallIds {
            id: request::ulid(now, fastrand::u128(..)),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            random: fastrand::u64(..),
            now,
        };
        Ok(request::into_call(head, target, body, ids, deadlines, runner_timeouts))
    }

    /// The running version of the call's route placer (or its canary, for the canary's
    /// share), and its shadow for the shadow's share; the default placer when the route
    /// names one that is not loaded.
    fn placers_for(&self, call: &Call) -> Option<Chosen> {
        self.routes.with_route(&call.app_id, &call.fn_id, |route, default| {
            let canary = route
                .filter(|r| r.canary_percent > 0 && rollout::selected(call.random, r.canary_percent))
                .and_then(|r| self.placers.get(r.canary.as_deref()?));
            let shadow = route
                .filter(|r| r.shadow.is_some() && rollout::selected(call.random.rotate_left(32), r.shadow_percent))
                .and_then(|r| Some((self.placers.get(r.shadow.as_deref()?)?, r.label())));
            let read_timeout = route.and_then(|r| r.runner_read_timeout_ms).map(Duration::from_millis);
            if let Some(placer) = canary {
                return Some(Chosen { placer, canary: true, read_timeout, shadow });
            }
            let name = route.map_or(default, |r| &r.placer);
            let placer = self.placers.get(name).or_else(|| {
                if let Some(dropped) = self.missing_placer_log.admit() {
                    tracing::warn!(placer = %name, dropped, "route names a placer that is gone; using the default");
                }
                self.placers.get(default)
            })?;
            Some(Chosen { placer, canary: false, read_timeout, shadow })
        })
    }

    /// Step 2: the placement loop with `placer` (or its native twin under
    /// `--native-placement`), then the runner's body read whole when it is small.
    async fn place(
        &self,
        parsed: &Parsed,
        placer: &PlacerVersion,
        recording: Option<&Recording<'_>>,
    ) -> Outcome<Response<ProxyBody>> {
        let native = if self.native.is_empty() {
            None // the normal path: no lookup
        } else {
            self.native.get(placer.name()).filter(|_| matches!(placer.source(), PlacerSource::Builtin))
        };
        let order: &dyn Order = match (recording, native) {
            (Some(recording), _) => recording,
            (None, Some(native)) => native,
            (None, None) => placer,
        };
        let client = Counted { client: &self.client, metrics: &self.metrics };
        lifecycle::place(&*self.pool, &client, order, &parsed.call, &parsed.forward, parsed.timing).await
    }
}

/// The runner client, with the response body boxed for the client and attempts that
/// failed before sending counted at once.
struct Counted<'a> {
    client: &'a RunnerClient,
    metrics: &'a Metrics,
}

impl TryExec<Forward, Arc<RunnerState>> for Counted<'_> {
    type Output = Response<ProxyBody>;

    async fn try_exec(&self, runner: &Arc<RunnerState>, call: &Forward) -> Attempt<Self::Output> {
        match self.client.try_exec(runner, call).await {
            Attempt::Committed(Ok(response)) => Attempt::Committed(Ok(response::boxed(response))),
            Attempt::Committed(Err(failed)) => Attempt::Committed(Err(failed)),
            Attempt::NotPlaced(not_placed) => {
                if !matches!(not_placed, NotPlaced::Busy | NotPlaced::Closed) {
                    self.metrics.record_retry_error();
                }
                Attempt::NotPlaced(not_placed)
            }
        }
    }
}

/// Logs and counts a 499 if the client goes away before the call is answered (the
/// connection then drops the call's future, which stops placement: no further runner is
/// tried).
struct CancelGuard<'a> {
    metrics: &'a Metrics,
    method: Method,
    started: Instant,
    call_id: Option<hyper::header::HeaderValue>,
    done: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.record_cancelled();
            tracing::info!(target: "placerd::access", call_id = self.call_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"), method = %self.method,
                status = 499u16, total_ms = self.started.elapsed().as_secs_f64() * 1e3, "call cancelled by the client");
        }
    }
}
