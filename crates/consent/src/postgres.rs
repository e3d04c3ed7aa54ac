//! The PostgreSQL consent ledger and event store: the same schema and
//! semantics as the SQLite store, for several serving replicas sharing one
//! ledger.
//!
//! Every write transaction that decides about subjects (consent changes,
//! event ingestion, erasure) first takes one transaction-scoped advisory
//! lock, so writes are serialized across all replicas exactly as SQLite
//! serializes its writers: an event is never stored after a concurrent
//! withdrawal committed, and nothing of a subject survives a concurrent
//! erasure. (One lock per batch rather than one per subject: a bulk import
//! touches thousands of subjects, more than PostgreSQL's lock table holds.)
//! Budget reservations lock their dataset the same way. Every acknowledged write is committed
//! with PostgreSQL's default `synchronous_commit = on`, so it survives a crash.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use postgres::{Client, Row};

use crate::budget::{BudgetCap, BudgetPurpose, BudgetRequest, BudgetRun, BudgetSpend, RunGuarantee, RunState};
use crate::catalogue::{classify, CatalogueItem, Change, ItemUpsertReport};
use crate::connect::{ConnectOptions, PgTarget};
use crate::keys::PresentedKey;
use crate::ledger::{redact, ConsentStatus, ErasureReceipt, GatedRead, IngestOutcome, LedgerStats, SCHEMA_VERSION};
use crate::pseudonym::SuppressionTag;
use crate::sqlite::subject_key;
use crate::{
    ConsentChange, ConsentRecord, ConsentSource, Decision, Error, Event, EventKind, Pseudonym, Purpose, Result,
    SubjectEvent, Timestamp,
};

/// Schema migrations, applied in order; `hush_schema.version` counts the
/// applied ones. They match the SQLite migrations one for one, so a version
/// number means the same schema on both backends (the consent tests'
/// `schema::both_migration_lists_build_the_same_schema` checks it).
const MIGRATIONS: &[&str] = &[
    // 1: consent history, events, suppression list, erasure log.
    "CREATE TABLE consent_records (
         id BIGSERIAL PRIMARY KEY,
         subject_key BIGINT NOT NULL,
         subject BYTEA NOT NULL,
         purpose TEXT NOT NULL,
         granted BOOLEAN NOT NULL,
         effective_at BIGINT NOT NULL,
         recorded_at BIGINT NOT NULL,
         source TEXT NOT NULL,
         notice_version TEXT NOT NULL,
         proof_ref TEXT
     );
     CREATE INDEX consent_by_subject ON consent_records (subject_key, purpose, effective_at);
     CREATE FUNCTION hush_consent_is_append_only() RETURNS trigger LANGUAGE plpgsql AS
       $$ BEGIN RAISE EXCEPTION 'consent history is append-only'; END $$;
     CREATE TRIGGER consent_history_is_append_only BEFORE UPDATE ON consent_records
       FOR EACH ROW EXECUTE FUNCTION hush_consent_is_append_only();
     CREATE TABLE events (
         id BIGSERIAL PRIMARY KEY,
         subject_key BIGINT NOT NULL,
         subject BYTEA NOT NULL,
         item TEXT NOT NULL,
         kind TEXT NOT NULL,
         value DOUBLE PRECISION NOT NULL,
         at BIGINT NOT NULL
     );
     CREATE INDEX events_by_subject ON events (subject_key, at);
     CREATE TABLE suppressions (tag BYTEA PRIMARY KEY, erased_at BIGINT NOT NULL);
     CREATE TABLE erasure_log (
         id BIGSERIAL PRIMARY KEY,
         erased_at BIGINT NOT NULL,
         consent_records_deleted BIGINT NOT NULL,
         events_deleted BIGINT NOT NULL
     );",
    // 2: API keys of the serving API (only a SHA-256 of each secret is kept).
    "CREATE TABLE api_keys (
         id BIGSERIAL PRIMARY KEY,
         key_id TEXT NOT NULL UNIQUE,
         name TEXT NOT NULL,
         secret_sha256 BYTEA NOT NULL,
         scopes TEXT NOT NULL,
         created_at BIGINT NOT NULL,
         revoked_at BIGINT
     );",
    // 3: the privacy budget ledger.
    "CREATE TABLE budget_caps (
         dataset TEXT NOT NULL,
         purpose TEXT NOT NULL,
         epsilon DOUBLE PRECISION NOT NULL,
         delta DOUBLE PRECISION NOT NULL,
         rho DOUBLE PRECISION NOT NULL,
         set_at BIGINT NOT NULL,
         PRIMARY KEY (dataset, purpose)
     );
     CREATE TABLE budget_runs (
         id BIGSERIAL PRIMARY KEY,
         run_key TEXT NOT NULL UNIQUE,
         dataset TEXT NOT NULL,
         purpose TEXT NOT NULL,
         model_id TEXT,
         epsilon DOUBLE PRECISION,
         delta DOUBLE PRECISION,
         rho DOUBLE PRECISION,
         snapshot_at BIGINT NOT NULL,
         state TEXT NOT NULL,
         created_at BIGINT NOT NULL
     );
     CREATE INDEX budget_runs_by_dataset ON budget_runs (dataset, purpose);",
    // 4: whether an erased subject was known.
    "ALTER TABLE suppressions ADD COLUMN subject_was_known BOOLEAN NOT NULL DEFAULT TRUE;",
    // 5: one row counting ingested batches (every batch commits durably alike).
    "CREATE TABLE ingest_batches (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         batches BIGINT NOT NULL,
         events BIGINT NOT NULL
     );",
    // 6: idempotent event imports: the source's event id and its 64-bit key.
    "ALTER TABLE events ADD COLUMN event_id TEXT, ADD COLUMN event_key BIGINT;
     CREATE INDEX events_by_event_key ON events (subject_key, event_key) WHERE event_key IS NOT NULL;",
    // 7: the item catalogue (attributes as JSON text, compared byte for byte).
    "CREATE TABLE items (
         item_id TEXT PRIMARY KEY,
         title TEXT,
         category TEXT,
         attributes TEXT NOT NULL,
         updated_at BIGINT NOT NULL
     );",
];

/// Advisory lock id that serializes catalogue imports, so two concurrent
/// imports count what each changed against a consistent catalogue.
const CATALOGUE_LOCK: i64 = 0x6875_7368_0003;

/// Items written per statement of an upsert (arrays of parameters).
const UPSERT_CHUNK: usize = 5_000;

/// Counts ingested batches (see migration 5) and commits, in one message
/// of the simple-query protocol: one round trip for both. The counts are
/// integers formatted by hush, never text from a client.
fn count_and_commit_sql(batches: u64, events: u64) -> String {
    format!(
        "INSERT INTO ingest_batches (id, batches, events) VALUES (1, {batches}, {events})
         ON CONFLICT (id) DO UPDATE SET batches = ingest_batches.batches + EXCLUDED.batches,
                                        events = ingest_batches.events + EXCLUDED.events;
         COMMIT"
    )
}

/// Advisory lock id that serializes schema migrations of one database.
const MIGRATION_LOCK: i64 = 0x6875_7368_0001;

/// Starts a write transaction holding the writers' advisory lock, its
/// statements planned per execution.
///
/// Why custom plans here, unlike reads: a write's lookups (the stored events
/// an ingested event could repeat, above all) run against tables that grow
/// under them. A generic plan is built once, from the statistics of the
/// moment, and kept until the next ANALYZE: one built while `events` was
/// nearly empty scanned the whole table for every batch. On a store that
/// grew from 50 to 155k events in 8 s, the repeat lookup took 14.8 ms a
/// transaction under the generic plan (`benches/store_load.sh`'s ingestion:
/// 212 batches/s) against well under 1 ms planned per execution.
static BEGIN_LOCKED_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("BEGIN; SET LOCAL plan_cache_mode = force_custom_plan; SELECT pg_advisory_xact_lock({WRITER_LOCK})")
});

