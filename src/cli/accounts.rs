//! `mailsync account ...` and `mailsync check`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Cx;
use super::render::{Done, JsonFlag, print};
use crate::accounts::{AccountInput, OAuthInput, read_secret};
use crate::oauth::Provider;
use crate::ops::PasswordInput;
use crate::store::{AuthKind, TlsMode};

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add a mail account (and its user and organization when new); prints its id.
    Add(Box<AccountAddArgs>),
    /// List mail accounts.
    List(JsonFlag),
    /// Show one mail account.
    Show {
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Replace a password account's password; its worker restarts with it.
    SetPassword {
        id: i64,
        #[arg(long, value_name = "VAR", conflicts_with = "password_file", required_unless_present = "password_file")]
        password_env: Option<String>,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Remove a mail account; its synced messages stay in the CRM.
    Remove { id: i64 },
}

#[derive(Debug, Args)]
pub struct AccountAddArgs {
    #[arg(long)]
    pub email: String,
    #[arg(long, default_value = "default")]
    pub org: String,
    #[arg(long)]
    pub imap_host: String,
    /// Default: 993 with implicit TLS, 143 with STARTTLS.
    #[arg(long)]
    pub imap_port: Option<u16>,
    #[arg(long, value_enum, default_value = "implicit")]
    pub tls: TlsArg,
    /// Default: the email address.
    #[arg(long)]
    pub username: Option<String>,
    /// password (LOGIN/PLAIN over TLS) or xoauth2 (OAuth2 access tokens).
    #[arg(long, value_enum, default_value = "password")]
    pub auth: AuthArg,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// Read the password from this file (a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// xoauth2: google, microsoft, or custom (with --oauth-token-url).
    #[arg(long, value_name = "PROVIDER")]
    pub oauth_provider: Option<String>,
    /// xoauth2: the token endpoint (overrides the provider's preset).
    #[arg(long, value_name = "URL")]
    pub oauth_token_url: Option<String>,
    /// xoauth2: the OAuth client id.
    #[arg(long, value_name = "ID")]
    pub oauth_client_id: Option<String>,
    /// xoauth2: read the client secret from this environment variable (confidential clients).
    #[arg(long, value_name = "VAR", conflicts_with = "oauth_client_secret_file")]
    pub oauth_client_secret_env: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub oauth_client_secret_file: Option<PathBuf>,
    /// xoauth2: read the refresh token from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "refresh_token_file")]
    pub refresh_token_env: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub refresh_token_file: Option<PathBuf>,
    /// Extra trusted CA certificate(s), PEM, for this account's servers.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<String>,
    #[arg(long)]
    pub smtp_host: Option<String>,
    #[arg(long)]
    pub smtp_port: Option<u16>,
    #[arg(long, value_enum)]
    pub smtp_tls: Option<TlsArg>,
    /// The provider stores sent mail itself (Gmail): do not append a copy to Sent.
    #[arg(long)]
    pub provider_saves_sent: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    Password,
    Xoauth2,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TlsArg {
    Implicit,
    Starttls,
}

impl From<TlsArg> for TlsMode {
    fn from(t: TlsArg) -> TlsMode {
        match t {
            TlsArg::Implicit => TlsMode::Implicit,
            TlsArg::Starttls => TlsMode::Starttls,
        }
    }
}

/// The id of a new account.
#[derive(serde::Serialize)]
struct AccountId {
    id: i64,
}

impl super::render::Render for AccountId {
    fn table(&self) -> String {
        format!("{}\n", self.id)
    }
}

pub async fn run(command: AccountCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        AccountCommand::Add(args) => {
            let json = args.json;
            let input = account_input(*args)?;
            let account = cx.ops().await?.add_account(input).await?;
            print(json, &AccountId { id: account.id })
        }
        AccountCommand::List(json) => print(json, &cx.ops().await?.list_accounts().await?),
        AccountCommand::Show { id, json } => print(json, &cx.ops().await?.show_account(id).await?),
        AccountCommand::SetPassword { id, password_env, password_file } => {
            let password = read_secret("password", password_file.as_deref(), password_env.as_deref())
                .map_err(anyhow::Error::msg)?;
            cx.ops().await?.set_account_password(id, PasswordInput { password }).await?;
            print(JsonFlag { json: false }, &Done { done: format!("password of mail account {id} replaced") })
        }
        AccountCommand::Remove { id } => {
            cx.ops().await?.remove_account(id).await?;
            print(JsonFlag { json: false }, &Done { done: format!("removed mail account {id}") })
        }
    }
}

pub async fn check(account: i64, json: JsonFlag, cx: &Cx) -> anyhow::Result<()> {
    let report = cx.ops().await?.check_account(account).await?;
    print(json, &report)?;
    if !report.ok {
        anyhow::bail!("account {account}: {} step(s) failed", report.steps.iter().filter(|s| !s.ok).count());
    }
    Ok(())
}

/// The API's input from the command line, secrets read from files or the environment.
fn account_input(args: AccountAddArgs) -> anyhow::Result<AccountInput> {
    let (auth, password, oauth) = match args.auth {
        AuthArg::Password => {
            let password = read_secret("password", args.password_file.as_deref(), args.password_env.as_deref())
                .map_err(anyhow::Error::msg)?;
            (AuthKind::Password, Some(password), None)
        }
        AuthArg::Xoauth2 => {
            let provider = args.oauth_provider.as_deref().unwrap_or("custom");
            let provider = Provider::parse(provider).ok_or_else(|| {
                anyhow::anyhow!("--oauth-provider `{provider}` is not one of google, microsoft, custom")
            })?;
            let refresh_token =
                read_secret("refresh token", args.refresh_token_file.as_deref(), args.refresh_token_env.as_deref())
                    .map_err(anyhow::Error::msg)?;
            let client_secret = match (&args.oauth_client_secret_file, &args.oauth_client_secret_env) {
                (None, None) => None,
                (file, env) => {
                    Some(read_secret("client secret", file.as_deref(), env.as_deref()).map_err(anyhow::Error::msg)?)
                }
            };
            let client_id = args
                .oauth_client_id
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--auth xoauth2 needs --oauth-client-id"))?;
            let oauth = OAuthInput {
                provider,
                token_url: args.oauth_token_url.clone(),
                client_id,
                client_secret,
                refresh_token,
            };
            (AuthKind::Xoauth2, None, Some(oauth))
        }
    };
    Ok(AccountInput {
        org: args.org,
        email: args.email,
        imap_host: args.imap_host,
        imap_port: args.imap_port,
        imap_tls: args.tls.into(),
        username: args.username,
        auth,
        password,
        oauth,
        ca_file: args.ca_file,
        smtp_host: args.smtp_host,
        smtp_port: args.smtp_port,
        smtp_tls: args.smtp_tls.map(Into::into),
        provider_saves_sent: args.provider_saves_sent,
    })
}
