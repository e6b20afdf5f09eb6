//! The daemon's sender task: claims due outbox rows, runs their SMTP transactions
//! (several at once), records each attempt, and files copies in users' Sent folders.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::smtp::{RecipientOutcome, SmtpAuth, SmtpFailure, SmtpTarget, deliver};
use crate::config::{Config, OutboundConfig, RelayTls, SyncConfig};
use crate::imap::connection::{Credential, ServerSettings, connect};
use crate::imap::worker::Credentials;
use crate::ingest::{self, Incoming, Screen, SourceFixup};
use crate::retry::{self, Backoff};
use crate::secrets::{MasterKey, Secret};
use crate::store::{AttemptEnd, FolderRole, OutgoingJob, RecipientResult, RecipientState, Store, TlsMode, now_ms};

/// Messages in flight at once.
const CONCURRENT_SENDS: i64 = 16;
const RELAY_PASSWORD_CREDENTIAL: &str = "smtp-relay-password";

pub struct SenderContext {
    pub store: Store,
    pub key: Arc<MasterKey>,
    /// The configured relay; None sends through each account's own SMTP server.
    pub relay: Option<SmtpTarget>,
    pub outbound: OutboundConfig,
    pub sync: SyncConfig,
}

impl SenderContext {
    /// Reads the relay's password (systemd credential, else the configured file) and CA
    /// file once, at start: a broken relay configuration stops the daemon with a reason.
    pub fn new(store: Store, key: Arc<MasterKey>, config: &Config) -> anyhow::Result<SenderContext> {
        let r = &config.smtp_relay;
        let relay = if r.host.is_empty() {
            None
        } else {
            let auth = if r.username.is_empty() {
                None
            } else {
                let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .map(|d| std::path::Path::new(&d).join(RELAY_PASSWORD_CREDENTIAL))
                    .filter(|p| p.exists());
                let path = credential.unwrap_or_else(|| r.password_file.clone());
                let password = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "smtp_relay.password_file {}: {e} (needed because smtp_relay.username is set)",
                        path.display()
                    )
                })?;
                Some(SmtpAuth::Password {
                    username: r.username.clone(),
                    password: Secret::new(password.trim_end_matches(['\r', '\n'])),
                })
            };
            let ca_pem = if r.ca_file.as_os_str().is_empty() {
                None
            } else {
                Some(
                    std::fs::read(&r.ca_file)
                        .map_err(|e| anyhow::anyhow!("smtp_relay.ca_file {}: {e}", r.ca_file.display()))?,
                )
            };
            Some(SmtpTarget { host: r.host.clone(), port: r.port, tls: r.tls, ca_pem, auth })
        };
        Ok(SenderContext { store, key, relay, outbound: config.outbound.clone(), sync: config.sync.clone() })
    }

    /// The relay, or the user's own SMTP server with the account's credentials (returned
    /// too, so that a refused OAuth2 token can be refreshed).
    async fn target_for(&self, user_id: i64) -> Result<(SmtpTarget, Option<Credentials>), SmtpFailure> {
        if let Some(relay) = &self.relay {
            return Ok((relay.clone(), None));
        }
        let transient = |e: String| SmtpFailure::transient(e);
        let account = self.store.account_of_user(user_id).await.map_err(|e| transient(e.to_string()))?;
        if account.smtp_host.is_empty() {
            return Err(SmtpFailure {
                permanent: true,
                reply: format!("account {} has no SMTP server and no [smtp_relay] host is configured", account.id),
                auth_refused: false,
            });
        }
        let ca_pem = if account.ca_file.is_empty() {
            None
        } else {
            Some(std::fs::read(&account.ca_file).map_err(|e| transient(format!("CA file {}: {e}", account.ca_file)))?)
        };
        let credentials =
            Credentials::for_account(&self.store, &self.key, &account).await.map_err(|e| transient(e.to_string()))?;
        let auth = match credentials.current().await.map_err(|e| transient(e.to_string()))? {
            Credential::Password(password) => SmtpAuth::Password { username: account.username.clone(), password },
            Credential::AccessToken(access_token) => {
                SmtpAuth::Xoauth2 { username: account.username.clone(), access_token }
            }
        };
        let tls = match account.smtp_tls {
            TlsMode::Implicit => RelayTls::Implicit,
            TlsMode::Starttls => RelayTls::Starttls,
        };
        let target =
            SmtpTarget { host: account.smtp_host.clone(), port: account.smtp_port, tls, ca_pem, auth: Some(auth) };
        Ok((target, Some(credentials)))
    }

    /// Connects and authenticates to the user's target without sending (for `check`).
    pub async fn probe(&self, user_id: i64) -> Result<String, SmtpFailure> {
        let (target, _) = self.target_for(user_id).await?;
        super::smtp::probe(&target, Duration::from_secs(self.outbound.send_timeout_secs)).await
    }

    /// Delivers through the user's target; an OAuth2 token the server refuses is
    /// refreshed once and the transaction tried again, as the IMAP side does.
    async fn deliver_for(
        &self,
        job: &OutgoingJob,
        recipients: &[String],
    ) -> Result<super::smtp::Delivery, SmtpFailure> {
        let timeout = Duration::from_secs(self.outbound.send_timeout_secs);
        let (mut target, credentials) = self.target_for(job.user_id).await?;
        let first = deliver(&target, timeout, &job.envelope_from, recipients, &job.raw).await;
        let (Err(failure), Some(Credentials::OAuth(source)), Some(SmtpAuth::Xoauth2 { username, .. })) =
            (&first, &credentials, &target.auth)
        else {
            return first;
        };
        if !failure.is_auth_refused() {
            return first;
        }
        source.invalidate().await;
        let access_token = source.access_token().await.map_err(|e| SmtpFailure::transient(e.to_string()))?;
        target.auth = Some(SmtpAuth::Xoauth2 { username: username.clone(), access_token });
        deliver(&target, timeout, &job.envelope_from, recipients, &job.raw).await
    }
}

