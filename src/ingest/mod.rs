//! The ingest pipeline: every message, whatever its source (IMAP, BCC drop, outbound),
//! passes through here.
//!
//! ```text
//! source bytes -> prepare: screen -> parse -> source fix-ups -> store transaction:
//!                                                thread -> dedupe -> store -> link
//! ```
//!
//! [`prepare`] is the front half, run by the source's task: the one place a message is
//! parsed, inside a panic guard (a parser bug costs one message, never the worker). The
//! back half is one store transaction (`store/ingest.rs`), the same for every source.
//! The rules themselves live once: the recipient screen in [`Screen`], parsing in
//! `parse.rs`, threading in `model::thread`, matching and linking in `store/links.rs`.

mod parse;

pub use crate::model::message::{AttachmentMeta, MAX_REFERENCES, ParsedMessage, Participant, Role, linking_roles};
pub use parse::{TextPart, recipient_count};

use crate::store::{BatchOutcome, FolderBatch, Result, Store};

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

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::TooManyRecipients { recipients } => write!(f, "too_many_recipients ({recipients} recipients)"),
            SkipReason::Unparseable => write!(f, "unparseable (the message could not be parsed)"),
        }
    }
}

/// The rules applied to every message before its body is fetched or stored.
#[derive(Debug, Clone, Copy)]
pub struct Screen {
    pub max_recipients: u32,
}

impl Screen {
    /// Decides from the header block whether a message is skipped. IMAP applies it to
    /// the header it fetches first, so a skipped message's body is never fetched;
    /// [`prepare`] applies it to whole messages.
    pub fn check(&self, header: &[u8]) -> Option<SkipReason> {
        let recipients = recipient_count(header);
        (recipients > self.max_recipients as usize).then_some(SkipReason::TooManyRecipients { recipients })
    }
}

/// A message as its source hands it over.
pub enum Incoming<'a> {
    /// A whole RFC 5322 message (BCC drop, outbound), screened here.
    Whole(&'a [u8]),
    /// IMAP: the header block (already screened before the bodies were fetched), the text
    /// parts fetched separately, the size, and the attachments BODYSTRUCTURE describes.
    Fetched { header: &'a [u8], text_parts: &'a [TextPart], size: i64, attachments: Vec<AttachmentMeta> },
}

/// What a source knows about a message that its bytes do not say.
pub enum SourceFixup<'a> {
    /// Synced mail is stored as it is.
    None,
    /// BCC drop: the drop address (any address at this domain) came from the envelope; it
    /// is not a party to the conversation.
    DropDomain(&'a str),
    /// Outbound: the bytes as sent carry no Bcc header; envelope recipients the headers do
    /// not name were Bcc.
    EnvelopeRecipients(&'a [String]),
}

/// A message ready for the store, unless `skip` says why it is not stored.
#[derive(Debug)]
pub struct Prepared {
    /// Empty but for its size when the parser failed.
    pub message: ParsedMessage,
    pub skip: Option<SkipReason>,
}

/// The pipeline's front half, the same for every source: parse, screen (whole messages;
/// IMAP screened the header before fetching the bodies), and the source's fix-ups. A panic
/// in the parser is caught: that message is skipped as unparseable.
pub fn prepare(incoming: Incoming<'_>, screen: &Screen, fixup: SourceFixup<'_>) -> Prepared {
    let (size, screened) = match &incoming {
        Incoming::Whole(raw) => (raw.len() as i64, screen.check(parse::header_block(raw))),
        Incoming::Fetched { size, .. } => (*size, None),
    };
    let parsed = std::panic::catch_unwind(|| match incoming {
        Incoming::Whole(raw) => parse::parse_raw(raw),
        Incoming::Fetched { header, text_parts, size, attachments } => {
            parse::parse_parts(header, text_parts, size, attachments)
        }
    });
    let Ok(mut message) = parsed else {
        tracing::error!("message parsing panicked; the message is skipped");
        return Prepared { message: ParsedMessage { size, ..Default::default() }, skip: Some(SkipReason::Unparseable) };
    };
    match fixup {
        SourceFixup::None => {}
        SourceFixup::DropDomain(domain) => {
            message.participants.retain(|p| !crate::address::domain_of(&p.address).eq_ignore_ascii_case(domain));
        }
        SourceFixup::EnvelopeRecipients(recipients) => {
            for address in recipients {
                if !message.participants.iter().any(|p| p.address == *address && p.role != Role::From) {
                    message.participants.push(Participant {
                        role: Role::Bcc,
                        address: address.clone(),
                        name: String::new(),
                    });
                }
            }
        }
    }
    Prepared { message, skip: screened }
}

/// Stores one synced batch (deduplicating by Message-ID within the organization) and
/// moves the folder cursor with it.
pub async fn commit_folder_batch(store: &Store, batch: &FolderBatch) -> Result<BatchOutcome> {
    store.commit_folder_batch(batch).await
}
