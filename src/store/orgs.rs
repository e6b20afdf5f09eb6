//! Organizations and their settings: the linking options a CRM admin may turn on.

use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use super::{Result, Store, StoreError, now_ms};
use crate::address::{MatchRules, match_key, normalize_email};

/// Which unknown correspondents become leads automatically.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoCreate {
    /// Nobody (the default).
    #[default]
    None,
    /// Recipients (To, Cc, Bcc) of mail a user sent.
    SentRecipients,
    /// Senders and recipients of all synced mail.
    Correspondents,
}

/// Per-organization options, kept as JSON in `organizations.settings`. Everything is off
/// by default; `deny_unknown_fields` makes a typo an error instead of a silent no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    #[serde(default)]
    pub ignore_plus_tags: bool,
    #[serde(default)]
    pub ignore_gmail_dots: bool,
    #[serde(default)]
    pub auto_create: AutoCreate,
    /// Domains of the organization itself: their addresses never become leads.
    #[serde(default)]
    pub internal_domains: Vec<String>,
}

impl OrgSettings {
    pub fn match_rules(&self) -> MatchRules {
        MatchRules { ignore_plus_tags: self.ignore_plus_tags, ignore_gmail_dots: self.ignore_gmail_dots }
    }

    pub(super) fn from_json(org_id: i64, json: &str) -> Result<OrgSettings> {
        serde_json::from_str(json)
            .map_err(|e| StoreError::Invalid(format!("organization {org_id} has unreadable settings: {e}")))
    }

    /// Normalizes internal domains (lower case, IDN in ASCII form) and rejects bad ones.
    fn validate(mut self) -> Result<OrgSettings> {
        let mut domains = Vec::new();
        for d in &self.internal_domains {
            let address = normalize_email(&format!("x@{}", d.trim()))
                .map_err(|_| StoreError::Invalid(format!("`{d}` is not a domain")))?;
            let domain = crate::address::domain_of(&address).to_string();
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        self.internal_domains = domains;
        Ok(self)
    }
}

/// An organization row as the store's writers need it.
#[derive(Debug, Clone)]
pub(super) struct Org {
    pub id: i64,
    pub settings: OrgSettings,
}

pub(super) fn valid_org_name(org: &str) -> Result<String> {
    let org = org.trim();
    if org.is_empty() || org.len() > 200 || org.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!("organization name `{org}` must be 1 to 200 printable characters")));
    }
    Ok(org.to_string())
}

/// The organization called `name`, created with default settings if it does not exist.
pub(super) async fn ensure_org(tx: &mut Transaction<'_, Any>, name: &str) -> Result<Org> {
    sqlx::query("INSERT INTO organizations (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    let row =
        sqlx::query("SELECT id, settings FROM organizations WHERE name = $1").bind(name).fetch_one(&mut **tx).await?;
    let id = row.try_get("id")?;
    Ok(Org { id, settings: OrgSettings::from_json(id, &row.try_get::<String, _>("settings")?)? })
}

/// Takes the organization's write lock for the rest of the transaction and reads its
/// settings. Writers that read-then-write an organization's threads or links call this
/// first: PostgreSQL takes the row lock, SQLite its write lock before any read (so no
/// snapshot upgrade can fail).
pub(super) async fn lock_org(tx: &mut Transaction<'_, Any>, org_id: i64) -> Result<OrgSettings> {
    let json: String =
        sqlx::query_scalar("UPDATE organizations SET created_at = created_at WHERE id = $1 RETURNING settings")
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no organization with id {org_id}")))?;
    OrgSettings::from_json(org_id, &json)
}

impl Store {
    pub async fn org_settings(&self, name: &str) -> Result<OrgSettings> {
        let json: String = sqlx::query_scalar("SELECT settings FROM organizations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no organization named `{name}`")))?;
        OrgSettings::from_json(0, &json)
    }

    /// Replaces an organization's settings (creating the organization if needed). When the
    /// match rules change, every stored match key of the organization is recomputed and
    /// all its leads and contacts are queued for retroactive linking under the new rules.
    pub async fn set_org_settings(&self, name: &str, settings: OrgSettings) -> Result<OrgSettings> {
        let settings = settings.validate()?;
        let name = valid_org_name(name)?;
        let mut tx = self.write_tx().await?;
        let org = ensure_org(&mut tx, &name).await?;
        let old = lock_org(&mut tx, org.id).await?;
        let json = serde_json::to_string(&settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query("UPDATE organizations SET settings = $1 WHERE id = $2")
            .bind(json)
            .bind(org.id)
            .execute(&mut *tx)
            .await?;
        let rules = settings.match_rules();
        if old.match_rules() != rules {
            rekey_addresses(&mut tx, org.id, rules).await?;
            sqlx::query(concat!(
                "INSERT INTO relink_jobs (org_id, entity_kind, entity_id, created_at) ",
                "SELECT DISTINCT org_id, entity_kind, entity_id, $2 FROM entity_addresses WHERE org_id = $1 AND kind = 'email'"
            ))
            .bind(org.id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(settings)
    }
}

/// Recomputes the match keys of an organization's addresses and participants; only rows
/// whose key changes are written (an admin action, not a hot path).
async fn rekey_addresses(tx: &mut Transaction<'_, Any>, org_id: i64, rules: MatchRules) -> Result<()> {
    let rows = sqlx::query("SELECT id, value, match_key FROM entity_addresses WHERE org_id = $1 AND kind = 'email'")
        .bind(org_id)
        .fetch_all(&mut **tx)
        .await?;
    for row in rows {
        let key = match_key(&row.try_get::<String, _>("value")?, rules);
        if key != row.try_get::<String, _>("match_key")? {
            sqlx::query("UPDATE entity_addresses SET match_key = $1 WHERE id = $2")
                .bind(key)
                .bind(row.try_get::<i64, _>("id")?)
                .execute(&mut **tx)
                .await?;
        }
    }
    let rows = sqlx::query(concat!(
        "SELECT p.message_id, p.role, p.position, p.address, p.match_key FROM participants p ",
        "JOIN messages m ON m.id = p.message_id WHERE m.org_id = $1"
    ))
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let key = match_key(&row.try_get::<String, _>("address")?, rules);
        if key != row.try_get::<String, _>("match_key")? {
            sqlx::query("UPDATE participants SET match_key = $1 WHERE message_id = $2 AND role = $3 AND position = $4")
                .bind(key)
                .bind(row.try_get::<i64, _>("message_id")?)
                .bind(row.try_get::<String, _>("role")?)
                .bind(row.try_get::<i64, _>("position")?)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}
