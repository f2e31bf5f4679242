//! `state_dir` end to end: the daemon creates it (parents too) and locks it; a second daemon
//! on the same directory refuses to start (exit 1, naming the directory and the first one's
//! pid) while the first keeps running; a directory that cannot be created stops the daemon at
//! start with the path in the message.

use std::error::Error;
use std::fs::File;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_goflow");

fn config(dir: &Path, state_dir: &Path) -> Result<std::path::PathBuf, Box<dyn Error>> {
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = dir.join(format!("config-{port}.yml"));
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  out: {{type: null}}\nfrontends:\n  netflow:\n    config: \
             {{bindaddr: 127.0.0.1, bindport: {port}, workers: 1}}\n    backend: out\n\
             api: off\nstate_dir: {}\n",
            state_dir.display()
        ),
    )?;
    Ok(cfg)
}

fn spawn(dir: &Path, cfg: &Path, log: &Path) -> Result<Child, Box<dyn Error>> {
    Ok(Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .current_dir(dir)
        .env_remove("GOFLOW_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log)?)
        .spawn()?)
}

/// Kills the child when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn one_instance_per_state_dir() -> Result<(), Box<dyn Error>> {
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("deep/er/state");
    let first_log = tmp.path().join("first.log");
    let mut first = Guard(spawn(tmp.path(), &config(tmp.path(), &state)?, &first_log)?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&first_log)?.contains("listening on udp") {
        assert!(Instant::now() < deadline, "the first daemon did not start");
        assert!(first.0.try_wait()?.is_none(), "the first daemon exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(state.join("lock").is_file());

    let second_log = tmp.path().join("second.log");
    let status = spawn(tmp.path(), &config(tmp.path(), &state)?, &second_log)?.wait()?;
    let text = std::fs::read_to_string(&second_log)?;
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("state_dir {} is in use", state.display())),
        "{text}"
    );
    assert!(text.contains(&format!("pid {}", first.0.id())), "{text}");
    assert!(first.0.try_wait()?.is_none(), "the first daemon still runs");

    // Not creatable: a plain file where a parent directory should be.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x")?;
    let bad_log = tmp.path().join("bad.log");
    let status = spawn(
        tmp.path(),
        &config(tmp.path(), &blocker.join("state"))?,
        &bad_log,
    )?
    .wait()?;
    let text = std::fs::read_to_string(&bad_log)?;
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(
        text.contains("cannot create it") && text.contains("file/state"),
        "{text}"
    );
    Ok(())
}
