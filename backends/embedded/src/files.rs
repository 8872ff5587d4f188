//! Who may open the file. It holds member and booking data, so the backend creates it, its
//! `-wal` and its `-shm` readable and writable by their owner only, whatever the umask. A file
//! that was there already keeps its mode: if its group or other accounts may open it, the
//! writer says so once at start-up, with the command that fixes it.
//!
//! The mode given to `open` is narrowed by the umask (never widened), so a file created here is
//! set to its mode again afterwards. SQLite creates the `-wal` and the `-shm` with the mode of
//! the database file (`findCreateFileMode` in its `os_unix.c`), and `settle` checks that they
//! came out private all the same.

use std::collections::HashSet;
use std::fs::{OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::OpenError;

/// Read and write for the owner, nothing for anyone else.
const PRIVATE: u32 = 0o600;

/// The permission bits of the file at `path` if they give its group or other accounts any
/// access (read, write or execute); `None` if they give none, or if there is no file.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The database file and the `-wal` and `-shm` SQLite keeps beside it.
pub fn family(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Which files of the family were there before the writer opened the database: taken by
/// [`create_private`], read by [`settle`].
pub(crate) struct Before([bool; 3]);

/// Creates the database file at `path`, empty and private, unless there is one already (or
/// another process creates it first). SQLite takes an empty file for a new database.
pub(crate) fn create_private(path: &Path) -> Result<Before, OpenError> {
    let family = family(path);
    let before = Before(family.clone().map(|p| p.symlink_metadata().is_ok()));
    if before.0[0] {
        return Ok(before);
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .open(path);
    match created {
        Ok(file) => file
            .set_permissions(Permissions::from_mode(PRIVATE))
            .map_err(|error| private_error(path, error))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(error) => return Err(private_error(path, error)),
    }
    Ok(before)
}

/// Once the writer has the database open in WAL mode: makes any file of the family created
/// since [`create_private`] private if it is not, and warns about each file that was there
/// already and is open to others (once per file and process).
pub(crate) fn settle(path: &Path, before: &Before) -> Result<(), OpenError> {
    let family = family(path);
    // A file created with a database that others may open copies its mode: the warning about
    // the database says what to do, and the new files follow the database's owner's choice.
    let database_private = readable_by_others(path).is_none();
    for (file, existed) in family.iter().zip(before.0) {
        let Some(mode) = readable_by_others(file) else {
            continue;
        };
        if !existed && database_private {
            std::fs::set_permissions(file, Permissions::from_mode(PRIVATE))
                .map_err(|error| private_error(file, error))?;
        } else {
            warn_once(file, mode);
        }
    }
    Ok(())
}

fn private_error(path: &Path, error: std::io::Error) -> OpenError {
    OpenError::Private {
        path: path.to_path_buf(),
        error,
    }
}

/// The files warned about so far: several backends in one process may open the same file.
static WARNED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();

fn warn_once(file: &Path, mode: u32) {
    let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let first = WARNED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key);
    if first {
        tracing::warn!(
            file = %file.display(),
            mode = %format_args!("{mode:03o}"),
            "the file holds member and booking data and other accounts may open it; `chmod 600 {}` makes it the owner's alone",
            file.display(),
        );
    }
}
