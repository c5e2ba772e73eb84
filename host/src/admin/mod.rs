//! The admin API on `admin_listen`:
//!
//! - `GET /admin/placers`: name, source, sha256, loaded_at, last_error, calls, faults,
//!   quarantined, place_ns_avg and contract of each placer;
//! - `PUT /admin/placers/{name}`: body = component; validated like a file; 422 with what
//!   failed in plain words (`message`) and the engine's detail (`detail`) when invalid,
//!   leaving nothing behind; saved in `state_dir` when it is set;
//! - `DELETE /admin/placers/{name}`: back to the built-in of that name, or gone;
//! - `GET` / `PUT /admin/routes`: the routes as JSON (`PUT` replaces the file's
//!   `[[routes]]` until `DELETE /admin/routes`; saved in `state_dir`);
//! - `GET /admin/shadow`: per route, what its shadow would have done beside the live
//!   placer (agreement, overlap, calls per runner, affinity), its canary, and the canaries
//!   rolled back;
//! - `POST /admin/promote` (`{"route": I, "from": "shadow"|"canary"}`): makes route I's
//!   shadow or canary its placer (saved in `state_dir`);
//! - `GET /admin/config`: the configuration in force, and where the routes come from;
//! - `POST /admin/reload`: read the config again and apply it (as `SIGHUP` does): 200 with
//!   what changed and what needs a restart, or 422 with every problem (nothing changed);
//! - `GET /admin/runners`: each runner's address, live load, calls and ejection;
//! - `GET /admin/history`: calls per runner in each interval of the last ten minutes;
//! - `GET /`: the dashboard, one page that shows all of the above ([`dashboard`]);
//! - `GET /metrics` (Prometheus text), `GET /healthz` (alive), `GET /readyz` (placers
//!   loaded and at least one runner known).
//!
//! With `admin_token_file` set, every `/admin/*` request (reads too) needs
//! `Authorization: Bearer <token>`; `/metrics`, `/healthz`, `/readyz` and the dashboard
//! page `/` (it holds no data) stay open. Without a token (only allowed on a loopback
//! `admin_listen`) every request, `/` too, must carry a `Host`
//! that names a loopback address or `localhost`, so a web page that rebinds its own name
//! to 127.0.0.1 cannot drive the API from an operator's browser. Bodies are limited to the
//! largest component placerd compiles.

pub mod dashboard;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::config::Route;
use crate::placer::PlacerSource;
use crate::plan::Live;
use crate::proxy::{Proxy, ProxyBody, json, json_error};
use crate::reload::valid_name;

/// Largest admin request body: the largest component placerd compiles.
pub const MAX_ADMIN_BODY: usize = 32 << 20;

/// The admin API's shared state.
#[derive(Debug)]
pub struct Admin {
    /// The proxy whose registry, routes and pool this administers.
    pub proxy: Arc<Proxy>,
    /// The running configuration: the token, reloads, `state_dir`.
    pub live: Arc<Live>,
    /// Calls per runner for the dashboard's chart (`GET /admin/history`).
    pub history: Arc<dashboard::History>,
}

