//! Finished sweep cells on disk, one JSON file each, so an interrupted sweep
//! resumes without recomputing them.
//!
//! Each cell is written to a temporary file and renamed into place, so a
//! cell file is either complete or absent, whenever the sweep is stopped.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::sweep::{Cell, SweepSpec};
use crate::{Error, Result};

/// The cell files of one sweep's output directory.
#[derive(Debug)]
pub struct CellStore {
    dir: PathBuf,
    fingerprint: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` atomically ([`hush_vocab::files::write_atomically`]),
/// readable as the umask allows: a sweep's cells, results and report are
/// aggregates meant to be shared.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    hush_vocab::files::write_atomically(path, hush_vocab::files::Access::Shared, |file| file.write_all(bytes))
        .map_err(io(path))
}

impl CellStore {
    /// Opens (creating) `out/cells` for `spec`. A directory holding cells
    /// of a sweep with other settings is refused rather than mixed.
    ///
    /// # Errors
    /// [`Error::Results`] for a directory of another sweep; [`Error::Io`].
    pub fn open(out: &Path, spec: &SweepSpec) -> Result<Self> {
        let dir = out.join("cells");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let fingerprint = spec.fingerprint();
        let marker = dir.join("FINGERPRINT");
        match std::fs::read_to_string(&marker) {
            Ok(found) if found.trim() != fingerprint => {
                return Err(Error::Results(format!(
                    "{} holds cells of a sweep with other settings (data, split, delta, k, training \
                     parameters or the seed derivation differ: fingerprint {} here, {fingerprint} now); use another --out, or --fresh \
                     to discard them",
                    out.display(),
                    found.trim()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomically(&marker, fingerprint.as_bytes())?,
            Err(e) => return Err(Error::Io { path: marker, source: e }),
        }
        Ok(CellStore { dir, fingerprint })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The finished cell `key`, if there is one.
    ///
    /// # Errors
    /// [`Error::Results`] for a cell file that does not parse or belongs to
    /// another sweep (named, so it can be removed); [`Error::Io`].
    pub fn get(&self, key: &str) -> Result<Option<Cell>> {
        let path = self.path(key);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let cell: Cell = serde_json::from_str(&text).map_err(|e| {
            Error::Results(format!("{}:{}: {e}; delete the file to recompute the cell", path.display(), e.line()))
        })?;
        if cell.fingerprint != self.fingerprint || cell.key() != key {
            return Err(Error::Results(format!(
                "{} is not cell {key} of this sweep; delete it to recompute the cell",
                path.display()
            )));
        }
        Ok(Some(cell))
    }

    /// Stores a finished cell.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn put(&self, cell: &Cell) -> Result<()> {
        let json = serde_json::to_vec_pretty(cell).map_err(|e| Error::Results(e.to_string()))?;
        write_atomically(&self.path(&cell.key()), &json)
    }
}
