//! House rules that no compiler checks, read from the source tree: SQL stays in the store
//! and per-backend SQL in its one module, every source file is on ARCHITECTURE.md's code
//! map, every migration exists for both backends, and every API route is documented.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root().join("src")).unwrap().to_string_lossy().into_owned();
            out.push((relative, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

fn src_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    files.sort();
    assert!(files.len() > 40, "the source tree was not found");
    files
}

/// The file without its `#[cfg(test)]` module (unit tests may do what `src/` may not).
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn only_the_store_talks_sql() {
    for (file, text) in src_files() {
        if !file.starts_with("store/") {
            assert!(!without_tests(&text).contains("sqlx"), "src/{file} uses sqlx: SQL belongs in src/store/");
        }
    }
}

#[test]
fn per_backend_sql_lives_in_the_dialect_module() {
    const DIALECT_MARKERS: [&str; 8] =
        ["PRAGMA", "sqlite_master", "pg_", "::text", "FOR UPDATE", "BEGIN IMMEDIATE", "ANALYZE", "synchronous_commit"];
    for (file, text) in src_files() {
        if file == "store/dialect.rs" {
            continue;
        }
        for marker in DIALECT_MARKERS {
            assert!(
                !without_tests(&text).contains(marker),
                "src/{file} contains `{marker}`: per-backend SQL belongs in src/store/dialect.rs"
            );
        }
    }
}

#[test]
fn every_source_file_is_on_the_code_map() {
    let map = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    for (file, _) in src_files() {
        let named = match file.rsplit_once('/') {
            Some((dir, name)) => map.contains(&file) || (map.contains(&format!("{dir}/")) && map.contains(name)),
            None => map.contains(&file),
        };
        assert!(named, "src/{file} is not named in docs/ARCHITECTURE.md's code map");
    }
}

#[test]
fn every_migration_exists_for_both_backends() {
    let names = |backend: &str| {
        let mut names: Vec<String> = std::fs::read_dir(root().join("migrations").join(backend))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (sqlite, postgres) = (names("sqlite"), names("postgres"));
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres must hold the same migrations");
}

#[test]
fn every_api_route_is_documented() {
    for (file, text) in src_files() {
        if file.starts_with("api/") {
            // utoipa-axum's `routes!` registers a handler and its #[utoipa::path] together;
            // a plain axum `.route(` would add an undocumented one.
            assert!(!text.contains(".route("), "src/{file} adds a route outside utoipa_axum::routes!");
        }
    }
}

#[test]
fn the_store_modules_form_layers_without_cycles() {
    // module -> the sibling modules it uses (`super::name`).
    let mut uses: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let files = src_files();
    let modules: Vec<String> = files
        .iter()
        .filter_map(|(f, _)| f.strip_prefix("store/")?.strip_suffix(".rs").map(String::from))
        .filter(|m| m != "mod")
        .collect();
    for (file, text) in &files {
        let Some(module) = file.strip_prefix("store/").and_then(|f| f.strip_suffix(".rs")) else { continue };
        if module == "mod" {
            continue;
        }
        let code = without_tests(text);
        let used = modules.iter().filter(|m| *m != module && code.contains(&format!("super::{m}::"))).cloned();
        uses.entry(module.to_string()).or_default().extend(used);
        // `use super::{a::x, b::y}` groups.
        for group in code.split("use super::{").skip(1) {
            let group = group.split("};").next().unwrap_or_default();
            for m in &modules {
                if m != module && group.contains(&format!("{m}::")) {
                    uses.get_mut(module).unwrap().insert(m.clone());
                }
            }
        }
    }
    // Peel off modules that use nothing left; what remains is a cycle.
    let mut left = uses.clone();
    while !left.is_empty() {
        let free: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(!free.is_empty(), "the store modules use each other in a cycle: {left:?}");
        for m in free {
            left.remove(&m);
        }
    }
}

#[test]
fn messages_are_parsed_in_one_place() {
    for (file, text) in src_files() {
        if file.starts_with("ingest/") {
            continue;
        }
        for parser in ["MessageParser", "parse_raw(", "parse_parts("] {
            assert!(
                !text.contains(parser),
                "src/{file} parses mail (`{parser}`): every message goes through ingest::prepare"
            );
        }
    }
}