/// Run on every connection as it opens (this module's and
/// [`crate::PgReader`]'s). Every statement hush prepares looks rows up by
/// key, where the generic plan is the right one; under the default `auto`,
/// PostgreSQL re-plans parameterized statements per execution whenever it
/// estimates a custom plan cheaper, and that planning was most of the
/// server's CPU per recommendation (3,760 against 1,571 req/s, one replica,
/// 64 connections, wrk alternating runs). Write transactions override it
/// ([`BEGIN_LOCKED_SQL`]).
pub(crate) const GENERIC_PLANS_SQL: &str = "SET plan_cache_mode = force_generic_plan";

/// [`BEGIN_LOCKED_SQL`] for a server without `plan_cache_mode` (before
/// PostgreSQL 12), which plans as it always did.
static BEGIN_LOCKED_PLAIN_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"));

/// The read of a personalized request ([`PgStore::gated_read`]), one
/// statement: the API key's row ($1: key id, or NULL when keys are not
/// required), whether it admits the request ($2: SHA-256 of the presented
/// secret, $3: scope, by the same test as `keys::verify`), the subject's
/// decisions on the purpose ($4, $5: subject key and pseudonym, $6: purpose)
/// only if it does, and their $7 most recent events only if some decision is
/// a grant (the consent rule itself runs in Rust, on the decisions).
///
/// One row shape for all three parts, told apart by `part`:
/// key (0): created_at, revoked_at, -, key_id, name, scopes, -, -, admits, secret_sha256;
/// decision (1): id, effective_at, recorded_at, purpose, source, notice_version, proof_ref, -, granted, -;
/// event (2): at, id, -, item, kind, -, -, value, -, -; in no particular
/// order (sorting them here cost more than in the caller).
pub(crate) const GATED_READ_SQL: &str = "WITH key AS (
         SELECT key_id, name, scopes, created_at, revoked_at, secret_sha256,
                COALESCE(revoked_at IS NULL AND secret_sha256 = $2
                         AND ($3 = ANY (string_to_array(scopes, ',')) OR 'admin' = ANY (string_to_array(scopes, ','))),
                         FALSE) AS admits
         FROM api_keys WHERE key_id = $1
     ), decisions AS (
         SELECT id, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref
         FROM consent_records
         WHERE subject_key = $4 AND subject = $5 AND purpose = $6
           AND ($1::TEXT IS NULL OR EXISTS (SELECT 1 FROM key WHERE admits))
     ), recent AS (
         SELECT id, item, kind, value, at FROM events
         WHERE subject_key = $4 AND subject = $5 AND EXISTS (SELECT 1 FROM decisions WHERE granted)
         ORDER BY at DESC, id DESC LIMIT $7
     )
     SELECT 0 AS part, created_at AS a, revoked_at AS b, NULL::BIGINT AS c, key_id AS t1, name AS t2,
            scopes AS t3, NULL::TEXT AS t4, NULL::DOUBLE PRECISION AS f, admits AS flag, secret_sha256 AS bytes
     FROM key
     UNION ALL
     SELECT 1, id, effective_at, recorded_at, purpose, source, notice_version, proof_ref, NULL, granted, NULL
     FROM decisions
     UNION ALL
     SELECT 2, at, id, NULL, item, kind, NULL, NULL, value, NULL, NULL FROM recent";

/// The parameters of [`GATED_READ_SQL`], owned for the call.
pub(crate) struct GatedReadParams<'a> {
    key_id: Option<&'a str>,
    digest: Option<&'a [u8]>,
    scope: &'a str,
    subject_key: i64,
    subject: &'a [u8],
    purpose: &'static str,
    limit: i64,
}

impl<'a> GatedReadParams<'a> {
    pub(crate) fn new(
        key: Option<(&'a PresentedKey, &'a str)>,
        subject: &'a Pseudonym,
        purpose: Purpose,
        limit: usize,
    ) -> Self {
        let (key_id, digest, scope) = match key {
            Some((presented, scope)) => (Some(presented.key_id.as_str()), Some(&presented.secret_sha256[..]), scope),
            None => (None, None, ""),
        };
        GatedReadParams {
            key_id,
            digest,
            scope,
            subject_key: subject_key(subject),
            subject: &subject.as_bytes()[..],
            purpose: purpose.as_str(),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
        }
    }

    /// In the statement's order, $1 to $7.
    pub(crate) fn as_params(&self) -> [&(dyn postgres::types::ToSql + Sync); 7] {
        [&self.key_id, &self.digest, &self.scope, &self.subject_key, &self.subject, &self.purpose, &self.limit]
    }
}

/// Decodes the rows of [`GATED_READ_SQL`] into the answer, checking the key
/// again in Rust (the statement read the subject only behind the same test).
pub(crate) fn gated_read_from_rows(
    rows: &[postgres::Row],
    key: Option<(&PresentedKey, &str)>,
    purpose: Purpose,
    as_of: Timestamp,
    location: &str,
) -> Result<GatedRead> {
    let (mut stored_key, mut gate_open, mut records, mut recent) = (None, false, Vec::new(), Vec::new());
    for row in rows {
        match column::<i32>(row, 0, location)? {
            0 => {
                let digest: Vec<u8> = column(row, 10, location)?;
                let digest: [u8; 32] =
                    digest.try_into().map_err(|_| corrupt(location, "stored key digest is not 32 bytes"))?;
                let scopes: String = column(row, 6, location)?;
                let record = crate::keys::ApiKeyRecord {
                    key_id: column(row, 4, location)?,
                    name: column(row, 5, location)?,
                    scopes: scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                    created_at: Timestamp::from_unix_millis(column(row, 1, location)?),
                    revoked_at: column::<Option<i64>>(row, 2, location)?.map(Timestamp::from_unix_millis),
                };
                gate_open = column(row, 9, location)?;
                stored_key = Some((record, digest));
            }
            1 => records.push(ConsentRecord {
                seq: column(row, 1, location)?,
                purpose: parse_text(column(row, 4, location)?, location)?,
                granted: column(row, 9, location)?,
                effective_at: Timestamp::from_unix_millis(column(row, 2, location)?),
                recorded_at: Timestamp::from_unix_millis(column(row, 3, location)?),
                source: parse_text(column(row, 5, location)?, location)?,
                notice_version: column(row, 6, location)?,
                proof_ref: column(row, 7, location)?,
            }),
            _ => {
                let value: f64 = column(row, 8, location)?;
                let event = Event {
                    item: column(row, 4, location)?,
                    kind: parse_text(column(row, 5, location)?, location)?,
                    value: value as f32,
                    at: Timestamp::from_unix_millis(column(row, 1, location)?),
                };
                recent.push((column::<i64>(row, 2, location)?, event));
            }
        }
    }
    // Newest first, ties by arrival, as `recent_events` answers.
    recent.sort_unstable_by(|(a_id, a), (b_id, b)| (b.at, b_id).cmp(&(a.at, a_id)));
    let recent: Vec<Event> = recent.into_iter().map(|(_, event)| event).collect();
    if let Some((presented, scope)) = key {
        if let Err(why) = crate::keys::verify(stored_key, presented, scope) {
            return Ok(GatedRead::KeyRefused(why));
        }
        // The statement read the subject only behind the same test.
        if !gate_open {
            return Err(corrupt(location, "the key check in SQL disagrees with hush's"));
        }
    }
    let status = ConsentStatus::from_records(records, purpose, as_of);
    if !status.is_granted() {
        return Ok(GatedRead::NotGranted(status));
    }
    Ok(GatedRead::Granted { status, recent })
}

/// Column `i` of a gated read's row, or an error naming the store: the
/// asynchronous reader decodes on the request's task, where a panic (what
/// `Row::get` does on a mismatched column) would drop the client's
/// connection instead of answering.
fn column<'a, T: postgres::types::FromSql<'a>>(row: &'a postgres::Row, i: usize, location: &str) -> Result<T> {
    row.try_get(i).map_err(Error::pg(location))
}

/// Advisory lock id that serializes the writes about subjects.
const WRITER_LOCK: i64 = 0x6875_7368_0002;

/// Rows fetched per round trip when streaming a table.
const STREAM_BATCH: i32 = 10_000;

