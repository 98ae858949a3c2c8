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
pub mod users;

#[cfg(test)]
mod tests;

use crate::audit::{self, Actor, Record};
use crate::config::ConsoleConfig;
use crate::store;
use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::{get, post};
pub use error::ConsoleError;
use invigilator_policy::Policy;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What every handler shares.
pub struct Console {
    pub data_dir: PathBuf,
    pub config: ConsoleConfig,
    pub policy: Arc<ArcSwap<Policy>>,
    db: Mutex<Connection>,
    /// Slots for the argon2 check (19 MiB and tens of milliseconds each), one per core.
    password_checks: Arc<tokio::sync::Semaphore>,
}

/// The logged-in member of staff making a request (put there by [`auth::enforce`]).
#[derive(Debug, Clone)]
pub struct Staff {
    pub username: String,
    pub role: crate::accounts::Role,
    pub is_admin: bool,
    pub csrf_token: String,
    pub source: String,
    /// Notices every page shows this member of staff (DSL and leadership: approver changes).
    pub notices: Vec<crate::approvers::Notice>,
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
    pub fn new(
        data_dir: PathBuf,
        config: ConsoleConfig,
        policy: Arc<ArcSwap<Policy>>,
    ) -> Result<Arc<Self>, store::StoreError> {
        let conn = store::open(&data_dir, store::Durability::Full)?;
        Ok(Arc::new(Self {
            data_dir,
            config,
            policy,
            db: Mutex::new(conn),
            password_checks: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            )),
        }))
    }

    pub fn throttle_rules(&self) -> crate::accounts::throttle::Rules {
        crate::accounts::throttle::Rules {
            free_failures: self.config.max_failed_logins,
            longest_wait: self.config.lockout,
        }
    }

    /// Runs database work off the async threads.
    pub async fn db<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<R, ConsoleError> + Send + 'static,
    ) -> Result<R, ConsoleError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = me
                .db
                .lock()
                .map_err(|_| ConsoleError::Internal("database lock poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| ConsoleError::Internal(format!("database task failed: {e}")))?
    }

    /// Runs database work and records it in the audit trail in the same transaction: a read is
    /// only returned, and a change only kept, once its entry is written.
    pub async fn audited<R: Send + 'static>(
        self: &Arc<Self>,
        staff: &Staff,
        entry: Audit,
        f: impl FnOnce(&Connection) -> Result<R, ConsoleError> + Send + 'static,
    ) -> Result<R, ConsoleError> {
        self.audited_as(staff, move |conn| f(conn).map(|r| (r, entry)))
            .await
    }

    /// Like [`Console::audited`], when the entry depends on the work: the id of what it
    /// created, or whether a reveal applied to what it read.
    pub async fn audited_as<R: Send + 'static>(
        self: &Arc<Self>,
        staff: &Staff,
        f: impl FnOnce(&Connection) -> Result<(R, Audit), ConsoleError> + Send + 'static,
    ) -> Result<R, ConsoleError> {
        let actor = staff.actor();
        self.db(move |conn| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let done = f(conn).and_then(|(r, entry)| {
                let rec = Record {
                    action: entry.action,
                    object: &entry.object,
                    purpose: &entry.purpose,
                    detail: &entry.detail,
                };
                let head = audit::append_in(conn, &actor, &rec)?;
                Ok((r, head))
            });
            match done {
                Ok((r, (id, hash))) => {
                    audit::commit(conn, id, &hash)?;
                    Ok(r)
                }
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        })
        .await
    }
}

/// An audit entry a handler asks for: `action` on `object`, with the purpose stated for a
/// sensitive read and any detail worth keeping.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub action: &'static str,
    pub object: String,
    pub purpose: String,
    pub detail: String,
}

impl Audit {
    pub fn new(action: &'static str, object: impl Into<String>) -> Self {
        Self {
            action,
            object: object.into(),
            ..Default::default()
        }
    }

    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = purpose.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// The whole console.
pub fn router(console: Arc<Console>) -> Router {
    let pages = Router::new()
        .route("/", get(layout::home))
        .route("/login", get(auth::login_page).post(auth::login_form))
        .route("/api/login", post(auth::login_api))
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