/// Runs until `stop`: keeps up to [`CONCURRENT_SENDS`] attempts in flight, claiming due
/// messages as slots free up; when idle, files Sent copies and waits for `wake` (the API
/// queued mail), a finished attempt, or `outbound.poll_ms`.
pub async fn run(ctx: Arc<SenderContext>, wake: Arc<Notify>, stop: CancellationToken) {
    let poll = Duration::from_millis(ctx.outbound.poll_ms);
    let stale_ms = i64::try_from(ctx.outbound.stale_sending_secs * 1000).unwrap_or(i64::MAX);
    // Each attempt is its own task: a panic costs that message's attempt (claimed again
    // once stale), not the sender.
    let mut in_flight: JoinSet<()> = JoinSet::new();
    loop {
        let free = CONCURRENT_SENDS - in_flight.len() as i64;
        let mut claimed = 0;
        if free > 0 {
            match ctx.store.claim_outgoing(stale_ms, free).await {
                Ok(jobs) => {
                    claimed = jobs.len();
                    for job in jobs {
                        let ctx = ctx.clone();
                        in_flight.spawn(async move { attempt(&ctx, job).await });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox unavailable; retrying"),
            }
        }
        if claimed > 0 {
            continue;
        }
        if let Err(e) = file_sent_copies(&ctx).await {
            tracing::warn!(error = %e, "outbox unavailable; retrying");
        }
        let stopping = tokio::select! {
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "send attempt panicked");
                }
                false
            }
            _ = wake.notified() => false,
            _ = tokio::time::sleep(poll) => false,
            _ = stop.cancelled() => true,
        };
        if stopping {
            while in_flight.join_next().await.is_some() {}
            return;
        }
    }
}

/// Files the copies of sent messages in their users' Sent folders. A failed copy is tried
/// again on the outbound retry schedule, whatever the failure (a server down for a while,
/// a password being changed): only `max_attempts` failures in a row mark it failed.
async fn file_sent_copies(ctx: &SenderContext) -> crate::store::Result<()> {
    for copy in ctx.store.pending_sent_copies(CONCURRENT_SENDS).await? {
        let Err(e) = file_sent_copy(ctx, copy.user_id, &copy.raw).await else {
            ctx.store.set_sent_copy(copy.id, "appended").await?;
            continue;
        };
        let attempts = copy.attempts + 1;
        if attempts < i64::from(ctx.outbound.max_attempts) {
            let at = retry_at(&ctx.outbound, u32::try_from(copy.attempts).unwrap_or(u32::MAX));
            tracing::warn!(outbox = copy.id, attempts, error = %e, retry_in_ms = at - now_ms(), "could not file the copy in the Sent folder; will retry");
            ctx.store.retry_sent_copy_at(copy.id, at).await?;
        } else {
            tracing::warn!(outbox = copy.id, attempts, error = %e, "could not file the copy in the Sent folder; giving up");
            ctx.store.set_sent_copy(copy.id, &format!("failed: {e} (after {attempts} attempts)")).await?;
        }
    }
    Ok(())
}

