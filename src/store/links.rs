//! Links between messages and CRM records: matching by address, thread association,
//! links and unlinks made by people (sticky), retroactive linking and auto-created leads.
//!
//! Architecture invariant: a link row is never overwritten automatically. Automatic
//! linking only inserts (`ON CONFLICT DO NOTHING`), so a person's unlink (`dissociated`)
//! stays; only [`Store::link`] and [`Store::unlink`], acting for a person, change a state.

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::crm::{EntityKind, NewPerson, PersonKind, insert_person};
use super::orgs::{AutoCreate, Org, lock_org};
use super::{Backend, Result, Store, StoreError, now_ms};
use crate::address::domain_of;
use crate::model::message::{ParsedMessage, Role, linking_roles};

/// Most ids bound in one statement (below both databases' parameter limits).
const CHUNK: usize = 10_000;

/// What automatic address linking looks at.
pub(crate) enum LinkScope<'a> {
    /// Newly stored messages.
    Messages(&'a [i64]),
    /// Every stored message of these leads' or contacts' addresses (retroactive linking).
    People(EntityKind, &'a [i64]),
}

/// Links messages to the leads and contacts of their organization whose match key
/// appears in a linking role ([`linking_roles`]: Bcc only in outgoing mail). Addresses of
/// the organization's own users never link, and neither does a thread a person unlinked
/// from the record. Returns the number of links made.
pub(crate) async fn link_by_address(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    scope: LinkScope<'_>,
    now: i64,
) -> Result<u64> {
    let (ids, scope_sql, kind) = match scope {
        LinkScope::Messages(ids) => (ids, "p.message_id IN (", None),
        LinkScope::People(kind, ids) => (ids, "ea.entity_kind = ", Some(kind)),
    };
    let (incoming, outgoing) = (linking_roles(false), linking_roles(true));
    let mut linked = 0;
    for chunk in ids.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO message_links (message_id, entity_kind, entity_id, origin, state, created_at, updated_at) \
             SELECT DISTINCT p.message_id, ea.entity_kind, ea.entity_id, 'address', 'active', ",
        );
        let mut n = backend.placeholders(1, 2, &mut sql);
        sql.push_str(
            " FROM participants p JOIN messages m ON m.id = p.message_id \
             JOIN entity_addresses ea ON ea.org_id = m.org_id AND ea.kind = 'email' AND ea.match_key = p.match_key \
             WHERE (p.role IN (",
        );
        n = backend.placeholders(n, incoming.len(), &mut sql);
        sql.push_str(") OR (m.outgoing = 1 AND p.role IN (");
        n = backend.placeholders(n, outgoing.len(), &mut sql);
        sql.push_str(
            "))) AND NOT EXISTS (SELECT 1 FROM user_addresses ua JOIN users u ON u.id = ua.user_id \
             WHERE u.org_id = m.org_id AND ua.address = p.address) \
             AND NOT EXISTS (SELECT 1 FROM thread_links tl WHERE tl.thread_id = m.thread_id \
             AND tl.entity_kind = ea.entity_kind AND tl.entity_id = ea.entity_id AND tl.state = 'dissociated') AND ",
        );
        sql.push_str(scope_sql);
        if kind.is_some() {
            backend.placeholder(n, &mut sql);
            n += 1;
            sql.push_str(" AND ea.entity_id IN (");
        }
        backend.placeholders(n, chunk.len(), &mut sql);
        sql.push_str(") ON CONFLICT (message_id, entity_kind, entity_id) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(now);
        for role in incoming.iter().chain(outgoing) {
            query = query.bind(*role);
        }
        if let Some(kind) = kind {
            query = query.bind(kind.as_str());
        }
        for id in chunk {
            query = query.bind(*id);
        }
        linked += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(linked)
}

/// Links new messages to whatever their thread is associated with (origin `thread`).
pub(crate) async fn link_to_thread_records(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    ids: &[i64],
    now: i64,
) -> Result<()> {
    for chunk in ids.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO message_links (message_id, entity_kind, entity_id, origin, state, created_at, updated_at) \
             SELECT m.id, tl.entity_kind, tl.entity_id, 'thread', 'active', ",
        );
        let n = backend.placeholders(1, 2, &mut sql);
        sql.push_str(" FROM messages m JOIN thread_links tl ON tl.thread_id = m.thread_id AND tl.state = 'active' WHERE m.id IN (");
        backend.placeholders(n, chunk.len(), &mut sql);
        sql.push_str(") ON CONFLICT (message_id, entity_kind, entity_id) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(now);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Creates leads for unknown correspondents of new messages, as the organization's
/// auto-create policy says; never for the organization's users or internal domains.
pub(crate) async fn auto_create_leads(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org: &Org,
    org_name: &str,
    messages: &[&ParsedMessage],
    outgoing: bool,
) -> Result<()> {
    let roles: &[Role] = match (org.settings.auto_create, outgoing) {
        (AutoCreate::None, _) | (AutoCreate::SentRecipients, false) => return Ok(()),
        (AutoCreate::SentRecipients, true) => &[Role::To, Role::Cc, Role::Bcc],
        (AutoCreate::Correspondents, true) => &[Role::From, Role::To, Role::Cc, Role::Bcc],
        (AutoCreate::Correspondents, false) => &[Role::From, Role::To, Role::Cc],
    };
    let mut candidates: Vec<(&str, &str)> = Vec::new();
    for p in messages.iter().flat_map(|m| &m.participants) {
        let internal = org.settings.internal_domains.iter().any(|d| d == domain_of(&p.address));
        if roles.contains(&p.role) && !internal && !candidates.iter().any(|(a, _)| *a == p.address) {
            candidates.push((&p.address, &p.name));
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT ua.address FROM user_addresses ua JOIN users u ON u.id = ua.user_id WHERE u.org_id = $1",
    )
    .bind(org.id)
    .fetch_all(&mut **tx)
    .await?;
    let rules = org.settings.match_rules();
    for (address, name) in candidates {
        if users.iter().any(|u| u == address) {
            continue;
        }
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT entity_id FROM entity_addresses WHERE org_id = $1 AND kind = 'email' AND match_key = $2 LIMIT 1",
        )
        .bind(org.id)
        .bind(crate::address::match_key(address, rules))
        .fetch_optional(&mut **tx)
        .await?;
        if known.is_none() {
            let lead = NewPerson {
                org: org_name.to_string(),
                name: name.to_string(),
                emails: vec![address.to_string()],
                source: "auto".into(),
                ..NewPerson::default()
            };
            let id = insert_person(tx, backend, org, PersonKind::Lead, &lead).await?;
            tracing::debug!(org = org.id, lead = id, "lead auto-created");
        }
    }
    Ok(())
}

/// A message or a whole thread, as the target of a person's link or unlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTarget {
    Message(i64),
    Thread(i64),
}

/// How a link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkOrigin {
    /// The message carries one of the record's addresses.
    Address,
    /// The message's thread is linked to the record.
    Thread,
    /// A person linked or unlinked it.
    Manual,
}

