//! From the column values a driver read to hush's types: the one decoder of
//! both backends, so a value is read back by the same rules wherever it was
//! stored. Each returns what was wrong as text; the backend adds where.

use crate::budget::{BudgetPurpose, BudgetRun, RunGuarantee, RunState};
use crate::keys::ApiKeyRecord;
use crate::{ConsentRecord, ConsentSource, Event, EventKind, Pseudonym, Purpose, Timestamp};

/// The columns of a consent record, in the order both backends select them
/// (`id, purpose, granted, effective_at, recorded_at, source, notice_version, proof_ref`).
pub(crate) struct RecordColumns<'a> {
    pub seq: i64,
    pub purpose: &'a str,
    pub granted: bool,
    pub effective_at: i64,
    pub recorded_at: i64,
    pub source: &'a str,
    pub notice_version: String,
    pub proof_ref: Option<String>,
}

/// A consent record.
pub(crate) fn record(c: RecordColumns<'_>) -> Result<ConsentRecord, String> {
    Ok(ConsentRecord {
        seq: c.seq,
        purpose: c.purpose.parse::<Purpose>().map_err(|e| e.to_string())?,
        granted: c.granted,
        effective_at: Timestamp::from_unix_millis(c.effective_at),
        recorded_at: Timestamp::from_unix_millis(c.recorded_at),
        source: c.source.parse::<ConsentSource>().map_err(|e| e.to_string())?,
        notice_version: c.notice_version,
        proof_ref: c.proof_ref,
    })
}

/// An event (`item, kind, value, at`); values are stored as doubles and held as `f32`.
pub(crate) fn event(item: String, kind: &str, value: f64, at: i64) -> Result<Event, String> {
    Ok(Event {
        item,
        kind: kind.parse::<EventKind>().map_err(|e| e.to_string())?,
        value: value as f32,
        at: Timestamp::from_unix_millis(at),
    })
}

/// A pseudonym, stored as its 32 bytes.
pub(crate) fn pseudonym(bytes: Vec<u8>) -> Result<Pseudonym, String> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| "stored pseudonym is not 32 bytes".to_string())?;
    Ok(Pseudonym::from_bytes(bytes))
}

/// An API key's secret digest, stored as its 32 bytes.
pub(crate) fn key_digest(bytes: Vec<u8>) -> Result<[u8; 32], String> {
    bytes.try_into().map_err(|_| "stored key digest is not 32 bytes".to_string())
}

/// An API key record (`key_id, name, scopes, created_at, revoked_at`); scopes are stored comma-separated.
pub(crate) fn api_key(
    key_id: String,
    name: String,
    scopes: &str,
    created_at: i64,
    revoked_at: Option<i64>,
) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id,
        name,
        scopes: scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        created_at: Timestamp::from_unix_millis(created_at),
        revoked_at: revoked_at.map(Timestamp::from_unix_millis),
    }
}

/// A budget purpose.
pub(crate) fn budget_purpose(text: &str) -> Result<BudgetPurpose, String> {
    BudgetPurpose::parse(text).ok_or_else(|| format!("unknown budget purpose `{text}`"))
}

/// The columns of a budget run, in the order both backends select them
/// (`run_key, dataset, purpose, model_id, epsilon, delta, rho, snapshot_at, state, created_at`).
pub(crate) struct RunColumns<'a> {
    pub run_key: String,
    pub dataset: String,
    pub purpose: &'a str,
    pub model_id: Option<String>,
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    pub rho: Option<f64>,
    pub snapshot_at: i64,
    pub state: &'a str,
    pub created_at: i64,
}

/// The columns [`RunColumns`] names, for a `SELECT`.
pub(crate) const RUN_COLUMNS: &str =
    "run_key, dataset, purpose, model_id, epsilon, delta, rho, snapshot_at, state, created_at";

/// A budget run; a run without ρ is non-private.
pub(crate) fn run(c: RunColumns<'_>) -> Result<BudgetRun, String> {
    let guarantee = match (c.rho, c.epsilon, c.delta) {
        (Some(rho), Some(epsilon), Some(delta)) => Some(RunGuarantee { epsilon, delta, rho }),
        (None, _, _) => None,
        _ => return Err(format!("budget run `{}` has rho without its epsilon and delta", c.run_key)),
    };
    Ok(BudgetRun {
        purpose: budget_purpose(c.purpose)?,
        state: RunState::parse(c.state).ok_or_else(|| format!("unknown run state `{}`", c.state))?,
        run_key: c.run_key,
        dataset: c.dataset,
        model_id: c.model_id,
        guarantee,
        snapshot_at: Timestamp::from_unix_millis(c.snapshot_at),
        created_at: Timestamp::from_unix_millis(c.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns<'a>(purpose: &'a str, source: &'a str) -> RecordColumns<'a> {
        RecordColumns {
            seq: 7,
            purpose,
            granted: true,
            effective_at: 1_000,
            recorded_at: 2_000,
            source,
            notice_version: "v1".into(),
            proof_ref: None,
        }
    }

    #[test]
    fn a_stored_record_reads_back_as_written_and_a_bad_name_is_named() {
        let record = record(columns("training", "import")).unwrap();
        assert_eq!((record.seq, record.purpose, record.source), (7, Purpose::Training, ConsentSource::Import));
        assert_eq!(record.effective_at, Timestamp::from_unix_millis(1_000));
        let error = super::record(columns("marketing", "api")).unwrap_err();
        assert!(error.contains("marketing"), "{error}");
        let error = super::record(columns("training", "fax")).unwrap_err();
        assert!(error.contains("fax"), "{error}");
    }

    #[test]
    fn events_pseudonyms_and_keys_refuse_what_cannot_be_theirs() {
        let e = event("i1".into(), "rating", 4.5, 3_000).unwrap();
        assert_eq!((e.kind, e.value), (EventKind::Rating, 4.5));
        assert!(event("i1".into(), "Not A Kind", 1.0, 0).unwrap_err().contains("Not A Kind"));
        assert!(pseudonym(vec![1; 31]).unwrap_err().contains("32 bytes"));
        assert_eq!(pseudonym(vec![9; 32]).unwrap().as_bytes(), &[9; 32]);
        assert!(key_digest(vec![0; 33]).is_err());
        let key = api_key("k".into(), "n".into(), "recommend,,admin", 5, Some(6));
        assert_eq!(key.scopes, ["recommend", "admin"]);
        assert_eq!(key.revoked_at, Some(Timestamp::from_unix_millis(6)));
    }

    #[test]
    fn a_run_is_private_exactly_when_it_has_rho_and_a_half_guarantee_is_corrupt() {
        let run_of = |epsilon, delta, rho, state| RunColumns {
            run_key: "r".into(),
            dataset: "d".into(),
            purpose: "release",
            model_id: None,
            epsilon,
            delta,
            rho,
            snapshot_at: 0,
            state,
            created_at: 0,
        };
        let private = run(run_of(Some(1.0), Some(1e-6), Some(0.02), "committed")).unwrap();
        assert_eq!(private.guarantee, Some(RunGuarantee { epsilon: 1.0, delta: 1e-6, rho: 0.02 }));
        assert_eq!(private.state, RunState::Committed);
        assert_eq!(run(run_of(None, None, None, "reserved")).unwrap().guarantee, None);
        assert!(run(run_of(None, Some(1e-6), Some(0.02), "reserved")).unwrap_err().contains("rho without"));
        assert!(run(run_of(None, None, None, "spent")).unwrap_err().contains("spent"));
        assert!(budget_purpose("marketing").unwrap_err().contains("marketing"));
    }
}
