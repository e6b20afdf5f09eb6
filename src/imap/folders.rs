//! Finding the two folders mailsync syncs: INBOX, and Sent by its `\Sent` special-use
//! attribute or, failing that, by a well-known name. No other folder is ever selected.

use async_imap::types::{Name, NameAttribute};
use futures_util::TryStreamExt;

use super::connection::ImapSession;
use super::error::{ErrorClass, SyncError};

/// Sent-folder names in order of preference, compared case-insensitively with the
/// server's delimiter normalized to `/`.
const SENT_NAMES: &[&str] = &[
    "Sent",
    "Sent Items",
    "Sent Messages",
    "Sent Mail",
    "[Gmail]/Sent Mail",
    "[Google Mail]/Sent Mail",
    "INBOX/Sent",
    "INBOX/Sent Items",
    "INBOX/Sent Messages",
    "Gesendet",
    "Gesendete Elemente",
    "Gesendete Objekte",
    "Envoyés",
    "Éléments envoyés",
    "Messages envoyés",
    "Enviados",
    "Elementos enviados",
    "Inviati",
    "Posta inviata",
    "Verzonden",
    "Verzonden items",
    "Skickat",
    "Skickade objekt",
    "Sendt",
    "Lähetetyt",
    "Wysłane",
    "Odeslané",
    "Отправленные",
    "已发送",
    "送信済み",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderNames {
    /// As LIST returned it (normally `INBOX`).
    pub inbox: String,
    /// As LIST returned it; `None` when the account has no Sent folder.
    pub sent: Option<String>,
}

pub async fn find_folders(session: &mut ImapSession) -> Result<FolderNames, SyncError> {
    let names: Vec<Name> = session.list(Some(""), Some("*")).await?.try_collect().await?;
    super::connection::drain_unsolicited(session);
    pick(&names)
}

fn pick(names: &[Name]) -> Result<FolderNames, SyncError> {
    let selectable = |n: &&Name| !n.attributes().iter().any(|a| matches!(a, NameAttribute::NoSelect));
    let inbox = names
        .iter()
        .filter(selectable)
        .find(|n| n.name().eq_ignore_ascii_case("INBOX"))
        .map(|n| n.name().to_string())
        .ok_or_else(|| SyncError::new(ErrorClass::FolderMissing, "the server lists no INBOX"))?;
    let special =
        names.iter().filter(selectable).find(|n| n.attributes().iter().any(|a| matches!(a, NameAttribute::Sent)));
    let by_name = || {
        SENT_NAMES.iter().find_map(|wanted| {
            names.iter().filter(selectable).find(|n| {
                let normalized = match n.delimiter() {
                    Some(d) if d != "/" => n.name().replace(d, "/"),
                    _ => n.name().to_string(),
                };
                normalized.to_lowercase() == wanted.to_lowercase()
            })
        })
    };
    let sent = special.or_else(by_name).map(|n| n.name().to_string());
    Ok(FolderNames { inbox, sent })
}
