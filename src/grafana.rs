//! Provisioning Grafana through its HTTP API (`goflow configure-grafana`): a folder, one
//! datasource per SQL backend (PostgreSQL with `jsonData.timescaledb` for `type: timescale`,
//! MySQL for `type: mysql`), a Prometheus datasource when asked, and every dashboard bound to
//! its datasource. The daemon runs this (its ops API's POST /grafana, loopback only) because it
//! holds the backends' server, database, user, TLS mode and password; the CLI only sends the
//! Grafana URL, the key and the dashboards.
//!
//! Running it twice changes nothing but versions: the folder and datasources are looked up by
//! their fixed uids (then by name, for a datasource someone made by hand) and updated in place,
//! dashboards are posted with `overwrite`. The key travels as `Authorization: Bearer` (service
//! account tokens and API keys alike). The database password goes only into `secureJsonData`;
//! no message this module returns contains it or the key.
//!
//! Endpoints used (Grafana's documented HTTP API, unchanged from 9 to 12): GET /api/org,
//! GET/POST /api/folders, GET /api/datasources/uid/:uid, GET /api/datasources/name/:name,
//! POST /api/datasources, PUT /api/datasources/uid/:uid, POST /api/dashboards/db.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The dashboards compiled into the binary: (file name, JSON).
pub const DASHBOARDS: &[(&str, &str)] = &[
    (
        "top_talkers.json",
        include_str!("../grafana_db/top_talkers.json"),
    ),
    ("traffic.json", include_str!("../grafana_db/traffic.json")),
    (
        "flow_search.json",
        include_str!("../grafana_db/flow_search.json"),
    ),
    (
        "collector_health.json",
        include_str!("../grafana_db/collector_health.json"),
    ),
    (
        "mysql/top_talkers.json",
        include_str!("../grafana_db/mysql/top_talkers.json"),
    ),
    (
        "mysql/traffic.json",
        include_str!("../grafana_db/mysql/traffic.json"),
    ),
    (
        "mysql/flow_search.json",
        include_str!("../grafana_db/mysql/flow_search.json"),
    ),
];

/// The folder every dashboard goes into.
pub const FOLDER_UID: &str = "goflow";
pub const FOLDER_TITLE: &str = "goflow";
/// The Prometheus datasource's uid and name.
pub const PROMETHEUS_UID: &str = "goflow-prometheus";
pub const PROMETHEUS_NAME: &str = "goflow Prometheus";
/// One Grafana request's timeout.
pub const GRAFANA_TIMEOUT: Duration = Duration::from_secs(20);

/// One dashboard file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DashboardFile {
    pub name: String,
    pub json: Value,
}

/// What the CLI asks the daemon to do (the body of POST /grafana).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GrafanaRequest {
    /// Grafana's root URL, e.g. `https://grafana.example.net/` (a sub-path is kept).
    pub url: String,
    /// Service-account token or API key.
    pub key: String,
    /// Accept any TLS certificate (self-signed lab Grafanas).
    pub insecure: bool,
    /// URL of a Prometheus that scrapes goflow, for the Collector health dashboard.
    pub prometheus: Option<String>,
    /// Database user for the SQL datasources instead of the backend's own.
    pub reader: Option<String>,
    /// Its password (`GRAFANA_SQL_PASSWORD`).
    pub reader_password: Option<String>,
    pub dashboards: Vec<DashboardFile>,
}

impl fmt::Debug for GrafanaRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrafanaRequest")
            .field("url", &self.url)
            .field("key", &"<hidden>")
            .field("insecure", &self.insecure)
            .field("prometheus", &self.prometheus)
            .field("reader", &self.reader)
            .field(
                "reader_password",
                &self.reader_password.as_ref().map(|_| "<hidden>"),
            )
            .field("dashboards", &self.dashboards.len())
            .finish()
    }
}

/// The SQL database kinds Grafana has a datasource for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlKind {
    Postgres,
    Timescale,
    Mysql,
}

/// One SQL backend as the daemon knows it. `Debug` hides the password.
#[derive(Clone)]
pub struct SqlTarget {
    /// The backend's name in the config.
    pub backend: String,
    pub kind: SqlKind,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub table: String,
    /// Grafana's `jsonData.sslmode` for PostgreSQL (disable, require, verify-full).
    pub sslmode: &'static str,
    /// CA certificate (PEM) for verify-full.
    pub ca_cert: Option<String>,
    /// A remark for the report (e.g. how SQL_SSLMODE was mapped).
    pub note: Option<String>,
}