impl Admin {
    /// Handles one admin request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ProxyBody>, hyper::Error> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if self.live.token().is_none() && !loopback_host(&req) {
            return Ok(json_error(
                StatusCode::FORBIDDEN,
                "without admin_token_file the admin API answers only Host: localhost or a loopback address",
            ));
        }
        if path.starts_with("/admin/") && !self.authorized(&req) {
            return Ok(json_error(StatusCode::UNAUTHORIZED, "the admin API needs Authorization: Bearer <token>"));
        }
        let response = match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let mut r = json(StatusCode::OK, self.metrics());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
            (Method::GET, "/") => dashboard::page(),
            (Method::GET, "/admin/history") => self.history.response(),
            (Method::GET, "/healthz") => json(StatusCode::OK, "{\"status\":\"alive\"}".into()),
            (Method::GET, "/readyz") => self.readiness(),
            (Method::GET, "/admin/placers") => json(StatusCode::OK, to_json(&self.proxy.placers.infos())),
            (Method::GET, "/admin/routes") => self.routes(),
            (Method::GET, "/admin/config") => self.config(),
            (Method::GET, "/admin/shadow") => self.shadow(),
            (Method::POST, "/admin/promote") => match body(req).await {
                Ok(bytes) => self.promote(&bytes),
                Err(r) => r,
            },
            (Method::PUT, "/admin/routes") => match body(req).await {
                Ok(bytes) => self.put_routes(&bytes),
                Err(r) => r,
            },
            (Method::DELETE, "/admin/routes") => self.delete_routes(),
            (Method::POST, "/admin/reload") => match self.live.reload().await {
                Ok(report) => json(
                    StatusCode::OK,
                    serde_json::json!({ "result": "ok", "changed": report.changed,
                        "restart_needed": report.restart_needed, "warnings": report.warnings })
                    .to_string(),
                ),
                Err(problems) => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({ "result": "error", "message": "the config was not applied; the running config stays",
                        "problems": problems })
                    .to_string(),
                ),
            },
            (Method::GET, "/admin/runners") => json(StatusCode::OK, self.runners()),
            (method, p) if p.starts_with("/admin/placers/") => {
                let name = &p["/admin/placers/".len()..];
                if !valid_name(name) {
                    return Ok(json_error(StatusCode::BAD_REQUEST, "placer names are [A-Za-z0-9._-], 1-64 characters"));
                }
                match method {
                    Method::PUT => match body(req).await {
                        Ok(bytes) => self.put_placer(name, bytes).await,
                        Err(r) => r,
                    },
                    Method::DELETE if !self.routes_to(name).is_empty() => json_error(
                        StatusCode::CONFLICT,
                        &format!(
                            "placer `{name}` serves {}: point them elsewhere (PUT /admin/routes, default_placer) first",
                            self.routes_to(name).join(", ")
                        ),
                    ),
                    Method::DELETE if self.proxy.placers.remove(name) => {
                        if let Some(state) = &self.live.state
                            && let Err(e) = state.remove_placer(name)
                        {
                            return Ok(json_error(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &format!("placer `{name}` removed, but its saved copy in state_dir was not: {e}"),
                            ));
                        }
                        json(StatusCode::OK, serde_json::json!({ "removed": name }).to_string())
                    }
                    Method::DELETE => json_error(StatusCode::NOT_FOUND, "no user placer of that name (built-ins stay)"),
                    _ => json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
                }
            }
            _ => json_error(StatusCode::NOT_FOUND, "no such admin route"),
        };
        Ok(response)
    }

    /// Validates and publishes placer `name`, then saves it in `state_dir`.
    async fn put_placer(&self, name: &str, bytes: Bytes) -> Response<ProxyBody> {
        let version = match self.proxy.placers.install_async(name, PlacerSource::Admin, bytes.to_vec()).await {
            Ok(version) => version,
            Err(e) => {
                let body = serde_json::json!({ "message": e.plain(), "detail": e.report() });
                return json(StatusCode::UNPROCESSABLE_ENTITY, body.to_string());
            }
        };
        let saved = match &self.live.state {
            Some(state) => match state.save_placer(name, &bytes) {
                Ok(()) => true,
                Err(e) => {
                    return json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!(
                            "placer `{name}` is serving, but saving it in state_dir failed (it will not survive a restart): {e}"
                        ),
                    );
                }
            },
            None => false,
        };
        json(
            StatusCode::OK,
            serde_json::json!({ "name": name, "sha256": version.sha256(), "saved": saved }).to_string(),
        )
    }

    /// Ready when the default placer is loaded and at least one runner is known.
    fn readiness(&self) -> Response<ProxyBody> {
        let default = self.proxy.routes.default_placer();
        let mut missing = Vec::new();
        if self.proxy.placers.get(&default).is_none() {
            missing.push(format!("default placer `{default}` not loaded"));
        }
        if self.proxy.pool.membership().set.is_empty() {
            missing.push("no runners known".to_string());
        }
        if missing.is_empty() {
            json(StatusCode::OK, "{\"status\":\"ready\"}".into())
        } else {
            json_error(StatusCode::SERVICE_UNAVAILABLE, &missing.join("; "))
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let token = self.live.token();
        let Some(token) = token.as_ref() else { return true };
        let given = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let expected = format!("Bearer {token}");
        // Compare without an early exit on the first differing byte.
        given.is_some_and(|g| {
            g.len() == expected.len() && g.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        })
    }

    /// The routes (`app=…,fn=…`) whose placer is `name`.
    fn routes_to(&self, name: &str) -> Vec<String> {
        let mut named = Vec::new();
        let table = self.proxy.routes.get();
        // The default placer is every other call's route, unless a built-in of its name
        // takes over when the user version goes.
        if table.default == name && crate::placer::builtin(name).is_none() {
            named.push("default_placer".to_string());
        }
        let uses =
            |r: &Route| r.placer == name || r.shadow.as_deref() == Some(name) || r.canary.as_deref() == Some(name);
        for (i, r) in table.routes.iter().enumerate().filter(|(_, r)| uses(r)) {
            let app = r.app.as_deref().map(|a| format!(" app={a}")).unwrap_or_default();
            let fn_id = r.fn_id.as_deref().map(|f| format!(" fn={f}")).unwrap_or_default();
            named.push(format!("[{i}]{app}{fn_id}"));
        }
        named
    }

    fn routes(&self) -> Response<ProxyBody> {
        json(StatusCode::OK, to_json(&self.proxy.routes.get().routes))
    }

    /// `GET /admin/config`: the configuration in force (as Envoy's `config_dump`): the
    /// values a reload can change, where the routes come from, and the placers' configs.
    fn config(&self) -> Response<ProxyBody> {
        let config = self.proxy.config();
        let table = self.proxy.routes.get();
        let placers: serde_json::Map<String, serde_json::Value> = self
            .proxy
            .placers
            .names()
            .into_iter()
            .filter_map(|name| {
                let version = self.proxy.placers.get(&name)?;
                let pairs: serde_json::Map<String, serde_json::Value> =
                    version.config().iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                Some((name, pairs.into()))
            })
            .collect();
        let runners = match &config.discovery {
            crate::config::RunnerSource::Static => serde_json::json!({ "static": config.runners }),
            crate::config::RunnerSource::File(path) => serde_json::json!({ "file": path }),
            crate::config::RunnerSource::Dns { name, port, .. } => {
                serde_json::json!({ "dns": format!("{name}:{port}") })
            }
        };
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        let body = serde_json::json!({
            "config_file": config.source.as_ref().and_then(|s| s.path.clone()),
            "listen": config.listen.to_string(),
            "admin_listen": config.admin_listen.to_string(),
            "default_placer": table.default,
            "routes": table.routes,
            "routes_source": if table.from_admin { "admin" } else { "file" },
            "file_routes": table.file,
            "placers": placers,
            "runners": runners,
            "placers_dir": config.placers_dir,
            "state_dir": config.state_dir,
            "max_body_bytes": config.max_body_bytes,
            "body_timeout_ms": ms(config.body_timeout),
            "max_connections": config.max_connections,
            "workers": config.workers,
            "max_buffered_bytes": config.max_buffered_bytes,
            "retry_all_delay_ms": ms(config.retry_all_delay),
            "placer_timeout_ms": ms(config.placer_timeout),
            "detached_placer_timeout_ms": ms(config.detached_placer_timeout),
            "connect_timeout_ms": ms(config.connect_timeout),
            "shutdown_grace_ms": ms(config.shutdown_grace),
            "placer_budget_ms": ms(config.sandbox.budget),
            "placer_memory_limit_bytes": config.sandbox.memory_limit_bytes,
            "placer_recycle_memory_percent": config.sandbox.recycle.memory_percent,
            "placer_recycle_calls": config.sandbox.recycle.calls,
            "placer_recycle_seconds": config.sandbox.recycle.age.map_or(0, |age| age.as_secs()),
        });
        json(StatusCode::OK, body.to_string())
    }

    fn put_routes(&self, bytes: &[u8]) -> Response<ProxyBody> {
        let routes: Vec<Route> = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return json_error(StatusCode::BAD_REQUEST, &format!("expected [{{\"app\",\"fn\",\"placer\"}}]: {e}"));
            }
        };
        for (i, r) in routes.iter().enumerate() {
            if let Err((key, reason)) = r.check() {
                let key = if key.is_empty() { String::new() } else { format!(".{key}") };
                return json_error(StatusCode::UNPROCESSABLE_ENTITY, &format!("routes[{i}]{key}: {reason}"));
            }
            for (key, name) in
                [("placer", Some(&r.placer)), ("shadow", r.shadow.as_ref()), ("canary", r.canary.as_ref())]
            {
                if let Some(name) = name.filter(|n| self.proxy.placers.get(n).is_none()) {
                    return json_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &format!("routes[{i}].{key}: no placer named `{name}`"),
                    );
                }
            }
        }
        if let Some(state) = &self.live.state
            && let Err(e) = state.save_routes(&routes)
        {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot save the routes in state_dir: {e}"));
        }
        self.proxy.routes.replace(routes);
        self.routes()
    }

    /// `GET /admin/shadow`.
    fn shadow(&self) -> Response<ProxyBody> {
        let (shadows, rollbacks) = self.proxy.rollout.reports();
        let canaries: Vec<serde_json::Value> = self
            .proxy
            .routes
            .get()
            .routes
            .iter()
            .filter_map(|r| {
                let canary = r.canary.as_ref()?;
                let served = self.proxy.placers.get(canary).map(|v| (v.served_calls(), v.served_faults()));
                Some(serde_json::json!({
                    "route": r.label(), "live": r.placer, "canary": canary, "canary_percent": r.canary_percent,
                    "canary_calls": served.map(|s| s.0), "canary_faults": served.map(|s| s.1),
                }))
            })
            .collect();
        let body = serde_json::json!({ "shadows": shadows, "canaries": canaries, "rollbacks": rollbacks });
        json(StatusCode::OK, body.to_string())
    }

    /// `POST /admin/promote`: a route's shadow or canary becomes its placer.
    fn promote(&self, bytes: &[u8]) -> Response<ProxyBody> {
        #[derive(serde::Deserialize)]
        struct Promote {
            route: usize,
            from: String,
        }
        let request: Promote = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"route\": I, \"from\": \"shadow\"|\"canary\"}}: {e}"),
                );
            }
        };
        let routes = match self.proxy.routes.promote(request.route, &request.from) {
            Ok(routes) => routes,
            Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        };
        if let Some(state) = &self.live.state
            && let Err(e) = state.save_routes(&routes)
        {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("promoted, but not saved in state_dir: {e}"),
            );
        }
        tracing::info!(route = request.route, from = %request.from, "promoted to the route's placer");
        self.routes()
    }

    /// Back to the config file's routes.
    fn delete_routes(&self) -> Response<ProxyBody> {
        if let Some(state) = &self.live.state
            && let Err(e) = state.clear_routes()
        {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot remove the saved routes: {e}"));
        }
        self.proxy.routes.reset_to_file();
        self.routes()
    }

    fn metrics(&self) -> String {
        self.proxy.metrics.register_rollouts(&self.proxy.routes.get().routes);
        self.proxy.metrics.render(&self.proxy.placers.infos(), &self.proxy.pool.membership())
    }

    fn runners(&self) -> String {
        let membership = self.proxy.pool.membership();
        let set = &membership.set;
        let runners: Vec<serde_json::Value> = set
            .runners
            .iter()
            .zip(&membership.handles)
            .map(|(r, handle)| {
                let l = handle.load();
                let labels: serde_json::Map<String, serde_json::Value> =
                    r.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                serde_json::json!({
                    "address": r.address, "labels": labels, "generation": set.generation,
                    "in_flight": l.in_flight, "reported_active": l.reported_active,
                    "recent_refusals": l.recent_refusals, "healthy": l.healthy,
                    "ejected": handle.ejected(), "calls": handle.calls(), "latency_us": l.latency_us,
                })
            })
            .collect();
        serde_json::Value::Array(runners).to_string()
    }
}

