//! One contacts-sync run for one user, the same for every provider ([`Remote`]).
//!
//! 1. Remote delta since the stored token (a refused token: full listing).
//! 2. Guard: a side that suddenly looks empty stops the run before anything is written.
//! 3. Remote deletions: the contact is unlinked and tagged, never imported again.
//! 4. Changed cards (our own writes coming back are skipped by ETag, or by hash) and
//!    cards of contacts changed in the CRM are fetched and reconciled: three-way merge
//!    against the last synced copy, each side written only if it differs from the result.
//!    New cards are linked by primary email, then exact E.164 phone (never by name);
//!    several candidates flag the card for a person; none imports it.
//! 5. CRM deletions: propagated only if configured, else a tombstone.
//! 6. New CRM contacts are created remotely; the remote id is recorded before the write
//!    so a crash in between cannot create it twice.
//!
//! The token is stored last: a run cut short is replayed, and the replay finds the
//! writes already made (equal hashes) and does nothing twice.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use serde::Serialize;

use super::{ConflictPolicy, ContactFields, Direction, merge};
use crate::store::{
    ContactSyncConfig, CrmContact, IGNORED, IMPORT_REQUESTED, LINK_REQUESTED, Store, StoreError, SyncItem,
};

/// A remote contact.
#[derive(Debug, Clone)]
pub struct RemoteCard<Raw> {
    pub id: String,
    pub etag: String,
    pub uid: String,
    /// As the remote has them (not canonical).
    pub fields: ContactFields,
    /// What the provider needs to update the contact without losing unmapped data.
    pub raw: Raw,
}

