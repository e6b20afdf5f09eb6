-- mailsync schema, SQLite dialect. Keep in step with migrations/postgres/0001_init.sql.
-- Conventions: every column NOT NULL with a default, except optional foreign keys;
-- times are unix milliseconds (0 = never); flags are integers 0/1.

CREATE TABLE organizations (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    settings    TEXT    NOT NULL DEFAULT '{}',   -- JSON: linking and auto-create options
    created_at  INTEGER NOT NULL DEFAULT 0
);

-- A CRM user; at most one mail account each.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email       TEXT    NOT NULL UNIQUE,          -- normalized
    name        TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL DEFAULT 0
);

-- A user's own addresses (aliases); they never match CRM records.
CREATE TABLE user_addresses (
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    address     TEXT    NOT NULL,
    PRIMARY KEY (user_id, address)
);

CREATE TABLE mail_accounts (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    email           TEXT    NOT NULL,
    imap_host       TEXT    NOT NULL,
    imap_port       INTEGER NOT NULL,
    imap_tls        TEXT    NOT NULL DEFAULT 'implicit',   -- implicit | starttls
    username        TEXT    NOT NULL,
    auth            TEXT    NOT NULL DEFAULT 'password',   -- password | xoauth2
    secret          BLOB    NOT NULL DEFAULT x'',          -- sealed password or refresh token
    oauth_provider  TEXT    NOT NULL DEFAULT '',
    ca_file         TEXT    NOT NULL DEFAULT '',
    smtp_host       TEXT    NOT NULL DEFAULT '',
    smtp_port       INTEGER NOT NULL DEFAULT 0,
    smtp_tls        TEXT    NOT NULL DEFAULT 'starttls',
    provider_saves_sent INTEGER NOT NULL DEFAULT 0,
    generation      INTEGER NOT NULL DEFAULT 1,            -- bumped on each settings change
    state           TEXT    NOT NULL DEFAULT 'new',
    error_class     TEXT    NOT NULL DEFAULT '',
    error_message   TEXT    NOT NULL DEFAULT '',
    error_at        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT    NOT NULL DEFAULT '',           -- daemon holding the account
    lease_until     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE folders (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES mail_accounts(id) ON DELETE CASCADE,
    role            TEXT    NOT NULL,                      -- inbox | sent
    name            TEXT    NOT NULL,                      -- exactly as LIST returned it
    uidvalidity     INTEGER NOT NULL DEFAULT 0,
    uidnext         INTEGER NOT NULL DEFAULT 0,
    highestmodseq   INTEGER NOT NULL DEFAULT 0,
    -- Committed UIDs form one range [synced_low_uid, synced_high_uid]: new mail extends
    -- the top, backfill (newest first) extends the bottom.
    synced_high_uid INTEGER NOT NULL DEFAULT 0,
    synced_low_uid  INTEGER NOT NULL DEFAULT 0,
    initial_sync_done INTEGER NOT NULL DEFAULT 0,
    server_messages INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account_id, role)
);

CREATE TABLE threads (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL DEFAULT 0
);

-- One row per distinct message per organization, whatever its source.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    message_id  TEXT    NOT NULL,      -- normalized Message-ID, or a digest when it has none
    subject     TEXT    NOT NULL DEFAULT '',
    sent_at     INTEGER NOT NULL DEFAULT 0,
    size        INTEGER NOT NULL DEFAULT 0,
    in_reply_to TEXT    NOT NULL DEFAULT '',
    refs        TEXT    NOT NULL DEFAULT '',   -- References, space separated
    gm_thrid    TEXT    NOT NULL DEFAULT '',
    thread_id   INTEGER REFERENCES threads(id) ON DELETE SET NULL,
    body_text   TEXT    NOT NULL DEFAULT '',
    body_html   TEXT    NOT NULL DEFAULT '',
    source      TEXT    NOT NULL DEFAULT 'imap',   -- imap | bcc_drop | outbound
    created_at  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (org_id, message_id)
);
CREATE INDEX messages_thread ON messages (thread_id);

-- Where a message sits on a server; removed_at is set when its UID is expunged.
CREATE TABLE message_locations (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    folder_id   INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    removed_at  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (folder_id, uidvalidity, uid)
);
CREATE INDEX message_locations_message ON message_locations (message_id);

CREATE TABLE participants (
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    role        TEXT    NOT NULL,      -- from | to | cc | bcc
    position    INTEGER NOT NULL,
    address     TEXT    NOT NULL,      -- normalized
    name        TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, role, position)
);
CREATE INDEX participants_address ON participants (address);

