//! Finding the two folders mailsync syncs: INBOX, and Sent by its `\Sent` special-use
//! attribute or, failing that, by a well-known name. No other folder is ever selected.

use async_imap::types::{Name, NameAttribute};
use futures_util::TryStreamExt;

use super::connection::{ImapIo, ImapSession};
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

pub async fn find_folders<S: ImapIo>(session: &mut ImapSession<S>) -> Result<FolderNames, SyncError> {
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

#[cfg(test)]
mod tests {
    use super::super::connection::ServerCaps;
    use super::super::transcript::{connection, step};
    use super::*;

    async fn folders_of(list_answer: &str) -> Result<FolderNames, SyncError> {
        let (mut conn, server) = connection(vec![step("LIST", list_answer)], ServerCaps::default()).await;
        let found = find_folders(&mut conn.session).await;
        drop(conn);
        assert_eq!(server.await.unwrap().len(), 2, "LOGIN and one LIST");
        found
    }

    #[tokio::test]
    async fn sent_is_found_by_its_special_use_before_any_name() {
        let found = folders_of(concat!(
            "* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
            "* LIST (\\HasNoChildren) \"/\" Sent\r\n",
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Copies envoyées\"\r\n",
            "* LIST (\\HasNoChildren \\Trash) \"/\" Trash\r\n",
            "{tag} OK LIST completed\r\n",
        ))
        .await
        .unwrap();
        assert_eq!(found, FolderNames { inbox: "INBOX".into(), sent: Some("Copies envoyées".into()) });
    }

    #[tokio::test]
    async fn without_special_use_a_well_known_name_under_any_delimiter_is_taken() {
        let found = folders_of(concat!(
            "* LIST (\\HasChildren) \".\" INBOX\r\n",
            "* LIST (\\Noselect) \".\" \"INBOX.Sent\"\r\n",
            "* LIST (\\HasNoChildren) \".\" \"INBOX.Sent Items\"\r\n",
            "* LIST (\\HasNoChildren) \".\" Archive\r\n",
            "{tag} OK LIST completed\r\n",
        ))
        .await
        .unwrap();
        // INBOX.Sent cannot be selected; the next name in the list of preferences wins.
        assert_eq!(found.sent.as_deref(), Some("INBOX.Sent Items"));
    }

    #[tokio::test]
    async fn no_sent_folder_is_none_and_no_inbox_is_an_error_with_its_class() {
        let found = folders_of("* LIST () \"/\" INBOX\r\n* LIST () \"/\" Drafts\r\n{tag} OK done\r\n").await.unwrap();
        assert_eq!(found.sent, None);
        let missing = folders_of("* LIST () \"/\" Drafts\r\n{tag} OK done\r\n").await.unwrap_err();
        assert_eq!(missing.class, ErrorClass::FolderMissing);
    }
}
