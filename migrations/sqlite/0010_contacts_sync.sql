-- Contacts sync (issue #7). Contact fields an address book carries beyond name, company,
-- emails and phones, and tags such as "deleted in CardDAV".
ALTER TABLE contacts ADD COLUMN ims TEXT NOT NULL DEFAULT '[]';             -- JSON array of IM URIs
ALTER TABLE contacts ADD COLUMN postal_address TEXT NOT NULL DEFAULT '';    -- street;locality;region;code;country
ALTER TABLE contacts ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';            -- JSON array
CREATE INDEX contacts_owner ON contacts (owner_user_id);

-- The sync configuration: one daemon at a time runs a user's sync (lease).
ALTER TABLE contact_sync_configs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE contact_sync_configs ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE contact_sync_configs ADD COLUMN run_requested INTEGER NOT NULL DEFAULT 0;

-- One row per remote contact the sync knows. contact_id has no foreign key: a deleted
-- CRM contact leaves its row as a tombstone (state crm_deleted), so the remote card is
-- never imported again.
DROP TABLE contact_sync_items;
CREATE TABLE contact_sync_items (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    contact_id  INTEGER NOT NULL DEFAULT 0,
    remote_id   TEXT    NOT NULL,                   -- CardDAV href, Google resourceName
    remote_uid  TEXT    NOT NULL DEFAULT '',        -- vCard UID
    etag        TEXT    NOT NULL DEFAULT '',
    -- creating (remote id chosen, write not confirmed) | synced | flagged (needs a person)
    -- | remote_deleted | crm_deleted
    state       TEXT    NOT NULL DEFAULT 'synced',
    synced_copy TEXT    NOT NULL DEFAULT '{}',      -- last synced mapped fields, canonical JSON
    synced_hash TEXT    NOT NULL DEFAULT '',
    note        TEXT    NOT NULL DEFAULT '',        -- why flagged
    updated_at  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (user_id, remote_id)
);
CREATE INDEX contact_sync_items_contact ON contact_sync_items (contact_id);
