//! Moving a store from SQLite to PostgreSQL (`mailsync store copy --to URL`): every row
//! of every table, ids included, in one PostgreSQL transaction, read from one SQLite
//! snapshot. Both stores are at the binary's schema version, so the target's catalog says
//! which tables and columns there are, their types, and the order foreign keys need.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Row};

use super::{Backend, Result, Store, StoreError, dialect};

/// Rows read and written per statement (fewer for wide tables: PostgreSQL takes at most
/// 65,535 parameters, and message bodies make rows large).
const PAGE_ROWS: usize = 200;
const MAX_PARAMS: usize = 30_000;

/// Rows copied per table, in copy order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopySummary {
    pub tables: Vec<TableCount>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableCount {
    pub table: String,
    pub rows: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ColumnType {
    Integer,
    Bytes,
    Text,
}

struct Table {
    name: String,
    columns: Vec<(String, ColumnType)>,
    /// The identity column whose sequence must continue after the copied ids.
    identity: Option<String>,
}

enum Value {
    Integer(Option<i64>),
    Bytes(Option<Vec<u8>>),
    Text(Option<String>),
}

impl Store {
    /// Copies this (SQLite) store into `target`, an empty PostgreSQL store at the same
    /// schema version; `progress(table, rows copied, rows)` is called as it goes. Nothing
    /// is written unless everything is.
    pub async fn copy_into(&self, target: &Store, mut progress: impl FnMut(&str, u64, u64)) -> Result<CopySummary> {
        if self.backend != Backend::Sqlite || target.backend != Backend::Postgres {
            return Err(StoreError::Invalid(
                "store copy moves a SQLite store to PostgreSQL (between PostgreSQL databases use its dump and restore)"
                    .into(),
            ));
        }
        let tables = target_tables(target).await?;
        let mut source = self.pool.begin().await?;
        let mut dest = target.pool.begin().await?;
        for table in &tables {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", table.name);
            if sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *dest).await? {
                return Err(StoreError::Conflict(format!(
                    "the target database is not empty (table {} has rows): copy into a new database",
                    table.name
                )));
            }
        }
        let mut summary = CopySummary { tables: Vec::new() };
        for table in &tables {
            let count_sql = format!("SELECT COUNT(*) FROM {}", table.name);
            let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql)).fetch_one(&mut *source).await?;
            let names: Vec<&str> = table.columns.iter().map(|(n, _)| n.as_str()).collect();
            let page = (MAX_PARAMS / names.len().max(1)).clamp(1, PAGE_ROWS);
            let select = format!(
                "SELECT rowid AS copy_rowid, {} FROM {} WHERE rowid > $1 ORDER BY rowid LIMIT {page}",
                names.join(", "),
                table.name
            );
            let mut last_rowid = i64::MIN;
            let mut copied = 0u64;
            progress(&table.name, 0, total as u64);
            loop {
                let rows =
                    sqlx::query(sqlx::AssertSqlSafe(select.clone())).bind(last_rowid).fetch_all(&mut *source).await?;
                let Some(last) = rows.last() else { break };
                last_rowid = last.try_get("copy_rowid")?;
                let mut args = AnyArguments::default();
                let mut tuples = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut placeholders = Vec::with_capacity(names.len());
                    for (name, kind) in &table.columns {
                        let value = read(row, name, *kind).map_err(|e| {
                            StoreError::Invalid(format!("{}.{name} (rowid {last_rowid}): {e}", table.name))
                        })?;
                        bind(&mut args, value)?;
                        placeholders.push(format!("${}", args.len()));
                    }
                    tuples.push(format!("({})", placeholders.join(", ")));
                }
                let insert = format!("INSERT INTO {} ({}) VALUES {}", table.name, names.join(", "), tuples.join(", "));
                sqlx::query_with::<Any, _>(sqlx::AssertSqlSafe(insert), args).execute(&mut *dest).await?;
                copied += rows.len() as u64;
                progress(&table.name, copied, total as u64);
            }
            if let Some(id) = &table.identity {
                // The next id PostgreSQL hands out follows the copied ones.
                let sql = dialect::continue_identity(&table.name, id);
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *dest).await?;
            }
            summary.tables.push(TableCount { table: table.name.clone(), rows: copied as i64 });
        }
        dest.commit().await?;
        source.rollback().await?;
        sqlx::query(sqlx::AssertSqlSafe(dialect::analyze(""))).execute(&target.pool).await?;
        Ok(summary)
    }
}

/// The target's tables (not sqlx's bookkeeping), parents before the tables that refer to
/// them, with their columns and identity column.
async fn target_tables(target: &Store) -> Result<Vec<Table>> {
    let rows = sqlx::query(dialect::POSTGRES_COLUMNS).fetch_all(&target.pool).await?;
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for row in rows {
        let name: String = row.try_get("t")?;
        let column: String = row.try_get("c")?;
        let ty: String = row.try_get("ty")?;
        let identity: String = row.try_get("ident")?;
        let kind = match ty.as_str() {
            "bigint" | "integer" | "smallint" => ColumnType::Integer,
            "bytea" => ColumnType::Bytes,
            "text" | "character varying" => ColumnType::Text,
            other => return Err(StoreError::Invalid(format!("{name}.{column}: column type {other} cannot be copied"))),
        };
        let table = tables.entry(name.clone()).or_insert_with(|| Table { name, columns: Vec::new(), identity: None });
        if identity == "YES" {
            table.identity = Some(column.clone());
        }
        table.columns.push((column, kind));
    }
    let edges = sqlx::query(dialect::POSTGRES_FOREIGN_KEYS).fetch_all(&target.pool).await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for edge in edges {
        let (child, parent): (String, String) = (edge.try_get("child")?, edge.try_get("parent")?);
        if child != parent {
            parents.entry(child).or_default().insert(parent);
        }
    }
    // Kahn's order: a table once all its parents are placed; BTreeMap keeps it stable.
    let mut ordered = Vec::with_capacity(tables.len());
    while !tables.is_empty() {
        let ready: Vec<String> = tables
            .keys()
            .filter(|t| parents.get(*t).is_none_or(|ps| ps.iter().all(|p| !tables.contains_key(p))))
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(StoreError::Invalid(format!("foreign keys form a cycle among {:?}", tables.keys())));
        }
        for name in ready {
            ordered.extend(tables.remove(&name));
        }
    }
    Ok(ordered)
}

fn read(row: &sqlx::any::AnyRow, name: &str, kind: ColumnType) -> std::result::Result<Value, sqlx::Error> {
    Ok(match kind {
        ColumnType::Integer => Value::Integer(row.try_get(name)?),
        ColumnType::Bytes => Value::Bytes(row.try_get(name)?),
        ColumnType::Text => Value::Text(row.try_get(name)?),
    })
}

fn bind(args: &mut AnyArguments, value: Value) -> Result<()> {
    let added = match value {
        Value::Integer(v) => args.add(v),
        Value::Bytes(v) => args.add(v),
        Value::Text(v) => args.add(v),
    };
    added.map_err(|e| StoreError::Invalid(format!("cannot bind a value: {e}")))
}
