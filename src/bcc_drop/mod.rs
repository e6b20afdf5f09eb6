//! The BCC-drop listener: mail a user BCCs to their drop address `<token>@<domain>`
//! arrives over SMTP or LMTP (usually from the organization's MTA) and is stored as if it
//! had been synced from their Sent folder.
//!
//! - [`session`]: the protocol state machine (generic over the stream).
//! - [`verify`]: is the message really from the user (DKIM/SPF/DMARC or a trusted MTA)?
//! - [`Intake`] (here): the [`session::Mailroom`] that resolves drop tokens, checks the
//!   sender and hands accepted messages to the ingest pipeline.
//!
//! Architecture invariant: nothing is acknowledged (250) before the message and its
//! outcome row are committed; every message that reaches the end of DATA ends in a
//! recorded outcome (imported, duplicate, refused, failed) unless the store itself is
//! unreachable, in which case the client gets a 4xx and retries.

pub mod session;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::session::{Ending, Envelope, Mailroom, Reply, Session, SessionConfig};
use self::verify::{AuthVerdict, Transport, Verifier};
use crate::config::BccDropConfig;
use crate::ingest::{self, Incoming, ParsedMessage, Prepared, Screen, SkipReason, SourceFixup};
use crate::store::{DropOutcome, DropReceipt, DropUser, Store};

/// The listener with everything its sessions share.
pub struct Listener {
    listener: TcpListener,
    sessions: Arc<Semaphore>,
    config: Arc<SessionConfig>,
    session_timeout: Duration,
    acceptor: Option<TlsAcceptor>,
    intake: Arc<Intake>,
}

impl Listener {
    /// Binds the configured address and loads the TLS certificate, if any.
    pub async fn bind(config: &BccDropConfig, store: Store, screen: Screen) -> anyhow::Result<Listener> {
        let hostname = if config.hostname.is_empty() { config.domain.clone() } else { config.hostname.clone() };
        let acceptor = if config.tls_cert_file.as_os_str().is_empty() {
            None
        } else {
            Some(crate::net::tls::acceptor(&config.tls_cert_file, &config.tls_key_file)?)
        };
        let verifier = Verifier::from_config(config, &hostname).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen for BCC drop on {}", config.listen))?;
        Ok(Listener {
            listener,
            sessions: Arc::new(Semaphore::new(config.max_sessions as usize)),
            config: Arc::new(SessionConfig {
                protocol: config.protocol,
                hostname,
                max_message_bytes: usize::try_from(config.max_message_bytes).unwrap_or(usize::MAX),
                max_recipients: config.max_recipients as usize,
                idle_timeout: Duration::from_secs(config.idle_timeout_secs),
                starttls: acceptor.is_some(),
            }),
            session_timeout: Duration::from_secs(config.session_timeout_secs),
            acceptor,
            intake: Arc::new(Intake { store, domain: config.domain.to_ascii_lowercase(), verifier, screen }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `stop`; each session is a task of its own, so a panic
    /// in one (its client then sees the connection drop, no 250) touches no other.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stop.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "BCC drop: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "BCC drop: too many sessions, refusing a connection");
                tokio::spawn(refuse_busy(stream));
                continue;
            };
            let (config, intake, acceptor, limit) =
                (self.config.clone(), self.intake.clone(), self.acceptor.clone(), self.session_timeout);
            tokio::spawn(async move {
                let _permit = permit;
                serve(stream, peer, &config, &intake, acceptor.as_ref(), limit).await;
            });
        }
    }
}

async fn refuse_busy(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(b"421 4.3.2 too many sessions, try again later\r\n"),
    )
    .await;
}

