//! Request handlers: decode, call one operation, encode. No rules live here; each
//! handler's `#[utoipa::path]` is its entry in the OpenAPI document.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::accounts::AccountInput;
use crate::check::CheckReport;
use crate::contacts::SyncInput;
use crate::ops::{
    AddressInput, ContactsSyncRun, DropQuery, EmailInput, FlagResolution, ImportInput, ListQuery, MessagesQuery,
    OutboxQuery, PasswordInput, UserAddresses,
};
use crate::outbound::compose::OutgoingInput;
use crate::status::Status;
use crate::store::{
    Account, ContactChange, ContactSyncConfig, Deal, DropAddress, DropDelivery, FlaggedCard, ImportSummary, LinkChange,
    LinkRequest, MessageSummary, NewDeal, NewPerson, OrgSettings, OutboxEntry, Person, PersonKind, ThreadView,
};

type ApiResult<T> = Result<T, ApiError>;
type Created<T> = (StatusCode, Json<T>);

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    payload.map(|Json(v)| v).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    path.map(|Path(v)| v).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query.map(|Query(q)| q).map_err(|e| ApiError::bad_request(e.body_text()))
}

fn created<T>(value: T) -> Created<T> {
    (StatusCode::CREATED, Json(value))
}

/// `{"status": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", security(()), responses((status = 200, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.ops.store().ping().await {
        Ok(()) => Json(Health { status: "ready".into() }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store unreachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "store unreachable").into_response()
        }
    }
}

/// This document (OpenAPI 3.1), generated from the code.
#[utoipa::path(get, path = "/v1/openapi.json", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], super::openapi_json()).into_response()
}

