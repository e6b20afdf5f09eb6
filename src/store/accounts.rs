//! Mail accounts and the users who own them.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::orgs::ensure_org;
use super::{Result, Store, StoreError, conflict_or, now_ms};

/// How a connection is secured: TLS from the first byte, or STARTTLS on the plain port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Implicit,
    Starttls,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
        }
    }
}

impl std::str::FromStr for TlsMode {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "implicit" => Ok(TlsMode::Implicit),
            "starttls" => Ok(TlsMode::Starttls),
            other => Err(StoreError::Invalid(format!("TLS mode `{other}` is not one of implicit, starttls"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// LOGIN/PLAIN with a password (or app password), over TLS only.
    Password,
    /// SASL XOAUTH2 with an access token from a stored refresh token.
    Xoauth2,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Password => "password",
            AuthKind::Xoauth2 => "xoauth2",
        }
    }
}

impl std::str::FromStr for AuthKind {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "password" => Ok(AuthKind::Password),
            "xoauth2" => Ok(AuthKind::Xoauth2),
            other => Err(StoreError::Invalid(format!("auth `{other}` is not one of password, xoauth2"))),
        }
    }
}

/// What an account's sync is doing, as its worker last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// No worker has run yet.
    New,
    Connecting,
    /// Selecting a folder and fetching what is new.
    Syncing,
    /// In sync, waiting for news (IDLE or polling).
    Idle,
    /// The last attempt failed: `error_class` and `error_message` say why and the fix.
    Error,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::New => "new",
            AccountState::Connecting => "connecting",
            AccountState::Syncing => "syncing",
            AccountState::Idle => "idle",
            AccountState::Error => "error",
        }
    }
}

impl std::str::FromStr for AccountState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        [AccountState::New, AccountState::Connecting, AccountState::Syncing, AccountState::Idle, AccountState::Error]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("mail_accounts.state holds an unknown state {s:?}")))
    }
}

/// OAuth settings as stored; secrets sealed.
#[derive(Debug, Clone)]
pub struct OAuthStored {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Vec<u8>,
    pub access_token: Vec<u8>,
    pub access_token_expires_at: i64,
}

/// Which daemon holds an account, and which version of its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountLease {
    pub id: i64,
    pub generation: i64,
    pub lease_owner: String,
    pub lease_until: i64,
}

/// A mail account to create; the secret is already sealed by the caller.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub org: String,
    pub email: String,
    pub imap_host: String,
    pub imap_port: u16,
    pub imap_tls: TlsMode,
    pub username: String,
    pub auth: AuthKind,
    pub sealed_secret: Vec<u8>,
    pub oauth_provider: String,
    pub oauth_token_url: String,
    pub oauth_client_id: String,
    /// Sealed; empty for public clients.
    pub oauth_client_secret: Vec<u8>,
    pub ca_file: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: TlsMode,
    pub provider_saves_sent: bool,
}

/// A mail account as shown to operators. It holds no secret.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Account {
    pub id: i64,
    pub user_id: i64,
    pub org_id: i64,
    pub org: String,
    pub email: String,
    pub imap_host: String,
    pub imap_port: u16,
    pub imap_tls: TlsMode,
    pub username: String,
    pub auth: AuthKind,
    pub oauth_provider: String,
    pub ca_file: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: TlsMode,
    pub provider_saves_sent: bool,
    pub generation: i64,
    pub state: AccountState,
    pub error_class: String,
    pub error_message: String,
    pub error_at: i64,
    /// A standing remark, e.g. that the server has no Sent folder.
    pub note: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const ACCOUNT_COLUMNS: &str = concat!(
    "a.id, a.user_id, u.org_id, o.name AS org, a.email, a.imap_host, a.imap_port, a.imap_tls, ",
    "a.username, a.auth, a.oauth_provider, a.ca_file, a.smtp_host, a.smtp_port, a.smtp_tls, ",
    "a.provider_saves_sent, a.generation, a.state, a.error_class, a.error_message, a.error_at, a.note, ",
    "a.created_at, a.updated_at ",
    "FROM mail_accounts a JOIN users u ON u.id = a.user_id JOIN organizations o ON o.id = u.org_id"
);

