//! CRM records: organizations, users, leads, contacts, deals and their addresses.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::orgs::{Org, ensure_org, valid_org_name};
use super::sql::{Value, fetch_by_org_in, insert_rows, parse_json};
use super::{Backend, Result, Store, StoreError, conflict_or, now_ms};
use crate::address::{match_key, normalize_email, normalize_phone};

/// The kinds of CRM record a message can be linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Lead,
    Contact,
    Deal,
}

impl EntityKind {
    /// The kind a stored `entity_kind` column names.
    pub fn parse(s: &str) -> Option<EntityKind> {
        [EntityKind::Lead, EntityKind::Contact, EntityKind::Deal].into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Lead => "lead",
            EntityKind::Contact => "contact",
            EntityKind::Deal => "deal",
        }
    }
}

/// Leads and contacts share their shape; `kind` says which table a person lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PersonKind {
    Lead,
    Contact,
}

impl PersonKind {
    pub fn entity(self) -> EntityKind {
        match self {
            PersonKind::Lead => EntityKind::Lead,
            PersonKind::Contact => EntityKind::Contact,
        }
    }
}

/// A lead or contact to create. Addresses are normalized by [`NewPerson::validate`].
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    #[serde(default = "default_org")]
    pub org: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub company: String,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    /// Leads only: `new` when empty.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub source: String,
    /// Contacts only: the user (email) who owns the contact; their contacts sync
    /// pushes it. Empty: nobody.
    #[serde(default)]
    pub owner: String,
}

pub fn default_org() -> String {
    "default".into()
}

