//! Templates and sampling state survive a restart (issue 17): the daemon learns a NetFlow v9
//! template and an options template carrying a sampling rate, saves them under `state_dir`,
//! is stopped, and started again; the exporter then sends data only (as a router that resends
//! its templates every few minutes would), and the records decode, with the saved sampling
//! rate. /templates says the templates were restored; /status counts them.

use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow_codec::decoder::saved::SavedState;
use goflow_codec::encode::{FieldSpec, TYPICAL_V4_TEMPLATE, V9Builder, V9Header, sample_flow_v4};
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(30);

/// A daemon this test started, killed by its PID when the test ends.
struct Daemon {
    child: Child,
    port: u16,
    api: String,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start(dir: &Path, state: &Path, out: &Path, run: u32) -> Result<Daemon, Box<dyn Error>> {
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let api = format!(
        "127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    );
    let cfg = dir.join(format!("config-{run}.yml"));
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  out: {{type: file, config: {{path: {}, flush_ms: 50}}}}\n\
             frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, \
             workers: 2}}\n    backend: out\napi: {api}\nstate_dir: {}\n",
            out.display(),
            state.display()
        ),
    )?;
    let log = dir.join(format!("goflow-{run}.log"));
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .current_dir(dir)
        .env_remove("GOFLOW_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()?;
    let mut d = Daemon {
        child,
        port,
        api,
        log,
    };
    wait_for(&mut d, "healthy", |d| {
        Ok(matches!(http_get(&d.api, "/healthz"), Ok((200, _))))
    })?;
    Ok(d)
}

