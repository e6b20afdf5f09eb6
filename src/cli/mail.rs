//! `mailsync messages ...`, `send` and `outbox ...`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Cx;
use super::render::{JsonFlag, Render, print};
use crate::ops::{MessagesQuery, OutboxQuery};
use crate::outbound::compose::{AttachmentInput, OutgoingInput, encode_base64};
use crate::store::OutboxEntry;

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List messages of an account, or linked to a lead, contact or deal, newest first.
    List {
        #[command(flatten)]
        query: MessagesQuery,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List outgoing messages, newest first.
    List {
        #[command(flatten)]
        query: OutboxQuery,
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

pub async fn messages(command: MessagesCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        MessagesCommand::List { query, json } => print(json, &cx.ops().await?.list_messages(&query).await?),
    }
}

pub async fn outbox(command: OutboxCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        OutboxCommand::List { query, json } => print(json, &cx.ops().await?.list_outbox(&query).await?),
        OutboxCommand::Show { id, json } => print(json, &cx.ops().await?.show_outbox(id).await?),
    }
}

/// A queued message: its id on a terminal, the whole entry as JSON.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Queued(OutboxEntry);

impl Render for Queued {
    fn table(&self) -> String {
        format!("{}\n", self.0.id)
    }
}

pub async fn send(args: SendArgs, cx: &Cx) -> anyhow::Result<()> {
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
    print(args.json, &Queued(cx.ops().await?.send(&input).await?))
}