impl Store {
    /// Creates the account, and its organization and user when they do not exist yet.
    /// A user has at most one mail account: a second one is a [`StoreError::Conflict`].
    pub async fn add_account(&self, new: &NewAccount) -> Result<Account> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let org_id = ensure_org(&mut tx, &new.org).await?.id;
        let user: Option<(i64, i64)> = sqlx::query("SELECT id, org_id FROM users WHERE email = $1")
            .bind(&new.email)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("org_id")?)))
            .transpose()?;
        let user_id = match user {
            Some((_, user_org)) if user_org != org_id => {
                return Err(StoreError::Conflict(format!("user {} belongs to another organization", new.email)));
            }
            Some((id, _)) => id,
            None => {
                sqlx::query_scalar("INSERT INTO users (org_id, email, created_at) VALUES ($1, $2, $3) RETURNING id")
                    .bind(org_id)
                    .bind(&new.email)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM mail_accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(existing) = existing {
            return Err(StoreError::Conflict(format!(
                "user {} already has mail account {existing}; a user has one mail account (remove it first)",
                new.email
            )));
        }
        let id: i64 = sqlx::query_scalar(concat!(
            "INSERT INTO mail_accounts (user_id, email, imap_host, imap_port, imap_tls, username, ",
            "auth, secret, oauth_provider, ca_file, smtp_host, smtp_port, smtp_tls, ",
            "provider_saves_sent, created_at, updated_at, oauth_token_url, oauth_client_id, oauth_client_secret) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17, $18) RETURNING id"
        ))
        .bind(user_id)
        .bind(&new.email)
        .bind(&new.imap_host)
        .bind(i64::from(new.imap_port))
        .bind(new.imap_tls.as_str())
        .bind(&new.username)
        .bind(new.auth.as_str())
        .bind(&new.sealed_secret)
        .bind(&new.oauth_provider)
        .bind(&new.ca_file)
        .bind(&new.smtp_host)
        .bind(i64::from(new.smtp_port))
        .bind(new.smtp_tls.as_str())
        .bind(i64::from(new.provider_saves_sent))
        .bind(now)
        .bind(&new.oauth_token_url)
        .bind(&new.oauth_client_id)
        .bind(&new.oauth_client_secret)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || format!("user {} already has a mail account", new.email)))?;
        sqlx::query("INSERT INTO user_addresses (user_id, address) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .bind(&new.email)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.account(id).await
    }

    pub async fn account(&self, id: i64) -> Result<Account> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} WHERE a.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no mail account with id {id}")))?;
        account_from_row(&row)
    }

    /// The mail account of a user.
    pub async fn account_of_user(&self, user_id: i64) -> Result<Account> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} WHERE a.user_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {user_id} has no mail account")))?;
        account_from_row(&row)
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} ORDER BY a.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(account_from_row).collect()
    }

    /// The sealed password or refresh token of an account.
    pub async fn account_secret(&self, id: i64) -> Result<Vec<u8>> {
        sqlx::query_scalar("SELECT secret FROM mail_accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no mail account with id {id}")))
    }

    /// Renews every lease `owner` holds and takes every account whose lease is free or
    /// lapsed, until `now + lease_ms`: two statements, whatever the number of accounts.
    pub async fn renew_and_claim_leases(&self, owner: &str, lease_ms: i64) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE mail_accounts SET lease_until = $1 WHERE lease_owner = $2")
            .bind(now + lease_ms)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE mail_accounts SET lease_owner = $1, lease_until = $2 WHERE lease_owner = '' OR lease_until < $3",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Id, generation and lease holder of every account: what the supervisor polls.
    pub async fn account_leases(&self) -> Result<Vec<AccountLease>> {
        let rows = sqlx::query("SELECT id, generation, lease_owner, lease_until FROM mail_accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountLease {
                    id: r.try_get("id")?,
                    generation: r.try_get("generation")?,
                    lease_owner: r.try_get("lease_owner")?,
                    lease_until: r.try_get("lease_until")?,
                })
            })
            .collect()
    }

    /// The OAuth client settings and cached access token of an XOAUTH2 account.
    pub async fn oauth_settings(&self, id: i64) -> Result<OAuthStored> {
        let row = sqlx::query(concat!(
            "SELECT oauth_token_url, oauth_client_id, oauth_client_secret, access_token, access_token_expires_at ",
            "FROM mail_accounts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no mail account with id {id}")))?;
        Ok(OAuthStored {
            token_url: row.try_get("oauth_token_url")?,
            client_id: row.try_get("oauth_client_id")?,
            client_secret: row.try_get("oauth_client_secret")?,
            access_token: row.try_get("access_token")?,
            access_token_expires_at: row.try_get("access_token_expires_at")?,
        })
    }

    /// Keeps a refreshed access token (sealed) and, if the provider rotated it, the new
    /// refresh token (sealed).
    pub async fn save_oauth_tokens(
        &self,
        id: i64,
        access_token: &[u8],
        expires_at: i64,
        refresh_token: Option<&[u8]>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE mail_accounts SET access_token = $1, access_token_expires_at = $2 WHERE id = $3")
            .bind(access_token)
            .bind(expires_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Some(refresh_token) = refresh_token {
            sqlx::query("UPDATE mail_accounts SET secret = $1 WHERE id = $2")
                .bind(refresh_token)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn release_account(&self, id: i64, owner: &str) -> Result<()> {
        sqlx::query("UPDATE mail_accounts SET lease_owner = '', lease_until = 0 WHERE id = $1 AND lease_owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a password account's sealed password. Bumps the generation, so the
    /// supervisor restarts the account's worker with it, and clears the last error.
    pub async fn set_account_password(&self, id: i64, sealed: &[u8]) -> Result<Account> {
        let done = sqlx::query(concat!(
            "UPDATE mail_accounts SET secret = $1, generation = generation + 1, state = 'new', ",
            "error_class = '', error_message = '', updated_at = $2 WHERE id = $3 AND auth = 'password'"
        ))
        .bind(sealed)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let account = self.account(id).await?;
            return Err(StoreError::Invalid(format!(
                "mail account {id} uses {}; only password accounts have a password",
                account.auth.as_str()
            )));
        }
        self.account(id).await
    }

    /// Removes the account and everything synced through it; messages stay in the CRM.
    pub async fn remove_account(&self, id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM mail_accounts WHERE id = $1").bind(id).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no mail account with id {id}")));
        }
        Ok(())
    }
}

