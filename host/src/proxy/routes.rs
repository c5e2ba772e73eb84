//! The live route table: `[[routes]]` at start, replaced whole by `PUT /admin/routes`.
//! The one place that answers "which placer serves this call".

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Route, placer_for};

/// Routes (first match wins) and the default placer.
#[derive(Debug)]
pub struct RouteTable {
    routes: ArcSwap<Vec<Route>>,
    /// `default_placer`: when no route matches.
    default: String,
}

impl RouteTable {
    /// A table of `routes` falling back to `default`.
    pub fn new(routes: Vec<Route>, default: String) -> Self {
        RouteTable { routes: ArcSwap::from_pointee(routes), default }
    }

    /// The routes now.
    pub fn routes(&self) -> Arc<Vec<Route>> {
        self.routes.load_full()
    }

    /// Replaces every route at once.
    pub fn replace(&self, routes: Vec<Route>) {
        self.routes.store(Arc::new(routes));
    }

    /// The default placer's name.
    pub fn default_placer(&self) -> &str {
        &self.default
    }

    /// Runs `f` with the name of the placer for a call of `app_id` / `fn_id`.
    pub fn with_placer<R>(&self, app_id: &str, fn_id: &str, f: impl FnOnce(&str) -> R) -> R {
        let routes = self.routes.load();
        f(placer_for(&routes, &self.default, app_id, fn_id))
    }
}
