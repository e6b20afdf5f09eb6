//! The store's half of the ingest pipeline: one transaction that threads, deduplicates
//! (by Message-ID within the organization), stores, auto-creates leads and links the
//! messages of any source. `crate::ingest` prepares the messages; the sources call this
//! through `commit_folder_batch` (IMAP), `import_dropped` (BCC drop) and the outbox.

use sqlx::{Any, Row, Transaction};

use super::links::{LinkScope, auto_create_leads, link_by_address, link_to_thread_records};
use super::orgs::{Org, lock_org};
use super::sql::{Value, fetch_by_org_in, insert_rows};
use super::{Backend, Result, StoreError};
use crate::address::match_key;
use crate::model::message::{ParsedMessage, Source};

/// Where new messages come from, as the ingest rules need to know.
pub(crate) struct MessageSource {
    pub org_id: i64,
    pub org_name: String,
    pub kind: Source,
    /// Mail the user sent (Sent folder, outbound, BCC drop): its Bcc links too.
    pub outgoing: bool,
}

/// The store's half of the ingest pipeline, the same for every source: takes the
/// organization's lock, stores the messages it does not have yet (threaded), auto-creates
/// leads as its policy says, and links the new messages by address and by thread.
/// Returns the id of every input message, in order, and the ids that are new.
pub(crate) async fn store_messages(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    source: &MessageSource,
    messages: &[&ParsedMessage],
    now: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let org = Org { id: source.org_id, settings: lock_org(tx, source.org_id).await? };
    let (ids, new_ids) = insert_messages(tx, backend, &org, source, messages, now).await?;
    if !new_ids.is_empty() {
        let fresh: Vec<&ParsedMessage> =
            messages.iter().zip(&ids).filter(|(_, id)| new_ids.contains(id)).map(|(m, _)| *m).collect();
        auto_create_leads(tx, backend, &org, &source.org_name, &fresh, source.outgoing).await?;
        link_by_address(tx, backend, LinkScope::Messages(&new_ids), now).await?;
        link_to_thread_records(tx, backend, &new_ids, now).await?;
    }
    Ok((ids, new_ids))
}

/// Inserts messages the organization does not have yet (by Message-ID) with their
/// participants and attachment metadata. Returns the id of every input message, in order
/// (existing ones included), and the ids that are new.
async fn insert_messages(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org: &Org,
    source: &MessageSource,
    messages: &[&ParsedMessage],
    now: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let org_id = org.id;
    let rules = org.settings.match_rules();
    let outgoing = i64::from(source.outgoing);
    let threads = assign_threads(tx, backend, org_id, messages, now).await?;
    let refs: Vec<String> = messages.iter().map(|m| m.references.join(" ")).collect();
    let rows: Vec<[Value; 14]> = messages
        .iter()
        .zip(&refs)
        .zip(&threads)
        .map(|((m, refs), thread)| {
            [
                Value::Int(org_id),
                Value::Text(&m.message_id),
                Value::Text(&m.subject),
                Value::Int(m.sent_at),
                Value::Int(m.size),
                Value::Text(&m.in_reply_to),
                Value::Text(refs),
                Value::Text(&m.gm_thrid),
                Value::Text(&m.body_text),
                Value::Text(&m.body_html),
                Value::Text(source.kind.as_str()),
                Value::Int(now),
                Value::Int(*thread),
                Value::Int(outgoing),
            ]
        })
        .collect();
    let inserted = insert_rows(
        tx,
        backend,
        "INSERT INTO messages (org_id, message_id, subject, sent_at, size, in_reply_to, refs, gm_thrid, \
         body_text, body_html, source, created_at, thread_id, outgoing) VALUES ",
        " ON CONFLICT (org_id, message_id) DO NOTHING RETURNING id, message_id",
        &rows,
    )
    .await?;
    let mut by_message_id: std::collections::HashMap<String, (i64, bool)> = std::collections::HashMap::new();
    for row in &inserted {
        by_message_id.insert(row.try_get("message_id")?, (row.try_get("id")?, true));
    }
    // Messages the organization already had: one lookup for the whole batch.
    let missing: Vec<&str> =
        messages.iter().filter(|m| !by_message_id.contains_key(&m.message_id)).map(|m| m.message_id.as_str()).collect();
    for row in
        fetch_by_org_in(tx, backend, "SELECT id, message_id FROM messages", "message_id", org_id, &missing).await?
    {
        by_message_id.insert(row.try_get("message_id")?, (row.try_get("id")?, false));
    }
    let mut ids = Vec::with_capacity(messages.len());
    let mut new_ids = Vec::new();
    let keys: Vec<Vec<String>> =
        messages.iter().map(|m| m.participants.iter().map(|p| match_key(&p.address, rules)).collect()).collect();
    let mut participants: Vec<[Value; 6]> = Vec::new();
    let mut attachments: Vec<[Value; 5]> = Vec::new();
    for (m, keys) in messages.iter().zip(&keys) {
        let Some((id, new)) = by_message_id.get_mut(&m.message_id) else {
            return Err(StoreError::Invalid(format!("message {} vanished during insert", m.message_id)));
        };
        ids.push(*id);
        if !*new {
            continue;
        }
        // A message twice in one batch gets its participants once.
        *new = false;
        new_ids.push(*id);
        for (position, (p, key)) in m.participants.iter().zip(keys).enumerate() {
            participants.push([
                Value::Int(*id),
                Value::Text(p.role.as_str()),
                Value::Int(position as i64),
                Value::Text(&p.address),
                Value::Text(&p.name),
                Value::Text(key),
            ]);
        }
        for a in &m.attachments {
            attachments.push([
                Value::Int(*id),
                Value::Text(&a.part_id),
                Value::Text(&a.filename),
                Value::Text(&a.content_type),
                Value::Int(a.size),
            ]);
        }
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO participants (message_id, role, position, address, name, match_key) VALUES ",
        "",
        &participants,
    )
    .await?;
    insert_rows(
        tx,
        backend,
        "INSERT INTO attachments (message_id, part_id, filename, content_type, size) VALUES ",
        " ON CONFLICT DO NOTHING",
        &attachments,
    )
    .await?;
    Ok((ids, new_ids))
}

