//! `goflow configure-grafana` end to end: a real daemon (`goflow run` with a PostgreSQL backend
//! on the real server, password in SQL_PASSWORD) provisions a small HTTP server that behaves
//! like Grafana's HTTP API (folders, datasources by uid and name with 409 on a duplicate name,
//! dashboards with 412 unless `overwrite`, 401 for a bad key, 403 for a key without rights, 404
//! off the API) and records every request. Checked: the datasource's fields, the bearer key on
//! every request, each dashboard bound to its datasource and table, a second run changing
//! nothing but versions, one clear line and exit 1 for each refusal, and the password nowhere
//! but in `secureJsonData` (not in the CLI's output, not in the daemon's log).

use std::collections::BTreeMap;
use std::error::Error;
use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const KEY: &str = "glsa_good-key-0123456789";
const VIEWER_KEY: &str = "glsa_viewer-key";
const PASSWORD: &str = "pw-SECRET-5f1c";

/// One request as the fake received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    auth: Option<String>,
    body: Value,
    status: u16,
}

#[derive(Default)]
struct State {
    folders: BTreeMap<String, String>,
    datasources: BTreeMap<String, Value>,
    /// uid -> (dashboard, version, folderUid)
    dashboards: BTreeMap<String, (Value, u64, String)>,
    seen: Vec<Seen>,
    /// Answer every dashboard POST with 412 (as Grafana does without overwrite).
    refuse_dashboards: bool,
}