/// What changed remotely since a token.
#[derive(Debug, Default)]
pub struct RemoteDelta {
    /// Ids changed or added, with their ETag.
    pub changed: Vec<(String, String)>,
    pub removed: Vec<String>,
    /// Ids that still exist but left the synced scope (a Google contact moved out of the
    /// group): not deleted, not synced while out, synced again when they come back.
    pub left: Vec<String>,
    /// A full listing: ids missing from `changed` (and `left`) are gone.
    pub full: bool,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the sync token was refused")]
    TokenRefused,
    /// The write's precondition failed: the contact changed (or exists) remotely.
    #[error("{0} changed remotely meanwhile")]
    Conflict(String),
    #[error("{message}")]
    Failed { message: String, transient: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Remote(#[from] RemoteError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A side looks empty although contacts were synced: nothing was written.
    #[error("refusing to sync: {0}")]
    Guard(String),
}

impl SyncError {
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Remote(RemoteError::Failed { transient, .. }) => *transient,
            SyncError::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// A provider's address book or contact group.
pub trait Remote: Send {
    type Raw: Clone + Send + Sync;
    /// Changes since `token`; everything when it is empty.
    fn changes(&mut self, token: &str) -> impl Future<Output = Result<RemoteDelta, RemoteError>> + Send;
    fn fetch(&mut self, ids: &[String])
    -> impl Future<Output = Result<Vec<RemoteCard<Self::Raw>>, RemoteError>> + Send;
    /// The id a new contact gets, chosen before it is written (`uid` is ours).
    fn planned_id(&self, uid: &str) -> String;
    /// Creates contacts (at their planned ids, or wherever the provider puts them);
    /// returns each one's id and ETag, in order. `Conflict` when one already exists.
    fn create_batch(
        &mut self,
        new: &[NewContact],
    ) -> impl Future<Output = Vec<Result<(String, String), RemoteError>>> + Send;
    /// Replaces the mapped fields of each card (guarded by its ETag); returns each new
    /// ETag, in order.
    fn update_batch(
        &mut self,
        updates: &[(RemoteCard<Self::Raw>, ContactFields)],
    ) -> impl Future<Output = Vec<Result<String, RemoteError>>> + Send;
    fn delete(&mut self, id: &str, etag: &str) -> impl Future<Output = Result<(), RemoteError>> + Send;
    /// The address book's or group's name, for tags ("from Google", "deleted in Work").
    fn name(&self) -> String;
}

/// A CRM contact to create remotely.
#[derive(Debug, Clone)]
pub struct NewContact {
    pub planned_id: String,
    pub uid: String,
    pub contact_id: i64,
    pub fields: ContactFields,
}

/// Writes are sent in batches of this many (the Google People API's limit).
const BATCH: usize = 200;

/// What a run did, shown by status.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub full_listing: bool,
    pub created_in_crm: u64,
    pub created_remotely: u64,
    pub updated_in_crm: u64,
    pub updated_remotely: u64,
    pub unchanged: u64,
    pub linked: u64,
    pub conflicts: u64,
    /// Cards that need a person: several CRM candidates, or a duplicate UID.
    pub flagged: u64,
    pub deleted_remotely: u64,
    pub remote_deletions: u64,
    /// Writes refused because the other side changed meanwhile; the next run merges them.
    pub retried_later: u64,
}

const SYNCED: &str = "synced";
const CREATING: &str = "creating";
const FLAGGED: &str = "flagged";
const REMOTE_DELETED: &str = "remote_deleted";
const CRM_DELETED: &str = "crm_deleted";
/// The contact left the synced scope remotely; its link and last synced copy are kept.
const LEFT: &str = "left";

/// The organization's contacts by email and by E.164 phone, for linking new cards
/// without a scan per card.
#[derive(Default)]
struct AddressIndex {
    by_email: HashMap<String, Vec<i64>>,
    by_phone: HashMap<String, Vec<i64>>,
}

impl AddressIndex {
    fn add(&mut self, id: i64, fields: &ContactFields, region: &str) {
        for email in &fields.emails {
            self.by_email.entry(email.clone()).or_default().push(id);
        }
        for phone in &fields.phones {
            self.by_phone.entry(super::e164(phone, region)).or_default().push(id);
        }
    }
}

/// Who a new card may be in the CRM (see `Run::candidates`).
enum Candidates {
    /// Nobody: the card is a new contact.
    None,
    /// This user's or unowned contacts not synced with any card yet: one is linked,
    /// several flag the card for a person.
    Free(Vec<i64>),
    /// Contacts already synced with another card.
    Linked(Vec<i64>),
    /// Contacts owned by other users of the organization.
    Colleagues(Vec<i64>),
}

struct Run<'a, R: Remote> {
    store: &'a Store,
    remote: &'a mut R,
    config: &'a ContactSyncConfig,
    region: String,
    /// Every contact of the organization, by id (linking candidates, existence).
    contacts: HashMap<i64, CrmContact>,
    index: AddressIndex,
    /// Contacts linked to a remote contact (any live state), so none is linked twice.
    linked: HashSet<i64>,
    /// Remote updates waiting for their batch (card, merged fields), and for each its
    /// contact and whether the CRM side needs the merged fields too.
    updates: Vec<(RemoteCard<R::Raw>, ContactFields)>,
    update_owners: Vec<(i64, bool)>,
    report: Report,
}

/// Runs one sync; returns the report and the token to store.
pub async fn run<R: Remote>(
    store: &Store,
    remote: &mut R,
    config: &ContactSyncConfig,
    progress: super::Progress<'_>,
) -> Result<(Report, String), SyncError> {
    let region = if config.settings.default_region.is_empty() {
        "US".to_string()
    } else {
        config.settings.default_region.clone()
    };
    let items = store.sync_items(config.user_id).await?;
    let contacts: HashMap<i64, CrmContact> =
        store.org_contacts(config.org_id).await?.into_iter().map(|c| (c.id, c)).collect();
    let live = |state: &str| state == SYNCED || state == CREATING;
    // A contact whose card is out of scope is still its card's: no other card links it.
    let linked = items
        .iter()
        .filter(|i| live(&i.state) || i.state == LEFT || i.state == LINK_REQUESTED)
        .map(|i| i.contact_id)
        .collect();
    let by_remote: HashMap<String, SyncItem> = items.into_iter().map(|i| (i.remote_id.clone(), i)).collect();
    let mut index = AddressIndex::default();
    for c in contacts.values() {
        index.add(c.id, &c.fields, &region);
    }
    let mut run = Run {
        store,
        remote,
        config,
        region,
        contacts,
        index,
        linked,
        updates: Vec::new(),
        update_owners: Vec::new(),
        report: Report::default(),
    };

    let delta = match run.remote.changes(&config.sync_token).await {
        Err(RemoteError::TokenRefused) => run.remote.changes("").await?,
        other => other?,
    };
    run.report.full_listing = delta.full;
    let listed: HashSet<&str> =
        delta.changed.iter().map(|(id, _)| id.as_str()).chain(delta.left.iter().map(String::as_str)).collect();
    let mut removed: HashSet<String> = delta.removed.iter().cloned().collect();
    if delta.full {
        removed.extend(
            by_remote
                .values()
                .filter(|i| i.state == SYNCED && !listed.contains(i.remote_id.as_str()))
                .map(|i| i.remote_id.clone()),
        );
    }

    // The guard: every synced contact gone from one side at once (more than one, so a
    // user may still delete their only contact) is a broken server, a wrong address
    // book or a wiped CRM far more often than an intent. Nothing is written.
    let synced: Vec<&SyncItem> = by_remote.values().filter(|i| i.state == SYNCED).collect();
    if synced.len() > 1 && synced.iter().all(|i| removed.contains(&i.remote_id)) && delta.changed.is_empty() {
        return Err(SyncError::Guard(format!(
            "the remote address book looks empty although {} contacts were synced; if that is right, remove the sync configuration and start again",
            synced.len()
        )));
    }
    if synced.len() > 1 && synced.iter().all(|i| !run.contacts.contains_key(&i.contact_id)) {
        return Err(SyncError::Guard(format!(
            "none of the {} synced contacts exists in the CRM any more; if that is right, remove the sync configuration and start again",
            synced.len()
        )));
    }
    let owned: Vec<i64> = run.contacts.values().filter(|c| c.owner_user_id == config.user_id).map(|c| c.id).collect();

    // Contacts that left the synced scope: kept as they are, tag included.
    for id in &delta.left {
        if let Some(item) = by_remote.get(id).filter(|i| i.state == SYNCED) {
            run.store
                .save_sync_item(
                    config.user_id,
                    &item.remote_id,
                    &item.remote_uid,
                    item.contact_id,
                    &item.etag,
                    LEFT,
                    item.synced_copy.as_ref(),
                    "left the synced group",
                )
                .await?;
        }
    }

    // Remote deletions.
    for id in &removed {
        if let Some(item) = by_remote.get(id).filter(|i| i.state == SYNCED) {
            run.remote_deleted(item).await?;
        }
    }

    // Cards to reconcile: changed remotely (not our own write coming back), or whose
    // contact changed in the CRM.
    let mut wanted: Vec<String> = delta
        .changed
        .iter()
        .filter(|(id, etag)| {
            by_remote.get(id).is_none_or(|i| i.etag != *etag || i.state == CREATING || i.state == LEFT)
        })
        .map(|(id, _)| id.clone())
        .collect();
    let mut queued: HashSet<String> = wanted.iter().cloned().collect();
    // Flagged cards a person resolved since the last run, changed or not.
    for item in by_remote.values().filter(|i| i.state == LINK_REQUESTED || i.state == IMPORT_REQUESTED) {
        if queued.insert(item.remote_id.clone()) {
            wanted.push(item.remote_id.clone());
        }
    }
    for item in by_remote
        .values()
        .filter(|i| i.state == SYNCED && !queued.contains(&i.remote_id) && !removed.contains(&i.remote_id))
    {
        if let Some(contact) = run.contacts.get(&item.contact_id)
            && contact.fields.canonical(&run.region).hash() != item.synced_hash
        {
            wanted.push(item.remote_id.clone());
        }
    }
    let mut cards = Vec::with_capacity(wanted.len());
    for ids in wanted.chunks(BATCH) {
        cards.extend(run.remote.fetch(ids).await?);
        progress("fetching", cards.len() as u64, wanted.len() as u64);
    }
    // In id order, whatever order the server answers in: of two cards claiming one UID,
    // the same one is linked every run and the other flagged.
    cards.sort_by(|a, b| a.id.cmp(&b.id));
    let fetched: HashSet<String> = cards.iter().map(|c| c.id.clone()).collect();
    let mut seen_uids: HashMap<String, String> = by_remote
        .values()
        .filter(|i| live(&i.state) && !i.remote_uid.is_empty())
        .map(|i| (i.remote_uid.clone(), i.remote_id.clone()))
        .collect();
    // Creations a crash left unconfirmed, by the uid we gave them (providers that pick
    // the id themselves show our uid in the contact).
    let mut unconfirmed: HashMap<String, &SyncItem> = by_remote
        .values()
        .filter(|i| i.state == CREATING && !i.remote_uid.is_empty())
        .map(|i| (i.remote_uid.clone(), i))
        .collect();
    let fetched_count = cards.len() as u64;
    for (done, card) in cards.into_iter().enumerate() {
        progress("reconciling", done as u64 + 1, fetched_count);
        match by_remote.get(&card.id) {
            // Unreadable or blank: linked to nothing, imported as nothing.
            _ if card.fields.is_empty() => {}
            Some(item) if item.state == REMOTE_DELETED || item.state == CRM_DELETED || item.state == IGNORED => {}
            // A person's decisions about flagged cards.
            Some(item) if item.state == LINK_REQUESTED => {
                run.report.linked += 1;
                run.reconcile(item.contact_id, None, None, &card).await?;
            }
            Some(item) if item.state == IMPORT_REQUESTED => run.import_card(&card).await?,
            // Back in scope (LEFT) is synced again against the last synced copy.
            Some(item) if live(&item.state) || item.state == LEFT => {
                unconfirmed.remove(&item.remote_uid);
                let base = (item.state == SYNCED || item.state == LEFT).then_some(item.synced_copy.as_ref()).flatten();
                run.reconcile(item.contact_id, base, Some(&item.etag), &card).await?;
            }
            _ => match unconfirmed.remove(&card.uid).filter(|_| !card.uid.is_empty()) {
                Some(placeholder) => {
                    run.store.delete_sync_item(config.user_id, &placeholder.remote_id).await?;
                    run.reconcile(placeholder.contact_id, None, None, &card).await?;
                }
                None => run.new_card(&card, &mut seen_uids).await?,
            },
        }
        if run.updates.len() >= BATCH {
            run.flush_updates().await?;
        }
    }
    run.flush_updates().await?;

    // CRM deletions.
    for item in by_remote.values().filter(|i| i.state == SYNCED && !run.contacts.contains_key(&i.contact_id)) {
        if config.settings.propagate_deletions && config.direction.pushes() {
            match run.remote.delete(&item.remote_id, &item.etag).await {
                Ok(()) => {
                    run.store.delete_sync_item(config.user_id, &item.remote_id).await?;
                    run.report.deleted_remotely += 1;
                }
                Err(RemoteError::Conflict(_)) => run.report.retried_later += 1,
                Err(e) => return Err(e.into()),
            }
        } else {
            run.store
                .save_sync_item(
                    config.user_id,
                    &item.remote_id,
                    &item.remote_uid,
                    0,
                    &item.etag,
                    CRM_DELETED,
                    None,
                    "deleted in the CRM",
                )
                .await?;
        }
    }

    // New CRM contacts, and creations a crash left unconfirmed and not found remotely.
    if config.direction.pushes() {
        let pending: HashMap<i64, &SyncItem> =
            unconfirmed.values().filter(|i| !fetched.contains(&i.remote_id)).map(|i| (i.contact_id, *i)).collect();
        // A contact with any item (a tombstone included) is never created again.
        let known: HashSet<i64> = by_remote.values().map(|i| i.contact_id).collect();
        let mut new = Vec::new();
        for id in owned {
            if (known.contains(&id) || run.linked.contains(&id)) && !pending.contains_key(&id) {
                continue;
            }
            let Some(contact) = run.contacts.get(&id) else { continue };
            let (planned_id, uid) = match pending.get(&id) {
                Some(item) => (item.remote_id.clone(), item.remote_uid.clone()),
                None => {
                    let uid = new_uid(id)?;
                    (run.remote.planned_id(&uid), uid)
                }
            };
            // In the CRM's order: the card's first email and phone are the contact's primary ones.
            let fields = contact.fields.canonical(&run.region).ordered_like(&contact.fields, &run.region);
            new.push(NewContact { planned_id, uid, contact_id: id, fields });
        }
        for (i, batch) in new.chunks(BATCH).enumerate() {
            run.create_remote(batch).await?;
            progress("creating", (i * BATCH + batch.len()) as u64, new.len() as u64);
        }
        run.flush_updates().await?;
    }
    Ok((run.report, delta.token))
}

impl<R: Remote> Run<'_, R> {
    fn user(&self) -> i64 {
        self.config.user_id
    }