/// Puts every message of a batch in a thread (the grouping rule is
/// [`crate::model::thread`]): creates the threads that are new, merges stored threads
/// that the batch links, records every key. Returns each message's thread id, in order.
async fn assign_threads(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    org_id: i64,
    messages: &[&ParsedMessage],
    now: i64,
) -> Result<Vec<i64>> {
    use crate::model::thread::{group, thread_keys};
    let keys: Vec<Vec<String>> = messages.iter().map(|m| thread_keys(m)).collect();
    let mut all: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    let mut stored: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for row in fetch_by_org_in(tx, backend, "SELECT ref, thread_id FROM thread_refs", "ref", org_id, &all).await? {
        stored.insert(row.try_get("ref")?, row.try_get("thread_id")?);
    }
    let groups = group(&keys, &stored);
    let fresh = groups.iter().filter(|g| g.existing.is_empty()).count();
    let rows: Vec<[Value; 2]> = (0..fresh).map(|_| [Value::Int(org_id), Value::Int(now)]).collect();
    // New threads are empty and interchangeable, so the order of RETURNING does not matter.
    let mut new_ids =
        insert_rows(tx, backend, "INSERT INTO threads (org_id, created_at) VALUES ", " RETURNING id", &rows)
            .await?
            .into_iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
    let mut assigned = vec![0i64; messages.len()];
    let mut key_rows: Vec<[Value; 3]> = Vec::new();
    for g in &groups {
        let target = match g.existing.len() {
            0 => new_ids.pop().ok_or_else(|| StoreError::Invalid("thread creation returned too few ids".into()))?,
            1 => g.existing[0],
            _ => largest_thread(tx, backend, &g.existing).await?,
        };
        for &other in g.existing.iter().filter(|&&t| t != target) {
            merge_thread(tx, other, target).await?;
        }
        for &i in &g.members {
            assigned[i] = target;
            for k in &keys[i] {
                key_rows.push([Value::Int(org_id), Value::Text(k), Value::Int(target)]);
            }
        }
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO thread_refs (org_id, ref, thread_id) VALUES ",
        " ON CONFLICT (org_id, ref) DO NOTHING",
        &key_rows,
    )
    .await?;
    Ok(assigned)
}

/// Of threads about to merge, the one with the most keys: folding the smaller ones into it
/// moves each row O(log n) times at most (union by size), however threads grow.
async fn largest_thread(tx: &mut Transaction<'_, Any>, backend: Backend, threads: &[i64]) -> Result<i64> {
    let mut sql = String::from("SELECT thread_id, COUNT(*) AS n FROM thread_refs WHERE thread_id IN (");
    backend.placeholders(1, threads.len(), &mut sql);
    sql.push_str(") GROUP BY thread_id");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for t in threads {
        query = query.bind(*t);
    }
    let mut best = (threads.iter().copied().min().unwrap_or(0), -1i64);
    for row in query.fetch_all(&mut **tx).await? {
        let (t, n): (i64, i64) = (row.try_get("thread_id")?, row.try_get("n")?);
        if n > best.1 || (n == best.1 && t < best.0) {
            best = (t, n);
        }
    }
    Ok(best.0)
}

/// Folds thread `from` into `into`: its keys, messages and links move; where both link
/// the same record, a person's unlink (dissociated) wins, so merging never re-links.
async fn merge_thread(tx: &mut Transaction<'_, Any>, from: i64, into: i64) -> Result<()> {
    for sql in [
        "UPDATE thread_refs SET thread_id = $2 WHERE thread_id = $1",
        "UPDATE messages SET thread_id = $2 WHERE thread_id = $1",
        "UPDATE thread_links SET state = 'dissociated' WHERE thread_id = $2 AND state = 'active' AND EXISTS \
         (SELECT 1 FROM thread_links o WHERE o.thread_id = $1 AND o.entity_kind = thread_links.entity_kind \
         AND o.entity_id = thread_links.entity_id AND o.state = 'dissociated')",
        "UPDATE thread_links SET thread_id = $2 WHERE thread_id = $1 AND NOT EXISTS \
         (SELECT 1 FROM thread_links t WHERE t.thread_id = $2 AND t.entity_kind = thread_links.entity_kind \
         AND t.entity_id = thread_links.entity_id)",
        "DELETE FROM thread_links WHERE thread_id = $1",
        "DELETE FROM threads WHERE id = $1 AND $2 <> $1",
    ] {
        sqlx::query(sql).bind(from).bind(into).execute(&mut **tx).await?;
    }
    tracing::debug!(from, into, "threads merged");
    Ok(())
}
