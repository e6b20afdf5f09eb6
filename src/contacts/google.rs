//! The Google People API (https://developers.google.com/people/api/rest/v1) as a
//! contacts-sync remote: `people.connections.list` with sync tokens (an expired token,
//! `EXPIRED_SYNC_TOKEN`, means a full sync), one contact group (created if missing; only
//! its members are synced), `people:batchCreateContacts` / `people:batchUpdateContacts`
//! (200 per call, updates guarded by the contact's ETag), `deleteContact`, and backoff on
//! 429 / 503. Writes for one user are sequential. Our uid goes into the contact's
//! `clientData` before it is created, so a creation a crash left unconfirmed is found
//! again instead of made twice.
//!
//! Authorization: the user's Google mail account's OAuth grant (which must include the
//! `https://www.googleapis.com/auth/contacts` scope), through [`crate::oauth::TokenSource`].

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::ContactFields;
use super::engine::{NewContact, Remote, RemoteCard, RemoteDelta, RemoteError};
use crate::oauth::TokenSource;

const PERSON_FIELDS: &str =
    "names,emailAddresses,phoneNumbers,organizations,imClients,addresses,memberships,clientData,metadata";
const UPDATE_FIELDS: &str = "names,emailAddresses,phoneNumbers,organizations,imClients,addresses";
/// The `clientData` key holding our uid.
const UID_KEY: &str = "mailsync-uid";
/// Attempts of one call that meets 429 or 503 before the run gives up (and retries later).
const ATTEMPTS: u32 = 6;

pub struct GooglePeople {
    http: reqwest::Client,
    /// `https://people.googleapis.com` (a local fake in tests).
    base: String,
    tokens: TokenSource,
    group: String,
    group_name: String,
    /// Contacts read by the last listing, so fetching them costs no second call.
    cache: HashMap<String, Value>,
}

impl GooglePeople {
    pub async fn connect(
        base: &str,
        tokens: TokenSource,
        group_name: &str,
        timeout: Duration,
    ) -> Result<GooglePeople, RemoteError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| RemoteError::Failed { message: format!("HTTP client: {e}"), transient: false })?;
        let mut people = GooglePeople {
            http,
            base: base.trim_end_matches('/').to_string(),
            tokens,
            group: String::new(),
            group_name: group_name.into(),
            cache: HashMap::new(),
        };
        people.group = people.find_or_create_group().await?;
        Ok(people)
    }

    async fn find_or_create_group(&self) -> Result<String, RemoteError> {
        let mut page = String::new();
        loop {
            let mut query = vec![("pageSize", "1000".to_string())];
            if !page.is_empty() {
                query.push(("pageToken", page.clone()));
            }
            let answer = self.call(Method::GET, "/v1/contactGroups", &query, None).await?;
            for group in answer["contactGroups"].as_array().into_iter().flatten() {
                if group["name"] == self.group_name.as_str() || group["formattedName"] == self.group_name.as_str() {
                    return Ok(group["resourceName"].as_str().unwrap_or_default().to_string());
                }
            }
            match answer["nextPageToken"].as_str() {
                Some(next) if !next.is_empty() => page = next.to_string(),
                _ => break,
            }
        }
        let created = self
            .call(Method::POST, "/v1/contactGroups", &[], Some(json!({"contactGroup": {"name": self.group_name}})))
            .await?;
        created["resourceName"].as_str().map(String::from).ok_or_else(|| RemoteError::Failed {
            message: "creating the contact group returned no resourceName".into(),
            transient: false,
        })
    }

    /// One API call with a fresh access token (refreshed once if refused) and backoff on
    /// 429 / 503 (Retry-After honored).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, RemoteError> {
        self.call_accepting(method, path, query, body, None).await
    }

    /// [`Self::call`], with `also_ok` (such as 404 for a delete) answered as success.
    async fn call_accepting(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        also_ok: Option<StatusCode>,
    ) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self
                .tokens
                .access_token()
                .await
                .map_err(|e| RemoteError::Failed { message: e.to_string(), transient: e.is_transient() })?;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(token.expose()).query(query);
            if let Some(body) = &body {
                request = request.header("Content-Type", "application/json").body(body.to_string());
            }
            let response = request
                .send()
                .await
                .map_err(|e| RemoteError::Failed { message: format!("{url}: {e}"), transient: true })?;
            let status = response.status();
            let retry_after =
                response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            let text = response
                .text()
                .await
                .map_err(|e| RemoteError::Failed { message: format!("{url}: {e}"), transient: true })?;
            if also_ok == Some(status) {
                return Ok(Value::Null);
            }
            if status.is_success() {
                return if text.is_empty() {
                    Ok(Value::Null)
                } else {
                    serde_json::from_str(&text).map_err(|e| protocol(&url, e))
                };
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                self.tokens.invalidate().await;
                refreshed = true;
                continue;
            }
            if (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
                && attempt < ATTEMPTS
            {
                let backoff = crate::retry::delay(Duration::from_millis(500), Duration::from_secs(60), attempt);
                let wait = retry_after.map(Duration::from_secs).unwrap_or(backoff);
                tracing::info!(
                    url,
                    status = status.as_u16(),
                    wait_ms = wait.as_millis() as u64,
                    "Google People API: backing off"
                );
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                continue;
            }
            if text.contains("EXPIRED_SYNC_TOKEN") {
                return Err(RemoteError::TokenRefused);
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(String::from))
                .unwrap_or(text);
            return Err(RemoteError::Failed {
                message: format!("{method} {url}: {status}: {message}"),
                transient: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
            });
        }
    }

    fn card(&self, person: &Value) -> RemoteCard<Value> {
        RemoteCard {
            id: person["resourceName"].as_str().unwrap_or_default().to_string(),
            etag: person["etag"].as_str().unwrap_or_default().to_string(),
            uid: person["clientData"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["key"] == UID_KEY)
                .and_then(|d| d["value"].as_str())
                .unwrap_or_default()
                .to_string(),
            fields: fields_of(person),
            raw: person.clone(),
        }
    }

    fn in_group(&self, person: &Value) -> bool {
        person["memberships"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["contactGroupMembership"]["contactGroupResourceName"] == self.group.as_str())
    }
}