    async fn remote_deleted(&mut self, item: &SyncItem) -> Result<(), SyncError> {
        if self.config.direction == Direction::CrmToRemote {
            // A mirror: the contact is created again remotely by this run.
            self.store.delete_sync_item(self.user(), &item.remote_id).await?;
            self.linked.remove(&item.contact_id);
            return Ok(());
        }
        self.store.tag_contact(item.contact_id, &format!("deleted in {}", self.remote.name())).await?;
        self.store
            .save_sync_item(
                self.user(),
                &item.remote_id,
                &item.remote_uid,
                item.contact_id,
                &item.etag,
                REMOTE_DELETED,
                None,
                "deleted remotely",
            )
            .await?;
        self.linked.remove(&item.contact_id);
        self.report.remote_deletions += 1;
        Ok(())
    }

    /// A card the sync did not know (or had flagged): link, flag or import it.
    async fn new_card(
        &mut self,
        card: &RemoteCard<R::Raw>,
        seen_uids: &mut HashMap<String, String>,
    ) -> Result<(), SyncError> {
        if !card.uid.is_empty() {
            if let Some(other) = seen_uids.get(&card.uid).filter(|other| **other != card.id) {
                let note = format!("duplicate UID {} (also {other})", card.uid);
                self.store
                    .save_sync_item(self.user(), &card.id, &card.uid, 0, &card.etag, FLAGGED, None, &note)
                    .await?;
                self.report.flagged += 1;
                return Ok(());
            }
            seen_uids.insert(card.uid.clone(), card.id.clone());
        }
        let remote = card.fields.canonical(&self.region);
        let flag = match self.candidates(&remote, &card.fields) {
            Candidates::Free(ids) => match ids.as_slice() {
                [contact] => {
                    let contact = *contact;
                    self.linked.insert(contact);
                    self.report.linked += 1;
                    return self.reconcile(contact, None, None, card).await;
                }
                several => format!("several CRM contacts match: {several:?}"),
            },
            // The contact already syncs with another card: a second one is not a new person.
            Candidates::Linked(ids) => format!("the CRM contact {ids:?} with this address is synced with another card"),
            // Another user's contact: neither merged into nor copied for this user.
            Candidates::Colleagues(ids) => format!("the address belongs to CRM contact {ids:?} of another user"),
            Candidates::None if self.config.direction.pulls() => return self.import_card(card).await,
            // CRM to remote only: a remote card nobody has is left alone.
            Candidates::None => return Ok(()),
        };
        self.store.save_sync_item(self.user(), &card.id, &card.uid, 0, &card.etag, FLAGGED, None, &flag).await?;
        self.report.flagged += 1;
        Ok(())
    }