impl fmt::Debug for SqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlTarget")
            .field("backend", &self.backend)
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("table", &self.table)
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl SqlTarget {
    /// The datasource's fixed uid: `goflow-<backend>` (Grafana allows 40 characters of
    /// letters, digits, `-` and `_`).
    pub fn uid(&self) -> String {
        let clean: String = self
            .backend
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut uid = format!("goflow-{clean}");
        uid.truncate(40);
        uid
    }

    pub fn name(&self) -> String {
        format!("goflow {}", self.backend)
    }

    /// The dashboards' datasource variable type this datasource serves.
    fn dashboard_kind(&self) -> &'static str {
        match self.kind {
            SqlKind::Postgres | SqlKind::Timescale => "postgres",
            SqlKind::Mysql => "mysql",
        }
    }

    /// The POST/PUT body. `user`/`password` are the reader's when one is given.
    fn datasource_body(&self, uid: &str, user: &str, password: Option<&str>) -> Value {
        let url = format!("{}:{}", self.host, self.port);
        let mut secure = serde_json::Map::new();
        if let Some(pw) = password {
            secure.insert("password".into(), Value::from(pw));
        }
        let json_data = match self.kind {
            SqlKind::Postgres | SqlKind::Timescale => {
                let mut j = json!({
                    // Both places: Grafana 10.2+ reads jsonData.database, older ones the field.
                    "database": self.database,
                    "sslmode": self.sslmode,
                    "timescaledb": self.kind == SqlKind::Timescale,
                    "postgresVersion": 1500,
                    "maxOpenConns": 10,
                    "maxIdleConns": 10,
                    "connMaxLifetime": 14400,
                });
                if let Some(ca) = &self.ca_cert {
                    j["tlsConfigurationMethod"] = Value::from("file-content");
                    j["tlsAuthWithCACert"] = Value::from(true);
                    secure.insert("tlsCACert".into(), Value::from(ca.as_str()));
                }
                j
            }
            SqlKind::Mysql => json!({
                "database": self.database,
                // goflow stores UTC DATETIMEs; FROM_UNIXTIME/UNIX_TIMESTAMP in Grafana's macros
                // read them in the session's zone, so the session must be UTC whatever the
                // server's default is.
                "timezone": "+00:00",
                "maxOpenConns": 10,
                "maxIdleConns": 10,
                "connMaxLifetime": 14400,
            }),
        };
        json!({
            "uid": uid,
            "name": self.name(),
            "type": match self.kind { SqlKind::Mysql => "mysql", _ => "postgres" },
            "access": "proxy",
            "url": url,
            "user": user,
            "database": self.database,
            "basicAuth": false,
            "isDefault": false,
            "readOnly": false,
            "jsonData": json_data,
            "secureJsonData": Value::Object(secure),
        })
    }
}

/// A step that failed: `step` names what was being done, `message` why (never a secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    pub step: String,
    pub message: String,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.message)
    }
}

impl std::error::Error for StepError {}

/// What was done, one line per step (the answer of POST /grafana).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrafanaReport {
    pub steps: Vec<String>,
}

/// The Grafana HTTP API client: one agent, the base URL and the key.
struct Api {
    agent: ureq::Agent,
    base: String,
    auth: String,
    /// Strings that must never appear in a message (key, passwords).
    secrets: Vec<String>,
}

/// A response: status and JSON body (Null when it was not JSON).
struct Reply {
    status: u16,
    body: Value,
}