/// Every account's state and its folders' progress.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = Status)))]
pub async fn status(State(state): State<AppState>) -> ApiResult<Json<Status>> {
    Ok(Json(state.ops.status().await?))
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/v1/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let text = state.ops.metrics().await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Mail accounts.
#[utoipa::path(get, path = "/v1/accounts", responses((status = 200, body = Vec<Account>)))]
pub async fn list_accounts(State(state): State<AppState>) -> ApiResult<Json<Vec<Account>>> {
    Ok(Json(state.ops.list_accounts().await?))
}

/// Adds a mail account (and its user and organization when new).
#[utoipa::path(post, path = "/v1/accounts", request_body = AccountInput, responses((status = 201, body = Account)))]
pub async fn add_account(
    State(state): State<AppState>,
    payload: Result<Json<AccountInput>, JsonRejection>,
) -> ApiResult<Created<Account>> {
    Ok(created(state.ops.add_account(body(payload)?).await?))
}

/// One mail account.
#[utoipa::path(get, path = "/v1/accounts/{id}", params(("id" = i64, Path)), responses((status = 200, body = Account)))]
pub async fn show_account(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Account>> {
    Ok(Json(state.ops.show_account(path(id)?).await?))
}

/// Removes a mail account; its synced messages stay.
#[utoipa::path(delete, path = "/v1/accounts/{id}", params(("id" = i64, Path)), responses((status = 204)))]
pub async fn remove_account(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<StatusCode> {
    state.ops.remove_account(path(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a password account's password; its worker restarts with it.
#[utoipa::path(put, path = "/v1/accounts/{id}/password", params(("id" = i64, Path)), request_body = PasswordInput,
    responses((status = 200, body = Account)))]
pub async fn set_account_password(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    payload: Result<Json<PasswordInput>, JsonRejection>,
) -> ApiResult<Json<Account>> {
    let id = path(id)?;
    Ok(Json(state.ops.set_account_password(id, body(payload)?).await?))
}

/// Diagnoses an account step by step; 200 with the report whether or not it passed.
#[utoipa::path(post, path = "/v1/accounts/{id}/check", params(("id" = i64, Path)),
    responses((status = 200, body = CheckReport)))]
pub async fn check_account(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<CheckReport>> {
    Ok(Json(state.ops.check_account(path(id)?).await?))
}

/// Leads, oldest first.
#[utoipa::path(get, path = "/v1/leads", params(ListQuery), responses((status = 200, body = Vec<Person>)))]
pub async fn list_leads(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Person>>> {
    Ok(Json(state.ops.list_people(PersonKind::Lead, &query(q)?).await?))
}

/// Creates a lead; its past mail is linked in the background.
#[utoipa::path(post, path = "/v1/leads", request_body = NewPerson, responses((status = 201, body = Person)))]
pub async fn add_lead(
    State(state): State<AppState>,
    payload: Result<Json<NewPerson>, JsonRejection>,
) -> ApiResult<Created<Person>> {
    Ok(created(state.ops.add_person(PersonKind::Lead, body(payload)?).await?))
}

/// One lead.
#[utoipa::path(get, path = "/v1/leads/{id}", params(("id" = i64, Path)), responses((status = 200, body = Person)))]
pub async fn show_lead(State(state): State<AppState>, id: Result<Path<i64>, PathRejection>) -> ApiResult<Json<Person>> {
    Ok(Json(state.ops.show_person(PersonKind::Lead, path(id)?).await?))
}

/// Adds an address to a lead; past mail with it is linked in the background.
#[utoipa::path(post, path = "/v1/leads/{id}/emails", params(("id" = i64, Path)), request_body = EmailInput,
    responses((status = 200, body = Person)))]
pub async fn add_lead_email(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    payload: Result<Json<EmailInput>, JsonRejection>,
) -> ApiResult<Json<Person>> {
    let id = path(id)?;
    Ok(Json(state.ops.add_person_email(PersonKind::Lead, id, body(payload)?).await?))
}

/// Contacts, oldest first.
#[utoipa::path(get, path = "/v1/contacts", params(ListQuery), responses((status = 200, body = Vec<Person>)))]
pub async fn list_contacts(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Person>>> {
    Ok(Json(state.ops.list_people(PersonKind::Contact, &query(q)?).await?))
}

/// Creates a contact; its past mail is linked in the background.
#[utoipa::path(post, path = "/v1/contacts", request_body = NewPerson, responses((status = 201, body = Person)))]
pub async fn add_contact(
    State(state): State<AppState>,
    payload: Result<Json<NewPerson>, JsonRejection>,
) -> ApiResult<Created<Person>> {
    Ok(created(state.ops.add_person(PersonKind::Contact, body(payload)?).await?))
}

/// Imports contacts, all or none.
#[utoipa::path(post, path = "/v1/contacts/import", request_body = ImportInput,
    responses((status = 200, body = ImportSummary)))]
pub async fn import_contacts(
    State(state): State<AppState>,
    payload: Result<Json<ImportInput>, JsonRejection>,
) -> ApiResult<Json<ImportSummary>> {
    Ok(Json(state.ops.import_contacts(body(payload)?, |_, _| {}).await?))
}

/// One contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", params(("id" = i64, Path)), responses((status = 200, body = Person)))]
pub async fn show_contact(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Person>> {
    Ok(Json(state.ops.show_person(PersonKind::Contact, path(id)?).await?))
}

/// Changes a contact; given lists replace the stored ones.
#[utoipa::path(patch, path = "/v1/contacts/{id}", params(("id" = i64, Path)), request_body = ContactChange,
    responses((status = 200, body = Person)))]
pub async fn update_contact(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    payload: Result<Json<ContactChange>, JsonRejection>,
) -> ApiResult<Json<Person>> {
    let id = path(id)?;
    Ok(Json(state.ops.update_contact(id, body(payload)?).await?))
}