fn account_from_row(row: &AnyRow) -> Result<Account> {
    let port = |name: &str| -> Result<u16> {
        let v: i64 = row.try_get(name)?;
        u16::try_from(v).map_err(|_| StoreError::Invalid(format!("stored {name} {v} is out of range")))
    };
    Ok(Account {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        org_id: row.try_get("org_id")?,
        org: row.try_get("org")?,
        email: row.try_get("email")?,
        imap_host: row.try_get("imap_host")?,
        imap_port: port("imap_port")?,
        imap_tls: row.try_get::<String, _>("imap_tls")?.parse()?,
        username: row.try_get("username")?,
        auth: row.try_get::<String, _>("auth")?.parse()?,
        oauth_provider: row.try_get("oauth_provider")?,
        ca_file: row.try_get("ca_file")?,
        smtp_host: row.try_get("smtp_host")?,
        smtp_port: port("smtp_port")?,
        smtp_tls: row.try_get::<String, _>("smtp_tls")?.parse()?,
        provider_saves_sent: row.try_get::<i64, _>("provider_saves_sent")? != 0,
        generation: row.try_get("generation")?,
        state: row.try_get::<String, _>("state")?.parse()?,
        error_class: row.try_get("error_class")?,
        error_message: row.try_get("error_message")?,
        error_at: row.try_get("error_at")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
