//! Synced mail: folders with their cursors, messages, where they sit, who took part,
//! and what was skipped. A batch of messages and the cursor that covers it are
//! committed in one transaction, so the cursor never runs ahead of the messages.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::accounts::AccountState;
use super::crm::EntityKind;
use super::ingest::{MessageSource, store_messages};
use super::links::LinkView;
use super::sql::{MAX_PARAMS, Value, insert_rows};
use super::{Result, Store, StoreError, now_ms};
use crate::model::message::{ParsedMessage, Source};

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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageSummary {
    pub id: i64,
    pub message_id: String,
    pub thread_id: i64,
    pub source: Source,
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
        if let Some(relaxed) = self.backend.relaxed_commit() {
            // No WAL flush wait: the messages stay on the IMAP server and the cursor is in
            // this same transaction, so a batch lost in a database crash is fetched again.
            // (Sources that acknowledge, like the BCC drop, keep synchronous commits.)
            sqlx::query(relaxed).execute(&mut *tx).await?;
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
            kind: Source::Imap,
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
        state: AccountState,
        error_class: &str,
        error_message: &str,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(concat!(
            "UPDATE mail_accounts SET state = $1, error_class = $2, error_message = $3, ",
            "error_at = CASE WHEN $2 = '' THEN error_at ELSE $4 END WHERE id = $5"
        ))
        .bind(state.as_str())
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
                self.backend.placeholders(1, chunk.len(), &mut sql);
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
                    source: {
                        let stored: String = row.try_get("source")?;
                        Source::parse(&stored).ok_or_else(|| {
                            StoreError::Invalid(format!("messages.source holds an unknown source {stored:?}"))
                        })?
                    },
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
    LinkView::from_columns(
        &row.try_get::<String, _>("entity_kind")?,
        row.try_get("entity_id")?,
        &row.try_get::<String, _>("origin")?,
        &row.try_get::<String, _>("state")?,
    )
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
