//! Bringing the store up to date with one selected folder.
//!
//! The cursor is a committed UID range `[synced_low_uid, synced_high_uid]`. New mail
//! extends it upwards (oldest new first); the first sync backfills downwards, newest first,
//! so recent mail is usable within seconds. Each batch is committed with the cursor that
//! covers it, so a crash at any point resumes without loss or duplicates.

use std::collections::HashSet;

use async_imap::types::Mailbox;

use super::connection::{Connection, ImapIo, drain_unsolicited};
use super::error::{ErrorClass, SyncError};
use super::fetch::{FetchedBatch, fetch_batch};
use crate::ingest::{self, Screen};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::store::{BatchOutcome, Cursor, Folder, FolderBatch, FolderRole, SkippedMessage, Store, StoreError};

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub screen: Screen,
    pub batch_size: usize,
    pub max_text_bytes: u32,
    /// Only backfill mail from the last N days; 0 = everything.
    pub backfill_days: u32,
}

/// A selected folder being kept in sync over one connection.
pub struct FolderSync {
    store: Store,
    org_id: i64,
    pub folder: Folder,
    opts: SyncOptions,
    /// IMAP commands sent so far (benchmarks report commands per 1,000 messages).
    pub commands: usize,
    /// Messages committed in this session.
    pub stored: usize,
    /// The batch being committed while the next one is fetched (at most one, so commits
    /// land in order).
    pending: Option<JoinHandle<Result<BatchOutcome, StoreError>>>,
    /// The server reported an expunge (in any response, to any command) that is not
    /// reconciled yet.
    expunge_seen: bool,
    /// The server announced new mail (EXISTS) since the last search for it. It does not
    /// repeat an announcement, so one that arrives with another command's responses must
    /// not be lost, or the mail would wait for the next one.
    exists_seen: bool,
}

impl FolderSync {
    /// Selects `name`, handles a UIDVALIDITY change, and syncs new mail, expunges and
    /// the backfill.
    pub async fn open<S: ImapIo>(
        conn: &mut Connection<S>,
        store: &Store,
        account_id: i64,
        org_id: i64,
        role: FolderRole,
        name: &str,
        opts: SyncOptions,
    ) -> Result<FolderSync, SyncError> {
        let started = std::time::Instant::now();
        let mut folder = store.ensure_folder(account_id, role, name).await?;
        let ensure_ms = started.elapsed().as_millis() as u64;
        let mailbox = select(conn, name).await?;
        tracing::debug!(name, ensure_ms, select_ms = started.elapsed().as_millis() as u64 - ensure_ms, "selected");
        let uidvalidity =
            i64::from(mailbox.uid_validity.ok_or_else(|| {
                SyncError::new(ErrorClass::Protocol, format!("SELECT {name} returned no UIDVALIDITY"))
            })?);
        if folder.uidvalidity != uidvalidity {
            if folder.uidvalidity != 0 {
                tracing::warn!(
                    name,
                    old = folder.uidvalidity,
                    new = uidvalidity,
                    "UIDVALIDITY changed; resyncing the folder (messages are matched by Message-ID)"
                );
            }
            store.reset_folder(folder.id, uidvalidity).await?;
            folder = store.ensure_folder(account_id, role, name).await?;
        }
        let exists = i64::from(mailbox.exists);
        let uidnext = i64::from(mailbox.uid_next.unwrap_or(0));
        let modseq = mailbox.highest_modseq.map_or(0, |m| m as i64);
        store.update_folder_counts(folder.id, exists, uidnext, modseq).await?;
        folder.server_messages = exists;
        folder.uidnext = uidnext;
        folder.highestmodseq = modseq;
        let mut sync = FolderSync {
            store: store.clone(),
            org_id,
            folder,
            opts,
            commands: 1,
            stored: 0,
            pending: None,
            expunge_seen: false,
            exists_seen: false,
        };

        let unchanged = sync.folder.initial_sync_done
            && uidnext == sync.folder.synced_high_uid + 1
            && store.known_uid_count(sync.folder.id, uidvalidity).await? == exists;
        if !unchanged {
            // Restart with nothing new costs one SELECT and two cheap counts: no FETCH, no SEARCH.
            sync.fetch_new(conn).await?;
            if sync.folder.initial_sync_done {
                sync.reconcile_expunges(conn).await?;
            } else {
                sync.backfill(conn).await?;
            }
        }
        if sync.expunge_seen && sync.folder.initial_sync_done {
            sync.reconcile_expunges(conn).await?;
        }
        sync.catch_up(conn).await?;
        Ok(sync)
    }