    /// Creates a CRM contact, owned by this user, from a card, and links them.
    async fn import_card(&mut self, card: &RemoteCard<R::Raw>) -> Result<(), SyncError> {
        let remote = card.fields.canonical(&self.region);
        let source = format!("from {}", self.remote.name());
        let id = self.store.create_synced_contact(self.user(), self.config.org_id, &remote, &source).await?;
        self.index.add(id, &remote, &self.region);
        self.contacts.insert(id, CrmContact { id, owner_user_id: self.user(), source, fields: remote.clone() });
        self.linked.insert(id);
        self.store.save_sync_item(self.user(), &card.id, &card.uid, id, &card.etag, SYNCED, Some(&remote), "").await?;
        self.report.created_in_crm += 1;
        Ok(())
    }

    /// The contacts of the organization a new card may be: those sharing its primary
    /// email, else its exact E.164 phone; never by name. Only this user's own contacts
    /// and unowned ones can be linked, and only if no other card is synced with them.
    fn candidates(&self, remote: &ContactFields, raw: &ContactFields) -> Candidates {
        let by_email = raw
            .emails
            .first()
            .and_then(|e| crate::address::normalize_email(e).ok())
            .and_then(|email| self.index.by_email.get(&email).cloned())
            .unwrap_or_default();
        let mut matches = if by_email.is_empty() {
            remote
                .phones
                .iter()
                .filter(|p| p.starts_with('+'))
                .flat_map(|p| self.index.by_phone.get(p))
                .flatten()
                .copied()
                .collect()
        } else {
            by_email
        };
        matches.sort();
        matches.dedup();
        let owner = |id: &i64| self.contacts.get(id).map_or(0, |c| c.owner_user_id);
        let (ours, colleagues): (Vec<i64>, Vec<i64>) =
            matches.into_iter().partition(|id| owner(id) == 0 || owner(id) == self.user());
        let (linked, free): (Vec<i64>, Vec<i64>) = ours.into_iter().partition(|id| self.linked.contains(id));
        if !free.is_empty() {
            Candidates::Free(free)
        } else if !linked.is_empty() {
            Candidates::Linked(linked)
        } else if !colleagues.is_empty() {
            Candidates::Colleagues(colleagues)
        } else {
            Candidates::None
        }
    }