impl NewPerson {
    /// Trims fields, normalizes and deduplicates addresses; errors name the bad field.
    pub fn validate(mut self) -> Result<NewPerson> {
        self.org = valid_org_name(&self.org)?;
        self.name = self.name.trim().to_string();
        self.company = self.company.trim().to_string();
        self.status = self.status.trim().to_string();
        if !self.owner.trim().is_empty() {
            self.owner = normalize_email(&self.owner).map_err(|e| StoreError::Invalid(format!("owner: {e}")))?;
        }
        let mut emails = Vec::new();
        for e in &self.emails {
            let e = normalize_email(e).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if !emails.contains(&e) {
                emails.push(e);
            }
        }
        let mut phones = Vec::new();
        for p in &self.phones {
            let p = normalize_phone(p).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if !phones.contains(&p) {
                phones.push(p);
            }
        }
        self.emails = emails;
        self.phones = phones;
        if self.name.is_empty() && self.emails.is_empty() {
            return Err(StoreError::Invalid("a name or an email address is required".into()));
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Person {
    pub id: i64,
    pub kind: PersonKind,
    pub org: String,
    pub name: String,
    pub company: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    /// Leads only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub source: String,
    pub created_at: i64,
    /// Contacts: e.g. "deleted in CardDAV Contacts" after a remote deletion.
    pub tags: Vec<String>,
    /// Contacts: instant-messenger URIs (from an address book).
    pub ims: Vec<String>,
    /// Contacts: `street;locality;region;postal code;country`, or empty.
    pub postal_address: String,
    /// Contacts: the owning user's email, or empty.
    pub owner: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeal {
    #[serde(default = "default_org")]
    pub org: String,
    pub title: String,
    #[serde(default = "default_deal_status")]
    pub status: String,
    #[serde(default)]
    pub value_cents: i64,
    #[serde(default)]
    pub contacts: Vec<i64>,
    #[serde(default)]
    pub leads: Vec<i64>,
}

fn default_deal_status() -> String {
    "open".into()
}

pub const DEAL_STATUSES: [&str; 3] = ["open", "won", "lost"];

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Deal {
    pub id: i64,
    pub org: String,
    pub title: String,
    pub status: String,
    pub value_cents: i64,
    pub contacts: Vec<i64>,
    pub leads: Vec<i64>,
    pub created_at: i64,
}

/// A change to a contact; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactChange {
    pub name: Option<String>,
    pub company: Option<String>,
    pub emails: Option<Vec<String>>,
    pub phones: Option<Vec<String>>,
    /// The owning user's email.
    pub owner: Option<String>,
}

/// What a bulk import did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ImportSummary {
    pub created: u64,
    /// Rows whose primary email already belongs to a record of that kind.
    pub existing: u64,
}

impl Store {
    /// Creates a lead or contact. A contact whose email already belongs to another
    /// contact of the organization is refused (leads and contacts may share one).
    pub async fn add_person(&self, kind: PersonKind, new: NewPerson) -> Result<Person> {
        let new = new.validate()?;
        if kind == PersonKind::Contact && !new.status.is_empty() {
            return Err(StoreError::Invalid("contacts have no status; leads do".into()));
        }
        let mut tx = self.write_tx().await?;
        let org = ensure_org(&mut tx, &new.org).await?;
        if let Some(existing) = find_by_email(&mut tx, org.id, kind, &new.emails).await? {
            return Err(StoreError::Conflict(format!(
                "{} {} already has the address {}",
                kind.entity().as_str(),
                existing.0,
                existing.1
            )));
        }
        let id = insert_person(&mut tx, self.backend, &org, kind, &new).await?;
        if kind == PersonKind::Contact {
            request_owner_sync(&mut tx, id).await?;
        }
        tx.commit().await?;
        self.person(kind, id).await
    }

    /// Adds an email address to a lead or contact; its past mail is linked in the
    /// background (a relink job in the same transaction).
    pub async fn add_person_email(&self, kind: PersonKind, id: i64, email: &str) -> Result<Person> {
        let email = normalize_email(email).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let person = self.person(kind, id).await?;
        let mut tx = self.write_tx().await?;
        let org = ensure_org(&mut tx, &person.org).await?;
        if let Some((other, _)) = find_by_email(&mut tx, org.id, kind, std::slice::from_ref(&email)).await? {
            if other == id {
                return Ok(person);
            }
            return Err(StoreError::Conflict(format!(
                "{} {other} already has the address {email}",
                kind.entity().as_str()
            )));
        }
        let rules = org.settings.match_rules();
        let primary = i64::from(person.emails.is_empty());
        let key = match_key(&email, rules);
        let row = [
            Value::Int(org.id),
            Value::Text(kind.entity().as_str()),
            Value::Int(id),
            Value::Text("email"),
            Value::Text(&email),
            Value::Text(&key),
            Value::Int(primary),
        ];
        insert_addresses(&mut tx, self.backend, &[row]).await?;
        queue_relink(&mut tx, self.backend, org.id, kind, &[id]).await?;
        if kind == PersonKind::Contact {
            request_owner_sync(&mut tx, id).await?;
        }
        tx.commit().await?;
        self.person(kind, id).await
    }

    /// Changes a contact: each given field replaces the stored one (emails and phones as
    /// whole lists, the first primary). New addresses are linked in the background.
    pub async fn update_contact(&self, id: i64, change: ContactChange) -> Result<Person> {
        let current = self.person(PersonKind::Contact, id).await?;
        let fields = NewPerson {
            org: current.org.clone(),
            name: change.name.unwrap_or(current.name),
            company: change.company.unwrap_or(current.company),
            emails: change.emails.unwrap_or(current.emails),
            phones: change.phones.unwrap_or(current.phones),
            owner: change.owner.unwrap_or_default(),
            ..NewPerson::default()
        }
        .validate()?;
        let mut tx = self.write_tx().await?;
        let org = ensure_org(&mut tx, &current.org).await?;
        for email in &fields.emails {
            if let Some((other, _)) =
                find_by_email(&mut tx, org.id, PersonKind::Contact, std::slice::from_ref(email)).await?
                && other != id
            {
                return Err(StoreError::Conflict(format!("contact {other} already has the address {email}")));
            }
        }
        sqlx::query("UPDATE contacts SET name = $1, company = $2, updated_at = $3 WHERE id = $4")
            .bind(&fields.name)
            .bind(&fields.company)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if !fields.owner.is_empty() {
            sqlx::query("UPDATE contacts SET owner_user_id = $1 WHERE id = $2")
                .bind(owner_id(&mut tx, &fields.owner).await?)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM entity_addresses WHERE entity_kind = 'contact' AND entity_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let keys = address_keys(&org, &fields);
        insert_addresses(&mut tx, self.backend, &address_rows(org.id, PersonKind::Contact, id, &fields, &keys)).await?;
        if !fields.emails.is_empty() {
            queue_relink(&mut tx, self.backend, org.id, PersonKind::Contact, &[id]).await?;
        }
        request_owner_sync(&mut tx, id).await?;
        tx.commit().await?;
        self.person(PersonKind::Contact, id).await
    }

    /// Deletes a contact with its addresses and links (its mail stays).
    pub async fn delete_contact(&self, id: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        request_owner_sync(&mut tx, id).await?;
        let deleted = sqlx::query("DELETE FROM contacts WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no contact with id {id}")));
        }
        for table in ["entity_addresses", "message_links", "thread_links", "deal_parties"] {
            let sql = format!("DELETE FROM {table} WHERE entity_kind = 'contact' AND entity_id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates many contacts in one transaction: all rows or none. A row with an email
    /// that already belongs to a contact (stored, or an earlier row) counts as existing,
    /// not duplicated. A handful of multi-row statements per 10,000 rows, so a million-row
    /// import takes seconds; linking their past mail is queued for the background.
    pub async fn import_contacts(&self, rows: Vec<NewPerson>) -> Result<ImportSummary> {
        self.import_contacts_reporting(rows, |_, _| {}).await
    }

    /// [`Store::import_contacts`], calling `progress(rows handled, rows)` as it goes.
    pub async fn import_contacts_reporting(
        &self,
        rows: Vec<NewPerson>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ImportSummary> {
        let total = rows.len() as u64;
        let mut by_org: Vec<(String, String, Vec<NewPerson>)> = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let row = row.validate().map_err(|e| StoreError::Invalid(format!("row {}: {e}", i + 1)))?;
            if !row.status.is_empty() {
                return Err(StoreError::Invalid(format!("row {}: contacts have no status; leads do", i + 1)));
            }
            match by_org.iter_mut().find(|(org, owner, _)| *org == row.org && *owner == row.owner) {
                Some((_, _, rows)) => rows.push(row),
                None => by_org.push((row.org.clone(), row.owner.clone(), vec![row])),
            }
        }
        let mut summary = ImportSummary::default();
        let mut tx = self.write_tx().await?;
        for (org_name, owner, rows) in by_org {
            let org = ensure_org(&mut tx, &org_name).await?;
            let owner = owner_id(&mut tx, &owner).await?;
            if let Some(owner) = owner {
                // The owner's address book gets them at the next poll.
                sqlx::query("UPDATE contact_sync_configs SET run_requested = 1 WHERE user_id = $1")
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
            }
            let emails: Vec<&str> = rows.iter().flat_map(|r| r.emails.iter().map(String::as_str)).collect();
            let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
            let select = "SELECT value FROM (SELECT org_id, value FROM entity_addresses \
                          WHERE entity_kind = 'contact' AND kind = 'email') ea";
            for row in fetch_by_org_in(&mut tx, self.backend, select, "value", org.id, &emails).await? {
                taken.insert(row.try_get("value")?);
            }
            let mut fresh = Vec::new();
            for row in rows {
                if row.emails.iter().any(|e| taken.contains(e)) {
                    summary.existing += 1;
                    continue;
                }
                taken.extend(row.emails.iter().cloned());
                fresh.push(row);
            }
            for chunk in fresh.chunks(10_000) {
                insert_contacts(&mut tx, self.backend, &org, chunk, owner).await?;
                summary.created += chunk.len() as u64;
                progress(summary.created + summary.existing, total);
            }
        }
        tx.commit().await?;
        if summary.created >= 1_000 {
            // Fresh statistics now (PostgreSQL's autovacuum would get there later, SQLite
            // never): with stale ones the planner may scan entity_addresses per
            // participant, and matching crawls.
            sqlx::query(sqlx::AssertSqlSafe(super::dialect::analyze("entity_addresses"))).execute(&self.pool).await?;
        }
        Ok(summary)
    }

    pub async fn person(&self, kind: PersonKind, id: i64) -> Result<Person> {
        let sql = match kind {
            PersonKind::Lead => concat!(
                "SELECT p.id, o.name AS org, p.name, p.company, p.status, p.source, p.created_at, ",
                "'[]' AS tags, '[]' AS ims, '' AS postal_address, '' AS owner ",
                "FROM leads p JOIN organizations o ON o.id = p.org_id WHERE p.id = $1"
            ),
            PersonKind::Contact => concat!(
                "SELECT p.id, o.name AS org, p.name, p.company, '' AS status, p.source, p.created_at, p.tags, p.ims, p.postal_address, ",
                "COALESCE((SELECT u.email FROM users u WHERE u.id = p.owner_user_id), '') AS owner ",
                "FROM contacts p JOIN organizations o ON o.id = p.org_id WHERE p.id = $1"
            ),
        };
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no {} with id {id}", kind.entity().as_str())))?;
        let mut people = vec![person_from_row(kind, &row)?];
        self.attach_addresses(kind, &mut people).await?;
        Ok(people.remove(0))
    }

    /// Lists leads or contacts, optionally of one organization, in id order.
    pub async fn list_people(
        &self,
        kind: PersonKind,
        org: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Person>> {
        let sql = match kind {
            PersonKind::Lead => concat!(
                "SELECT p.id, o.name AS org, p.name, p.company, p.status, p.source, p.created_at, ",
                "'[]' AS tags, '[]' AS ims, '' AS postal_address, '' AS owner ",
                "FROM leads p JOIN organizations o ON o.id = p.org_id ",
                "WHERE ($1 = '' OR o.name = $1) ORDER BY p.id LIMIT $2 OFFSET $3"
            ),
            PersonKind::Contact => concat!(
                "SELECT p.id, o.name AS org, p.name, p.company, '' AS status, p.source, p.created_at, p.tags, p.ims, p.postal_address, ",
                "COALESCE((SELECT u.email FROM users u WHERE u.id = p.owner_user_id), '') AS owner ",
                "FROM contacts p JOIN organizations o ON o.id = p.org_id ",
                "WHERE ($1 = '' OR o.name = $1) ORDER BY p.id LIMIT $2 OFFSET $3"
            ),
        };
        let rows = sqlx::query(sql).bind(org.unwrap_or("")).bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let mut people = rows.iter().map(|r| person_from_row(kind, r)).collect::<Result<Vec<_>>>()?;
        self.attach_addresses(kind, &mut people).await?;
        Ok(people)
    }

    async fn attach_addresses(&self, kind: PersonKind, people: &mut [Person]) -> Result<()> {
        let (Some(first), Some(last)) = (people.first(), people.last()) else { return Ok(()) };
        let rows = sqlx::query(concat!(
            "SELECT entity_id, kind, value FROM entity_addresses ",
            "WHERE entity_kind = $1 AND entity_id BETWEEN $2 AND $3 ",
            "ORDER BY entity_id, is_primary DESC, id"
        ))
        .bind(kind.entity().as_str())
        .bind(first.id)
        .bind(last.id)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let id: i64 = row.try_get("entity_id")?;
            let Ok(i) = people.binary_search_by_key(&id, |p| p.id) else { continue };
            let value: String = row.try_get("value")?;
            match row.try_get::<String, _>("kind")?.as_str() {
                "email" => people[i].emails.push(value),
                _ => people[i].phones.push(value),
            }
        }
        Ok(())
    }

    pub async fn add_deal(&self, new: NewDeal) -> Result<Deal> {
        let org = valid_org_name(&new.org)?;
        let title = new.title.trim();
        if title.is_empty() {
            return Err(StoreError::Invalid("a deal needs a title".into()));
        }
        if !DEAL_STATUSES.contains(&new.status.as_str()) {
            return Err(StoreError::Invalid(format!(
                "deal status `{}` is not one of {}",
                new.status,
                DEAL_STATUSES.join(", ")
            )));
        }
        if new.value_cents < 0 {
            return Err(StoreError::Invalid("a deal's value cannot be negative".into()));
        }
        let mut tx = self.write_tx().await?;
        let org_id = ensure_org(&mut tx, &org).await?.id;
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(concat!(
            "INSERT INTO deals (org_id, title, status, value_cents, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $5) RETURNING id"
        ))
        .bind(org_id)
        .bind(title)
        .bind(&new.status)
        .bind(new.value_cents)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let parties = new.contacts.iter().map(|&c| (PersonKind::Contact, c));
        for (kind, party) in parties.chain(new.leads.iter().map(|&l| (PersonKind::Lead, l))) {
            let sql = match kind {
                PersonKind::Lead => "SELECT org_id FROM leads WHERE id = $1",
                PersonKind::Contact => "SELECT org_id FROM contacts WHERE id = $1",
            };
            let party_org: Option<i64> = sqlx::query_scalar(sql).bind(party).fetch_optional(&mut *tx).await?;
            if party_org != Some(org_id) {
                return Err(StoreError::Invalid(format!(
                    "no {} with id {party} in organization {org}",
                    kind.entity().as_str()
                )));
            }
            sqlx::query(concat!(
                "INSERT INTO deal_parties (deal_id, entity_kind, entity_id) VALUES ($1, $2, $3) ",
                "ON CONFLICT DO NOTHING"
            ))
            .bind(id)
            .bind(kind.entity().as_str())
            .bind(party)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.deal(id).await
    }

    pub async fn deal(&self, id: i64) -> Result<Deal> {
        self.list_deals_where(None, Some(id), 1, 0)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("no deal with id {id}")))
    }

    pub async fn list_deals(&self, org: Option<&str>, limit: i64, offset: i64) -> Result<Vec<Deal>> {
        self.list_deals_where(org, None, limit, offset).await
    }

    async fn list_deals_where(&self, org: Option<&str>, id: Option<i64>, limit: i64, offset: i64) -> Result<Vec<Deal>> {
        let rows = sqlx::query(concat!(
            "SELECT d.id, o.name AS org, d.title, d.status, d.value_cents, d.created_at ",
            "FROM deals d JOIN organizations o ON o.id = d.org_id ",
            "WHERE ($1 = '' OR o.name = $1) AND ($2 = 0 OR d.id = $2) ",
            "ORDER BY d.id LIMIT $3 OFFSET $4"
        ))
        .bind(org.unwrap_or(""))
        .bind(id.unwrap_or(0))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let mut deals = Vec::with_capacity(rows.len());
        for row in rows {
            deals.push(Deal {
                id: row.try_get("id")?,
                org: row.try_get("org")?,
                title: row.try_get("title")?,
                status: row.try_get("status")?,
                value_cents: row.try_get("value_cents")?,
                contacts: Vec::new(),
                leads: Vec::new(),
                created_at: row.try_get("created_at")?,
            });
        }
        let (Some(first), Some(last)) = (deals.first().map(|d| d.id), deals.last().map(|d| d.id)) else {
            return Ok(deals);
        };
        let parties = sqlx::query(concat!(
            "SELECT deal_id, entity_kind, entity_id FROM deal_parties ",
            "WHERE deal_id BETWEEN $1 AND $2 ORDER BY deal_id, entity_id"
        ))
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?;
        for row in parties {
            let deal_id: i64 = row.try_get("deal_id")?;
            let Ok(i) = deals.binary_search_by_key(&deal_id, |d| d.id) else { continue };
            let entity_id: i64 = row.try_get("entity_id")?;
            match row.try_get::<String, _>("entity_kind")?.as_str() {
                "lead" => deals[i].leads.push(entity_id),
                _ => deals[i].contacts.push(entity_id),
            }
        }
        Ok(deals)
    }
}

async fn find_by_email(
    tx: &mut Transaction<'_, Any>,
    org_id: i64,
    kind: PersonKind,
    emails: &[String],
) -> Result<Option<(i64, String)>> {
    for email in emails {
        let id: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT entity_id FROM entity_addresses ",
            "WHERE org_id = $1 AND kind = 'email' AND value = $2 AND entity_kind = $3 LIMIT 1"
        ))
        .bind(org_id)
        .bind(email)
        .bind(kind.entity().as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = id {
            return Ok(Some((id, email.clone())));
        }
    }
    Ok(None)
}

pub(super) async fn insert_person(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org: &Org,
    kind: PersonKind,
    new: &NewPerson,
) -> Result<i64> {
    let now = now_ms();
    let id: i64 = match kind {
        PersonKind::Lead => {
            let status = if new.status.is_empty() { "new" } else { new.status.as_str() };
            sqlx::query_scalar(concat!(
                "INSERT INTO leads (org_id, name, company, status, source, created_at, updated_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id"
            ))
            .bind(org.id)
            .bind(&new.name)
            .bind(&new.company)
            .bind(status)
            .bind(&new.source)
            .bind(now)
            .fetch_one(&mut **tx)
            .await?
        }
        PersonKind::Contact => {
            let owner = owner_id(tx, &new.owner).await?;
            sqlx::query_scalar(concat!(
                "INSERT INTO contacts (org_id, name, company, source, owner_user_id, created_at, updated_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id"
            ))
            .bind(org.id)
            .bind(&new.name)
            .bind(&new.company)
            .bind(&new.source)
            .bind(owner)
            .bind(now)
            .fetch_one(&mut **tx)
            .await?
        }
    };
    let keys = address_keys(org, new);
    insert_addresses(tx, backend, &address_rows(org.id, kind, id, new, &keys)).await?;
    if !new.emails.is_empty() {
        queue_relink(tx, backend, org.id, kind, &[id]).await?;
    }
    Ok(id)
}

/// The id of the user `email` (`None` for an empty email); an unknown user is an error.
async fn owner_id(tx: &mut Transaction<'_, Any>, email: &str) -> Result<Option<i64>> {
    if email.is_empty() {
        return Ok(None);
    }
    let id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(email).fetch_optional(&mut **tx).await?;
    id.map(Some).ok_or_else(|| StoreError::Invalid(format!("owner: no user {email}")))
}

/// Inserts contacts in one statement and their addresses in another. Ids come back
/// sorted: both databases number the rows of one multi-row INSERT in VALUES order, while
/// the order of RETURNING itself is not promised.
async fn insert_contacts(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org: &Org,
    rows: &[NewPerson],
    owner: Option<i64>,
) -> Result<()> {
    let now = now_ms();
    let returned = match owner {
        None => {
            let contact_rows: Vec<[Value; 6]> = rows
                .iter()
                .map(|r| {
                    [
                        Value::Int(org.id),
                        Value::Text(&r.name),
                        Value::Text(&r.company),
                        Value::Text(&r.source),
                        Value::Int(now),
                        Value::Int(now),
                    ]
                })
                .collect();
            let sql = "INSERT INTO contacts (org_id, name, company, source, created_at, updated_at) VALUES ";
            insert_rows(tx, backend, sql, " RETURNING id", &contact_rows).await?
        }
        Some(owner) => {
            let contact_rows: Vec<[Value; 7]> = rows
                .iter()
                .map(|r| {
                    let (name, company, source) =
                        (Value::Text(&r.name), Value::Text(&r.company), Value::Text(&r.source));
                    [Value::Int(org.id), name, company, source, Value::Int(owner), Value::Int(now), Value::Int(now)]
                })
                .collect();
            let sql =
                "INSERT INTO contacts (org_id, name, company, source, owner_user_id, created_at, updated_at) VALUES ";
            insert_rows(tx, backend, sql, " RETURNING id", &contact_rows).await?
        }
    };
    let mut ids = returned.iter().map(|r| r.try_get::<i64, _>("id")).collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    if ids.len() != rows.len() {
        return Err(StoreError::Invalid("contact insert returned a wrong number of ids".into()));
    }
    let keys: Vec<Vec<String>> = rows.iter().map(|r| address_keys(org, r)).collect();
    let mut addresses = Vec::new();
    for ((row, id), keys) in rows.iter().zip(&ids).zip(&keys) {
        addresses.extend(address_rows(org.id, PersonKind::Contact, *id, row, keys));
    }
    insert_addresses(tx, backend, &addresses).await?;
    let with_email: Vec<i64> = rows.iter().zip(&ids).filter(|(r, _)| !r.emails.is_empty()).map(|(_, id)| *id).collect();
    queue_relink(tx, backend, org.id, PersonKind::Contact, &with_email).await
}

/// The match key of each of a person's emails, in order.
pub(super) fn address_keys(org: &Org, new: &NewPerson) -> Vec<String> {
    let rules = org.settings.match_rules();
    new.emails.iter().map(|e| match_key(e, rules)).collect()
}

/// `entity_addresses` rows for a person: the first email and the first phone are primary.
pub(super) fn address_rows<'a>(
    org_id: i64,
    kind: PersonKind,
    id: i64,
    new: &'a NewPerson,
    keys: &'a [String],
) -> Vec<[Value<'a>; 7]> {
    let emails = new.emails.iter().zip(keys).map(|(e, k)| ("email", e.as_str(), k.as_str()));
    let phones = new.phones.iter().map(|p| ("phone", p.as_str(), p.as_str()));
    let mut seen_kinds: Vec<&str> = Vec::new();
    emails
        .chain(phones)
        .map(|(addr_kind, value, key)| {
            let primary = !seen_kinds.contains(&addr_kind);
            seen_kinds.push(addr_kind);
            [
                Value::Int(org_id),
                Value::Text(kind.entity().as_str()),
                Value::Int(id),
                Value::Text(addr_kind),
                Value::Text(value),
                Value::Text(key),
                Value::Int(i64::from(primary)),
            ]
        })
        .collect()
}