impl Api {
    fn new(req: &GrafanaRequest, secrets: Vec<String>) -> Result<Api, StepError> {
        let base = req.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(StepError {
                step: "check the Grafana URL".into(),
                message: format!("{} is not an http:// or https:// URL", req.url),
            });
        }
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .disable_verification(req.insecure)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(GRAFANA_TIMEOUT))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("goflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Api {
            agent,
            base,
            auth: format!("Bearer {}", req.key),
            secrets,
        })
    }

    fn scrub(&self, text: &str) -> String {
        let mut t = text.to_owned();
        for s in &self.secrets {
            if !s.is_empty() {
                t = t.replace(s.as_str(), "<hidden>");
            }
        }
        t
    }

    fn call(
        &self,
        step: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, StepError> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.auth)
                .header("Accept", "application/json")
                .call(),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &self.auth)
                .header("Accept", "application/json")
                .send_json(b),
            (_, b) => self
                .agent
                .post(&url)
                .header("Authorization", &self.auth)
                .header("Accept", "application/json")
                .send_json(b.unwrap_or(&Value::Null)),
        };
        let mut resp = result.map_err(|e| StepError {
            step: step.to_owned(),
            message: self.scrub(&format!("cannot reach Grafana at {}: {e}", self.base)),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// The one-line error for an unexpected status.
    fn fail(&self, step: &str, reply: &Reply) -> StepError {
        let said = reply.body["message"]
            .as_str()
            .map(|m| format!(": {}", self.scrub(m)))
            .unwrap_or_default();
        let message = match reply.status {
            401 => format!(
                "Grafana refused the key (401 Unauthorized{said}); give a valid service-account \
                 token or API key"
            ),
            403 => format!(
                "the key may not do this (403 Forbidden{said}); it needs the Admin role (or \
                 folder, datasource and dashboard write permissions)"
            ),
            404 => format!(
                "not found (404{said}); is {} Grafana's root URL (with its sub-path, if any)?",
                self.base
            ),
            code => format!("Grafana answered {code}{said}"),
        };
        StepError {
            step: step.to_owned(),
            message,
        }
    }
}

/// Runs every step; the first failure stops it.
pub fn provision(req: &GrafanaRequest, targets: &[SqlTarget]) -> Result<GrafanaReport, StepError> {
    let mut secrets = vec![req.key.clone()];
    secrets.extend(req.reader_password.clone());
    secrets.extend(targets.iter().filter_map(|t| t.password.clone()));
    let api = Api::new(req, secrets)?;
    let mut report = GrafanaReport::default();

    let step = "check the key (GET /api/org)";
    let r = api.call(step, "GET", "/api/org", None)?;
    if r.status != 200 {
        return Err(api.fail(step, &r));
    }
    let org = r.body["name"].as_str().unwrap_or("?").to_owned();
    report
        .steps
        .push(format!("connected to {} (organisation {org})", api.base));

    let folder = ensure_folder(&api, &mut report)?;

    // Datasources: (dashboard kind, uid, name, table).
    let mut bound: Vec<(&'static str, String, String, String)> = Vec::new();
    if targets.is_empty() {
        report.steps.push(
            "no SQL backend (postgres, timescale, mysql) configured: no SQL datasource".into(),
        );
    }
    for t in targets {
        let (user, password) = match &req.reader {
            Some(r) => (r.as_str(), req.reader_password.as_deref()),
            None => (t.user.as_str(), t.password.as_deref()),
        };
        let body = t.datasource_body(&t.uid(), user, password);
        let uid = ensure_datasource(&api, &mut report, &t.uid(), &t.name(), body)?;
        if let Some(note) = &t.note {
            report.steps.push(format!("  {note}"));
        }
        bound.push((t.dashboard_kind(), uid, t.name(), t.table.clone()));
    }
    if let Some(url) = &req.prometheus {
        let body = json!({
            "uid": PROMETHEUS_UID,
            "name": PROMETHEUS_NAME,
            "type": "prometheus",
            "access": "proxy",
            "url": url,
            "isDefault": false,
            "jsonData": { "httpMethod": "POST" },
        });
        let uid = ensure_datasource(&api, &mut report, PROMETHEUS_UID, PROMETHEUS_NAME, body)?;
        bound.push(("prometheus", uid, PROMETHEUS_NAME.into(), String::new()));
    }

    for file in &req.dashboards {
        let kind = dashboard_kind(&file.json);
        let matching: Vec<_> = bound.iter().filter(|b| b.0 == kind).collect();
        let title = file.json["title"].as_str().unwrap_or(&file.name).to_owned();
        if matching.is_empty() {
            report.steps.push(format!(
                "dashboard {title}: skipped (no {kind} datasource{})",
                if kind == "prometheus" {
                    "; give --prometheus URL"
                } else {
                    ""
                }
            ));
            continue;
        }
        for (i, (_, uid, name, table)) in matching.iter().enumerate() {
            // The first datasource of a kind gets the dashboard's own uid; further backends of
            // the same kind get their own copy.
            let suffix = (i > 0).then(|| name.trim_start_matches("goflow ").to_owned());
            let dash = bind_dashboard(&file.json, uid, name, table, suffix.as_deref());
            let step = format!("post dashboard {}", dash["title"].as_str().unwrap_or(""));
            let body = json!({
                "dashboard": dash,
                "folderUid": folder,
                "overwrite": true,
                "message": "goflow configure-grafana",
            });
            let r = api.call(&step, "POST", "/api/dashboards/db", Some(&body))?;
            if r.status != 200 {
                return Err(api.fail(&step, &r));
            }
            report.steps.push(format!(
                "dashboard {} ({}) bound to {name}, version {}",
                dash["title"].as_str().unwrap_or(""),
                r.body["uid"].as_str().unwrap_or(""),
                r.body["version"]
            ));
        }
    }
    Ok(report)
}

/// The folder's uid: ours if it exists or can be made, else the one holding our title.
fn ensure_folder(api: &Api, report: &mut GrafanaReport) -> Result<String, StepError> {
    let step = "find the folder";
    let r = api.call(step, "GET", &format!("/api/folders/{FOLDER_UID}"), None)?;
    match r.status {
        200 => {
            report.steps.push(format!("folder {FOLDER_TITLE} exists"));
            return Ok(FOLDER_UID.into());
        }
        404 => {}
        _ => return Err(api.fail(step, &r)),
    }
    let step = "create the folder";
    let body = json!({ "uid": FOLDER_UID, "title": FOLDER_TITLE });
    let r = api.call(step, "POST", "/api/folders", Some(&body))?;
    match r.status {
        200 => {
            report.steps.push(format!("folder {FOLDER_TITLE} created"));
            Ok(FOLDER_UID.into())
        }
        // A folder of that title exists under another uid: use it.
        409 | 412 => {
            let step = "find the folder by title";
            let r = api.call(step, "GET", "/api/folders?limit=1000", None)?;
            if r.status != 200 {
                return Err(api.fail(step, &r));
            }
            let uid = r
                .body
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["title"] == FOLDER_TITLE)
                .and_then(|f| f["uid"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| StepError {
                    step: step.into(),
                    message: format!("Grafana says folder {FOLDER_TITLE} exists but lists none"),
                })?;
            report
                .steps
                .push(format!("folder {FOLDER_TITLE} exists (uid {uid})"));
            Ok(uid)
        }
        _ => Err(api.fail(step, &r)),
    }
}

/// Creates or updates the datasource; returns the uid it has in Grafana.
fn ensure_datasource(
    api: &Api,
    report: &mut GrafanaReport,
    uid: &str,
    name: &str,
    mut body: Value,
) -> Result<String, StepError> {
    let step = format!("find datasource {name}");
    let r = api.call(&step, "GET", &format!("/api/datasources/uid/{uid}"), None)?;
    let existing = match r.status {
        200 => Some(uid.to_owned()),
        404 => None,
        _ => return Err(api.fail(&step, &r)),
    };
    let existing = match existing {
        Some(u) => Some(u),
        None => {
            let step = format!("create datasource {name}");
            let r = api.call(&step, "POST", "/api/datasources", Some(&body))?;
            match r.status {
                200 => {
                    report
                        .steps
                        .push(format!("datasource {name} created (uid {uid})"));
                    return Ok(uid.to_owned());
                }
                // Same name, another uid (made by hand or by an older goflow): update that one.
                409 => {
                    let step = format!("find datasource {name} by name");
                    let path = format!("/api/datasources/name/{}", percent_encode(name));
                    let r = api.call(&step, "GET", &path, None)?;
                    if r.status != 200 {
                        return Err(api.fail(&step, &r));
                    }
                    r.body["uid"].as_str().map(str::to_owned)
                }
                _ => return Err(api.fail(&step, &r)),
            }
        }
    };
    let Some(found) = existing else {
        return Err(StepError {
            step: format!("find datasource {name} by name"),
            message: "Grafana reported a duplicate name but returned no uid".into(),
        });
    };
    body["uid"] = Value::from(found.as_str());
    let step = format!("update datasource {name}");
    let r = api.call(
        &step,
        "PUT",
        &format!("/api/datasources/uid/{found}"),
        Some(&body),
    )?;
    if r.status != 200 {
        return Err(api.fail(&step, &r));
    }
    report
        .steps
        .push(format!("datasource {name} updated (uid {found})"));
    Ok(found)
}

/// The datasource kind a dashboard's `datasource` variable asks for (`postgres`, `mysql`,
/// `prometheus`); the newer PostgreSQL plugin id counts as postgres.
pub fn dashboard_kind(dash: &Value) -> &'static str {
    let q = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["type"] == "datasource")
        .and_then(|v| v["query"].as_str())
        .unwrap_or("");
    match q {
        "postgres" | "grafana-postgresql-datasource" => "postgres",
        "mysql" => "mysql",
        "prometheus" => "prometheus",
        _ => "unknown",
    }
}

