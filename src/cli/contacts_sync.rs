//! `mailsync contacts ...`: a user's contacts sync.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Cx;
use super::render::{Done, JsonFlag, print};
use crate::accounts::read_secret;
use crate::contacts::SyncInput;
use crate::ops::FlagResolution;
use crate::secrets::Secret;

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
    /// Cards flagged for a person (several matching contacts, a duplicate UID, another
    /// user's contact...), and why.
    Flagged {
        #[arg(long)]
        user: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Decide about a flagged card: link it to a contact, import it, or ignore it; the
    /// daemon's next run applies it.
    Resolve {
        #[arg(long)]
        user: String,
        #[command(flatten)]
        resolution: FlagResolution,
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
    /// crm-wins or remote-wins: who wins a field changed on both sides; origin: remote edits
    /// apply only to contacts that came from the remote (which then wins conflicts).
    #[arg(long, default_value = "crm-wins")]
    pub conflict: String,
    /// How often the daemon looks for changes in the address book, in seconds (at least
    /// 60): one cheap request with its change token when nothing changed.
    #[arg(long, default_value_t = 60)]
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

pub async fn run(command: ContactsCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        ContactsCommand::Configure(args) => {
            let password = match (&args.password_file, &args.password_env) {
                (None, None) if args.provider != "carddav" => Secret::new(""),
                (file, var) => read_secret("password", file.as_deref(), var.as_deref()).map_err(anyhow::Error::msg)?,
            };
            let input = SyncInput {
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
            print(args.json, &cx.ops().await?.set_contacts_sync(&args.user, input).await?)
        }
        ContactsCommand::Sync { user, json } => {
            let ops = cx.ops().await?;
            let mut stages = crate::progress::Stages::default();
            let report = ops.run_contacts_sync(&user, &mut |stage, done, total| stages.set(stage, done, total)).await;
            stages.finish();
            print(json, &report?)
        }
        ContactsCommand::Status { user, json } => {
            print(json, &cx.ops().await?.list_contacts_syncs(user.as_deref()).await?)
        }
        ContactsCommand::Remove { user } => Ok(cx.ops().await?.remove_contacts_sync(&user).await?),
        ContactsCommand::Flagged { user, json } => print(json, &cx.ops().await?.list_flagged_cards(&user).await?),
        ContactsCommand::Resolve { user, resolution } => {
            cx.ops().await?.resolve_flagged_card(&user, &resolution).await?;
            let done = Done { done: format!("{}: the next sync applies it", resolution.card) };
            print(JsonFlag { json: false }, &done)
        }
    }
}
