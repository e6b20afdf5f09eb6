//! The outbox: messages waiting to be sent, being sent, sent or failed, with their
//! per-recipient results. A sent message is stored and linked in the same transaction
//! that marks it sent.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::crm::EntityKind;
use super::ingest::{MessageSource, store_messages};
use super::links::{entity_org, link_in};
use super::sql::parse_json;
use super::{Result, Store, StoreError, now_ms};
use crate::model::message::{ParsedMessage, Source};

/// A composed message to enqueue.
#[derive(Debug, Clone)]
pub struct NewOutgoing {
    pub user_id: i64,
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
    pub link: Option<(EntityKind, i64)>,
}

/// The sending user, as enqueueing needs it.
#[derive(Debug, Clone)]
pub struct Sender {
    pub user_id: i64,
    pub org_id: i64,
    pub email: String,
    pub name: String,
}

/// Where an outgoing message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Waiting for its (next) attempt.
    Queued,
    /// Claimed by a sender; an SMTP transaction may be under way.
    Sending,
    Sent,
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Queued => "queued",
            OutboxStatus::Sending => "sending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
        }
    }

    /// The status a stored `outbox.status` names; anything else is corruption.
    fn parse(stored: &str) -> Result<OutboxStatus> {
        [OutboxStatus::Queued, OutboxStatus::Sending, OutboxStatus::Sent, OutboxStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == stored)
            .ok_or_else(|| StoreError::Invalid(format!("outbox.status holds an unknown status {stored:?}")))
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    Pending,
    Accepted,
    Refused,
}

impl RecipientState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Accepted => "accepted",
            RecipientState::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientResult {
    pub address: String,
    pub state: RecipientState,
    /// The server's reply for a refused recipient.
    #[serde(default)]
    pub reply: String,
}

