-- One row per message (and drop recipient) the BCC-drop listener received data for:
-- outcome imported | duplicate | refused | failed, with the reason in words.
CREATE TABLE drop_deliveries (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL DEFAULT 0,
    received_at     INTEGER NOT NULL DEFAULT 0,
    peer            TEXT    NOT NULL DEFAULT '',
    envelope_from   TEXT    NOT NULL DEFAULT '',
    header_from     TEXT    NOT NULL DEFAULT '',
    message_id      TEXT    NOT NULL DEFAULT '',
    size            INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT    NOT NULL DEFAULT '',
    reason          TEXT    NOT NULL DEFAULT '',
    stored_message  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX drop_deliveries_user ON drop_deliveries (user_id, id);
