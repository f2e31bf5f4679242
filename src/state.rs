//! `state_dir`: the directory holding what must survive a restart (each backend's disk spool
//! under `spool/<backend>/`, the persisted templates and sampling state). [`StateDir::open`]
//! creates it at start and takes an exclusive `flock` on `state_dir/lock` for the life of the
//! process, so a second goflow pointed at the same directory refuses to start (naming the pid
//! that holds it) instead of both appending to one spool. The kernel drops the lock when the
//! process ends, however it ends (SIGKILL included), so a stale lock file never blocks a restart.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use goflow_codec::decoder::saved::SavedState;
use rustix::fs::{FlockOperation, flock};

use crate::pipeline::WorkerCounters;

/// The lock file's name inside `state_dir`.
pub const LOCK_FILE: &str = "lock";
/// The spools' directory inside `state_dir` (one subdirectory per backend).
pub const SPOOL_DIR: &str = "spool";
/// The saved templates and sampling state of every exporter (see [`TemplateSaver`]).
pub const TEMPLATES_FILE: &str = "templates.bin";
/// The saved state is written at most this often (when a worker handed out a new one).
pub const TEMPLATES_SAVE_INTERVAL: Duration = Duration::from_secs(1);

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

impl StateDir {
    /// The saved templates file.
    pub fn templates_path(&self) -> PathBuf {
        self.path.join(TEMPLATES_FILE)
    }

    /// Reads the templates and sampling state saved by the last run. A missing file is an
    /// empty state; a damaged one is logged and ignored (templates are learned again from the
    /// exporters, as without a state_dir).
    pub fn load_templates(&self) -> SavedState {
        let path = self.templates_path();
        match fs::read(&path) {
            Ok(bytes) => match SavedState::decode(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!(
                        "state_dir: {} is damaged ({e}); starting without saved templates",
                        path.display()
                    );
                    SavedState::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SavedState::default(),
            Err(e) => {
                log::warn!(
                    "state_dir: cannot read {} ({e}); starting without saved templates",
                    path.display()
                );
                SavedState::default()
            }
        }
    }
}

/// Writes the workers' saved decoder state to `state_dir/templates.bin`: a thread that, at most
/// every [`TEMPLATES_SAVE_INTERVAL`], merges what the workers handed out (when any handed out
/// something new) and replaces the file atomically (`write_atomic`: a crash leaves the old or
/// the new file, never a mix). Disk I/O stays off the receive path. [`TemplateSaver::finish`]
/// writes once more after the workers have stopped.
#[derive(Debug)]
pub struct TemplateSaver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TemplateSaver {
    pub fn spawn(path: PathBuf, workers: Vec<Arc<WorkerCounters>>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("state-templates".into())
            .spawn(move || save_loop(&path, &workers, &flag))?;
        Ok(TemplateSaver {
            stop,
            thread: Some(thread),
        })
    }

    /// Writes what the workers handed out last (call after they stopped) and stops.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if t.join().is_err() {
                log::error!("state_dir: the templates writer panicked");
            }
        }
    }
}

fn save_loop(path: &Path, workers: &[Arc<WorkerCounters>], stop: &AtomicBool) {
    let mut written_seq = 0u64;
    let mut last_error: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let seq: u64 = workers
            .iter()
            .map(|w| w.saved_seq.load(Ordering::Acquire))
            .sum();
        if seq != written_seq {
            let mut merged = SavedState::default();
            for w in workers {
                let s = crate::pipeline::counters::lock(&w.saved).clone();
                if let Some(s) = s {
                    merged.merge(&s);
                }
            }
            let mut bytes = Vec::new();
            merged.encode(&mut bytes);
            match goflow_writers::durable::write_atomic(path, &bytes) {
                Ok(()) => written_seq = seq,
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        log::error!("state_dir: cannot write {}: {e}", path.display());
                        last_error = Some(Instant::now());
                    }
                }
            }
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(TEMPLATES_SAVE_INTERVAL);
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