/// One connection to a PostgreSQL store.
pub(crate) struct PgStore {
    client: OpenClient,
    /// Prepared statements of the per-request reads: one round trip each
    /// instead of two (parse, then execute), and no planning per request.
    statements: HashMap<&'static str, postgres::Statement>,
    /// Whether the server has `plan_cache_mode` (PostgreSQL 12 and later).
    plan_cache_mode: bool,
    /// Whether the connection is known to be gone: see [`PgStore::is_closed`].
    lost: bool,
    url: String,
    options: ConnectOptions,
    location: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("location", &self.location).finish()
    }
}

/// A connection that closes safely wherever it is dropped. It is always
/// `Some` until then, and derefs to the client.
struct OpenClient(Option<Client>);

impl std::ops::Deref for OpenClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("the client is open until dropped")
    }
}

impl std::ops::DerefMut for OpenClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("the client is open until dropped")
    }
}

impl Drop for OpenClient {
    /// The synchronous client closes its connection by blocking on its own
    /// runtime, which panics on a thread that drives another runtime (a
    /// server's ledgers are dropped there at shutdown): close it on a thread
    /// of its own then.
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

impl PgStore {
    /// Connects and migrates the schema.
    pub(crate) fn connect(url: &str, options: ConnectOptions) -> Result<Self> {
        let location = redact(url);
        let target = PgTarget::parse(url, options)?;
        let client = target
            .blocking_config()
            .connect(target.tls)
            .map_err(|e| Error::Connect { location: location.clone(), message: connect_message(&e) })?;
        let mut client = client;
        let plan_cache_mode = match client.batch_execute(GENERIC_PLANS_SQL) {
            Ok(()) => true,
            Err(e) => {
                // PostgreSQL before 12 has no such setting: slower, not wrong.
                tracing::warn!(location = %location, error = %connect_message(&e), "could not set plan_cache_mode");
                false
            }
        };
        let mut store = PgStore {
            client: OpenClient(Some(client)),
            statements: HashMap::new(),
            plan_cache_mode,
            lost: false,
            url: url.to_string(),
            options,
            location,
        };
        store.migrate()?;
        Ok(store)
    }

    pub(crate) fn options(&self) -> ConnectOptions {
        self.options
    }

    /// Whether the server closed the connection (or it failed for good).
    ///
    /// The blocking client does not always know: after the server ended the
    /// connection (a restart, `pg_terminate_backend`), its statements fail
    /// while its `is_closed` stays false. So the errors say it instead (see
    /// [`PgStore::noting_loss`]), as does a write transaction that could
    /// not even begin.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed() || self.lost
    }

