//! Configuration end to end: the real binary with bad config files exits 2 with a message that
//! names the file, the key and the line; the old Go collector's example loads and fails only at
//! start, because its backend type (mysql) is not in this build; `--config`, `$GOFLOW_CONFIG`,
//! `./config.yml` and the built-in defaults are found in that order (checked with
//! `goflow run --check`, which binds nothing).

use std::error::Error;
use std::path::Path;
use std::process::{Command, Output, Stdio};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");

fn goflow(dir: &Path, args: &[&str], env_config: Option<&Path>) -> Result<Output, Box<dyn Error>> {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("GOFLOW_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("SQL_PASSWORD")
        .stdin(Stdio::null());
    if let Some(p) = env_config {
        cmd.env("GOFLOW_CONFIG", p);
    }
    Ok(cmd.output()?)
}

/// Runs `goflow --config FILE run` on `text` and returns (exit code, stderr).
fn run_config(text: &str) -> Result<(Option<i32>, String), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, text)?;
    let out = goflow(dir.path(), &["--config", "bad.yml", "run"], None)?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

const GOOD: &str = "backends:
  out:
    type: file
    config:
      path: out.jsonl
frontends:
  netflow:
    config:
      bindaddr: 127.0.0.1
      bindport: 2055
    backend: out
api: off
";

/// A postgres backend's settings, to replace GOOD's file backend with (lines 3 to 8).
const PG: &str = "    type: postgres
    config:
      SQL_SERVER: 127.0.0.1
      SQL_USERNAME: goflow
      SQL_DB: goflow
      connections: 2";

/// Each error: exit code 2, and the message names the file, the key and the line.
#[test]
fn config_errors_exit_2_naming_file_key_and_line() -> TestResult {
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown key",
            GOOD.replace(
                "      path: out.jsonl",
                "      path: out.jsonl\n      colour: red",
            ),
            &["bad.yml", "colour", "line 6"],
        ),
        (
            "wrong type",
            GOOD.replace("bindport: 2055", "bindport: [2055]"),
            &["bad.yml", "bindport", "line 10"],
        ),
        (
            "missing key",
            GOOD.replace("    backend: out\n", ""),
            &["bad.yml", "missing field `backend`", "line "],
        ),
        (
            "unknown backend name",
            GOOD.replace("backend: out", "backend: [out, archive]"),
            &[
                "bad.yml",
                "frontends.netflow.backend",
                "unknown backend name \"archive\"",
                "line 11",
            ],
        ),
        (
            "unknown backend type",
            GOOD.replace("type: file", "type: sqlite"),
            &["bad.yml", "sqlite", "line 3"],
        ),
        (
            "bad value",
            GOOD.replace("bindport: 2055", "bindport: 2055\n      receiver: turbo"),
            &[
                "bad.yml",
                "frontends.netflow.config.receiver",
                "turbo",
                "line 11",
            ],
        ),
        (
            "out of range",
            GOOD.replace("bindport: 2055", "bindport: \"99999\""),
            &[
                "bad.yml",
                "frontends.netflow.config.bindport",
                "99999",
                "line 10",
            ],
        ),
        (
            "bad address",
            GOOD.replace("bindaddr: 127.0.0.1", "bindaddr: 127.0.0.300"),
            &["bad.yml", "bindaddr", "line 9"],
        ),
        ("not YAML", "backends: [\n".to_owned(), &["bad.yml", "line"]),
        (
            "unknown top-level key",
            GOOD.replace("api: off\n", "api: off\nlisten: 2055\n"),
            &["bad.yml", "unknown field `listen`", "line 13"],
        ),
        (
            "no COPY connections",
            GOOD.replace("    type: file\n    config:\n      path: out.jsonl", PG)
                .replace("connections: 2", "connections: 0"),
            &[
                "bad.yml",
                "backends.out.config.connections",
                "0 is out of range 1..=16",
                "line 8",
            ],
        ),
        (
            "too many COPY connections",
            GOOD.replace("    type: file\n    config:\n      path: out.jsonl", PG)
                .replace("connections: 2", "connections: \"17\""),
            &[
                "bad.yml",
                "backends.out.config.connections",
                "17 is out of range 1..=16",
                "line 8",
            ],
        ),
    ];
    for (what, text, needles) in cases {
        let (code, stderr) = run_config(text)?;
        assert_eq!(code, Some(2), "{what}: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{what}: expected {n:?} in {stderr:?}");
        }
        assert_eq!(
            stderr.lines().count(),
            1,
            "{what}: one line, no backtrace: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn a_missing_config_file_exits_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = goflow(dir.path(), &["--config", "nope.yml", "run"], None)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope.yml"), "{stderr}");
    Ok(())
}