/// Deletes a contact; its mail stays.
#[utoipa::path(delete, path = "/v1/contacts/{id}", params(("id" = i64, Path)), responses((status = 204)))]
pub async fn delete_contact(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<StatusCode> {
    state.ops.delete_contact(path(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds an address to a contact; past mail with it is linked in the background.
#[utoipa::path(post, path = "/v1/contacts/{id}/emails", params(("id" = i64, Path)), request_body = EmailInput,
    responses((status = 200, body = Person)))]
pub async fn add_contact_email(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    payload: Result<Json<EmailInput>, JsonRejection>,
) -> ApiResult<Json<Person>> {
    let id = path(id)?;
    Ok(Json(state.ops.add_person_email(PersonKind::Contact, id, body(payload)?).await?))
}

/// Deals, oldest first.
#[utoipa::path(get, path = "/v1/deals", params(ListQuery), responses((status = 200, body = Vec<Deal>)))]
pub async fn list_deals(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Deal>>> {
    Ok(Json(state.ops.list_deals(&query(q)?).await?))
}

/// Creates a deal.
#[utoipa::path(post, path = "/v1/deals", request_body = NewDeal, responses((status = 201, body = Deal)))]
pub async fn add_deal(
    State(state): State<AppState>,
    payload: Result<Json<NewDeal>, JsonRejection>,
) -> ApiResult<Created<Deal>> {
    Ok(created(state.ops.add_deal(body(payload)?).await?))
}

/// One deal.
#[utoipa::path(get, path = "/v1/deals/{id}", params(("id" = i64, Path)), responses((status = 200, body = Deal)))]
pub async fn show_deal(State(state): State<AppState>, id: Result<Path<i64>, PathRejection>) -> ApiResult<Json<Deal>> {
    Ok(Json(state.ops.show_deal(path(id)?).await?))
}

/// Messages of one account, or linked to one lead, contact or deal, newest first.
#[utoipa::path(get, path = "/v1/messages", params(MessagesQuery), responses((status = 200, body = Vec<MessageSummary>)))]
pub async fn list_messages(
    State(state): State<AppState>,
    q: Result<Query<MessagesQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<MessageSummary>>> {
    Ok(Json(state.ops.list_messages(&query(q)?).await?))
}

/// Queues a message for sending; the daemon sends, retries, stores and files it.
#[utoipa::path(post, path = "/v1/messages/send", request_body = OutgoingInput,
    responses((status = 202, body = OutboxEntry)))]
pub async fn send_message(
    State(state): State<AppState>,
    payload: Result<Json<OutgoingInput>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<OutboxEntry>)> {
    Ok((StatusCode::ACCEPTED, Json(state.ops.send(&body(payload)?).await?)))
}

/// Outgoing messages, newest first.
#[utoipa::path(get, path = "/v1/outbox", params(OutboxQuery), responses((status = 200, body = Vec<OutboxEntry>)))]
pub async fn list_outbox(
    State(state): State<AppState>,
    q: Result<Query<OutboxQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<OutboxEntry>>> {
    Ok(Json(state.ops.list_outbox(&query(q)?).await?))
}

/// One outgoing message: status, attempts, per-recipient results.
#[utoipa::path(get, path = "/v1/outbox/{id}", params(("id" = i64, Path)), responses((status = 200, body = OutboxEntry)))]
pub async fn show_outbox(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<OutboxEntry>> {
    Ok(Json(state.ops.show_outbox(path(id)?).await?))
}

/// A thread: its messages with their links, and the thread's own links.
#[utoipa::path(get, path = "/v1/threads/{id}", params(("id" = i64, Path)), responses((status = 200, body = ThreadView)))]
pub async fn show_thread(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<ThreadView>> {
    Ok(Json(state.ops.show_thread(path(id)?).await?))
}

/// Links a message or thread to a lead, contact or deal; the thread's later mail follows.
#[utoipa::path(post, path = "/v1/links", request_body = LinkRequest, responses((status = 200, body = LinkChange)))]
pub async fn link(
    State(state): State<AppState>,
    payload: Result<Json<LinkRequest>, JsonRejection>,
) -> ApiResult<Json<LinkChange>> {
    Ok(Json(state.ops.link(&body(payload)?).await?))
}

/// Unlinks a message or thread; sticky: nothing re-links it automatically.
#[utoipa::path(post, path = "/v1/unlinks", request_body = LinkRequest, responses((status = 200, body = LinkChange)))]
pub async fn unlink(
    State(state): State<AppState>,
    payload: Result<Json<LinkRequest>, JsonRejection>,
) -> ApiResult<Json<LinkChange>> {
    Ok(Json(state.ops.unlink(&body(payload)?).await?))
}

/// An organization's settings.
#[utoipa::path(get, path = "/v1/orgs/{name}/settings", params(("name" = String, Path)),
    responses((status = 200, body = OrgSettings)))]
pub async fn show_org_settings(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<OrgSettings>> {
    Ok(Json(state.ops.show_org_settings(&path(name)?).await?))
}

/// Replaces an organization's settings (creating it when new).
#[utoipa::path(put, path = "/v1/orgs/{name}/settings", params(("name" = String, Path)), request_body = OrgSettings,
    responses((status = 200, body = OrgSettings)))]
pub async fn set_org_settings(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    payload: Result<Json<OrgSettings>, JsonRejection>,
) -> ApiResult<Json<OrgSettings>> {
    let name = path(name)?;
    Ok(Json(state.ops.set_org_settings(&name, body(payload)?).await?))
}

/// A user's BCC-drop address, created on first use.
#[utoipa::path(get, path = "/v1/users/{email}/bcc-address", params(("email" = String, Path)),
    responses((status = 200, body = DropAddress)))]
