//! The SQLite consent ledger and event store.
//!
//! Durability settings are deliberate: WAL with `synchronous=FULL`, so a write
//! that returned has reached the disk and survives a crash; `secure_delete`,
//! so an erased subject's bytes are overwritten rather than left in free
//! pages; and a `TRUNCATE` checkpoint after every erasure, so the write-ahead
//! log does not keep older copies of the erased rows.
//!
//! Rows are found through `subject_key`, a 64-bit one-way digest of the
//! pseudonym, rather than through an index on the pseudonym itself: interior
//! pages of a B-tree index keep copies of keys that were deleted from its
//! leaves, and those copies must not be the pseudonym. Copies of the row key
//! itself may outlive an erasure in unused page space; that is deliberate
//! and documented in the README ("What erasure deliberately does not
//! remove"): it links to a raw id only with the store key, and says no more
//! than the suppression entry does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::catalogue::{classify, CatalogueItem, Change, ItemUpsertReport};
use crate::ledger::{ConsentStatus, ErasureReceipt, IngestOutcome, LedgerStats};
use crate::pseudonym::SuppressionTag;
use crate::{
    ConsentChange, ConsentRecord, ConsentSource, Decision, Error, Event, EventKind, Pseudonym, Purpose, Result,
    SubjectEvent, Timestamp,
};

/// Schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    // 1: consent history, events, suppression list, erasure log.
    "CREATE TABLE consent_records (
         id INTEGER PRIMARY KEY,
         subject_key INTEGER NOT NULL,
         subject BLOB NOT NULL,
         purpose TEXT NOT NULL,
         granted INTEGER NOT NULL,
         effective_at INTEGER NOT NULL,
         recorded_at INTEGER NOT NULL,
         source TEXT NOT NULL,
         notice_version TEXT NOT NULL,
         proof_ref TEXT
     );
     CREATE INDEX consent_by_subject ON consent_records (subject_key, purpose, effective_at);
     CREATE TRIGGER consent_history_is_append_only BEFORE UPDATE ON consent_records
     BEGIN SELECT RAISE(ABORT, 'consent history is append-only'); END;
     CREATE TABLE events (
         id INTEGER PRIMARY KEY,
         subject_key INTEGER NOT NULL,
         subject BLOB NOT NULL,
         item TEXT NOT NULL,
         kind TEXT NOT NULL,
         value REAL NOT NULL,
         at INTEGER NOT NULL
     );
     CREATE INDEX events_by_subject ON events (subject_key, at);
     CREATE TABLE suppressions (tag BLOB PRIMARY KEY, erased_at INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE erasure_log (
         id INTEGER PRIMARY KEY,
         erased_at INTEGER NOT NULL,
         consent_records_deleted INTEGER NOT NULL,
         events_deleted INTEGER NOT NULL
     );",
    // 2: API keys of the serving API (only a SHA-256 of each secret is kept).
    "CREATE TABLE api_keys (
         id INTEGER PRIMARY KEY,
         key_id TEXT NOT NULL UNIQUE,
         name TEXT NOT NULL,
         secret_sha256 BLOB NOT NULL,
         scopes TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         revoked_at INTEGER
     );",
    // 3: the privacy budget ledger: lifetime caps and every DP training run.
    "CREATE TABLE budget_caps (
         dataset TEXT NOT NULL,
         purpose TEXT NOT NULL,
         epsilon REAL NOT NULL,
         delta REAL NOT NULL,
         rho REAL NOT NULL,
         set_at INTEGER NOT NULL,
         PRIMARY KEY (dataset, purpose)
     );
     CREATE TABLE budget_runs (
         id INTEGER PRIMARY KEY,
         run_key TEXT NOT NULL UNIQUE,
         dataset TEXT NOT NULL,
         purpose TEXT NOT NULL,
         model_id TEXT,
         epsilon REAL,
         delta REAL,
         rho REAL,
         snapshot_at INTEGER NOT NULL,
         state TEXT NOT NULL,
         created_at INTEGER NOT NULL
     );
     CREATE INDEX budget_runs_by_dataset ON budget_runs (dataset, purpose);",
    // 4: whether an erased subject was known; an erasure of an id never seen
    // blocks imports, not an explicit opt-in.
    "ALTER TABLE suppressions ADD COLUMN subject_was_known INTEGER NOT NULL DEFAULT 1;",
    // 5: one row counting ingested batches: every batch writes it, so every
    // batch commits durably alike, whoever its events belong to.
    "CREATE TABLE ingest_batches (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         batches INTEGER NOT NULL,
         events INTEGER NOT NULL
     );",
    // 6: idempotent event imports: the source's event id (NULL without one)
    // and its 64-bit key (a digest of pseudonym and id, see `event_key`).
    // Events without an id are found by content through `events_by_subject`.
    "ALTER TABLE events ADD COLUMN event_id TEXT;
     ALTER TABLE events ADD COLUMN event_key INTEGER;
     CREATE INDEX events_by_event_key ON events (subject_key, event_key) WHERE event_key IS NOT NULL;",
    // 7: the item catalogue, the public item universe (titles, categories,
    // other attributes as JSON text), upserted by item id.
    "CREATE TABLE items (
         item_id TEXT PRIMARY KEY,
         title TEXT,
         category TEXT,
         attributes TEXT NOT NULL,
         updated_at INTEGER NOT NULL
     ) WITHOUT ROWID;",
];

