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
/// link at `path` to a regular file is replaced, not written through. The
/// directory must accept new files; if it does not, nothing is written and
/// the error says so. Nothing in `/dev` itself or under `/proc` is ever
/// replaced: such a path is an error.
///
/// Three outputs cannot be replaced, and are written into instead, with no
/// promise of atomicity (a failure may leave them partly written):
/// - this process's standard output or error, however the path names it
///   (`/dev/stdout`, `/dev/fd/2`, a link to the file the shell redirected
///   it to): written to the stream itself, as a command without `--out`
///   prints (an append redirection keeps what it held; a file the shell
///   created keeps the mode the shell gave it);
/// - a stream: a FIFO or a socket this user owns (with [`Access::OwnerOnly`];
///   one another user made could hand the data to them), a character
///   device such as `/dev/null`, or a link to one; checked again on the
///   opened descriptor, so a stream swapped for a regular file between the
///   look and the open gets nothing. Block devices are refused;
/// - a regular file that is a mount point (a file bind-mounted into a
///   container), which rename cannot replace: the finished temporary file
///   is copied into it; with [`Access::OwnerOnly`] only if this user owns
///   it, after its mode is made owner-only.
///
/// # Errors
/// The I/O error that stopped it (from `contents` too), or one saying
/// which of the rules above refused `path`.
pub fn write_atomically(
    path: &Path,
    access: Access,
    contents: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(stream) = open_in_place(path, access)? {
        return write_through(stream, contents);
    }
    refuse_system_directory(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = Removed(temp_name(path, call));
    let mut options = std::fs::OpenOptions::new();
    // Readable too: a bind-mounted target is filled from it.
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    if access == Access::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(OWNER_ONLY);
    }
    let created = options.open(&temp.0).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                ": files are replaced whole, so their directory must accept new files"
            }
            _ => "",
        };
        std::io::Error::new(e.kind(), format!("cannot create a temporary file beside {} ({e}){why}", path.display()))
    })?;
    let mut writer = std::io::BufWriter::new(created);
    contents(&mut writer)?;
    let mut file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    match std::fs::rename(&temp.0, path) {
        Ok(()) => std::mem::forget(temp),
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => fill_mount_point(path, access, &mut file)?,
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The temporary file's name beside `path`: the file's name, cut short so
/// that the name with its suffix stays within the 255 bytes a name may have.
fn temp_name(path: &Path, call: u64) -> std::path::PathBuf {
    let suffix = format!(".tmp-{}-{call}", std::process::id());
    let name = path.file_name().unwrap_or_default();
    #[cfg(unix)]
    let mut temp = {
        use std::os::unix::ffi::OsStrExt;
        let bytes = name.as_bytes();
        std::ffi::OsStr::from_bytes(&bytes[..bytes.len().min(255 - suffix.len())]).to_os_string()
    };
    #[cfg(not(unix))]
    let mut temp = name.to_os_string();
    temp.push(suffix);
    path.with_file_name(temp)
}

/// Refuses a path whose directory is `/dev` itself or lies under `/proc`,
/// however spelled (`/dev/..`, `/proc/self/root/dev`): replacing a name
/// there breaks the machine (as root, `/dev/stdout` itself).
fn refuse_system_directory(path: &Path) -> std::io::Result<()> {
    let mut existing = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    while !existing.exists() {
        match existing.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => existing = parent,
            None => return Ok(()),
        }
    }
    let real = std::fs::canonicalize(existing)?;
    if real == Path::new("/dev") || real.starts_with("/proc") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is in {}, where hush replaces nothing: write to a file elsewhere, or to /dev/stdout",
                path.display(),
                real.display()
            ),
        ));
    }
    Ok(())
}

