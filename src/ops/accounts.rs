//! Mail accounts, the daemon's status and metrics.

use serde::Deserialize;
use utoipa::ToSchema;

use super::{OpError, OpResult, Ops};
use crate::accounts::{AccountInput, PASSWORD_PURPOSE};
use crate::check::CheckReport;
use crate::secrets::Secret;
use crate::status::Status;
use crate::store::{Account, StoreError};

/// A replacement password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordInput {
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
}

impl Ops {
    pub async fn status(&self) -> OpResult<Status> {
        Ok(Status::collect(&self.store).await?)
    }

    /// Prometheus text format.
    pub async fn metrics(&self) -> OpResult<String> {
        Ok(crate::metrics::render(&self.store).await?)
    }

    pub async fn list_accounts(&self) -> OpResult<Vec<Account>> {
        Ok(self.store.list_accounts().await?)
    }

    /// Adds a mail account (and its user and organization when new); secrets are sealed
    /// before the store sees them.
    pub async fn add_account(&self, input: AccountInput) -> OpResult<Account> {
        let new = input.into_new_account(&*self.key()?)?;
        Ok(self.store.add_account(&new).await?)
    }

    pub async fn show_account(&self, id: i64) -> OpResult<Account> {
        Ok(self.store.account(id).await?)
    }

    /// Replaces a password account's password; its worker restarts with it.
    pub async fn set_account_password(&self, id: i64, input: PasswordInput) -> OpResult<Account> {
        if input.password.expose().is_empty() {
            return Err(StoreError::Invalid("the password is empty".into()).into());
        }
        let sealed =
            self.key()?.seal(PASSWORD_PURPOSE, &input.password).map_err(|e| OpError::Internal(e.to_string()))?;
        Ok(self.store.set_account_password(id, &sealed).await?)
    }

    /// Removes a mail account; its synced messages stay.
    pub async fn remove_account(&self, id: i64) -> OpResult<()> {
        Ok(self.store.remove_account(id).await?)
    }

    /// Diagnoses an account step by step (DNS, TCP, TLS, login, folders, SMTP).
    pub async fn check_account(&self, id: i64) -> OpResult<CheckReport> {
        Ok(crate::check::check_account(&self.store, &self.key()?, &self.config(), id).await?)
    }
}
