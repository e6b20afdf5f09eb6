//! Stored messages, outgoing mail and the BCC drop.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{OpError, OpResult, Ops, check_page, default_limit, user_email};
use crate::outbound::compose::OutgoingInput;
use crate::store::{DropAddress, DropDelivery, MessageSummary, OutboxEntry, OutboxStatus, one_entity};

/// Messages of one account, or linked to one lead, contact or deal, newest first.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams, clap::Args)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[command(group(clap::ArgGroup::new("of").required(true).args(["account", "lead", "contact", "deal"])))]
pub struct MessagesQuery {
    #[arg(long)]
    #[serde(default)]
    pub account: Option<i64>,
    #[arg(long)]
    #[serde(default)]
    pub lead: Option<i64>,
    #[arg(long)]
    #[serde(default)]
    pub contact: Option<i64>,
    #[arg(long)]
    #[serde(default)]
    pub deal: Option<i64>,
    /// Page size, 1 to 1000.
    #[arg(long, default_value_t = super::DEFAULT_LIMIT)]
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: i64,
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    pub offset: i64,
}

/// Outgoing messages, newest first.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams, clap::Args)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only this sending user's (email).
    #[arg(long)]
    #[serde(default)]
    pub user: Option<String>,
    /// Only messages in this state.
    #[arg(long, value_enum)]
    #[serde(default)]
    pub status: Option<OutboxStatus>,
    /// Page size, 1 to 1000.
    #[arg(long, default_value_t = super::DEFAULT_LIMIT)]
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: i64,
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    pub offset: i64,
}

/// Messages received by the BCC-drop listener, newest first.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams, clap::Args)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DropQuery {
    /// Only this user's (email).
    #[arg(long)]
    #[serde(default)]
    pub user: Option<String>,
    /// Page size, 1 to 1000.
    #[arg(long, default_value_t = super::DEFAULT_LIMIT)]
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: i64,
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    pub offset: i64,
}

/// An address a user sends from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    pub address: String,
}

/// A user's own addresses: BCC-drop mail from them is accepted; they never link.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserAddresses {
    pub user: String,
    pub addresses: Vec<String>,
}

impl Ops {
    pub async fn list_messages(&self, query: &MessagesQuery) -> OpResult<Vec<MessageSummary>> {
        check_page(query.limit, query.offset)?;
        let (limit, offset) = (query.limit, query.offset);
        match (query.account, query.lead, query.contact, query.deal) {
            (Some(account), None, None, None) => {
                self.store.account(account).await?;
                Ok(self.store.list_account_messages(account, limit, offset).await?)
            }
            (None, lead, contact, deal) if lead.is_some() || contact.is_some() || deal.is_some() => {
                let (kind, id) = one_entity(lead, contact, deal)?;
                Ok(self.store.list_linked_messages(kind, id, limit, offset).await?)
            }
            _ => Err(OpError::BadRequest("give exactly one of account, lead, contact and deal".into())),
        }
    }

    /// Queues a message; the daemon sends, retries, stores and files it.
    pub async fn send(&self, input: &OutgoingInput) -> OpResult<OutboxEntry> {
        let entry = crate::outbound::enqueue(&self.store, input, &self.config()).await?;
        self.send_soon();
        Ok(entry)
    }

    pub async fn list_outbox(&self, query: &OutboxQuery) -> OpResult<Vec<OutboxEntry>> {
        check_page(query.limit, query.offset)?;
        let user = query.user.as_deref().map(user_email).transpose()?;
        Ok(self.store.list_outbox(user.as_deref(), query.status, query.limit, query.offset).await?)
    }

    pub async fn show_outbox(&self, id: i64) -> OpResult<OutboxEntry> {
        Ok(self.store.outbox_entry(id).await?)
    }

    /// A user's drop address, created on first use; `rotate` replaces its token.
    pub async fn drop_address(&self, user: &str, rotate: bool) -> OpResult<DropAddress> {
        let user = user_email(user)?;
        Ok(self.store.drop_address(&user, &self.config().bcc_drop.domain, rotate).await?)
    }

    pub async fn list_drop_deliveries(&self, query: &DropQuery) -> OpResult<Vec<DropDelivery>> {
        check_page(query.limit, query.offset)?;
        let user = query.user.as_deref().map(user_email).transpose()?;
        Ok(self.store.drop_deliveries(user.as_deref(), query.limit, query.offset).await?)
    }

    pub async fn add_user_address(&self, user: &str, input: AddressInput) -> OpResult<UserAddresses> {
        let user = user_email(user)?;
        let addresses = self.store.add_user_address(&user, &input.address).await?;
        Ok(UserAddresses { user, addresses })
    }
}
