//! Errors a console request can end with, shown as a page or as JSON `{"error": ...}`
//! depending on where the request was going.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The request itself is wrong; the message names the problem.
    #[error("{0}")]
    BadRequest(String),
    #[error("not logged in")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Too much at once (log-ins waiting for a password check); try again shortly.
    #[error("{0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "console store call failed");
        ConsoleError::Internal(e.to_string())
    }
}

impl From<crate::store::audit::AuditError> for ConsoleError {
    fn from(e: crate::store::audit::AuditError) -> Self {
        tracing::error!(error = %e, "audit trail write failed");
        ConsoleError::Internal(format!("audit trail: {e}"))
    }
}

impl From<crate::store::accounts::AccountError> for ConsoleError {
    fn from(e: crate::store::accounts::AccountError) -> Self {
        use crate::store::accounts::AccountError as A;
        match e {
            A::Sql(e) => crate::store::StoreError::from(e).into(),
            A::Hash(m) => ConsoleError::Internal(m),
            A::NoSuchUser(_) => ConsoleError::NotFound(e.to_string()),
            A::Exists(_) => ConsoleError::Conflict(e.to_string()),
            other => ConsoleError::BadRequest(other.to_string()),
        }
    }
}

/// The error as a response; [`super::layout::security_headers`] turns it into a page for
/// browsers on HTML routes.
impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        resp.extensions_mut().insert(ShownError(self.to_string()));
        resp
    }
}

/// Marks a response as an error whose message a page may show.
#[derive(Debug, Clone)]
pub struct ShownError(pub String);