/// One connection, STARTTLS included, within the session time limit.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    config: &SessionConfig,
    intake: &Intake,
    acceptor: Option<&TlsAcceptor>,
    limit: Duration,
) {
    let _ = stream.set_nodelay(true);
    let mut plain = Session::new(stream, config, intake, peer, false);
    let served = tokio::time::timeout(limit, async {
        plain.greet().await?;
        let ending = plain.run().await?;
        Ok::<_, std::io::Error>(ending)
    })
    .await;
    let ending = match served {
        Err(_) => {
            plain.say_goodbye(Reply::new(421, "4.4.2", "session time limit reached, closing")).await;
            tracing::info!(%peer, "BCC drop: session time limit reached");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "BCC drop: connection error");
            return;
        }
        Ok(Ok(ending)) => ending,
    };
    let (Ending::StartTls, Some(acceptor)) = (&ending, acceptor) else {
        tracing::debug!(%peer, ?ending, "BCC drop: session ended");
        return;
    };
    let tls = match tokio::time::timeout(config.idle_timeout, acceptor.accept(plain.into_stream())).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "BCC drop: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "BCC drop: TLS handshake timed out");
            return;
        }
    };
    let mut secure = Session::new(tls, config, intake, peer, true);
    match tokio::time::timeout(limit, secure.run()).await {
        Err(_) => secure.say_goodbye(Reply::new(421, "4.4.2", "session time limit reached, closing")).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "BCC drop: connection error"),
        Ok(Ok(ending)) => tracing::debug!(%peer, ?ending, "BCC drop: TLS session ended"),
    }
}

/// Resolves drop addresses and turns received messages into stored ones.
pub struct Intake {
    store: Store,
    /// The drop domain, lower case.
    domain: String,
    verifier: Verifier,
    screen: Screen,
}

impl Mailroom for Intake {
    async fn recipient(&self, address: &str) -> Result<i64, Reply> {
        let Some((token, domain)) = address.rsplit_once('@') else {
            return Err(Reply::new(550, "5.1.3", "not a drop address"));
        };
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return Err(Reply::new(
                550,
                "5.7.1",
                format!("relaying denied: only mail for @{} is taken here", self.domain),
            ));
        }
        match self.store.drop_user(token).await {
            Ok(Some(user)) => Ok(user.user_id),
            Ok(None) => {
                tracing::info!(address, "BCC drop: unknown drop address refused");
                Err(Reply::new(550, "5.1.1", "no such drop address (it may have been rotated)"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "BCC drop: store unavailable at RCPT");
                Err(Reply::new(451, "4.3.0", "temporary failure, try again later"))
            }
        }
    }

    async fn deliver(&self, envelope: &Envelope, data: Vec<u8>) -> Vec<Reply> {
        tracing::debug!(peer = %envelope.peer, size = data.len(), recipients = envelope.recipients.len(), "BCC drop: message received");
        let data = Arc::new(data);
        let mut replies = Vec::new();
        for mailbox in envelope.mailboxes() {
            let address = envelope
                .recipients
                .iter()
                .find(|r| r.mailbox == mailbox)
                .map(|r| r.address.clone())
                .unwrap_or_default();
            // A panic while parsing or verifying a hostile message fails that message
            // (permanently: the same bytes would panic again), not the session.
            let reply =
                match std::panic::AssertUnwindSafe(self.deliver_one(envelope, &address, &data)).catch_unwind().await {
                    Ok(reply) => reply,
                    Err(_) => {
                        tracing::error!(peer = %envelope.peer, "BCC drop: processing a message panicked");
                        let receipt = DropReceipt {
                            peer: envelope.peer.to_string(),
                            envelope_from: envelope.mail_from.clone(),
                            size: data.len() as i64,
                            ..DropReceipt::default()
                        };
                        let outcome =
                            DropOutcome::Failed { reason: "internal error while processing the message".into() };
                        if let Err(e) = self.store.record_drop(0, &receipt, &outcome).await {
                            tracing::warn!(error = %e, "BCC drop: recording the outcome failed");
                        }
                        Reply::new(554, "5.3.0", "internal error while processing this message")
                    }
                };
            replies.push(reply);
        }
        replies
    }
}

