-- When the current initial-sync pass of a folder began, and how many of its messages
-- were accounted for (stored or skipped) then: status derives the rate and the ETA.
ALTER TABLE folders ADD COLUMN backfill_started_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE folders ADD COLUMN backfill_base BIGINT NOT NULL DEFAULT 0;