    /// After the server signalled a change: new mail first, then expunges.
    pub async fn refresh<S: ImapIo>(&mut self, conn: &mut Connection<S>, expunged: bool) -> Result<(), SyncError> {
        self.expunge_seen |= expunged;
        self.fetch_new(conn).await?;
        if self.expunge_seen {
            self.reconcile_expunges(conn).await?;
        }
        self.catch_up(conn).await
    }

    /// Fetches mail announced while the last commands ran, then waits for the last commit.
    async fn catch_up<S: ImapIo>(&mut self, conn: &mut Connection<S>) -> Result<(), SyncError> {
        // A server may also repeat EXISTS without new mail: a search that finds none ends it.
        while self.exists_seen && self.started() {
            if self.fetch_new(conn).await? == 0 {
                break;
            }
        }
        self.settle().await
    }

    /// Reads the unsolicited responses that arrived with the last command and remembers
    /// what they announced. Dropping them would lose expunges reported mid-command.
    fn absorb<S: ImapIo>(&mut self, conn: &Connection<S>) {
        let news = drain_unsolicited(&conn.session);
        self.expunge_seen |= news.expunged;
        self.exists_seen |= news.exists.is_some();
    }

    fn started(&self) -> bool {
        self.folder.initial_sync_done || self.folder.synced_high_uid > 0
    }

    /// Fetches every UID above the cursor, oldest first; returns how many there were.
    async fn fetch_new<S: ImapIo>(&mut self, conn: &mut Connection<S>) -> Result<usize, SyncError> {
        if !self.started() {
            return Ok(0);
        }
        let high = self.folder.synced_high_uid;
        // This search sees everything announced so far.
        self.exists_seen = false;
        let found = conn.session.uid_search(format!("UID {}:*", high + 1)).await?;
        self.commands += 1;
        self.absorb(conn);
        // `N:*` always matches the highest UID, even one below N.
        let mut uids: Vec<u32> = found.into_iter().filter(|&u| i64::from(u) > high).collect();
        uids.sort_unstable();
        for chunk in uids.chunks(self.opts.batch_size.max(1)) {
            let batch = self.fetch(conn, chunk).await?;
            let mut cursor = self.cursor();
            cursor.synced_high_uid = chunk.iter().copied().max().map_or(high, i64::from);
            cursor.server_messages = cursor.server_messages.max(self.folder.server_messages);
            self.commit(batch, cursor).await?;
        }
        Ok(uids.len())
    }

