//! HTTP/JSON API: `/healthz`, `/readyz`, and `/v1/...` behind bearer tokens.
//!
//! Handlers decode, call one [`Ops`] operation and encode; no rule lives here. Every
//! error has one shape: `{"error": {"code": "...", "message": "..."}}`, and a bad request
//! is always a 4xx. The OpenAPI document served at `/v1/openapi.json` is generated from
//! the handlers' `#[utoipa::path]` annotations and the types' schema derives, so a route
//! cannot exist without its description.

mod auth;
mod handlers;

pub use auth::load_tokens;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, middleware};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr, ResponseBuilder, content::ContentBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ops::{OpError, Ops};
use crate::store::StoreError;

#[derive(Clone)]
pub struct AppState {
    pub ops: Ops,
    pub tokens: Arc<Vec<String>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailsync API",
        version = "1",
        description = "Email sync for CRMs. Every /v1 route except this document needs \
            `Authorization: Bearer <token>`; errors are {\"error\":{\"code\",\"message\"}}. \
            Times are unix milliseconds."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The routes under `/v1` that need a token, each with its description.
fn v1_routes() -> OpenApiRouter<AppState> {
    use handlers::*;
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(metrics))
        .routes(routes!(list_accounts, add_account))
        .routes(routes!(show_account, remove_account))
        .routes(routes!(set_account_password))
        .routes(routes!(check_account))
        .routes(routes!(list_leads, add_lead))
        .routes(routes!(show_lead))
        .routes(routes!(add_lead_email))
        .routes(routes!(list_contacts, add_contact))
        .routes(routes!(import_contacts))
        .routes(routes!(show_contact, update_contact, delete_contact))
        .routes(routes!(add_contact_email))
        .routes(routes!(list_deals, add_deal))
        .routes(routes!(show_deal))
        .routes(routes!(list_messages))
        .routes(routes!(send_message))
        .routes(routes!(list_outbox))
        .routes(routes!(show_outbox))
        .routes(routes!(show_thread))
        .routes(routes!(link))
        .routes(routes!(unlink))
        .routes(routes!(show_org_settings, set_org_settings))
        .routes(routes!(show_drop_address))
        .routes(routes!(rotate_drop_address))
        .routes(routes!(add_user_address))
        .routes(routes!(list_drop_deliveries))
        .routes(routes!(show_contacts_sync, set_contacts_sync, remove_contacts_sync))
        .routes(routes!(request_contacts_sync))
        .routes(routes!(list_flagged_cards))
        .routes(routes!(resolve_flagged_card))
}

/// The routes behind the token, the public ones, and the document describing both.
fn documented_routes() -> (Router<AppState>, Router<AppState>, OpenApiDoc) {
    let (v1, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(v1_routes()).split_for_parts();
    let (public, public_doc) = OpenApiRouter::new()
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .routes(routes!(handlers::openapi))
        .split_for_parts();
    doc.merge(public_doc);
    // After the merge: it gives every operation (public ones too) the error response.
    ErrorResponses.modify(&mut doc);
    (v1, public, doc)
}

/// The OpenAPI document served at `/v1/openapi.json`, generated once.
pub fn openapi_json() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let (_, _, doc) = documented_routes();
        doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"cannot render the document: {e}\"}}"))
    })
}

pub fn router(state: AppState) -> Router {
    let (v1, public, _) = documented_routes();
    v1.route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .merge(public)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .with_state(state)
}

/// Every operation needs the bearer token unless it says otherwise (`security(())`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// Every operation can answer with an error in the one error shape.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let error = ResponseBuilder::new()
            .description("An error: a 4xx for a bad request, 401 without a valid token, 503 when the store is down")
            .content("application/json", ContentBuilder::new().schema(Some(ErrorBody::schema())).build())
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
            {
                op.responses.responses.entry("default".into()).or_insert_with(|| RefOr::T(error.clone()));
            }
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `bad_request`, `not_found`, `invalid`, `conflict`, ...
    pub code: String,
    /// For people.
    pub message: String,
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

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::BadRequest(m) => Self::bad_request(m),
            OpError::Store(e) => e.into(),
            OpError::Internal(m) => {
                tracing::error!(error = %m, "operation failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
