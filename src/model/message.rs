//! A message as every part of mailsync sees it once parsed: ids, participants with their
//! roles, threading headers, text bodies and attachment metadata.

/// Most references considered for threading (the newest ones), against hostile headers.
pub const MAX_REFERENCES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    From,
    To,
    Cc,
    Bcc,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::From => "from",
            Role::To => "to",
            Role::Cc => "cc",
            Role::Bcc => "bcc",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub role: Role,
    pub address: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentMeta {
    /// IMAP part number (e.g. `2` or `1.3`), or the position within the raw message.
    pub part_id: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
}

/// A message as the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMessage {
    pub message_id: String,
    pub subject: String,
    /// Date header, unix milliseconds (0 when absent or unreadable).
    pub sent_at: i64,
    pub size: i64,
    pub in_reply_to: String,
    /// References, oldest first, at most [`MAX_REFERENCES`].
    pub references: Vec<String>,
    pub gm_thrid: String,
    pub participants: Vec<Participant>,
    pub body_text: String,
    pub body_html: String,
    pub attachments: Vec<AttachmentMeta>,
}

/// Linking by address: the participant roles whose addresses link a message to the
/// organization's leads and contacts. Bcc counts only in mail the owner sent (a Bcc
/// header in received mail says nothing about who took part). Addresses of the
/// organization's own users, the account owner's included, never link (applied by
/// `store::links::link_by_address`).
pub fn linking_roles(sent: bool) -> &'static [&'static str] {
    if sent { &["from", "to", "cc", "bcc"] } else { &["from", "to", "cc"] }
}

/// Where a stored message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Synced from the user's INBOX or Sent folder.
    Imap,
    /// BCC'd to the user's drop address.
    BccDrop,
    /// Sent through mailsync.
    Outbound,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Imap => "imap",
            Source::BccDrop => "bcc_drop",
            Source::Outbound => "outbound",
        }
    }

    /// The source a stored `messages.source` names.
    pub fn parse(stored: &str) -> Option<Source> {
        [Source::Imap, Source::BccDrop, Source::Outbound].into_iter().find(|s| s.as_str() == stored)
    }
}
