//! Writing files: those that hold personal data (the SQLite store, its
//! write-ahead log, subject exports) are readable and writable by their
//! owner only, like the pseudonymization key file; and any file can be
//! replaced atomically ([`write_atomically`]).

use std::io::Write;
use std::path::Path;

/// The mode of every file hush writes personal data to.
#[cfg(unix)]
const OWNER_ONLY: u32 = 0o600;

/// Writes `bytes` to `path`, readable by its owner only, all at once or not
/// at all: [`write_atomically`] with [`Access::OwnerOnly`].
///
/// # Errors
/// The I/O error that stopped it.
pub fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, Access::OwnerOnly, |file| file.write_all(bytes))
}

/// Creates (or truncates) `path` for writing, readable by its owner only:
/// for files derived from personal data (feature sets, private evaluation
/// reports, models before release).
///
/// # Errors
/// The I/O error that stopped it.
pub fn create_owner_only(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(OWNER_ONLY);
    }
    let file = options.open(path)?;
    // `mode` applies only to a file it creates: tighten one that was there.
    restrict(path)?;
    Ok(file)
}

/// Creates `path` empty and owner-only if it does not exist; makes it
/// owner-only if it does. For files another library then opens (SQLite
/// creates its `-wal` and `-shm` files with the mode of the database file).
///
/// # Errors
/// The I/O error that stopped it.
pub fn prepare_owner_only(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(OWNER_ONLY);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict(path),
        Err(e) => Err(e),
    }
}

/// Who may read a file [`write_atomically`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Its owner only: anything derived from personal data (feature sets,
    /// train/test splits, models before release).
    OwnerOnly,
    /// Whatever the process's umask allows: aggregates meant to be shared
    /// (a sweep's results and report).
    Shared,
}

/// Writes `path` all at once or not at all: `contents` writes a temporary
/// file beside it, which is flushed, synced and renamed over `path`.
/// Creates the parent directory. On any failure (a panic in `contents`
/// too) the temporary file is removed and a file already at `path` is left
/// as it was.
///
/// The temporary file is new: created exclusively (never an existing file
/// or a symbolic link someone planted under its name), and named for this
/// process and this call, so concurrent writers of one path, in threads or
/// processes, never share one (the last rename wins, whole).
///
/// # Errors
/// The I/O error that stopped it (from `contents` too).
pub fn write_atomically(
    path: &Path,
    access: Access,
    contents: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{call}", std::process::id()));
    let temp = Removed(path.with_file_name(name));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if access == Access::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(OWNER_ONLY);
    }
    let mut writer = std::io::BufWriter::new(options.open(&temp.0)?);
    contents(&mut writer)?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&temp.0, path)?;
    std::mem::forget(temp);
    Ok(())
}

/// A temporary file, removed when dropped (on an error or a panic).
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(OWNER_ONLY))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_and_existing_files_end_up_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.json");
        write_owner_only(&fresh, b"{}").unwrap();
        assert_eq!(mode(&fresh), 0o600);
        let loose = dir.path().join("loose.json");
        std::fs::write(&loose, b"old").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_owner_only(&loose, b"new").unwrap();
        assert_eq!((mode(&loose), std::fs::read(&loose).unwrap()), (0o600, b"new".to_vec()));
        let db = dir.path().join("store.db");
        prepare_owner_only(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).unwrap();
        prepare_owner_only(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn personal_data_is_never_written_through_a_planted_link() {
        // An export or a model card written over a symbolic link replaces
        // the link: the data does not land in the world-readable file it
        // pointed at.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("world-readable.txt");
        std::fs::write(&target, b"untouched").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("export.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_owner_only(&link, b"{\"subject\": 1}").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
        assert_eq!(mode(&target), 0o644);
        assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!((mode(&link), std::fs::read(&link).unwrap()), (0o600, b"{\"subject\": 1}".to_vec()));
    }

    #[test]
    fn an_atomic_write_replaces_the_file_whole_or_leaves_it_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/split.csv");
        write_atomically(&path, Access::OwnerOnly, |w| w.write_all(b"first")).unwrap();
        assert_eq!((mode(&path), std::fs::read(&path).unwrap()), (0o600, b"first".to_vec()));
        let failed = write_atomically(&path, Access::OwnerOnly, |w| {
            w.write_all(b"half of the second")?;
            Err(std::io::Error::other("the writer failed"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "the writer failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"first", "the old file is untouched");
        let left: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("split.csv")], "no temporary file is left behind");
        let shared = dir.path().join("report.html");
        write_atomically(&shared, Access::Shared, |w| w.write_all(b"<p>")).unwrap();
        assert_eq!(std::fs::read(&shared).unwrap(), b"<p>");
        // A panic while writing removes the temporary file too.
        let panicked = std::panic::catch_unwind(|| {
            write_atomically(&path, Access::OwnerOnly, |_| panic!("the writer panicked")).unwrap();
        });
        assert!(panicked.is_err());
        let left: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("split.csv")], "no temporary file after a panic");
    }

    #[test]
    fn concurrent_writers_of_one_path_each_write_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cells.json");
        std::thread::scope(|scope| {
            for writer in 0..8u8 {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_atomically(path, Access::Shared, |w| w.write_all(&[b'a' + writer; 1 << 16])).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1 << 16);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "one writer's file, whole");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left behind");
    }
}
