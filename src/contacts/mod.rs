//! Contacts sync: a user's CRM contacts in two-way sync with one remote address book
//! (CardDAV, RFC 6352) or contact group (Google People API).
//!
//! - Here: configuration, the scheduler, and the per-field three-way merge of the mapped
//!   fields ([`ContactFields`], in `model::contact` with their canonical form and hash).
//! - [`vcard`]: fields <-> vCard (calcard), keeping a card's unmapped properties.
//! - [`carddav`]: the WebDAV/CardDAV client.
//! - [`engine`]: one sync run, generic over [`engine::Remote`].
//!
//! A side has changed only when the hash of its canonical fields differs from the last
//! synced copy's, so re-reading our own writes changes nothing, and a sync right after a
//! sync does nothing on either side.

pub mod carddav;
pub mod engine;
pub mod google;
pub mod vcard;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::model::contact::FIELDS;
pub use crate::model::contact::{ConflictPolicy, ContactFields, Direction, Field, e164};

use self::engine::{RemoteError, Report, SyncError};
use crate::secrets::MasterKey;
use crate::store::{ContactSyncConfig, Store};

/// Purpose under which a sync configuration's password or token is sealed.
pub const SECRET_PURPOSE: &str = "contacts-sync";
/// Longest HTTP exchange with a contacts provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may hold a user's sync before another may take it over.
const LEASE: Duration = Duration::from_secs(30 * 60);

/// A sync configuration as an operator gives it (CLI or API). No `Debug`: it holds the
/// password.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncInput {
    #[serde(default = "default_provider")]
    pub provider: String,
    /// CardDAV: the server. Google: empty (the People API), or another endpoint.
    #[serde(default)]
    pub url: String,
    /// CardDAV only (Google uses the user's mail account's OAuth grant).
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default = "default_address_book")]
    pub address_book: String,
    #[serde(default = "default_direction")]
    pub direction: String,
    #[serde(default = "default_conflict")]
    pub conflict: String,
    /// How often the daemon looks for changes (seconds, at least 60; default 60): one
    /// cheap request with the change token when nothing changed.
    #[serde(default = "default_interval")]
    pub interval_secs: i64,
    #[serde(default)]
    pub propagate_deletions: bool,
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_provider() -> String {
    "carddav".into()
}
fn default_address_book() -> String {
    "Contacts".into()
}
fn default_direction() -> String {
    "two-way".into()
}
fn default_conflict() -> String {
    "crm-wins".into()
}
fn default_interval() -> i64 {
    60
}
fn default_region() -> String {
    "US".into()
}

/// Checks `input`, seals the password and stores the configuration.
pub async fn configure(
    store: &Store,
    key: &MasterKey,
    user: &str,
    input: SyncInput,
) -> Result<ContactSyncConfig, crate::store::StoreError> {
    use crate::store::StoreError::Invalid;
    let direction: Direction = choice("direction (two-way, crm-to-remote, remote-to-crm)", &input.direction)?;
    let policy: ConflictPolicy = choice("conflict (crm-wins, remote-wins, origin)", &input.conflict)?;
    if !matches!(input.provider.as_str(), "carddav" | "google") {
        return Err(Invalid(format!("provider {:?} is not supported (carddav, google)", input.provider)));
    }
    // Google's URL may be left empty (the People API); every other one must be https.
    if !(input.provider == "google" && input.url.is_empty()) {
        check_remote_url(&input.url).map_err(|e| Invalid(format!("url: {e}")))?;
    }
    if input.provider == "carddav" && input.username.trim().is_empty() {
        return Err(Invalid("username: required for CardDAV".into()));
    }
    if input.interval_secs < 60 {
        return Err(Invalid("interval_secs: at least 60".into()));
    }
    if input.address_book.trim().is_empty() {
        return Err(Invalid("address_book: must not be empty".into()));
    }
    if input.region.parse::<phonenumber::country::Id>().is_err() {
        return Err(Invalid(format!("region: {:?} is not an ISO 3166 country code", input.region)));
    }
    let settings = crate::store::SyncSettings {
        url: input.url,
        username: input.username,
        address_book: input.address_book.trim().to_string(),
        propagate_deletions: input.propagate_deletions,
        default_region: input.region,
    };
    let sealed =
        key.seal(SECRET_PURPOSE, &crate::secrets::Secret::new(input.password)).map_err(|e| Invalid(e.to_string()))?;
    store
        .set_contact_sync_config(user, &input.provider, &settings, &sealed, direction, policy, input.interval_secs)
        .await
}

