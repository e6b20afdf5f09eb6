-- Message bodies are compressed by TOAST on insert; pglz costs more CPU than the whole
-- rest of an insert. lz4 is several times faster. Servers built without lz4 (or older
-- than PostgreSQL 14) keep the default.
DO $$
BEGIN
    ALTER TABLE messages ALTER COLUMN body_text SET COMPRESSION lz4,
                         ALTER COLUMN body_html SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 compression unavailable (%); message bodies keep the default', SQLERRM;
END
$$;