async fn attempt(ctx: &SenderContext, job: OutgoingJob) {
    let pending: Vec<String> =
        job.recipients.iter().filter(|r| r.state == RecipientState::Pending).map(|r| r.address.clone()).collect();
    let outcome = ctx.deliver_for(&job, &pending).await;
    let (results, end) = conclude(&job, outcome, &ctx.outbound);
    match &end {
        AttemptEnd::Sent { .. } => tracing::info!(outbox = job.id, attempts = job.attempts, "message sent"),
        AttemptEnd::Retry { reply, .. } => {
            tracing::warn!(outbox = job.id, attempts = job.attempts, reply = %reply, "send deferred")
        }
        AttemptEnd::Failed { reply } => {
            tracing::warn!(outbox = job.id, attempts = job.attempts, reply = %reply, "send failed")
        }
    }
    // The message as the store keeps it: the bytes as sent, the envelope's Bcc added.
    // (Compose held it to `sync.max_recipients` at enqueue; nothing is screened here.)
    let envelope: Vec<String> = job.recipients.iter().map(|r| r.address.clone()).collect();
    let unscreened = Screen { max_recipients: u32::MAX };
    let sent = ingest::prepare(Incoming::Whole(&job.raw), &unscreened, SourceFixup::EnvelopeRecipients(&envelope));
    // A busy store is waited for: an unrecorded success would be sent again.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    while let Err(e) = ctx.store.finish_attempt(&job, &results, &end, &sent.message).await {
        if !e.is_transient() || backoff.attempts() >= 10 {
            // The row stays `sending` and is claimed again once stale: it may go out
            // twice, the documented window (see the module docs of `outbound`).
            tracing::error!(outbox = job.id, error = %e, "could not record a send attempt");
            return;
        }
        tracing::warn!(outbox = job.id, error = %e, "recording a send attempt failed; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Merges an attempt's outcome into the per-recipient results and decides what next:
/// sent when nothing is pending, failed on permanent refusal or used-up attempts,
/// otherwise a retry after a jittered exponential delay.
fn conclude(
    job: &OutgoingJob,
    outcome: Result<super::smtp::Delivery, SmtpFailure>,
    policy: &OutboundConfig,
) -> (Vec<RecipientResult>, AttemptEnd) {
    let mut results = job.recipients.clone();
    let mut last_reply = String::new();
    match outcome {
        Ok(delivery) => {
            for (address, o) in delivery.recipients {
                let Some(r) = results.iter_mut().find(|r| r.address == address) else { continue };
                match o {
                    RecipientOutcome::Accepted => {
                        r.state = RecipientState::Accepted;
                        r.reply.clear();
                    }
                    RecipientOutcome::Refused { permanent, reply } => {
                        if permanent {
                            r.state = RecipientState::Refused;
                        }
                        last_reply.clone_from(&reply);
                        r.reply = reply;
                    }
                }
            }
            if let Some(reply) = delivery.data_reply {
                last_reply = reply;
            }
        }
        Err(failure) => {
            for r in results.iter_mut().filter(|r| r.state == RecipientState::Pending) {
                if failure.is_permanent() {
                    r.state = RecipientState::Refused;
                }
                r.reply.clone_from(&failure.reply);
            }
            last_reply = failure.reply;
        }
    }
    let accepted = results.iter().any(|r| r.state == RecipientState::Accepted);
    let pending = results.iter().any(|r| r.state == RecipientState::Pending);
    let end = if !pending {
        if accepted { AttemptEnd::Sent { reply: last_reply } } else { AttemptEnd::Failed { reply: last_reply } }
    } else if job.attempts >= i64::from(policy.max_attempts) {
        for r in results.iter_mut().filter(|r| r.state == RecipientState::Pending) {
            r.state = RecipientState::Refused;
            r.reply = format!("gave up after {} attempts: {}", job.attempts, r.reply);
        }
        if accepted {
            AttemptEnd::Sent { reply: last_reply }
        } else {
            AttemptEnd::Failed { reply: format!("gave up after {} attempts: {last_reply}", job.attempts) }
        }
    } else {
        AttemptEnd::Retry { at: retry_at(policy, u32::try_from(job.attempts - 1).unwrap_or(0)), reply: last_reply }
    };
    (results, end)
}

/// When the next try is due (unix ms) after `failures` earlier failed ones: the outbound
/// schedule, doubling from `retry_base_secs` up to `retry_max_secs`, jittered.
fn retry_at(policy: &OutboundConfig, failures: u32) -> i64 {
    let delay =
        retry::delay(Duration::from_secs(policy.retry_base_secs), Duration::from_secs(policy.retry_max_secs), failures);
    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
}

/// APPENDs a sent message to the user's Sent folder (seen). The folder's own sync then
/// finds it and recognizes it by its Message-ID.
async fn file_sent_copy(ctx: &SenderContext, user_id: i64, raw: &[u8]) -> anyhow::Result<()> {
    let account = ctx.store.account_of_user(user_id).await?;
    let sent = ctx
        .store
        .folder(account.id, FolderRole::Sent)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the account has no Sent folder (yet)"))?;
    let settings = ServerSettings::for_account(&account, &ctx.sync)?;
    let credentials = Credentials::for_account(&ctx.store, &ctx.key, &account).await?;
    let mut connection = connect(&settings, &credentials.current().await?).await?;
    let appended = connection.session.append(&sent.name, Some("(\\Seen)"), None, raw).await;
    crate::imap::connection::drain_unsolicited(&connection.session);
    let _ = connection.session.logout().await;
    appended?;
    Ok(())
}
