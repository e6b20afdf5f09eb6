//! The `mailsync` command line: a thin layer over [`crate::ops`]. Each domain's file
//! defines its commands (clap) and turns them into one operation call; `render.rs` prints
//! results as a table or, with `--json`, as the API's JSON. Commands other than `run` work
//! on the store directly (the daemon need not run) and refuse a store whose schema is not
//! this binary's; only `run` and `migrate` migrate.

mod accounts;
mod contacts_sync;
mod mail;
mod records;
mod render;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::daemon;
use crate::ops::{DropQuery, Ops};
use render::{JsonFlag, print};

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
    Account(accounts::AccountCommand),
    /// Diagnose one account step by step (DNS, TCP, TLS, login, capabilities, folders,
    /// SMTP); exits non-zero when a step fails.
    Check {
        #[arg(long)]
        account: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Manage leads.
    #[command(subcommand)]
    Lead(records::LeadCommand),
    /// Manage contacts.
    #[command(subcommand)]
    Contact(records::ContactCommand),
    /// Manage deals.
    #[command(subcommand)]
    Deal(records::DealCommand),
    /// Organization settings (address matching rules, auto-created leads).
    #[command(subcommand)]
    Org(records::OrgCommand),
    /// Link a message or thread to a lead, contact or deal (its thread's later mail follows).
    Link(records::LinkArgs),
    /// Unlink a message or thread from a lead, contact or deal; sticky: nothing re-links it
    /// automatically.
    Unlink(records::LinkArgs),
    /// Conversations.
    #[command(subcommand)]
    Threads(records::ThreadsCommand),
    /// Stored messages.
    #[command(subcommand)]
    Messages(mail::MessagesCommand),
    /// Queue a message for sending; prints its outbox id (the daemon sends it).
    Send(Box<mail::SendArgs>),
    /// Outgoing messages and their delivery state.
    #[command(subcommand)]
    Outbox(mail::OutboxCommand),
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
    /// Messages received by the BCC-drop listener and their outcome, newest first.
    BccDrops {
        #[command(flatten)]
        query: DropQuery,
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
    /// Two-way sync of a user's contacts with a CardDAV address book or Google Contacts.
    #[command(subcommand)]
    Contacts(contacts_sync::ContactsCommand),
}

/// What a command needs to reach the store. Commands read and check their arguments and
/// files first and open the store last, so bad input changes nothing.
pub struct Cx {
    config: Config,
}

impl Cx {
    /// Opens the store (refusing a schema that is not this binary's) for one command.
    async fn ops(&self) -> anyhow::Result<Ops> {
        Ok(Ops::new(daemon::open_store(&self.config).await?, self.config.clone()))
    }
}

/// Runs one parsed command line.
pub async fn execute(cli: Cli, config: Config) -> anyhow::Result<()> {
    let cx = Cx { config };
    match cli.command {
        Command::Run => daemon::run(cx.config, cli.config.clone()).await,
        Command::Migrate => {
            let store = daemon::open_and_migrate_store(&cx.config).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::StoreCopy { to, json } => {
            let source = daemon::open_store(&cx.config).await?;
            let timeout = std::time::Duration::from_secs(cx.config.database.connect_timeout_secs);
            let target = crate::store::Store::connect(&to, 4, timeout).await?;
            target.migrate().await?;
            let mut stages = crate::progress::Stages::default();
            let summary = source
                .copy_into(&target, |table, done, total| stages.set(&format!("copying {table}"), done, total))
                .await?;
            stages.finish();
            print(json, &summary)
        }
        Command::Status(json) => print(json, &cx.ops().await?.status().await?),
        Command::Account(command) => accounts::run(command, &cx).await,
        Command::Check { account, json } => accounts::check(account, json, &cx).await,
        Command::Lead(command) => records::lead(command, &cx).await,
        Command::Contact(command) => records::contact(command, &cx).await,
        Command::Deal(command) => records::deal(command, &cx).await,
        Command::Org(command) => records::org(command, &cx).await,
        Command::Link(args) => records::link(args, true, &cx).await,
        Command::Unlink(args) => records::link(args, false, &cx).await,
        Command::Threads(records::ThreadsCommand::Show { id, json }) => {
            print(json, &cx.ops().await?.show_thread(id).await?)
        }
        Command::Messages(command) => mail::messages(command, &cx).await,
        Command::Send(args) => mail::send(*args, &cx).await,
        Command::Outbox(command) => mail::outbox(command, &cx).await,
        Command::BccAddress { user, rotate, json } => print(json, &cx.ops().await?.drop_address(&user, rotate).await?),
        Command::BccDrops { query, json } => print(json, &cx.ops().await?.list_drop_deliveries(&query).await?),
        Command::UserAddAddress { user, address, json } => {
            let input = crate::ops::AddressInput { address };
            print(json, &cx.ops().await?.add_user_address(&user, input).await?)
        }
        Command::Contacts(command) => contacts_sync::run(command, &cx).await,
    }
}
