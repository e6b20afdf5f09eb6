//! One account's worker: a task per folder (INBOX, Sent), each with its own connection,
//! that syncs, then waits in IDLE (or polls) and syncs again, reconnecting with jittered
//! exponential backoff. A worker touches only its own account; everything it learns goes
//! to the store through the ingest pipeline.

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use imap_proto::{MailboxDatum, Response};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::retry::Backoff;

use super::connection::{Connection, Credential, ServerSettings, connect, drain_unsolicited};
use super::error::{ErrorClass, SyncError};
use super::folders::find_folders;
use super::sync::{FolderSync, SyncOptions};
use crate::oauth::TokenSource;
use crate::secrets::{MasterKey, Secret};
use crate::store::{Account, AccountState, AuthKind, FolderRole, Store};

/// Where a worker's login credential comes from.
#[derive(Debug)]
pub enum Credentials {
    Password(Secret),
    /// Access tokens, refreshed as they expire.
    OAuth(Arc<TokenSource>),
}

impl Credentials {
    /// The account's password (unsealed) or a token source for its OAuth2 grant.
    pub async fn for_account(store: &Store, key: &Arc<MasterKey>, account: &Account) -> Result<Credentials, SyncError> {
        Ok(match account.auth {
            AuthKind::Password => {
                let sealed = store.account_secret(account.id).await?;
                let password = key
                    .open(crate::accounts::PASSWORD_PURPOSE, &sealed)
                    .map_err(|e| SyncError::new(ErrorClass::Secret, e.to_string()))?;
                Credentials::Password(password)
            }
            AuthKind::Xoauth2 => {
                Credentials::OAuth(Arc::new(TokenSource::new(store.clone(), key.clone(), account.id).await?))
            }
        })
    }

    pub async fn current(&self) -> Result<Credential, SyncError> {
        match self {
            Credentials::Password(p) => Ok(Credential::Password(p.clone())),
            Credentials::OAuth(source) => Ok(Credential::AccessToken(source.access_token().await?)),
        }
    }
}

/// Everything a worker needs, fixed for its lifetime (a changed account gets a new worker).
#[derive(Debug)]
pub struct WorkerContext {
    pub store: Store,
    pub account_id: i64,
    pub org_id: i64,
    pub server: ServerSettings,
    pub credentials: Credentials,
    pub sync: SyncOptions,
    /// IDLE is re-issued this often (servers drop IDLE after 30 minutes).
    pub idle_renew: Duration,
    /// Polling interval for servers without IDLE.
    pub poll_interval: Duration,
    pub backoff_max: Duration,
}

/// Runs the account until `shutdown` turns true.
pub async fn run_account(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    // Each folder's logs carry its span, inside the supervisor's span of the account.
    let span = |role: FolderRole| tracing::info_span!("folder", folder = role.as_str());
    let sent =
        tokio::spawn(run_folder(ctx.clone(), FolderRole::Sent, shutdown.clone()).instrument(span(FolderRole::Sent)));
    run_folder(ctx.clone(), FolderRole::Inbox, shutdown).instrument(span(FolderRole::Inbox)).await;
    if let Err(e) = sent.await
        && e.is_panic()
    {
        tracing::error!("Sent folder task panicked");
    }
}

enum Exit {
    Shutdown,
    NoFolder,
}

