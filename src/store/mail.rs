//! Synced mail: folders with their cursors, messages, where they sit, who took part,
//! and what was skipped. A batch of messages and the cursor that covers it are
//! committed in one transaction, so the cursor never runs ahead of the messages.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::crm::EntityKind;
use super::links::{LinkScope, LinkView, auto_create_leads, link_by_address, link_to_thread_records};
use super::orgs::{Org, lock_org};
use super::{Backend, Result, Store, StoreError, now_ms};
use crate::address::match_key;
use crate::ingest::ParsedMessage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FolderRole {
    Inbox,
    Sent,
}

impl FolderRole {
    pub fn as_str(self) -> &'static str {
        match self {
            FolderRole::Inbox => "inbox",
            FolderRole::Sent => "sent",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Folder {
    pub id: i64,
    pub account_id: i64,
    pub role: String,
    pub name: String,
    pub uidvalidity: i64,
    pub uidnext: i64,
    pub highestmodseq: i64,
    pub synced_high_uid: i64,
    pub synced_low_uid: i64,
    pub initial_sync_done: bool,
    pub server_messages: i64,
    /// When the current backfill pass began (ms), 0 if never.
    pub backfill_started_at: i64,
    /// Messages accounted for (stored or skipped) when that pass began.
    pub backfill_base: i64,
}

/// Where a folder's sync stands after a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub synced_high_uid: i64,
    pub synced_low_uid: i64,
    pub initial_sync_done: bool,
    pub uidnext: i64,
    pub highestmodseq: i64,
    pub server_messages: i64,
}

#[derive(Debug, Clone)]
pub struct SkippedMessage {
    pub uid: i64,
    pub reason: String,
    pub recipients: i64,
    pub size: i64,
}

/// One atomic step of a folder's sync.
#[derive(Debug, Clone)]
pub struct FolderBatch {
    pub folder_id: i64,
    pub org_id: i64,
    pub uidvalidity: i64,
    pub messages: Vec<(i64, ParsedMessage)>,
    pub skipped: Vec<SkippedMessage>,
    pub cursor: Cursor,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Ids of messages stored for the first time.
    pub new_message_ids: Vec<i64>,
    /// Messages already stored (another folder, another source, or a resync).
    pub duplicates: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    pub id: i64,
    pub message_id: String,
    pub thread_id: i64,
    /// `imap`, `bcc_drop` or `outbound`.
    pub source: String,
    /// Roles of the folders it sits in now (`inbox`, `sent`).
    pub folders: Vec<String>,
    pub subject: String,
    pub date: i64,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// Every link, active or dissociated, with its origin.
    pub links: Vec<LinkView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadView {
    pub id: i64,
    pub org: String,
    /// The records the thread itself is associated with (or unlinked from).
    pub links: Vec<LinkView>,
    pub messages: Vec<MessageSummary>,
}

const FOLDER_COLUMNS: &str = "id, account_id, role, name, uidvalidity, uidnext, highestmodseq, \
    synced_high_uid, synced_low_uid, initial_sync_done, server_messages, backfill_started_at, backfill_base";

impl Store {
    /// The folder of `role` for an account, created (or renamed) to `name`.
    pub async fn ensure_folder(&self, account_id: i64, role: FolderRole, name: &str) -> Result<Folder> {
        sqlx::query(concat!(
            "INSERT INTO folders (account_id, role, name, updated_at) VALUES ($1, $2, $3, $4) ",
            "ON CONFLICT (account_id, role) DO UPDATE SET name = excluded.name"
        ))
        .bind(account_id)
        .bind(role.as_str())
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.folder(account_id, role)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("folder {} of account {account_id}", role.as_str())))
    }

    pub async fn folder(&self, account_id: i64, role: FolderRole) -> Result<Option<Folder>> {
        let sql = format!("SELECT {FOLDER_COLUMNS} FROM folders WHERE account_id = $1 AND role = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(role.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(folder_from_row).transpose()
    }

    pub async fn folders(&self, account_id: i64) -> Result<Vec<Folder>> {
        let sql = format!("SELECT {FOLDER_COLUMNS} FROM folders WHERE account_id = $1 ORDER BY role");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account_id).fetch_all(&self.pool).await?;
        rows.iter().map(folder_from_row).collect()
    }

