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
/// processes, never share one (the last rename wins, whole). A symbolic
/// link at `path` to a regular file is replaced, not written through.
///
/// Where a file cannot be replaced, it is written in place instead, with
/// no promise of atomicity: a stream (a pipe, a FIFO, a terminal,
/// `/dev/null`, `/dev/stdout`; anything that exists under `/dev` or
/// `/proc`, which are never replaced), a regular file in a directory this process may not
/// create files in, and a file the rename cannot replace (a bind mount).
///
/// # Errors
/// The I/O error that stopped it (from `contents` too).
pub fn write_atomically(
    path: &Path,
    access: Access,
    contents: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if is_stream(path) {
        // A regular file behind `/dev/stdout` is the shell's redirection:
        // truncated as before, its mode left to whoever made it.
        let regular = std::fs::metadata(path).is_ok_and(|meta| meta.is_file());
        let file = std::fs::OpenOptions::new().write(true).truncate(regular).open(path)?;
        return write_through(file, contents);
    }
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
    let created = match options.open(&temp.0) {
        // A file someone may write in a directory they may not create
        // files in: it can only be written in place.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && is_regular_file(path) => {
            return write_through(open_in_place(path, access)?, contents);
        }
        created => created?,
    };
    let mut writer = std::io::BufWriter::new(created);
    contents(&mut writer)?;
    let mut file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    match std::fs::rename(&temp.0, path) {
        Ok(()) => std::mem::forget(temp),
        // A bind-mounted file cannot be replaced, only rewritten: copy the
        // finished temporary file into it (the temporary is then removed).
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
            use std::io::Seek;
            file.rewind()?;
            write_through(open_in_place(path, access)?, |w| std::io::copy(&mut file, w).map(drop))?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Whether `path` is something to write into rather than replace: not a
/// regular file, a directory or nothing (a FIFO, a device, a socket, or a
/// link to one), or anything already on the device and process file
/// systems (`/dev/stdout` is a link into `/proc`; replacing it as root
/// would break the machine).
fn is_stream(path: &Path) -> bool {
    if (path.starts_with("/dev") || path.starts_with("/proc")) && path.exists() {
        return true;
    }
    // Following links: a link to a pipe is written through, a link to a
    // regular file (or to nothing) is replaced.
    std::fs::metadata(path).is_ok_and(|meta| !meta.is_file() && !meta.is_dir())
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
}

/// Opens the regular file at `path` to be rewritten in place, owner-only
/// if `access` says so.
fn open_in_place(path: &Path, access: Access) -> std::io::Result<std::fs::File> {
    match access {
        Access::OwnerOnly => create_owner_only(path),
        Access::Shared => std::fs::OpenOptions::new().write(true).truncate(true).open(path),
    }
}

/// Runs `contents` on `file` and flushes it.
fn write_through(
    file: std::fs::File,
    contents: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut writer = std::io::BufWriter::new(file);
    contents(&mut writer)?;
    writer.flush()
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
    fn streams_and_devices_are_written_into_never_replaced() {
        // `hush export --out /dev/stdout`, a FIFO another process reads,
        // `/dev/null`: written through, and still what they were.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("export.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let link = dir.path().join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for path in [&fifo, &link] {
            let reader = {
                let fifo = fifo.clone();
                std::thread::spawn(move || std::fs::read(fifo).unwrap())
            };
            write_owner_only(path, b"{\"subject\": 1}").unwrap();
            assert_eq!(reader.join().unwrap(), b"{\"subject\": 1}", "the reader got it through {path:?}");
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file beside them");

        let null = Path::new("/dev/null");
        let before = std::fs::symlink_metadata(null).unwrap();
        write_owner_only(null, b"discarded").unwrap();
        write_atomically(null, Access::Shared, |w| w.write_all(b"discarded")).unwrap();
        let after = std::fs::symlink_metadata(null).unwrap();
        assert!(after.file_type().is_char_device(), "/dev/null is still a device");
        assert_eq!(after.permissions().mode(), before.permissions().mode(), "and its mode is untouched");
    }

    #[test]
    fn a_file_in_a_directory_closed_to_new_files_is_rewritten_in_place() {
        // Root creates files anywhere: as root, the test runs itself again
        // as `nobody` (util-linux's `setpriv`).
        if std::fs::metadata("/proc/self").is_ok_and(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0) {
            let name = "files::tests::a_file_in_a_directory_closed_to_new_files_is_rewritten_in_place";
            let run = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .output()
                .expect("setpriv (util-linux) runs this test as nobody");
            let out = String::from_utf8_lossy(&run.stdout);
            let err = String::from_utf8_lossy(&run.stderr);
            assert!(run.status.success() && out.contains("1 passed"), "as nobody: {out}{err}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, b"an older, longer report").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        let written = write_owner_only(&path, b"new");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        written.unwrap();
        assert_eq!((mode(&path), std::fs::read(&path).unwrap()), (0o600, b"new".to_vec()));
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
