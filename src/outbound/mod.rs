//! Outbound mail: requests become exact messages in the outbox at enqueue time
//! ([`compose`]); the daemon's sender ([`sender`]) submits them through the SMTP relay or
//! the account's own server ([`smtp`]), retries transient failures, stores and links what
//! was sent through the ingest pipeline, and files a copy in the user's Sent folder (a copy
//! that cannot be filed is tried again on the same retry schedule).
//!
//! Architecture invariant: an outbox row is marked `sending` (committed) before its SMTP
//! transaction starts and `sent` in the transaction that stores the message. A daemon
//! that dies between the relay's final reply and that commit leaves a `sending` row that
//! is sent again after `outbound.stale_sending_secs`: that is the one window in which a
//! message can go out twice, and it spans one SMTP reply.

pub mod compose;
pub mod sender;
pub mod smtp;

use crate::address::normalize_email;
use crate::config::Config;
use crate::store::{NewOutgoing, OutboxEntry, Store, StoreError, one_entity};
use compose::{OutgoingInput, Recipient, ReplyContext, compose};

/// Validates and composes a send request and queues it. Errors are the store's:
/// `Invalid` for a bad request (named field), `NotFound`, `Limit` for used-up quotas.
pub async fn enqueue(store: &Store, input: &OutgoingInput, config: &Config) -> Result<OutboxEntry, StoreError> {
    let user = normalize_email(&input.user).map_err(|e| StoreError::Invalid(format!("user: {e}")))?;
    let sender = store.sender(&user).await?;
    let reply = match input.reply_to {
        Some(id) => {
            let (message_id, references) = store.reply_context(sender.org_id, id).await?;
            Some(ReplyContext { message_id, references })
        }
        None => None,
    };
    let link = match (input.lead, input.contact, input.deal) {
        (None, None, None) => None,
        (lead, contact, deal) => Some(one_entity(lead, contact, deal)?),
    };
    let from = Recipient { name: Some(sender.name.clone()).filter(|n| !n.is_empty()), address: sender.email.clone() };
    let composed = compose(input, &from, reply.as_ref(), config.sync.max_recipients as usize)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let new = NewOutgoing {
        user_id: sender.user_id,
        message_id: composed.message_id,
        envelope_from: composed.envelope_from,
        recipients: composed.recipients,
        raw: composed.raw,
        link,
    };
    store.enqueue_outgoing(&new, config.outbound.daily_limit_per_user, config.outbound.daily_limit_per_org).await
}