impl Remote for GooglePeople {
    type Raw = Value;

    async fn changes(&mut self, token: &str) -> Result<RemoteDelta, RemoteError> {
        let mut delta = RemoteDelta { full: token.is_empty(), ..RemoteDelta::default() };
        self.cache.clear();
        let mut page = String::new();
        loop {
            let mut query = vec![
                ("personFields", PERSON_FIELDS.to_string()),
                ("pageSize", "1000".into()),
                ("requestSyncToken", "true".into()),
            ];
            if !token.is_empty() {
                query.push(("syncToken", token.to_string()));
            }
            if !page.is_empty() {
                query.push(("pageToken", page.clone()));
            }
            let answer = self.call(Method::GET, "/v1/people/me/connections", &query, None).await?;
            for person in answer["connections"].as_array().into_iter().flatten() {
                let id = person["resourceName"].as_str().unwrap_or_default().to_string();
                if person["metadata"]["deleted"] == true {
                    delta.removed.push(id);
                    continue;
                }
                // Moved to another group (or listed while never in ours): not a deletion.
                if !self.in_group(person) {
                    delta.left.push(id);
                    continue;
                }
                delta.changed.push((id.clone(), person["etag"].as_str().unwrap_or_default().to_string()));
                self.cache.insert(id, person.clone());
            }
            match answer["nextPageToken"].as_str() {
                Some(next) if !next.is_empty() => page = next.to_string(),
                _ => {
                    delta.token = answer["nextSyncToken"].as_str().unwrap_or_default().to_string();
                    return Ok(delta);
                }
            }
        }
    }