/// The address book's URL: https, since the credentials go there; http only to this
/// machine (tests, a local proxy).
fn check_remote_url(url: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if url.host_str().is_some_and(crate::net::is_loopback_host) => Ok(()),
        "http" => Err("must be https:// (the credentials are sent to it); http:// only on this machine".into()),
        _ => Err("must be https://".into()),
    }
}

/// One of a unit enum's serde names, or an error naming the choices.
fn choice<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, crate::store::StoreError> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| crate::store::StoreError::Invalid(format!("{what}: {value:?} is not one of the choices")))
}

/// Told `(stage, done, total)` as a sync goes (the CLI draws it).
pub type Progress<'a> = &'a mut (dyn FnMut(&str, u64, u64) + Send);

/// Runs `config`'s sync now and records the outcome (counts, or the error) in the store.
pub async fn sync_now(
    store: &Store,
    key: &Arc<MasterKey>,
    config: &ContactSyncConfig,
    progress: Progress<'_>,
) -> Result<Report, SyncError> {
    let outcome = sync_with_provider(store, key, config, progress).await;
    let (token, result, error) = match &outcome {
        Ok((report, token)) => (Some(token.as_str()), serde_json::to_value(report).unwrap_or_default(), String::new()),
        Err(e) => (None, config.last_result.clone(), e.to_string()),
    };
    store.finish_contact_sync(config.user_id, token, &result, &error).await?;
    match outcome {
        Ok((report, _)) => {
            tracing::info!(user = %config.user, report = %serde_json::to_string(&report).unwrap_or_default(), "contacts synced");
            Ok(report)
        }
        Err(e) => {
            tracing::warn!(user = %config.user, error = %e, "contacts sync failed");
            Err(e)
        }
    }
}

/// Google's People API; tests point a configuration's `url` at a local fake.
pub const GOOGLE_API: &str = "https://people.googleapis.com";

async fn sync_with_provider(
    store: &Store,
    key: &Arc<MasterKey>,
    config: &ContactSyncConfig,
    progress: Progress<'_>,
) -> Result<(Report, String), SyncError> {
    let failed = |message: String, transient: bool| SyncError::Remote(RemoteError::Failed { message, transient });
    let s = &config.settings;
    match config.provider.as_str() {
        "carddav" => {
            let secret = key
                .open(SECRET_PURPOSE, &config.sealed_secret)
                .map_err(|e| failed(format!("stored credentials: {e}"), false))?;
            let dav = carddav::CardDav::connect(&s.url, &s.username, secret.expose(), &s.address_book, HTTP_TIMEOUT)
                .await
                .map_err(RemoteError::from)?;
            let mut book = carddav::CardDavBook { dav, name: s.address_book.clone(), region: s.default_region.clone() };
            engine::run(store, &mut book, config, progress).await
        }
        "google" => {
            // The user's Google mail account's OAuth grant (it needs the contacts scope).
            let account = store.account_of_user(config.user_id).await?;
            if account.auth != crate::store::AuthKind::Xoauth2 {
                return Err(failed(
                    format!("{} signs in with a password; Google contacts need its OAuth grant", account.email),
                    false,
                ));
            }
            let tokens = crate::oauth::TokenSource::new(store.clone(), key.clone(), account.id)
                .await
                .map_err(|e| failed(e.to_string(), e.is_transient()))?;
            let base = if s.url.is_empty() { GOOGLE_API } else { s.url.as_str() };
            let mut people = google::GooglePeople::connect(base, tokens, &s.address_book, HTTP_TIMEOUT).await?;
            engine::run(store, &mut people, config, progress).await
        }
        other => Err(failed(format!("unknown provider {other}"), false)),
    }
}

