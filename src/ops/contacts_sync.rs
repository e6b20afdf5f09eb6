//! Users' contacts sync with a CardDAV address book or Google Contacts.

use serde::Serialize;
use utoipa::ToSchema;

use super::{OpResult, Ops, user_email};
use crate::contacts::SyncInput;
use crate::contacts::engine::Report;
use crate::store::ContactSyncConfig;

/// A run was requested; its outcome shows in the user's sync status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactsSyncRun {
    /// `requested`.
    pub status: String,
}

impl Ops {
    /// Sets (or replaces) a user's contacts sync; the password is sealed.
    pub async fn set_contacts_sync(&self, user: &str, input: SyncInput) -> OpResult<ContactSyncConfig> {
        let user = user_email(user)?;
        Ok(crate::contacts::configure(&self.store, &*self.key()?, &user, input).await?)
    }

    pub async fn show_contacts_sync(&self, user: &str) -> OpResult<ContactSyncConfig> {
        Ok(self.store.contact_sync_config(&user_email(user)?).await?)
    }

    /// Every configured user's sync (or one user's): last run, counts, error.
    pub async fn list_contacts_syncs(&self, user: Option<&str>) -> OpResult<Vec<ContactSyncConfig>> {
        let user = user.map(user_email).transpose()?;
        Ok(self.store.contact_sync_configs(user.as_deref()).await?)
    }

    /// Removes a user's sync configuration and state; the contacts stay.
    pub async fn remove_contacts_sync(&self, user: &str) -> OpResult<()> {
        Ok(self.store.remove_contact_sync_config(&user_email(user)?).await?)
    }

    /// Asks the daemon to run a user's sync now.
    pub async fn request_contacts_sync(&self, user: &str) -> OpResult<ContactsSyncRun> {
        self.store.request_contact_sync(&user_email(user)?).await?;
        Ok(ContactsSyncRun { status: "requested".into() })
    }

    /// Runs a user's sync in this process (the CLI's `contacts sync`), unless a daemon is
    /// running it right now.
    pub async fn run_contacts_sync(
        &self,
        user: &str,
        progress: crate::contacts::Progress<'_>,
    ) -> anyhow::Result<Report> {
        let user = user_email(user)?;
        let sync = self.store.contact_sync_config(&user).await?;
        let owner = format!("cli:{}", std::process::id());
        if !self.store.claim_contact_sync(sync.user_id, &owner, 30 * 60 * 1000, true).await? {
            anyhow::bail!("a daemon is running {user}'s contacts sync right now; try again in a moment");
        }
        let key = self.key()?;
        Ok(crate::contacts::sync_now(&self.store, &key, &sync, progress).await?)
    }
}