    /// The server changed the folder's UIDVALIDITY: every stored location under the old
    /// value is marked removed (the messages and their links stay) and the cursor restarts.
    pub async fn reset_folder(&self, folder_id: i64, uidvalidity: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        sqlx::query("UPDATE message_locations SET removed_at = $1 WHERE folder_id = $2 AND uidvalidity <> $3 AND removed_at = 0")
            .bind(now)
            .bind(folder_id)
            .bind(uidvalidity)
            .execute(&mut *tx)
            .await?;
        sqlx::query(concat!(
            "UPDATE folders SET uidvalidity = $1, uidnext = 0, highestmodseq = 0, synced_high_uid = 0, ",
            "synced_low_uid = 0, initial_sync_done = 0, known_uids = 0, updated_at = $2 WHERE id = $3"
        ))
        .bind(uidvalidity)
        .bind(now)
        .bind(folder_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records what the server reports without moving the cursor.
    pub async fn update_folder_counts(
        &self,
        folder_id: i64,
        server_messages: i64,
        uidnext: i64,
        highestmodseq: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE folders SET server_messages = $1, uidnext = $2, highestmodseq = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(server_messages)
        .bind(uidnext)
        .bind(highestmodseq)
        .bind(now_ms())
        .bind(folder_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the start of a backfill pass with the messages already accounted for, the
    /// baseline of the rate `status` reports.
    pub async fn mark_backfill_started(&self, folder_id: i64) -> Result<()> {
        sqlx::query(concat!(
            "UPDATE folders SET backfill_started_at = $1, backfill_base = ",
            "(SELECT COUNT(*) FROM message_locations WHERE folder_id = $2 AND removed_at = 0) + ",
            "(SELECT COUNT(*) FROM skipped WHERE folder_id = $2) WHERE id = $2"
        ))
        .bind(now_ms())
        .bind(folder_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a batch and moves the folder's cursor, atomically. A whole batch costs a
    /// handful of multi-row statements, not a few per message: with SQLite every statement
    /// is a round trip to the connection's thread, with PostgreSQL one to the server.
    pub async fn commit_folder_batch(&self, batch: &FolderBatch) -> Result<BatchOutcome> {
        let mut tx = self.write_tx().await?;
        if self.backend == Backend::Postgres {
            // No WAL flush wait: the messages stay on the IMAP server and the cursor is in
            // this same transaction, so a batch lost in a database crash is fetched again.
            // (Sources that acknowledge, like the BCC drop, keep synchronous commits.)
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        }
        let row = sqlx::query(concat!(
            "SELECT f.role, a.user_id, o.name AS org FROM folders f JOIN mail_accounts a ON a.id = f.account_id ",
            "JOIN organizations o ON o.id = $2 WHERE f.id = $1"
        ))
        .bind(batch.folder_id)
        .bind(batch.org_id)
        .fetch_one(&mut *tx)
        .await?;
        let source = MessageSource {
            org_id: batch.org_id,
            org_name: row.try_get("org")?,
            kind: "imap",
            outgoing: row.try_get::<String, _>("role")? == FolderRole::Sent.as_str(),
        };
        let now = now_ms();
        let messages: Vec<&ParsedMessage> = batch.messages.iter().map(|(_, m)| m).collect();
        let (ids, new_ids) = store_messages(&mut tx, self.backend, &source, &messages, now).await?;
        let outcome = BatchOutcome { duplicates: messages.len() - new_ids.len(), new_message_ids: new_ids };
        let locations: Vec<[Value; 4]> = batch
            .messages
            .iter()
            .zip(&ids)
            .map(|((uid, _), id)| {
                [Value::Int(*id), Value::Int(batch.folder_id), Value::Int(batch.uidvalidity), Value::Int(*uid)]
            })
            .collect();
        let mut added = insert_rows(
            &mut tx,
            self.backend,
            "INSERT INTO message_locations (message_id, folder_id, uidvalidity, uid) VALUES ",
            " ON CONFLICT (folder_id, uidvalidity, uid) DO NOTHING RETURNING uid",
            &locations,
        )
        .await?
        .len();
        let skipped: Vec<[Value; 7]> = batch
            .skipped
            .iter()
            .map(|s| {
                [
                    Value::Int(batch.folder_id),
                    Value::Int(batch.uidvalidity),
                    Value::Int(s.uid),
                    Value::Text(&s.reason),
                    Value::Int(s.recipients),
                    Value::Int(s.size),
                    Value::Int(now),
                ]
            })
            .collect();
        added += insert_rows(
            &mut tx,
            self.backend,
            "INSERT INTO skipped (folder_id, uidvalidity, uid, reason, recipients, size, created_at) VALUES ",
            " ON CONFLICT (folder_id, uidvalidity, uid) DO NOTHING RETURNING uid",
            &skipped,
        )
        .await?
        .len();
        let c = &batch.cursor;
        sqlx::query(concat!(
            "UPDATE folders SET synced_high_uid = $1, synced_low_uid = $2, initial_sync_done = $3, ",
            "uidnext = $4, highestmodseq = $5, server_messages = $6, updated_at = $7, known_uids = known_uids + $10 ",
            "WHERE id = $8 AND uidvalidity = $9"
        ))
        .bind(c.synced_high_uid)
        .bind(c.synced_low_uid)
        .bind(i64::from(c.initial_sync_done))
        .bind(c.uidnext)
        .bind(c.highestmodseq)
        .bind(c.server_messages)
        .bind(now)
        .bind(batch.folder_id)
        .bind(batch.uidvalidity)
        .bind(added as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.refresh_statistics();
        Ok(outcome)
    }

    /// How many UIDs of the folder (under `uidvalidity`) the store accounts for:
    /// present messages plus skipped ones. A counter, not a count: constant time.
    pub async fn known_uid_count(&self, folder_id: i64, uidvalidity: i64) -> Result<i64> {
        let count: Option<i64> =
            sqlx::query_scalar("SELECT known_uids FROM folders WHERE id = $1 AND uidvalidity = $2")
                .bind(folder_id)
                .bind(uidvalidity)
                .fetch_optional(&self.pool)
                .await?;
        Ok(count.unwrap_or(0))
    }

    /// UIDs of present messages of the folder, ascending.
    pub async fn present_uids(&self, folder_id: i64, uidvalidity: i64) -> Result<Vec<i64>> {
        let uids = sqlx::query_scalar(
            "SELECT uid FROM message_locations WHERE folder_id = $1 AND uidvalidity = $2 AND removed_at = 0 ORDER BY uid",
        )
        .bind(folder_id)
        .bind(uidvalidity)
        .fetch_all(&self.pool)
        .await?;
        Ok(uids)
    }

    /// Records that these UIDs left the folder (expunged or moved). Messages stay.
    pub async fn mark_removed(&self, folder_id: i64, uidvalidity: i64, uids: &[i64]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let mut removed = 0;
        for uid in uids {
            removed += sqlx::query(
                "UPDATE message_locations SET removed_at = $1 WHERE folder_id = $2 AND uidvalidity = $3 AND uid = $4 AND removed_at = 0",
            )
            .bind(now)
            .bind(folder_id)
            .bind(uidvalidity)
            .bind(uid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            removed += sqlx::query("DELETE FROM skipped WHERE folder_id = $1 AND uidvalidity = $2 AND uid = $3")
                .bind(folder_id)
                .bind(uidvalidity)
                .bind(uid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        sqlx::query("UPDATE folders SET known_uids = known_uids - $1 WHERE id = $2 AND uidvalidity = $3")
            .bind(removed as i64)
            .bind(folder_id)
            .bind(uidvalidity)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets an account's sync state and error (empty class and message clear it).
    pub async fn set_account_state(
        &self,
        account_id: i64,
        state: &str,
        error_class: &str,
        error_message: &str,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(concat!(
            "UPDATE mail_accounts SET state = $1, error_class = $2, error_message = $3, ",
            "error_at = CASE WHEN $2 = '' THEN error_at ELSE $4 END WHERE id = $5"
        ))
        .bind(state)
        .bind(error_class)
        .bind(error_message)
        .bind(now)
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A standing remark about the account shown in status (e.g. no Sent folder).
    pub async fn set_account_note(&self, account_id: i64, note: &str) -> Result<()> {
        sqlx::query("UPDATE mail_accounts SET note = $1 WHERE id = $2")
            .bind(note)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn skipped_count(&self, folder_id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM skipped WHERE folder_id = $1")
            .bind(folder_id)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn stored_count(&self, folder_id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM message_locations WHERE folder_id = $1 AND removed_at = 0")
            .bind(folder_id)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Messages an account has synced, newest first.
    pub async fn list_account_messages(&self, account_id: i64, limit: i64, offset: i64) -> Result<Vec<MessageSummary>> {
        let ids: Vec<i64> = sqlx::query_scalar(concat!(
            "SELECT m.id FROM messages m ",
            "WHERE m.id IN (SELECT l.message_id FROM message_locations l JOIN folders f ON f.id = l.folder_id ",
            "WHERE f.account_id = $1) ORDER BY m.sent_at DESC, m.id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(account_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        self.message_summaries(&ids).await
    }

    /// Messages actively linked to a lead, contact or deal, newest first.
    pub async fn list_linked_messages(
        &self,
        kind: EntityKind,
        entity_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<MessageSummary>> {
        let ids: Vec<i64> = sqlx::query_scalar(concat!(
            "SELECT m.id FROM messages m JOIN message_links ml ON ml.message_id = m.id ",
            "WHERE ml.entity_kind = $1 AND ml.entity_id = $2 AND ml.state = 'active' ",
            "ORDER BY m.sent_at DESC, m.id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(kind.as_str())
        .bind(entity_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        self.message_summaries(&ids).await
    }

    /// A thread: its messages, oldest first, and the records it is associated with.
    pub async fn thread(&self, thread_id: i64) -> Result<ThreadView> {
        let org: String =
            sqlx::query_scalar("SELECT o.name FROM threads t JOIN organizations o ON o.id = t.org_id WHERE t.id = $1")
                .bind(thread_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no thread with id {thread_id}")))?;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM messages WHERE thread_id = $1 ORDER BY sent_at, id")
            .bind(thread_id)
            .fetch_all(&self.pool)
            .await?;
        let links = sqlx::query("SELECT entity_kind, entity_id, origin, state FROM thread_links WHERE thread_id = $1 ORDER BY entity_kind, entity_id")
            .bind(thread_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(link_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(ThreadView { id: thread_id, org, links, messages: self.message_summaries(&ids).await? })
    }

    /// Summaries of messages, in the order of `ids`: a fixed number of queries, whatever
    /// the number of messages.
    async fn message_summaries(&self, ids: &[i64]) -> Result<Vec<MessageSummary>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut index = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PARAMS) {
            let by_ids = |select: &str, tail: &str| {
                let mut sql = format!("{select} IN (");
                placeholders(self.backend, 1, chunk.len(), &mut sql);
                sql.push(')');
                sql.push_str(tail);
                sql
            };
            let run = |sql: String| {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(&self.pool)
            };
            for row in
                run(by_ids("SELECT id, message_id, subject, sent_at, thread_id, source FROM messages WHERE id", ""))
                    .await?
            {
                let id: i64 = row.try_get("id")?;
                index.insert(id, out.len());
                out.push(MessageSummary {
                    id,
                    message_id: row.try_get("message_id")?,
                    thread_id: row.try_get::<Option<i64>, _>("thread_id")?.unwrap_or(0),
                    source: row.try_get("source")?,
                    folders: Vec::new(),
                    subject: row.try_get("subject")?,
                    date: row.try_get("sent_at")?,
                    from: Vec::new(),
                    to: Vec::new(),
                    cc: Vec::new(),
                    links: Vec::new(),
                });
            }
            let folders = by_ids(
                "SELECT DISTINCT l.message_id, f.role FROM message_locations l JOIN folders f ON f.id = l.folder_id \
                 WHERE l.removed_at = 0 AND l.message_id",
                " ORDER BY f.role",
            );
            for row in run(folders).await? {
                if let Some(&i) = index.get(&row.try_get::<i64, _>("message_id")?) {
                    out[i].folders.push(row.try_get("role")?);
                }
            }
            let people =
                by_ids("SELECT message_id, role, address FROM participants WHERE message_id", " ORDER BY position");
            for row in run(people).await? {
                let Some(&i) = index.get(&row.try_get::<i64, _>("message_id")?) else { continue };
                let address: String = row.try_get("address")?;
                match row.try_get::<String, _>("role")?.as_str() {
                    "from" => out[i].from.push(address),
                    "to" => out[i].to.push(address),
                    "cc" => out[i].cc.push(address),
                    _ => {}
                }
            }
            let links = by_ids(
                "SELECT message_id, entity_kind, entity_id, origin, state FROM message_links WHERE message_id",
                " ORDER BY entity_kind, entity_id",
            );
            for row in run(links).await? {
                if let Some(&i) = index.get(&row.try_get::<i64, _>("message_id")?) {
                    out[i].links.push(link_from_row(&row)?);
                }
            }
        }
        let position: std::collections::HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        out.sort_by_key(|m| position.get(&m.id).copied().unwrap_or(usize::MAX));
        Ok(out)
    }
}

fn link_from_row(row: &AnyRow) -> Result<LinkView> {
    Ok(LinkView {
        entity_kind: row.try_get("entity_kind")?,
        entity_id: row.try_get("entity_id")?,
        origin: row.try_get("origin")?,
        state: row.try_get("state")?,
    })
}

/// A bind value for the multi-row statements below.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
}

/// Most bind parameters per statement: below SQLite's limit (32766) and PostgreSQL's (65535).
const MAX_PARAMS: usize = 30_000;

/// The `i`-th (1-based) bind placeholder. SQLite gets anonymous `?`: it resolves a named
/// `$N` by scanning all parameter names, which is quadratic in a statement with thousands.
pub(crate) fn placeholder(backend: Backend, i: usize, sql: &mut String) {
    match backend {
        Backend::Sqlite => sql.push('?'),
        Backend::Postgres => {
            sql.push('$');
            sql.push_str(&i.to_string());
        }
    }
}

/// Appends `count` comma-separated placeholders numbered from `first`; returns the number
/// of the next placeholder.
pub(crate) fn placeholders(backend: Backend, first: usize, count: usize, sql: &mut String) -> usize {
    for i in 0..count {
        if i > 0 {
            sql.push_str(", ");
        }
        placeholder(backend, first + i, sql);
    }
    first + count
}

/// Rows of `select` (which names a table with an `org_id` column) for one organization
/// whose `column` is one of `values`, in as few statements as the parameter limit allows.
pub(crate) async fn fetch_by_org_in(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    select: &str,
    column: &str,
    org_id: i64,
    values: &[&str],
) -> Result<Vec<AnyRow>> {
    let mut rows = Vec::new();
    for chunk in values.chunks(MAX_PARAMS - 1) {
        let mut sql = format!("{select} WHERE org_id = ");
        placeholder(backend, 1, &mut sql);
        sql.push_str(&format!(" AND {column} IN ("));
        placeholders(backend, 2, chunk.len(), &mut sql);
        sql.push(')');
        // Only placeholders and the caller's fixed identifiers are interpolated.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org_id);
        for value in chunk {
            query = query.bind(*value);
        }
        rows.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(rows)
}

/// Runs `head VALUES (...), (...) tail` over `rows`, chunked to stay under [`MAX_PARAMS`].
/// Returns the rows the statements returned (for a `RETURNING` tail). `head` and `tail`
/// must not contain placeholders.
pub(crate) async fn insert_rows<const N: usize>(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    head: &str,
    tail: &str,
    rows: &[[Value<'_>; N]],
) -> Result<Vec<AnyRow>> {
    let mut returned = Vec::new();
    for chunk in rows.chunks((MAX_PARAMS / N).max(1)) {
        let mut sql = String::with_capacity(head.len() + tail.len() + chunk.len() * N * 6);
        sql.push_str(head);
        for (r, _) in chunk.iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            placeholders(backend, r * N + 1, N, &mut sql);
            sql.push(')');
        }
        sql.push_str(tail);
        // Only placeholders are interpolated; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            for value in row {
                query = match *value {
                    Value::Int(v) => query.bind(v),
                    Value::Text(v) => query.bind(v),
                };
            }
        }
        returned.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(returned)
}

/// Where new messages come from, as the ingest rules need to know.
pub(crate) struct MessageSource {
    pub org_id: i64,
    pub org_name: String,
    /// `imap`, `bcc_drop` or `outbound`.
    pub kind: &'static str,
    /// Mail the user sent (Sent folder, outbound, BCC drop): its Bcc links too.
    pub outgoing: bool,
}

/// The store's half of the ingest pipeline, the same for every source: takes the
/// organization's lock, stores the messages it does not have yet (threaded), auto-creates
/// leads as its policy says, and links the new messages by address and by thread.
/// Returns the id of every input message, in order, and the ids that are new.
pub(crate) async fn store_messages(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    source: &MessageSource,
    messages: &[&ParsedMessage],
    now: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let org = Org { id: source.org_id, settings: lock_org(tx, source.org_id).await? };
    let (ids, new_ids) = insert_messages(tx, backend, &org, source, messages, now).await?;
    if !new_ids.is_empty() {
        let fresh: Vec<&ParsedMessage> =
            messages.iter().zip(&ids).filter(|(_, id)| new_ids.contains(id)).map(|(m, _)| *m).collect();
        auto_create_leads(tx, backend, &org, &source.org_name, &fresh, source.outgoing).await?;
        link_by_address(tx, backend, LinkScope::Messages(&new_ids), now).await?;
        link_to_thread_records(tx, backend, &new_ids, now).await?;
    }
    Ok((ids, new_ids))
}

/// Inserts messages the organization does not have yet (by Message-ID) with their
/// participants and attachment metadata. Returns the id of every input message, in order
/// (existing ones included), and the ids that are new.
async fn insert_messages(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org: &Org,
    source: &MessageSource,
    messages: &[&ParsedMessage],
    now: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let org_id = org.id;
    let rules = org.settings.match_rules();
    let outgoing = i64::from(source.outgoing);
    let threads = assign_threads(tx, backend, org_id, messages, now).await?;
    let refs: Vec<String> = messages.iter().map(|m| m.references.join(" ")).collect();
    let rows: Vec<[Value; 14]> = messages
        .iter()
        .zip(&refs)
        .zip(&threads)
        .map(|((m, refs), thread)| {
            [
                Value::Int(org_id),
                Value::Text(&m.message_id),
                Value::Text(&m.subject),
                Value::Int(m.sent_at),
                Value::Int(m.size),
                Value::Text(&m.in_reply_to),
                Value::Text(refs),
                Value::Text(&m.gm_thrid),
                Value::Text(&m.body_text),
                Value::Text(&m.body_html),
                Value::Text(source.kind),
                Value::Int(now),
                Value::Int(*thread),
                Value::Int(outgoing),
            ]
        })
        .collect();
    let inserted = insert_rows(
        tx,
        backend,
        "INSERT INTO messages (org_id, message_id, subject, sent_at, size, in_reply_to, refs, gm_thrid, \
         body_text, body_html, source, created_at, thread_id, outgoing) VALUES ",
        " ON CONFLICT (org_id, message_id) DO NOTHING RETURNING id, message_id",
        &rows,
    )
    .await?;
    let mut by_message_id: std::collections::HashMap<String, (i64, bool)> = std::collections::HashMap::new();
    for row in &inserted {
        by_message_id.insert(row.try_get("message_id")?, (row.try_get("id")?, true));
    }
    // Messages the organization already had: one lookup for the whole batch.
    let missing: Vec<&str> =
        messages.iter().filter(|m| !by_message_id.contains_key(&m.message_id)).map(|m| m.message_id.as_str()).collect();
    for row in
        fetch_by_org_in(tx, backend, "SELECT id, message_id FROM messages", "message_id", org_id, &missing).await?
    {
        by_message_id.insert(row.try_get("message_id")?, (row.try_get("id")?, false));
    }
    let mut ids = Vec::with_capacity(messages.len());
    let mut new_ids = Vec::new();
    let keys: Vec<Vec<String>> =
        messages.iter().map(|m| m.participants.iter().map(|p| match_key(&p.address, rules)).collect()).collect();
    let mut participants: Vec<[Value; 6]> = Vec::new();
    let mut attachments: Vec<[Value; 5]> = Vec::new();
    for (m, keys) in messages.iter().zip(&keys) {
        let Some((id, new)) = by_message_id.get_mut(&m.message_id) else {
            return Err(StoreError::Invalid(format!("message {} vanished during insert", m.message_id)));
        };
        ids.push(*id);
        if !*new {
            continue;
        }
        // A message twice in one batch gets its participants once.
        *new = false;
        new_ids.push(*id);
        for (position, (p, key)) in m.participants.iter().zip(keys).enumerate() {
            participants.push([
                Value::Int(*id),
                Value::Text(p.role.as_str()),
                Value::Int(position as i64),
                Value::Text(&p.address),
                Value::Text(&p.name),
                Value::Text(key),
            ]);
        }
        for a in &m.attachments {
            attachments.push([
                Value::Int(*id),
                Value::Text(&a.part_id),
                Value::Text(&a.filename),
                Value::Text(&a.content_type),
                Value::Int(a.size),
            ]);
        }
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO participants (message_id, role, position, address, name, match_key) VALUES ",
        "",
        &participants,
    )
    .await?;
    insert_rows(
        tx,
        backend,
        "INSERT INTO attachments (message_id, part_id, filename, content_type, size) VALUES ",
        " ON CONFLICT DO NOTHING",
        &attachments,
    )
    .await?;
    Ok((ids, new_ids))
}

/// Puts every message of a batch in a thread (the grouping rule is
/// [`crate::ingest::thread`]): creates the threads that are new, merges stored threads
/// that the batch links, records every key. Returns each message's thread id, in order.
async fn assign_threads(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org_id: i64,
    messages: &[&ParsedMessage],
    now: i64,
) -> Result<Vec<i64>> {
    use crate::ingest::thread::{group, thread_keys};
    let keys: Vec<Vec<String>> = messages.iter().map(|m| thread_keys(m)).collect();
    let mut all: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    let mut stored: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for row in fetch_by_org_in(tx, backend, "SELECT ref, thread_id FROM thread_refs", "ref", org_id, &all).await? {
        stored.insert(row.try_get("ref")?, row.try_get("thread_id")?);
    }
    let groups = group(&keys, &stored);
    let fresh = groups.iter().filter(|g| g.existing.is_empty()).count();
    let rows: Vec<[Value; 2]> = (0..fresh).map(|_| [Value::Int(org_id), Value::Int(now)]).collect();
    // New threads are empty and interchangeable, so the order of RETURNING does not matter.
    let mut new_ids =
        insert_rows(tx, backend, "INSERT INTO threads (org_id, created_at) VALUES ", " RETURNING id", &rows)
            .await?
            .into_iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
    let mut assigned = vec![0i64; messages.len()];
    let mut key_rows: Vec<[Value; 3]> = Vec::new();
    for g in &groups {
        let target = match g.existing.len() {
            0 => new_ids.pop().ok_or_else(|| StoreError::Invalid("thread creation returned too few ids".into()))?,
            1 => g.existing[0],
            _ => largest_thread(tx, backend, &g.existing).await?,
        };
        for &other in g.existing.iter().filter(|&&t| t != target) {
            merge_thread(tx, other, target).await?;
        }
        for &i in &g.members {
            assigned[i] = target;
            for k in &keys[i] {
                key_rows.push([Value::Int(org_id), Value::Text(k), Value::Int(target)]);
            }
        }
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO thread_refs (org_id, ref, thread_id) VALUES ",
        " ON CONFLICT (org_id, ref) DO NOTHING",
        &key_rows,
    )
    .await?;
    Ok(assigned)
}

/// Of threads about to merge, the one with the most keys: folding the smaller ones into it
/// moves each row O(log n) times at most (union by size), however threads grow.
async fn largest_thread(tx: &mut Transaction<'_, Any>, backend: Backend, threads: &[i64]) -> Result<i64> {
    let mut sql = String::from("SELECT thread_id, COUNT(*) AS n FROM thread_refs WHERE thread_id IN (");
    placeholders(backend, 1, threads.len(), &mut sql);
    sql.push_str(") GROUP BY thread_id");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for t in threads {
        query = query.bind(*t);
    }
    let mut best = (threads.iter().copied().min().unwrap_or(0), -1i64);
    for row in query.fetch_all(&mut **tx).await? {
        let (t, n): (i64, i64) = (row.try_get("thread_id")?, row.try_get("n")?);
        if n > best.1 || (n == best.1 && t < best.0) {
            best = (t, n);
        }
    }
    Ok(best.0)
}

/// Folds thread `from` into `into`: its keys, messages and links move; where both link
/// the same record, a person's unlink (dissociated) wins, so merging never re-links.
async fn merge_thread(tx: &mut Transaction<'_, Any>, from: i64, into: i64) -> Result<()> {
    for sql in [
        "UPDATE thread_refs SET thread_id = $2 WHERE thread_id = $1",
        "UPDATE messages SET thread_id = $2 WHERE thread_id = $1",
        "UPDATE thread_links SET state = 'dissociated' WHERE thread_id = $2 AND state = 'active' AND EXISTS \
         (SELECT 1 FROM thread_links o WHERE o.thread_id = $1 AND o.entity_kind = thread_links.entity_kind \
         AND o.entity_id = thread_links.entity_id AND o.state = 'dissociated')",
        "UPDATE thread_links SET thread_id = $2 WHERE thread_id = $1 AND NOT EXISTS \
         (SELECT 1 FROM thread_links t WHERE t.thread_id = $2 AND t.entity_kind = thread_links.entity_kind \
         AND t.entity_id = thread_links.entity_id)",
        "DELETE FROM thread_links WHERE thread_id = $1",
        "DELETE FROM threads WHERE id = $1 AND $2 <> $1",
    ] {
        sqlx::query(sql).bind(from).bind(into).execute(&mut **tx).await?;
    }
    tracing::debug!(from, into, "threads merged");
    Ok(())
}

fn folder_from_row(row: &AnyRow) -> Result<Folder> {
    Ok(Folder {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        role: row.try_get("role")?,
        name: row.try_get("name")?,
        uidvalidity: row.try_get("uidvalidity")?,
        uidnext: row.try_get("uidnext")?,
        highestmodseq: row.try_get("highestmodseq")?,
        synced_high_uid: row.try_get("synced_high_uid")?,
        synced_low_uid: row.try_get("synced_low_uid")?,
        initial_sync_done: row.try_get::<i64, _>("initial_sync_done")? != 0,
        server_messages: row.try_get("server_messages")?,
        backfill_started_at: row.try_get("backfill_started_at")?,
        backfill_base: row.try_get("backfill_base")?,
    })
}
