-- PostgreSQL-only tuning (lz4 compression of message bodies); kept so both backends
-- share migration numbers.
SELECT 1;
