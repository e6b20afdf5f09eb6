//! `mailsync lead|contact|deal|org ...`, `link`, `unlink` and `threads`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Cx;
use super::render::{JsonFlag, Render, print};
use crate::ops::{EmailInput, ImportInput, ListQuery};
use crate::store::{
    AutoCreate, ContactChange, LinkChange, LinkRequest, NewDeal, NewPerson, OrgSettings, PersonKind, StoreError,
};

#[derive(Debug, Subcommand)]
pub enum LeadCommand {
    /// Add one lead; prints it.
    Add(PersonArgs),
    /// List leads.
    List(ListArgs),
    /// Add an email address; past mail with it is linked in the background.
    AddEmail(AddEmailArgs),
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

impl PersonArgs {
    fn into_new(self) -> NewPerson {
        NewPerson {
            org: self.org,
            name: self.name,
            company: self.company,
            emails: self.emails,
            phones: self.phones,
            status: self.status,
            source: String::new(),
            owner: self.owner,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub query: ListQuery,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct AddEmailArgs {
    pub id: i64,
    pub email: String,
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

#[derive(Debug, Args)]
pub struct LinkArgs {
    #[command(flatten)]
    pub request: LinkRequest,
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

pub async fn lead(command: LeadCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        LeadCommand::Add(args) => add_person(PersonKind::Lead, args, cx).await,
        LeadCommand::List(args) => print(args.json, &cx.ops().await?.list_people(PersonKind::Lead, &args.query).await?),
        LeadCommand::AddEmail(args) => add_email(PersonKind::Lead, args, cx).await,
    }
}

pub async fn contact(command: ContactCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        ContactCommand::Add(args) => add_person(PersonKind::Contact, args, cx).await,
        ContactCommand::List(args) => {
            print(args.json, &cx.ops().await?.list_people(PersonKind::Contact, &args.query).await?)
        }
        ContactCommand::AddEmail(args) => add_email(PersonKind::Contact, args, cx).await,
        ContactCommand::Update { id, name, company, emails, phones, owner, json } => {
            let change = ContactChange {
                name,
                company,
                emails: (!emails.is_empty()).then_some(emails),
                phones: (!phones.is_empty()).then_some(phones),
                owner,
            };
            print(json, &cx.ops().await?.update_contact(id, change).await?)
        }
        ContactCommand::Delete { id } => {
            cx.ops().await?.delete_contact(id).await?;
            Ok(())
        }
        ContactCommand::Import { file, org, owner, json } => {
            // Read and check the whole file before opening the store: nothing half-imported.
            let mut contacts = read_contacts_csv(&file, &org)?;
            contacts.iter_mut().for_each(|r| r.owner = owner.clone());
            let ops = cx.ops().await?;
            let mut bar = crate::progress::ProgressBar::new("importing", contacts.len() as u64);
            let summary = ops.import_contacts(ImportInput { contacts }, |done, total| bar.set(done, total)).await?;
            bar.finish();
            print(json, &summary)
        }
    }
}

async fn add_person(kind: PersonKind, args: PersonArgs, cx: &Cx) -> anyhow::Result<()> {
    let json = args.json;
    // Checked before the store is opened.
    let new = args.into_new().validate()?;
    print(json, &cx.ops().await?.add_person(kind, new).await?)
}

async fn add_email(kind: PersonKind, args: AddEmailArgs, cx: &Cx) -> anyhow::Result<()> {
    let person = cx.ops().await?.add_person_email(kind, args.id, EmailInput { email: args.email }).await?;
    print(args.json, &person)
}

pub async fn deal(command: DealCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        DealCommand::Add { org, title, status, value, contacts, leads, json } => {
            let new = NewDeal { org, title, status, value_cents: value.unwrap_or(0), contacts, leads };
            print(json, &cx.ops().await?.add_deal(new).await?)
        }
        DealCommand::List(args) => print(args.json, &cx.ops().await?.list_deals(&args.query).await?),
    }
}

pub async fn org(command: OrgCommand, cx: &Cx) -> anyhow::Result<()> {
    match command {
        OrgCommand::Show { name, json } => print(json, &cx.ops().await?.show_org_settings(&name).await?),
        OrgCommand::Set { name, ignore_plus_tags, ignore_gmail_dots, auto_create, internal_domains, json } => {
            let ops = cx.ops().await?;
            let mut settings = match ops.show_org_settings(&name).await {
                Ok(s) => s,
                Err(crate::ops::OpError::Store(StoreError::NotFound(_))) => OrgSettings::default(),
                Err(e) => return Err(e.into()),
            };
            settings.ignore_plus_tags = ignore_plus_tags.unwrap_or(settings.ignore_plus_tags);
            settings.ignore_gmail_dots = ignore_gmail_dots.unwrap_or(settings.ignore_gmail_dots);
            settings.auto_create = auto_create.map_or(settings.auto_create, Into::into);
            settings.internal_domains = internal_domains.unwrap_or(settings.internal_domains);
            print(json, &ops.set_org_settings(&name, settings).await?)
        }
    }
}

pub async fn link(args: LinkArgs, link: bool, cx: &Cx) -> anyhow::Result<()> {
    let ops = cx.ops().await?;
    let change = if link { ops.link(&args.request).await? } else { ops.unlink(&args.request).await? };
    print(args.json, &Linked { verb: if link { "linked" } else { "unlinked" }, change })
}

/// A link's or unlink's change; the JSON is the API's.
#[derive(serde::Serialize)]
struct Linked {
    #[serde(skip)]
    verb: &'static str,
    #[serde(flatten)]
    change: LinkChange,
}

impl Render for Linked {
    fn table(&self) -> String {
        format!("{}: thread {}, {} message(s) changed\n", self.verb, self.change.thread_id, self.change.messages)
    }
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