/// The dashboard as posted: no `id`, the `datasource` variable set to the datasource, the
/// `table` constant to the backend's table, and for a second backend its own uid and title.
pub fn bind_dashboard(
    dash: &Value,
    ds_uid: &str,
    ds_name: &str,
    table: &str,
    suffix: Option<&str>,
) -> Value {
    let mut d = dash.clone();
    if let Some(obj) = d.as_object_mut() {
        obj.remove("id");
        obj.remove("version");
    }
    if let Some(s) = suffix {
        let uid = format!("{}-{s}", d["uid"].as_str().unwrap_or("goflow"));
        d["uid"] = Value::from(uid.chars().take(40).collect::<String>());
        let title = format!("{} ({s})", d["title"].as_str().unwrap_or("goflow"));
        d["title"] = Value::from(title);
    }
    if let Some(vars) = d["templating"]["list"].as_array_mut() {
        for v in vars {
            if v["type"] == "datasource" {
                v["current"] = json!({ "text": ds_name, "value": ds_uid, "selected": true });
            } else if v["type"] == "constant" && v["name"] == "table" && !table.is_empty() {
                v["query"] = Value::from(table);
                v["current"] = json!({ "text": table, "value": table });
                v["options"] = json!([{ "text": table, "value": table, "selected": true }]);
            }
        }
    }
    d
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters pass).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The dashboards in `dir` (`*.json`, and `mysql/*.json`), sorted by name; else the
/// compiled-in ones.
pub fn load_dashboards(dir: Option<&std::path::Path>) -> anyhow::Result<Vec<DashboardFile>> {
    use anyhow::Context as _;
    let Some(dir) = dir else {
        return DASHBOARDS
            .iter()
            .map(|(name, text)| {
                Ok(DashboardFile {
                    name: (*name).to_owned(),
                    json: serde_json::from_str(text)
                        .with_context(|| format!("built-in dashboard {name}"))?,
                })
            })
            .collect();
    };
    let mut files = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("mysql")] {
        let entries = match std::fs::read_dir(&sub) {
            Ok(e) => e,
            Err(e) if sub != dir && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", sub.display())),
        };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let json: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            files.push(DashboardFile {
                name: p.display().to_string(),
                json,
            });
        }
    }
    if files.is_empty() {
        anyhow::bail!("no dashboards (*.json) in {}", dir.display());
    }
    Ok(files)
}