    /// `result`, remembering when its error says the connection is gone, so
    /// that a pool or a server replaces it.
    pub(crate) fn noting_loss<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Some(source) = result.as_ref().err().and_then(Error::postgres_source) {
            self.lost |= connection_lost(source);
        }
        result
    }

    /// The prepared statement of `sql`, prepared on first use.
    fn statement(&mut self, sql: &'static str) -> Result<postgres::Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(Error::pg(&self.location))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    fn migrate(&mut self) -> Result<()> {
        let location = self.location.clone();
        let mut tx = self.client.transaction().map_err(Error::pg(&location))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(Error::pg(&location))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS hush_schema (version BIGINT NOT NULL)")
            .map_err(Error::pg(&location))?;
        let found: i64 = match tx.query_opt("SELECT version FROM hush_schema", &[]).map_err(Error::pg(&location))? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO hush_schema (version) VALUES (0)", &[]).map_err(Error::pg(&location))?;
                0
            }
        };
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew { path: location.into(), found, supported: SCHEMA_VERSION });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).map_err(Error::pg(&location))?;
            tx.execute("UPDATE hush_schema SET version = $1", &[&(index as i64 + 1)]).map_err(Error::pg(&location))?;
            tracing::info!(version = index + 1, "applied ledger schema migration");
        }
        tx.commit().map_err(Error::pg(&location))
    }

    pub(crate) fn schema_version(&mut self) -> Result<i64> {
        let row = self.client.query_one("SELECT version FROM hush_schema", &[]).map_err(Error::pg(&self.location))?;
        Ok(row.get(0))
    }

    pub(crate) fn batch(&mut self) -> Result<PgBatch<'_>> {
        let PgStore { client, statements, location, plan_cache_mode, lost, .. } = self;
        let client: &mut Client = client;
        let begin = if *plan_cache_mode { &*BEGIN_LOCKED_SQL } else { &*BEGIN_LOCKED_PLAIN_SQL };
        // BEGIN and the writers' lock in one round trip: the simple-query
        // protocol runs both from one message, in order.
        if let Err(e) = client.batch_execute(begin) {
            // Whatever part of it ran must not linger on the connection.
            let _ = client.batch_execute("ROLLBACK");
            // On a healthy connection this cannot fail: take it as lost.
            *lost = true;
            return Err(Error::pg(location)(e));
        }
        Ok(PgBatch {
            tx: client,
            open: true,
            statements,
            location,
            pending: PendingEvents::default(),
            held: HashMap::new(),
            allowed_cache: HashMap::new(),
            decisions_cache: HashMap::new(),
            suppressed_cache: HashMap::new(),
            received: None,
        })
    }

    /// See [`crate::Ledger::gated_read`]: one prepared statement, so one
    /// round trip and one snapshot (a statement sees every transaction that
    /// committed before it started, whichever replica wrote it).
    pub(crate) fn gated_read(
        &mut self,
        key: Option<(&PresentedKey, &str)>,
        subject: &Pseudonym,
        purpose: Purpose,
        as_of: Timestamp,
        limit: usize,
    ) -> Result<GatedRead> {
        let statement = self.statement(GATED_READ_SQL)?;
        let params = GatedReadParams::new(key, subject, purpose, limit);
        let rows = self.client.query(&statement, &params.as_params()).map_err(Error::pg(&self.location))?;
        gated_read_from_rows(&rows, key, purpose, as_of, &self.location)
    }

    pub(crate) fn status(&mut self, subject: &Pseudonym, purpose: Purpose, as_of: Timestamp) -> Result<ConsentStatus> {
        let statement = self.statement(STATUS_SQL)?;
        status_on(&mut *self.client, &self.location, &statement, subject, purpose, as_of)
    }

    pub(crate) fn history(&mut self, subject: &Pseudonym) -> Result<Vec<ConsentRecord>> {
        let rows = self
            .client
            .query(
                "SELECT id, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref
                 FROM consent_records WHERE subject_key = $1 AND subject = $2 ORDER BY id",
                &[&subject_key(subject), &&subject.as_bytes()[..]],
            )
            .map_err(Error::pg(&self.location))?;
        rows.iter().map(|r| record_from_row(r, &self.location)).collect()
    }

    pub(crate) fn events_of(&mut self, subject: &Pseudonym) -> Result<Vec<Event>> {
        let statement = self.statement(
            "SELECT item, kind, value, at FROM events WHERE subject_key = $1 AND subject = $2 ORDER BY at, id",
        )?;
        let rows = self
            .client
            .query(&statement, &[&subject_key(subject), &&subject.as_bytes()[..]])
            .map_err(Error::pg(&self.location))?;
        rows.iter().map(|r| event_from_row(r, 0, &self.location)).collect()
    }

    pub(crate) fn recent_events(&mut self, subject: &Pseudonym, limit: usize) -> Result<Vec<Event>> {
        let statement = self.statement(
            "SELECT item, kind, value, at FROM events WHERE subject_key = $1 AND subject = $2
             ORDER BY at DESC, id DESC LIMIT $3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&statement, &[&subject_key(subject), &&subject.as_bytes()[..], &limit])
            .map_err(Error::pg(&self.location))?;
        rows.iter().map(|r| event_from_row(r, 0, &self.location)).collect()
    }

    pub(crate) fn is_suppressed(&mut self, subject: &Pseudonym) -> Result<bool> {
        is_suppressed_on(&mut *self.client, &self.location, subject)
    }

    pub(crate) fn lift_suppression(&mut self, subject: &Pseudonym) -> Result<bool> {
        let deleted = self
            .client
            .execute("DELETE FROM suppressions WHERE tag = $1", &[&&subject.suppression_tag().0[..]])
            .map_err(Error::pg(&self.location))?;
        Ok(deleted > 0)
    }

    pub(crate) fn erase(&mut self, subject: &Pseudonym, now: Timestamp) -> Result<ErasureReceipt> {
        let location = self.location.clone();
        let mut tx = self.client.transaction().map_err(Error::pg(&location))?;
        let key = subject_key(subject);
        let bytes = &subject.as_bytes()[..];
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK]).map_err(Error::pg(&location))?;
        let consent_records_deleted = tx
            .execute("DELETE FROM consent_records WHERE subject_key = $1 AND subject = $2", &[&key, &bytes])
            .map_err(Error::pg(&location))?;
        let events_deleted = tx
            .execute("DELETE FROM events WHERE subject_key = $1 AND subject = $2", &[&key, &bytes])
            .map_err(Error::pg(&location))?;
        let known = consent_records_deleted > 0
            || events_deleted > 0
            || suppression_on(&mut tx, &location, subject)? == Some(true);
        tx.execute(
            "INSERT INTO suppressions (tag, erased_at, subject_was_known) VALUES ($1, $2, $3)
             ON CONFLICT (tag) DO UPDATE SET
                 subject_was_known = suppressions.subject_was_known OR excluded.subject_was_known",
            &[&&subject.suppression_tag().0[..], &now.as_unix_millis(), &known],
        )
        .map_err(Error::pg(&location))?;
        tx.execute(
            "INSERT INTO erasure_log (erased_at, consent_records_deleted, events_deleted) VALUES ($1, $2, $3)",
            &[&now.as_unix_millis(), &(consent_records_deleted as i64), &(events_deleted as i64)],
        )
        .map_err(Error::pg(&location))?;
        tx.commit().map_err(Error::pg(&location))?;
        tracing::info!(subject = %subject.short(), consent_records_deleted, events_deleted, "erased subject");
        Ok(ErasureReceipt {
            erased_at: now,
            consent_records_deleted,
            events_deleted,
            suppressed: true,
            wal_truncated: false,
            subject_was_known: known,
        })
    }

    pub(crate) fn for_each_event<E: From<Error>>(
        &mut self,
        mut visit: impl FnMut(SubjectEvent) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let location = self.location.clone();
        stream(
            &mut self.client,
            &location,
            "SELECT subject, item, kind, value, at FROM events ORDER BY id",
            &[],
            |row| {
                let subject = pseudonym_from_row(row, 0, &location)?;
                let event = event_from_row(row, 1, &location)?;
                Ok(SubjectEvent { subject, event, event_id: None })
            },
            &mut visit,
        )
    }

    pub(crate) fn for_each_consent_decision<E: From<Error>>(
        &mut self,
        purpose: Purpose,
        mut visit: impl FnMut(Pseudonym, Decision) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let location = self.location.clone();
        stream(
            &mut self.client,
            &location,
            "SELECT subject, effective_at, id, granted, recorded_at FROM consent_records WHERE purpose = $1 ORDER BY id",
            &[&purpose.as_str()],
            |row| {
                let subject = pseudonym_from_row(row, 0, &location)?;
                let decision = Decision {
                    effective_at: Timestamp::from_unix_millis(row.get(1)),
                    seq: row.get(2),
                    granted: row.get(3),
                    recorded_at: Timestamp::from_unix_millis(row.get(4)),
                };
                Ok((subject, decision))
            },
            &mut |(subject, decision)| visit(subject, decision),
        )
    }

    pub(crate) fn insert_api_key(&mut self, key: &crate::keys::ApiKeyRecord, secret_sha256: &[u8; 32]) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO api_keys (key_id, name, secret_sha256, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&key.key_id, &key.name, &&secret_sha256[..], &key.scopes.join(","), &key.created_at.as_unix_millis()],
            )
            .map_err(Error::pg(&self.location))?;
        Ok(())
    }

    pub(crate) fn api_key(&mut self, key_id: &str) -> Result<Option<(crate::keys::ApiKeyRecord, [u8; 32])>> {
        let statement = self.statement(
            "SELECT key_id, name, scopes, created_at, revoked_at, secret_sha256 FROM api_keys WHERE key_id = $1",
        )?;
        let row = self.client.query_opt(&statement, &[&key_id]).map_err(Error::pg(&self.location))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let digest: Vec<u8> = row.get(5);
                let digest: [u8; 32] =
                    digest.try_into().map_err(|_| corrupt(&self.location, "stored key digest is not 32 bytes"))?;
                Ok(Some((api_key_from_row(&row), digest)))
            }
        }
    }

    pub(crate) fn api_keys(&mut self) -> Result<Vec<crate::keys::ApiKeyRecord>> {
        let rows = self
            .client
            .query("SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY id", &[])
            .map_err(Error::pg(&self.location))?;
        Ok(rows.iter().map(api_key_from_row).collect())
    }

    pub(crate) fn revoke_api_key(&mut self, key_id: &str, now: Timestamp) -> Result<bool> {
        let changed = self
            .client
            .execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
                &[&key_id, &now.as_unix_millis()],
            )
            .map_err(Error::pg(&self.location))?;
        Ok(changed > 0)
    }

    pub(crate) fn suppression_tags(&mut self) -> Result<HashSet<SuppressionTag>> {
        let rows = self.client.query("SELECT tag FROM suppressions", &[]).map_err(Error::pg(&self.location))?;
        rows.iter()
            .map(|row| {
                let bytes: Vec<u8> = row.get(0);
                let tag: [u8; 32] =
                    bytes.try_into().map_err(|_| corrupt(&self.location, "suppression tag is not 32 bytes"))?;
                Ok(SuppressionTag(tag))
            })
            .collect()
    }

    pub(crate) fn stats(&mut self) -> Result<LedgerStats> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT COUNT(DISTINCT subject) FROM consent_records), (SELECT COUNT(*) FROM consent_records),
                        (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM suppressions),
                        (SELECT COUNT(*) FROM erasure_log),
                        (SELECT COALESCE(MAX(batches), 0) FROM ingest_batches)",
                &[],
            )
            .map_err(Error::pg(&self.location))?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok(LedgerStats {
            subjects_with_consent: n(0),
            consent_records: n(1),
            events: n(2),
            suppressed_subjects: n(3),
            erasures: n(4),
            ingested_batches: n(5),
        })
    }

    pub(crate) fn set_budget_cap(&mut self, cap: &BudgetCap) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO budget_caps (dataset, purpose, epsilon, delta, rho, set_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (dataset, purpose) DO UPDATE SET
                     epsilon = excluded.epsilon, delta = excluded.delta, rho = excluded.rho, set_at = excluded.set_at",
                &[&cap.dataset, &cap.purpose.as_str(), &cap.epsilon, &cap.delta, &cap.rho, &cap.set_at.as_unix_millis()],
            )
            .map_err(Error::pg(&self.location))?;
        Ok(())
    }

    pub(crate) fn budget_cap(&mut self, dataset: &str, purpose: BudgetPurpose) -> Result<Option<BudgetCap>> {
        read_cap(&mut *self.client, &self.location, dataset, purpose)
    }

    pub(crate) fn reserve_budget(&mut self, request: &BudgetRequest, now: Timestamp) -> Result<BudgetRun> {
        let location = self.location.clone();
        let mut tx = self.client.transaction().map_err(Error::pg(&location))?;
        // One reservation at a time per dataset and purpose, across every replica and process.
        let lock = format!("{}\n{}", request.dataset, request.purpose.as_str());
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock]).map_err(Error::pg(&location))?;
        if let Some(existing) = read_run(&mut tx, &location, &request.run_key)? {
            return Ok(existing);
        }
        if request.guarantee.is_some() {
            let (spent, _, _) = sum_runs(&mut tx, &location, &request.dataset, request.purpose)?;
            let cap = read_cap(&mut tx, &location, &request.dataset, request.purpose)?;
            crate::budget::check_fits(request, spent, cap.as_ref())?;
        }
        tx.execute(
            "INSERT INTO budget_runs (run_key, dataset, purpose, model_id, epsilon, delta, rho, snapshot_at, state, created_at)
             VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, 'reserved', $8)",
            &[
                &request.run_key,
                &request.dataset,
                &request.purpose.as_str(),
                &request.guarantee.map(|g| g.epsilon),
                &request.guarantee.map(|g| g.delta),
                &request.guarantee.map(|g| g.rho),
                &request.snapshot_at.as_unix_millis(),
                &now.as_unix_millis(),
            ],
        )
        .map_err(Error::pg(&location))?;
        let run = read_run(&mut tx, &location, &request.run_key)?.expect("the run was just inserted");
        tx.commit().map_err(Error::pg(&location))?;
        Ok(run)
    }

    pub(crate) fn commit_budget(&mut self, run_key: &str, model_id: &str) -> Result<()> {
        let changed = self
            .client
            .execute(
                "UPDATE budget_runs SET state = 'committed', model_id = $2 WHERE run_key = $1",
                &[&run_key, &model_id],
            )
            .map_err(Error::pg(&self.location))?;
        if changed == 0 {
            return Err(Error::InvalidField { field: "run_key", message: format!("no budget run `{run_key}`") });
        }
        Ok(())
    }

    pub(crate) fn cancel_budget(&mut self, run_key: &str) -> Result<bool> {
        let changed = self
            .client
            .execute("DELETE FROM budget_runs WHERE run_key = $1 AND state = 'reserved'", &[&run_key])
            .map_err(Error::pg(&self.location))?;
        Ok(changed > 0)
    }

    pub(crate) fn budget_spending(&mut self) -> Result<Vec<BudgetSpend>> {
        let location = self.location.clone();
        let keys = self
            .client
            .query(
                "SELECT dataset, purpose FROM budget_caps UNION SELECT dataset, purpose FROM budget_runs ORDER BY 1, 2",
                &[],
            )
            .map_err(Error::pg(&location))?;
        let mut out = Vec::with_capacity(keys.len());
        for row in keys {
            let dataset: String = row.get(0);
            let purpose = parse_purpose(&row.get::<_, String>(1), &location)?;
            let (spent_rho, private_runs, non_private_runs) =
                sum_runs(&mut *self.client, &location, &dataset, purpose)?;
            let cap = read_cap(&mut *self.client, &location, &dataset, purpose)?;
            out.push(BudgetSpend { dataset, purpose, cap, spent_rho, private_runs, non_private_runs });
        }
        Ok(out)
    }

    /// See [`crate::Ledger::upsert_items`]: one transaction, the inserts and
    /// updates sent as arrays, a few thousand rows per round trip.
    pub(crate) fn upsert_items(&mut self, items: &[CatalogueItem], now: Timestamp) -> Result<ItemUpsertReport> {
        let location = self.location.clone();
        let mut tx = self.client.transaction().map_err(Error::pg(&location))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOGUE_LOCK]).map_err(Error::pg(&location))?;
        let stored: HashMap<String, (Option<String>, Option<String>, String)> = tx
            .query("SELECT item_id, title, category, attributes FROM items", &[])
            .map_err(Error::pg(&location))?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        let mut report = ItemUpsertReport::default();
        let mut changed = Vec::new();
        for item in items {
            match classify(&stored, item) {
                Change::Insert => report.inserted += 1,
                Change::Update => report.updated += 1,
                Change::Unchanged => {
                    report.unchanged += 1;
                    continue;
                }
            }
            changed.push(item);
        }
        for chunk in changed.chunks(UPSERT_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|i| i.id.as_str()).collect();
            let titles: Vec<Option<&str>> = chunk.iter().map(|i| i.title.as_deref()).collect();
            let categories: Vec<Option<&str>> = chunk.iter().map(|i| i.category.as_deref()).collect();
            let attributes: Vec<String> = chunk.iter().map(|i| i.attributes_json()).collect();
            tx.execute(
                "INSERT INTO items (item_id, title, category, attributes, updated_at)
                 SELECT id, title, category, attributes, $5
                 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[]) AS t (id, title, category, attributes)
                 ON CONFLICT (item_id) DO UPDATE SET title = EXCLUDED.title, category = EXCLUDED.category,
                     attributes = EXCLUDED.attributes, updated_at = EXCLUDED.updated_at",
                &[&ids, &titles, &categories, &attributes, &now.as_unix_millis()],
            )
            .map_err(Error::pg(&location))?;
        }
        tx.commit().map_err(Error::pg(&location))?;
        Ok(report)
    }

    /// See [`crate::Ledger::catalogue_items`].
    pub(crate) fn catalogue_items(&mut self) -> Result<Vec<CatalogueItem>> {
        let rows = self
            .client
            .query("SELECT item_id, title, category, attributes FROM items ORDER BY item_id COLLATE \"C\"", &[])
            .map_err(Error::pg(&self.location))?;
        rows.iter()
            .map(|r| {
                let attributes = match serde_json::from_str(r.get::<_, &str>(3)) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => return Err(corrupt(&self.location, "stored item attributes are not a JSON object")),
                };
                Ok(CatalogueItem { id: r.get(0), title: r.get(1), category: r.get(2), attributes })
            })
            .collect()
    }

    pub(crate) fn budget_runs(&mut self, dataset: Option<&str>) -> Result<Vec<BudgetRun>> {
        let rows = self
            .client
            .query(
                &format!("SELECT {RUN_COLUMNS} FROM budget_runs WHERE $1::TEXT IS NULL OR dataset = $1 ORDER BY id"),
                &[&dataset],
            )
            .map_err(Error::pg(&self.location))?;
        rows.iter().map(|r| run_from_row(r, &self.location)).collect()
    }
}

