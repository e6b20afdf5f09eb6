//! One SMTP transaction with per-recipient results, on lettre's async connection: connect
//! (implicit TLS or STARTTLS), authenticate (password or XOAUTH2), MAIL, one RCPT per
//! recipient (a refused recipient does not stop the others), DATA. lettre's own `send`
//! stops at the first refused recipient, which would hide who was refused and why.

use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use crate::config::RelayTls;
use crate::secrets::Secret;

/// Where and how to submit.
#[derive(Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    /// PEM of extra trusted CA certificates.
    pub ca_pem: Option<Vec<u8>>,
    pub auth: Option<SmtpAuth>,
}

#[derive(Clone)]
pub enum SmtpAuth {
    Password { username: String, password: Secret },
    Xoauth2 { username: String, access_token: Secret },
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTarget").field("host", &self.host).field("port", &self.port).finish_non_exhaustive()
    }
}

/// Why a transaction failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reply}")]
pub struct SmtpFailure {
    /// A 5xx reply: sending the same again will fail the same way.
    pub permanent: bool,
    /// The server's reply, or what went wrong before there was one.
    pub reply: String,
    /// The server refused our credentials (an OAuth2 access token may just need refreshing).
    pub auth_refused: bool,
}

impl SmtpFailure {
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
    pub fn is_transient(&self) -> bool {
        !self.permanent
    }
    pub fn is_auth_refused(&self) -> bool {
        self.auth_refused
    }
    pub fn transient(reply: impl Into<String>) -> SmtpFailure {
        SmtpFailure { permanent: false, reply: reply.into(), auth_refused: false }
    }
}

impl From<lettre::transport::smtp::Error> for SmtpFailure {
    fn from(e: lettre::transport::smtp::Error) -> SmtpFailure {
        SmtpFailure { permanent: e.is_permanent(), reply: e.to_string(), auth_refused: false }
    }
}

/// One recipient's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum RecipientOutcome {
    Accepted,
    Refused { permanent: bool, reply: String },
}

/// The outcome of a transaction that reached RCPT: per recipient, and the reply to the
/// message data when at least one recipient was accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub recipients: Vec<(String, RecipientOutcome)>,
    pub data_reply: Option<String>,
}

/// Runs one transaction, bounded as a whole by `timeout`.
pub async fn deliver(
    target: &SmtpTarget,
    timeout: Duration,
    from: &str,
    recipients: &[String],
    raw: &[u8],
) -> Result<Delivery, SmtpFailure> {
    match tokio::time::timeout(timeout, transaction(target, timeout, from, recipients, raw)).await {
        Ok(result) => result,
        Err(_) => Err(SmtpFailure::transient(format!("no complete SMTP exchange within {timeout:?}"))),
    }
}

async fn transaction(
    target: &SmtpTarget,
    timeout: Duration,
    from: &str,
    recipients: &[String],
    raw: &[u8],
) -> Result<Delivery, SmtpFailure> {
    let mut conn = open(target, timeout).await?;
    let result = exchange(&mut conn, target, from, recipients, raw).await;
    match &result {
        Ok(_) => {
            let _ = conn.quit().await;
        }
        Err(_) => conn.abort().await,
    }
    result
}