/// `path` opened to be written into, when it is this process's standard
/// output or error or a stream (see [`write_atomically`]); `None` when it
/// is to be replaced (a regular file, a link to one, or nothing yet).
#[cfg(unix)]
fn open_in_place(path: &Path, access: Access) -> std::io::Result<Option<std::fs::File>> {
    use std::io::Write as _;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(path) else { return Ok(None) };
    let same = |file: &std::fs::File| file.metadata().is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
    if let Ok(stdout) = std::io::stdout().as_fd().try_clone_to_owned().map(std::fs::File::from) {
        if same(&stdout) {
            std::io::stdout().lock().flush()?;
            return Ok(Some(stdout));
        }
    }
    if let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from) {
        if same(&stderr) {
            return Ok(Some(stderr));
        }
    }
    if meta.is_file() || meta.is_dir() {
        return Ok(None);
    }
    let refused = |what: String| std::io::Error::other(format!("{}: {what}; nothing was written", path.display()));
    let check = |meta: &std::fs::Metadata| -> std::io::Result<()> {
        let kind = meta.file_type();
        if kind.is_block_device() {
            return Err(refused("a block device".into()));
        }
        if access == Access::OwnerOnly && !kind.is_char_device() && meta.uid() != effective_uid()? {
            return Err(refused(format!(
                "a FIFO or socket of another user (uid {}), who could read what is written",
                meta.uid()
            )));
        }
        Ok(())
    };
    check(&meta)?;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let opened = file.metadata()?;
    if opened.is_file() {
        return Err(refused("changed from a stream to a regular file while it was being opened".into()));
    }
    check(&opened)?;
    Ok(Some(file))
}

#[cfg(not(unix))]
fn open_in_place(_path: &Path, _access: Access) -> std::io::Result<Option<std::fs::File>> {
    Ok(None)
}

/// This process's effective user: the owner of its `/proc/self`.
#[cfg(unix)]
fn effective_uid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|meta| meta.uid())
}

/// Copies the finished temporary file into the mount point at `path`: not
/// through a link (a link cannot be mounted on, so one found there now was
/// swapped in); with [`Access::OwnerOnly`] only into a file this user owns,
/// made owner-only first; then truncated and filled.
fn fill_mount_point(path: &Path, access: Access, finished: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::Seek;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut target = options.open(path)?;
    let meta = target.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!("{} is not a regular file; nothing was written", path.display())));
    }
    if access == Access::OwnerOnly {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if meta.uid() != effective_uid()? {
                return Err(std::io::Error::other(format!(
                    "{} is a mount point owned by another user (uid {}), who could read what is written; nothing \
                     was written",
                    path.display(),
                    meta.uid()
                )));
            }
        }
        restrict_open(&target)?;
    }
    target.set_len(0)?;
    finished.rewind()?;
    std::io::copy(finished, &mut target)?;
    target.sync_all()
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

