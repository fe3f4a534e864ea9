//! Atomic file writes: after a crash a file holds its old contents or its new ones, never
//! a mix, and a write that returned `Ok` survives a power loss.
//!
//! The recipe is the usual one: write a temporary file in the same directory (created
//! with the final mode, so a secret is never readable by others even for a moment),
//! `fsync` it, rename it over the target (`tempfile::NamedTempFile::persist`, or
//! `persist_noclobber` to refuse an existing file), then `fsync` the directory so the
//! rename itself is durable. A failed write removes its temporary file; a crash may leave
//! one behind, named `.<file name>.<random>.tmp`, which readers skip.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

/// Replaces `path` with `contents`, atomically and durably; a new file gets `mode`
/// (Unix permission bits, narrowed by the umask as usual).
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write(path, contents, mode, Replace::Yes)
}

/// Creates `path` with `contents`, atomically and durably, failing with
/// [`io::ErrorKind::AlreadyExists`] if it exists (two writers racing: one wins, the other
/// sees the error and can read what the winner wrote).
pub fn create_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write(path, contents, mode, Replace::No)
}

/// Makes the directory's entries (a rename, a deletion) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    No,
}

fn write(path: &Path, contents: &[u8], mode: u32, replace: Replace) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    // Dropped on any error below: the temporary file is removed.
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    match replace {
        Replace::Yes => tmp.persist(path).map_err(|e| e.error)?,
        Replace::No => tmp.persist_noclobber(path).map_err(|e| e.error)?,
    };
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_write_replaces_the_whole_file_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.json");
        write_atomically(&path, b"first, and longer", 0o600).unwrap();
        write_atomically(&path, b"second", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_is_the_files_from_the_start() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("master.key");
        write_atomically(&secret, &[7; 32], 0o600).unwrap();
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        // A replaced file takes the new mode too (the temporary file's).
        write_atomically(&secret, &[8; 32], 0o400).unwrap();
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o400);
    }

    #[test]
    fn create_refuses_an_existing_file_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        create_atomically(&path, b"winner", 0o600).unwrap();
        let err = create_atomically(&path, b"loser", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"winner");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        write_atomically(&path, b"old", 0o600).unwrap();
        // A directory in the way of the rename: the write fails, the old file is untouched.
        let blocked = dir.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomically(&blocked, b"new", 0o600).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
        assert!(write_atomically(Path::new("/"), b"x", 0o600).is_err(), "no file name");
    }
}