fn wait_for(
    d: &mut Daemon,
    what: &str,
    mut ok: impl FnMut(&Daemon) -> Result<bool, Box<dyn Error>>,
) -> TestResult {
    let t0 = Instant::now();
    loop {
        if ok(d)? {
            return Ok(());
        }
        if let Some(status) = d.child.try_wait()? {
            return Err(
                format!("goflow exited ({status}) waiting for {what}:\n{}", d.log()).into(),
            );
        }
        if t0.elapsed() > DEADLINE {
            return Err(format!("not {what} within {DEADLINE:?}:\n{}", d.log()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(addr: &str, path: &str) -> Result<(u16, String), Box<dyn Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head.split(' ').nth(1).ok_or("no status")?.parse()?;
    Ok((code, body.to_owned()))
}

fn get_json(addr: &str, path: &str) -> Result<Value, Box<dyn Error>> {
    let (code, body) = http_get(addr, path)?;
    if code != 200 {
        return Err(format!("{path}: {code} {body}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

fn rows(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn header(seq: u32) -> V9Header {
    V9Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        sequence: seq,
        source_id: 7,
    }
}

fn sigterm_and_wait(d: &mut Daemon) -> TestResult {
    let pid = i32::try_from(d.child.id())?;
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    assert!(st.success());
    let t0 = Instant::now();
    while d.child.try_wait()?.is_none() {
        assert!(
            t0.elapsed() < DEADLINE,
            "no exit after SIGTERM:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn templates_and_sampling_survive_a_restart() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let out = tmp.path().join("flows.jsonl");
    let exporter = UdpSocket::bind("127.0.0.1:0")?;

    let mut first = start(tmp.path(), &state, &out, 1)?;
    let mut b = V9Builder::new(header(0));
    let scope = [FieldSpec::new(1, 4)];
    let opts = [FieldSpec::new(34, 4), FieldSpec::new(35, 1)];
    b.options_template(400, &scope, &opts)?;
    b.options_data(400, &[scope[0], opts[0], opts[1]], &[0, 100, 2])?;
    b.template(256, TYPICAL_V4_TEMPLATE)?;
    let f1 = sample_flow_v4(1);
    b.data(256, TYPICAL_V4_TEMPLATE, &f1)?;
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    exporter.send_to(&pkt, ("127.0.0.1", first.port))?;
    wait_for(&mut first, "one row written", |_| Ok(rows(&out).len() == 1))?;
    // Saved within a couple of seconds (debounced), both templates and the sampling rate.
    let file = state.join("templates.bin");
    wait_for(&mut first, "templates saved", |_| {
        Ok(std::fs::read(&file)
            .ok()
            .and_then(|b| SavedState::decode(&b).ok())
            .is_some_and(|s| s.templates.len() == 2 && s.domains.len() == 1))
    })?;
    sigterm_and_wait(&mut first)?;
    drop(first);

    let mut second = start(tmp.path(), &state, &out, 2)?;
    let tpl = get_json(&second.api, "/templates")?;
    let listed: Vec<&Value> = tpl["exporters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["address"] == "127.0.0.1")
        .flat_map(|e| e["domains"].as_array().into_iter().flatten())
        .flat_map(|d| d["templates"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(listed.len(), 2, "{tpl}");
    assert!(listed.iter().all(|t| t["restored"] == true), "{tpl}");
    let st = get_json(&second.api, "/status")?;
    assert_eq!(st["totals"]["templates_restored"], 2, "{st}");

    // Data only: no template, no options data in this run.
    let mut b = V9Builder::new(header(1));
    let f2 = sample_flow_v4(2);
    b.data(256, TYPICAL_V4_TEMPLATE, &f2)?;
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    exporter.send_to(&pkt, ("127.0.0.1", second.port))?;
    wait_for(&mut second, "the data-only row", |_| {
        Ok(rows(&out).len() == 2)
    })?;
    let all = rows(&out);
    let row = &all[1];
    assert_eq!(row["in_bytes"], f2.bytes, "{row}");
    assert_eq!(row["sampling_rate"], 100, "{row}");
    let st = get_json(&second.api, "/status")?;
    assert_eq!(st["totals"]["drops"]["no_template"], 0, "{st}");
    Ok(())
}

#[test]
fn data_sent_before_its_template_is_stored_once_the_template_arrives() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let out = tmp.path().join("flows.jsonl");
    let exporter = UdpSocket::bind("127.0.0.1:0")?;
    let mut d = start(tmp.path(), &state, &out, 1)?;
    // Data only, twice, then the template (with one more record).
    for (seq, i) in [(0, 10), (1, 11)] {
        let mut b = V9Builder::new(header(seq));
        b.data(256, TYPICAL_V4_TEMPLATE, &sample_flow_v4(i))?;
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        exporter.send_to(&pkt, ("127.0.0.1", d.port))?;
    }
    wait_for(&mut d, "two sets held", |d| {
        Ok(get_json(&d.api, "/status")?["totals"]["held"]["sets"] == 2)
    })?;
    assert!(rows(&out).is_empty());
    let mut b = V9Builder::new(header(2));
    b.template(256, TYPICAL_V4_TEMPLATE)?;
    b.data(256, TYPICAL_V4_TEMPLATE, &sample_flow_v4(12))?;
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    exporter.send_to(&pkt, ("127.0.0.1", d.port))?;
    wait_for(&mut d, "three rows", |_| Ok(rows(&out).len() == 3))?;
    let mut got: Vec<u64> = rows(&out)
        .iter()
        .filter_map(|r| r["in_bytes"].as_u64())
        .collect();
    got.sort_unstable();
    let want: Vec<u64> = [10, 11, 12]
        .iter()
        .map(|&i| sample_flow_v4(i).bytes)
        .collect();
    assert_eq!(got, want);
    wait_for(&mut d, "held released", |d| {
        let st = get_json(&d.api, "/status")?;
        Ok(st["totals"]["held"]["released_records"] == 2 && st["totals"]["held"]["sets"] == 0)
    })?;
    let st = get_json(&d.api, "/status")?;
    assert_eq!(st["totals"]["drops"]["no_template"], 0, "{st}");
    Ok(())
}