/// A write transaction on PostgreSQL. See [`crate::WriteBatch`].
pub(crate) struct PgBatch<'a> {
    /// The connection, inside the transaction [`PgStore::batch`] began.
    tx: &'a mut Client,
    /// Whether the transaction is still open (rolled back if dropped so).
    open: bool,
    /// The connection's prepared statements: a batch's statements are
    /// prepared once per connection, not once per use (a statement given as
    /// text costs a parse round trip every time).
    statements: &'a mut HashMap<&'static str, postgres::Statement>,
    location: &'a str,
    /// Events accepted but not yet written: copied in together, in order,
    /// once per [`PENDING_LIMIT`] rows instead of one round trip each.
    pending: PendingEvents,
    /// What the store (and this batch) holds of each subject seen so far,
    /// for finding duplicates without a round trip per event.
    held: HashMap<Pseudonym, HeldEvents>,
    /// Whether a subject had some purpose granted at a time (batches of
    /// one group are each decided at their own arrival time).
    allowed_cache: HashMap<(Pseudonym, Timestamp), bool>,
    /// Every consent decision of the subjects [`PgBatch::prefetch`] read.
    decisions_cache: HashMap<Pseudonym, Vec<ConsentRecord>>,
    suppressed_cache: HashMap<Pseudonym, bool>,
    /// Batches and events received, counted at commit (with the commit).
    received: Option<(u64, u64)>,
}

