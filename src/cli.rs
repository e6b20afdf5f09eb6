//! The `mailsync` command line: argument definitions and what each command does.
//! Commands other than `run` work on the store directly, so they work with the daemon
//! stopped; the daemon notices their changes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::accounts::{AccountInput, OAuthInput, read_secret};
use crate::config::Config;
use crate::daemon;
use crate::oauth::Provider;
use crate::outbound::compose::{AttachmentInput, OutgoingInput, encode_base64};
use crate::secrets::MasterKey;
use crate::status::Status;
use crate::store::{
    Account, AuthKind, AutoCreate, ContactChange, Deal, LinkRequest, LinkView, MessageSummary, NewDeal, NewPerson,
    OrgSettings, OutboxEntry, Person, PersonKind, StoreError, TlsMode, one_entity,
};

#[derive(Debug, Parser)]
#[command(name = "mailsync", version, about = "Email sync daemon for CRMs")]
pub struct Cli {
    /// Config file (TOML); every key can also be set by MAILSYNC_<SECTION>_<KEY>.
    #[arg(long, global = true, env = crate::config::CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (migrates the store first).
    Run,
    /// Apply pending store migrations and exit.
    Migrate,
    /// Copy the configured SQLite store into a new, empty PostgreSQL database (stop the
    /// daemon first; then point `[database] url` at the target).
    StoreCopy {
        /// postgres://USER@HOST/DB of the target (a password is better kept in ~/.pgpass
        /// or TARGET_DATABASE_URL than on the command line).
        #[arg(long, env = "TARGET_DATABASE_URL", hide_env_values = true)]
        to: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show the state of every account.
    Status(JsonFlag),
    /// Manage mail accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage leads.
    #[command(subcommand)]
    Lead(PersonCommand),
    /// Manage contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Manage deals.
    #[command(subcommand)]
    Deal(DealCommand),
    /// Stored messages.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// Conversations.
    #[command(subcommand)]
    Threads(ThreadsCommand),
    /// Link a message or thread to a lead, contact or deal (its thread's later mail follows).
    Link(LinkArgs),
    /// Unlink a message or thread from a lead, contact or deal; sticky: nothing re-links it
    /// automatically.
    Unlink(LinkArgs),
    /// Organization settings (address matching rules, auto-created leads).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Queue a message for sending; prints its outbox id (the daemon sends it).
    Send(Box<SendArgs>),
    /// Outgoing messages and their delivery state.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Diagnose one account step by step (DNS, TCP, TLS, login, capabilities, folders,
    /// SMTP); exits non-zero when a step fails.
    Check {
        #[arg(long)]
        account: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Messages received by the BCC-drop listener and their outcome, newest first.
    BccDrops {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add an address a user sends from (a phone's or second mailbox's): BCC-drop mail
    /// from it is accepted, and it never links to leads or contacts.
    UserAddAddress {
        #[arg(long)]
        user: String,
        address: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Two-way sync of a user's contacts with a CardDAV address book.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Show (creating on first use) or rotate a user's BCC-drop address.
    BccAddress {
        #[arg(long)]
        user: String,
        /// Replace the token: the old address stops working.
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Set (or replace) a user's contacts sync.
    Configure(Box<ContactsConfigureArgs>),
    /// Run a user's sync now and print what it did.
    Sync {
        #[arg(long)]
        user: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Last sync time, counts and error of every configured user (or one).
    Status {
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a user's sync configuration and state (contacts stay).
    Remove {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Args)]
pub struct ContactsConfigureArgs {
    #[arg(long)]
    pub user: String,
    /// carddav, or google (through the user's Google mail account's OAuth grant).
    #[arg(long, default_value = "carddav")]
    pub provider: String,
    /// CardDAV: the server (its root, the principal or the address-book home).
    /// Google: leave empty.
    #[arg(long, default_value = "")]
    pub url: String,
    /// CardDAV only.
    #[arg(long, default_value = "")]
    pub username: String,
    /// CardDAV only: the password, from this environment variable or file.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    pub password_env: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// CardDAV: address book (display name or path segment); Google: contact group.
    /// Created if missing.
    #[arg(long, default_value = "Contacts")]
    pub address_book: String,
    /// two-way, crm-to-remote or remote-to-crm.
    #[arg(long, default_value = "two-way")]
    pub direction: String,
    /// crm-wins or remote-wins: who wins a field changed on both sides.
    #[arg(long, default_value = "crm-wins")]
    pub conflict: String,
    #[arg(long, default_value_t = 900)]
    pub interval_secs: i64,
    /// Deleting a synced contact in the CRM deletes it remotely too.
    #[arg(long)]
    pub propagate_deletions: bool,
    /// Region for phone numbers without a country code.
    #[arg(long, default_value = "US")]
    pub region: String,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The sending user's address (their mail account's).
    #[arg(long)]
    pub user: String,
    /// Recipient, `addr` or `Name <addr>` (may be repeated).
    #[arg(long)]
    pub to: Vec<String>,
    #[arg(long)]
    pub cc: Vec<String>,
    #[arg(long)]
    pub bcc: Vec<String>,
    #[arg(long, default_value = "")]
    pub subject: String,
    /// Plain-text body.
    #[arg(long, conflicts_with = "text_file")]
    pub text: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub text_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub html_file: Option<PathBuf>,
    /// Attach a file (may be repeated).
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Store id of the message this replies to.
    #[arg(long, value_name = "MESSAGE")]
    pub reply_to: Option<i64>,
    #[arg(long)]
    pub deal: Option<i64>,
    #[arg(long)]
    pub lead: Option<i64>,
    #[arg(long)]
    pub contact: Option<i64>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List outgoing messages, newest first.
    List {
        #[arg(long)]
        user: Option<String>,
        /// queued, sending, sent or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one outgoing message: status, attempts, per-recipient results.
    Show {
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["message", "thread"])))]
#[command(group(clap::ArgGroup::new("record").required(true).args(["lead", "contact", "deal"])))]
pub struct LinkArgs {
    #[arg(long)]
    pub message: Option<i64>,
    #[arg(long)]
    pub thread: Option<i64>,
    #[arg(long)]
    pub lead: Option<i64>,
    #[arg(long)]
    pub contact: Option<i64>,
    #[arg(long)]
    pub deal: Option<i64>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum ThreadsCommand {
    /// Show a thread: its messages with their links, and the thread's own links.
    Show {
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Show an organization's settings.
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change an organization's settings; options not given keep their value.
    Set {
        name: String,
        /// Match `ann+tag@x` to `ann@x`.
        #[arg(long)]
        ignore_plus_tags: Option<bool>,
        /// Match `a.nn@gmail.com` to `ann@gmail.com`.
        #[arg(long)]
        ignore_gmail_dots: Option<bool>,
        /// Leads created automatically: none, sent-recipients or correspondents.
        #[arg(long, value_enum)]
        auto_create: Option<AutoCreateArg>,
        /// The organization's own domain (may be repeated; replaces the list); never auto-created.
        #[arg(long = "internal-domain")]
        internal_domains: Option<Vec<String>>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AutoCreateArg {
    None,
    SentRecipients,
    Correspondents,
}

impl From<AutoCreateArg> for AutoCreate {
    fn from(a: AutoCreateArg) -> AutoCreate {
        match a {
            AutoCreateArg::None => AutoCreate::None,
            AutoCreateArg::SentRecipients => AutoCreate::SentRecipients,
            AutoCreateArg::Correspondents => AutoCreate::Correspondents,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List messages of an account, or linked to a lead, contact or deal, newest first.
    #[command(group(clap::ArgGroup::new("of").required(true).args(["account", "lead", "contact", "deal"])))]
    List {
        #[arg(long)]
        account: Option<i64>,
        #[arg(long)]
        lead: Option<i64>,
        #[arg(long)]
        contact: Option<i64>,
        #[arg(long)]
        deal: Option<i64>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

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

#[derive(Debug, Subcommand)]
pub enum PersonCommand {
    /// Add one record; prints it.
    Add(PersonArgs),
    /// List records.
    List(ListArgs),
    /// Add an email address; past mail with it is linked in the background.
    AddEmail(AddEmailArgs),
}

#[derive(Debug, Args)]
pub struct AddEmailArgs {
    pub id: i64,
    pub email: String,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Add one contact; prints it.
    Add(PersonArgs),
    /// List contacts.
    List(ListArgs),
    /// Add an email address; past mail with it is linked in the background.
    AddEmail(AddEmailArgs),
    /// Change a contact; given lists (--email, --phone) replace the stored ones.
    Update {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        company: Option<String>,
        #[arg(long = "email")]
        emails: Vec<String>,
        #[arg(long = "phone")]
        phones: Vec<String>,
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete a contact (its mail stays; a contacts sync keeps its remote copy unless
    /// told to propagate deletions).
    Delete { id: i64 },
    /// Import contacts from a CSV file with a header row: name, email (or emails, `;`
    /// separated), phone (or phones), company, org. All rows or none are imported.
    Import {
        file: PathBuf,
        /// Organization for rows without an org column.
        #[arg(long, default_value = "default")]
        org: String,
        /// The user (email) who owns the imported contacts; their contacts sync pushes them.
        #[arg(long, default_value = "")]
        owner: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct PersonArgs {
    #[arg(long, default_value = "default")]
    pub org: String,
    #[arg(long, default_value = "")]
    pub name: String,
    #[arg(long, default_value = "")]
    pub company: String,
    /// May be repeated; the first is the primary address.
    #[arg(long = "email")]
    pub emails: Vec<String>,
    #[arg(long = "phone")]
    pub phones: Vec<String>,
    /// Leads only.
    #[arg(long, default_value = "")]
    pub status: String,
    /// Contacts only: the owning user (their contacts sync pushes the contact).
    #[arg(long, default_value = "")]
    pub owner: String,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this organization.
    #[arg(long)]
    pub org: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    #[arg(long, default_value_t = 0)]
    pub offset: i64,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum DealCommand {
    /// Add a deal; prints it.
    Add {
        #[arg(long, default_value = "default")]
        org: String,
        #[arg(long)]
        title: String,
        /// open, won or lost.
        #[arg(long, default_value = "open")]
        status: String,
        /// Amount such as 1250 or 1250.50.
        #[arg(long, value_parser = parse_amount)]
        value: Option<i64>,
        /// A contact taking part (may be repeated).
        #[arg(long = "contact")]
        contacts: Vec<i64>,
        /// A lead taking part (may be repeated).
        #[arg(long = "lead")]
        leads: Vec<i64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List deals.
    List(ListArgs),
}

/// Parses `1250`, `1250.5` or `1250.50` into cents.
fn parse_amount(s: &str) -> Result<i64, String> {
    let err = || format!("`{s}` is not an amount like 1250 or 1250.50");
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty() || frac.len() > 2 || !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return Err(err());
    }
    let whole: i64 = whole.parse().map_err(|_| err())?;
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| err())?;
    whole.checked_mul(100).and_then(|w| w.checked_add(frac)).ok_or_else(err)
}

/// Runs one parsed command line.
pub async fn execute(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Run => daemon::run(config, cli.config.clone()).await,
        Command::Migrate => {
            let store = daemon::open_store(&config).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::StoreCopy { to, json } => {
            let source = daemon::open_store(&config).await?;
            let timeout = std::time::Duration::from_secs(config.database.connect_timeout_secs);
            let target = crate::store::Store::connect(&to, 4, timeout).await?;
            target.migrate().await?;
            let mut stages = crate::progress::Stages::default();
            let summary = source
                .copy_into(&target, |table, done, total| stages.set(&format!("copying {table}"), done, total))
                .await?;
            stages.finish();
            print(json.json, &summary, || {
                let rows: i64 = summary.tables.iter().map(|t| t.rows).sum();
                format!("copied {rows} rows in {} tables; now set [database] url to the target\n", summary.tables.len())
            })
        }
        Command::Status(flag) => {
            let store = daemon::open_store(&config).await?;
            let status = Status::collect(&store).await?;
            print(flag.json, &status, || {
                let mut out = String::new();
                for a in &status.accounts {
                    out += &format!("account {} {} ({}): {}\n", a.id, a.email, a.org, a.state);
                    if !a.error_class.is_empty() {
                        out += &format!("  error [{}]: {}\n", a.error_class, a.error_message);
                    }
                    if !a.note.is_empty() {
                        out += &format!("  note: {}\n", a.note);
                    }
                    for f in &a.folders {
                        out += &format!(
                            "  {} {:?}: {} stored, {} skipped, {} on server, last UID {}, {}\n",
                            f.role,
                            f.name,
                            f.messages_stored,
                            f.messages_skipped,
                            f.server_messages,
                            f.last_synced_uid,
                            match (f.initial_sync_complete, f.eta_secs) {
                                (true, _) => "in sync".to_string(),
                                (false, Some(eta)) => format!(
                                    "initial sync {:.0}%, {:.0} msg/s, ETA {}",
                                    f.progress * 100.0,
                                    f.rate_per_sec,
                                    crate::status::human_duration(eta)
                                ),
                                (false, None) => format!("initial sync {:.0}%", f.progress * 100.0),
                            }
                        );
                    }
                }
                out
            })
        }
        Command::Account(cmd) => account(cmd, &config).await,
        Command::Messages(MessagesCommand::List { account, lead, contact, deal, limit, offset, json }) => {
            let store = daemon::open_store(&config).await?;
            let messages = match account {
                Some(account) => {
                    store.account(account).await?;
                    store.list_account_messages(account, limit, offset).await?
                }
                None => {
                    let (kind, id) = one_entity(lead, contact, deal)?;
                    store.list_linked_messages(kind, id, limit, offset).await?
                }
            };
            print(json.json, &messages, || message_table(&messages))
        }
        Command::Threads(ThreadsCommand::Show { id, json }) => {
            let store = daemon::open_store(&config).await?;
            let thread = store.thread(id).await?;
            print(json.json, &thread, || {
                let links: Vec<String> = thread.links.iter().map(link_text).collect();
                format!(
                    "thread {} ({}), linked: {}\n{}",
                    thread.id,
                    thread.org,
                    links.join(", "),
                    message_table(&thread.messages)
                )
            })
        }
        Command::Send(args) => send(*args, &config).await,
        Command::Outbox(OutboxCommand::List { user, status, limit, offset, json }) => {
            let store = daemon::open_store(&config).await?;
            let entries = store.list_outbox(user.as_deref(), status.as_deref(), limit, offset).await?;
            print(json.json, &entries, || outbox_table(&entries))
        }
        Command::Outbox(OutboxCommand::Show { id, json }) => {
            let store = daemon::open_store(&config).await?;
            let entry = store.outbox_entry(id).await?;
            print(json.json, &entry, || outbox_table(std::slice::from_ref(&entry)))
        }
        Command::BccAddress { user, rotate, json } => {
            let user = crate::address::normalize_email(&user)?;
            let store = daemon::open_store(&config).await?;
            let drop = store.drop_address(&user, &config.bcc_drop.domain, rotate).await?;
            print(json.json, &drop, || format!("{}\n", drop.address))
        }
        Command::Check { account, json } => {
            let store = daemon::open_store(&config).await?;
            let key = std::sync::Arc::new(MasterKey::load_or_create(&config.secrets.key_file)?);
            let report = crate::check::check_account(&store, &key, &config, account).await?;
            print(json.json, &report, || report.table())?;
            if !report.ok {
                anyhow::bail!("account {account}: {} step(s) failed", report.steps.iter().filter(|s| !s.ok).count());
            }
            Ok(())
        }
        Command::BccDrops { user, limit, offset, json } => {
            let store = daemon::open_store(&config).await?;
            let user = user.map(|u| crate::address::normalize_email(&u)).transpose()?;
            let deliveries = store.drop_deliveries(user.as_deref(), limit, offset).await?;
            print(json.json, &deliveries, || {
                let mut out = String::from("ID  USER  OUTCOME  FROM  MESSAGE-ID  REASON\n");
                for d in &deliveries {
                    out += &format!(
                        "{}  {}  {}  {}  {}  {}\n",
                        d.id, d.user, d.outcome, d.header_from, d.message_id, d.reason
                    );
                }
                out
            })
        }
        Command::UserAddAddress { user, address, json } => {
            let user = crate::address::normalize_email(&user)?;
            let store = daemon::open_store(&config).await?;
            let addresses = store.add_user_address(&user, &address).await?;
            print(json.json, &addresses, || format!("{}\n", addresses.join("\n")))
        }
        Command::Link(args) => link(args, true, &config).await,
        Command::Unlink(args) => link(args, false, &config).await,
        Command::Org(OrgCommand::Show { name, json }) => {
            let store = daemon::open_store(&config).await?;
            let settings = store.org_settings(&name).await?;
            print(json.json, &settings, || format!("{settings:#?}\n"))
        }
        Command::Org(OrgCommand::Set {
            name,
            ignore_plus_tags,
            ignore_gmail_dots,
            auto_create,
            internal_domains,
            json,
        }) => {
            let store = daemon::open_store(&config).await?;
            let mut settings = match store.org_settings(&name).await {
                Ok(s) => s,
                Err(StoreError::NotFound(_)) => OrgSettings::default(),
                Err(e) => return Err(e.into()),
            };
            settings.ignore_plus_tags = ignore_plus_tags.unwrap_or(settings.ignore_plus_tags);
            settings.ignore_gmail_dots = ignore_gmail_dots.unwrap_or(settings.ignore_gmail_dots);
            settings.auto_create = auto_create.map_or(settings.auto_create, Into::into);
            settings.internal_domains = internal_domains.unwrap_or(settings.internal_domains);
            let settings = store.set_org_settings(&name, settings).await?;
            print(json.json, &settings, || format!("{settings:#?}\n"))
        }
        Command::Lead(PersonCommand::Add(args)) => add_person(PersonKind::Lead, args, &config).await,
        Command::Lead(PersonCommand::List(args)) => list_people(PersonKind::Lead, args, &config).await,
        Command::Contact(ContactCommand::Add(args)) => add_person(PersonKind::Contact, args, &config).await,
        Command::Contact(ContactCommand::List(args)) => list_people(PersonKind::Contact, args, &config).await,
        Command::Lead(PersonCommand::AddEmail(args)) => add_email(PersonKind::Lead, args, &config).await,
        Command::Contact(ContactCommand::AddEmail(args)) => add_email(PersonKind::Contact, args, &config).await,
        Command::Contact(ContactCommand::Update { id, name, company, emails, phones, owner, json }) => {
            let change = ContactChange {
                name,
                company,
                emails: (!emails.is_empty()).then_some(emails),
                phones: (!phones.is_empty()).then_some(phones),
                owner,
            };
            let store = daemon::open_store(&config).await?;
            let person = store.update_contact(id, change).await?;
            print(json.json, &person, || person_table(std::slice::from_ref(&person)))
        }
        Command::Contact(ContactCommand::Delete { id }) => {
            let store = daemon::open_store(&config).await?;
            store.delete_contact(id).await?;
            Ok(())
        }
        Command::Contacts(command) => contacts(command, &config).await,
        Command::Contact(ContactCommand::Import { file, org, owner, json }) => {
            // Read and check the whole file before opening the store: nothing half-imported.
            let mut rows = read_contacts_csv(&file, &org)?;
            rows.iter_mut().for_each(|r| r.owner = owner.clone());
            let store = daemon::open_store(&config).await?;
            let mut bar = crate::progress::ProgressBar::new("importing", rows.len() as u64);
            let summary = store.import_contacts_reporting(rows, |done, total| bar.set(done, total)).await?;
            bar.finish();
            print(json.json, &summary, || {
                format!("imported {} contacts ({} already present)\n", summary.created, summary.existing)
            })
        }
        Command::Deal(DealCommand::Add { org, title, status, value, contacts, leads, json }) => {
            let store = daemon::open_store(&config).await?;
            let new = NewDeal { org, title, status, value_cents: value.unwrap_or(0), contacts, leads };
            let deal = store.add_deal(new).await?;
            print(json.json, &deal, || deal_table(std::slice::from_ref(&deal)))
        }
        Command::Deal(DealCommand::List(args)) => {
            let store = daemon::open_store(&config).await?;
            let deals = store.list_deals(args.org.as_deref(), args.limit, args.offset).await?;
            print(args.json.json, &deals, || deal_table(&deals))
        }
    }
}

async fn account(cmd: AccountCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Add(args) => {
            // Everything that can fail without the store is checked before it is opened.
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
                    let refresh_token = read_secret(
                        "refresh token",
                        args.refresh_token_file.as_deref(),
                        args.refresh_token_env.as_deref(),
                    )
                    .map_err(anyhow::Error::msg)?;
                    let client_secret = match (&args.oauth_client_secret_file, &args.oauth_client_secret_env) {
                        (None, None) => None,
                        (file, env) => Some(
                            read_secret("client secret", file.as_deref(), env.as_deref())
                                .map_err(anyhow::Error::msg)?,
                        ),
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
            let key = MasterKey::load_or_create(&config.secrets.key_file)?;
            let input = AccountInput {
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
            };
            let new = input.into_new_account(&key)?;
            let store = daemon::open_store(config).await?;
            let account = store.add_account(&new).await?;
            print(args.json.json, &serde_json::json!({"id": account.id}), || format!("{}\n", account.id))
        }
        AccountCommand::List(flag) => {
            let store = daemon::open_store(config).await?;
            let accounts = store.list_accounts().await?;
            print(flag.json, &accounts, || account_table(&accounts))
        }
        AccountCommand::Show { id, json } => {
            let store = daemon::open_store(config).await?;
            let account = store.account(id).await?;
            print(json.json, &account, || account_table(std::slice::from_ref(&account)))
        }
        AccountCommand::SetPassword { id, password_env, password_file } => {
            let password = read_secret("password", password_file.as_deref(), password_env.as_deref())
                .map_err(anyhow::Error::msg)?;
            if password.expose().is_empty() {
                anyhow::bail!("the password is empty");
            }
            let key = MasterKey::load_or_create(&config.secrets.key_file)?;
            let sealed = key.seal(crate::accounts::PASSWORD_PURPOSE, &password)?;
            let store = daemon::open_store(config).await?;
            store.set_account_password(id, &sealed).await?;
            println!("password of mail account {id} replaced");
            Ok(())
        }
        AccountCommand::Remove { id } => {
            let store = daemon::open_store(config).await?;
            store.remove_account(id).await?;
            println!("removed mail account {id}");
            Ok(())
        }
    }
}

async fn add_person(kind: PersonKind, args: PersonArgs, config: &Config) -> anyhow::Result<()> {
    let new = NewPerson {
        org: args.org,
        name: args.name,
        company: args.company,
        emails: args.emails,
        phones: args.phones,
        status: args.status,
        source: String::new(),
        owner: args.owner,
    }
    .validate()?;
    let store = daemon::open_store(config).await?;
    let person = store.add_person(kind, new).await?;
    print(args.json.json, &person, || person_table(std::slice::from_ref(&person)))
}

async fn contacts(command: ContactsCommand, config: &Config) -> anyhow::Result<()> {
    let store = daemon::open_store(config).await?;
    match command {
        ContactsCommand::Configure(args) => {
            let user = crate::address::normalize_email(&args.user)?;
            let password = match (&args.password_file, &args.password_env) {
                (None, None) if args.provider != "carddav" => crate::secrets::Secret::new(""),
                (file, var) => read_secret("password", file.as_deref(), var.as_deref()).map_err(anyhow::Error::msg)?,
            };
            let key = MasterKey::load_or_create(&config.secrets.key_file)?;
            let input = crate::contacts::SyncInput {
                provider: args.provider,
                url: args.url,
                username: args.username,
                password: password.expose().to_string(),
                address_book: args.address_book,
                direction: args.direction,
                conflict: args.conflict,
                interval_secs: args.interval_secs,
                propagate_deletions: args.propagate_deletions,
                region: args.region,
            };
            let saved = crate::contacts::configure(&store, &key, &user, input).await?;
            print(args.json.json, &saved, || format!("contacts sync configured for {}\n", saved.user))
        }
        ContactsCommand::Sync { user, json } => {
            let user = crate::address::normalize_email(&user)?;
            let key = std::sync::Arc::new(MasterKey::load_or_create(&config.secrets.key_file)?);
            let sync = store.contact_sync_config(&user).await?;
            if !store
                .claim_contact_sync(sync.user_id, &format!("cli:{}", std::process::id()), 30 * 60 * 1000, true)
                .await?
            {
                anyhow::bail!("a daemon is running {user}'s contacts sync right now; try again in a moment");
            }
            let mut stages = crate::progress::Stages::default();
            let report = crate::contacts::sync_now(&store, &key, &sync, &mut |stage, done, total| {
                stages.set(stage, done, total)
            })
            .await;
            stages.finish();
            let report = report?;
            print(json.json, &report, || format!("{report:#?}\n"))
        }
        ContactsCommand::Status { user, json } => {
            let user = user.map(|u| crate::address::normalize_email(&u)).transpose()?;
            let configs = store.contact_sync_configs(user.as_deref()).await?;
            print(json.json, &configs, || {
                let mut out = String::from("USER  PROVIDER  LAST SYNC  RESULT  ERROR\n");
                for c in &configs {
                    out += &format!(
                        "{}  {}  {}  {}  {}\n",
                        c.user, c.provider, c.last_sync_at, c.last_result, c.last_error
                    );
                }
                out
            })
        }
        ContactsCommand::Remove { user } => {
            let user = crate::address::normalize_email(&user)?;
            store.remove_contact_sync_config(&user).await?;
            Ok(())
        }
    }
}

async fn add_email(kind: PersonKind, args: AddEmailArgs, config: &Config) -> anyhow::Result<()> {
    let store = daemon::open_store(config).await?;
    let person = store.add_person_email(kind, args.id, &args.email).await?;
    print(args.json.json, &person, || person_table(std::slice::from_ref(&person)))
}

async fn send(args: SendArgs, config: &Config) -> anyhow::Result<()> {
    let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()));
    let text = match (&args.text, &args.text_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(read(f)?),
        (None, None) => None,
    };
    let html = args.html_file.as_deref().map(read).transpose()?;
    let mut attachments = Vec::new();
    for path in &args.attach {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let filename =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "attachment".into());
        attachments.push(AttachmentInput {
            filename,
            content_type: "application/octet-stream".into(),
            content_base64: encode_base64(&bytes),
        });
    }
    let input = OutgoingInput {
        user: args.user,
        to: args.to,
        cc: args.cc,
        bcc: args.bcc,
        subject: args.subject,
        text,
        html,
        attachments,
        reply_to: args.reply_to,
        deal: args.deal,
        lead: args.lead,
        contact: args.contact,
    };
    let store = daemon::open_store(config).await?;
    let entry = crate::outbound::enqueue(&store, &input, config).await?;
    print(args.json.json, &entry, || format!("{}\n", entry.id))
}

fn outbox_table(entries: &[OutboxEntry]) -> String {
    let mut out = String::from("ID  USER  STATUS  ATTEMPTS  RECIPIENTS  LAST REPLY\n");
    for e in entries {
        let recipients: Vec<String> = e.recipients.iter().map(|r| format!("{}={}", r.address, r.state)).collect();
        out += &format!(
            "{}  {}  {}  {}  {}  {}\n",
            e.id,
            e.user,
            e.status,
            e.attempts,
            recipients.join(","),
            e.last_reply
        );
    }
    out
}

async fn link(args: LinkArgs, link: bool, config: &Config) -> anyhow::Result<()> {
    let request = LinkRequest {
        message: args.message,
        thread: args.thread,
        lead: args.lead,
        contact: args.contact,
        deal: args.deal,
    };
    let (target, kind, id) = request.parts()?;
    let store = daemon::open_store(config).await?;
    let change = if link { store.link(target, kind, id).await? } else { store.unlink(target, kind, id).await? };
    print(args.json.json, &change, || {
        let verb = if link { "linked" } else { "unlinked" };
        format!("{verb}: thread {}, {} message(s) changed\n", change.thread_id, change.messages)
    })
}

async fn list_people(kind: PersonKind, args: ListArgs, config: &Config) -> anyhow::Result<()> {
    let store = daemon::open_store(config).await?;
    let people = store.list_people(kind, args.org.as_deref(), args.limit, args.offset).await?;
    print(args.json.json, &people, || person_table(&people))
}

/// Parses and validates a contacts CSV; errors name the file and line.
fn read_contacts_csv(path: &Path, default_org: &str) -> anyhow::Result<Vec<NewPerson>> {
    const COLUMNS: [&str; 7] = ["name", "email", "emails", "phone", "phones", "company", "org"];
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header row", path.display()))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if let Some(unknown) = headers.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        anyhow::bail!("{}: unknown column `{unknown}` (known: {})", path.display(), COLUMNS.join(", "));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{}: malformed CSV", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        let mut person = NewPerson { org: default_org.to_string(), source: "import".into(), ..Default::default() };
        for (header, value) in headers.iter().zip(record.iter()) {
            let list = || value.split(';').map(str::trim).filter(|v| !v.is_empty()).map(String::from);
            match header.as_str() {
                "name" => person.name = value.to_string(),
                "company" => person.company = value.to_string(),
                "org" if !value.is_empty() => person.org = value.to_string(),
                "email" | "emails" => person.emails.extend(list()),
                "phone" | "phones" => person.phones.extend(list()),
                _ => {}
            }
        }
        let person = person.validate().with_context(|| format!("{} line {line}", path.display()))?;
        rows.push(person);
    }
    Ok(rows)
}

fn print<T: Serialize>(json: bool, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

fn account_table(accounts: &[Account]) -> String {
    let mut out = String::from("ID  EMAIL  ORG  IMAP  STATE  ERROR\n");
    for a in accounts {
        out += &format!(
            "{}  {}  {}  {}:{} ({})  {}  {}\n",
            a.id,
            a.email,
            a.org,
            a.imap_host,
            a.imap_port,
            a.imap_tls.as_str(),
            a.state,
            a.error_message
        );
    }
    out
}

fn link_text(l: &LinkView) -> String {
    format!("{} {} ({}, {})", l.entity_kind, l.entity_id, l.origin, l.state)
}

fn message_table(messages: &[MessageSummary]) -> String {
    let mut out = String::from("ID  THREAD  DATE  FOLDERS  FROM  SUBJECT  LINKS\n");
    for m in messages {
        let links: Vec<String> = m.links.iter().map(link_text).collect();
        out += &format!(
            "{}  {}  {}  {}  {}  {}  {}\n",
            m.id,
            m.thread_id,
            m.date,
            m.folders.join(","),
            m.from.join(","),
            m.subject,
            links.join("; ")
        );
    }
    out
}

fn person_table(people: &[Person]) -> String {
    let mut out = String::from("ID  NAME  EMAILS  PHONES  COMPANY  ORG\n");
    for p in people {
        out += &format!(
            "{}  {}  {}  {}  {}  {}\n",
            p.id,
            p.name,
            p.emails.join(","),
            p.phones.join(","),
            p.company,
            p.org
        );
    }
    out
}

fn deal_table(deals: &[Deal]) -> String {
    let mut out = String::from("ID  TITLE  STATUS  VALUE  ORG\n");
    for d in deals {
        out += &format!(
            "{}  {}  {}  {}.{:02}  {}\n",
            d.id,
            d.title,
            d.status,
            d.value_cents / 100,
            d.value_cents % 100,
            d.org
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn amounts() {
        assert_eq!(super::parse_amount("1250"), Ok(125000));
        assert_eq!(super::parse_amount("1250.5"), Ok(125050));
        assert_eq!(super::parse_amount("0.07"), Ok(7));
        assert!(super::parse_amount("12.345").is_err());
        assert!(super::parse_amount("-3").is_err());
        assert!(super::parse_amount("abc").is_err());
    }
}
