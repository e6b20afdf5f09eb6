//! BCC-drop addresses: one per user, `<token>@<bcc_drop.domain>`, with a random token
//! that can be rotated (the old one then stops working).

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, StoreError, conflict_or, now_ms};

/// Lower-case letters and digits without the look-alikes 0, 1, l and o: 32 symbols, so
/// each is 5 random bits; 26 of them carry 130 bits.
const TOKEN_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const TOKEN_LEN: usize = 26;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DropAddress {
    pub user: String,
    pub address: String,
    pub created_at: i64,
}

fn new_token() -> Result<String> {
    let mut bytes = [0u8; TOKEN_LEN];
    crate::secrets::random_bytes(&mut bytes).map_err(|e| StoreError::Invalid(format!("no randomness for a token: {e}")))?;
    Ok(bytes.iter().map(|b| char::from(TOKEN_ALPHABET[usize::from(b & 31)])).collect())
}

impl Store {
    /// The user's drop address under `domain`, created on first use; with `rotate`, a
    /// new token replaces the old one.
    pub async fn drop_address(&self, user_email: &str, domain: &str, rotate: bool) -> Result<DropAddress> {
        let mut tx = self.write_tx().await?;
        let user_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(user_email)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no user {user_email}")))?;
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
        Ok(DropAddress { user: user_email.to_string(), address: format!("{token}@{domain}"), created_at: row.try_get("created_at")? })
    }

    /// The user a drop token belongs to, if any.
    pub async fn drop_token_user(&self, token: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM drop_addresses WHERE token = $1")
            .bind(token.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?)
    }
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
