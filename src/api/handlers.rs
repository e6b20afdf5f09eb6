//! Request handlers: decode, call the store, encode. No rules live here.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::accounts::AccountInput;
use crate::outbound::compose::OutgoingInput;
use crate::status::Status;
use crate::store::{LinkRequest, NewDeal, NewPerson, OrgSettings, PersonKind, one_entity};

type ApiResult<T = Response> = Result<T, ApiError>;

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    payload.map(|Json(v)| v).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    path.map(|Path(v)| v).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn id(p: Result<Path<i64>, PathRejection>) -> ApiResult<i64> {
    path(p)
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query.map(|Query(q)| q).map_err(|e| ApiError::bad_request(e.body_text()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    org: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

fn default_limit() -> i64 {
    100
}

/// Every listing pages with `limit` (1 to 1000) and `offset`.
fn check_page(limit: i64, offset: i64) -> ApiResult<()> {
    if !(1..=1000).contains(&limit) || offset < 0 {
        return Err(ApiError::bad_request("limit must be 1 to 1000 and offset at least 0"));
    }
    Ok(())
}

fn list_query(query: Result<Query<ListQuery>, QueryRejection>) -> ApiResult<ListQuery> {
    let q = self::query(query)?;
    check_page(q.limit, q.offset)?;
    Ok(q)
}

fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store unreachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "store unreachable").into_response()
        }
    }
}

pub async fn status(State(state): State<AppState>) -> ApiResult<Json<Status>> {
    Ok(Json(Status::collect(&state.store).await?))
}

pub async fn list_accounts(State(state): State<AppState>) -> ApiResult {
    Ok(Json(state.store.list_accounts().await?).into_response())
}

pub async fn add_account(
    State(state): State<AppState>,
    payload: Result<Json<AccountInput>, JsonRejection>,
) -> ApiResult {
    let new = body(payload)?.into_new_account(&state.key)?;
    Ok(created(state.store.add_account(&new).await?))
}

pub async fn show_account(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.account(id(path)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordInput {
    password: crate::secrets::Secret,
}

pub async fn set_account_password(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    payload: Result<Json<PasswordInput>, JsonRejection>,
) -> ApiResult {
    let id = id(path)?;
    let input = body(payload)?;
    if input.password.expose().is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "the password is empty"));
    }
    let sealed = state
        .key
        .seal(crate::accounts::PASSWORD_PURPOSE, &input.password)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(state.store.set_account_password(id, &sealed).await?).into_response())
}

pub async fn remove_account(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    state.store.remove_account(id(path)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_people(state: AppState, kind: PersonKind, query: Result<Query<ListQuery>, QueryRejection>) -> ApiResult {
    let q = list_query(query)?;
    Ok(Json(state.store.list_people(kind, q.org.as_deref(), q.limit, q.offset).await?).into_response())
}

pub async fn list_leads(State(state): State<AppState>, query: Result<Query<ListQuery>, QueryRejection>) -> ApiResult {
    list_people(state, PersonKind::Lead, query).await
}

pub async fn list_contacts(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    list_people(state, PersonKind::Contact, query).await
}

pub async fn add_lead(State(state): State<AppState>, payload: Result<Json<NewPerson>, JsonRejection>) -> ApiResult {
    let lead = state.store.add_person(PersonKind::Lead, body(payload)?).await?;
    state.relink.notify_one();
    Ok(created(lead))
}

pub async fn add_contact(State(state): State<AppState>, payload: Result<Json<NewPerson>, JsonRejection>) -> ApiResult {
    let contact = state.store.add_person(PersonKind::Contact, body(payload)?).await?;
    state.relink.notify_one();
    Ok(created(contact))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    email: String,
}

async fn add_email(
    state: AppState,
    kind: PersonKind,
    path: Result<Path<i64>, PathRejection>,
    payload: Result<Json<EmailInput>, JsonRejection>,
) -> ApiResult {
    let person = state.store.add_person_email(kind, id(path)?, &body(payload)?.email).await?;
    state.relink.notify_one();
    Ok(Json(person).into_response())
}

pub async fn add_lead_email(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    payload: Result<Json<EmailInput>, JsonRejection>,
) -> ApiResult {
    add_email(state, PersonKind::Lead, path, payload).await
}

pub async fn add_contact_email(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    payload: Result<Json<EmailInput>, JsonRejection>,
) -> ApiResult {
    add_email(state, PersonKind::Contact, path, payload).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    contacts: Vec<NewPerson>,
}

pub async fn import_contacts(
    State(state): State<AppState>,
    payload: Result<Json<ImportInput>, JsonRejection>,
) -> ApiResult {
    let summary = state.store.import_contacts(body(payload)?.contacts).await?;
    state.relink.notify_one();
    Ok(Json(summary).into_response())
}

pub async fn show_lead(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.person(PersonKind::Lead, id(path)?).await?).into_response())
}

