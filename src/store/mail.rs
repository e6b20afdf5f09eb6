//! Synced mail: folders with their cursors, messages, where they sit, who took part,
//! and what was skipped. A batch of messages and the cursor that covers it are
//! committed in one transaction, so the cursor never runs ahead of the messages.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Result, Store, StoreError, now_ms};
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
    pub folders: Vec<String>,
    pub subject: String,
    pub date: i64,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
}

const FOLDER_COLUMNS: &str = "id, account_id, role, name, uidvalidity, uidnext, highestmodseq, \
    synced_high_uid, synced_low_uid, initial_sync_done, server_messages";

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
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        sqlx::query("UPDATE message_locations SET removed_at = $1 WHERE folder_id = $2 AND uidvalidity <> $3 AND removed_at = 0")
            .bind(now)
            .bind(folder_id)
            .bind(uidvalidity)
            .execute(&mut *tx)
            .await?;
        sqlx::query(concat!(
            "UPDATE folders SET uidvalidity = $1, uidnext = 0, highestmodseq = 0, synced_high_uid = 0, ",
            "synced_low_uid = 0, initial_sync_done = 0, updated_at = $2 WHERE id = $3"
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
    pub async fn update_folder_counts(&self, folder_id: i64, server_messages: i64, uidnext: i64, highestmodseq: i64) -> Result<()> {
        sqlx::query("UPDATE folders SET server_messages = $1, uidnext = $2, highestmodseq = $3, updated_at = $4 WHERE id = $5")
            .bind(server_messages)
            .bind(uidnext)
            .bind(highestmodseq)
            .bind(now_ms())
            .bind(folder_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a batch and moves the folder's cursor, atomically.
    pub async fn commit_folder_batch(&self, batch: &FolderBatch) -> Result<BatchOutcome> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut outcome = BatchOutcome::default();
        for (uid, message) in &batch.messages {
            let (id, new) = insert_message(&mut tx, batch.org_id, message, "imap", now).await?;
            if new {
                outcome.new_message_ids.push(id);
            } else {
                outcome.duplicates += 1;
            }
            sqlx::query(concat!(
                "INSERT INTO message_locations (message_id, folder_id, uidvalidity, uid) VALUES ($1, $2, $3, $4) ",
                "ON CONFLICT (folder_id, uidvalidity, uid) DO NOTHING"
            ))
            .bind(id)
            .bind(batch.folder_id)
            .bind(batch.uidvalidity)
            .bind(uid)
            .execute(&mut *tx)
            .await?;
        }
        for s in &batch.skipped {
            sqlx::query(concat!(
                "INSERT INTO skipped (folder_id, uidvalidity, uid, reason, recipients, size, created_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (folder_id, uidvalidity, uid) DO NOTHING"
            ))
            .bind(batch.folder_id)
            .bind(batch.uidvalidity)
            .bind(s.uid)
            .bind(&s.reason)
            .bind(s.recipients)
            .bind(s.size)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let c = &batch.cursor;
        sqlx::query(concat!(
            "UPDATE folders SET synced_high_uid = $1, synced_low_uid = $2, initial_sync_done = $3, ",
            "uidnext = $4, highestmodseq = $5, server_messages = $6, updated_at = $7 ",
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// How many UIDs of the folder (under `uidvalidity`) the store accounts for:
    /// present messages plus skipped ones.
    pub async fn known_uid_count(&self, folder_id: i64, uidvalidity: i64) -> Result<i64> {
        let count: i64 = sqlx::query_scalar(concat!(
            "SELECT (SELECT COUNT(*) FROM message_locations WHERE folder_id = $1 AND uidvalidity = $2 AND removed_at = 0) ",
            "+ (SELECT COUNT(*) FROM skipped WHERE folder_id = $1 AND uidvalidity = $2)"
        ))
        .bind(folder_id)
        .bind(uidvalidity)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
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
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for uid in uids {
            sqlx::query("UPDATE message_locations SET removed_at = $1 WHERE folder_id = $2 AND uidvalidity = $3 AND uid = $4")
                .bind(now)
                .bind(folder_id)
                .bind(uidvalidity)
                .bind(uid)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM skipped WHERE folder_id = $1 AND uidvalidity = $2 AND uid = $3")
                .bind(folder_id)
                .bind(uidvalidity)
                .bind(uid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets an account's sync state and error (empty class and message clear it).
    pub async fn set_account_state(&self, account_id: i64, state: &str, error_class: &str, error_message: &str) -> Result<()> {
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
        let rows = sqlx::query(concat!(
            "SELECT m.id, m.message_id, m.subject, m.sent_at FROM messages m ",
            "WHERE m.id IN (SELECT l.message_id FROM message_locations l JOIN folders f ON f.id = l.folder_id ",
            "WHERE f.account_id = $1) ORDER BY m.sent_at DESC, m.id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(account_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let folders: Vec<String> = sqlx::query_scalar(concat!(
                "SELECT DISTINCT f.role FROM message_locations l JOIN folders f ON f.id = l.folder_id ",
                "WHERE l.message_id = $1 AND f.account_id = $2 AND l.removed_at = 0 ORDER BY f.role"
            ))
            .bind(id)
            .bind(account_id)
            .fetch_all(&self.pool)
            .await?;
            let mut summary = MessageSummary {
                id,
                message_id: row.try_get("message_id")?,
                folders,
                subject: row.try_get("subject")?,
                date: row.try_get("sent_at")?,
                from: Vec::new(),
                to: Vec::new(),
                cc: Vec::new(),
            };
            let people = sqlx::query("SELECT role, address FROM participants WHERE message_id = $1 ORDER BY role, position")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
            for p in people {
                let address: String = p.try_get("address")?;
                match p.try_get::<String, _>("role")?.as_str() {
                    "from" => summary.from.push(address),
                    "to" => summary.to.push(address),
                    "cc" => summary.cc.push(address),
                    _ => {}
                }
            }
            out.push(summary);
        }
        Ok(out)
    }
}

/// Inserts a message unless the organization already has one with its Message-ID.
/// Returns its id and whether it is new.
pub(crate) async fn insert_message(
    tx: &mut Transaction<'_, Any>,
    org_id: i64,
    m: &ParsedMessage,
    source: &str,
    now: i64,
) -> Result<(i64, bool)> {
    let inserted: Option<i64> = sqlx::query_scalar(concat!(
        "INSERT INTO messages (org_id, message_id, subject, sent_at, size, in_reply_to, refs, gm_thrid, ",
        "body_text, body_html, source, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ",
        "ON CONFLICT (org_id, message_id) DO NOTHING RETURNING id"
    ))
    .bind(org_id)
    .bind(&m.message_id)
    .bind(&m.subject)
    .bind(m.sent_at)
    .bind(m.size)
    .bind(&m.in_reply_to)
    .bind(m.references.join(" "))
    .bind(&m.gm_thrid)
    .bind(&m.body_text)
    .bind(&m.body_html)
    .bind(source)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(id) = inserted else {
        let id: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE org_id = $1 AND message_id = $2")
            .bind(org_id)
            .bind(&m.message_id)
            .fetch_one(&mut **tx)
            .await?;
        return Ok((id, false));
    };
    for (position, p) in m.participants.iter().enumerate() {
        sqlx::query("INSERT INTO participants (message_id, role, position, address, name) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(p.role.as_str())
            .bind(position as i64)
            .bind(&p.address)
            .bind(&p.name)
            .execute(&mut **tx)
            .await?;
    }
    for a in &m.attachments {
        sqlx::query(concat!(
            "INSERT INTO attachments (message_id, part_id, filename, content_type, size) VALUES ($1, $2, $3, $4, $5) ",
            "ON CONFLICT DO NOTHING"
        ))
        .bind(id)
        .bind(&a.part_id)
        .bind(&a.filename)
        .bind(&a.content_type)
        .bind(a.size)
        .execute(&mut **tx)
        .await?;
    }
    Ok((id, true))
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
    })
}