/// The daemon's contacts-sync task: runs each configuration when its interval has passed
/// or a run was requested, one user at a time, under a lease so that daemons sharing a
/// database never run one user's sync twice at once.
pub async fn run_scheduler(store: Store, key: Arc<MasterKey>, owner: String, poll: Duration, stop: CancellationToken) {
    loop {
        match store.contact_sync_configs(None).await {
            Ok(configs) => {
                for config in configs {
                    if stop.is_cancelled() {
                        return;
                    }
                    match store.claim_contact_sync(config.user_id, &owner, LEASE.as_millis() as i64, false).await {
                        Ok(true) => {
                            let _ = sync_now(&store, &key, &config, &mut |_, _, _| {}).await;
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(user = %config.user, error = %e, "contacts sync: cannot claim"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "contacts sync: cannot read configurations"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The result of merging the two sides of a linked contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub fields: ContactFields,
    /// Fields changed on both sides (to different values), settled by the policy.
    pub conflicts: Vec<Field>,
}

/// Three-way merge, field by field, against `base` (the last synced copy; `None` when the
/// two sides were just linked): a field changed on one side takes that side's value; one
/// changed on both to different values takes the policy's side.
pub fn merge(
    base: Option<&ContactFields>,
    crm: &ContactFields,
    remote: &ContactFields,
    policy: ConflictPolicy,
) -> Merged {
    let mut fields = crm.clone();
    let mut conflicts = Vec::new();
    for field in FIELDS {
        if crm.field_eq(remote, field) {
            continue;
        }
        let crm_changed = base.is_none_or(|b| !b.field_eq(crm, field));
        let remote_changed = base.is_none_or(|b| !b.field_eq(remote, field));
        let take_remote = match (crm_changed, remote_changed) {
            (false, true) => true,
            (true, false) => false,
            // Unchanged on both sides yet different cannot happen; both changed: policy.
            _ => {
                conflicts.push(field);
                policy != ConflictPolicy::CrmWins
            }
        };
        if take_remote {
            fields.take_field(remote, field);
        }
    }
    Merged { fields, conflicts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_over_https_or_to_this_machine() {
        assert!(check_remote_url("https://dav.example.com/").is_ok());
        assert!(check_remote_url("http://127.0.0.1:5232/").is_ok());
        assert!(check_remote_url("http://[::1]:5232/").is_ok());
        assert!(check_remote_url("http://localhost/").is_ok());
        assert!(check_remote_url("http://dav.example.com/").unwrap_err().contains("https"));
        assert!(check_remote_url("ftp://dav.example.com/").is_err());
        assert!(check_remote_url("not a url").is_err());
    }

    fn fields(name: &str, emails: &[&str], phones: &[&str]) -> ContactFields {
        ContactFields {
            name: name.into(),
            emails: emails.iter().map(|s| s.to_string()).collect(),
            phones: phones.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
        .canonical("US")
    }

    #[test]
    fn canonical_form_ignores_case_order_and_phone_formatting() {
        let a = fields(" Ann ", &["B@x.com", "a@x.com"], &["(415) 555-0132", "+44 20 7946 0958"]);
        let b = fields("Ann", &["a@x.com", "b@x.com", "A@X.com"], &["+1 415 555 0132", "+442079460958"]);
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.phones, ["+14155550132", "+442079460958"]);
        assert_ne!(a.hash(), fields("Ann", &["a@x.com"], &[]).hash());
    }

    #[test]
    fn merge_takes_each_sides_changes_and_the_policy_on_conflicts() {
        let base = fields("Ann", &["a@x.com"], &["+14155550132"]);
        let crm = ContactFields { name: "Ann Lee".into(), ..base.clone() };
        let remote = ContactFields { phones: vec!["+14155550199".into()], ..base.clone() };
        let merged = merge(Some(&base), &crm, &remote, ConflictPolicy::CrmWins);
        assert_eq!(merged.fields.name, "Ann Lee");
        assert_eq!(merged.fields.phones, ["+14155550199"]);
        assert!(merged.conflicts.is_empty());

        let remote = ContactFields { name: "Ann Smith".into(), ..remote };
        let crm_wins = merge(Some(&base), &crm, &remote, ConflictPolicy::CrmWins);
        assert_eq!((crm_wins.fields.name.as_str(), crm_wins.conflicts.as_slice()), ("Ann Lee", &[Field::Name][..]));
        let remote_wins = merge(Some(&base), &crm, &remote, ConflictPolicy::RemoteWins);
        assert_eq!(remote_wins.fields.name, "Ann Smith");
        assert_eq!(remote_wins.fields.phones, ["+14155550199"], "non-conflicting fields merge either way");
    }
}
