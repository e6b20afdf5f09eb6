-- How many UIDs of the folder (under its UIDVALIDITY) the store accounts for: present
-- messages plus skipped ones. Kept in the same transactions as those rows, so that a
-- restart with nothing new is a constant-time check, whatever the folder's size.
ALTER TABLE folders ADD COLUMN known_uids INTEGER NOT NULL DEFAULT 0;
UPDATE folders SET known_uids =
    (SELECT COUNT(*) FROM message_locations l
      WHERE l.folder_id = folders.id AND l.uidvalidity = folders.uidvalidity AND l.removed_at = 0)
  + (SELECT COUNT(*) FROM skipped s
      WHERE s.folder_id = folders.id AND s.uidvalidity = folders.uidvalidity);