/// The configured SQL backends as datasource targets (passwords as resolved: SQL_PASSWORD
/// wins over the file).
pub fn targets(cfg: &crate::config::RunConfig) -> Vec<SqlTarget> {
    use crate::config::{BackendKind, SslMode};
    cfg.backends
        .iter()
        .filter_map(|b| {
            let (kind, sql) = match &b.kind {
                BackendKind::Postgres { timescale, sql, .. } => (
                    if *timescale {
                        SqlKind::Timescale
                    } else {
                        SqlKind::Postgres
                    },
                    sql,
                ),
                BackendKind::Mysql { sql, .. } => (SqlKind::Mysql, sql),
                _ => return None,
            };
            let (sslmode, ca_cert, note) = match &sql.sslmode {
                SslMode::Disable => ("disable", None, None),
                // Grafana has no "prefer": plain, as goflow falls back to when TLS fails.
                SslMode::Prefer => (
                    "disable",
                    None,
                    Some(
                        "SQL_SSLMODE prefer: Grafana has no such mode, the datasource uses \
                         disable (set require in Grafana if the server has TLS)"
                            .to_owned(),
                    ),
                ),
                SslMode::Require => ("require", None, None),
                SslMode::VerifyFull { root_cert } => match std::fs::read_to_string(root_cert) {
                    Ok(pem) => ("verify-full", Some(pem), None),
                    Err(e) => (
                        "verify-full",
                        None,
                        Some(format!(
                            "cannot read SQL_SSLROOTCERT {}: {e}; add the CA in Grafana",
                            root_cert.display()
                        )),
                    ),
                },
            };
            Some(SqlTarget {
                backend: b.name.clone(),
                kind,
                host: sql.host.clone(),
                port: sql.port,
                database: sql.dbname.clone(),
                user: sql.user.clone(),
                password: sql.password.clone(),
                table: sql.table.clone(),
                sslmode,
                ca_cert,
                note,
            })
        })
        .collect()
}