/// [`restrict`] on an open file (`fchmod`): fails, changing nothing, on a
/// file this process does not own.
#[cfg(unix)]
fn restrict_open(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(OWNER_ONLY))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_open(_file: &std::fs::File) -> std::io::Result<()> {
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
        // Named through /proc (or with `..` through /dev), the link is
        // still replaced, not followed.
        let again = dir.path().join("again.json");
        std::os::unix::fs::symlink(&target, &again).unwrap();
        let via_proc = Path::new("/proc/self/root").join(again.strip_prefix("/").unwrap());
        write_owner_only(&via_proc, b"{}").unwrap();
        let via_dev = Path::new("/dev/..").join(again.strip_prefix("/").unwrap());
        write_owner_only(&via_dev, b"{}").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
        assert_eq!((mode(&again), std::fs::read(&again).unwrap()), (0o600, b"{}".to_vec()));
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

        // A FIFO another user planted where an export goes gets nothing.
        if is_root() {
            let planted = dir.path().join("planted.fifo");
            assert!(std::process::Command::new("mkfifo").arg(&planted).status().unwrap().success());
            std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
            let error = write_owner_only(&planted, b"{}").unwrap_err().to_string();
            assert!(error.contains("another user (uid 65534)") && error.contains("nothing was written"), "{error}");
            std::fs::remove_file(&planted).unwrap();
        }
        // Nothing is ever created or replaced in /dev itself.
        let in_dev = Path::new("/dev/hush-test-never-created");
        let error = write_owner_only(in_dev, b"{}").unwrap_err().to_string();
        assert!(error.contains("where hush replaces nothing"), "{error}");
        assert!(!in_dev.exists());
        let through_proc = Path::new("/proc/self/root/dev/hush-test-never-created");
        assert!(write_owner_only(through_proc, b"{}").is_err());
        assert!(!in_dev.exists());

        let null = Path::new("/dev/null");
        let before = std::fs::symlink_metadata(null).unwrap();
        write_owner_only(null, b"discarded").unwrap();
        write_atomically(null, Access::Shared, |w| w.write_all(b"discarded")).unwrap();
        let after = std::fs::symlink_metadata(null).unwrap();
        assert!(after.file_type().is_char_device(), "/dev/null is still a device");
        assert_eq!(after.permissions().mode(), before.permissions().mode(), "and its mode is untouched");
    }

    /// Runs the test `name` of this binary again in a child, as `wrapper`
    /// says (as another user, in a mount namespace of its own), with
    /// `HUSH_TEST_CHILD` set; asserts that it passed there.
    fn rerun_in(wrapper: &[&str], name: &str) {
        let run = std::process::Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env("HUSH_TEST_CHILD", "1")
            .output()
            .unwrap_or_else(|e| panic!("{} (util-linux) runs this test: {e}", wrapper[0]));
        let (out, err) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert!(run.status.success() && out.contains("1 passed"), "in the child: {out}{err}");
    }

    fn is_root() -> bool {
        std::fs::metadata("/proc/self").is_ok_and(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
    }

    #[test]
    fn a_directory_closed_to_new_files_is_refused_and_its_file_kept() {
        // Root creates files anywhere: as root, the test runs itself again
        // as `nobody` (util-linux's `setpriv`).
        let name = "files::tests::a_directory_closed_to_new_files_is_refused_and_its_file_kept";
        if is_root() {
            return rerun_in(&["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"], name);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, b"an older, longer report").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        let written = write_owner_only(&path, b"new");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let error = written.unwrap_err().to_string();
        assert!(error.contains("directory must accept new files") && error.contains("report.json"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"an older, longer report", "the file is untouched");
    }

    #[test]
    fn a_bind_mounted_file_is_filled_in_place_and_made_owner_only() {
        // Rename cannot replace a mount point (EBUSY). The test runs itself
        // again in a mount namespace of its own, where it may bind-mount.
        let name = "files::tests::a_bind_mounted_file_is_filled_in_place_and_made_owner_only";
        if std::env::var_os("HUSH_TEST_CHILD").is_none() {
            let wrapper: &[&str] = if is_root() {
                &["unshare", "--mount", "--propagation", "private", "--"]
            } else {
                &["unshare", "--map-root-user", "--mount", "--propagation", "private", "--"]
            };
            return rerun_in(wrapper, name);
        }
        let dir = tempfile::tempdir().unwrap();
        let (source, mounted) = (dir.path().join("host.json"), dir.path().join("in-container.json"));
        std::fs::write(&source, b"the old report, longer than the new").unwrap();
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&mounted, b"").unwrap();
        let bound = std::process::Command::new("mount").arg("--bind").args([&source, &mounted]).status().unwrap();
        assert!(bound.success(), "mount --bind");
        assert_eq!(std::fs::rename(&source, &mounted).unwrap_err().kind(), std::io::ErrorKind::ResourceBusy);
        // Another user's file mounted there gets no personal data (a
        // mapped root in a user namespace cannot hand a file to uid 65534:
        // then this part cannot run).
        if std::os::unix::fs::chown(&source, Some(65534), None).is_ok() {
            let error = write_owner_only(&mounted, b"{}").unwrap_err().to_string();
            assert!(error.contains("owned by another user"), "{error}");
            assert_eq!(std::fs::read(&source).unwrap(), b"the old report, longer than the new");
            std::os::unix::fs::chown(&source, Some(0), None).unwrap();
        }
        write_owner_only(&mounted, b"{\"subject\": 1}").unwrap();
        assert_eq!(std::fs::read(&source).unwrap(), b"{\"subject\": 1}", "the file behind the mount holds it");
        assert_eq!(mode(&source), 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file is left behind: {left:?}");
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
    fn a_name_at_the_length_limit_still_gets_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r".repeat(250));
        write_owner_only(&path, b"long").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"long");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left behind");
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
