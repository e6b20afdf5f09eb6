//! Opening an authenticated IMAP session: TCP, implicit TLS or STARTTLS (always verified),
//! the greeting, LOGIN or XOAUTH2, CAPABILITY and ID.

use std::time::Duration;

use async_imap::{Client, Session};
use imap_proto::{Response, Status};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::{ErrorClass, SyncError, classify_login_failure};
use crate::net::timeout::{TimeoutHandle, TimeoutStream};
use crate::net::{connect_tcp, tls};
use crate::secrets::Secret;
use crate::store::TlsMode;

pub type ImapStream = TlsStream<TimeoutStream<TcpStream>>;
pub type ImapSession<S = ImapStream> = Session<S>;

/// What the IMAP code runs over: TLS over TCP in the daemon, an in-memory pipe in the
/// unit tests that replay server transcripts (`transcript.rs`).
pub trait ImapIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send> ImapIo for T {}

/// How to reach and authenticate to one account's server.
#[derive(Clone)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Trusts the webpki roots plus the account's CA file, if any.
    pub tls_connector: TlsConnector,
    pub username: String,
    pub connect_timeout: Duration,
    /// Longest silence tolerated from the server outside IDLE.
    pub io_timeout: Duration,
}

impl ServerSettings {
    /// The account's IMAP server, trusting the webpki roots plus the account's CA file.
    pub fn for_account(
        account: &crate::store::Account,
        sync: &crate::config::SyncConfig,
    ) -> Result<ServerSettings, SyncError> {
        let ca_file: Option<std::path::PathBuf> = (!account.ca_file.is_empty()).then(|| account.ca_file.clone().into());
        Ok(ServerSettings {
            host: account.imap_host.clone(),
            port: account.imap_port,
            tls: account.imap_tls,
            tls_connector: crate::net::tls::connector(ca_file.as_deref())?,
            username: account.username.clone(),
            connect_timeout: Duration::from_secs(sync.connect_timeout_secs),
            io_timeout: Duration::from_secs(sync.io_timeout_secs),
        })
    }
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum Credential {
    Password(Secret),
    /// A current OAuth2 access token, for SASL XOAUTH2.
    AccessToken(Secret),
}

/// What the server supports, from CAPABILITY after login.
#[derive(Debug, Clone, Default)]
pub struct ServerCaps {
    pub idle: bool,
    pub condstore: bool,
    pub qresync: bool,
    pub special_use: bool,
    pub id: bool,
    pub uidplus: bool,
    pub gmail: bool,
}

pub struct Connection<S: ImapIo = ImapStream> {
    pub session: ImapSession<S>,
    pub timeouts: TimeoutHandle,
    pub caps: ServerCaps,
}

impl<S: ImapIo> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("caps", &self.caps).finish_non_exhaustive()
    }
}

/// Connects, secures, greets and logs in. Credentials are only ever sent over TLS.
pub async fn connect(settings: &ServerSettings, credential: &Credential) -> Result<Connection, SyncError> {
    let connector = &settings.tls_connector;
    let tcp = connect_tcp(&settings.host, settings.port, settings.connect_timeout).await?;
    let (stream, timeouts) = TimeoutStream::new(tcp, settings.io_timeout, settings.io_timeout);
    let stream = match settings.tls {
        TlsMode::Implicit => tls::handshake(connector, &settings.host, stream).await?,
        TlsMode::Starttls => {
            let mut client = Client::new(stream);
            greeting(&mut client).await?;
            client.run_command_and_check_ok("STARTTLS", None).await.map_err(|e| {
                SyncError::new(ErrorClass::TlsRequired, format!("the server does not offer STARTTLS ({e})"))
            })?;
            tls::handshake(connector, &settings.host, client.into_inner()).await?
        }
    };
    let mut client = Client::new(stream);
    if settings.tls == TlsMode::Implicit {
        greeting(&mut client).await?;
    }
    let mut session = match credential {
        Credential::Password(password) => {
            client.login(&settings.username, password.expose()).await.map_err(|(e, _)| login_error(e))?
        }
        Credential::AccessToken(token) => {
            let auth = XOAuth2 { user: settings.username.clone(), token: token.clone() };
            client.authenticate("XOAUTH2", auth).await.map_err(|(e, _)| login_error(e))?
        }
    };
    let capabilities = session.capabilities().await?;
    let caps = ServerCaps {
        idle: capabilities.has_str("IDLE"),
        condstore: capabilities.has_str("CONDSTORE"),
        qresync: capabilities.has_str("QRESYNC"),
        special_use: capabilities.has_str("SPECIAL-USE"),
        id: capabilities.has_str("ID"),
        uidplus: capabilities.has_str("UIDPLUS"),
        gmail: capabilities.has_str("X-GM-EXT-1"),
    };
    if caps.id {
        // Some providers (163.com, ...) refuse SELECT without it; a failure is harmless.
        let _ = session.id([("name", Some("mailsync")), ("version", Some(env!("CARGO_PKG_VERSION")))]).await;
    }
    drain_unsolicited(&session);
    Ok(Connection { session, timeouts, caps })
}

async fn greeting(client: &mut Client<impl ImapIo>) -> Result<(), SyncError> {
    let not_imap = |detail: String| {
        SyncError::new(ErrorClass::Protocol, format!("the server did not greet like an IMAP server: {detail}"))
    };
    let response = client.read_response().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            SyncError::new(ErrorClass::Network, format!("no greeting from the server: {e}"))
        } else {
            not_imap(e.to_string())
        }
    })?;
    let Some(response) = response else {
        return Err(SyncError::new(ErrorClass::Network, "the server closed the connection before greeting"));
    };
    match response.parsed() {
        Response::Data { status: Status::Ok | Status::PreAuth, .. } => Ok(()),
        Response::Data { status: Status::Bye, outcome, .. } => Err(SyncError::new(
            ErrorClass::Throttled,
            format!("the server refused the connection: {}", outcome.information.as_deref().unwrap_or("BYE")),
        )),
        other => Err(not_imap(format!("{other:?}"))),
    }
}

fn login_error(e: async_imap::error::Error) -> SyncError {
    use async_imap::error::Error as E;
    match e {
        E::No(text) | E::Bad(text) => {
            let class = classify_login_failure(&text);
            SyncError::new(class, format!("login refused: {}", text.trim()))
        }
        other => SyncError::from(other),
    }
}

/// Empties the unsolicited-response channel (it drops events when full) and reports
/// whether it held news about the selected mailbox.
pub fn drain_unsolicited<S: ImapIo>(session: &ImapSession<S>) -> MailboxNews {
    let mut news = MailboxNews::default();
    while let Ok(response) = session.unsolicited_responses.try_recv() {
        match response {
            async_imap::types::UnsolicitedResponse::Exists(n) => news.exists = Some(n),
            async_imap::types::UnsolicitedResponse::Expunge(_) => news.expunged = true,
            async_imap::types::UnsolicitedResponse::Other(data)
                if matches!(data.parsed(), Response::Vanished { .. }) =>
            {
                news.expunged = true
            }
            _ => {}
        }
    }
    news
}

/// Changes the server announced outside a command's own results.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MailboxNews {
    pub exists: Option<u32>,
    pub expunged: bool,
}

/// SASL XOAUTH2 (Google and Microsoft): `user=<u>^Aauth=Bearer <token>^A^A`.
struct XOAuth2 {
    user: String,
    token: Secret,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token.expose())
    }
}
