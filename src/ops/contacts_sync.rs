//! Users' contacts sync with a CardDAV address book or Google Contacts.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{OpError, OpResult, Ops, user_email};
use crate::contacts::SyncInput;
use crate::contacts::engine::Report;
use crate::store::{ContactSyncConfig, FlaggedCard, Resolution, StoreError};

/// A person's decision about a flagged card: exactly one of `link`, `import`, `ignore`.
/// The next sync run (requested at once) applies it.
#[derive(Debug, Clone, Deserialize, ToSchema, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(group(clap::ArgGroup::new("decision").required(true).args(["link", "import", "ignore"])))]
pub struct FlagResolution {
    /// The flagged card (as `contacts flagged` lists it).
    #[arg(long)]
    pub card: String,
    /// The CRM contact the card is (this user's or an unowned one, not synced with
    /// another card).
    #[arg(long, value_name = "CONTACT")]
    #[serde(default)]
    pub link: Option<i64>,
    /// The card is a new contact.
    #[arg(long)]
    #[serde(default)]
    pub import: bool,
    /// The card stays out of the CRM.
    #[arg(long)]
    #[serde(default)]
    pub ignore: bool,
}

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

    /// The cards of a user's sync flagged for a person, and why.
    pub async fn list_flagged_cards(&self, user: &str) -> OpResult<Vec<FlaggedCard>> {
        let sync = self.store.contact_sync_config(&user_email(user)?).await?;
        Ok(self.store.flagged_cards(sync.user_id).await?)
    }

    /// Records a decision about a flagged card and asks for a run that applies it.
    pub async fn resolve_flagged_card(&self, user: &str, input: &FlagResolution) -> OpResult<ContactsSyncRun> {
        let resolution = match (input.link, input.import, input.ignore) {
            (Some(contact), false, false) => Resolution::Link(contact),
            (None, true, false) => Resolution::Import,
            (None, false, true) => Resolution::Ignore,
            _ => return Err(OpError::BadRequest("give exactly one of link, import and ignore".into())),
        };
        let user = user_email(user)?;
        let sync = self.store.contact_sync_config(&user).await?;
        if input.card.is_empty() {
            return Err(StoreError::Invalid("card: required".into()).into());
        }
        self.store.resolve_flagged_card(sync.user_id, &input.card, resolution).await?;
        self.request_contacts_sync(&user).await
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