pub async fn show_drop_address(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<DropAddress>> {
    Ok(Json(state.ops.drop_address(&path(email)?, false).await?))
}

/// Replaces a user's BCC-drop token: the old address stops working.
#[utoipa::path(post, path = "/v1/users/{email}/bcc-address/rotate", params(("email" = String, Path)),
    responses((status = 200, body = DropAddress)))]
pub async fn rotate_drop_address(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<DropAddress>> {
    Ok(Json(state.ops.drop_address(&path(email)?, true).await?))
}

/// Adds an address a user sends from.
#[utoipa::path(post, path = "/v1/users/{email}/addresses", params(("email" = String, Path)),
    request_body = AddressInput, responses((status = 200, body = UserAddresses)))]
pub async fn add_user_address(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
    payload: Result<Json<AddressInput>, JsonRejection>,
) -> ApiResult<Json<UserAddresses>> {
    let user = path(email)?;
    Ok(Json(state.ops.add_user_address(&user, body(payload)?).await?))
}

/// Messages received by the BCC-drop listener and their outcome, newest first.
#[utoipa::path(get, path = "/v1/bcc-drops", params(DropQuery), responses((status = 200, body = Vec<DropDelivery>)))]
pub async fn list_drop_deliveries(
    State(state): State<AppState>,
    q: Result<Query<DropQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<DropDelivery>>> {
    Ok(Json(state.ops.list_drop_deliveries(&query(q)?).await?))
}

/// A user's contacts sync: settings, last run, counts, error.
#[utoipa::path(get, path = "/v1/users/{email}/contacts-sync", params(("email" = String, Path)),
    responses((status = 200, body = ContactSyncConfig)))]
pub async fn show_contacts_sync(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ContactSyncConfig>> {
    Ok(Json(state.ops.show_contacts_sync(&path(email)?).await?))
}

/// Sets (or replaces) a user's contacts sync.
#[utoipa::path(put, path = "/v1/users/{email}/contacts-sync", params(("email" = String, Path)),
    request_body = SyncInput, responses((status = 200, body = ContactSyncConfig)))]
pub async fn set_contacts_sync(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
    payload: Result<Json<SyncInput>, JsonRejection>,
) -> ApiResult<Json<ContactSyncConfig>> {
    let user = path(email)?;
    Ok(Json(state.ops.set_contacts_sync(&user, body(payload)?).await?))
}

/// Removes a user's contacts sync; the contacts stay.
#[utoipa::path(delete, path = "/v1/users/{email}/contacts-sync", params(("email" = String, Path)),
    responses((status = 204)))]
pub async fn remove_contacts_sync(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    state.ops.remove_contacts_sync(&path(email)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks the daemon to run a user's contacts sync now; the outcome shows in the GET.
#[utoipa::path(post, path = "/v1/users/{email}/contacts-sync/run", params(("email" = String, Path)),
    responses((status = 202, body = ContactsSyncRun)))]
pub async fn request_contacts_sync(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
) -> ApiResult<(StatusCode, Json<ContactsSyncRun>)> {
    Ok((StatusCode::ACCEPTED, Json(state.ops.request_contacts_sync(&path(email)?).await?)))
}

/// The cards of a user's contacts sync flagged for a person, and why.
#[utoipa::path(get, path = "/v1/users/{email}/contacts-sync/flagged", params(("email" = String, Path)),
    responses((status = 200, body = Vec<FlaggedCard>)))]
pub async fn list_flagged_cards(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<FlaggedCard>>> {
    Ok(Json(state.ops.list_flagged_cards(&path(email)?).await?))
}

/// Decides about a flagged card (link, import or ignore); the next run, requested at once,
/// applies it.
#[utoipa::path(post, path = "/v1/users/{email}/contacts-sync/flagged/resolve", params(("email" = String, Path)),
    request_body = FlagResolution, responses((status = 202, body = ContactsSyncRun)))]
pub async fn resolve_flagged_card(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
    payload: Result<Json<FlagResolution>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ContactsSyncRun>)> {
    let user = path(email)?;
    Ok((StatusCode::ACCEPTED, Json(state.ops.resolve_flagged_card(&user, &body(payload)?).await?)))
}