    /// Brings a linked pair together: merge against `base` (the last synced copy; `None`
    /// for a pair just linked), write each side that differs from the result, record it.
    async fn reconcile(
        &mut self,
        contact_id: i64,
        base: Option<&ContactFields>,
        known_etag: Option<&str>,
        card: &RemoteCard<R::Raw>,
    ) -> Result<(), SyncError> {
        let Some(contact) = self.contacts.get(&contact_id) else {
            return Ok(()); // Deleted in the CRM: handled with the other CRM deletions.
        };
        let crm = contact.fields.canonical(&self.region);
        let remote = card.fields.canonical(&self.region);
        if base.is_some_and(|b| *b == crm && *b == remote) {
            if known_etag != Some(card.etag.as_str()) {
                self.store
                    .save_sync_item(self.user(), &card.id, &card.uid, contact_id, &card.etag, SYNCED, Some(&crm), "")
                    .await?;
            }
            self.report.unchanged += 1;
            return Ok(());
        }
        let made_in_crm = contact.source != format!("from {}", self.remote.name());
        let target = match self.config.direction {
            // The origin policy: a CRM-made contact's fields stand.
            Direction::TwoWay if self.config.conflict_policy == ConflictPolicy::Origin && made_in_crm => crm.clone(),
            Direction::TwoWay => {
                let merged = merge(base, &crm, &remote, self.config.conflict_policy);
                self.report.conflicts += merged.conflicts.len() as u64;
                merged.fields
            }
            Direction::CrmToRemote => crm.clone(),
            Direction::RemoteToCrm => remote.clone(),
        };
        let crm_differs = target != crm;
        if target != remote {
            // The CRM side and the record wait for the remote write's outcome.
            self.linked.insert(contact_id);
            // In the card's order: its primary email and phone stay first.
            self.updates.push((card.clone(), target.ordered_like(&card.fields, &self.region)));
            self.update_owners.push((contact_id, crm_differs));
            return Ok(());
        }
        self.finish_pair(contact_id, card, &card.etag, &target, crm_differs).await
    }