pub async fn show_contact(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.person(PersonKind::Contact, id(path)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    account: Option<i64>,
    lead: Option<i64>,
    contact: Option<i64>,
    deal: Option<i64>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

pub async fn list_messages(
    State(state): State<AppState>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> ApiResult {
    let q = self::query(query)?;
    check_page(q.limit, q.offset)?;
    let messages = match (q.account, q.lead, q.contact, q.deal) {
        (Some(account), None, None, None) => {
            state.store.account(account).await?;
            state.store.list_account_messages(account, q.limit, q.offset).await?
        }
        (None, lead, contact, deal) if lead.is_some() || contact.is_some() || deal.is_some() => {
            let (kind, id) = one_entity(lead, contact, deal)?;
            state.store.list_linked_messages(kind, id, q.limit, q.offset).await?
        }
        _ => return Err(ApiError::bad_request("give exactly one of account, lead, contact and deal")),
    };
    Ok(Json(messages).into_response())
}

pub async fn send_message(
    State(state): State<AppState>,
    payload: Result<Json<OutgoingInput>, JsonRejection>,
) -> ApiResult {
    let entry = crate::outbound::enqueue(&state.store, &body(payload)?, &state.config()).await?;
    state.outbox.notify_one();
    Ok((StatusCode::ACCEPTED, Json(entry)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    user: Option<String>,
    status: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

pub async fn list_outbox(
    State(state): State<AppState>,
    query: Result<Query<OutboxQuery>, QueryRejection>,
) -> ApiResult {
    let q = self::query(query)?;
    check_page(q.limit, q.offset)?;
    let entries = state.store.list_outbox(q.user.as_deref(), q.status.as_deref(), q.limit, q.offset).await?;
    Ok(Json(entries).into_response())
}

pub async fn show_outbox(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.outbox_entry(id(path)?).await?).into_response())
}

async fn drop_address(state: AppState, path: Result<Path<String>, PathRejection>, rotate: bool) -> ApiResult {
    let user = user_path(path)?;
    Ok(Json(state.store.drop_address(&user, &state.config().bcc_drop.domain, rotate).await?).into_response())
}

pub async fn show_drop_address(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> ApiResult {
    drop_address(state, path, false).await
}

pub async fn rotate_drop_address(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    drop_address(state, path, true).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropQuery {
    user: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

pub async fn list_drop_deliveries(
    State(state): State<AppState>,
    query: Result<Query<DropQuery>, QueryRejection>,
) -> ApiResult {
    let q = self::query(query)?;
    check_page(q.limit, q.offset)?;
    Ok(Json(state.store.drop_deliveries(q.user.as_deref(), q.limit, q.offset).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    address: String,
}

pub async fn add_user_address(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    payload: Result<Json<AddressInput>, JsonRejection>,
) -> ApiResult {
    let user = user_path(path)?;
    let addresses = state.store.add_user_address(&user, &body(payload)?.address).await?;
    Ok(Json(serde_json::json!({ "user": user, "addresses": addresses })).into_response())
}

/// Diagnoses an account step by step; 200 with the report whether or not it passed.
pub async fn check_account(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    let report = crate::check::check_account(&state.store, &state.key, &state.config(), id(path)?).await?;
    Ok(Json(report).into_response())
}

/// Prometheus text format; behind the bearer token like the rest of /v1.
pub async fn metrics(State(state): State<AppState>) -> ApiResult {
    let text = crate::metrics::render(&state.store).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub async fn update_contact(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    payload: Result<Json<crate::store::ContactChange>, JsonRejection>,
) -> ApiResult {
    let person = state.store.update_contact(id(path)?, body(payload)?).await?;
    state.relink.notify_one();
    Ok(Json(person).into_response())
}

pub async fn delete_contact(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    state.store.delete_contact(id(path)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let user = self::path(path)?;
    crate::address::normalize_email(&user)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()))
}

pub async fn set_contacts_sync(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    payload: Result<Json<crate::contacts::SyncInput>, JsonRejection>,
) -> ApiResult {
    let user = user_path(path)?;
    let saved = crate::contacts::configure(&state.store, &state.key, &user, body(payload)?).await?;
    Ok(Json(saved).into_response())
}

pub async fn show_contacts_sync(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.contact_sync_config(&user_path(path)?).await?).into_response())
}

pub async fn remove_contacts_sync(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    state.store.remove_contact_sync_config(&user_path(path)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Asks the daemon to run the sync now; the outcome shows in the GET.
pub async fn run_contacts_sync(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> ApiResult {
    state.store.request_contact_sync(&user_path(path)?).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"status": "requested"}))).into_response())
}

pub async fn show_thread(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.thread(id(path)?).await?).into_response())
}

pub async fn link(State(state): State<AppState>, payload: Result<Json<LinkRequest>, JsonRejection>) -> ApiResult {
    let (target, kind, id) = body(payload)?.parts()?;
    Ok(Json(state.store.link(target, kind, id).await?).into_response())
}

pub async fn unlink(State(state): State<AppState>, payload: Result<Json<LinkRequest>, JsonRejection>) -> ApiResult {
    let (target, kind, id) = body(payload)?.parts()?;
    Ok(Json(state.store.unlink(target, kind, id).await?).into_response())
}

pub async fn show_org_settings(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.org_settings(&self::path(path)?).await?).into_response())
}

pub async fn set_org_settings(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    payload: Result<Json<OrgSettings>, JsonRejection>,
) -> ApiResult {
    let settings = state.store.set_org_settings(&self::path(path)?, body(payload)?).await?;
    state.relink.notify_one();
    Ok(Json(settings).into_response())
}

pub async fn list_deals(State(state): State<AppState>, query: Result<Query<ListQuery>, QueryRejection>) -> ApiResult {
    let q = list_query(query)?;
    Ok(Json(state.store.list_deals(q.org.as_deref(), q.limit, q.offset).await?).into_response())
}

pub async fn add_deal(State(state): State<AppState>, payload: Result<Json<NewDeal>, JsonRejection>) -> ApiResult {
    Ok(created(state.store.add_deal(body(payload)?).await?))
}

pub async fn show_deal(State(state): State<AppState>, path: Result<Path<i64>, PathRejection>) -> ApiResult {
    Ok(Json(state.store.deal(id(path)?).await?).into_response())
}
