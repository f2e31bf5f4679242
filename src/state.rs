//! `state_dir`: the directory holding what must survive a restart (each backend's disk spool
//! under `spool/<backend>/`, the persisted templates and sampling state). [`StateDir::open`]
//! creates it at start and takes an exclusive `flock` on `state_dir/lock` for the life of the
//! process, so a second goflow pointed at the same directory refuses to start (naming the pid
//! that holds it) instead of both appending to one spool. The kernel drops the lock when the
//! process ends, however it ends (SIGKILL included), so a stale lock file never blocks a restart.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{FlockOperation, flock};

/// The lock file's name inside `state_dir`.
pub const LOCK_FILE: &str = "lock";
/// The spools' directory inside `state_dir` (one subdirectory per backend).
pub const SPOOL_DIR: &str = "spool";

/// An open, locked `state_dir`. Dropping it releases the lock.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// Holds the `flock` (released when the file is closed).
    _lock: File,
}

impl StateDir {
    /// Creates `path` (and its parents) if missing, and locks it. Fails with a message naming the
    /// directory when it cannot be created or written, or when another process holds its lock.
    pub fn open(path: &Path) -> anyhow::Result<StateDir> {
        fs::create_dir_all(path).with_context(|| {
            format!(
                "state_dir {}: cannot create it (set state_dir in the config to a writable \
                 directory)",
                path.display()
            )
        })?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| {
                format!(
                    "state_dir {}: cannot open its lock file {} (is the directory writable?)",
                    path.display(),
                    lock_path.display()
                )
            })?;
        if let Err(e) = flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("another goflow (pid {holder})")
                };
                bail!(
                    "state_dir {} is in use by {who} (lock file {}): give each goflow instance \
                     its own state_dir",
                    path.display(),
                    lock_path.display()
                );
            }
            return Err(std::io::Error::from(e)).with_context(|| {
                format!(
                    "state_dir {}: cannot lock {}",
                    path.display(),
                    lock_path.display()
                )
            });
        }
        // Ours now: record the pid for the message another instance prints.
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .and_then(|()| lock.flush())
            .with_context(|| {
                format!(
                    "state_dir {}: cannot write {}",
                    path.display(),
                    lock_path.display()
                )
            })?;
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spool directory of backend `name` (not created here: the spool creates it). Names
    /// are config keys; anything but ASCII letters, digits, `-`, `_` and `.` is written as
    /// `%XX`, so every name maps to one directory and no name escapes `spool/`.
    pub fn spool_dir(&self, name: &str) -> PathBuf {
        self.path.join(SPOOL_DIR).join(file_name_for(name))
    }
}

/// `name` as one safe path component (see [`StateDir::spool_dir`]).
pub fn file_name_for(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_locks_and_refuses_a_second_instance() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/state");
        let first = StateDir::open(&dir).expect("first open");
        assert!(dir.join(LOCK_FILE).exists());
        let pid = fs::read_to_string(dir.join(LOCK_FILE)).expect("lock file");
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock locks belong to the open file description: a second open in this process
        // conflicts just as another process would.
        let err = StateDir::open(&dir).expect_err("second open");
        let msg = format!("{err:#}");
        assert!(msg.contains("in use by another goflow"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        StateDir::open(&dir).expect("open after release");
    }

    #[test]
    fn an_uncreatable_directory_is_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("plain-file");
        fs::write(&file, b"x").expect("write");
        let err = StateDir::open(&file.join("state")).expect_err("under a file");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("cannot create it") && msg.contains("plain-file"),
            "{msg}"
        );
    }

    #[test]
    fn backend_names_become_one_safe_component() {
        assert_eq!(file_name_for("pg"), "pg");
        assert_eq!(file_name_for("db-1_x.y"), "db-1_x.y");
        assert_eq!(file_name_for("../etc"), "%2E.%2Fetc");
        assert_eq!(file_name_for(".hidden"), "%2Ehidden");
        assert_eq!(file_name_for("a/b"), "a%2Fb");
        assert_eq!(file_name_for(""), "%");
        assert_ne!(file_name_for("a b"), file_name_for("a_b"));
    }
}