    /// Writes the CRM side if it differs and records the pair as synced.
    async fn finish_pair(
        &mut self,
        contact_id: i64,
        card: &RemoteCard<R::Raw>,
        etag: &str,
        target: &ContactFields,
        crm_differs: bool,
    ) -> Result<(), SyncError> {
        if crm_differs {
            // In the CRM's order: its primary email and phone stay first.
            let written = match self.contacts.get(&contact_id) {
                Some(c) => target.ordered_like(&c.fields, &self.region),
                None => target.clone(),
            };
            self.store.update_synced_contact(contact_id, &written).await?;
            if let Some(c) = self.contacts.get_mut(&contact_id) {
                c.fields = written;
            }
            self.report.updated_in_crm += 1;
        }
        // The synced copy is canonical (sorted), whatever order each side was written in.
        let synced = target.canonical(&self.region);
        self.store
            .save_sync_item(self.user(), &card.id, &card.uid, contact_id, etag, SYNCED, Some(&synced), "")
            .await?;
        Ok(())
    }

    /// Sends the queued remote updates, then finishes each pair that was written. A card
    /// changed remotely meanwhile is left for the next run, which merges again.
    async fn flush_updates(&mut self) -> Result<(), SyncError> {
        let updates = std::mem::take(&mut self.updates);
        let owners = std::mem::take(&mut self.update_owners);
        if updates.is_empty() {
            return Ok(());
        }
        let results = self.remote.update_batch(&updates).await;
        for (((card, target), (contact_id, crm_differs)), result) in updates.iter().zip(owners).zip(results) {
            match result {
                Ok(etag) => {
                    self.report.updated_remotely += 1;
                    self.finish_pair(contact_id, card, &etag, target, crm_differs).await?;
                }
                Err(RemoteError::Conflict(_)) => self.report.retried_later += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates owned CRM contacts remotely, each planned id recorded first.
    async fn create_remote(&mut self, batch: &[NewContact]) -> Result<(), SyncError> {
        for new in batch {
            self.store
                .save_sync_item(self.user(), &new.planned_id, &new.uid, new.contact_id, "", CREATING, None, "")
                .await?;
            self.linked.insert(new.contact_id);
        }
        let results = self.remote.create_batch(batch).await;
        for (new, result) in batch.iter().zip(results) {
            match result {
                Ok((id, etag)) => {
                    if id != new.planned_id {
                        self.store.delete_sync_item(self.user(), &new.planned_id).await?;
                    }
                    self.store
                        .save_sync_item(
                            self.user(),
                            &id,
                            &new.uid,
                            new.contact_id,
                            &etag,
                            SYNCED,
                            Some(&new.fields.canonical(&self.region)),
                            "",
                        )
                        .await?;
                    self.report.created_remotely += 1;
                }
                // It exists: an earlier run wrote it and died before recording that. Merge.
                Err(RemoteError::Conflict(_)) => {
                    let cards = self.remote.fetch(std::slice::from_ref(&new.planned_id)).await?;
                    if let Some(card) = cards.first() {
                        self.reconcile(new.contact_id, None, None, card).await?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A fresh vCard UID for a contact: random, so two CRMs never collide.
fn new_uid(contact_id: i64) -> Result<String, SyncError> {
    let mut bytes = [0u8; 12];
    crate::secrets::random_bytes(&mut bytes)
        .map_err(|e| SyncError::Store(StoreError::Invalid(format!("no randomness: {e}"))))?;
    Ok(format!("mailsync-{contact_id}-{}", hex::encode(bytes)))
}
