//! A byte-reproducible initramfs: the `newc` cpio format the kernel unpacks, written from an
//! in-memory tree.
//!
//! Everything that would make two builds of the same files differ is fixed here: entries are
//! written in byte order of their paths (parents before children), every entry has owner
//! 0:0, one modification time (the build's `SOURCE_DATE_EPOCH`), inode numbers counted from 1
//! in that order, and the mode the layout asks for, never the one a checkout left on disk.
//! The archive is not compressed (as nitro-cli's are not): no compressor's version or
//! header can change the bytes, and so the measurements.

use std::collections::BTreeMap;
use std::path::Path;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device (e.g. `/dev/console`, 5:1).
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// One entry: what it is and its permission bits (`0o755`, `0o600`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The kind and contents.
    pub kind: Kind,
    /// Permission bits only (the file-type bits come from `kind`).
    pub perm: u32,
}

/// Errors building an archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// A path that cannot go into an initramfs.
    #[error("bad path {0:?}: relative, no `.`/`..`, no empty components")]
    BadPath(String),
    /// Two entries disagree about a path (a file where a directory is needed).
    #[error("{0:?} is needed as a directory but is another kind of entry")]
    NotADirectory(String),
    /// A host file that is neither a file, a directory nor a symlink.
    #[error("{0}: only regular files, directories and symlinks can be packed")]
    Unsupported(String),
    /// Reading the host tree failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being read.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A field does not fit the format (a file over 4 GiB).
    #[error("{0:?} is too large for a newc archive")]
    TooLarge(String),
}

/// An archive being assembled: a sorted map from path (no leading `/`) to entry.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entry, and the directories above it (0755) when missing.
    pub fn add(&mut self, path: &str, kind: Kind, perm: u32) -> Result<(), CpioError> {
        let path = normalize(path)?;
        let mut parent = String::new();
        for component in path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            kind: Kind::Dir,
                            perm: 0o755,
                        },
                    );
                }
                Some(Entry { kind: Kind::Dir, .. }) => {}
                Some(_) => return Err(CpioError::NotADirectory(parent)),
            }
        }
        if kind != Kind::Dir && self.entries.keys().any(|k| k.starts_with(&format!("{path}/"))) {
            return Err(CpioError::NotADirectory(path));
        }
        self.entries.insert(
            path,
            Entry {
                kind,
                perm: perm & 0o7777,
            },
        );
        Ok(())
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.add(path, Kind::Dir, perm)
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, contents: Vec<u8>, perm: u32) -> Result<(), CpioError> {
        self.add(path, Kind::File(contents), perm)
    }

    /// Adds a host directory tree under `prefix`, keeping each entry's permission bits (a
    /// mock data directory's 0600 key must stay 0600) but not its owner or times.
    pub fn add_tree(&mut self, root: &Path, prefix: &str) -> Result<(), CpioError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| CpioError::Io { path, source }
        };
        let mut stack = vec![(root.to_path_buf(), prefix.trim_matches('/').to_string())];
        while let Some((dir, at)) = stack.pop() {
            let meta = std::fs::symlink_metadata(&dir).map_err(io(&dir))?;
            if !at.is_empty() {
                self.dir(&at, meta.permissions().mode())?;
            }
            for item in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let item = item.map_err(io(&dir))?;
                let host = item.path();
                let name = item.file_name().to_string_lossy().into_owned();
                let inside = if at.is_empty() { name } else { format!("{at}/{name}") };
                let meta = std::fs::symlink_metadata(&host).map_err(io(&host))?;
                let perm = meta.permissions().mode();
                if meta.is_dir() {
                    stack.push((host, inside));
                } else if meta.is_file() {
                    self.file(&inside, std::fs::read(&host).map_err(io(&host))?, perm)?;
                } else if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&host).map_err(io(&host))?;
                    self.add(&inside, Kind::Symlink(target.to_string_lossy().into_owned()), 0o777)?;
                } else {
                    return Err(CpioError::Unsupported(host.display().to_string()));
                }
            }
        }
        Ok(())
    }

    /// The entries in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// The archive's bytes: every entry in path order, then the trailer.
    pub fn to_bytes(&self, mtime: u32) -> Result<Vec<u8>, CpioError> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (type_bits, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.kind {
                Kind::Dir => (0o040000, 2, &[], (0, 0)),
                Kind::File(bytes) => (0o100000, 1, bytes, (0, 0)),
                Kind::Symlink(target) => (0o120000, 1, target.as_bytes(), (0, 0)),
                Kind::CharDev { major, minor } => (0o020000, 1, &[], (*major, *minor)),
            };
            let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.clone()))?;
            write_header(
                &mut out,
                &Header {
                    ino,
                    mode: type_bits | entry.perm,
                    nlink,
                    mtime,
                    size,
                    rdev,
                },
                path,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        write_header(
            &mut out,
            &Header {
                ino: 0,
                mode: 0,
                nlink: 1,
                mtime: 0,
                size: 0,
                rdev: (0, 0),
            },
            "TRAILER!!!",
        );
        Ok(out)
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
}

