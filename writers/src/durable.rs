//! State on disk, written the boring way (STYLE.md principle 10): a small file is replaced
//! atomically (write a temporary file beside it, fsync it, rename it over the old one, fsync the
//! directory), so a crash at any moment leaves either the old or the new content, never a mix.
//! Used for the spool's bookkeeping and, by the daemon, for persisted templates; the spool's
//! segments (append-only, a length and checksum per record) are in `spool.rs`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably: after `Ok`, a crash or power loss leaves
/// exactly `bytes` at `path`; after an error or a crash before it, `path` holds its old content
/// (or does not exist, if it did not). The temporary file is `path` with `.tmp` appended.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Fsyncs the directory holding `path`, so a file created, renamed or removed in it stays so
/// after a power loss.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs a directory (its entries: files created, renamed or removed in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("goflow-durable-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.bin");
        write_atomic(&path, b"one").expect("first");
        write_atomic(&path, b"two, longer").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"two, longer");
        assert!(!dir.join("state.bin.tmp").exists());
        // A directory where the file should be: the error leaves no temporary behind.
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("x")).expect("dir");
        assert!(write_atomic(&blocked, b"x").is_err());
        assert!(!dir.join("blocked.tmp").exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
