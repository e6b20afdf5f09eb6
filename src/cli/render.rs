//! How command results are printed: a table for people (`Render::table`), or the same
//! JSON the API returns with `--json`.

use serde::Serialize;

use crate::check::CheckReport;
use crate::contacts::engine::Report;
use crate::ops::UserAddresses;
use crate::status::{Status, human_duration};
use crate::store::{
    Account, ContactSyncConfig, CopySummary, Deal, DropAddress, DropDelivery, FlaggedCard, ImportSummary, LinkView,
    MessageSummary, OrgSettings, OutboxEntry, Person, ThreadView,
};

/// `--json` on every command that prints a result.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A result as text for a terminal.
pub trait Render: Serialize {
    fn table(&self) -> String;
}

/// Prints `value` as a table, or as pretty JSON with `--json`.
pub fn print<T: Render + ?Sized>(format: JsonFlag, value: &T) -> anyhow::Result<()> {
    if format.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", value.table());
    }
    Ok(())
}

/// One row type of a listing: the header once, then a line per item.
trait Row {
    const HEADER: &'static str;
    fn row(&self) -> String;
}

impl<T: Row + Serialize> Render for [T] {
    fn table(&self) -> String {
        let mut out = format!("{}\n", T::HEADER);
        for item in self {
            out += &item.row();
            out.push('\n');
        }
        out
    }
}

impl<T: Row + Serialize> Render for Vec<T> {
    fn table(&self) -> String {
        self.as_slice().table()
    }
}

/// A single item shows as a one-row table.
macro_rules! render_as_row {
    ($($t:ty),*) => {$(
        impl Render for $t {
            fn table(&self) -> String {
                std::slice::from_ref(self).table()
            }
        }
    )*};
}
render_as_row!(Account, Person, Deal, OutboxEntry);

impl Row for Account {
    const HEADER: &'static str = "ID  EMAIL  ORG  IMAP  STATE  ERROR";
    fn row(&self) -> String {
        let a = self;
        format!(
            "{}  {}  {}  {}:{} ({})  {}  {}",
            a.id,
            a.email,
            a.org,
            a.imap_host,
            a.imap_port,
            a.imap_tls.as_str(),
            a.state.as_str(),
            a.error_message
        )
    }
}

impl Row for Person {
    const HEADER: &'static str = "ID  NAME  EMAILS  PHONES  COMPANY  ORG";
    fn row(&self) -> String {
        let p = self;
        format!("{}  {}  {}  {}  {}  {}", p.id, p.name, p.emails.join(","), p.phones.join(","), p.company, p.org)
    }
}

impl Row for Deal {
    const HEADER: &'static str = "ID  TITLE  STATUS  VALUE  ORG";
    fn row(&self) -> String {
        let d = self;
        format!("{}  {}  {}  {}.{:02}  {}", d.id, d.title, d.status, d.value_cents / 100, d.value_cents % 100, d.org)
    }
}

fn link_text(l: &LinkView) -> String {
    format!("{} {} ({}, {})", l.entity_kind.as_str(), l.entity_id, l.origin.as_str(), l.state.as_str())
}

impl Row for MessageSummary {
    const HEADER: &'static str = "ID  THREAD  DATE  FOLDERS  FROM  SUBJECT  LINKS";
    fn row(&self) -> String {
        let m = self;
        let links: Vec<String> = m.links.iter().map(link_text).collect();
        format!(
            "{}  {}  {}  {}  {}  {}  {}",
            m.id,
            m.thread_id,
            m.date,
            m.folders.join(","),
            m.from.join(","),
            m.subject,
            links.join("; ")
        )
    }
}

impl Row for OutboxEntry {
    const HEADER: &'static str = "ID  USER  STATUS  ATTEMPTS  RECIPIENTS  LAST REPLY";
    fn row(&self) -> String {
        let e = self;
        let recipients: Vec<String> =
            e.recipients.iter().map(|r| format!("{}={}", r.address, r.state.as_str())).collect();
        format!(
            "{}  {}  {}  {}  {}  {}",
            e.id,
            e.user,
            e.status.as_str(),
            e.attempts,
            recipients.join(","),
            e.last_reply
        )
    }
}

