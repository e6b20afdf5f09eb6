//! Contacts sync state: each user's sync configuration and the remote contacts it knows
//! (`contact_sync_items`), and the CRM side of a sync: the user's contacts as mapped
//! fields, and the writes a sync makes to them (which queue retroactive linking like any
//! other change of addresses).

use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use super::crm::{PersonKind, address_keys, address_rows, insert_addresses, queue_relink};
use super::drop::user_id;
use super::orgs::{Org, lock_org};
use super::sql::{Value, parse_json};
use super::{Result, Store, StoreError, now_ms};
use crate::model::contact::{ConflictPolicy, ContactFields, Direction};

/// A user's sync configuration as stored (the secret still sealed).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactSyncConfig {
    pub user_id: i64,
    pub user: String,
    pub org_id: i64,
    /// `carddav` or `google`.
    pub provider: String,
    pub settings: SyncSettings,
    #[serde(skip)]
    pub sealed_secret: Vec<u8>,
    pub direction: Direction,
    pub conflict_policy: ConflictPolicy,
    pub interval_secs: i64,
    #[serde(skip)]
    pub sync_token: String,
    pub last_sync_at: i64,
    /// The last run's counts (empty before the first run).
    #[schema(value_type = Object)]
    pub last_result: serde_json::Value,
    pub last_error: String,
}

/// Provider settings (the `settings` JSON column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// CardDAV: the server (root, principal or address-book home URL).
    pub url: String,
    pub username: String,
    /// CardDAV: address book (display name or path segment), created if missing;
    /// Google: contact group, created if missing.
    pub address_book: String,
    /// Deleting a synced contact in the CRM deletes it remotely (off: it stays there).
    pub propagate_deletions: bool,
    /// Region for phone numbers without a country code (ISO 3166, e.g. `US`).
    pub default_region: String,
}

/// What the store knows of one remote contact.
#[derive(Debug, Clone)]
pub struct SyncItem {
    pub id: i64,
    pub contact_id: i64,
    pub remote_id: String,
    pub remote_uid: String,
    pub etag: String,
    pub state: String,
    pub synced_copy: Option<ContactFields>,
    pub synced_hash: String,
}

/// A card the sync flagged for a person (several matching contacts, a duplicate UID, a
/// colleague's contact, ...), and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FlaggedCard {
    /// The card's id at the provider (CardDAV href, Google resource name).
    pub card: String,
    pub uid: String,
    pub reason: String,
    pub flagged_at: i64,
}

/// What a person decided about a flagged card; the next sync run applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The card is this CRM contact.
    Link(i64),
    /// The card is a new contact.
    Import,
    /// The card stays out of the CRM.
    Ignore,
}

/// Item states of a resolved flagged card, waiting for the next run.
pub const LINK_REQUESTED: &str = "link_requested";
pub const IMPORT_REQUESTED: &str = "import_requested";
pub const IGNORED: &str = "ignored";

/// A CRM contact as the sync sees it.
#[derive(Debug, Clone)]
pub struct CrmContact {
    pub id: i64,
    pub owner_user_id: i64,
    /// Where the contact came from: empty when made in the CRM, `from BOOK` when a sync
    /// imported it.
    pub source: String,
    /// Raw (not canonical) fields.
    pub fields: ContactFields,
}

