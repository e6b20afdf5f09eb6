//! The store's lowest layer: helpers that build multi-row statements within the bind
//! parameter limits of both backends. Every other store module may use these; they use
//! nothing of the store but its dialect.

use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::{Backend, Result};

/// A bind value for the multi-row statements below.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
}

/// Most bind parameters per statement: below SQLite's limit (32766) and PostgreSQL's (65535).
pub(crate) const MAX_PARAMS: usize = 30_000;

/// Rows of `select` (which names a table with an `org_id` column) for one organization
/// whose `column` is one of `values`, in as few statements as the parameter limit allows.
pub(crate) async fn fetch_by_org_in(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    select: &str,
    column: &str,
    org_id: i64,
    values: &[&str],
) -> Result<Vec<AnyRow>> {
    let mut rows = Vec::new();
    for chunk in values.chunks(MAX_PARAMS - 1) {
        let mut sql = format!("{select} WHERE org_id = ");
        backend.placeholder(1, &mut sql);
        sql.push_str(&format!(" AND {column} IN ("));
        backend.placeholders(2, chunk.len(), &mut sql);
        sql.push(')');
        // Only placeholders and the caller's fixed identifiers are interpolated.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org_id);
        for value in chunk {
            query = query.bind(*value);
        }
        rows.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(rows)
}

/// Runs `head VALUES (...), (...) tail` over `rows`, chunked to stay under [`MAX_PARAMS`].
/// Returns the rows the statements returned (for a `RETURNING` tail). `head` and `tail`
/// must not contain placeholders.
pub(crate) async fn insert_rows<const N: usize>(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    head: &str,
    tail: &str,
    rows: &[[Value<'_>; N]],
) -> Result<Vec<AnyRow>> {
    let mut returned = Vec::new();
    for chunk in rows.chunks((MAX_PARAMS / N).max(1)) {
        let mut sql = String::with_capacity(head.len() + tail.len() + chunk.len() * N * 6);
        sql.push_str(head);
        for (r, _) in chunk.iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            backend.placeholders(r * N + 1, N, &mut sql);
            sql.push(')');
        }
        sql.push_str(tail);
        // Only placeholders are interpolated; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            for value in row {
                query = match *value {
                    Value::Int(v) => query.bind(v),
                    Value::Text(v) => query.bind(v),
                };
            }
        }
        returned.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(returned)
}

/// A JSON column's text read into `T`. Text that does not parse is corruption, reported
/// with `what` it belongs to, never read as an empty value.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| super::StoreError::Invalid(format!("{what} holds unreadable JSON: {e}")))
}
