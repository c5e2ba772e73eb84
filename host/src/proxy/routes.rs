//! The live route table: the config file's `[[routes]]` and `default_placer`, or the
//! routes set through `PUT /admin/routes` (which win until `DELETE /admin/routes`). The one
//! place that answers "which placer serves this call"; swapped whole, read without locks.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Route, route_for};

/// The routes in force, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// First match wins.
    pub routes: Vec<Route>,
    /// `default_placer`: when no route matches.
    pub default: String,
    /// The config file's `[[routes]]` (in force unless `from_admin`).
    pub file: Vec<Route>,
    /// True while routes set through the admin API are in force.
    pub from_admin: bool,
}

/// Routes (first match wins) and the default placer.
#[derive(Debug)]
pub struct RouteTable {
    table: ArcSwap<Routes>,
}

impl RouteTable {
    /// A table of the file's `routes` falling back to `default`.
    pub fn new(routes: Vec<Route>, default: String) -> Self {
        let table = Routes { routes: routes.clone(), default, file: routes, from_admin: false };
        RouteTable { table: ArcSwap::from_pointee(table) }
    }

    /// The routes now.
    pub fn get(&self) -> Arc<Routes> {
        self.table.load_full()
    }

    /// The admin API's routes replace every route at once (the file's stay for
    /// [`RouteTable::reset_to_file`]).
    pub fn replace(&self, routes: Vec<Route>) {
        self.table.rcu(|t| Routes { routes: routes.clone(), from_admin: true, ..Routes::clone(t) });
    }

    /// Back to the config file's routes.
    pub fn reset_to_file(&self) {
        self.table.rcu(|t| Routes { routes: t.file.clone(), from_admin: false, ..Routes::clone(t) });
    }

    /// A reloaded config file: its routes (in force unless the admin API's are) and its
    /// default placer.
    pub fn set_file(&self, file: Vec<Route>, default: String) {
        self.table.rcu(|t| Routes {
            routes: if t.from_admin { t.routes.clone() } else { file.clone() },
            default: default.clone(),
            file: file.clone(),
            from_admin: t.from_admin,
        });
    }

    /// The default placer's name.
    pub fn default_placer(&self) -> String {
        self.table.load().default.clone()
    }

    /// Runs `f` with the name of the placer for a call of `app_id` / `fn_id`.
    pub fn with_placer<R>(&self, app_id: &str, fn_id: &str, f: impl FnOnce(&str) -> R) -> R {
        self.with_route(app_id, fn_id, |route, default| f(route.map_or(default, |r| &r.placer)))
    }

    /// Runs `f` with the route for a call of `app_id` / `fn_id` (none: the default placer
    /// serves it) and the default placer's name.
    pub fn with_route<R>(&self, app_id: &str, fn_id: &str, f: impl FnOnce(Option<&Route>, &str) -> R) -> R {
        let table = self.table.load();
        f(route_for(&table.routes, app_id, fn_id), &table.default)
    }

    /// Takes canary `name` off every route (a rollback); returns the routes it was on.
    pub fn drop_canary(&self, name: &str) -> Vec<String> {
        let mut dropped = Vec::new();
        self.table.rcu(|t| {
            dropped.clear();
            let mut next = Routes::clone(t);
            for route in next.routes.iter_mut().filter(|r| r.canary.as_deref() == Some(name)) {
                route.canary = None;
                route.canary_percent = 0;
                dropped.push(route.label());
            }
            next
        });
        dropped
    }

    /// Makes route `index`'s shadow (`from = "shadow"`) or canary (`"canary"`) its placer,
    /// as routes set through the admin API; returns the new routes.
    ///
    /// # Errors
    /// No route `index`, or it has no such placer.
    pub fn promote(&self, index: usize, from: &str) -> Result<Vec<Route>, String> {
        let table = self.table.load_full();
        let mut routes = table.routes.clone();
        let route =
            routes.get_mut(index).ok_or_else(|| format!("no route [{index}] ({} routes)", table.routes.len()))?;
        let promoted = match from {
            "shadow" => route.shadow.take(),
            "canary" => route.canary.take().inspect(|_| route.canary_percent = 0),
            other => return Err(format!("promote `shadow` or `canary`, not {other:?}")),
        };
        let Some(promoted) = promoted else { return Err(format!("route [{index}] ({}) has no {from}", route.label())) };
        if route.shadow.as_ref() == Some(&promoted) {
            route.shadow = None;
        }
        route.placer = promoted;
        self.replace(routes.clone());
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(app: &str, placer: &str) -> Route {
        Route { app: Some(app.into()), fn_id: None, placer: placer.into(), ..Route::default() }
    }

    #[test]
    fn admin_routes_win_over_file_reloads_until_reset() {
        let table = RouteTable::new(vec![route("a", "naive")], "consistent-hash".into());
        table.replace(vec![route("b", "least-loaded")]);
        table.set_file(vec![route("c", "naive")], "naive".into());
        assert_eq!(table.get().routes, [route("b", "least-loaded")], "a reload keeps the admin API's routes");
        assert_eq!(table.default_placer(), "naive", "the default placer is the file's");
        table.reset_to_file();
        assert_eq!(table.get().routes, [route("c", "naive")], "back to the reloaded file's routes");
        table.with_placer("c", "c/f", |p| assert_eq!(p, "naive"));
        table.with_placer("x", "x/f", |p| assert_eq!(p, "naive"));
    }
}