impl PgBatch<'_> {
    /// The prepared statement of `sql` on this connection, prepared on first use.
    fn prepared(&mut self, sql: &'static str) -> Result<postgres::Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql).map_err(Error::pg(self.location))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn suppressed(&mut self, subject: &Pseudonym) -> Result<bool> {
        if let Some(&s) = self.suppressed_cache.get(subject) {
            return Ok(s);
        }
        let statement = self.prepared(SUPPRESSED_SQL)?;
        let s = self
            .tx
            .query_opt(&statement, &[&&subject.suppression_tag().0[..]])
            .map_err(Error::pg(self.location))?
            .is_some();
        self.suppressed_cache.insert(*subject, s);
        Ok(s)
    }

    pub(crate) fn holds_consent_record(&mut self, subject: &Pseudonym, change: &ConsentChange) -> Result<bool> {
        let row = self
            .tx
            .query_opt(
                "SELECT 1 FROM consent_records
                 WHERE subject_key = $1 AND subject = $2 AND purpose = $3 AND effective_at = $4 AND granted = $5
                   AND source = $6 AND notice_version = $7 AND proof_ref IS NOT DISTINCT FROM $8
                 LIMIT 1",
                &[
                    &subject_key(subject),
                    &&subject.as_bytes()[..],
                    &change.purpose.as_str(),
                    &change.effective_at.as_unix_millis(),
                    &change.granted,
                    &change.source.as_str(),
                    &change.notice_version,
                    &change.proof_ref,
                ],
            )
            .map_err(Error::pg(self.location))?;
        Ok(row.is_some())
    }

    /// Reads, in one round trip, what deciding about the events of
    /// `subjects` needs (their suppression entries and consent decisions),
    /// so [`PgBatch::ingest_event`] asks nothing more for them. Runs under
    /// the batch's lock, like the reads it replaces.
    pub(crate) fn prefetch(&mut self, events: &[SubjectEvent]) -> Result<()> {
        self.prefetch_held(events)?;
        let subjects: Vec<Pseudonym> = events.iter().map(|e| e.subject).collect();
        let subjects = &subjects[..];
        let subjects: Vec<&Pseudonym> = {
            let mut seen = HashSet::new();
            subjects.iter().filter(|s| !self.decisions_cache.contains_key(s)).filter(|s| seen.insert(**s)).collect()
        };
        if subjects.is_empty() {
            return Ok(());
        }
        let tags: Vec<[u8; 32]> = subjects.iter().map(|s| s.suppression_tag().0).collect();
        let tag_params: Vec<&[u8]> = tags.iter().map(|t| &t[..]).collect();
        let keys: Vec<i64> = subjects.iter().map(|s| subject_key(s)).collect();
        let statement = self.prepared(PREFETCH_SQL)?;
        let rows = self.tx.query(&statement, &[&tag_params, &keys]).map_err(Error::pg(self.location))?;
        let mut suppressed = HashSet::new();
        let mut decisions: HashMap<Vec<u8>, Vec<ConsentRecord>> = HashMap::new();
        for row in &rows {
            let who: Vec<u8> = row.get(0);
            match row.get::<_, Option<i64>>(1) {
                None => {
                    suppressed.insert(who);
                }
                Some(_) => decisions.entry(who).or_default().push(record_from_row_at(row, 1, self.location)?),
            }
        }
        for (subject, tag) in subjects.into_iter().zip(&tags) {
            let is_suppressed = suppressed.contains(&tag[..]);
            self.suppressed_cache.insert(*subject, is_suppressed);
            let records = decisions.remove(&subject.as_bytes()[..]).unwrap_or_default();
            self.decisions_cache.insert(*subject, records);
        }
        Ok(())
    }

    /// Whether `subject` has some purpose granted at `now`: from the
    /// decisions prefetched, else asked of the store.
    fn allowed(&mut self, subject: &Pseudonym, now: Timestamp) -> Result<bool> {
        if let Some(&allowed) = self.allowed_cache.get(&(*subject, now)) {
            return Ok(allowed);
        }
        let allowed = match self.decisions_cache.get(subject) {
            Some(records) => Purpose::ALL.iter().any(|&purpose| {
                let of_purpose: Vec<ConsentRecord> = records.iter().filter(|r| r.purpose == purpose).cloned().collect();
                ConsentStatus::from_records(of_purpose, purpose, now).is_granted()
            }),
            None => {
                let statement = self.prepared(STATUS_SQL)?;
                let mut allowed = false;
                for purpose in Purpose::ALL {
                    allowed |= status_on(self.tx, self.location, &statement, subject, purpose, now)?.is_granted();
                }
                allowed
            }
        };
        self.allowed_cache.insert((*subject, now), allowed);
        Ok(allowed)
    }

    pub(crate) fn record_consent(
        &mut self,
        subject: &Pseudonym,
        change: &ConsentChange,
        recorded_at: Timestamp,
    ) -> Result<ConsentRecord> {
        change.validate_at(recorded_at)?;
        if self.suppressed(subject)? {
            if !crate::ledger::opt_in_lifts(change, suppression_on(self.tx, self.location, subject)?) {
                return Err(Error::Suppressed);
            }
            self.tx
                .execute("DELETE FROM suppressions WHERE tag = $1", &[&&subject.suppression_tag().0[..]])
                .map_err(Error::pg(self.location))?;
            self.suppressed_cache.insert(*subject, false);
        }
        let row = self
            .tx
            .query_one(
                "INSERT INTO consent_records
                 (subject_key, subject, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[
                    &subject_key(subject),
                    &&subject.as_bytes()[..],
                    &change.purpose.as_str(),
                    &change.granted,
                    &change.effective_at.as_unix_millis(),
                    &recorded_at.as_unix_millis(),
                    &change.source.as_str(),
                    &change.notice_version,
                    &change.proof_ref,
                ],
            )
            .map_err(Error::pg(self.location))?;
        self.allowed_cache.retain(|(s, _), _| s != subject);
        self.decisions_cache.remove(subject);
        Ok(ConsentRecord {
            seq: row.get(0),
            purpose: change.purpose,
            granted: change.granted,
            effective_at: change.effective_at,
            recorded_at,
            source: change.source,
            notice_version: change.notice_version.clone(),
            proof_ref: change.proof_ref.clone(),
        })
    }

    pub(crate) fn ingest_event(&mut self, event: &SubjectEvent, now: Timestamp) -> Result<IngestOutcome> {
        let subject = &event.subject;
        if self.suppressed(subject)? {
            return Ok(IngestOutcome::Suppressed);
        }
        if !self.allowed(subject, now)? {
            return Ok(IngestOutcome::NoConsent);
        }
        if !self.held.contains_key(subject) {
            self.load_held(subject)?;
        }
        let held = self.held.entry(*subject).or_default();
        if let Some(outcome) = held.outcome(event) {
            return Ok(outcome);
        }
        held.insert(event.event_id.clone(), event.event.clone());
        self.pending.push(subject, &event.event, event.event_id.as_deref());
        if self.pending.len() >= PENDING_LIMIT {
            self.flush()?;
        }
        Ok(IngestOutcome::Stored)
    }

    /// Reads, in one round trip whatever the subjects' consent, the stored
    /// events that an event of `events` could repeat: those with the same
    /// subject and time (without an id) or the same subject and event key.
    fn prefetch_held(&mut self, events: &[SubjectEvent]) -> Result<()> {
        // Each (subject, time) and (subject, event key) asked once: a batch's
        // events mostly share both subject and arrival time, and a repeated
        // pair would return its stored events once per repeat.
        let (mut by_time, mut by_event_key) = (BTreeSet::new(), BTreeSet::new());
        for e in events {
            match &e.event_id {
                Some(id) => by_event_key.insert((subject_key(&e.subject), crate::event::event_key(&e.subject, id))),
                None => by_time.insert((subject_key(&e.subject), e.event.at.as_unix_millis())),
            };
        }
        let (keys, times): (Vec<i64>, Vec<i64>) = by_time.into_iter().unzip();
        let (id_keys, event_keys): (Vec<i64>, Vec<i64>) = by_event_key.into_iter().unzip();
        let statement = self.prepared(HELD_EVENTS_SQL)?;
        let rows =
            self.tx.query(&statement, &[&keys, &times, &id_keys, &event_keys]).map_err(Error::pg(self.location))?;
        for e in events {
            self.held.entry(e.subject).or_default();
        }
        for row in &rows {
            let subject = pseudonym_from_row(row, 0, self.location)?;
            let event = event_from_row(row, 2, self.location)?;
            if let Some(held) = self.held.get_mut(&subject) {
                held.insert(row.get(1), event);
            }
        }
        Ok(())
    }

    /// Reads every stored event of `subject` into [`PgBatch::held`] (a file
    /// import, which does not prefetch: one query per consenting subject).
    fn load_held(&mut self, subject: &Pseudonym) -> Result<()> {
        let statement = self.prepared(SUBJECT_EVENTS_SQL)?;
        let rows = self
            .tx
            .query(&statement, &[&subject_key(subject), &&subject.as_bytes()[..]])
            .map_err(Error::pg(self.location))?;
        let mut held = HeldEvents::default();
        for row in &rows {
            held.insert(row.get(0), event_from_row(row, 1, self.location)?);
        }
        self.held.insert(*subject, held);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.len() == 0 {
            return Ok(());
        }
        let p = std::mem::take(&mut self.pending);
        let statement = self.prepared(COPY_EVENTS_SQL)?;
        let sink = self.tx.copy_in(&statement).map_err(Error::pg(self.location))?;
        let mut rows = postgres::binary_copy::BinaryCopyInWriter::new(sink, &COPY_EVENTS_TYPES);
        for i in 0..p.len() {
            rows.write(&[
                &p.keys[i],
                &p.subjects[i],
                &p.items[i],
                &p.kinds[i],
                &p.values[i],
                &p.times[i],
                &p.event_ids[i],
                &p.event_keys[i],
            ])
            .map_err(Error::pg(self.location))?;
        }
        rows.finish().map_err(Error::pg(self.location))?;
        Ok(())
    }

    pub(crate) fn count_received(&mut self, batches: u64, events: u64) -> Result<()> {
        // Written by the commit, in its round trip.
        let (b, e) = self.received.unwrap_or((0, 0));
        self.received = Some((b.saturating_add(batches), e.saturating_add(events)));
        Ok(())
    }

    pub(crate) fn commit(mut self) -> Result<()> {
        self.flush()?;
        let result = match self.received {
            Some((batches, events)) => {
                let count = |n: u64| n.min(i64::MAX as u64);
                self.tx.batch_execute(&count_and_commit_sql(count(batches), count(events)))
            }
            None => self.tx.batch_execute("COMMIT"),
        };
        // A failed count leaves the transaction aborted, its COMMIT not run:
        // the drop rolls it back, so nothing of it lingers on the connection.
        // After a COMMIT, failed or not, no transaction is open.
        self.open = result.as_ref().is_err_and(|_| self.received.is_some());
        result.map_err(Error::pg(self.location))
    }
}