impl Store {
    /// Creates or replaces a user's sync configuration; a changed provider, server or
    /// address book starts afresh (its items and token go: the first sync links by
    /// address again, so nothing is duplicated; deletions are remembered).
    #[allow(clippy::too_many_arguments)]
    pub async fn set_contact_sync_config(
        &self,
        user_email: &str,
        provider: &str,
        settings: &SyncSettings,
        sealed_secret: &[u8],
        direction: Direction,
        policy: ConflictPolicy,
        interval_secs: i64,
    ) -> Result<ContactSyncConfig> {
        let settings_json = serde_json::to_string(settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        let user_id = user_id(&mut tx, user_email).await?;
        let previous: Option<(String, String, String)> =
            sqlx::query("SELECT provider, settings, direction FROM contact_sync_configs WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .transpose()?;
        let same_remote = previous.as_ref().is_some_and(|(p, s, _)| {
            p == provider
                && serde_json::from_str::<SyncSettings>(s).is_ok_and(|old| {
                    old.url == settings.url
                        && old.address_book == settings.address_book
                        && old.username == settings.username
                })
        });
        if !same_remote {
            forget_live_items(&mut tx, user_id).await?;
        }
        // A new direction lists everything once: cards a one-way run passed over (it
        // kept no trace of them) are seen again.
        let keep_token = same_remote && previous.as_ref().is_some_and(|(_, _, d)| *d == enum_str(&direction));
        let now = now_ms();
        sqlx::query(
            "INSERT INTO contact_sync_configs (user_id, provider, settings, secret, direction, conflict_policy, interval_secs, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (user_id) DO UPDATE SET \
             provider = excluded.provider, settings = excluded.settings, secret = excluded.secret, direction = excluded.direction, \
             conflict_policy = excluded.conflict_policy, interval_secs = excluded.interval_secs, updated_at = excluded.updated_at, \
             sync_token = CASE WHEN $9 = 1 THEN contact_sync_configs.sync_token ELSE '' END",
        )
        .bind(user_id)
        .bind(provider)
        .bind(&settings_json)
        .bind(sealed_secret)
        .bind(enum_str(&direction))
        .bind(enum_str(&policy))
        .bind(interval_secs)
        .bind(now)
        .bind(i64::from(keep_token))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.contact_sync_config(user_email).await
    }

    pub async fn contact_sync_config(&self, user_email: &str) -> Result<ContactSyncConfig> {
        self.contact_sync_configs(Some(user_email))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("no contacts sync configured for {user_email}")))
    }