/// The newest schema version this build understands.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The consent ledger and event store on one SQLite file.
pub(crate) struct SqliteStore {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

/// The 64-bit index key of a subject's rows (see the module docs for why it is not the pseudonym).
pub(crate) fn subject_key(subject: &Pseudonym) -> i64 {
    let digest = Sha256::new_with_prefix(b"hush/row-key/v1\0").chain_update(subject.as_bytes()).finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and migrates its schema.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails; [`Error::SchemaTooNew`] if the file
    /// was written by a newer hush.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
        }
        // Owner-only before SQLite opens it: the WAL and shared-memory files
        // SQLite creates beside it take the database file's mode.
        crate::files::prepare_owner_only(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                crate::files::prepare_owner_only(&side).map_err(|source| Error::Io { path: side.clone(), source })?;
            }
        }
        let conn = Connection::open(&path).map_err(Error::db(&path))?;
        let mut ledger = SqliteStore { conn, path };
        ledger.configure()?;
        ledger.migrate()?;
        Ok(ledger)
    }

    fn configure(&self) -> Result<()> {
        let db = Error::db(&self.path);
        self.conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(Error::db(&self.path))?;
        let mode: String =
            self.conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(Error::db(&self.path))?;
        debug_assert_eq!(mode.to_ascii_lowercase(), "wal");
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;")
            .map_err(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::db(&path))?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(Error::db(&path))?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew { path, found, supported: SCHEMA_VERSION });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(Error::db(&path))?;
            tx.pragma_update(None, "user_version", index as i64 + 1).map_err(Error::db(&path))?;
            tracing::info!(version = index + 1, "applied ledger schema migration");
        }
        tx.commit().map_err(Error::db(&path))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version on disk.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(Error::db(&self.path))
    }

    /// Starts a batch of writes that commit together or not at all.
    ///
    /// Bulk imports use one batch for a whole file, so a failed import leaves
    /// the store exactly as it was.
    ///
    /// # Errors
    /// [`Error::Store`] if the write lock cannot be taken.
    pub fn batch(&mut self) -> Result<SqliteBatch<'_>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::db(&self.path))?;
        Ok(SqliteBatch { tx, path: &self.path, allowed_cache: HashMap::new(), suppressed_cache: HashMap::new() })
    }

    /// The consent state of `subject` for `purpose` at `as_of` (see [`crate::rule`]).
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn status(&self, subject: &Pseudonym, purpose: Purpose, as_of: Timestamp) -> Result<ConsentStatus> {
        status_on(&self.conn, &self.path, subject, purpose, as_of)
    }

    /// The full consent history of a subject, in the order it was recorded.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn history(&self, subject: &Pseudonym) -> Result<Vec<ConsentRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref
                 FROM consent_records WHERE subject_key = ?1 AND subject = ?2
                 ORDER BY id",
            )
            .map_err(Error::db(&self.path))?;
        let rows = stmt
            .query_map(params![subject_key(subject), subject.as_bytes()], record_from_row)
            .map_err(Error::db(&self.path))?;
        collect_rows(rows, &self.path)
    }

    /// Every stored event of a subject, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn events_of(&self, subject: &Pseudonym) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT item, kind, value, at FROM events
                 WHERE subject_key = ?1 AND subject = ?2 ORDER BY at, id",
            )
            .map_err(Error::db(&self.path))?;
        let rows = stmt
            .query_map(params![subject_key(subject), subject.as_bytes()], event_from_row)
            .map_err(Error::db(&self.path))?;
        collect_rows(rows, &self.path)
    }

    /// The subject's `limit` most recent events, newest first (ties by
    /// arrival): a backward walk of the subject's range of `events_by_subject`
    /// that stops after `limit` rows.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn recent_events(&self, subject: &Pseudonym, limit: usize) -> Result<Vec<Event>> {
        // The limit is part of the text, not a bound parameter: SQLite
        // prepares a statement with a bound LIMIT afresh on every run, which
        // cost more than reading the rows. One cached statement per limit.
        let limit = limit.min(i64::MAX as usize);
        let sql = format!(
            "SELECT item, kind, value, at FROM events
             WHERE subject_key = ?1 AND subject = ?2 ORDER BY at DESC, id DESC LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(Error::db(&self.path))?;
        let rows = stmt
            .query_map(params![subject_key(subject), subject.as_bytes()], event_from_row)
            .map_err(Error::db(&self.path))?;
        collect_rows(rows, &self.path)
    }

    /// Whether the subject was erased and is on the suppression list.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn is_suppressed(&self, subject: &Pseudonym) -> Result<bool> {
        is_suppressed_on(&self.conn, &self.path, subject)
    }

    /// Lifts the suppression of an erased subject who opts in afresh.
    ///
    /// Suppression exists to stop stale backfills from bringing an erased
    /// person back; a new, explicit opt-in by that person is a different
    /// matter, and the operator lifts the suppression knowingly.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn lift_suppression(&mut self, subject: &Pseudonym) -> Result<bool> {
        let deleted = self
            .conn
            .execute("DELETE FROM suppressions WHERE tag = ?1", [&subject.suppression_tag().0[..]])
            .map_err(Error::db(&self.path))?;
        Ok(deleted > 0)
    }

    /// Erases a subject: deletes every consent record and event in one
    /// transaction, adds a suppression entry, and truncates the write-ahead log.
    ///
    /// Erasing a subject who is already suppressed and holds nothing is not an
    /// error; the receipt then counts zero rows.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails; nothing is deleted then.
    pub fn erase(&mut self, subject: &Pseudonym, now: Timestamp) -> Result<ErasureReceipt> {
        let db = Error::db(&self.path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::db(&self.path))?;
        let key = subject_key(subject);
        let consent_records_deleted = tx
            .execute(
                "DELETE FROM consent_records WHERE subject_key = ?1 AND subject = ?2",
                params![key, subject.as_bytes()],
            )
            .map_err(Error::db(&self.path))? as u64;
        let events_deleted = tx
            .execute("DELETE FROM events WHERE subject_key = ?1 AND subject = ?2", params![key, subject.as_bytes()])
            .map_err(Error::db(&self.path))? as u64;
        let known = consent_records_deleted > 0
            || events_deleted > 0
            || suppression_on(&tx, &self.path, subject)? == Some(true);
        tx.execute(
            "INSERT INTO suppressions (tag, erased_at, subject_was_known) VALUES (?1, ?2, ?3)
             ON CONFLICT (tag) DO UPDATE SET subject_was_known = max(subject_was_known, excluded.subject_was_known)",
            params![&subject.suppression_tag().0[..], now.as_unix_millis(), known],
        )
        .map_err(Error::db(&self.path))?;
        tx.execute(
            "INSERT INTO erasure_log (erased_at, consent_records_deleted, events_deleted) VALUES (?1, ?2, ?3)",
            params![now.as_unix_millis(), consent_records_deleted as i64, events_deleted as i64],
        )
        .map_err(Error::db(&self.path))?;
        tx.commit().map_err(db)?;
        let wal_truncated = self.truncate_wal()?;
        tracing::info!(subject = %subject.short(), consent_records_deleted, events_deleted, "erased subject");
        Ok(ErasureReceipt {
            erased_at: now,
            consent_records_deleted,
            events_deleted,
            suppressed: true,
            wal_truncated,
            subject_was_known: known,
        })
    }

    /// Checkpoints the write-ahead log into the database and truncates it to zero bytes.
    fn truncate_wal(&self) -> Result<bool> {
        let busy: i64 =
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).map_err(Error::db(&self.path))?;
        Ok(busy == 0)
    }

    /// Calls `visit` for every stored event in ingestion order, streaming.
    ///
    /// # Errors
    /// Whatever `visit` returns, or [`Error::Store`] if SQLite fails.
    pub fn for_each_event<E: From<Error>>(
        &self,
        mut visit: impl FnMut(SubjectEvent) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut stmt = self
            .conn
            .prepare("SELECT subject, item, kind, value, at FROM events ORDER BY id")
            .map_err(Error::db(&self.path))?;
        let mut rows = stmt.query([]).map_err(Error::db(&self.path))?;
        while let Some(row) = rows.next().map_err(Error::db(&self.path))? {
            let subject = pseudonym_from_row(row, 0).map_err(Error::db(&self.path))?;
            let event = event_from_offset(row, 1).map_err(Error::db(&self.path))?;
            visit(SubjectEvent { subject, event, event_id: None })?;
        }
        Ok(())
    }

    /// Calls `visit(subject, decision)` for every decision on `purpose`, in
    /// ledger order (a plain table scan: callers that need another order sort
    /// in memory, much faster than asking SQLite to sort the ledger).
    ///
    /// # Errors
    /// Whatever `visit` returns, or [`Error::Store`] if SQLite fails.
    pub fn for_each_consent_decision<E: From<Error>>(
        &self,
        purpose: Purpose,
        mut visit: impl FnMut(Pseudonym, Decision) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT subject, effective_at, id, granted, recorded_at FROM consent_records
                 WHERE purpose = ?1 ORDER BY id",
            )
            .map_err(Error::db(&self.path))?;
        let mut rows = stmt.query([purpose.as_str()]).map_err(Error::db(&self.path))?;
        while let Some(row) = rows.next().map_err(Error::db(&self.path))? {
            let db = Error::db(&self.path);
            let subject = pseudonym_from_row(row, 0).map_err(Error::db(&self.path))?;
            let decision = (|| {
                Ok::<_, rusqlite::Error>(Decision {
                    effective_at: Timestamp::from_unix_millis(row.get(1)?),
                    seq: row.get(2)?,
                    granted: row.get(3)?,
                    recorded_at: Timestamp::from_unix_millis(row.get(4)?),
                })
            })()
            .map_err(db)?;
            visit(subject, decision)?;
        }
        Ok(())
    }

    /// Stores a new API key record (the secret itself is never stored).
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails (e.g. a duplicate key id).
    pub fn insert_api_key(&mut self, key: &crate::keys::ApiKeyRecord, secret_sha256: &[u8; 32]) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO api_keys (key_id, name, secret_sha256, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.key_id,
                    key.name,
                    &secret_sha256[..],
                    key.scopes.join(","),
                    key.created_at.as_unix_millis()
                ],
            )
            .map_err(Error::db(&self.path))?;
        Ok(())
    }

    /// The key record and secret digest of `key_id`, revoked or not.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn api_key(&self, key_id: &str) -> Result<Option<(crate::keys::ApiKeyRecord, [u8; 32])>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key_id, name, scopes, created_at, revoked_at, secret_sha256 FROM api_keys WHERE key_id = ?1",
            )
            .map_err(Error::db(&self.path))?;
        stmt.query_row([key_id], |row| {
            let digest: Vec<u8> = row.get(5)?;
            let digest: [u8; 32] =
                digest.try_into().map_err(|_| conversion_error(5, "stored key digest is not 32 bytes".into()))?;
            Ok((api_key_from_row(row)?, digest))
        })
        .optional()
        .map_err(Error::db(&self.path))
    }

    /// Every API key record, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn api_keys(&self) -> Result<Vec<crate::keys::ApiKeyRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY id")
            .map_err(Error::db(&self.path))?;
        let rows = stmt.query_map([], api_key_from_row).map_err(Error::db(&self.path))?;
        collect_rows(rows, &self.path)
    }

    /// Revokes a key; returns whether an active key was revoked.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn revoke_api_key(&mut self, key_id: &str, now: Timestamp) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                params![key_id, now.as_unix_millis()],
            )
            .map_err(Error::db(&self.path))?;
        Ok(changed > 0)
    }

    /// The whole suppression list.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn suppression_tags(&self) -> Result<HashSet<SuppressionTag>> {
        let mut stmt = self.conn.prepare("SELECT tag FROM suppressions").map_err(Error::db(&self.path))?;
        let rows = stmt
            .query_map([], |row| {
                let bytes: Vec<u8> = row.get(0)?;
                let tag: [u8; 32] = bytes.try_into().map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Blob,
                        "suppression tag is not 32 bytes".into(),
                    )
                })?;
                Ok(SuppressionTag(tag))
            })
            .map_err(Error::db(&self.path))?;
        rows.collect::<rusqlite::Result<HashSet<_>>>().map_err(Error::db(&self.path))
    }

    /// Counts of what the store holds.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn stats(&self) -> Result<LedgerStats> {
        let count = |sql: &str| -> Result<u64> {
            self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(Error::db(&self.path))
        };
        Ok(LedgerStats {
            subjects_with_consent: count("SELECT COUNT(DISTINCT subject) FROM consent_records")?,
            consent_records: count("SELECT COUNT(*) FROM consent_records")?,
            events: count("SELECT COUNT(*) FROM events")?,
            suppressed_subjects: count("SELECT COUNT(*) FROM suppressions")?,
            erasures: count("SELECT COUNT(*) FROM erasure_log")?,
            ingested_batches: count("SELECT COALESCE(MAX(batches), 0) FROM ingest_batches")?,
        })
    }

    /// See [`crate::Ledger::upsert_items`].
    pub fn upsert_items(&mut self, items: &[CatalogueItem], now: Timestamp) -> Result<ItemUpsertReport> {
        let path = self.path.clone();
        let db = || Error::db(&path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db())?;
        let stored = {
            let mut statement = tx.prepare("SELECT item_id, title, category, attributes FROM items").map_err(db())?;
            let rows = statement
                .query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))))
                .map_err(db())?;
            rows.collect::<rusqlite::Result<HashMap<_, _>>>().map_err(db())?
        };
        let mut report = ItemUpsertReport::default();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO items (item_id, title, category, attributes, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db())?;
            let mut update = tx
                .prepare(
                    "UPDATE items SET title = ?2, category = ?3, attributes = ?4, updated_at = ?5 WHERE item_id = ?1",
                )
                .map_err(db())?;
            for item in items {
                let change = classify(&stored, item);
                let values = params![item.id, item.title, item.category, item.attributes_json(), now.as_unix_millis()];
                match change {
                    Change::Insert => {
                        insert.execute(values).map_err(db())?;
                        report.inserted += 1;
                    }
                    Change::Update => {
                        update.execute(values).map_err(db())?;
                        report.updated += 1;
                    }
                    Change::Unchanged => report.unchanged += 1,
                }
            }
        }
        tx.commit().map_err(db())?;
        Ok(report)
    }

    /// See [`crate::Ledger::catalogue_items`].
    pub fn catalogue_items(&self) -> Result<Vec<CatalogueItem>> {
        let db = Error::db(&self.path);
        let mut statement = self
            .conn
            .prepare_cached("SELECT item_id, title, category, attributes FROM items ORDER BY item_id")
            .map_err(Error::db(&self.path))?;
        let rows = statement
            .query_map([], |r| {
                let attributes: String = r.get(3)?;
                let attributes = match serde_json::from_str(&attributes) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => return Err(conversion_error(3, "stored item attributes are not a JSON object".into())),
                };
                Ok(CatalogueItem { id: r.get(0)?, title: r.get(1)?, category: r.get(2)?, attributes })
            })
            .map_err(Error::db(&self.path))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }
}

