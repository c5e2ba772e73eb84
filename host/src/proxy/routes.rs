//! The live route table: the config file's `[[routes]]` and `default_placer`, or the
//! routes set through `PUT /admin/routes` (which win until `DELETE /admin/routes`). The one
//! place that answers "which placer serves this call"; swapped whole, read without locks.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Route, placer_for};

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
        let table = self.table.load();
        f(placer_for(&table.routes, &table.default, app_id, fn_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(app: &str, placer: &str) -> Route {
        Route { app: Some(app.into()), fn_id: None, placer: placer.into() }
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
