//! The SQLite and PostgreSQL migrations are one schema in two dialects: migrated from
//! scratch, both have the same tables, columns (type, NOT NULL) and indexes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::collections::BTreeMap;

use common::*;
use sqlx::Row;

/// table -> column -> (type class, NOT NULL); and the explicitly created index names.
type Schema = (BTreeMap<String, BTreeMap<String, (String, bool)>>, Vec<String>);

/// One name per storage class, whatever the dialect calls it.
fn type_class(declared: &str) -> String {
    let t = declared.to_ascii_lowercase();
    let class = match t.as_str() {
        "integer" | "bigint" | "smallint" | "int" | "int8" | "int4" => "integer",
        "text" | "character varying" | "varchar" => "text",
        "blob" | "bytea" => "bytes",
        "real" | "double precision" | "float8" => "float",
        "boolean" | "bool" => "boolean",
        _ => return format!("unmapped {t}"),
    };
    class.to_string()
}

async fn sqlite_schema(store: &mailsync::store::Store) -> Schema {
    let pool = store.pool();
    let mut tables = BTreeMap::new();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for table in names {
        let rows = sqlx::query("SELECT name, type, \"notnull\" AS nn, pk FROM pragma_table_info($1)")
            .bind(&table)
            .fetch_all(pool)
            .await
            .unwrap();
        let columns = rows
            .iter()
            .map(|r| {
                let name: String = r.get("name");
                // An INTEGER PRIMARY KEY is the rowid: never null, whatever it declares.
                let not_null = r.get::<i64, _>("nn") != 0 || r.get::<i64, _>("pk") != 0;
                (name, (type_class(&r.get::<String, _>("type")), not_null))
            })
            .collect();
        tables.insert(table, columns);
    }
    let mut indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'")
            .fetch_all(pool)
            .await
            .unwrap();
    indexes.sort();
    (tables, indexes)
}

async fn postgres_schema(store: &mailsync::store::Store) -> Schema {
    let pool = store.pool();
    let mut tables: BTreeMap<String, BTreeMap<String, (String, bool)>> = BTreeMap::new();
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, is_nullable::text AS n \
         FROM information_schema.columns WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for r in rows {
        let not_null = r.get::<String, _>("n") == "NO";
        tables.entry(r.get("t")).or_default().insert(r.get("c"), (type_class(&r.get::<String, _>("ty")), not_null));
    }
    // Indexes made by CREATE INDEX, not the ones behind PRIMARY KEY or UNIQUE constraints.
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes i WHERE schemaname = current_schema() \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    indexes.sort();
    (tables, indexes)
}

#[tokio::test]
async fn both_backends_migrate_to_the_same_schema() {
    let sqlite = TestDb::sqlite();
    let postgres = TestDb::postgres();
    let (lite_tables, lite_indexes) = sqlite_schema(&sqlite.store().await).await;
    let (pg_tables, pg_indexes) = postgres_schema(&postgres.store().await).await;
    assert!(lite_tables.len() > 10 && lite_indexes.len() > 10, "{lite_tables:?} {lite_indexes:?}");
    let mut differences = Vec::new();
    for table in lite_tables.keys().chain(pg_tables.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (lite, pg) = (lite_tables.get(table), pg_tables.get(table));
        let (Some(lite), Some(pg)) = (lite, pg) else {
            differences.push(format!("table {table}: sqlite {}, postgres {}", lite.is_some(), pg.is_some()));
            continue;
        };
        for column in lite.keys().chain(pg.keys()).collect::<std::collections::BTreeSet<_>>() {
            if lite.get(column) != pg.get(column) {
                differences.push(format!(
                    "{table}.{column}: sqlite {:?}, postgres {:?}",
                    lite.get(column),
                    pg.get(column)
                ));
            }
        }
    }
    if lite_indexes != pg_indexes {
        differences.push(format!("indexes: sqlite {lite_indexes:?}, postgres {pg_indexes:?}"));
    }
    assert!(differences.is_empty(), "the two schemas differ:\n{}", differences.join("\n"));
}