async fn run_folder(ctx: Arc<WorkerContext>, role: FolderRole, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), ctx.backoff_max);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let wait = match session(&ctx, role, &shutdown, &mut backoff).await {
            Ok(Exit::Shutdown) => return,
            Ok(Exit::NoFolder) => {
                tracing::info!("the server has no Sent folder; syncing INBOX only");
                report_note(&ctx, "the server has no Sent folder; only INBOX is synced").await;
                return;
            }
            Err(e) => {
                tracing::warn!(class = %e.class, error = %e.detail, "sync failed");
                crate::metrics::imap_error(e.class);
                report(&ctx, AccountState::Error, Some(&e)).await;
                if e.is_transient() {
                    backoff.next_delay()
                } else {
                    // Nothing will change until the account does (the supervisor then starts
                    // a new worker); retry rarely in case the server side is fixed.
                    Duration::from_secs(3600)
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn session(
    ctx: &WorkerContext,
    role: FolderRole,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<Exit, SyncError> {
    report(ctx, AccountState::Connecting, None).await;
    let connecting = std::time::Instant::now();
    let credential = ctx.credentials.current().await?;
    let mut conn = match connect(&ctx.server, &credential).await {
        Err(e) if e.class == ErrorClass::AuthFailed && matches!(ctx.credentials, Credentials::OAuth(_)) => {
            // The provider may revoke a token before its expiry: refresh once and retry.
            if let Credentials::OAuth(source) = &ctx.credentials {
                source.invalidate().await;
            }
            connect(&ctx.server, &ctx.credentials.current().await?).await?
        }
        other => other?,
    };
    crate::metrics::imap_connection();
    let connect_ms = connecting.elapsed().as_millis() as u64;
    let names = find_folders(&mut conn.session).await?;
    tracing::debug!(connect_ms, list_ms = connecting.elapsed().as_millis() as u64 - connect_ms, "connected");
    let name = match role {
        FolderRole::Inbox => names.inbox,
        FolderRole::Sent => match names.sent {
            Some(name) => name,
            None => return Ok(Exit::NoFolder),
        },
    };
    report(ctx, AccountState::Syncing, None).await;
    let started = std::time::Instant::now();
    let mut sync =
        FolderSync::open(&mut conn, &ctx.store, ctx.account_id, ctx.org_id, role, &name, ctx.sync.clone()).await?;
    backoff.reset();
    report(ctx, AccountState::Idle, None).await;
    let (bytes_in, bytes_out) = conn.timeouts.bytes();
    tracing::info!(name = %name, stored = sync.stored, commands = sync.commands,
        bytes_in, bytes_out, elapsed_ms = started.elapsed().as_millis() as u64, idle = conn.caps.idle, "folder in sync");
    loop {
        let (next, wake) = if conn.caps.idle {
            idle(conn, ctx.idle_renew, shutdown).await?
        } else {
            poll(conn, ctx.poll_interval, shutdown).await?
        };
        let Some(next) = next else {
            return Ok(Exit::Shutdown);
        };
        conn = next;
        sync.refresh(&mut conn, wake.expunged).await?;
        if let Some(at) = wake.new_mail_at {
            crate::metrics::push_latency(at.elapsed());
        }
    }
}

/// What woke a waiting connection.
#[derive(Debug, Default, Clone, Copy)]
struct Wake {
    expunged: bool,
    /// When the server announced new mail in IDLE (for the push-latency metric).
    new_mail_at: Option<std::time::Instant>,
}

/// Waits in IDLE until the server reports a change, the renewal time passes, or shutdown.
/// Returns `None` on shutdown.
async fn idle(
    conn: Connection,
    renew: Duration,
    shutdown: &CancellationToken,
) -> Result<(Option<Connection>, Wake), SyncError> {
    let Connection { session, timeouts, caps } = conn;
    let mut handle = session.idle();
    handle.init().await?;
    // Silence is normal in IDLE: no read timeout until DONE.
    timeouts.suspend_reads();
    let outcome = {
        let (wait, _interrupt) = handle.wait_with_timeout(renew);
        tokio::select! {
            r = tokio::time::timeout(renew, wait) => Some(r),
            _ = shutdown.cancelled() => None,
        }
    };
    timeouts.restore();
    let Some(outcome) = outcome else {
        return Ok((None, Wake::default()));
    };
    let mut wake = Wake::default();
    if let Ok(Ok(IdleResponse::NewData(data))) = &outcome {
        wake.expunged = matches!(data.parsed(), Response::Expunge(_) | Response::Vanished { .. });
        if let Response::MailboxData(MailboxDatum::Exists(_)) = data.parsed() {
            tracing::debug!("IDLE: new mail");
            wake.new_mail_at = Some(std::time::Instant::now());
        }
    }
    if let Ok(Err(e)) = outcome {
        return Err(e.into());
    }
    let session = handle.done().await?;
    wake.expunged |= drain_unsolicited(&session).expunged;
    Ok((Some(Connection { session, timeouts, caps }), wake))
}

/// For servers without IDLE: waits `interval`, then NOOP to collect updates.
async fn poll(
    mut conn: Connection,
    interval: Duration,
    shutdown: &CancellationToken,
) -> Result<(Option<Connection>, Wake), SyncError> {
    tokio::select! {
        _ = tokio::time::sleep(interval) => {}
        _ = shutdown.cancelled() => return Ok((None, Wake::default())),
    }
    conn.session.noop().await?;
    let news = drain_unsolicited(&conn.session);
    Ok((Some(conn), Wake { expunged: news.expunged, ..Wake::default() }))
}

async fn report(ctx: &WorkerContext, state: AccountState, error: Option<&SyncError>) {
    let (class, message) = match error {
        Some(e) => (e.class.as_str(), e.message()),
        None => ("", String::new()),
    };
    if let Err(e) = ctx.store.set_account_state(ctx.account_id, state, class, &message).await {
        tracing::warn!(error = %e, "cannot record account state");
    }
}

async fn report_note(ctx: &WorkerContext, note: &str) {
    if let Err(e) = ctx.store.set_account_note(ctx.account_id, note).await {
        tracing::warn!(error = %e, "cannot record account note");
    }
}