/// Connects (implicit TLS or STARTTLS, certificates verified).
async fn open(target: &SmtpTarget, timeout: Duration) -> Result<AsyncSmtpConnection, SmtpFailure> {
    let hello = ClientId::default();
    let tls = || -> Result<TlsParameters, SmtpFailure> {
        let mut builder = TlsParameters::builder(target.host.clone());
        if let Some(pem) = &target.ca_pem {
            let cert = Certificate::from_pem(pem).map_err(|e| SmtpFailure::transient(format!("CA file: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build_rustls().map_err(|e| SmtpFailure::transient(format!("TLS setup: {e}")))
    };
    let implicit = match target.tls {
        RelayTls::Implicit => Some(tls()?),
        _ => None,
    };
    let mut conn =
        AsyncSmtpConnection::connect_tokio1((target.host.as_str(), target.port), Some(timeout), &hello, implicit, None)
            .await?;
    if target.tls == RelayTls::Starttls {
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(SmtpFailure::transient(format!(
                "{} does not offer STARTTLS; refusing to send in clear",
                target.host
            )));
        }
        conn.starttls(tls()?, &hello).await?;
    }
    Ok(conn)
}

/// Connects, authenticates and quits, within `timeout`: what `mailsync check` reports.
pub async fn probe(target: &SmtpTarget, timeout: Duration) -> Result<String, SmtpFailure> {
    let attempt = async {
        let mut conn = open(target, timeout).await?;
        let authenticated = authenticate(&mut conn, target).await;
        let _ = conn.quit().await;
        authenticated?;
        let tls = match target.tls {
            RelayTls::Implicit => "implicit TLS",
            RelayTls::Starttls => "STARTTLS",
            RelayTls::None => "no TLS",
        };
        let auth = if target.auth.is_some() { ", authenticated" } else { "" };
        Ok(format!("{}:{} ({tls}{auth})", target.host, target.port))
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
        Err(SmtpFailure::transient(format!(
            "{}:{} did not answer within {} s",
            target.host,
            target.port,
            timeout.as_secs()
        )))
    })
}

/// A failure during AUTH. A refused XOAUTH2 token comes back as a 334 error challenge,
/// which lettre reports as a client error, so anything but a 4xx counts as a refusal.
fn auth_refused(e: lettre::transport::smtp::Error) -> SmtpFailure {
    SmtpFailure { auth_refused: !e.is_transient(), ..e.into() }
}

async fn authenticate(conn: &mut AsyncSmtpConnection, target: &SmtpTarget) -> Result<(), SmtpFailure> {
    match &target.auth {
        None => {}
        Some(SmtpAuth::Password { username, password }) => {
            let credentials = Credentials::new(username.clone(), password.expose().to_string());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await.map_err(auth_refused)?;
        }
        Some(SmtpAuth::Xoauth2 { username, access_token }) => {
            let credentials = Credentials::new(username.clone(), access_token.expose().to_string());
            conn.auth(&[Mechanism::Xoauth2], &credentials).await.map_err(auth_refused)?;
        }
    }
    Ok(())
}

async fn exchange(
    conn: &mut AsyncSmtpConnection,
    target: &SmtpTarget,
    from: &str,
    recipients: &[String],
    raw: &[u8],
) -> Result<Delivery, SmtpFailure> {
    authenticate(conn, target).await?;
    let address = |a: &str| {
        a.parse::<lettre::Address>().map_err(|e| SmtpFailure {
            permanent: true,
            reply: format!("`{a}`: {e}"),
            auth_refused: false,
        })
    };
    let mut options = Vec::new();
    if !raw.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    if !from.is_ascii() || recipients.iter().any(|r| !r.is_ascii()) {
        options.push(MailParameter::SmtpUtfEight);
    }
    conn.command(Mail::new(Some(address(from)?), options)).await?;
    let mut outcomes = Vec::with_capacity(recipients.len());
    for r in recipients {
        let outcome = match conn.command(Rcpt::new(address(r)?, vec![])).await {
            Ok(_) => RecipientOutcome::Accepted,
            Err(e) if e.is_permanent() || e.is_transient() => {
                RecipientOutcome::Refused { permanent: e.is_permanent(), reply: e.to_string() }
            }
            Err(e) => return Err(e.into()),
        };
        outcomes.push((r.clone(), outcome));
    }
    if !outcomes.iter().any(|(_, o)| *o == RecipientOutcome::Accepted) {
        return Ok(Delivery { recipients: outcomes, data_reply: None });
    }
    conn.command(Data).await?;
    let reply = conn.message(raw).await?;
    Ok(Delivery { recipients: outcomes, data_reply: Some(reply.message().collect::<Vec<_>>().join(" ")) })
}
