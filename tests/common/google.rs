//! A local fake of the Google People API, for the contacts-sync tests. It follows the
//! published REST reference (https://developers.google.com/people/api/rest/v1):
//! - `people.connections.list` (`GET /v1/people/me/connections`): `personFields`
//!   required, `pageSize` (1-1000, default 100) and `pageToken` paging, `requestSyncToken`
//!   / `syncToken`; with a sync token, changes since it, deleted contacts as persons with
//!   `metadata.deleted = true`; an expired token fails with 400 FAILED_PRECONDITION and a
//!   `google.rpc.ErrorInfo` with reason `EXPIRED_SYNC_TOKEN`;
//! - `people.getBatchGet` (`GET /v1/people:batchGet`, up to 200 `resourceNames`);
//! - `people.batchCreateContacts` / `people.batchUpdateContacts` (at most 200 contacts;
//!   an update needs `updateMask` and fails per contact with FAILED_PRECONDITION when
//!   its etag is not the current one) and `people.deleteContact`;
//! - `contactGroups.list` / `contactGroups.create`;
//! - OAuth 2.0 bearer tokens (401 UNAUTHENTICATED otherwise) and 429 RESOURCE_EXHAUSTED
//!   when the test asks for throttling.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

type Validator = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct People {
    /// resourceName -> (person, version of its last change)
    persons: BTreeMap<String, (Value, u64)>,
    groups: Vec<Value>,
    version: u64,
    /// Sync tokens older than this are expired.
    oldest_valid: u64,
    next_id: u64,
    throttle: u32,
    writes: u64,
}