    async fn fetch(&mut self, ids: &[String]) -> Result<Vec<RemoteCard<Value>>, RemoteError> {
        let mut cards = Vec::with_capacity(ids.len());
        let missing: Vec<&String> = ids.iter().filter(|id| !self.cache.contains_key(*id)).collect();
        for batch in missing.chunks(200) {
            let mut query: Vec<(&str, String)> = vec![("personFields", PERSON_FIELDS.to_string())];
            query.extend(batch.iter().map(|id| ("resourceNames", id.to_string())));
            let answer = self.call(Method::GET, "/v1/people:batchGet", &query, None).await?;
            for response in answer["responses"].as_array().into_iter().flatten() {
                if let Some(id) = response["person"]["resourceName"].as_str() {
                    self.cache.insert(id.to_string(), response["person"].clone());
                }
            }
        }
        for id in ids {
            if let Some(person) = self.cache.get(id) {
                cards.push(self.card(person));
            }
        }
        Ok(cards)
    }

    fn planned_id(&self, uid: &str) -> String {
        // Google names the contact; until it has, the item is known by our uid.
        format!("pending:{uid}")
    }

    async fn create_batch(&mut self, new: &[NewContact]) -> Vec<Result<(String, String), RemoteError>> {
        let contacts: Vec<Value> = new
            .iter()
            .map(|n| {
                let mut person = person_of(&n.fields);
                person["memberships"] = json!([{"contactGroupMembership": {"contactGroupResourceName": self.group}}]);
                person["clientData"] = json!([{"key": UID_KEY, "value": n.uid}]);
                json!({"contactPerson": person})
            })
            .collect();
        let body = json!({"contacts": contacts, "readMask": PERSON_FIELDS});
        match self.call(Method::POST, "/v1/people:batchCreateContacts", &[], Some(body)).await {
            Ok(answer) => {
                let created: Vec<&Value> =
                    answer["createdPeople"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
                new.iter()
                    .enumerate()
                    .map(|(i, n)| match created.get(i) {
                        Some(c) if c["httpStatusCode"].as_u64().is_none_or(|s| s == 200) => {
                            let person = &c["person"];
                            Ok((
                                person["resourceName"].as_str().unwrap_or_default().to_string(),
                                person["etag"].as_str().unwrap_or_default().to_string(),
                            ))
                        }
                        Some(c) => Err(RemoteError::Failed {
                            message: format!("creating {}: status {}", n.uid, c["httpStatusCode"]),
                            transient: false,
                        }),
                        None => Err(RemoteError::Failed {
                            message: format!("creating {}: no result", n.uid),
                            transient: true,
                        }),
                    })
                    .collect()
            }
            Err(e) => new.iter().map(|_| Err(same_error(&e))).collect(),
        }
    }

    async fn update_batch(
        &mut self,
        updates: &[(RemoteCard<Value>, ContactFields)],
    ) -> Vec<Result<String, RemoteError>> {
        let mut contacts = serde_json::Map::new();
        for (card, fields) in updates {
            let mut person = person_of(fields);
            person["etag"] = json!(card.etag);
            person["metadata"] = json!({"sources": card.raw["metadata"]["sources"].clone()});
            contacts.insert(card.id.clone(), person);
        }
        let body = json!({"contacts": contacts, "updateMask": UPDATE_FIELDS, "readMask": PERSON_FIELDS});
        match self.call(Method::POST, "/v1/people:batchUpdateContacts", &[], Some(body)).await {
            Ok(answer) => updates
                .iter()
                .map(|(card, _)| {
                    let result = &answer["updateResult"][&card.id];
                    match result["httpStatusCode"].as_u64() {
                        Some(200) | None if result["person"].is_object() => {
                            Ok(result["person"]["etag"].as_str().unwrap_or_default().to_string())
                        }
                        // The ETag no longer matches: changed remotely since it was read.
                        Some(400) | Some(409) | Some(412) => Err(RemoteError::Conflict(card.id.clone())),
                        other => Err(RemoteError::Failed {
                            message: format!("updating {}: status {other:?}", card.id),
                            transient: false,
                        }),
                    }
                })
                .collect(),
            Err(e) => updates.iter().map(|_| Err(same_error(&e))).collect(),
        }
    }

    async fn delete(&mut self, id: &str, _etag: &str) -> Result<(), RemoteError> {
        // Already gone is as good as deleted.
        self.call_accepting(Method::DELETE, &format!("/v1/{id}:deleteContact"), &[], None, Some(StatusCode::NOT_FOUND))
            .await?;
        Ok(())
    }

    fn name(&self) -> String {
        "Google".into()
    }
}

fn protocol(url: &str, e: serde_json::Error) -> RemoteError {
    RemoteError::Failed { message: format!("{url}: unreadable answer: {e}"), transient: false }
}

/// A copy of `e` for every item of a batch that failed as a whole.
fn same_error(e: &RemoteError) -> RemoteError {
    match e {
        RemoteError::TokenRefused => RemoteError::TokenRefused,
        RemoteError::Conflict(id) => RemoteError::Conflict(id.clone()),
        RemoteError::Failed { message, transient } => {
            RemoteError::Failed { message: message.clone(), transient: *transient }
        }
    }
}

/// The mapped fields of a Person resource.
fn fields_of(person: &Value) -> ContactFields {
    let list = |key: &str, field: &str| -> Vec<String> {
        person[key].as_array().into_iter().flatten().filter_map(|v| v[field].as_str()).map(String::from).collect()
    };
    let name = person["names"]
        .as_array()
        .and_then(|names| names.first())
        .map(|n| {
            n["displayName"].as_str().or(n["unstructuredName"].as_str()).map(String::from).unwrap_or_else(|| {
                format!("{} {}", n["givenName"].as_str().unwrap_or(""), n["familyName"].as_str().unwrap_or(""))
                    .trim()
                    .to_string()
            })
        })
        .unwrap_or_default();
    let ims = person["imClients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|im| {
            let user = im["username"].as_str()?;
            let protocol = im["protocol"].as_str().unwrap_or("im").to_lowercase();
            Some(format!("{protocol}:{user}"))
        })
        .collect();
    let address = person["addresses"]
        .as_array()
        .and_then(|a| a.first())
        .map(|a| {
            ["streetAddress", "city", "region", "postalCode", "country"]
                .iter()
                .map(|k| a[*k].as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default();
    ContactFields {
        name,
        organization: person["organizations"]
            .as_array()
            .and_then(|o| o.first())
            .and_then(|o| o["name"].as_str())
            .unwrap_or("")
            .to_string(),
        emails: list("emailAddresses", "value"),
        phones: person["phoneNumbers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["canonicalForm"].as_str().or(p["value"].as_str()))
            .map(String::from)
            .collect(),
        ims,
        address,
    }
}

/// A Person resource with `fields` (mapped fields only).
fn person_of(fields: &ContactFields) -> Value {
    let (given, family) = fields.given_and_family();
    let address = if fields.address.is_empty() {
        json!([])
    } else {
        let parts: Vec<&str> = fields.address.split(';').collect();
        let part = |i: usize| parts.get(i).copied().unwrap_or("");
        json!([{"streetAddress": part(0), "city": part(1), "region": part(2), "postalCode": part(3), "country": part(4)}])
    };
    json!({
        "names": [{"unstructuredName": fields.name, "givenName": given, "familyName": family}],
        "organizations": if fields.organization.is_empty() { json!([]) } else { json!([{"name": fields.organization}]) },
        "emailAddresses": fields.emails.iter().map(|e| json!({"value": e})).collect::<Vec<_>>(),
        "phoneNumbers": fields.phones.iter().map(|p| json!({"value": p})).collect::<Vec<_>>(),
        "imClients": fields.ims.iter().map(|im| {
            let (protocol, user) = im.split_once(':').unwrap_or(("im", im));
            json!({"protocol": protocol, "username": user})
        }).collect::<Vec<_>>(),
        "addresses": address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_round_trip_keeps_the_mapped_fields() {
        let fields = ContactFields {
            name: "Ann Lee".into(),
            organization: "Acme".into(),
            emails: vec!["ann@acme.example".into()],
            phones: vec!["+14155550132".into()],
            ims: vec!["xmpp:ann@chat.example".into()],
            address: "1 Main St;Springfield;IL;62701;USA".into(),
        };
        assert_eq!(fields_of(&person_of(&fields)), fields);
    }
}
