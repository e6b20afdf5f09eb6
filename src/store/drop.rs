//! BCC-drop addresses: one per user, `<token>@<bcc_drop.domain>`, with a random token
//! that can be rotated (the old one then stops working).

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::ingest::{MessageSource, store_messages};
use super::{Result, Store, StoreError, conflict_or, now_ms};
use crate::model::message::{ParsedMessage, Source};

/// Lower-case letters and digits without the look-alikes 0, 1, l and o: 32 symbols, so
/// each is 5 random bits; 26 of them carry 130 bits.
const TOKEN_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const TOKEN_LEN: usize = 26;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DropAddress {
    pub user: String,
    pub address: String,
    pub created_at: i64,
}

fn new_token() -> Result<String> {
    let mut bytes = [0u8; TOKEN_LEN];
    crate::secrets::random_bytes(&mut bytes)
        .map_err(|e| StoreError::Invalid(format!("no randomness for a token: {e}")))?;
    Ok(bytes.iter().map(|b| char::from(TOKEN_ALPHABET[usize::from(b & 31)])).collect())
}

impl Store {
    /// The user's drop address under `domain`, created on first use; with `rotate`, a
    /// new token replaces the old one.
    pub async fn drop_address(&self, user_email: &str, domain: &str, rotate: bool) -> Result<DropAddress> {
        let mut tx = self.write_tx().await?;
        let user_id = user_id(&mut tx, user_email).await?;
        let token = new_token()?;
        let sql = if rotate {
            "INSERT INTO drop_addresses (user_id, token, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET token = excluded.token, created_at = excluded.created_at"
        } else {
            "INSERT INTO drop_addresses (user_id, token, created_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(user_id)
            .bind(&token)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, || "token collision; try again".into()))?;
        let row = sqlx::query("SELECT token, created_at FROM drop_addresses WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let token: String = row.try_get("token")?;
        Ok(DropAddress {
            user: user_email.to_string(),
            address: format!("{token}@{domain}"),
            created_at: row.try_get("created_at")?,
        })
    }