pub struct PeopleServer {
    pub port: u16,
    state: Arc<Mutex<People>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type AppState = (Arc<Mutex<People>>, Validator);

impl PeopleServer {
    /// Starts the fake; requests must carry a bearer token `valid` accepts.
    pub fn start(valid: impl Fn(&str) -> bool + Send + Sync + 'static) -> PeopleServer {
        let state = Arc::new(Mutex::new(People::default()));
        state.lock().unwrap().groups.push(json!({
            "resourceName": "contactGroups/myContacts", "name": "myContacts", "formattedName": "My Contacts", "groupType": "SYSTEM_CONTACT_GROUP"
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app_state: AppState = (state.clone(), Arc::new(valid));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let app = Router::new().fallback(handle).with_state(app_state);
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        PeopleServer { port, state, stop: Some(stop), thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a contact as another client would (the phone); returns its resourceName.
    pub fn add(&self, person: Value) -> String {
        let mut p = self.state.lock().unwrap();
        p.create(person)
    }

    /// Changes a contact as another client would.
    pub fn edit(&self, resource_name: &str, edit: impl FnOnce(&mut Value)) {
        let mut p = self.state.lock().unwrap();
        let mut person = p.persons.get(resource_name).expect("person").0.clone();
        edit(&mut person);
        p.store(resource_name, person);
    }

    pub fn delete(&self, resource_name: &str) {
        self.state.lock().unwrap().delete(resource_name);
    }

    /// Live contacts, by resourceName.
    pub fn contacts(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .persons
            .values()
            .filter(|(p, _)| p["metadata"]["deleted"] != true)
            .map(|(p, _)| p.clone())
            .collect()
    }

    pub fn group_name_of(&self, resource_name: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .groups
            .iter()
            .find(|g| g["resourceName"] == resource_name)
            .and_then(|g| g["name"].as_str().map(String::from))
    }

    /// Every sync token issued so far expires (as after seven days).
    pub fn expire_sync_tokens(&self) {
        let mut p = self.state.lock().unwrap();
        p.oldest_valid = p.version + 1;
    }

    /// The next `n` requests get 429 RESOURCE_EXHAUSTED.
    pub fn throttle(&self, n: u32) {
        self.state.lock().unwrap().throttle = n;
    }

    /// Create, update and delete calls received (batch calls count once).
    pub fn writes(&self) -> u64 {
        self.state.lock().unwrap().writes
    }
}

impl Drop for PeopleServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl People {
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn create(&mut self, mut person: Value) -> String {
        self.next_id += 1;
        let name = format!("people/c{}", self.next_id);
        person["resourceName"] = json!(name);
        self.store(&name, person);
        name
    }

    /// Stores a new state of a contact with a new etag.
    fn store(&mut self, name: &str, mut person: Value) {
        let version = self.bump();
        let etag = format!("%E{version}");
        person["etag"] = json!(etag);
        person["metadata"] =
            json!({"sources": [{"type": "CONTACT", "id": name.trim_start_matches("people/"), "etag": etag}]});
        if !person["memberships"].is_array() {
            person["memberships"] = json!([]);
        }
        self.persons.insert(name.to_string(), (person, version));
    }

    fn delete(&mut self, name: &str) {
        let version = self.bump();
        if let Some(entry) = self.persons.get_mut(name) {
            *entry =
                (json!({"resourceName": name, "etag": format!("%E{version}"), "metadata": {"deleted": true}}), version);
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str, reason: Option<&str>) -> Response {
    let mut body = json!({"error": {"code": status.as_u16(), "message": message, "status": code}});
    if let Some(reason) = reason {
        body["error"]["details"] = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "people.googleapis.com"}]);
    }
    (status, axum::Json(body)).into_response()
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (super::oauth::decode(k), super::oauth::decode(v)))
        .collect()
}

async fn handle(
    State((state, valid)): State<AppState>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !valid(token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        );
    }
    let mut p = state.lock().unwrap();
    if p.throttle > 0 {
        p.throttle -= 1;
        let mut response =
            error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", "Quota exceeded.", Some("RATE_LIMIT_EXCEEDED"));
        response.headers_mut().insert("retry-after", "0".parse().unwrap());
        return response;
    }
    let query = query_pairs(query.as_deref().unwrap_or(""));
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &format!("Invalid JSON payload: {e}"), None);
            }
        }
    };
    let path = uri.path();
    match (method, path) {
        (Method::GET, "/v1/people/me/connections") => {
            if param("personFields").is_none() {
                return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "personFields mask is required.", None);
            }
            let since = match param("syncToken") {
                Some(t) => match t.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()) {
                    Some(v) if v >= p.oldest_valid => Some(v),
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "FAILED_PRECONDITION",
                            "Sync token is expired. Clear local cache and retry call without the sync token.",
                            Some("EXPIRED_SYNC_TOKEN"),
                        );
                    }
                },
                None => None,
            };
            let page_size = param("pageSize")
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| (1..=1000).contains(n))
                .unwrap_or(100);
            let offset =
                param("pageToken").and_then(|t| t.strip_prefix('o').and_then(|o| o.parse::<usize>().ok())).unwrap_or(0);
            let all: Vec<&Value> = p
                .persons
                .values()
                .filter(|(person, version)| match since {
                    Some(v) => *version > v,
                    None => person["metadata"]["deleted"] != true,
                })
                .map(|(person, _)| person)
                .collect();
            let page: Vec<Value> = all.iter().skip(offset).take(page_size).map(|v| (*v).clone()).collect();
            let mut answer = json!({"connections": page, "totalItems": all.len()});
            if offset + page_size < all.len() {
                answer["nextPageToken"] = json!(format!("o{}", offset + page_size));
            } else if param("requestSyncToken").as_deref() == Some("true") {
                answer["nextSyncToken"] = json!(format!("v{}", p.version));
            }
            axum::Json(answer).into_response()
        }
        (Method::GET, "/v1/people:batchGet") => {
            let names: Vec<String> =
                query.iter().filter(|(k, _)| k == "resourceNames").map(|(_, v)| v.clone()).collect();
            if names.len() > 200 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Too many resource names (at most 200).",
                    None,
                );
            }
            let responses: Vec<Value> = names
                .iter()
                .map(|n| match p.persons.get(n).filter(|(person, _)| person["metadata"]["deleted"] != true) {
                    Some((person, _)) => json!({"requestedResourceName": n, "httpStatusCode": 200, "person": person}),
                    None => json!({"requestedResourceName": n, "httpStatusCode": 404, "status": {"code": 5, "message": "Not found"}}),
                })
                .collect();
            axum::Json(json!({"responses": responses})).into_response()
        }
        (Method::POST, "/v1/people:batchCreateContacts") => {
            let Some(contacts) = body["contacts"].as_array() else {
                return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "contacts is required.", None);
            };
            if contacts.len() > 200 || body["readMask"].as_str().is_none() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "At most 200 contacts, and a readMask, are required.",
                    None,
                );
            }
            p.writes += 1;
            let created: Vec<Value> = contacts
                .iter()
                .map(|c| {
                    let name = p.create(c["contactPerson"].clone());
                    json!({"httpStatusCode": 200, "person": p.persons[&name].0})
                })
                .collect();
            axum::Json(json!({"createdPeople": created})).into_response()
        }
        (Method::POST, "/v1/people:batchUpdateContacts") => {
            let (Some(contacts), Some(mask)) = (body["contacts"].as_object(), body["updateMask"].as_str()) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "contacts and updateMask are required.",
                    None,
                );
            };
            if contacts.len() > 200 {
                return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "At most 200 contacts.", None);
            }
            p.writes += 1;
            let mask: Vec<&str> = mask.split(',').collect();
            let mut results = serde_json::Map::new();
            for (name, update) in contacts {
                let Some((current, _)) = p.persons.get(name).filter(|(c, _)| c["metadata"]["deleted"] != true).cloned()
                else {
                    results.insert(
                        name.clone(),
                        json!({"httpStatusCode": 404, "status": {"code": 5, "message": "Not found"}}),
                    );
                    continue;
                };
                let source_etag = update["metadata"]["sources"][0]["etag"].as_str().or(update["etag"].as_str());
                if source_etag != current["etag"].as_str() {
                    results.insert(name.clone(), json!({"httpStatusCode": 400, "status": {"code": 9, "message": "failedPrecondition: the contact changed since it was read"}}));
                    continue;
                }
                let mut next = current.clone();
                for field in &mask {
                    next[*field] = update[*field].clone();
                }
                p.store(name, next);
                results.insert(name.clone(), json!({"httpStatusCode": 200, "person": p.persons[name].0}));
            }
            axum::Json(json!({"updateResult": results})).into_response()
        }
        (Method::DELETE, path) if path.starts_with("/v1/people/") && path.ends_with(":deleteContact") => {
            let name = path.trim_start_matches("/v1/").trim_end_matches(":deleteContact").to_string();
            if !p.persons.get(&name).is_some_and(|(c, _)| c["metadata"]["deleted"] != true) {
                return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Requested entity was not found.", None);
            }
            p.writes += 1;
            p.delete(&name);
            axum::Json(json!({})).into_response()
        }
        (Method::GET, "/v1/contactGroups") => {
            axum::Json(json!({"contactGroups": p.groups, "totalItems": p.groups.len()})).into_response()
        }
        (Method::POST, "/v1/contactGroups") => {
            let Some(name) = body["contactGroup"]["name"].as_str().map(String::from) else {
                return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "contactGroup.name is required.", None);
            };
            if p.groups.iter().any(|g| g["name"] == name.as_str()) {
                return error(StatusCode::CONFLICT, "ALREADY_EXISTS", "Contact group name already exists.", None);
            }
            let group = json!({"resourceName": format!("contactGroups/g{}", p.groups.len()), "name": name, "formattedName": name, "groupType": "USER_CONTACT_GROUP"});
            p.groups.push(group.clone());
            axum::Json(group).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no such method: {path}"), None),
    }
}

/// Resource names of the members of `group` among `contacts`.
pub fn members<'a>(contacts: &'a [Value], group: &str) -> Vec<&'a Value> {
    contacts
        .iter()
        .filter(|c| {
            c["memberships"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["contactGroupMembership"]["contactGroupResourceName"] == group)
        })
        .collect()
}