pub(super) async fn insert_addresses(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    rows: &[[Value<'_>; 7]],
) -> Result<()> {
    insert_rows(
        tx,
        backend,
        "INSERT INTO entity_addresses (org_id, entity_kind, entity_id, kind, value, match_key, is_primary) VALUES ",
        "",
        rows,
    )
    .await
    .map_err(|e| match e {
        StoreError::Db(e) => conflict_or(e, || "an address appears twice for one person".into()),
        other => other,
    })?;
    Ok(())
}

/// Queues retroactive linking for people who got new email addresses.
pub(super) async fn queue_relink(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org_id: i64,
    kind: PersonKind,
    ids: &[i64],
) -> Result<()> {
    let now = now_ms();
    let rows: Vec<[Value; 4]> = ids
        .iter()
        .map(|id| [Value::Int(org_id), Value::Text(kind.entity().as_str()), Value::Int(*id), Value::Int(now)])
        .collect();
    insert_rows(tx, backend, "INSERT INTO relink_jobs (org_id, entity_kind, entity_id, created_at) VALUES ", "", &rows)
        .await?;
    Ok(())
}

fn person_from_row(kind: PersonKind, row: &AnyRow) -> Result<Person> {
    Ok(Person {
        id: row.try_get("id")?,
        kind,
        org: row.try_get("org")?,
        name: row.try_get("name")?,
        company: row.try_get("company")?,
        emails: Vec::new(),
        phones: Vec::new(),
        status: match kind {
            PersonKind::Lead => Some(row.try_get("status")?),
            PersonKind::Contact => None,
        },
        source: row.try_get("source")?,
        created_at: row.try_get("created_at")?,
        tags: parse_json(&row.try_get::<String, _>("tags")?, "contacts.tags")?,
        ims: parse_json(&row.try_get::<String, _>("ims")?, "contacts.ims")?,
        postal_address: row.try_get("postal_address")?,
        owner: row.try_get("owner")?,
    })
}

/// Asks for a run of the contacts sync of contact `id`'s owner, if it has one: a CRM
/// edit reaches the owner's address book within the scheduler's poll, not its interval.
async fn request_owner_sync(tx: &mut Transaction<'_, Any>, id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE contact_sync_configs SET run_requested = 1 \
         WHERE user_id = (SELECT owner_user_id FROM contacts WHERE id = $1)",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
