-- A Sent-folder copy that could not be filed (server down, password changed, ...) is
-- tried again on the outbound retry schedule: attempts so far and when the next is due.
ALTER TABLE outbox ADD COLUMN sent_copy_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN sent_copy_retry_at INTEGER NOT NULL DEFAULT 0;