impl Intake {
    /// Processes the message for the user of one drop address and says how it went.
    async fn deliver_one(&self, envelope: &Envelope, address: &str, raw: &[u8]) -> Reply {
        let token = address.rsplit_once('@').map_or(address, |(t, _)| t);
        let user = match self.store.drop_user(token).await {
            Ok(Some(user)) => user,
            // Rotated between RCPT and the end of DATA.
            Ok(None) => return Reply::new(550, "5.1.1", "no such drop address (it may have been rotated)"),
            Err(e) => {
                tracing::warn!(error = %e, "BCC drop: store unavailable");
                return Reply::new(451, "4.3.0", "temporary failure, try again later");
            }
        };
        // The drop address is the envelope's, not a party to the conversation.
        let fixup = SourceFixup::DropDomain(&self.domain);
        let Prepared { message: parsed, skip } = ingest::prepare(Incoming::Whole(raw), &self.screen, fixup);
        let receipt = DropReceipt {
            peer: envelope.peer.to_string(),
            envelope_from: envelope.mail_from.clone(),
            header_from: header_from(&parsed).join(", "),
            message_id: parsed.message_id.clone(),
            size: raw.len() as i64,
        };
        let outcome = match self.check(&user, envelope, raw, &parsed, skip).await {
            Err(outcome) => outcome,
            Ok(how) => match self.store.import_dropped(&user, &receipt, &parsed).await {
                Ok(outcome) => {
                    tracing::info!(user = %user.email, message_id = %receipt.message_id, outcome = outcome.as_str(), auth = %how, "BCC drop: stored");
                    return outcome_reply(&outcome);
                }
                Err(e) => {
                    tracing::warn!(user = %user.email, error = %e, "BCC drop: storing failed");
                    DropOutcome::Failed { reason: format!("store: {e}") }
                }
            },
        };
        tracing::info!(user = %user.email, message_id = %receipt.message_id, outcome = outcome.as_str(), reason = %outcome_reason(&outcome), "BCC drop: not stored");
        if let Err(e) = self.store.record_drop(user.user_id, &receipt, &outcome).await {
            tracing::warn!(user = %user.email, error = %e, "BCC drop: recording the outcome failed");
        }
        outcome_reply(&outcome)
    }

    /// The sender and authentication checks; `Ok` says how the message passed.
    async fn check(
        &self,
        user: &DropUser,
        envelope: &Envelope,
        raw: &[u8],
        parsed: &ParsedMessage,
        skip: Option<SkipReason>,
    ) -> Result<String, DropOutcome> {
        let refuse = |reason: String| DropOutcome::Refused { reason };
        if let Some(skip) = skip {
            return Err(refuse(skip.to_string()));
        }
        let own = |address: &str| crate::address::normalize_email(address).is_ok_and(|a| user.addresses.contains(&a));
        let from = header_from(parsed);
        let [from] = from.as_slice() else {
            return Err(refuse(format!("the message must have exactly one From address, it has {}", from.len())));
        };
        if !own(from) {
            return Err(refuse(format!("From {from} is not one of {}'s addresses", user.email)));
        }
        if !own(&envelope.mail_from) {
            let sender = if envelope.mail_from.is_empty() { "<>" } else { &envelope.mail_from };
            return Err(refuse(format!("envelope sender {sender} is not one of {}'s addresses", user.email)));
        }
        let transport = Transport { peer_ip: envelope.peer.ip(), helo: &envelope.helo, mail_from: &envelope.mail_from };
        match self.verifier.check(raw, crate::address::domain_of(from), &transport).await {
            AuthVerdict::Pass(how) => Ok(how),
            AuthVerdict::Fail(why) => Err(refuse(format!("not authenticated: {why}"))),
            AuthVerdict::TempFail(why) => {
                Err(DropOutcome::Failed { reason: format!("authentication lookup failed: {why}") })
            }
        }
    }
}

fn header_from(parsed: &ParsedMessage) -> Vec<String> {
    parsed.participants.iter().filter(|p| p.role == crate::ingest::Role::From).map(|p| p.address.clone()).collect()
}

fn outcome_reason(outcome: &DropOutcome) -> &str {
    match outcome {
        DropOutcome::Refused { reason } | DropOutcome::Failed { reason } => reason,
        _ => "",
    }
}

fn outcome_reply(outcome: &DropOutcome) -> Reply {
    match outcome {
        DropOutcome::Imported { message } => Reply::new(250, "2.0.0", format!("stored as message {message}")),
        DropOutcome::Duplicate { message } => Reply::new(250, "2.0.0", format!("already stored as message {message}")),
        DropOutcome::Refused { reason } => Reply::new(550, "5.7.1", reason.clone()),
        DropOutcome::Failed { reason } => {
            Reply::new(451, "4.3.0", format!("temporary failure ({reason}); try again later"))
        }
    }
}