/// `070701`, then 13 eight-digit hex fields, the name and its NUL, padded to 4 bytes.
fn write_header(out: &mut Vec<u8>, h: &Header, name: &str) {
    let namesize = name.len() as u32 + 1;
    let fields = [
        h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.size, 0, 0, h.rdev.0, h.rdev.1, namesize, 0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// `/usr/bin/x` and `usr/bin/x` are the same entry; `..`, `.` and empty components are refused.
fn normalize(path: &str) -> Result<String, CpioError> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(CpioError::BadPath(path.to_string()));
    }
    Ok(trimmed.to_string())
}

/// One entry read back from an archive (tests, `describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// The path as stored.
    pub path: String,
    /// Full mode (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: u32,
    /// The contents (file data or symlink target).
    pub data: Vec<u8>,
}

/// Reads a newc archive (up to its trailer) back into entries.
pub fn read(bytes: &[u8]) -> Result<Vec<ReadEntry>, String> {
    let mut pos = 0usize;
    let mut out = Vec::new();
    loop {
        let head = bytes
            .get(pos..pos + 110)
            .ok_or_else(|| format!("truncated header at {pos}"))?;
        if &head[..6] != b"070701" {
            return Err(format!("bad magic at {pos}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let text = std::str::from_utf8(&head[6 + 8 * i..14 + 8 * i]).map_err(|e| e.to_string())?;
            u32::from_str_radix(text, 16).map_err(|e| e.to_string())
        };
        let (mode, uid, gid, mtime, size, namesize) =
            (field(1)?, field(2)?, field(3)?, field(5)?, field(6)?, field(11)?);
        let name_at = pos + 110;
        let name_len = (namesize as usize).checked_sub(1).ok_or("empty name")?;
        let name = bytes.get(name_at..name_at + name_len).ok_or("truncated name")?;
        let name = String::from_utf8(name.to_vec()).map_err(|e| e.to_string())?;
        let data_at = (name_at + namesize as usize).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        let data = bytes
            .get(data_at..data_at + size as usize)
            .ok_or("truncated data")?
            .to_vec();
        pos = (data_at + size as usize).next_multiple_of(4);
        out.push(ReadEntry {
            path: name,
            mode,
            uid,
            gid,
            mtime,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sorted_owned_by_root_and_dated_once() {
        let mut a = Archive::new();
        a.file("usr/local/bin/tandem-enclave", b"\x7fELF".to_vec(), 0o755)
            .unwrap();
        a.file("/etc/tandem/enclave.conf", b"exec /x\n".to_vec(), 0o644)
            .unwrap();
        a.add("dev/console", Kind::CharDev { major: 5, minor: 1 }, 0o600)
            .unwrap();
        let bytes = a.to_bytes(1_700_000_000).unwrap();
        assert!(bytes.len().is_multiple_of(4));
        let read = read(&bytes).unwrap();
        let paths: Vec<_> = read.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "etc",
                "etc/tandem",
                "etc/tandem/enclave.conf",
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/tandem-enclave"
            ]
        );
        assert!(
            read.iter()
                .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 1_700_000_000)
        );
        assert_eq!(read[1].mode, 0o020600);
        assert_eq!(read[8].mode, 0o100755);
        assert_eq!(read[8].data, b"\x7fELF");
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut a = Archive::new();
        a.file("b", vec![1], 0o644).unwrap();
        a.file("a/x", vec![2], 0o644).unwrap();
        let mut b = Archive::new();
        b.file("a/x", vec![2], 0o644).unwrap();
        b.file("b", vec![1], 0o644).unwrap();
        assert_eq!(a.to_bytes(0).unwrap(), b.to_bytes(0).unwrap());
    }

    #[test]
    fn refuses_bad_paths_and_kind_clashes() {
        let mut a = Archive::new();
        assert!(a.file("../etc/passwd", vec![], 0o644).is_err());
        assert!(a.file("a//b", vec![], 0o644).is_err());
        assert!(a.file("", vec![], 0o644).is_err());
        a.file("f", vec![], 0o644).unwrap();
        assert!(matches!(a.file("f/g", vec![], 0o644), Err(CpioError::NotADirectory(_))));
        assert!(matches!(a.file("", vec![], 0o644), Err(CpioError::BadPath(_))));
    }

    #[test]
    fn host_trees_keep_permissions_but_not_owners_or_times() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("attestation")).unwrap();
        std::fs::write(dir.path().join("master.key"), b"k").unwrap();
        std::fs::set_permissions(dir.path().join("master.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("attestation/dev-root.pem"), b"pem").unwrap();
        let mut a = Archive::new();
        a.add_tree(dir.path(), "data").unwrap();
        let read = read(&a.to_bytes(7).unwrap()).unwrap();
        let key = read.iter().find(|e| e.path == "data/master.key").unwrap();
        assert_eq!(key.mode & 0o7777, 0o600);
        assert!(read.iter().any(|e| e.path == "data/attestation/dev-root.pem"));
        assert!(read.iter().all(|e| e.mtime == 7 && e.uid == 0));
    }
}
