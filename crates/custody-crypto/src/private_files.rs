//! Files that hold keys and personal data: created readable by their owner alone, and refused
//! when anyone else could read them (DESIGN.md §4 invariant 3; `docs/SECURITY.md`, "Files are
//! private"). The server's data directory and the agent's directory are made and checked with
//! these, so one rule holds for both.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The mode of a private directory: its owner alone may list, enter and write it.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a private file.
pub const FILE_MODE: u32 = 0o600;

/// A file or directory others could read or enter.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} can be read by other users (mode {mode:o}); run `chmod -R go-rwx {}` and start again",
    path.display(),
    fix.display()
)]
pub struct Exposed {
    /// What is exposed.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// The directory the fix applies to.
    pub fix: PathBuf,
}

/// Creates `dir` and any missing parents as private directories, and makes `dir` itself
/// private if it was there already (an operator's `mkdir` leaves it open to everyone).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        builder.mode(DIR_MODE);
        builder.create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Writes `contents` to `path`, readable by its owner alone, synced. With `replace` an existing
/// file is overwritten (and made private); without, an existing file is an error.
pub fn write(path: &Path, contents: &[u8], replace: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

/// Creates an empty private file at `path` unless one is there: a database created before its
/// engine opens it keeps these permissions, and SQLite gives its `-wal` and `-shm` files the
/// database file's own.
pub fn touch(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options.open(path).map(drop)
}

/// Checks that none of `paths` that exist can be read, written or entered by anyone but their
/// owner; `fix` is the directory the error's command applies to.
pub fn check(paths: &[PathBuf], fix: &Path) -> Result<(), Exposed> {
    #[cfg(unix)]
    for path in paths {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(meta) = std::fs::metadata(path) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Exposed { path: path.clone(), mode, fix: fix.to_owned() });
        }
    }
    let _ = (paths, fix);
    Ok(())
}

/// Checks every directory and regular file under `root` (symbolic links, such as a lock
/// board's pseudo-terminal, are not followed): how many were checked, or the first that others
/// could read.
pub fn check_tree(root: &Path) -> Result<usize, Exposed> {
    let mut stack = vec![root.to_owned()];
    let mut checked = 0;
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        } else if !meta.is_file() {
            continue;
        }
        check(std::slice::from_ref(&path), root)?;
        checked += 1;
    }
    Ok(checked)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly at the first unexpected value")]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn made_private_and_refused_when_not() {
        let temp = tempfile::tempdir().unwrap();
        let open = temp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&open.join("a/b")).unwrap();
        create_dir(&open).unwrap();
        assert_eq!([mode(&open), mode(&open.join("a")), mode(&open.join("a/b"))], [0o700; 3]);
        let file = open.join("a/secret");
        write(&file, b"one", false).unwrap();
        assert!(write(&file, b"two", false).is_err(), "never overwritten unasked");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&file, b"two", true).unwrap();
        assert_eq!(mode(&file), 0o600, "a replaced file is made private");
        touch(&open.join("db")).unwrap();
        assert_eq!(mode(&open.join("db")), 0o600);
        let paths = [open.clone(), open.join("a/secret"), open.join("missing")];
        check(&paths, &open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o750)).unwrap();
        let refused = check(&paths, &open).unwrap_err();
        assert_eq!(refused.mode, 0o750);
        assert!(refused.to_string().contains("chmod -R go-rwx"), "{refused}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_tree(&open).unwrap(), 5, "open, a, a/b, a/secret, db");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(check_tree(&open).unwrap_err().path, file);
    }
}