/// The daemon's [`OpsSource`](crate::ops::OpsSource) with its SQL backends for POST /grafana.
pub struct WithGrafana {
    pub inner: std::sync::Arc<dyn crate::ops::OpsSource>,
    pub targets: Vec<SqlTarget>,
}

impl fmt::Debug for WithGrafana {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGrafana")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl crate::ops::OpsSource for WithGrafana {
    fn status(&self) -> crate::ops::Status {
        self.inner.status()
    }
    fn templates(&self, page: &crate::ops::status::TemplatesQuery) -> crate::ops::TemplatesReport {
        self.inner.templates(page)
    }
    fn status_page(&self, offset: u64, limit: u64) -> crate::ops::Status {
        self.inner.status_page(offset, limit)
    }
    fn health(&self) -> crate::ops::status::Health {
        self.inner.health()
    }
    fn histograms(&self) -> &crate::ops::HistogramHub {
        self.inner.histograms()
    }
    fn grafana_targets(&self) -> Vec<SqlTarget> {
        self.targets.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SqlTarget {
        SqlTarget {
            backend: "pg main".into(),
            kind: SqlKind::Timescale,
            host: "db".into(),
            port: 5432,
            database: "flows".into(),
            user: "goflow".into(),
            password: Some("s3cret".into()),
            table: "netflow.flows".into(),
            sslmode: "disable",
            ca_cert: None,
            note: None,
        }
    }

    #[test]
    fn datasource_body_keeps_the_password_in_secure_json_data() {
        let t = target();
        let b = t.datasource_body(&t.uid(), "goflow", t.password.as_deref());
        assert_eq!(b["uid"], "goflow-pg-main");
        assert_eq!(b["type"], "postgres");
        assert_eq!(b["url"], "db:5432");
        assert_eq!(b["jsonData"]["timescaledb"], true);
        assert_eq!(b["jsonData"]["database"], "flows");
        assert_eq!(b["secureJsonData"]["password"], "s3cret");
        let mut without = b.clone();
        without["secureJsonData"] = Value::Null;
        assert!(!without.to_string().contains("s3cret"));
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn mysql_datasource_runs_its_session_in_utc() {
        let t = SqlTarget {
            kind: SqlKind::Mysql,
            port: 3306,
            ..target()
        };
        let b = t.datasource_body(&t.uid(), "goflow", None);
        assert_eq!(b["type"], "mysql");
        assert_eq!(b["jsonData"]["timezone"], "+00:00");
    }

    #[test]
    fn built_in_dashboards_load_and_bind() {
        let all = load_dashboards(None).expect("built-in");
        assert_eq!(all.len(), DASHBOARDS.len());
        let kinds: Vec<_> = all.iter().map(|d| dashboard_kind(&d.json)).collect();
        assert!(
            kinds.contains(&"postgres")
                && kinds.contains(&"prometheus")
                && kinds.contains(&"mysql")
        );
        let d = bind_dashboard(
            &all[0].json,
            "ds1",
            "goflow pg",
            "netflow.flows",
            Some("pg2"),
        );
        let vars = d["templating"]["list"].as_array().expect("vars");
        let ds = vars.iter().find(|v| v["name"] == "datasource").expect("ds");
        assert_eq!(ds["current"]["value"], "ds1");
        let table = vars.iter().find(|v| v["name"] == "table").expect("table");
        assert_eq!(table["query"], "netflow.flows");
        assert!(d["uid"].as_str().expect("uid").ends_with("-pg2"));
        assert!(d.get("id").is_none());
    }

    #[test]
    fn uid_is_bounded_and_clean() {
        let mut t = target();
        t.backend = "x/".repeat(40);
        let uid = t.uid();
        assert_eq!(uid.len(), 40);
        assert!(uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(percent_encode("goflow pg"), "goflow%20pg");
    }
}