impl Drop for PgBatch<'_> {
    /// A batch dropped before its commit stores nothing.
    fn drop(&mut self) {
        if self.open {
            let _ = self.tx.batch_execute("ROLLBACK");
        }
    }
}

/// Accepted events, in order, streamed in PostgreSQL's binary COPY format,
/// once per [`PENDING_LIMIT`] rows. It measured faster than one `INSERT ...
/// SELECT FROM UNNEST` of bound arrays: 954 against 1,436 µs a transaction of
/// 100 rows, 14.7 against 28.3 ms of 5,000 (one connection, loopback).
const COPY_EVENTS_SQL: &str =
    "COPY events (subject_key, subject, item, kind, value, at, event_id, event_key) FROM STDIN (FORMAT binary)";

/// The column types of [`COPY_EVENTS_SQL`], in order.
const COPY_EVENTS_TYPES: [postgres::types::Type; 8] = [
    postgres::types::Type::INT8,
    postgres::types::Type::BYTEA,
    postgres::types::Type::TEXT,
    postgres::types::Type::TEXT,
    postgres::types::Type::FLOAT8,
    postgres::types::Type::INT8,
    postgres::types::Type::TEXT,
    postgres::types::Type::INT8,
];

/// The stored events a batch's events could repeat ($1, $2: subject keys
/// and times of events without an id; $3, $4: subject keys and event keys
/// of events with one): pseudonym, event id, then the columns of an event.
const HELD_EVENTS_SQL: &str = "SELECT e.subject, e.event_id, e.item, e.kind, e.value, e.at
     FROM events e JOIN UNNEST($1::BIGINT[], $2::BIGINT[]) AS q(k, t) ON e.subject_key = q.k AND e.at = q.t
     WHERE e.event_id IS NULL
     UNION ALL
     SELECT e.subject, e.event_id, e.item, e.kind, e.value, e.at
     FROM events e JOIN UNNEST($3::BIGINT[], $4::BIGINT[]) AS q(k, ek) ON e.subject_key = q.k AND e.event_key = q.ek";

/// Every stored event of one subject: event id, then the columns of an event.
const SUBJECT_EVENTS_SQL: &str =
    "SELECT event_id, item, kind, value, at FROM events WHERE subject_key = $1 AND subject = $2";

/// The events of one subject a batch knows of, for finding repeats: by
/// event id, and by content among those without an id.
#[derive(Default)]
struct HeldEvents {
    by_id: HashMap<String, Event>,
    without_id: HashSet<(String, String, u64, i64)>,
}

impl HeldEvents {
    fn content(e: &Event) -> (String, String, u64, i64) {
        // SQL compares values as numbers: 0.0 and -0.0 are one value.
        let value = if e.value == 0.0 { 0.0 } else { f64::from(e.value) };
        (e.item.clone(), e.kind.as_str().to_string(), value.to_bits(), e.at.as_unix_millis())
    }

    fn insert(&mut self, event_id: Option<String>, event: Event) {
        match event_id {
            Some(id) => {
                self.by_id.entry(id).or_insert(event);
            }
            None => {
                self.without_id.insert(Self::content(&event));
            }
        }
    }

    fn outcome(&self, event: &SubjectEvent) -> Option<IngestOutcome> {
        match &event.event_id {
            Some(id) => self.by_id.get(id).map(|held| {
                if held == &event.event {
                    IngestOutcome::Duplicate
                } else {
                    IngestOutcome::Conflict
                }
            }),
            None => self.without_id.contains(&Self::content(&event.event)).then_some(IngestOutcome::Duplicate),
        }
    }
}

/// Whether a subject is suppressed, by its suppression tag.
const SUPPRESSED_SQL: &str = "SELECT 1 FROM suppressions WHERE tag = $1";

/// The suppression entries ($1: tags) and every consent decision ($2:
/// subject keys) of a batch's subjects: a suppression row has a NULL id and
/// its tag first; a decision row has the pseudonym first, then the columns
/// of [`STATUS_SQL`].
const PREFETCH_SQL: &str =
    "SELECT tag, NULL::BIGINT, NULL::TEXT, NULL::BOOLEAN, NULL::BIGINT, NULL::BIGINT, NULL::TEXT,
            NULL::TEXT, NULL::TEXT
     FROM suppressions WHERE tag = ANY ($1)
     UNION ALL
     SELECT subject, id, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref
     FROM consent_records WHERE subject_key = ANY ($2)";

/// Rows written per multi-row insert.
const PENDING_LIMIT: usize = 5_000;

/// Accepted events, column by column, for one `COPY`.
#[derive(Default)]
struct PendingEvents {
    keys: Vec<i64>,
    subjects: Vec<Vec<u8>>,
    items: Vec<String>,
    kinds: Vec<String>,
    values: Vec<f64>,
    times: Vec<i64>,
    event_ids: Vec<Option<String>>,
    event_keys: Vec<Option<i64>>,
}

