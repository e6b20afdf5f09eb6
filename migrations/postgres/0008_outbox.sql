-- Per-recipient outcome of an outgoing message: [{"address", "state", "reply"}] with
-- state pending | accepted | rejected. A transiently refused recipient stays pending and
-- is retried alone; the message is sent when no recipient is pending.
ALTER TABLE outbox ADD COLUMN recipient_results TEXT NOT NULL DEFAULT '[]';
-- The copy in the user's Sent folder: '' (not due yet), pending, appended, provider
-- (the provider files it itself), or failed: <reason>.
ALTER TABLE outbox ADD COLUMN sent_copy TEXT NOT NULL DEFAULT '';
-- The stored message (messages.id) once sent, 0 before.
ALTER TABLE outbox ADD COLUMN stored_message BIGINT NOT NULL DEFAULT 0;
CREATE INDEX outbox_user_created ON outbox (user_id, created_at);
CREATE INDEX outbox_org_created ON outbox (org_id, created_at);