/// Writes that commit together or not at all; dropping it without
/// [`WriteBatch::commit`] rolls everything back.
pub(crate) struct SqliteBatch<'a> {
    tx: Transaction<'a>,
    path: &'a Path,
    /// Whether a subject may have events stored, per subject, for this batch.
    /// Whether a subject had some purpose granted at a time (batches of
    /// one group are each decided at their own arrival time).
    allowed_cache: HashMap<(Pseudonym, Timestamp), bool>,
    suppressed_cache: HashMap<Pseudonym, bool>,
}

impl SqliteBatch<'_> {
    fn suppressed(&mut self, subject: &Pseudonym) -> Result<bool> {
        if let Some(&s) = self.suppressed_cache.get(subject) {
            return Ok(s);
        }
        let s = is_suppressed_on(&self.tx, self.path, subject)?;
        self.suppressed_cache.insert(*subject, s);
        Ok(s)
    }

    /// See [`crate::WriteBatch::holds_consent_record`].
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn holds_consent_record(&mut self, subject: &Pseudonym, change: &ConsentChange) -> Result<bool> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT 1 FROM consent_records
                 WHERE subject_key = ?1 AND subject = ?2 AND purpose = ?3 AND effective_at = ?4 AND granted = ?5
                   AND source = ?6 AND notice_version = ?7 AND proof_ref IS ?8
                 LIMIT 1",
            )
            .map_err(Error::db(self.path))?;
        stmt.exists(params![
            subject_key(subject),
            subject.as_bytes(),
            change.purpose.as_str(),
            change.effective_at.as_unix_millis(),
            change.granted,
            change.source.as_str(),
            change.notice_version,
            change.proof_ref,
        ])
        .map_err(Error::db(self.path))
    }

    /// Appends one consent decision. See [`crate::Ledger::record_consent`].
    ///
    /// # Errors
    /// As [`crate::Ledger::record_consent`].
    pub fn record_consent(
        &mut self,
        subject: &Pseudonym,
        change: &ConsentChange,
        recorded_at: Timestamp,
    ) -> Result<ConsentRecord> {
        change.validate_at(recorded_at)?;
        if self.suppressed(subject)? {
            if !crate::ledger::opt_in_lifts(change, suppression_on(&self.tx, self.path, subject)?) {
                return Err(Error::Suppressed);
            }
            self.tx
                .execute("DELETE FROM suppressions WHERE tag = ?1", [&subject.suppression_tag().0[..]])
                .map_err(Error::db(self.path))?;
            self.suppressed_cache.insert(*subject, false);
        }
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO consent_records
                 (subject_key, subject, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(Error::db(self.path))?;
        stmt.execute(params![
            subject_key(subject),
            subject.as_bytes(),
            change.purpose.as_str(),
            change.granted,
            change.effective_at.as_unix_millis(),
            recorded_at.as_unix_millis(),
            change.source.as_str(),
            change.notice_version,
            change.proof_ref,
        ])
        .map_err(Error::db(self.path))?;
        let seq = self.tx.last_insert_rowid();
        self.allowed_cache.retain(|(s, _), _| s != subject);
        Ok(ConsentRecord {
            seq,
            purpose: change.purpose,
            granted: change.granted,
            effective_at: change.effective_at,
            recorded_at,
            source: change.source,
            notice_version: change.notice_version.clone(),
            proof_ref: change.proof_ref.clone(),
        })
    }

    /// Stores one event if its subject has some purpose granted at `now`.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn ingest_event(&mut self, event: &SubjectEvent, now: Timestamp) -> Result<IngestOutcome> {
        let subject = &event.subject;
        if self.suppressed(subject)? {
            return Ok(IngestOutcome::Suppressed);
        }
        let allowed = match self.allowed_cache.get(&(*subject, now)) {
            Some(&allowed) => allowed,
            None => {
                let mut allowed = false;
                for purpose in Purpose::ALL {
                    allowed |= status_on(&self.tx, self.path, subject, purpose, now)?.is_granted();
                }
                self.allowed_cache.insert((*subject, now), allowed);
                allowed
            }
        };
        if !allowed {
            return Ok(IngestOutcome::NoConsent);
        }
        if let Some(outcome) = self.held(event)? {
            return Ok(outcome);
        }
        let e = &event.event;
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO events (subject_key, subject, item, kind, value, at, event_id, event_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(Error::db(self.path))?;
        stmt.execute(params![
            subject_key(subject),
            subject.as_bytes(),
            e.item,
            e.kind.as_str(),
            f64::from(e.value),
            e.at.as_unix_millis(),
            event.event_id,
            event.event_id.as_deref().map(|id| crate::event::event_key(subject, id)),
        ])
        .map_err(Error::db(self.path))?;
        Ok(IngestOutcome::Stored)
    }

    /// `Duplicate` or `Conflict` if the store (this batch included) already
    /// holds the event: by its id when it has one, else by its content
    /// among the subject's events without an id.
    fn held(&mut self, event: &SubjectEvent) -> Result<Option<IngestOutcome>> {
        let (subject, e) = (&event.subject, &event.event);
        match &event.event_id {
            Some(id) => {
                let mut stmt = self
                    .tx
                    .prepare_cached(
                        "SELECT item, kind, value, at FROM events
                         WHERE subject_key = ?1 AND event_key = ?2 AND subject = ?3 AND event_id = ?4 LIMIT 1",
                    )
                    .map_err(Error::db(self.path))?;
                let held = stmt
                    .query_row(
                        params![subject_key(subject), crate::event::event_key(subject, id), subject.as_bytes(), id],
                        event_from_row,
                    )
                    .optional()
                    .map_err(Error::db(self.path))?;
                Ok(held.map(|h| if &h == e { IngestOutcome::Duplicate } else { IngestOutcome::Conflict }))
            }
            None => {
                let mut stmt = self
                    .tx
                    .prepare_cached(
                        "SELECT 1 FROM events
                         WHERE subject_key = ?1 AND at = ?2 AND subject = ?3 AND item = ?4 AND kind = ?5
                           AND value = ?6 AND event_id IS NULL LIMIT 1",
                    )
                    .map_err(Error::db(self.path))?;
                let held = stmt
                    .exists(params![
                        subject_key(subject),
                        e.at.as_unix_millis(),
                        subject.as_bytes(),
                        e.item,
                        e.kind.as_str(),
                        f64::from(e.value),
                    ])
                    .map_err(Error::db(self.path))?;
                Ok(held.then_some(IngestOutcome::Duplicate))
            }
        }
    }

    /// See [`crate::WriteBatch::count_received`].
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails.
    pub fn count_received(&mut self, batches: u64, events: u64) -> Result<()> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.tx
            .prepare_cached(
                "INSERT INTO ingest_batches (id, batches, events) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET batches = batches + excluded.batches, events = events + excluded.events",
            )
            .and_then(|mut stmt| stmt.execute([count(batches), count(events)]))
            .map_err(Error::db(self.path))?;
        Ok(())
    }

    /// Makes every write of the batch durable at once.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails; nothing is stored then.
    pub fn commit(self) -> Result<()> {
        self.tx.commit().map_err(Error::db(self.path))
    }
}

