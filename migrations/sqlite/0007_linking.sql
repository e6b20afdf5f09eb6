-- Matching compares match keys: the normalized address with the organization's optional
-- equivalence rules (+tags, Gmail dots) applied. Both off by default, so key = address.
ALTER TABLE participants ADD COLUMN match_key TEXT NOT NULL DEFAULT '';
UPDATE participants SET match_key = address;
DROP INDEX participants_address;
CREATE INDEX participants_match_key ON participants (match_key);

ALTER TABLE entity_addresses ADD COLUMN match_key TEXT NOT NULL DEFAULT '';
UPDATE entity_addresses SET match_key = value;
CREATE INDEX entity_addresses_match ON entity_addresses (org_id, kind, match_key);

-- Mail the account owner sent (Sent folder, outbound, BCC drop): its Bcc links too.
ALTER TABLE messages ADD COLUMN outgoing INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET outgoing = 1 WHERE source <> 'imap' OR EXISTS (
    SELECT 1 FROM message_locations l JOIN folders f ON f.id = l.folder_id
    WHERE l.message_id = messages.id AND f.role = 'sent');

-- Retroactive linking to do: a lead or contact got new addresses. Written in the same
-- transaction as the addresses; the daemon's relinker works through it in the background.
CREATE TABLE relink_jobs (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    entity_kind TEXT    NOT NULL,
    entity_id   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL DEFAULT 0
);
