//! The two backends' migration lists must build the same schema: a version
//! number is meant to name one schema on both, and nothing else checks that
//! a migration added to one list was added to the other alike.
//!
//! Both stores are migrated to the newest version through `Ledger`, then
//! described the same way from their catalogues: every table's columns
//! (name, kind of type, nullability), primary key and unique column sets,
//! every index created by name (columns, unique, partial) and every
//! trigger by name. Types are compared by kind, each engine's names mapped
//! strictly: SQLite's `INTEGER` (64-bit) is PostgreSQL's `BIGINT` or
//! `BOOLEAN`, `REAL` (64-bit) is `DOUBLE PRECISION`, `BLOB` is `BYTEA`; a
//! narrower PostgreSQL type (`INTEGER`, `REAL`) is a difference. Not
//! compared: defaults, CHECK constraints and trigger bodies, which the
//! engines spell too differently to match as text.

use std::collections::BTreeSet;

use crate::backends::{Backend, Fresh};

/// One fact about a schema, comparable across the engines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Fact {
    Column { table: String, column: String, kind: &'static str, not_null: bool },
    PrimaryKey { table: String, columns: Vec<String> },
    Unique { table: String, columns: Vec<String> },
    Index { table: String, name: String, columns: Vec<String>, unique: bool, partial: bool },
    Trigger { table: String, name: String },
}

/// The kind of an SQLite declared type, by the values it holds.
fn sqlite_kind(declared: &str) -> &'static str {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" => "integer",
        "REAL" => "float",
        "TEXT" => "text",
        "BLOB" => "bytes",
        other => panic!("an SQLite column type this test does not know: {other}"),
    }
}

/// The kind of a PostgreSQL type as `information_schema` names it. Types
/// narrower than SQLite's (`integer`, `real`, `smallint`) are their own
/// kinds, so a migration using one differs; the one sanctioned exception
/// is the single-row `ingest_batches.id` (always 1).
fn postgres_kind(table: &str, column: &str, declared: &str) -> &'static str {
    match (table, column, declared) {
        ("ingest_batches", "id", "integer") => "integer",
        (_, _, "bigint" | "boolean") => "integer",
        (_, _, "double precision") => "float",
        (_, _, "text") => "text",
        (_, _, "bytea") => "bytes",
        (_, _, "integer") => "32-bit integer",
        (_, _, "real") => "32-bit float",
        (_, _, other) => panic!("a PostgreSQL column type this test does not know: {other}"),
    }
}