-- Attachments are metadata only; bodies are fetched on demand.
CREATE TABLE attachments (
    message_id   INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    part_id      TEXT    NOT NULL,
    filename     TEXT    NOT NULL DEFAULT '',
    content_type TEXT    NOT NULL DEFAULT '',
    size         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, part_id)
);

CREATE TABLE skipped (
    id          INTEGER PRIMARY KEY,
    folder_id   INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    recipients  INTEGER NOT NULL DEFAULT 0,
    size        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (folder_id, uidvalidity, uid)
);

CREATE TABLE leads (
    id            INTEGER PRIMARY KEY,
    org_id        INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL DEFAULT '',
    company       TEXT    NOT NULL DEFAULT '',
    status        TEXT    NOT NULL DEFAULT 'new',
    owner_user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    source        TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX leads_org ON leads (org_id);

CREATE TABLE contacts (
    id            INTEGER PRIMARY KEY,
    org_id        INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL DEFAULT '',
    company       TEXT    NOT NULL DEFAULT '',
    owner_user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    source        TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX contacts_org ON contacts (org_id);

CREATE TABLE deals (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    title       TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'open',   -- open | won | lost
    value_cents INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX deals_org ON deals (org_id);

-- The leads and contacts taking part in a deal.
CREATE TABLE deal_parties (
    deal_id     INTEGER NOT NULL REFERENCES deals(id) ON DELETE CASCADE,
    entity_kind TEXT    NOT NULL,      -- lead | contact
    entity_id   INTEGER NOT NULL,
    PRIMARY KEY (deal_id, entity_kind, entity_id)
);

-- Email addresses and phone numbers of leads and contacts, normalized for matching.
CREATE TABLE entity_addresses (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    entity_kind TEXT    NOT NULL,      -- lead | contact
    entity_id   INTEGER NOT NULL,
    kind        TEXT    NOT NULL,      -- email | phone
    value       TEXT    NOT NULL,
    is_primary  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (entity_kind, entity_id, kind, value)
);
CREATE INDEX entity_addresses_lookup ON entity_addresses (org_id, kind, value);

CREATE TABLE message_links (
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    entity_kind TEXT    NOT NULL,      -- lead | contact | deal
    entity_id   INTEGER NOT NULL,
    origin      TEXT    NOT NULL,      -- address | thread | manual
    state       TEXT    NOT NULL DEFAULT 'active',   -- active | dissociated (sticky)
    created_at  INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, entity_kind, entity_id)
);
CREATE INDEX message_links_entity ON message_links (entity_kind, entity_id);

CREATE TABLE thread_links (
    thread_id   INTEGER NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    entity_kind TEXT    NOT NULL,
    entity_id   INTEGER NOT NULL,
    origin      TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'active',
    created_at  INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, entity_kind, entity_id)
);
CREATE INDEX thread_links_entity ON thread_links (entity_kind, entity_id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    org_id          INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id      TEXT    NOT NULL UNIQUE,   -- fixed at enqueue time
    envelope_from   TEXT    NOT NULL,
    recipients      TEXT    NOT NULL DEFAULT '[]',   -- JSON array of addresses
    raw             BLOB    NOT NULL,
    link_kind       TEXT    NOT NULL DEFAULT '',
    link_id         INTEGER NOT NULL DEFAULT 0,
    status          TEXT    NOT NULL DEFAULT 'queued',   -- queued | sending | sent | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_reply      TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL DEFAULT 0,
    sent_at         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE drop_addresses (
    user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    token       TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE contact_sync_configs (
    user_id         INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    provider        TEXT    NOT NULL,           -- carddav | google
    settings        TEXT    NOT NULL DEFAULT '{}',
    secret          BLOB    NOT NULL DEFAULT x'',
    direction       TEXT    NOT NULL DEFAULT 'two-way',
    conflict_policy TEXT    NOT NULL DEFAULT 'crm-wins',
    interval_secs   INTEGER NOT NULL DEFAULT 900,
    sync_token      TEXT    NOT NULL DEFAULT '',
    last_sync_at    INTEGER NOT NULL DEFAULT 0,
    last_result     TEXT    NOT NULL DEFAULT '{}',
    last_error      TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE contact_sync_items (
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    contact_id  INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    remote_id   TEXT    NOT NULL,
    etag        TEXT    NOT NULL DEFAULT '',
    synced_copy TEXT    NOT NULL DEFAULT '{}',   -- last synced mapped fields, canonical JSON
    synced_hash TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, contact_id),
    UNIQUE (user_id, remote_id)
);
