//! Matching and linking throughput against the size of the CRM: ingest rate of synced
//! batches (parse excluded; store, thread, match, link included) with 1,000 versus
//! 1,000,000 contacts in the organization, on SQLite and PostgreSQL, measured in one run.
//! Goal (issue #4): the rate with a million contacts is at most 20% below the rate with
//! a thousand. Also reports the import time and the retroactive linking of the import.
//!
//! `cargo bench --bench linking [-- --contacts 1000,1000000 --messages 20000 --backends sqlite,postgres]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::TestDb;
use mailsync::accounts::AccountInput;
use mailsync::ingest::{ParsedMessage, Participant, Role};
use mailsync::secrets::MasterKey;
use mailsync::store::{Cursor, FolderBatch, FolderRole, NewPerson, Store};

const OWNER: &str = "rep@bench.example";
const BATCH: usize = 500;

struct Args {
    contacts: Vec<usize>,
    messages: usize,
    backends: Vec<String>,
}

fn parse_args() -> Args {
    let mut args =
        Args { contacts: vec![1_000, 1_000_000], messages: 20_000, backends: vec!["sqlite".into(), "postgres".into()] };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--contacts" => {
                args.contacts = value().split(',').map(|n| n.parse().expect("--contacts: numbers")).collect()
            }
            "--messages" => args.messages = value().parse().expect("--messages: a number"),
            "--backends" => args.backends = value().split(',').map(String::from).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The i-th correspondent: every other message comes from a known contact (spread over
/// the whole contact table), the rest from strangers; 40% are replies within a thread.
fn corpus(messages: usize, contacts: usize) -> Vec<ParsedMessage> {
    (0..messages)
        .map(|i| {
            let from =
                if i % 2 == 0 { contact_address((i * 7919) % contacts) } else { format!("stranger{i}@else.example") };
            let cc = contact_address((i * 104_729 + 1) % contacts);
            let reply_to = (i % 5 < 2 && i > 0).then(|| format!("m{}@bench.example", i - 1));
            ParsedMessage {
                message_id: format!("m{i}@bench.example"),
                subject: format!("message {i}"),
                sent_at: 1_700_000_000_000 + i as i64,
                size: 4_000,
                in_reply_to: reply_to.clone().unwrap_or_default(),
                references: reply_to.into_iter().collect(),
                participants: vec![
                    Participant { role: Role::From, address: from, name: String::new() },
                    Participant { role: Role::To, address: OWNER.into(), name: String::new() },
                    Participant { role: Role::Cc, address: cc, name: String::new() },
                ],
                body_text: "Hello, this is a benchmark message body of moderate length.".repeat(20),
                ..ParsedMessage::default()
            }
        })
        .collect()
}

fn contact_address(i: usize) -> String {
    format!("contact{i}@client{}.example", i % 1000)
}

struct Figures {
    import_s: f64,
    relink_s: f64,
    ingest_rate: f64,
    links: i64,
}

async fn measure(backend: &str, contacts: usize, messages: usize, key: &MasterKey) -> Figures {
    let db = if backend == "sqlite" { TestDb::sqlite() } else { TestDb::postgres() };
    let store: Store = db.store().await;
    let input: AccountInput =
        serde_json::from_value(serde_json::json!({"email": OWNER, "imap_host": "imap.bench.example", "password": "x"}))
            .expect("account input");
    let account = store.add_account(&input.into_new_account(key).expect("account")).await.expect("add account");
    let folder = store.ensure_folder(account.id, FolderRole::Inbox, "INBOX").await.expect("folder");
    let org_id: i64 = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'default'")
        .fetch_one(store.pool())
        .await
        .expect("org");

    let rows: Vec<NewPerson> = (0..contacts)
        .map(|i| NewPerson { org: "default".into(), emails: vec![contact_address(i)], ..NewPerson::default() })
        .collect();
    let started = Instant::now();
    store.import_contacts(rows).await.expect("import");
    let import_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    while store.run_relink_jobs(5_000).await.expect("relink") > 0 {}
    let relink_s = started.elapsed().as_secs_f64();

    let corpus = corpus(messages, contacts);
    let started = Instant::now();
    for (n, chunk) in corpus.chunks(BATCH).enumerate() {
        let high = ((n + 1) * BATCH) as i64;
        let batch = FolderBatch {
            folder_id: folder.id,
            org_id,
            uidvalidity: folder.uidvalidity,
            messages: chunk.iter().enumerate().map(|(i, m)| ((n * BATCH + i + 1) as i64, m.clone())).collect(),
            skipped: Vec::new(),
            cursor: Cursor {
                synced_high_uid: high,
                synced_low_uid: 1,
                initial_sync_done: false,
                uidnext: high + 1,
                highestmodseq: 0,
                server_messages: messages as i64,
            },
        };
        mailsync::ingest::commit_folder_batch(&store, &batch).await.expect("commit");
    }
    let ingest_rate = messages as f64 / started.elapsed().as_secs_f64();
    let links: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM message_links").fetch_one(store.pool()).await.expect("count");
    store.close().await;
    Figures { import_s, relink_s, ingest_rate, links }
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key = MasterKey::load_or_create(&key_dir.path().join("key")).expect("key");
    println!("backend     contacts   import s  relink s  ingest msg/s  links   vs first");
    for backend in &args.backends {
        let mut first = None;
        for &contacts in &args.contacts {
            let f = runtime.block_on(measure(backend, contacts, args.messages, &key));
            let base = *first.get_or_insert(f.ingest_rate);
            println!(
                "{backend:<10} {contacts:>9} {:>9.1} {:>9.1} {:>13.0} {:>6} {:>+9.1}%",
                f.import_s,
                f.relink_s,
                f.ingest_rate,
                f.links,
                (f.ingest_rate / base - 1.0) * 100.0
            );
        }
    }
}