impl PendingEvents {
    fn push(&mut self, subject: &Pseudonym, e: &Event, event_id: Option<&str>) {
        self.event_ids.push(event_id.map(str::to_string));
        self.event_keys.push(event_id.map(|id| crate::event::event_key(subject, id)));
        self.keys.push(subject_key(subject));
        self.subjects.push(subject.as_bytes().to_vec());
        self.items.push(e.item.clone());
        self.kinds.push(e.kind.as_str().to_string());
        self.values.push(f64::from(e.value));
        self.times.push(e.at.as_unix_millis());
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Streams the rows of `sql` through `visit` in batches of [`STREAM_BATCH`]
/// (a server-side portal), so a large table is never held in memory at once.
fn stream<T, E: From<Error>>(
    client: &mut Client,
    location: &str,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    decode: impl Fn(&Row) -> Result<T>,
    visit: &mut impl FnMut(T) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut tx = client.transaction().map_err(Error::pg(location))?;
    let portal = tx.bind(sql, params).map_err(Error::pg(location))?;
    loop {
        let rows = tx.query_portal(&portal, STREAM_BATCH).map_err(Error::pg(location))?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            visit(decode(row)?)?;
        }
    }
    tx.commit().map_err(Error::pg(location))?;
    Ok(())
}

/// The consent-status query: every decision of the subject on the purpose,
/// which the consent rule orders by when they were recorded (see [`crate::rule`]).
const STATUS_SQL: &str = "SELECT id, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref
     FROM consent_records
     WHERE subject_key = $1 AND subject = $2 AND purpose = $3";

fn status_on<Q: postgres::ToStatement + ?Sized>(
    client: &mut impl postgres::GenericClient,
    location: &str,
    query: &Q,
    subject: &Pseudonym,
    purpose: Purpose,
    as_of: Timestamp,
) -> Result<ConsentStatus> {
    let rows = client
        .query(query, &[&subject_key(subject), &&subject.as_bytes()[..], &purpose.as_str()])
        .map_err(Error::pg(location))?;
    let records = rows.iter().map(|r| record_from_row(r, location)).collect::<Result<Vec<_>>>()?;
    Ok(ConsentStatus::from_records(records, purpose, as_of))
}

/// `Some(subject_was_known)` of the subject's suppression entry, if any.
fn suppression_on(
    client: &mut impl postgres::GenericClient,
    location: &str,
    subject: &Pseudonym,
) -> Result<Option<bool>> {
    let row = client
        .query_opt("SELECT subject_was_known FROM suppressions WHERE tag = $1", &[&&subject.suppression_tag().0[..]])
        .map_err(Error::pg(location))?;
    Ok(row.map(|r| r.get(0)))
}

fn is_suppressed_on(client: &mut impl postgres::GenericClient, location: &str, subject: &Pseudonym) -> Result<bool> {
    let row = client
        .query_opt("SELECT 1 FROM suppressions WHERE tag = $1", &[&&subject.suppression_tag().0[..]])
        .map_err(Error::pg(location))?;
    Ok(row.is_some())
}

/// A stored name (purpose, source, event kind) read back.
fn parse_text<T: FromStr<Err = hush_vocab::Error>>(text: String, location: &str) -> Result<T> {
    text.parse().map_err(|e: hush_vocab::Error| corrupt(location, &e.to_string()))
}

fn corrupt(location: &str, message: &str) -> Error {
    Error::Corrupt { location: location.to_string(), message: message.to_string() }
}

fn record_from_row(row: &Row, location: &str) -> Result<ConsentRecord> {
    record_from_row_at(row, 0, location)
}

/// A consent record from the columns of [`STATUS_SQL`], starting at `at`.
fn record_from_row_at(row: &Row, at: usize, location: &str) -> Result<ConsentRecord> {
    Ok(ConsentRecord {
        seq: row.get(at),
        purpose: parse_text(row.get(at + 1), location)?,
        granted: row.get(at + 2),
        effective_at: Timestamp::from_unix_millis(row.get(at + 3)),
        recorded_at: Timestamp::from_unix_millis(row.get(at + 4)),
        source: parse_text::<ConsentSource>(row.get(at + 5), location)?,
        notice_version: row.get(at + 6),
        proof_ref: row.get(at + 7),
    })
}

fn event_from_row(row: &Row, at: usize, location: &str) -> Result<Event> {
    let kind: String = row.get(at + 1);
    let value: f64 = row.get(at + 2);
    Ok(Event {
        item: row.get(at),
        kind: kind.parse::<EventKind>().map_err(|e| corrupt(location, &e.to_string()))?,
        value: value as f32,
        at: Timestamp::from_unix_millis(row.get(at + 3)),
    })
}

fn pseudonym_from_row(row: &Row, column: usize, location: &str) -> Result<Pseudonym> {
    let bytes: Vec<u8> = row.get(column);
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| corrupt(location, "stored pseudonym is not 32 bytes"))?;
    Ok(Pseudonym::from_bytes(bytes))
}

fn api_key_from_row(row: &Row) -> crate::keys::ApiKeyRecord {
    let scopes: String = row.get(2);
    let revoked: Option<i64> = row.get(4);
    crate::keys::ApiKeyRecord {
        key_id: row.get(0),
        name: row.get(1),
        scopes: scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        created_at: Timestamp::from_unix_millis(row.get(3)),
        revoked_at: revoked.map(Timestamp::from_unix_millis),
    }
}

const RUN_COLUMNS: &str = "run_key, dataset, purpose, model_id, epsilon, delta, rho, snapshot_at, state, created_at";

fn parse_purpose(text: &str, location: &str) -> Result<BudgetPurpose> {
    match text {
        "release" => Ok(BudgetPurpose::Release),
        "evaluation" => Ok(BudgetPurpose::Evaluation),
        other => Err(corrupt(location, &format!("unknown budget purpose `{other}`"))),
    }
}

fn run_from_row(row: &Row, location: &str) -> Result<BudgetRun> {
    let rho: Option<f64> = row.get(6);
    let guarantee = rho.map(|rho| RunGuarantee { epsilon: row.get(4), delta: row.get(5), rho });
    let state: String = row.get(8);
    Ok(BudgetRun {
        run_key: row.get(0),
        dataset: row.get(1),
        purpose: parse_purpose(&row.get::<_, String>(2), location)?,
        model_id: row.get(3),
        guarantee,
        snapshot_at: Timestamp::from_unix_millis(row.get(7)),
        state: match state.as_str() {
            "reserved" => RunState::Reserved,
            "committed" => RunState::Committed,
            other => return Err(corrupt(location, &format!("unknown run state `{other}`"))),
        },
        created_at: Timestamp::from_unix_millis(row.get(9)),
    })
}

fn read_run(client: &mut impl postgres::GenericClient, location: &str, run_key: &str) -> Result<Option<BudgetRun>> {
    let row = client
        .query_opt(&format!("SELECT {RUN_COLUMNS} FROM budget_runs WHERE run_key = $1"), &[&run_key])
        .map_err(Error::pg(location))?;
    row.map(|r| run_from_row(&r, location)).transpose()
}

fn read_cap(
    client: &mut impl postgres::GenericClient,
    location: &str,
    dataset: &str,
    purpose: BudgetPurpose,
) -> Result<Option<BudgetCap>> {
    let row = client
        .query_opt(
            "SELECT epsilon, delta, rho, set_at FROM budget_caps WHERE dataset = $1 AND purpose = $2",
            &[&dataset, &purpose.as_str()],
        )
        .map_err(Error::pg(location))?;
    Ok(row.map(|row| BudgetCap {
        dataset: dataset.to_string(),
        purpose,
        epsilon: row.get(0),
        delta: row.get(1),
        rho: row.get(2),
        set_at: Timestamp::from_unix_millis(row.get(3)),
    }))
}

/// (Σρ of private runs, private runs, non-private runs).
fn sum_runs(
    client: &mut impl postgres::GenericClient,
    location: &str,
    dataset: &str,
    purpose: BudgetPurpose,
) -> Result<(f64, u64, u64)> {
    let row = client
        .query_one(
            "SELECT COALESCE(SUM(rho), 0.0)::DOUBLE PRECISION, COUNT(rho), COUNT(*) - COUNT(rho) FROM budget_runs
             WHERE dataset = $1 AND purpose = $2",
            &[&dataset, &purpose.as_str()],
        )
        .map_err(Error::pg(location))?;
    Ok((row.get(0), row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64))
}

/// Whether `e` says the connection is gone: closed, broken (an I/O error),
/// or ended by the server (its shutdown, `pg_terminate_backend`, SQLSTATE
/// class 08 and 57P).
fn connection_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
}

/// The part of a connection error people can act on, without the password.
pub(crate) fn connect_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection plans hush's statements once (generic plans), not
    /// per execution.
    #[test]
    fn connections_use_generic_plans() {
        let mut store = PgStore::connect(&hush_testkit::postgres_url(), ConnectOptions::default()).unwrap();
        let mode: String = store.client.query_one("SHOW plan_cache_mode", &[]).unwrap().get(0);
        assert_eq!(mode, "force_generic_plan");
    }

    /// A write transaction plans its statements per execution (the tables it
    /// looks up grow under a cached plan), and the connection's reads keep
    /// their generic plans after it, committed or rolled back.
    #[test]
    fn write_transactions_plan_per_execution() {
        let mut store = PgStore::connect(&hush_testkit::postgres_url(), ConnectOptions::default()).unwrap();
        let mode = |client: &mut Client| -> String { client.query_one("SHOW plan_cache_mode", &[]).unwrap().get(0) };
        let batch = store.batch().unwrap();
        assert_eq!(mode(batch.tx), "force_custom_plan");
        batch.commit().unwrap();
        assert_eq!(mode(&mut store.client), "force_generic_plan");
        let batch = store.batch().unwrap();
        assert_eq!(mode(batch.tx), "force_custom_plan");
        drop(batch);
        assert_eq!(mode(&mut store.client), "force_generic_plan");
    }
}
