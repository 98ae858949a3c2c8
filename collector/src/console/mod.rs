//! The staff console: HTML pages and a JSON API beside each, served by `serve` on
//! `--http-listen`. Who may call what is decided in one place ([`routes::ROUTES`], enforced by
//! [`auth::enforce`]); every read or change of monitored data is written to the audit trail.

pub mod agents;
pub mod alert_detail;
pub mod alerts;
pub mod audit_view;
pub mod auth;
pub mod checks;
pub mod error;
pub mod incidents;
pub mod input;
pub mod layout;
pub mod login;
pub mod privacy;
pub mod reports;
pub mod reveals;
pub mod routes;
pub mod sar;
pub mod sso;
pub mod users;

#[cfg(test)]
mod tests;

use crate::config::ConsoleConfig;
use crate::store::audit::Actor;
pub use crate::store::audit::Audit;
use crate::store::{Admin, Audited, Scan, Store};
use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::{get, post};
pub use error::ConsoleError;
use invigilator_policy::Policy;
use std::sync::Arc;

/// What every handler shares.
pub struct Console {
    pub config: ConsoleConfig,
    pub policy: Arc<ArcSwap<Policy>>,
    store: Store,
    /// Slots for the argon2 check (19 MiB and tens of milliseconds each), one per core but one.
    password_checks: Arc<tokio::sync::Semaphore>,
    /// Log-ins refused while waiting, counted to spare the trail (see `login`).
    refusals: std::sync::Mutex<crate::store::accounts::throttle::Refusals>,
    /// Single sign-on, when `console.sso` is set and its CA file could be read.
    sso: Option<Arc<sso::Provider>>,
}

/// The logged-in member of staff making a request (put there by [`auth::enforce`]).
#[derive(Debug, Clone)]
pub struct Staff {
    pub username: String,
    pub role: crate::store::accounts::Role,
    pub is_admin: bool,
    pub csrf_token: String,
    pub source: String,
    /// Notices every page shows this member of staff (DSL and leadership: approver changes).
    pub notices: Vec<crate::store::approvers::Notice>,
}

impl Staff {
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.username.clone(),
            role: self.role.as_str().into(),
            source: self.source.clone(),
        }
    }
}

impl Console {
    pub fn new(store: Store, config: ConsoleConfig, policy: Arc<ArcSwap<Policy>>) -> Arc<Self> {
        let sso = config.sso.clone().and_then(|cfg| {
            sso::Provider::new(cfg, store.data_dir())
                .inspect_err(|e| tracing::error!(error = %e, "single sign-on is off"))
                .ok()
                .map(Arc::new)
        });
        Arc::new(Self {
            sso,
            store,
            config,
            policy,
            // One core is always left to everything else: a flood of guesses, each costing
            // tens of milliseconds of argon2 by design, must not take the CPU that staff
            // requests and ingest need.
            password_checks: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| (n.get() - 1).clamp(1, 4)),
            )),
            refusals: Default::default(),
        })
    }

    /// Single sign-on's provider, when configured.
    pub fn sso_provider(&self) -> Option<Arc<sso::Provider>> {
        self.sso.clone()
    }

    #[cfg(test)]
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.store.data_dir()
    }

    /// When the live alert stream should look again.
    pub fn alert_wakeups(&self) -> crate::store::wakeups::AlertWakeups {
        self.store.alert_wakeups()
    }

    pub fn throttle_rules(&self) -> crate::store::accounts::throttle::Rules {
        crate::store::accounts::throttle::Rules {
            free_failures: self.config.max_failed_logins,
            longest_wait: self.config.lockout,
        }
    }

    /// Staff accounts, sessions, settings: no children's data (see `store::access`).
    pub async fn admin<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Admin<'_>) -> Result<R, ConsoleError> + Send + 'static,
    ) -> Result<R, ConsoleError> {
        let store = self.store.clone();
        blocking(move || store.admin(f)).await
    }

    /// A long read outside any write transaction, its result sealed (see `store::Scan`).
    pub async fn scan<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Scan<'_>) -> Result<R, ConsoleError> + Send + 'static,
    ) -> Result<R, ConsoleError> {
        let store = self.store.clone();
        blocking(move || store.scan(f)).await
    }

    /// Reads or changes monitored data, with its audit entry written in the same transaction:
    /// a read is only returned, and a change only kept, once its entry is written.
    pub async fn audited<R: Send + 'static>(
        self: &Arc<Self>,
        staff: &Staff,
        entry: Audit,
        f: impl FnOnce(&Audited<'_>) -> Result<R, ConsoleError> + Send + 'static,
    ) -> Result<R, ConsoleError> {
        self.audited_as(staff, move |tx| f(tx).map(|r| (r, entry)))
            .await
    }

    /// Like [`Console::audited`], when the entry depends on the work: the id of what it
    /// created, or whether a reveal applied to what it read.
    pub async fn audited_as<R: Send + 'static>(
        self: &Arc<Self>,
        staff: &Staff,
        f: impl FnOnce(&Audited<'_>) -> Result<(R, Audit), ConsoleError> + Send + 'static,
    ) -> Result<R, ConsoleError> {
        let actor = staff.actor();
        let store = self.store.clone();
        blocking(move || store.audited(&actor, f)).await
    }

    /// Like [`Console::audited_as`], for a read that may find nothing worth recording: None
    /// rolls it back, entry and all (see `Store::audited_if`).
    pub async fn audited_if<R: Send + 'static>(
        self: &Arc<Self>,
        staff: &Staff,
        f: impl FnOnce(&Audited<'_>) -> Result<Option<(R, Audit)>, ConsoleError> + Send + 'static,
    ) -> Result<Option<R>, ConsoleError> {
        let actor = staff.actor();
        let store = self.store.clone();
        blocking(move || store.audited_if(&actor, f)).await
    }
}

/// Store work runs off the async threads.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, ConsoleError> + Send + 'static,
) -> Result<R, ConsoleError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConsoleError::Internal(format!("store task failed: {e}")))?
}

/// The whole console.
pub fn router(console: Arc<Console>) -> Router {
    let pages = Router::new()
        .route("/", get(layout::home))
        .route("/login", get(auth::login_page).post(auth::login_form))
        .route("/api/login", post(auth::login_api))
        .route("/login/sso", get(sso::start))
        .route(crate::config::CALLBACK_PATH, get(sso::callback))
        .route("/logout", post(auth::logout))
        .route("/api/logout", post(auth::logout_api))
        .route("/account", get(auth::account_page))
        .route("/account/password", post(auth::change_password))
        .route("/api/account/password", post(auth::change_password_api))
        .route("/account/totp", post(auth::set_totp))
        .route("/api/me", get(auth::me))
        .route("/static/console.css", get(layout::css))
        .route("/static/console.js", get(layout::js))
        .route("/healthz", get(layout::healthz))
        .route("/api/openapi.json", get(layout::openapi))
        .merge(alerts::routes())
        .merge(incidents::routes())
        .merge(reveals::routes())
        .merge(agents::routes())
        .merge(audit_view::routes())
        .merge(users::routes())
        .merge(checks::routes())
        .merge(reports::routes())
        .merge(sar::routes());
    pages
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            auth::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            layout::security_headers,
        ))
        .with_state(console)
}