fn status_on(
    conn: &Connection,
    path: &Path,
    subject: &Pseudonym,
    purpose: Purpose,
    as_of: Timestamp,
) -> Result<ConsentStatus> {
    // Every decision of the subject on the purpose: the consent rule orders
    // them by when they were recorded, which no index on effective time serves.
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref
             FROM consent_records
             WHERE subject_key = ?1 AND subject = ?2 AND purpose = ?3",
        )
        .map_err(Error::db(path))?;
    let rows = stmt
        .query_map(params![subject_key(subject), subject.as_bytes(), purpose.as_str()], record_from_row)
        .map_err(Error::db(path))?;
    Ok(ConsentStatus::from_records(collect_rows(rows, path)?, purpose, as_of))
}

/// `Some(subject_was_known)` of the subject's suppression entry, if any.
fn suppression_on(conn: &Connection, path: &Path, subject: &Pseudonym) -> Result<Option<bool>> {
    let mut stmt =
        conn.prepare_cached("SELECT subject_was_known FROM suppressions WHERE tag = ?1").map_err(Error::db(path))?;
    stmt.query_row([&subject.suppression_tag().0[..]], |r| r.get(0)).optional().map_err(Error::db(path))
}

fn is_suppressed_on(conn: &Connection, path: &Path, subject: &Pseudonym) -> Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM suppressions WHERE tag = ?1").map_err(Error::db(path))?;
    stmt.exists([&subject.suppression_tag().0[..]]).map_err(Error::db(path))
}