/// Whether a link holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Active,
    /// A person unlinked it; sticky: nothing links it again automatically.
    Dissociated,
}

/// One link of a message, as listings show it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LinkView {
    pub entity_kind: EntityKind,
    pub entity_id: i64,
    pub origin: LinkOrigin,
    pub state: LinkState,
}

impl LinkOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkOrigin::Address => "address",
            LinkOrigin::Thread => "thread",
            LinkOrigin::Manual => "manual",
        }
    }
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Active => "active",
            LinkState::Dissociated => "dissociated",
        }
    }
}

impl LinkView {
    /// A link row's columns; an unknown value is corruption.
    pub(crate) fn from_columns(entity_kind: &str, entity_id: i64, origin: &str, state: &str) -> Result<LinkView> {
        let corrupt = |column: &str, value: &str| StoreError::Invalid(format!("a link's {column} is {value:?}"));
        Ok(LinkView {
            entity_kind: EntityKind::parse(entity_kind).ok_or_else(|| corrupt("entity kind", entity_kind))?,
            entity_id,
            origin: [LinkOrigin::Address, LinkOrigin::Thread, LinkOrigin::Manual]
                .into_iter()
                .find(|o| o.as_str() == origin)
                .ok_or_else(|| corrupt("origin", origin))?,
            state: [LinkState::Active, LinkState::Dissociated]
                .into_iter()
                .find(|s| s.as_str() == state)
                .ok_or_else(|| corrupt("state", state))?,
        })
    }
}

