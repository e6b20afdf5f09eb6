-- Every Message-ID a stored message has or refers to, and the thread it belongs to.
-- A reply that arrives before its parent registers the parent's id here, so the parent
-- joins the reply's thread when it comes.
CREATE TABLE thread_refs (
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    ref         TEXT    NOT NULL,
    thread_id   INTEGER NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, ref)
);
CREATE INDEX thread_refs_thread ON thread_refs (thread_id);