    /// First sync: everything below the cursor, newest first, in batches.
    async fn backfill<S: ImapIo>(&mut self, conn: &mut Connection<S>) -> Result<(), SyncError> {
        let query = match self.opts.backfill_days {
            0 => "ALL".to_string(),
            days => format!("SINCE {}", imap_date(crate::store::now_ms() / 1000 - i64::from(days) * 86_400)),
        };
        let found = conn.session.uid_search(&query).await?;
        self.commands += 1;
        self.absorb(conn);
        let low = self.folder.synced_low_uid;
        let started = self.started();
        let mut uids: Vec<u32> = found.into_iter().filter(|&u| !started || i64::from(u) < low).collect();
        uids.sort_unstable_by(|a, b| b.cmp(a));
        let top = if started {
            self.folder.synced_high_uid
        } else {
            uids.first().map_or(0, |&u| i64::from(u)).max(self.folder.uidnext - 1)
        };
        if uids.is_empty() {
            let mut cursor = self.cursor();
            cursor.synced_high_uid = top.max(cursor.synced_high_uid);
            cursor.synced_low_uid = if started { cursor.synced_low_uid } else { top + 1 };
            cursor.initial_sync_done = true;
            return self.commit(FetchedBatch::default(), cursor).await;
        }
        self.settle().await?;
        self.store.mark_backfill_started(self.folder.id).await?;
        let chunks: Vec<&[u32]> = uids.chunks(self.opts.batch_size.max(1)).collect();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let batch = self.fetch(conn, chunk).await?;
            let mut cursor = self.cursor();
            cursor.synced_high_uid = cursor.synced_high_uid.max(top);
            cursor.synced_low_uid = chunk.iter().copied().min().map_or(low, i64::from);
            cursor.initial_sync_done = i == last;
            self.commit(batch, cursor).await?;
            // Mail that arrives during a long backfill is stored before older mail.
            self.absorb(conn);
            if self.exists_seen {
                self.fetch_new(conn).await?;
            }
        }
        Ok(())
    }

    /// Marks stored UIDs that are gone from the server as removed.
    async fn reconcile_expunges<S: ImapIo>(&mut self, conn: &mut Connection<S>) -> Result<(), SyncError> {
        self.settle().await?;
        self.expunge_seen = false;
        let server: HashSet<u32> = conn.session.uid_search("ALL").await?;
        self.commands += 1;
        self.absorb(conn);
        let present = self.store.present_uids(self.folder.id, self.folder.uidvalidity).await?;
        let gone: Vec<i64> = present
            .into_iter()
            .filter(|&u| u <= self.folder.synced_high_uid && u32::try_from(u).is_ok_and(|u| !server.contains(&u)))
            .collect();
        if !gone.is_empty() {
            tracing::info!(name = %self.folder.name, count = gone.len(), "messages removed from the server folder");
            self.store.mark_removed(self.folder.id, self.folder.uidvalidity, &gone).await?;
        }
        self.folder.server_messages = server.len() as i64;
        self.store
            .update_folder_counts(
                self.folder.id,
                self.folder.server_messages,
                self.folder.uidnext,
                self.folder.highestmodseq,
            )
            .await?;
        Ok(())
    }

    async fn fetch<S: ImapIo>(&mut self, conn: &mut Connection<S>, uids: &[u32]) -> Result<FetchedBatch, SyncError> {
        let batch = fetch_batch(&mut conn.session, uids, &self.opts.screen, self.opts.max_text_bytes).await?;
        self.commands += batch.commands;
        self.absorb(conn);
        Ok(batch)
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            synced_high_uid: self.folder.synced_high_uid,
            synced_low_uid: self.folder.synced_low_uid,
            initial_sync_done: self.folder.initial_sync_done,
            uidnext: self.folder.uidnext,
            highestmodseq: self.folder.highestmodseq,
            server_messages: self.folder.server_messages,
        }
    }

    /// Hands a batch to a commit task and returns once the previous batch is committed,
    /// so the next fetch overlaps this commit. The in-memory cursor runs one batch ahead
    /// of the store's; a crash resumes from the store's.
    async fn commit(&mut self, fetched: FetchedBatch, mut cursor: Cursor) -> Result<(), SyncError> {
        self.settle().await?;
        cursor.uidnext = cursor.uidnext.max(cursor.synced_high_uid + 1);
        let batch = FolderBatch {
            folder_id: self.folder.id,
            org_id: self.org_id,
            uidvalidity: self.folder.uidvalidity,
            messages: fetched.messages.into_iter().map(|(uid, m)| (i64::from(uid), m)).collect(),
            skipped: fetched
                .skipped
                .into_iter()
                .map(|(uid, reason, size)| SkippedMessage {
                    uid: i64::from(uid),
                    reason: reason.as_str().to_string(),
                    recipients: reason.recipients(),
                    size: size as i64,
                })
                .collect(),
            cursor: cursor.clone(),
        };
        self.folder.synced_high_uid = cursor.synced_high_uid;
        self.folder.synced_low_uid = cursor.synced_low_uid;
        self.folder.initial_sync_done = cursor.initial_sync_done;
        self.folder.uidnext = cursor.uidnext;
        let store = self.store.clone();
        let folder = self.folder.name.clone();
        self.pending = Some(tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let outcome = ingest::commit_folder_batch(&store, &batch).await?;
                let commit_ms = started.elapsed().as_millis() as u64;
                tracing::debug!(name = %folder, new = outcome.new_message_ids.len(), duplicates = outcome.duplicates,
                skipped = batch.skipped.len(), high = batch.cursor.synced_high_uid, low = batch.cursor.synced_low_uid,
                commit_ms, "batch committed");
                Ok(outcome)
            }
            .in_current_span(),
        ));
        Ok(())
    }

    /// Waits for the batch in flight, if any.
    async fn settle(&mut self) -> Result<(), SyncError> {
        let Some(pending) = self.pending.take() else { return Ok(()) };
        let outcome =
            pending.await.map_err(|e| SyncError::new(ErrorClass::Store, format!("commit task failed: {e}")))??;
        self.stored += outcome.new_message_ids.len();
        Ok(())
    }
}