/// A sent message whose copy is due to be filed in the user's Sent folder.
#[derive(Debug, Clone)]
pub struct PendingSentCopy {
    pub id: i64,
    pub user_id: i64,
    pub raw: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutboxEntry {
    pub id: i64,
    pub user: String,
    pub message_id: String,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// The last server reply (or connection error) seen.
    pub last_reply: String,
    pub recipients: Vec<RecipientResult>,
    /// The copy in the Sent folder: pending, appended, provider, or failed: reason.
    pub sent_copy: String,
    /// The stored message (`messages.id`) once sent.
    pub stored_message: i64,
    pub created_at: i64,
    pub sent_at: i64,
}

/// A message claimed for one send attempt.
#[derive(Debug, Clone)]
pub struct OutgoingJob {
    pub id: i64,
    pub user_id: i64,
    pub envelope_from: String,
    pub raw: Vec<u8>,
    pub recipients: Vec<RecipientResult>,
    /// Attempts including this one.
    pub attempts: i64,
}

/// How an attempt ended, as the sender decided.
#[derive(Debug, Clone)]
pub enum AttemptEnd {
    /// Nothing pending any more (and at least one recipient accepted): sent.
    Sent { reply: String },
    /// Some recipients or the whole transaction met a transient failure: try again then.
    Retry { at: i64, reply: String },
    /// Permanent failure, or attempts used up.
    Failed { reply: String },
}

const ENTRY_COLUMNS: &str = "o.id, u.email AS user_email, o.message_id, o.status, o.attempts, o.next_attempt_at, \
    o.last_reply, o.recipient_results, o.sent_copy, o.stored_message, o.created_at, o.sent_at";

impl Store {
    /// The user with this address, who must have a mail account to send from.
    pub async fn sender(&self, email: &str) -> Result<Sender> {
        let row = sqlx::query(
            "SELECT u.id, u.org_id, u.email, u.name FROM users u JOIN mail_accounts a ON a.user_id = u.id WHERE u.email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no user {email} with a mail account")))?;
        Ok(Sender {
            user_id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
        })
    }

    /// Message-ID and References of a stored message of the organization, for a reply.
    pub async fn reply_context(&self, org_id: i64, message: i64) -> Result<(String, Vec<String>)> {
        let row = sqlx::query("SELECT message_id, refs FROM messages WHERE id = $1 AND org_id = $2")
            .bind(message)
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("no message with id {message} in the sender's organization"))
            })?;
        let refs: String = row.try_get("refs")?;
        Ok((row.try_get("message_id")?, refs.split_whitespace().map(String::from).collect()))
    }

    /// Queues a message. Refuses when the user or the organization has used up its
    /// rolling 24-hour quota, or when the record to link is of another organization.
    pub async fn enqueue_outgoing(&self, new: &NewOutgoing, per_user: u32, per_org: u32) -> Result<OutboxEntry> {
        let mut tx = self.write_tx().await?;
        let org_id: i64 =
            sqlx::query_scalar("SELECT org_id FROM users WHERE id = $1").bind(new.user_id).fetch_one(&mut *tx).await?;
        super::orgs::lock_org(&mut tx, org_id).await?;
        if let Some((kind, id)) = new.link
            && entity_org(&mut tx, kind, id).await? != org_id
        {
            return Err(StoreError::Invalid(format!("{} {id} belongs to another organization", kind.as_str())));
        }
        let now = now_ms();
        let since = now - 24 * 3600 * 1000;
        let user_count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE user_id = $1 AND created_at > $2")
            .bind(new.user_id)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
        if user_count >= i64::from(per_user) {
            return Err(StoreError::Limit(format!(
                "daily send limit reached: {user_count} messages in 24 hours (outbound.daily_limit_per_user = {per_user})"
            )));
        }
        let org_count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE org_id = $1 AND created_at > $2")
            .bind(org_id)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
        if org_count >= i64::from(per_org) {
            return Err(StoreError::Limit(format!(
                "the organization's daily send limit is reached: {org_count} messages in 24 hours \
                 (outbound.daily_limit_per_org = {per_org})"
            )));
        }
        let results: Vec<RecipientResult> = new
            .recipients
            .iter()
            .map(|a| RecipientResult { address: a.clone(), state: RecipientState::Pending, reply: String::new() })
            .collect();
        let (link_kind, link_id) = new.link.map_or(("", 0), |(k, id)| (k.as_str(), id));
        let id: i64 = sqlx::query_scalar(concat!(
            "INSERT INTO outbox (org_id, user_id, message_id, envelope_from, recipients, raw, link_kind, link_id, ",
            "status, next_attempt_at, recipient_results, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $9, $9) RETURNING id"
        ))
        .bind(org_id)
        .bind(new.user_id)
        .bind(&new.message_id)
        .bind(&new.envelope_from)
        .bind(json(&new.recipients)?)
        .bind(&new.raw)
        .bind(link_kind)
        .bind(link_id)
        .bind(now)
        .bind(json(&results)?)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.outbox_entry(id).await
    }

    pub async fn outbox_entry(&self, id: i64) -> Result<OutboxEntry> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM outbox o JOIN users u ON u.id = o.user_id WHERE o.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no outgoing message with id {id}")))?;
        entry_from_row(&row)
    }

    /// The outbox, newest first, optionally of one user and one status.
    pub async fn list_outbox(
        &self,
        user: Option<&str>,
        status: Option<OutboxStatus>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<OutboxEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM outbox o JOIN users u ON u.id = o.user_id \
             WHERE ($1 = '' OR u.email = $1) AND ($2 = '' OR o.status = $2) ORDER BY o.id DESC LIMIT $3 OFFSET $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.unwrap_or(""))
            .bind(status.map_or("", OutboxStatus::as_str))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Claims up to `limit` due messages for an attempt: queued ones whose time has come,
    /// and `sending` ones abandoned for `stale_ms` (their daemon died). The claim is
    /// committed before any SMTP traffic.
    pub async fn claim_outgoing(&self, stale_ms: i64, limit: i64) -> Result<Vec<OutgoingJob>> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let lock = self.backend.skip_locked();
        let sql = format!(
            "SELECT id, user_id, envelope_from, raw, recipient_results, attempts FROM outbox \
             WHERE (status = 'queued' AND next_attempt_at <= $1) OR (status = 'sending' AND updated_at < $2) \
             ORDER BY next_attempt_at, id LIMIT $3{lock}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(now - stale_ms)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            sqlx::query("UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            jobs.push(OutgoingJob {
                id,
                user_id: row.try_get("user_id")?,
                envelope_from: row.try_get("envelope_from")?,
                raw: row.try_get("raw")?,
                recipients: parse_json(&row.try_get::<String, _>("recipient_results")?, "outbox.recipient_results")?,
                attempts: row.try_get::<i64, _>("attempts")? + 1,
            });
        }
        tx.commit().await?;
        Ok(jobs)
    }

    /// Records an attempt. The first time a recipient has accepted the message, it is
    /// stored and linked through the ingest pipeline (source `outbound`) and linked to the
    /// record given at enqueue, in this same transaction.
    pub async fn finish_attempt(
        &self,
        job: &OutgoingJob,
        results: &[RecipientResult],
        end: &AttemptEnd,
        message: &ParsedMessage,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(concat!(
            "SELECT o.org_id, org.name AS org_name, o.stored_message, o.link_kind, o.link_id, a.provider_saves_sent ",
            "FROM outbox o JOIN organizations org ON org.id = o.org_id ",
            "JOIN mail_accounts a ON a.user_id = o.user_id WHERE o.id = $1"
        ))
        .bind(job.id)
        .fetch_one(&mut *tx)
        .await?;
        let mut stored: i64 = row.try_get("stored_message")?;
        let mut sent_copy = None;
        if stored == 0 && results.iter().any(|r| r.state == RecipientState::Accepted) {
            let source = MessageSource {
                org_id: row.try_get("org_id")?,
                org_name: row.try_get("org_name")?,
                kind: Source::Outbound,
                outgoing: true,
            };
            let (ids, _) = store_messages(&mut tx, self.backend, &source, &[message], now).await?;
            stored = ids
                .first()
                .copied()
                .ok_or_else(|| StoreError::Invalid("storing the sent message returned no id".into()))?;
            if let Some(kind) = EntityKind::parse(&row.try_get::<String, _>("link_kind")?) {
                let thread: Option<i64> = sqlx::query_scalar("SELECT thread_id FROM messages WHERE id = $1")
                    .bind(stored)
                    .fetch_one(&mut *tx)
                    .await?;
                if let Some(thread) = thread {
                    link_in(&mut tx, thread, Some(stored), kind, row.try_get("link_id")?, now).await?;
                }
            }
            let provider_files_it = row.try_get::<i64, _>("provider_saves_sent")? != 0;
            sent_copy = Some(if provider_files_it { "provider" } else { "pending" });
        }
        let (status, reply, next_at, sent_at) = match end {
            AttemptEnd::Sent { reply } => (OutboxStatus::Sent, reply, 0, now),
            AttemptEnd::Retry { at, reply } => (OutboxStatus::Queued, reply, *at, 0),
            AttemptEnd::Failed { reply } => (OutboxStatus::Failed, reply, 0, 0),
        };
        sqlx::query(concat!(
            "UPDATE outbox SET status = $1, last_reply = $2, next_attempt_at = $3, ",
            "sent_at = CASE WHEN $4 > 0 THEN $4 ELSE sent_at END, recipient_results = $5, stored_message = $6, ",
            "sent_copy = CASE WHEN $7 <> '' THEN $7 ELSE sent_copy END, updated_at = $8 WHERE id = $9"
        ))
        .bind(status.as_str())
        .bind(reply)
        .bind(next_at)
        .bind(sent_at)
        .bind(json(&results)?)
        .bind(stored)
        .bind(sent_copy.unwrap_or(""))
        .bind(now)
        .bind(job.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sent messages whose copy has to be filed in the user's Sent folder now.
    pub async fn pending_sent_copies(&self, limit: i64) -> Result<Vec<PendingSentCopy>> {
        let rows = sqlx::query(
            "SELECT id, user_id, raw, sent_copy_attempts FROM outbox \
             WHERE sent_copy = 'pending' AND sent_copy_retry_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingSentCopy {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    raw: r.try_get("raw")?,
                    attempts: r.try_get("sent_copy_attempts")?,
                })
            })
            .collect()
    }

    /// Counts a failed attempt to file a Sent copy; the copy stays pending until `retry_at`.
    pub async fn retry_sent_copy_at(&self, id: i64, retry_at: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_copy_attempts = sent_copy_attempts + 1, sent_copy_retry_at = $1, updated_at = $2 WHERE id = $3")
            .bind(retry_at)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_sent_copy(&self, id: i64, state: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_copy = $1, updated_at = $2 WHERE id = $3")
            .bind(state)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn entry_from_row(row: &AnyRow) -> Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: row.try_get("id")?,
        user: row.try_get("user_email")?,
        message_id: row.try_get("message_id")?,
        status: OutboxStatus::parse(&row.try_get::<String, _>("status")?)?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_reply: row.try_get("last_reply")?,
        recipients: parse_json(&row.try_get::<String, _>("recipient_results")?, "outbox.recipient_results")?,
        sent_copy: row.try_get("sent_copy")?,
        stored_message: row.try_get("stored_message")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}