    /// Every configuration, or `user_email`'s.
    pub async fn contact_sync_configs(&self, user_email: Option<&str>) -> Result<Vec<ContactSyncConfig>> {
        let rows = sqlx::query(
            "SELECT c.user_id, u.email, u.org_id, c.provider, c.settings, c.secret, c.direction, c.conflict_policy, \
             c.interval_secs, c.sync_token, c.last_sync_at, c.last_result, c.last_error FROM contact_sync_configs c \
             JOIN users u ON u.id = c.user_id WHERE ($1 = '' OR u.email = $1) ORDER BY u.email",
        )
        .bind(user_email.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let parse_err = |what: &str, e: serde_json::Error| StoreError::Invalid(format!("stored {what}: {e}"));
                Ok(ContactSyncConfig {
                    user_id: r.try_get(0)?,
                    user: r.try_get(1)?,
                    org_id: r.try_get(2)?,
                    provider: r.try_get(3)?,
                    settings: serde_json::from_str(&r.try_get::<String, _>(4)?)
                        .map_err(|e| parse_err("settings", e))?,
                    sealed_secret: r.try_get(5)?,
                    direction: serde_json::from_value(serde_json::Value::String(r.try_get(6)?))
                        .map_err(|e| parse_err("direction", e))?,
                    conflict_policy: serde_json::from_value(serde_json::Value::String(r.try_get(7)?))
                        .map_err(|e| parse_err("conflict policy", e))?,
                    interval_secs: r.try_get(8)?,
                    sync_token: r.try_get(9)?,
                    last_sync_at: r.try_get(10)?,
                    last_result: parse_json(&r.try_get::<String, _>(11)?, "contact_sync_configs.last_result")?,
                    last_error: r.try_get(12)?,
                })
            })
            .collect()
    }

    /// Removes a user's configuration and what the sync knew, deletions excepted
    /// (contacts stay).
    pub async fn remove_contact_sync_config(&self, user_email: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let user_id = user_id(&mut tx, user_email).await?;
        forget_live_items(&mut tx, user_id).await?;
        let removed =
            sqlx::query("DELETE FROM contact_sync_configs WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no contacts sync configured for {user_email}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes the right to run `user_id`'s sync for `lease_ms` if it is due (interval
    /// passed, or a run was requested) and no other daemon holds it.
    pub async fn claim_contact_sync(&self, user_id: i64, owner: &str, lease_ms: i64, force: bool) -> Result<bool> {
        let now = now_ms();
        let claimed = sqlx::query(
            "UPDATE contact_sync_configs SET lease_owner = $1, lease_until = $2, run_requested = 0 WHERE user_id = $3 \
             AND (lease_until < $4 OR lease_owner = $1) \
             AND ($5 = 1 OR run_requested = 1 OR last_sync_at + interval_secs * 1000 <= $4)",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(user_id)
        .bind(now)
        .bind(i64::from(force))
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Asks the daemon to run `user_email`'s sync now.
    pub async fn request_contact_sync(&self, user_email: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE contact_sync_configs SET run_requested = 1 WHERE user_id = (SELECT id FROM users WHERE email = $1)",
        )
        .bind(user_email)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no contacts sync configured for {user_email}")));
        }
        Ok(())
    }

    /// Records the end of a run: the new token (kept when `None`), the counts, the error.
    pub async fn finish_contact_sync(
        &self,
        user_id: i64,
        token: Option<&str>,
        result: &serde_json::Value,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE contact_sync_configs SET sync_token = COALESCE($1, sync_token), last_sync_at = $2, last_result = $3, \
             last_error = $4, lease_owner = '', lease_until = 0 WHERE user_id = $5",
        )
        .bind(token)
        .bind(now_ms())
        .bind(result.to_string())
        .bind(error)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn sync_items(&self, user_id: i64) -> Result<Vec<SyncItem>> {
        let rows = sqlx::query(
            "SELECT id, contact_id, remote_id, remote_uid, etag, state, synced_copy, synced_hash FROM contact_sync_items \
             WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SyncItem {
                    id: r.try_get(0)?,
                    contact_id: r.try_get(1)?,
                    remote_id: r.try_get(2)?,
                    remote_uid: r.try_get(3)?,
                    etag: r.try_get(4)?,
                    state: r.try_get(5)?,
                    synced_copy: serde_json::from_str(&r.try_get::<String, _>(6)?).ok(),
                    synced_hash: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// The cards flagged for a person in `user_id`'s sync.
    pub async fn flagged_cards(&self, user_id: i64) -> Result<Vec<FlaggedCard>> {
        let rows = sqlx::query(
            "SELECT remote_id, remote_uid, note, updated_at FROM contact_sync_items \
             WHERE user_id = $1 AND state = 'flagged' ORDER BY remote_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FlaggedCard {
                    card: r.try_get(0)?,
                    uid: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    flagged_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Records a person's decision about a flagged card, for the next run. A contact can
    /// be linked only if it is in the user's organization, owned by the user or by
    /// nobody, and not synced with another card.
    pub async fn resolve_flagged_card(&self, user_id: i64, card: &str, resolution: Resolution) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM contact_sync_items WHERE user_id = $1 AND remote_id = $2")
                .bind(user_id)
                .bind(card)
                .fetch_optional(&mut *tx)
                .await?;
        if state.as_deref() != Some("flagged") {
            return Err(StoreError::NotFound(format!("no flagged card {card}")));
        }
        let (state, contact_id, note) = match resolution {
            Resolution::Link(contact_id) => {
                let owner: Option<i64> = sqlx::query_scalar(
                    "SELECT COALESCE(c.owner_user_id, 0) FROM contacts c JOIN users u ON u.org_id = c.org_id \
                     WHERE c.id = $1 AND u.id = $2",
                )
                .bind(contact_id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
                match owner {
                    None => return Err(StoreError::NotFound(format!("no contact with id {contact_id}"))),
                    Some(owner) if owner != 0 && owner != user_id => {
                        return Err(StoreError::Conflict(format!("contact {contact_id} belongs to another user")));
                    }
                    Some(_) => {}
                }
                let synced: Option<String> = sqlx::query_scalar(
                    "SELECT remote_id FROM contact_sync_items WHERE user_id = $1 AND contact_id = $2 \
                     AND state IN ('synced', 'creating', 'left', 'link_requested')",
                )
                .bind(user_id)
                .bind(contact_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(other) = synced {
                    return Err(StoreError::Conflict(format!("contact {contact_id} is synced with card {other}")));
                }
                (LINK_REQUESTED, contact_id, "to be linked by the next run")
            }
            Resolution::Import => (IMPORT_REQUESTED, 0, "to be imported by the next run"),
            Resolution::Ignore => (IGNORED, 0, "ignored by a person"),
        };
        // An empty ETag makes the next run fetch the card whatever changed.
        sqlx::query(
            "UPDATE contact_sync_items SET state = $1, contact_id = $2, note = $3, etag = '', updated_at = $4 \
             WHERE user_id = $5 AND remote_id = $6",
        )
        .bind(state)
        .bind(contact_id)
        .bind(note)
        .bind(now_ms())
        .bind(user_id)
        .bind(card)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates or updates the item for `remote_id`.
    #[allow(clippy::too_many_arguments)]
    pub async fn save_sync_item(
        &self,
        user_id: i64,
        remote_id: &str,
        remote_uid: &str,
        contact_id: i64,
        etag: &str,
        state: &str,
        synced: Option<&ContactFields>,
        note: &str,
    ) -> Result<()> {
        let (copy, hash) = match synced {
            Some(fields) => {
                (serde_json::to_string(fields).map_err(|e| StoreError::Invalid(e.to_string()))?, fields.hash())
            }
            None => ("{}".to_string(), String::new()),
        };
        sqlx::query(
            "INSERT INTO contact_sync_items (user_id, remote_id, remote_uid, contact_id, etag, state, synced_copy, synced_hash, \
             note, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (user_id, remote_id) DO UPDATE SET \
             remote_uid = excluded.remote_uid, contact_id = excluded.contact_id, etag = excluded.etag, state = excluded.state, \
             synced_copy = excluded.synced_copy, synced_hash = excluded.synced_hash, note = excluded.note, \
             updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(remote_id)
        .bind(remote_uid)
        .bind(contact_id)
        .bind(etag)
        .bind(state)
        .bind(copy)
        .bind(hash)
        .bind(note)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_sync_item(&self, user_id: i64, remote_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM contact_sync_items WHERE user_id = $1 AND remote_id = $2")
            .bind(user_id)
            .bind(remote_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The contacts `user_id` owns, with their mapped fields (emails and phones primary
    /// first).
    pub async fn owned_contacts(&self, user_id: i64) -> Result<Vec<CrmContact>> {
        self.crm_contacts("c.owner_user_id = $1", user_id).await
    }

    /// The contacts of `org_id` (linking candidates).
    pub async fn org_contacts(&self, org_id: i64) -> Result<Vec<CrmContact>> {
        self.crm_contacts("c.org_id = $1", org_id).await
    }

    async fn crm_contacts(&self, filter: &str, value: i64) -> Result<Vec<CrmContact>> {
        let sql = format!(
            "SELECT c.id, COALESCE(c.owner_user_id, 0), c.name, c.company, c.ims, c.postal_address, c.source \
             FROM contacts c WHERE {filter} ORDER BY c.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value).fetch_all(&self.pool).await?;
        let mut contacts: Vec<CrmContact> = rows
            .iter()
            .map(|r| {
                Ok(CrmContact {
                    id: r.try_get(0)?,
                    owner_user_id: r.try_get(1)?,
                    source: r.try_get(6)?,
                    fields: ContactFields {
                        name: r.try_get(2)?,
                        organization: r.try_get(3)?,
                        ims: parse_json(&r.try_get::<String, _>(4)?, "contacts.ims")?,
                        address: r.try_get(5)?,
                        ..ContactFields::default()
                    },
                })
            })
            .collect::<Result<_>>()?;
        let sql = format!(
            "SELECT a.entity_id, a.kind, a.value FROM entity_addresses a JOIN contacts c ON c.id = a.entity_id \
             WHERE a.entity_kind = 'contact' AND {filter} ORDER BY a.entity_id, a.is_primary DESC, a.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value).fetch_all(&self.pool).await?;
        let index: std::collections::HashMap<i64, usize> =
            contacts.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
        for r in rows {
            let Some(&i) = index.get(&r.try_get::<i64, _>(0)?) else { continue };
            let value: String = r.try_get(2)?;
            match r.try_get::<String, _>(1)?.as_str() {
                "email" => contacts[i].fields.emails.push(value),
                _ => contacts[i].fields.phones.push(value),
            }
        }
        Ok(contacts)
    }

    /// Creates a contact owned by `user_id` from remote fields, tagged with its source.
    pub async fn create_synced_contact(
        &self,
        user_id: i64,
        org_id: i64,
        fields: &ContactFields,
        source: &str,
    ) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let org = Org { id: org_id, settings: lock_org(&mut tx, org_id).await? };
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO contacts (org_id, name, company, owner_user_id, source, ims, postal_address, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
        )
        .bind(org_id)
        .bind(&fields.name)
        .bind(&fields.organization)
        .bind(user_id)
        .bind(source)
        .bind(json_list(&fields.ims)?)
        .bind(&fields.address)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        replace_addresses(&mut tx, self.backend, &org, id, fields).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Writes remote changes into a contact: the mapped fields, its addresses (queueing
    /// retroactive linking for them).
    pub async fn update_synced_contact(&self, contact_id: i64, fields: &ContactFields) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let org_id: i64 = sqlx::query_scalar("SELECT org_id FROM contacts WHERE id = $1")
            .bind(contact_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no contact with id {contact_id}")))?;
        let org = Org { id: org_id, settings: lock_org(&mut tx, org_id).await? };
        sqlx::query(
            "UPDATE contacts SET name = $1, company = $2, ims = $3, postal_address = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(&fields.name)
        .bind(&fields.organization)
        .bind(json_list(&fields.ims)?)
        .bind(&fields.address)
        .bind(now_ms())
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
        replace_addresses(&mut tx, self.backend, &org, contact_id, fields).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds `tag` to a contact's tags (once).
    pub async fn tag_contact(&self, contact_id: i64, tag: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let tags: Option<String> = sqlx::query_scalar("SELECT tags FROM contacts WHERE id = $1")
            .bind(contact_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(tags) = tags else { return Ok(()) };
        let mut tags: Vec<String> = parse_json(&tags, "contacts.tags")?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
            sqlx::query("UPDATE contacts SET tags = $1 WHERE id = $2")
                .bind(json_list(&tags)?)
                .bind(contact_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Replaces a contact's email and phone rows with `fields`' (primary first) and queues
/// relinking when it has emails.
async fn replace_addresses(
    tx: &mut Transaction<'_, Any>,
    backend: super::Backend,
    org: &Org,
    id: i64,
    fields: &ContactFields,
) -> Result<()> {
    sqlx::query("DELETE FROM entity_addresses WHERE entity_kind = 'contact' AND entity_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let person =
        super::crm::NewPerson { emails: fields.emails.clone(), phones: fields.phones.clone(), ..Default::default() };
    let keys = address_keys(org, &person);
    let rows: Vec<[Value; 7]> = address_rows(org.id, PersonKind::Contact, id, &person, &keys);
    insert_addresses(tx, backend, &rows).await?;
    if !fields.emails.is_empty() {
        queue_relink(tx, backend, org.id, PersonKind::Contact, &[id]).await?;
    }
    Ok(())
}

/// Forgets the remote contacts a sync knew, keeping the tombstones of deletions: a
/// contact deleted on one side is still neither re-imported nor re-created after the
/// configuration is set again.
async fn forget_live_items(tx: &mut Transaction<'_, Any>, user_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM contact_sync_items WHERE user_id = $1 AND state NOT IN ('remote_deleted', 'crm_deleted')")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn json_list(items: &[String]) -> Result<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The serde name of a unit enum value (`two-way`, `crm-wins`).
fn enum_str<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}