/// True when the request's `Host` names `localhost` or a loopback address (any port).
fn loopback_host<B>(req: &Request<B>) -> bool {
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false; // none, or two that may disagree
    };
    let Ok(host) = host.to_str() else { return false };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"message\":\"{e}\"}}"))
}

/// The whole admin request body must arrive within this (a 32 MiB component at ~1 MB/s).
const ADMIN_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn body(req: Request<Incoming>) -> Result<Bytes, Response<ProxyBody>> {
    let read = tokio::time::timeout(ADMIN_BODY_TIMEOUT, Limited::new(req.into_body(), MAX_ADMIN_BODY).collect());
    let Ok(read) = read.await else {
        let message = format!("the body did not arrive within {} s", ADMIN_BODY_TIMEOUT.as_secs());
        return Err(json_error(StatusCode::REQUEST_TIMEOUT, &message));
    };
    match read {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("admin bodies are limited to {MAX_ADMIN_BODY} bytes"),
        )),
        Err(e) => Err(json_error(StatusCode::BAD_REQUEST, &format!("could not read the body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: Option<&str>) -> Request<()> {
        let mut r = Request::builder().uri("/admin/placers");
        if let Some(h) = host {
            r = r.header("host", h);
        }
        r.body(()).expect("request")
    }

    #[test]
    fn only_loopback_hosts_pass_without_a_token() {
        for host in
            ["localhost", "LOCALHOST:9090", "localhost.:1", "127.0.0.1:9090", "127.3.4.5", "[::1]:9090", "[::1]"]
        {
            assert!(loopback_host(&with_host(Some(host))), "{host}");
        }
        for host in ["evil.example", "evil.example:9090", "10.0.0.1:9090", "localhost.evil.example", "[::2]:1", ""] {
            assert!(!loopback_host(&with_host(Some(host))), "{host}");
        }
        assert!(!loopback_host(&with_host(None)));
        let two = Request::builder().header("host", "localhost").header("host", "evil.example").body(());
        assert!(!loopback_host(&two.expect("request")), "two Host headers");
    }
}