/// What a link or unlink changed.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LinkChange {
    pub thread_id: i64,
    /// Messages whose link to the record was created or changed.
    pub messages: u64,
}

impl Store {
    /// A person links a message or thread to a record. Linking a message links its thread
    /// too: the thread's other messages (except ones a person unlinked) and its later ones.
    /// A former unlink of the same pair is lifted.
    pub async fn link(&self, target: LinkTarget, kind: EntityKind, entity_id: i64) -> Result<LinkChange> {
        let mut tx = self.write_tx().await?;
        let (thread_id, message) = self.resolve(&mut tx, target, kind, entity_id).await?;
        let changed = link_in(&mut tx, thread_id, message, kind, entity_id, now_ms()).await?;
        tx.commit().await?;
        Ok(LinkChange { thread_id, messages: changed })
    }

    /// A person unlinks a message or thread from a record. The unlink is sticky: the
    /// message (or every message of the thread) and the thread keep a `dissociated` row,
    /// so no later reply, resync or retroactive match links them again.
    pub async fn unlink(&self, target: LinkTarget, kind: EntityKind, entity_id: i64) -> Result<LinkChange> {
        let mut tx = self.write_tx().await?;
        let (thread_id, message) = self.resolve(&mut tx, target, kind, entity_id).await?;
        let now = now_ms();
        let changed = match message {
            Some(message) => set_message_link(&mut tx, message, kind, entity_id, "dissociated", now).await?,
            None => sqlx::query(concat!(
                "INSERT INTO message_links (message_id, entity_kind, entity_id, origin, state, created_at, updated_at) ",
                "SELECT id, $1, $2, 'manual', 'dissociated', $3, $3 FROM messages WHERE thread_id = $4 ",
                "ON CONFLICT (message_id, entity_kind, entity_id) DO UPDATE SET state = 'dissociated', ",
                "origin = 'manual', updated_at = excluded.updated_at WHERE message_links.state <> 'dissociated'"
            ))
            .bind(kind.as_str())
            .bind(entity_id)
            .bind(now)
            .bind(thread_id)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        set_thread_link(&mut tx, thread_id, kind, entity_id, "dissociated", now).await?;
        tx.commit().await?;
        Ok(LinkChange { thread_id, messages: changed })
    }

    /// Checks that the target and the record exist in one organization and takes that
    /// organization's lock. Returns the thread and, for a message target, the message.
    async fn resolve(
        &self,
        tx: &mut Transaction<'_, Any>,
        target: LinkTarget,
        kind: EntityKind,
        entity_id: i64,
    ) -> Result<(i64, Option<i64>)> {
        let (sql, id, what) = match target {
            LinkTarget::Message(id) => ("SELECT org_id, thread_id FROM messages WHERE id = $1", id, "message"),
            LinkTarget::Thread(id) => ("SELECT org_id, id AS thread_id FROM threads WHERE id = $1", id, "thread"),
        };
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no {what} with id {id}")))?;
        let org_id: i64 = row.try_get("org_id")?;
        let thread_id: Option<i64> = row.try_get("thread_id")?;
        let thread_id = thread_id.ok_or_else(|| StoreError::Invalid(format!("message {id} has no thread")))?;
        if entity_org(tx, kind, entity_id).await? != org_id {
            return Err(StoreError::Invalid(format!(
                "{} {entity_id} belongs to another organization than {what} {id}",
                kind.as_str()
            )));
        }
        lock_org(tx, org_id).await?;
        Ok((thread_id, matches!(target, LinkTarget::Message(_)).then_some(id)))
    }

    /// Works through queued retroactive linking (new leads, contacts and addresses), up to
    /// `max_jobs` jobs in one transaction. Returns how many jobs were done. Safe to run in
    /// several daemons at once: linking only inserts what is missing.
    pub async fn run_relink_jobs(&self, max_jobs: i64) -> Result<usize> {
        let mut tx = self.write_tx().await?;
        let lock = self.backend.skip_locked();
        let sql = format!("SELECT id, org_id, entity_kind, entity_id FROM relink_jobs ORDER BY id LIMIT $1{lock}");
        let jobs = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(max_jobs).fetch_all(&mut *tx).await?;
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut by_kind: Vec<(i64, EntityKind, Vec<i64>)> = Vec::new();
        let mut job_ids = Vec::with_capacity(jobs.len());
        for job in &jobs {
            job_ids.push(job.try_get::<i64, _>("id")?);
            let org_id: i64 = job.try_get("org_id")?;
            let kind = match EntityKind::parse(&job.try_get::<String, _>("entity_kind")?) {
                Some(EntityKind::Lead) => EntityKind::Lead,
                _ => EntityKind::Contact,
            };
            let id: i64 = job.try_get("entity_id")?;
            match by_kind.iter_mut().find(|(o, k, _)| *o == org_id && *k == kind) {
                Some((_, _, ids)) => ids.push(id),
                None => by_kind.push((org_id, kind, vec![id])),
            }
        }
        let mut orgs: Vec<i64> = by_kind.iter().map(|(o, _, _)| *o).collect();
        orgs.sort_unstable();
        orgs.dedup();
        for org in orgs {
            lock_org(&mut tx, org).await?;
        }
        let mut linked = 0;
        for (_, kind, ids) in &by_kind {
            linked += link_by_address(&mut tx, self.backend, LinkScope::People(*kind, ids), now).await?;
        }
        for chunk in job_ids.chunks(CHUNK) {
            let mut sql = String::from("DELETE FROM relink_jobs WHERE id IN (");
            self.backend.placeholders(1, chunk.len(), &mut sql);
            sql.push(')');
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        tracing::debug!(jobs = job_ids.len(), linked, "retroactive linking done");
        Ok(job_ids.len())
    }

    /// Queued retroactive-linking jobs (for status and tests).
    pub async fn pending_relink_jobs(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM relink_jobs").fetch_one(&self.pool).await?)
    }
}

/// A person's link of a message (or, with `message` None, of a whole thread) to a record,
/// inside the caller's transaction; the organization lock must be held. Returns the
/// number of message links created or changed.
pub(crate) async fn link_in(
    tx: &mut Transaction<'_, Any>,
    thread_id: i64,
    message: Option<i64>,
    kind: EntityKind,
    entity_id: i64,
    now: i64,
) -> Result<u64> {
    let mut changed = 0;
    if let Some(message) = message {
        changed += set_message_link(tx, message, kind, entity_id, "active", now).await?;
    }
    set_thread_link(tx, thread_id, kind, entity_id, "active", now).await?;
    if message.is_none() {
        changed += sqlx::query(concat!(
            "UPDATE message_links SET state = 'active', origin = 'manual', updated_at = $1 ",
            "WHERE entity_kind = $2 AND entity_id = $3 AND state = 'dissociated' ",
            "AND message_id IN (SELECT id FROM messages WHERE thread_id = $4)"
        ))
        .bind(now)
        .bind(kind.as_str())
        .bind(entity_id)
        .bind(thread_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    changed += sqlx::query(concat!(
        "INSERT INTO message_links (message_id, entity_kind, entity_id, origin, state, created_at, updated_at) ",
        "SELECT id, $1, $2, 'thread', 'active', $3, $3 FROM messages WHERE thread_id = $4 ",
        "ON CONFLICT (message_id, entity_kind, entity_id) DO NOTHING"
    ))
    .bind(kind.as_str())
    .bind(entity_id)
    .bind(now)
    .bind(thread_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed)
}

/// The organization a lead, contact or deal belongs to.
pub(crate) async fn entity_org(tx: &mut Transaction<'_, Any>, kind: EntityKind, entity_id: i64) -> Result<i64> {
    let sql = match kind {
        EntityKind::Lead => "SELECT org_id FROM leads WHERE id = $1",
        EntityKind::Contact => "SELECT org_id FROM contacts WHERE id = $1",
        EntityKind::Deal => "SELECT org_id FROM deals WHERE id = $1",
    };
    sqlx::query_scalar(sql)
        .bind(entity_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no {} with id {entity_id}", kind.as_str())))
}

/// Sets a person's decision on one message link (origin `manual`); returns 1 if it changed.
async fn set_message_link(
    tx: &mut Transaction<'_, Any>,
    message: i64,
    kind: EntityKind,
    entity_id: i64,
    state: &str,
    now: i64,
) -> Result<u64> {
    Ok(sqlx::query(concat!(
        "INSERT INTO message_links (message_id, entity_kind, entity_id, origin, state, created_at, updated_at) ",
        "VALUES ($1, $2, $3, 'manual', $4, $5, $5) ON CONFLICT (message_id, entity_kind, entity_id) ",
        "DO UPDATE SET state = excluded.state, origin = 'manual', updated_at = excluded.updated_at ",
        "WHERE message_links.state <> excluded.state"
    ))
    .bind(message)
    .bind(kind.as_str())
    .bind(entity_id)
    .bind(state)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

async fn set_thread_link(
    tx: &mut Transaction<'_, Any>,
    thread: i64,
    kind: EntityKind,
    entity_id: i64,
    state: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO thread_links (thread_id, entity_kind, entity_id, origin, state, created_at, updated_at) ",
        "VALUES ($1, $2, $3, 'manual', $4, $5, $5) ON CONFLICT (thread_id, entity_kind, entity_id) ",
        "DO UPDATE SET state = excluded.state, origin = 'manual', updated_at = excluded.updated_at"
    ))
    .bind(thread)
    .bind(kind.as_str())
    .bind(entity_id)
    .bind(state)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A link or unlink request as the CLI and the API take it: one message or thread, and
/// one lead, contact or deal.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["message", "thread"])))]
#[command(group(clap::ArgGroup::new("record").required(true).args(["lead", "contact", "deal"])))]
pub struct LinkRequest {
    #[arg(long)]
    pub message: Option<i64>,
    #[arg(long)]
    pub thread: Option<i64>,
    #[arg(long)]
    pub lead: Option<i64>,
    #[arg(long)]
    pub contact: Option<i64>,
    #[arg(long)]
    pub deal: Option<i64>,
}

impl LinkRequest {
    pub fn parts(&self) -> Result<(LinkTarget, EntityKind, i64)> {
        let target = match (self.message, self.thread) {
            (Some(m), None) => LinkTarget::Message(m),
            (None, Some(t)) => LinkTarget::Thread(t),
            _ => return Err(StoreError::Invalid("give exactly one of message and thread".into())),
        };
        let (kind, id) = one_entity(self.lead, self.contact, self.deal)?;
        Ok((target, kind, id))
    }
}

/// The one record of `lead`, `contact` and `deal` that is given.
pub fn one_entity(lead: Option<i64>, contact: Option<i64>, deal: Option<i64>) -> Result<(EntityKind, i64)> {
    match (lead, contact, deal) {
        (Some(id), None, None) => Ok((EntityKind::Lead, id)),
        (None, Some(id), None) => Ok((EntityKind::Contact, id)),
        (None, None, Some(id)) => Ok((EntityKind::Deal, id)),
        _ => Err(StoreError::Invalid("give exactly one of lead, contact and deal".into())),
    }
}
