//! HTTP/JSON API: `/healthz`, `/readyz`, and `/v1/...` behind bearer tokens.
//!
//! Every error has one shape: `{"error": {"code": "...", "message": "..."}}`, and a bad
//! request is always a 4xx. The routes are described by `openapi.json` beside this file,
//! served at `/v1/openapi.json`; a test checks that every documented operation is routed.

mod auth;
mod handlers;

pub use auth::load_tokens;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::json;

use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub key: Arc<MasterKey>,
    pub tokens: Arc<Vec<String>>,
    /// Wakes the relinker after a request queued retroactive linking.
    pub relink: Arc<tokio::sync::Notify>,
    /// Wakes the sender after a request queued mail.
    pub outbox: Arc<tokio::sync::Notify>,
    /// The running configuration; a reload replaces it.
    pub config: Arc<std::sync::RwLock<Arc<crate::config::Config>>>,
}

impl AppState {
    /// The configuration as of now (a reload may have replaced it since the last call).
    pub fn config(&self) -> Arc<crate::config::Config> {
        match self.config.read() {
            Ok(config) => config.clone(),
            // A writer panicked mid-swap; the Arc it held is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/status", get(handlers::status))
        .route("/accounts", get(handlers::list_accounts).post(handlers::add_account))
        .route("/accounts/{id}", get(handlers::show_account).delete(handlers::remove_account))
        .route("/accounts/{id}/password", axum::routing::put(handlers::set_account_password))
        .route("/accounts/{id}/check", post(handlers::check_account))
        .route("/leads", get(handlers::list_leads).post(handlers::add_lead))
        .route("/leads/{id}", get(handlers::show_lead))
        .route("/leads/{id}/emails", post(handlers::add_lead_email))
        .route("/contacts", get(handlers::list_contacts).post(handlers::add_contact))
        .route("/contacts/import", post(handlers::import_contacts))
        .route(
            "/contacts/{id}",
            get(handlers::show_contact).patch(handlers::update_contact).delete(handlers::delete_contact),
        )
        .route("/contacts/{id}/emails", post(handlers::add_contact_email))
        .route("/deals", get(handlers::list_deals).post(handlers::add_deal))
        .route("/deals/{id}", get(handlers::show_deal))
        .route("/messages", get(handlers::list_messages))
        .route("/messages/send", post(handlers::send_message))
        .route("/outbox", get(handlers::list_outbox))
        .route("/outbox/{id}", get(handlers::show_outbox))
        .route("/threads/{id}", get(handlers::show_thread))
        .route("/users/{email}/bcc-address", get(handlers::show_drop_address))
        .route("/users/{email}/bcc-address/rotate", post(handlers::rotate_drop_address))
        .route("/users/{email}/addresses", post(handlers::add_user_address))
        .route("/bcc-drops", get(handlers::list_drop_deliveries))
        .route("/metrics", get(handlers::metrics))
        .route(
            "/users/{email}/contacts-sync",
            get(handlers::show_contacts_sync).put(handlers::set_contacts_sync).delete(handlers::remove_contacts_sync),
        )
        .route("/users/{email}/contacts-sync/run", post(handlers::run_contacts_sync))
        .route("/links", post(handlers::link))
        .route("/unlinks", post(handlers::unlink))
        .route("/orgs/{name}/settings", get(handlers::show_org_settings).put(handlers::set_org_settings))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(handlers::readyz))
        .route("/v1/openapi.json", get(openapi))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .with_state(state)
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// An error response with a stable JSON shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            StoreError::Limit(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, "limit_reached", m),
            _ if e.is_transient() => {
                tracing::warn!(error = %e, "store unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable; retry")
            }
            _ => {
                tracing::error!(error = %e, "store error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