impl Row for DropDelivery {
    const HEADER: &'static str = "ID  USER  OUTCOME  FROM  MESSAGE-ID  REASON";
    fn row(&self) -> String {
        let d = self;
        format!("{}  {}  {}  {}  {}  {}", d.id, d.user, d.outcome, d.header_from, d.message_id, d.reason)
    }
}

impl Row for FlaggedCard {
    const HEADER: &'static str = "CARD  UID  REASON";
    fn row(&self) -> String {
        format!("{}  {}  {}", self.card, self.uid, self.reason)
    }
}

impl Row for ContactSyncConfig {
    const HEADER: &'static str = "USER  PROVIDER  LAST SYNC  RESULT  ERROR";
    fn row(&self) -> String {
        let c = self;
        format!("{}  {}  {}  {}  {}", c.user, c.provider, c.last_sync_at, c.last_result, c.last_error)
    }
}

impl Render for ThreadView {
    fn table(&self) -> String {
        let links: Vec<String> = self.links.iter().map(link_text).collect();
        format!("thread {} ({}), linked: {}\n{}", self.id, self.org, links.join(", "), self.messages.table())
    }
}

impl Render for DropAddress {
    fn table(&self) -> String {
        format!("{}\n", self.address)
    }
}

impl Render for UserAddresses {
    fn table(&self) -> String {
        format!("{}\n", self.addresses.join("\n"))
    }
}

impl Render for OrgSettings {
    fn table(&self) -> String {
        format!("{self:#?}\n")
    }
}

impl Render for ImportSummary {
    fn table(&self) -> String {
        format!("imported {} contacts ({} already present)\n", self.created, self.existing)
    }
}

impl Render for CheckReport {
    fn table(&self) -> String {
        CheckReport::table(self)
    }
}

impl Render for ContactSyncConfig {
    fn table(&self) -> String {
        format!("contacts sync configured for {}\n", self.user)
    }
}

impl Render for Report {
    fn table(&self) -> String {
        format!("{self:#?}\n")
    }
}

impl Render for CopySummary {
    fn table(&self) -> String {
        let rows: i64 = self.tables.iter().map(|t| t.rows).sum();
        format!("copied {rows} rows in {} tables; now set [database] url to the target\n", self.tables.len())
    }
}

impl Render for Status {
    fn table(&self) -> String {
        let mut out = String::new();
        for a in &self.accounts {
            out += &format!("account {} {} ({}): {}\n", a.id, a.email, a.org, a.state.as_str());
            if !a.error_class.is_empty() {
                out += &format!("  error [{}]: {}\n", a.error_class, a.error_message);
            }
            if !a.note.is_empty() {
                out += &format!("  note: {}\n", a.note);
            }
            for f in &a.folders {
                let progress = match (f.initial_sync_complete, f.eta_secs) {
                    (true, _) => "in sync".to_string(),
                    (false, Some(eta)) => format!(
                        "initial sync {:.0}%, {:.0} msg/s, ETA {}",
                        f.progress * 100.0,
                        f.rate_per_sec,
                        human_duration(eta)
                    ),
                    (false, None) => format!("initial sync {:.0}%", f.progress * 100.0),
                };
                out += &format!(
                    "  {} {:?}: {} stored, {} skipped, {} on server, last UID {}, {progress}\n",
                    f.role, f.name, f.messages_stored, f.messages_skipped, f.server_messages, f.last_synced_uid,
                );
            }
        }
        out
    }
}

/// What a write that returns nothing printable did, in words (`--json`: `{"done": ...}`).
#[derive(Serialize)]
pub struct Done {
    pub done: String,
}

impl Render for Done {
    fn table(&self) -> String {
        format!("{}\n", self.done)
    }
}
