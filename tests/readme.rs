//! The README's examples stay true. Every `goflow` command in a ```sh block of README.md, and
//! every inline `` `goflow ...` `` (and `` `cargo run --release -- ...` ``) in its text, is
//! checked against the built binary:
//! - a line whose every goflow invocation works offline (`-V`, `fields`, `decode`, `help`,
//!   `--help`, `bench --write-pcap`) is run with `sh -c` in a scratch directory that holds this
//!   repository's `tests/data` (the binary first on PATH) and must exit 0 with output;
//! - any other invocation (it needs a daemon, a database or the network) is run with `--help`
//!   appended, which makes clap check the subcommand and every option name and value before
//!   printing the help: it must exit 0.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const README: &str = include_str!("../README.md");

/// The command lines of the README's sh blocks (comments and `$ ` prompts stripped).
fn fenced_lines() -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in README.lines() {
        let t = line.trim();
        if let Some(lang) = t.strip_prefix("```") {
            in_sh = !in_sh && matches!(lang, "sh" | "bash" | "console" | "shell");
            continue;
        }
        if in_sh {
            let cmd = strip_comment(t.strip_prefix("$ ").unwrap_or(t));
            if !cmd.is_empty() {
                out.push(cmd);
            }
        }
    }
    out
}

/// Inline code spans that are goflow commands.
fn inline_commands() -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in README.lines() {
        if line.trim().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            if let Some(rest) = span.strip_prefix("cargo run --release -- ") {
                out.push(format!("goflow {rest}"));
            } else if span == "goflow" || span.starts_with("goflow ") {
                out.push(span.to_owned());
            }
        }
    }
    out
}

/// Drops a `# comment` that starts after whitespace outside quotes.
fn strip_comment(line: &str) -> String {
    let (mut quote, mut prev_space) = (None, true);
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return line[..i].trim_end().to_owned(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line.trim_end().to_owned()
}

/// The goflow invocations of a shell line: its `&&`, `||`, `;` and `|` parts that start with
/// `goflow` (redirections dropped), as words.
fn invocations(line: &str) -> Vec<Vec<String>> {
    line.split(['|', ';', '&'])
        .map(str::trim)
        .filter(|p| p.starts_with("goflow"))
        .map(|p| {
            words(p)
                .into_iter()
                .take_while(|w| !w.starts_with('>') && !w.starts_with('<'))
                .collect()
        })
        .collect()
}

/// Shell words: whitespace-separated, quotes removed.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether an invocation works without a daemon, a database or the network.
fn offline(args: &[String]) -> bool {
    let a: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match a.first().copied() {
        None => false,
        Some("-V" | "--version" | "--help" | "-h" | "fields" | "decode" | "help") => true,
        Some("bench") => a.contains(&"--write-pcap") && a.contains(&"--flows"),
        Some(_) => a.contains(&"--help"),
    }
}

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::os::unix::fs::symlink(repo.join("tests"), dir.path().join("tests")).expect("symlink");
    dir
}

fn path_with_bin() -> String {
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `args` with `--help` appended: clap checks the subcommand and the options first.
fn parse_check(args: &[String]) -> Result<(), String> {
    // `goflow help [SUB]` is its own help: run as written.
    let help = args.get(1).is_some_and(|a| a == "help");
    let out = Command::new(BIN)
        .args(&args[1..])
        .args((!help).then_some("--help"))
        .env_remove("GOFLOW_CONFIG")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() && !out.stdout.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`{} --help`: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn the_readme_commands_run_or_parse() {
    let dir = scratch();
    let path = path_with_bin();
    let mut failures = Vec::new();
    let (mut ran, mut parsed) = (0, 0);
    for line in fenced_lines() {
        let calls = invocations(&line);
        if calls.is_empty() {
            continue;
        }
        if calls.iter().all(|c| offline(c)) {
            let out = Command::new("sh")
                .arg("-c")
                .arg(&line)
                .current_dir(dir.path())
                .env("PATH", &path)
                .env_remove("GOFLOW_CONFIG")
                .output()
                .expect("run sh");
            ran += 1;
            if !out.status.success() || out.stdout.is_empty() {
                failures.push(format!(
                    "`{line}`: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        } else {
            for c in calls.iter().filter(|c| !offline(c)) {
                parsed += 1;
                if let Err(e) = parse_check(c) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "README commands that fail:\n{}",
        failures.join("\n")
    );
    assert!(ran >= 5 && parsed >= 4, "{ran} run, {parsed} checked");
}

#[test]
fn the_readme_inline_commands_parse() {
    let mut failures = Vec::new();
    let cmds = inline_commands();
    assert!(cmds.len() >= 5, "{cmds:?}");
    for c in &cmds {
        for call in invocations(c) {
            // `goflow decode FILE.pcap...`: placeholders are positional words, so they parse.
            if let Err(e) = parse_check(&call) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "README inline commands that fail:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_helpers_read_shell_lines_as_intended() {
    assert_eq!(strip_comment("goflow -V   # version"), "goflow -V");
    assert_eq!(strip_comment("echo 'a # b'"), "echo 'a # b'");
    let calls = invocations(
        "goflow bench --flows 1 --write-pcap s.pcap && goflow decode - < s.pcap | head -2",
    );
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1], ["goflow", "decode", "-"]);
    assert!(calls.iter().all(|c| offline(c)));
    assert!(!offline(&words("goflow status")));
    assert_eq!(
        words("goflow configure-grafana \"$T\" x"),
        ["goflow", "configure-grafana", "$T", "x"]
    );
}
