//! Everything that differs between SQLite and PostgreSQL, in one place. The rest of the
//! store writes one SQL text for both (`$N` placeholders, `BIGINT`/`INTEGER` ids, 0/1
//! flags, `ON CONFLICT`, `RETURNING`) and asks [`Backend`] for the few differences:
//! connection set-up, how a writing transaction begins, row locks for claims, placeholder
//! syntax in generated multi-row statements, and PostgreSQL's statistics and catalog.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run on every new SQLite connection.
pub(crate) const SQLITE_CONNECTION_SETUP: [&str; 7] = [
    // WAL lets the API read while a worker commits; NORMAL is durable in WAL mode except
    // for the last transactions on power loss.
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 10000",
    // Checkpoint every 64 MB of WAL instead of 4 MB: a bulk sync writes hundreds of MB,
    // and each checkpoint ends in an fsync.
    "PRAGMA wal_autocheckpoint = 16384",
    // Matching looks up every participant in the address index: with a million contacts
    // that index outgrows SQLite's default 2 MB cache. Pages come from the OS cache
    // through mmap, and 32 MB stay decoded.
    "PRAGMA cache_size = -32768",
    "PRAGMA mmap_size = 268435456",
];

impl Backend {
    pub fn is_postgres(self) -> bool {
        self == Backend::Postgres
    }

    /// How a transaction that will write begins. On SQLite it takes the write lock at
    /// BEGIN (IMMEDIATE): a deferred transaction that reads first fails at once with
    /// SQLITE_BUSY when another writer got in between, instead of waiting for the busy
    /// timeout.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// A statement that lets the current transaction commit without waiting for its WAL
    /// flush, for data the source still holds (IMAP batches); none on SQLite, whose
    /// `synchronous = NORMAL` already does so in WAL mode.
    pub(crate) fn relaxed_commit(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("SET LOCAL synchronous_commit = off"),
        }
    }

    /// Appended to a `SELECT` that claims rows, so concurrent claimers skip each other's
    /// (SQLite has one writer at a time and needs none).
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The `i`-th (1-based) bind placeholder. SQLite gets anonymous `?`: it resolves a
    /// named `$N` by scanning all parameter names, quadratic in a statement with thousands.
    pub(crate) fn placeholder(self, i: usize, sql: &mut String) {
        match self {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => {
                sql.push('$');
                sql.push_str(&i.to_string());
            }
        }
    }

    /// Appends `count` comma-separated placeholders numbered from `first`; returns the
    /// number of the next placeholder.
    pub(crate) fn placeholders(self, first: usize, count: usize, sql: &mut String) -> usize {
        for i in 0..count {
            if i > 0 {
                sql.push_str(", ");
            }
            self.placeholder(first + i, sql);
        }
        first + count
    }
}

/// Refreshes the planner's statistics of `tables` (comma-separated names).
pub(crate) fn analyze(tables: &str) -> String {
    format!("ANALYZE {tables}")
}

/// PostgreSQL: the ingest tables that changed by half their size since their last
/// statistics (and by at least 1,000 rows).
pub(crate) const STALE_INGEST_TABLES: &str = "SELECT relname::text FROM pg_stat_user_tables \
    WHERE schemaname = current_schema() \
    AND relname IN ('messages', 'participants', 'thread_refs', 'message_links', 'message_locations') \
    AND n_mod_since_analyze >= 1000 AND n_mod_since_analyze * 2 >= n_live_tup";

/// PostgreSQL: every table's columns (not sqlx's bookkeeping), in order.
pub(crate) const POSTGRES_COLUMNS: &str = "SELECT table_name::text AS t, column_name::text AS c, \
    data_type::text AS ty, is_identity::text AS ident FROM information_schema.columns \
    WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name, ordinal_position";

/// PostgreSQL: (child, parent) for every foreign key.
pub(crate) const POSTGRES_FOREIGN_KEYS: &str = "SELECT child.relname::text AS child, parent.relname::text AS parent \
    FROM pg_constraint c JOIN pg_class child ON child.oid = c.conrelid JOIN pg_class parent ON parent.oid = c.confrelid \
    JOIN pg_namespace n ON n.oid = child.relnamespace WHERE c.contype = 'f' AND n.nspname = current_schema()";

/// PostgreSQL: moves `table`'s identity sequence past the ids it holds.
pub(crate) fn continue_identity(table: &str, id: &str) -> String {
    format!("SELECT setval(pg_get_serial_sequence('{table}', '{id}'), COALESCE(MAX({id}), 0) + 1, false) FROM {table}")
}