struct FakeGrafana {
    addr: String,
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeGrafana {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FakeGrafana {
    fn start() -> Result<FakeGrafana, Box<dyn Error>> {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").map_err(|e| e.to_string())?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or("fake Grafana address")?
            .to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let thread = std::thread::spawn({
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            move || {
                for mut req in server.incoming_requests() {
                    let mut text = String::new();
                    let _ = req.as_reader().read_to_string(&mut text);
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let auth = req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.as_str().to_owned());
                    let method = req.method().as_str().to_owned();
                    let path = req.url().to_owned();
                    let (status, answer) = match state.lock() {
                        Ok(mut st) => {
                            let (status, answer) =
                                st.answer(&method, &path, auth.as_deref(), &body);
                            st.seen.push(Seen {
                                method,
                                path,
                                auth,
                                body,
                                status,
                            });
                            (status, answer)
                        }
                        Err(_) => (500, json!({"message": "poisoned"})),
                    };
                    let _ = req.respond(
                        tiny_http::Response::from_string(answer.to_string())
                            .with_status_code(status),
                    );
                }
            }
        });
        Ok(FakeGrafana {
            addr,
            state,
            server,
            thread: Some(thread),
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn take_seen(&self) -> Vec<Seen> {
        self.state
            .lock()
            .map(|mut s| std::mem::take(&mut s.seen))
            .unwrap_or_default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.state.lock().expect("state");
        f(&mut st)
    }
}

impl State {
    fn answer(
        &mut self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let bearer = auth.and_then(|a| a.strip_prefix("Bearer "));
        let viewer = bearer == Some(VIEWER_KEY);
        if bearer != Some(KEY) && !viewer {
            return (401, json!({"message": "Invalid API key"}));
        }
        let p = path.split('?').next().unwrap_or("");
        let seg: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        match (method, seg.as_slice()) {
            ("GET", ["api", "org"]) => (200, json!({"id": 1, "name": "Main Org."})),
            ("GET", ["api", "folders", uid]) => match self.folders.get(*uid) {
                Some(t) => (200, json!({"uid": uid, "title": t})),
                None => (404, json!({"message": "folder not found"})),
            },
            ("GET", ["api", "folders"]) => (
                200,
                Value::from(
                    self.folders
                        .iter()
                        .map(|(u, t)| json!({"uid": u, "title": t}))
                        .collect::<Vec<_>>(),
                ),
            ),
            ("POST", ["api", "folders"]) => {
                let title = body["title"].as_str().unwrap_or("").to_owned();
                if self.folders.values().any(|t| *t == title) {
                    return (
                        409,
                        json!({"message": "a folder with the same name already exists"}),
                    );
                }
                let uid = body["uid"].as_str().unwrap_or("gen").to_owned();
                self.folders.insert(uid.clone(), title.clone());
                (200, json!({"uid": uid, "title": title}))
            }
            ("GET", ["api", "datasources", "uid", uid]) => match self.datasources.get(*uid) {
                Some(ds) => (200, ds.clone()),
                None => (404, json!({"message": "Data source not found"})),
            },
            ("GET", ["api", "datasources", "name", name]) => {
                let name = name.replace("%20", " ");
                match self
                    .datasources
                    .values()
                    .find(|d| d["name"] == name.as_str())
                {
                    Some(ds) => (200, ds.clone()),
                    None => (404, json!({"message": "Data source not found"})),
                }
            }
            ("POST", ["api", "datasources"]) => {
                if viewer {
                    return (
                        403,
                        json!({"message": "Permissions needed: datasources:create"}),
                    );
                }
                if self.datasources.values().any(|d| d["name"] == body["name"]) {
                    return (
                        409,
                        json!({"message": "data source with the same name already exists"}),
                    );
                }
                let uid = body["uid"].as_str().unwrap_or("gen").to_owned();
                let mut ds = body.clone();
                ds["id"] = Value::from(self.datasources.len() + 1);
                ds["version"] = Value::from(1);
                ds.as_object_mut().map(|o| o.remove("secureJsonData"));
                self.datasources.insert(uid.clone(), ds.clone());
                (
                    200,
                    json!({"datasource": ds, "id": 1, "message": "Datasource added", "name": body["name"]}),
                )
            }
            ("PUT", ["api", "datasources", "uid", uid]) => match self.datasources.get_mut(*uid) {
                Some(ds) => {
                    let version = ds["version"].as_u64().unwrap_or(1) + 1;
                    let mut new = body.clone();
                    new.as_object_mut().map(|o| o.remove("secureJsonData"));
                    new["version"] = Value::from(version);
                    *ds = new;
                    (
                        200,
                        json!({"message": "Datasource updated", "datasource": ds.clone()}),
                    )
                }
                None => (404, json!({"message": "Data source not found"})),
            },
            ("POST", ["api", "dashboards", "db"]) => {
                let d = &body["dashboard"];
                let uid = d["uid"].as_str().unwrap_or("").to_owned();
                let exists = self.dashboards.contains_key(&uid);
                if self.refuse_dashboards || (exists && body["overwrite"] != true) {
                    return (
                        412,
                        json!({"message": "A dashboard with the same uid already exists", "status": "name-exists"}),
                    );
                }
                let version = self.dashboards.get(&uid).map_or(1, |e| e.1 + 1);
                let folder = body["folderUid"].as_str().unwrap_or("").to_owned();
                self.dashboards
                    .insert(uid.clone(), (d.clone(), version, folder));
                (
                    200,
                    json!({"uid": uid, "version": version, "status": "success", "id": 7}),
                )
            }
            _ => (404, json!({"message": "Not found"})),
        }
    }
}

// ---------------------------------------------------------------------------------------------

struct Daemon {
    child: Child,
    api: String,
    log: PathBuf,
    table: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-X",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP TABLE IF EXISTS {0}; DROP TABLE IF EXISTS {0}_positions",
                self.table
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn start_daemon(dir: &Path, api_bind: &str) -> Result<Daemon, Box<dyn Error>> {
    let udp = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let port = free_tcp_port()?;
    let table = format!("goflow_t_cfg_grafana_{}_{port}", std::process::id());
    let config = format!(
        "backends:\n  pg:\n    type: timescale\n    config:\n      SQL_SERVER: {host}\n      \
         SQL_PORT: \"{pgport}\"\n      SQL_USERNAME: {user}\n      SQL_DB: {db}\n      \
         SQL_TABLE: {table}\n      SQL_SSLMODE: disable\n\
         frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {udp}, workers: 1}}\n    backend: pg\n\
         api: {api_bind}:{port}\n",
        host = env_or("PGHOST", "127.0.0.1"),
        pgport = env_or("PGPORT", "5432"),
        user = env_or("PGUSER", "postgres"),
        db = env_or("PGDATABASE", "test"),
    );
    let cfg = dir.join("config.yml");
    std::fs::write(&cfg, config)?;
    let log = dir.join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir)
        .env("SQL_PASSWORD", PASSWORD)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()?;
    let d = Daemon {
        child,
        api: format!("127.0.0.1:{port}"),
        log,
        table,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .contains("ops API on")
    {
        if Instant::now() > deadline {
            return Err(format!(
                "goflow did not start: {}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(d)
}

fn configure(api: &str, url: &str, key: &str, extra: &[&str]) -> std::io::Result<Output> {
    Command::new(BIN)
        .args(["configure-grafana", url, key, "--api", api])
        .args(extra)
        .env_remove("SQL_PASSWORD")
        .stdin(Stdio::null())
        .output()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts exit 1 and one line on stderr containing every needle; nothing on stdout.
fn assert_one_line_failure(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} in {err}");
    }
    assert!(!text(out).contains(PASSWORD) && !text(out).contains(KEY));
}

#[test]
fn provisions_grafana_idempotently_and_fails_clearly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let daemon = start_daemon(dir.path(), "127.0.0.1")?;
    let grafana = FakeGrafana::start()?;
    // A datasource of our name made by hand earlier: found by name (409), updated in place.
    grafana.with(|st| {
        st.datasources.insert(
            "handmade".into(),
            json!({"uid": "handmade", "name": "goflow pg", "type": "postgres", "version": 3}),
        )
    });

    let out = configure(
        &daemon.api,
        &grafana.url(),
        KEY,
        &["--prometheus", "http://127.0.0.1:9090"],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("folder goflow created"), "{stdout}");
    assert!(
        stdout.contains("datasource goflow pg updated (uid handmade)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("datasource goflow Prometheus created"),
        "{stdout}"
    );
    let seen = grafana.take_seen();
    assert!(
        seen.iter()
            .all(|s| s.auth.as_deref() == Some(&format!("Bearer {KEY}")[..]))
    );
    let dup = seen
        .iter()
        .find(|s| s.method == "POST" && s.path == "/api/datasources" && s.status == 409)
        .ok_or("a POST answered 409")?;
    let b = &dup.body;
    assert_eq!(b["type"], "postgres");
    assert_eq!(b["uid"], "goflow-pg");
    assert_eq!(b["user"], env_or("PGUSER", "postgres"));
    assert_eq!(b["database"], env_or("PGDATABASE", "test"));
    assert_eq!(b["jsonData"]["database"], env_or("PGDATABASE", "test"));
    assert_eq!(b["jsonData"]["timescaledb"], true);
    assert_eq!(b["jsonData"]["sslmode"], "disable");
    assert_eq!(b["secureJsonData"]["password"], PASSWORD);
    assert_eq!(
        b["url"],
        format!(
            "{}:{}",
            env_or("PGHOST", "127.0.0.1"),
            env_or("PGPORT", "5432")
        )
    );
    let put = seen.iter().find(|s| s.method == "PUT").ok_or("an update")?;
    assert_eq!(put.path, "/api/datasources/uid/handmade");
    assert_eq!(put.body["uid"], "handmade");
    assert_eq!(put.body["secureJsonData"]["password"], PASSWORD);
    // The password only ever travels in secureJsonData.
    for s in &seen {
        let mut b = s.body.clone();
        if let Some(o) = b.as_object_mut() {
            o.remove("secureJsonData");
        }
        assert!(!b.to_string().contains(PASSWORD), "{} {}", s.method, s.path);
    }
    let dashboards: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path == "/api/dashboards/db")
        .collect();
    assert_eq!(dashboards.len(), 4, "every dashboard");
    for d in &dashboards {
        assert_eq!(d.body["overwrite"], true);
        assert_eq!(d.body["folderUid"], "goflow");
        let dash = &d.body["dashboard"];
        let vars = dash["templating"]["list"].as_array().ok_or("vars")?;
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .ok_or("datasource variable")?;
        let want = if ds["query"] == "prometheus" {
            "goflow-prometheus"
        } else {
            let table = vars.iter().find(|v| v["name"] == "table").ok_or("table")?;
            assert_eq!(table["query"], daemon.table.as_str());
            "handmade"
        };
        assert_eq!(ds["current"]["value"], want, "{}", dash["uid"]);
    }
    let (n_ds, versions) = grafana.with(|st| {
        (
            st.datasources.len(),
            st.dashboards.values().map(|d| d.1).collect::<Vec<_>>(),
        )
    });
    assert_eq!(n_ds, 2);
    assert_eq!(versions, vec![1, 1, 1, 1]);

    // Twice: the same datasources and folder, dashboards one version up.
    let out = configure(
        &daemon.api,
        &grafana.url(),
        KEY,
        &["--prometheus", "http://127.0.0.1:9090"],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    let stdout2 = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout2.contains("folder goflow exists"), "{stdout2}");
    assert!(
        stdout2.contains("datasource goflow Prometheus updated"),
        "{stdout2}"
    );
    let seen2 = grafana.take_seen();
    assert!(
        !seen2
            .iter()
            .any(|s| s.path == "/api/folders" && s.method == "POST")
    );
    let (n_ds, n_folders, versions) = grafana.with(|st| {
        (
            st.datasources.len(),
            st.folders.len(),
            st.dashboards.values().map(|d| d.1).collect::<Vec<_>>(),
        )
    });
    assert_eq!((n_ds, n_folders), (2, 1));
    assert_eq!(versions, vec![2, 2, 2, 2]);
    assert!(!text(&out).contains(PASSWORD) && !stdout.contains(PASSWORD));

    // Without --prometheus the health dashboard is skipped, said so.
    let out = configure(&daemon.api, &grafana.url(), KEY, &[])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("skipped (no prometheus datasource; give --prometheus URL)")
    );

    // --reader: another user, its password from GRAFANA_SQL_PASSWORD.
    grafana.take_seen();
    let out = Command::new(BIN)
        .args([
            "configure-grafana",
            &grafana.url(),
            KEY,
            "--api",
            &daemon.api,
        ])
        .args(["--reader", "grafana_ro"])
        .env("GRAFANA_SQL_PASSWORD", "reader-pw-77")
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let put = grafana
        .take_seen()
        .into_iter()
        .find(|s| s.method == "PUT")
        .ok_or("update")?;
    assert_eq!(put.body["user"], "grafana_ro");
    assert_eq!(put.body["secureJsonData"]["password"], "reader-pw-77");
    assert!(!text(&out).contains("reader-pw-77"));
    let out = configure(&daemon.api, &grafana.url(), KEY, &["--reader", "x"])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("GRAFANA_SQL_PASSWORD"));

    // Refusals: one line naming the step, exit 1.
    let out = configure(&daemon.api, &grafana.url(), "wrong-key", &[])?;
    assert_one_line_failure(&out, &["check the key", "401"]);
    let out = configure(&daemon.api, &grafana.url(), VIEWER_KEY, &[])?;
    // The viewer key finds our datasource by uid? No: goflow-pg is absent, so it must create.
    assert_one_line_failure(&out, &["create datasource goflow pg", "403"]);
    let out = configure(&daemon.api, &format!("{}/grafana", grafana.url()), KEY, &[])?;
    assert_one_line_failure(&out, &["check the key", "404", "root URL"]);
    grafana.with(|st| st.refuse_dashboards = true);
    let out = configure(&daemon.api, &grafana.url(), KEY, &[])?;
    assert_one_line_failure(&out, &["post dashboard goflow: ", "412"]);
    let closed = format!("http://127.0.0.1:{}", free_tcp_port()?);
    let out = configure(&daemon.api, &closed, KEY, &[])?;
    assert_one_line_failure(&out, &["check the key", "cannot reach Grafana"]);
    let out = configure(&daemon.api, "ftp://x", KEY, &[])?;
    assert_one_line_failure(&out, &["Grafana URL"]);
    // No daemon: the status command's message.
    let nobody = format!("127.0.0.1:{}", free_tcp_port()?);
    let out = configure(&nobody, &grafana.url(), KEY, &[])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("goflow daemon not reachable"),
        "{}",
        text(&out)
    );

    let log = std::fs::read_to_string(&daemon.log)?;
    assert!(log.contains("configure-grafana"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains(KEY) && !log.contains("reader-pw-77"));
    Ok(())
}

/// POST /grafana answers 403 to a client that is not on loopback.
#[test]
fn grafana_endpoint_is_loopback_only() -> TestResult {
    // A local address that is not loopback, if the machine has one.
    let probe = UdpSocket::bind("0.0.0.0:0")?;
    let local = probe
        .connect("192.0.2.1:9")
        .and_then(|()| probe.local_addr())
        .map(|a| a.ip());
    let Ok(ip) = local else {
        eprintln!("skipping grafana_endpoint_is_loopback_only: no non-loopback address");
        return Ok(());
    };
    if ip.is_loopback() || ip.is_unspecified() {
        eprintln!("skipping grafana_endpoint_is_loopback_only: no non-loopback address");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let daemon = start_daemon(dir.path(), "0.0.0.0")?;
    let port = daemon.api.rsplit(':').next().ok_or("port")?;
    let out = configure(&format!("{ip}:{port}"), "http://127.0.0.1:1", KEY, &[])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("403") && text(&out).contains("loopback"),
        "{}",
        text(&out)
    );
    Ok(())
}
