//! The ingest pipeline: every message, whatever its source (IMAP, BCC drop, outbound),
//! passes through here: parse -> screen (skip rules) -> dedupe and store -> (link).
//!
//! Architecture invariant: skipping, deduplication, matching and threading rules live in
//! this module and nowhere else; sources only fetch bytes and acknowledge.

mod parse;
pub mod thread;

pub use parse::{
    AttachmentMeta, MAX_REFERENCES, ParsedMessage, Participant, Role, TextPart, parse_parts, parse_raw, recipient_count,
};

use crate::store::{BatchOutcome, FolderBatch, Result, Store};

/// Linking by address: the participant roles whose addresses link a message to the
/// organization's leads and contacts. Bcc counts only in mail the owner sent (a Bcc
/// header in received mail says nothing about who took part). Addresses of the
/// organization's own users, the account owner's included, never link (applied by
/// `store::links::link_by_address`).
pub fn linking_roles(sent: bool) -> &'static [&'static str] {
    if sent { &["from", "to", "cc", "bcc"] } else { &["from", "to", "cc"] }
}

/// Why a message is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// More distinct To+Cc+Bcc addresses than `sync.max_recipients`.
    TooManyRecipients { recipients: usize },
    /// The parser failed on it (a bug or a hostile message); recorded, not retried.
    Unparseable,
}

impl SkipReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::TooManyRecipients { .. } => "too_many_recipients",
            SkipReason::Unparseable => "unparseable",
        }
    }
    pub fn recipients(&self) -> i64 {
        match self {
            SkipReason::TooManyRecipients { recipients } => *recipients as i64,
            SkipReason::Unparseable => 0,
        }
    }
}

/// The rules applied to every message before its body is fetched or stored.
#[derive(Debug, Clone, Copy)]
pub struct Screen {
    pub max_recipients: u32,
}

impl Screen {
    /// Decides from the header block whether a message is skipped.
    pub fn check(&self, header: &[u8]) -> Option<SkipReason> {
        let recipients = recipient_count(header);
        (recipients > self.max_recipients as usize).then_some(SkipReason::TooManyRecipients { recipients })
    }
}

/// Stores one synced batch (deduplicating by Message-ID within the organization) and
/// moves the folder cursor with it.
pub async fn commit_folder_batch(store: &Store, batch: &FolderBatch) -> Result<BatchOutcome> {
    store.commit_folder_batch(batch).await
}