async fn select<S: ImapIo>(conn: &mut Connection<S>, name: &str) -> Result<Mailbox, SyncError> {
    let result =
        if conn.caps.condstore { conn.session.select_condstore(name).await } else { conn.session.select(name).await };
    drain_unsolicited(&conn.session);
    result.map_err(|e| match e {
        async_imap::error::Error::No(text) => {
            SyncError::new(ErrorClass::FolderMissing, format!("cannot select {name}: {}", text.trim()))
        }
        other => other.into(),
    })
}

/// `21-Nov-2026` for a unix time, as IMAP SEARCH SINCE wants it.
fn imap_date(unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // Civil-from-days (Howard Hinnant), valid for the proleptic Gregorian calendar.
    let z = unix_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{day}-{}-{year}", MONTHS[(month - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::super::connection::ServerCaps;
    use super::super::transcript::{Step, connection, literal, step};
    use super::*;
    use crate::store::{AuthKind, NewAccount, TlsMode};

    const MAX_TEXT: u32 = 65536;

    async fn store_with_account(dir: &std::path::Path) -> (Store, i64, i64) {
        let url = format!("sqlite:{}", dir.join("store.db").display());
        let store = Store::connect(&url, 2, std::time::Duration::from_secs(5)).await.unwrap();
        store.migrate().await.unwrap();
        let account = store
            .add_account(&NewAccount {
                org: "acme".into(),
                email: "me@acme.example".into(),
                imap_host: "imap.acme.example".into(),
                imap_port: 993,
                imap_tls: TlsMode::Implicit,
                username: "me".into(),
                auth: AuthKind::Password,
                sealed_secret: Vec::new(),
                oauth_provider: String::new(),
                oauth_token_url: String::new(),
                oauth_client_id: String::new(),
                oauth_client_secret: Vec::new(),
                ca_file: String::new(),
                smtp_host: String::new(),
                smtp_port: 0,
                smtp_tls: TlsMode::Implicit,
                provider_saves_sent: false,
            })
            .await
            .unwrap();
        (store, account.id, account.org_id)
    }

    fn select(exists: u32, uidvalidity: u32, uidnext: u32) -> Step {
        step(
            "SELECT",
            format!(
                "* {exists} EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY {uidvalidity}] UIDs valid\r\n\
                 * OK [UIDNEXT {uidnext}] next\r\n{{tag}} OK [READ-WRITE] SELECT completed\r\n"
            ),
        )
    }

    fn search(uids: &[u32]) -> String {
        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
        format!("* SEARCH {}\r\n{{tag}} OK SEARCH completed\r\n", list.join(" "))
    }

    /// The two FETCH steps of a batch of one-part text messages, as Dovecot answers them;
    /// `(uid, note)`: the message with id `note-NOTE@client.example` under that UID.
    fn fetch_steps(set: &str, messages: &[(u32, u32)]) -> [Step; 2] {
        let mut headers = String::new();
        let mut bodies = String::new();
        for (uid, note) in messages {
            let header = format!(
                "From: Bo <bo@client.example>\r\nTo: me@acme.example\r\nSubject: note {note}\r\n\
                 Message-ID: <note-{note}@client.example>\r\n\r\n"
            );
            let body = format!("body {note}\r\n");
            headers += &format!(
                "* {uid} FETCH (UID {uid} RFC822.SIZE {} BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") \
                 NIL NIL \"7BIT\" {} 1) BODY[HEADER] {})\r\n",
                header.len() + body.len(),
                body.len(),
                literal(&header)
            );
            bodies += &format!("* {uid} FETCH (UID {uid} BODY[1]<0> {})\r\n", literal(&body));
        }
        [
            step(
                format!("UID FETCH {set} (UID RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER])"),
                headers + "{tag} OK FETCH completed\r\n",
            ),
            step(format!("UID FETCH {set} (UID BODY.PEEK[1]<0.{MAX_TEXT}>)"), bodies + "{tag} OK FETCH completed\r\n"),
        ]
    }

    fn options() -> SyncOptions {
        SyncOptions {
            screen: Screen { max_recipients: 100 },
            batch_size: 2,
            max_text_bytes: MAX_TEXT,
            backfill_days: 0,
        }
    }

    async fn open(store: &Store, account: i64, org: i64, steps: Vec<Step>) -> (FolderSync, Vec<String>) {
        let (mut conn, server) = connection(steps, ServerCaps::default()).await;
        let sync =
            FolderSync::open(&mut conn, store, account, org, FolderRole::Inbox, "INBOX", options()).await.unwrap();
        drop(conn);
        (sync, server.await.unwrap())
    }

    #[tokio::test]
    async fn the_first_sync_backfills_newest_first_and_a_restart_with_nothing_new_only_selects() {
        let dir = tempfile::tempdir().unwrap();
        let (store, account, org) = store_with_account(dir.path()).await;

        // First sync: one search, then batches of two from the newest UID down.
        let mut steps = vec![select(3, 7, 4), step("UID SEARCH ALL", search(&[1, 2, 3]))];
        steps.extend(fetch_steps("2:3", &[(2, 2), (3, 3)]));
        steps.extend(fetch_steps("1", &[(1, 1)]));
        let (sync, _) = open(&store, account, org, steps).await;
        assert_eq!(sync.stored, 3);
        let folder = store.folder(account, FolderRole::Inbox).await.unwrap().unwrap();
        assert_eq!((folder.uidvalidity, folder.synced_low_uid, folder.synced_high_uid), (7, 1, 3));
        assert!(folder.initial_sync_done);
        assert_eq!(store.stored_count(folder.id).await.unwrap(), 3);

        // Restart, nothing new: SELECT and nothing else (the server refuses any other command).
        let (sync, commands) = open(&store, account, org, vec![select(3, 7, 4)]).await;
        assert_eq!(commands.len(), 2, "LOGIN and SELECT only: {commands:?}");
        assert_eq!(sync.stored, 0);

        // New mail: a search above the cursor, its batch, then the expunge check.
        let mut steps = vec![select(4, 7, 5), step("UID SEARCH UID 4:*", search(&[4]))];
        steps.extend(fetch_steps("4", &[(4, 4)]));
        steps.push(step("UID SEARCH ALL", search(&[1, 2, 3, 4])));
        let (sync, _) = open(&store, account, org, steps).await;
        assert_eq!(sync.stored, 1);
        let folder = store.folder(account, FolderRole::Inbox).await.unwrap().unwrap();
        assert_eq!((folder.synced_low_uid, folder.synced_high_uid), (1, 4));
        assert_eq!(store.stored_count(folder.id).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_new_uidvalidity_resyncs_without_duplicating_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (store, account, org) = store_with_account(dir.path()).await;
        let mut steps = vec![select(2, 7, 3), step("UID SEARCH ALL", search(&[1, 2]))];
        steps.extend(fetch_steps("1:2", &[(1, 1), (2, 2)]));
        open(&store, account, org, steps).await;

        // The server renumbered the same two messages.
        let mut steps = vec![select(2, 8, 13), step("UID SEARCH ALL", search(&[11, 12]))];
        steps.extend(fetch_steps("11:12", &[(11, 1), (12, 2)]));
        let (sync, _) = open(&store, account, org, steps).await;
        assert_eq!(sync.stored, 0, "the same messages, matched by Message-ID");
        let folder = store.folder(account, FolderRole::Inbox).await.unwrap().unwrap();
        assert_eq!((folder.uidvalidity, folder.synced_low_uid, folder.synced_high_uid), (8, 11, 12));
        assert_eq!(store.stored_count(folder.id).await.unwrap(), 2);
    }

    #[test]
    fn imap_dates() {
        assert_eq!(super::imap_date(1_795_255_200), "21-Nov-2026");
        assert_eq!(super::imap_date(0), "1-Jan-1970");
        assert_eq!(super::imap_date(951_782_400), "29-Feb-2000");
    }
}