/// The old collector's config_example.yml parses unchanged. In a build without the mysql
/// feature the daemon stops at start because its frontend's backend is mysql, with that message
/// and not a config error (exit 3, not 2); with it, tests/mysql_run.rs runs the same file
/// against MariaDB.
#[test]
fn original_example_loads_and_fails_only_at_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let original =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/original-config_example.yml");
    std::fs::copy(&original, dir.path().join("config.yml"))?;

    let check = goflow(dir.path(), &["run", "--check"], None)?;
    let stdout = String::from_utf8_lossy(&check.stdout);
    // The file is valid (not exit 2); its example server cannot be reached (exit 3, a FAIL line).
    assert_eq!(
        check.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("FAIL  backend rdssql (mysql)"), "{stdout}");
    assert!(stdout.contains("backend rdssql (mysql)"), "{stdout}");
    assert!(stdout.contains("listen: udp 0.0.0.0:2055"), "{stdout}");
    assert!(stdout.contains("api: 127.0.0.1:8880"), "{stdout}");

    if cfg!(feature = "mysql") {
        // Started, it would connect to your-sql-server.com and listen on 0.0.0.0:2055.
        return Ok(());
    }
    let out = goflow(dir.path(), &[], None)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A start failure (exit 3), not a config error: the file is valid, the build lacks the type.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("backend type mysql is not available in this build"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("config file"),
        "not a parse error: {stderr}"
    );
    Ok(())
}

/// --config wins over $GOFLOW_CONFIG, which wins over ./config.yml, which wins over defaults.
#[test]
fn search_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let with_port = |p: u16| GOOD.replace("bindport: 2055", &format!("bindport: {p}"));
    let plan = |args: &[&str], env: Option<&Path>| -> Result<String, Box<dyn Error>> {
        let out = goflow(dir.path(), args, env)?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let defaults = plan(&["run", "--check"], None)?;
    assert!(
        defaults.contains("configuration: built-in defaults"),
        "{defaults}"
    );
    assert!(defaults.contains("listen: udp 0.0.0.0:2055"), "{defaults}");
    assert!(
        defaults.contains("backend default (file): flows.jsonl"),
        "{defaults}"
    );
    assert!(defaults.contains("api: 127.0.0.1:8880"), "{defaults}");

    std::fs::write(dir.path().join("config.yml"), with_port(3001))?;
    std::fs::write(dir.path().join("env.yml"), with_port(3002))?;
    std::fs::write(dir.path().join("flag.yml"), with_port(3003))?;
    assert!(plan(&["run", "--check"], None)?.contains("127.0.0.1:3001"));
    let env = dir.path().join("env.yml");
    assert!(plan(&["run", "--check"], Some(&env))?.contains("127.0.0.1:3002"));
    assert!(
        plan(&["--config", "flag.yml", "run", "--check"], Some(&env))?.contains("127.0.0.1:3003")
    );
    Ok(())
}

/// `connections` defaults to 2; `run --check` shows it.
#[test]
fn pg_connections_default_to_two() -> TestResult {
    let dir = tempfile::tempdir()?;
    let plan = |text: String| -> Result<String, Box<dyn Error>> {
        std::fs::write(dir.path().join("pg.yml"), text)?;
        let out = goflow(dir.path(), &["--config", "pg.yml", "run", "--check"], None)?;
        // The plan comes first; the server in PG is not there, so the checks may fail (3).
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let pg = GOOD.replace("    type: file\n    config:\n      path: out.jsonl", PG);
    let default = plan(pg.replace("\n      connections: 2", ""))?;
    assert!(
        default.contains("backend out (postgres): goflow@127.0.0.1:5432/goflow table goflow_records, 2 connections"),
        "{default}"
    );
    let one = plan(pg.replace("connections: 2", "connections: 1"))?;
    assert!(one.contains("backend out (postgres): "), "{one}");
    assert!(!one.contains("connections"), "{one}");
    Ok(())
}

/// An empty file (blank, comments only, a bare `---`) means the built-in defaults, as no file.
#[test]
fn an_empty_config_file_means_the_defaults() -> TestResult {
    let dir = tempfile::tempdir()?;
    for text in ["", "\n\n", "# nothing yet\n", "---\n"] {
        std::fs::write(dir.path().join("empty.yml"), text)?;
        let out = goflow(
            dir.path(),
            &["--config", "empty.yml", "run", "--check"],
            None,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("listen: udp 0.0.0.0:2055"), "{stdout}");
        assert!(
            stdout.contains("backend default (file): flows.jsonl"),
            "{stdout}"
        );
    }
    Ok(())
}