fn sqlite_schema(path: &str) -> BTreeSet<Fact> {
    let db = rusqlite::Connection::open(path).unwrap();
    let strings = |sql: &str, arg: &str| -> Vec<Vec<String>> {
        let mut statement = db.prepare(sql).unwrap();
        let width = statement.column_count();
        let rows = statement
            .query_map([arg], |row| {
                (0..width)
                    .map(|i| {
                        let value: rusqlite::types::Value = row.get(i)?;
                        Ok(match value {
                            rusqlite::types::Value::Null => String::new(),
                            rusqlite::types::Value::Integer(n) => n.to_string(),
                            rusqlite::types::Value::Text(t) => t,
                            other => format!("{other:?}"),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let mut facts = BTreeSet::new();
    let tables = strings("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE ?1", "sqlite_%");
    for table in tables.iter().map(|r| r[0].clone()) {
        // cid, name, type, notnull, dflt_value, pk
        let columns = strings("SELECT * FROM pragma_table_info(?1)", &table);
        let mut primary: Vec<(i64, String)> = Vec::new();
        for c in &columns {
            let pk: i64 = c[5].parse().unwrap();
            if pk > 0 {
                primary.push((pk, c[1].clone()));
            }
            // A primary key column is never NULL, whatever SQLite's pragma says of it.
            let not_null = c[3] == "1" || pk > 0;
            facts.insert(Fact::Column {
                table: table.clone(),
                column: c[1].clone(),
                kind: sqlite_kind(&c[2]),
                not_null,
            });
        }
        primary.sort();
        if !primary.is_empty() {
            facts
                .insert(Fact::PrimaryKey { table: table.clone(), columns: primary.into_iter().map(|p| p.1).collect() });
        }
        // seq, name, unique, origin (c: CREATE INDEX, u: UNIQUE, pk), partial
        for index in strings("SELECT * FROM pragma_index_list(?1)", &table) {
            let columns: Vec<String> = strings("SELECT name FROM pragma_index_info(?1) ORDER BY seqno", &index[1])
                .into_iter()
                .map(|r| r[0].clone())
                .collect();
            match index[3].as_str() {
                "c" => facts.insert(Fact::Index {
                    table: table.clone(),
                    name: index[1].clone(),
                    columns,
                    unique: index[2] == "1",
                    partial: index[4] == "1",
                }),
                "u" => facts.insert(Fact::Unique { table: table.clone(), columns }),
                _ => false,
            };
        }
    }
    for trigger in strings("SELECT name, tbl_name FROM sqlite_master WHERE type = ?1", "trigger") {
        facts.insert(Fact::Trigger { table: trigger[1].clone(), name: trigger[0].clone() });
    }
    facts
}

fn postgres_schema(url: &str) -> BTreeSet<Fact> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut facts = BTreeSet::new();
    // `hush_schema` holds the version number, which SQLite keeps in `PRAGMA user_version`.
    let columns = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'NO'
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name <> 'hush_schema'",
            &[],
        )
        .unwrap();
    for row in columns {
        let (table, column, declared): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let kind = postgres_kind(&table, &column, &declared);
        facts.insert(Fact::Column { table, column, kind, not_null: row.get(3) });
    }
    // Every index: a primary key, a UNIQUE constraint's, or one created by name.
    let indexes = client
        .query(
            "SELECT t.relname::text, i.relname::text, ix.indisprimary, ix.indisunique,
                    ix.indpred IS NOT NULL,
                    EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid AND c.contype = 'u'),
                    ARRAY(SELECT a.attname::text FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n)
                          JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.n)
             FROM pg_index ix
             JOIN pg_class t ON t.oid = ix.indrelid
             JOIN pg_class i ON i.oid = ix.indexrelid
             JOIN pg_namespace ns ON ns.oid = t.relnamespace
             WHERE ns.nspname = current_schema() AND t.relname <> 'hush_schema'",
            &[],
        )
        .unwrap();
    for row in indexes {
        let (table, name): (String, String) = (row.get(0), row.get(1));
        let (primary, unique, partial, constraint): (bool, bool, bool, bool) =
            (row.get(2), row.get(3), row.get(4), row.get(5));
        let columns: Vec<String> = row.get(6);
        facts.insert(if primary {
            Fact::PrimaryKey { table, columns }
        } else if constraint {
            Fact::Unique { table, columns }
        } else {
            Fact::Index { table, name, columns, unique, partial }
        });
    }
    let triggers = client
        .query(
            "SELECT DISTINCT event_object_table::text, trigger_name::text FROM information_schema.triggers
             WHERE trigger_schema = current_schema()",
            &[],
        )
        .unwrap();
    for row in triggers {
        facts.insert(Fact::Trigger { table: row.get(0), name: row.get(1) });
    }
    facts
}

#[test]
fn both_migration_lists_build_the_same_schema() {
    let sqlite = Fresh::new(Backend::Sqlite);
    let postgres = Fresh::new(Backend::Postgres);
    // Opening migrates to the newest version.
    drop((sqlite.open(), postgres.open()));
    let lite = sqlite_schema(sqlite.url().trim_start_matches("sqlite://"));
    let pg = postgres_schema(postgres.url());
    let only = |a: &BTreeSet<Fact>, b: &BTreeSet<Fact>| a.difference(b).cloned().collect::<Vec<_>>();
    assert!(
        lite == pg,
        "the migrations disagree\nonly on SQLite: {:#?}\nonly on PostgreSQL: {:#?}",
        only(&lite, &pg),
        only(&pg, &lite)
    );
    // The description is not vacuous: every table of the newest schema is in it.
    let tables: BTreeSet<&str> = lite
        .iter()
        .filter_map(|f| match f {
            Fact::Column { table, .. } => Some(table.as_str()),
            _ => None,
        })
        .collect();
    for table in [
        "consent_records",
        "events",
        "suppressions",
        "erasure_log",
        "api_keys",
        "budget_caps",
        "budget_runs",
        "ingest_batches",
        "items",
    ] {
        assert!(tables.contains(table), "{table} is described: {tables:?}");
    }
    assert!(lite.iter().any(|f| matches!(f, Fact::Trigger { .. })), "the append-only trigger is described");
    assert!(lite.iter().any(|f| matches!(f, Fact::Index { partial: true, .. })), "the partial index is described");
}