    /// The user a drop token belongs to, with the addresses they may send from.
    pub async fn drop_user(&self, token: &str) -> Result<Option<DropUser>> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.org_id, o.name FROM drop_addresses d JOIN users u ON u.id = d.user_id \
             JOIN organizations o ON o.id = u.org_id WHERE d.token = $1",
        )
        .bind(token.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: i64 = row.try_get(0)?;
        let email: String = row.try_get(1)?;
        let mut addresses: Vec<String> = sqlx::query_scalar("SELECT address FROM user_addresses WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        addresses.push(email.clone());
        addresses.sort();
        addresses.dedup();
        Ok(Some(DropUser { user_id, email, org_id: row.try_get(2)?, org_name: row.try_get(3)?, addresses }))
    }

    /// Stores a dropped message through the ingest pipeline (outgoing mail of the user)
    /// and records its outcome in the same transaction: `imported`, or `duplicate` when
    /// the organization already has it (synced, sent, or dropped before).
    pub async fn import_dropped(
        &self,
        user: &DropUser,
        receipt: &DropReceipt,
        message: &ParsedMessage,
    ) -> Result<DropOutcome> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let source = MessageSource {
            org_id: user.org_id,
            org_name: user.org_name.clone(),
            kind: Source::BccDrop,
            outgoing: true,
        };
        let (ids, new_ids) = store_messages(&mut tx, self.backend, &source, &[message], now).await?;
        let id =
            *ids.first().ok_or_else(|| StoreError::Invalid("storing the dropped message returned no id".into()))?;
        let outcome = if new_ids.contains(&id) {
            DropOutcome::Imported { message: id }
        } else {
            DropOutcome::Duplicate { message: id }
        };
        insert_delivery(&mut tx, user.user_id, receipt, &outcome, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records a message that was refused or failed (`user_id` 0: before a user was known).
    pub async fn record_drop(&self, user_id: i64, receipt: &DropReceipt, outcome: &DropOutcome) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_delivery(&mut tx, user_id, receipt, outcome, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds an address the user sends from (a second mailbox, a phone's account): drop
    /// mail from it is accepted, and like every own address it never links to a record.
    /// Returns all of the user's addresses.
    pub async fn add_user_address(&self, user_email: &str, address: &str) -> Result<Vec<String>> {
        let address = crate::address::normalize_email(address).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        let user_id = user_id(&mut tx, user_email).await?;
        sqlx::query("INSERT INTO user_addresses (user_id, address) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .bind(&address)
            .execute(&mut *tx)
            .await?;
        let mut all: Vec<String> = sqlx::query_scalar("SELECT address FROM user_addresses WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        all.push(user_email.to_string());
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Recorded drop deliveries, newest first; only `user_email`'s when given.
    pub async fn drop_deliveries(
        &self,
        user_email: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DropDelivery>> {
        let rows = sqlx::query(
            "SELECT d.id, COALESCE(u.email, ''), d.received_at, d.peer, d.envelope_from, d.header_from, d.message_id, \
             d.size, d.outcome, d.reason, d.stored_message FROM drop_deliveries d LEFT JOIN users u ON u.id = d.user_id \
             WHERE ($1 = '' OR u.email = $1) ORDER BY d.id DESC LIMIT $2 OFFSET $3",
        )
        .bind(user_email.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DropDelivery {
                    id: r.try_get(0)?,
                    user: r.try_get(1)?,
                    received_at: r.try_get(2)?,
                    peer: r.try_get(3)?,
                    envelope_from: r.try_get(4)?,
                    header_from: r.try_get(5)?,
                    message_id: r.try_get(6)?,
                    size: r.try_get(7)?,
                    outcome: r.try_get(8)?,
                    reason: r.try_get(9)?,
                    stored_message: r.try_get(10)?,
                })
            })
            .collect()
    }
}

/// The id of the user `email`; `NotFound` names them.
pub(super) async fn user_id(tx: &mut Transaction<'_, Any>, email: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no user {email}")))
}

async fn insert_delivery(
    tx: &mut Transaction<'_, Any>,
    user_id: i64,
    receipt: &DropReceipt,
    outcome: &DropOutcome,
    now: i64,
) -> Result<()> {
    let (stored, reason) = match outcome {
        DropOutcome::Imported { message } | DropOutcome::Duplicate { message } => (*message, ""),
        DropOutcome::Refused { reason } | DropOutcome::Failed { reason } => (0, reason.as_str()),
    };
    sqlx::query(
        "INSERT INTO drop_deliveries (user_id, received_at, peer, envelope_from, header_from, message_id, size, \
         outcome, reason, stored_message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(user_id)
    .bind(now)
    .bind(&receipt.peer)
    .bind(&receipt.envelope_from)
    .bind(&receipt.header_from)
    .bind(&receipt.message_id)
    .bind(receipt.size)
    .bind(outcome.as_str())
    .bind(reason)
    .bind(stored)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A drop address's owner, as the listener needs them.
#[derive(Debug, Clone)]
pub struct DropUser {
    pub user_id: i64,
    pub email: String,
    pub org_id: i64,
    pub org_name: String,
    /// The user's own addresses (login and aliases): the only senders accepted.
    pub addresses: Vec<String>,
}

/// What the listener knows of a message it received, for the record.
#[derive(Debug, Clone, Default)]
pub struct DropReceipt {
    pub peer: String,
    pub envelope_from: String,
    pub header_from: String,
    pub message_id: String,
    pub size: i64,
}

/// How a dropped message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropOutcome {
    Imported {
        message: i64,
    },
    Duplicate {
        message: i64,
    },
    /// Permanently refused (spoofed, unauthenticated, too many recipients...).
    Refused {
        reason: String,
    },
    /// Could not be processed (store unreachable, DNS failing...); the client retries.
    Failed {
        reason: String,
    },
}

impl DropOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            DropOutcome::Imported { .. } => "imported",
            DropOutcome::Duplicate { .. } => "duplicate",
            DropOutcome::Refused { .. } => "refused",
            DropOutcome::Failed { .. } => "failed",
        }
    }
}

/// One recorded delivery, as `mailsync bcc-drops` and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DropDelivery {
    pub id: i64,
    pub user: String,
    pub received_at: i64,
    pub peer: String,
    pub envelope_from: String,
    pub header_from: String,
    pub message_id: String,
    pub size: i64,
    /// imported | duplicate | refused | failed
    pub outcome: String,
    pub reason: String,
    /// The stored message (imported or duplicate), else 0.
    pub stored_message: i64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_random_and_readable() {
        let a = super::new_token().unwrap();
        let b = super::new_token().unwrap();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| super::TOKEN_ALPHABET.contains(&c)), "{a}");
    }
}
