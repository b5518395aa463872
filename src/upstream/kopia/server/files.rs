//! The files of a repository directory: its key, its record files and what tells that a record
//! file changed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::repository::KEY_FILE;

/// The key in `dir/.repository-key`, made (random) when there is none.
pub(super) fn repository_key(dir: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            let key: Option<Vec<u8>> = (text.len() == 64)
                .then(|| (0..64).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect())
                .flatten();
            key.with_context(|| format!("{} must hold 64 hexadecimal characters", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0; 32];
            openssl::rand::rand_bytes(&mut key)?;
            write_key(dir, &key)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `key` as the repository key of `dir` (readable by the owner only).
pub fn write_key(dir: &Path, key: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let path = dir.join(KEY_FILE);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&path)
        .and_then(|mut f| f.write_all(crate::upstream::kopia::ids::hex(key).as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// Every `*.json` under `dir`, hidden files and directories skipped, sorted.
pub(super) fn record_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What changes whenever a file's content does: a rewrite moves ctime (which nobody can set
/// back), a copy or rename brings another inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileStamp {
    len: u64,
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    pub(super) fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    pub(super) fn mtime_nanos(&self) -> i64 {
        self.mtime.0.saturating_mul(1_000_000_000).saturating_add(self.mtime.1)
    }

    /// File times are coarse: a file changed within a second of being read is read again.
    pub(super) fn changed_before(&self, t: SystemTime) -> bool {
        let ctime = UNIX_EPOCH + Duration::new(self.ctime.0.max(0) as u64, self.ctime.1.clamp(0, 999_999_999) as u32);
        ctime + Duration::from_secs(1) < t
    }
}