pub(crate) fn conversion_error(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConsentRecord> {
    let purpose: String = row.get(1)?;
    let source: String = row.get(5)?;
    Ok(ConsentRecord {
        seq: row.get(0)?,
        purpose: purpose.parse().map_err(|e: hush_vocab::Error| conversion_error(1, e.to_string()))?,
        granted: row.get(2)?,
        effective_at: Timestamp::from_unix_millis(row.get(3)?),
        recorded_at: Timestamp::from_unix_millis(row.get(4)?),
        source: source.parse::<ConsentSource>().map_err(|e| conversion_error(5, e.to_string()))?,
        notice_version: row.get(6)?,
        proof_ref: row.get(7)?,
    })
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    event_from_offset(row, 0)
}

fn event_from_offset(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Event> {
    // The kind is parsed from SQLite's own buffer: no String per row.
    let kind = row.get_ref(at + 1)?.as_str().map_err(|e| conversion_error(at + 1, e.to_string()))?;
    let value: f64 = row.get(at + 2)?;
    Ok(Event {
        item: row.get(at)?,
        kind: kind.parse::<EventKind>().map_err(|e| conversion_error(at + 1, e.to_string()))?,
        value: value as f32,
        at: Timestamp::from_unix_millis(row.get(at + 3)?),
    })
}

fn api_key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<crate::keys::ApiKeyRecord> {
    let scopes: String = row.get(2)?;
    let revoked: Option<i64> = row.get(4)?;
    Ok(crate::keys::ApiKeyRecord {
        key_id: row.get(0)?,
        name: row.get(1)?,
        scopes: scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        created_at: Timestamp::from_unix_millis(row.get(3)?),
        revoked_at: revoked.map(Timestamp::from_unix_millis),
    })
}

fn pseudonym_from_row(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Pseudonym> {
    let bytes: Vec<u8> = row.get(column)?;
    let bytes: [u8; 32] =
        bytes.try_into().map_err(|_| conversion_error(column, "stored pseudonym is not 32 bytes".into()))?;
    Ok(Pseudonym::from_bytes(bytes))
}

pub(crate) fn collect_rows<T>(rows: impl Iterator<Item = rusqlite::Result<T>>, path: &Path) -> Result<Vec<T>> {
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(Error::db(path))
}
