//! Every panel of every dashboard in grafana_db/ runs against real data. `goflow run` stores a
//! real stream (generator-built v5/v9/IPFIX from `goflow bench`, plus captures from tests/data
//! whose exporters sample 1 in N) in a fresh table of the real PostgreSQL (and of TimescaleDB
//! when GOFLOW_TEST_TIMESCALE is set); then each SQL panel's query is expanded the way Grafana
//! expands it (the frontend's template variables with the dashboard's defaults and its SQL
//! quoting rules, then the backend's `$__interval_ms`/`$__interval` and macros, `time_bucket`
//! for a TimescaleDB datasource) and run with psql, and must return rows with the columns the
//! panel reads. The Prometheus dashboard's expressions must name metrics that the same daemon's
//! /metrics serves, and must parse (promtool check rules, where promtool is installed).
//!
//! The expansion follows Grafana's source: packages/grafana-sql SqlDatasource.interpolateVariable
//! (a single-valued variable has `'` doubled; a multi or include-All one is quoted as a literal;
//! a custom all value and `:raw` are inserted as they are), pkg/tsdb/sqleng (`$__interval_ms`
//! before `$__interval`) and pkg/tsdb/grafana-postgresql-datasource/macros.go.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow::pcap::netflow_datagrams;
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(90);

/// Captures whose exporters announce a sampling rate, in template-first order.
const SAMPLED: &[&[&str]] = &[
    &["samplingrate-template.pcap", "samplingrate-data.pcap"],
    &[
        "multiplesamplingrates-template.pcap",
        "multiplesamplingrates-options-template.pcap",
        "multiplesamplingrates-options-data.pcap",
        "multiplesamplingrates-data.pcap",
    ],
    &["nfv5.pcap"],
    &["ipfixprobe-templates.pcap", "ipfixprobe-data.pcap"],
];

/// The columns each SQL panel must return, by (dashboard uid, panel title).
fn expected_columns() -> HashMap<(&'static str, &'static str), &'static [&'static str]> {
    let ts_bits: &[&str] = &["time", "bits/s"];
    let ts_bits_m: &[&str] = &["time", "metric", "bits/s"];
    let top = |k: &'static str| -> &'static [&'static str] {
        match k {
            "source" => &["source", "bytes", "packets", "flows"],
            "destination" => &["destination", "bytes", "packets", "flows"],
            "port" => &["port", "bytes", "packets", "flows"],
            "protocol" => &["protocol", "bytes", "packets", "flows"],
            "as" => &["as", "bytes", "packets", "flows"],
            "exporter" => &["exporter", "bytes", "packets", "flows"],
            _ => &["interface", "bytes", "packets", "flows"],
        }
    };
    let t = "goflow-top-talkers";
    let tr = "goflow-traffic";
    let s = "goflow-flow-search";
    HashMap::from([
        ((t, "Top source addresses over time"), ts_bits_m),
        ((t, "Top destination addresses over time"), ts_bits_m),
        ((t, "Top source addresses"), top("source")),
        ((t, "Top destination addresses"), top("destination")),
        ((t, "Top source ports"), top("port")),
        ((t, "Top destination ports"), top("port")),
        ((t, "Top protocols"), top("protocol")),
        ((t, "Top source AS"), top("as")),
        ((t, "Top destination AS"), top("as")),
        ((t, "Top exporters"), top("exporter")),
        ((t, "Top input interfaces"), top("interface")),
        ((t, "Top output interfaces"), top("interface")),
        ((tr, "Bits per second"), ts_bits),
        ((tr, "Packets per second"), &["time", "packets/s"][..]),
        ((tr, "Bits per second by protocol"), ts_bits_m),
        (
            (tr, "Packets per second by protocol"),
            &["time", "metric", "packets/s"][..],
        ),
        ((tr, "Bits per second by exporter"), ts_bits_m),
        ((tr, "Bits per second by direction"), ts_bits_m),
        ((tr, "Flows per second"), &["time", "flows/s"][..]),
        (
            (tr, "Flows per second by exporter"),
            &["time", "metric", "flows/s"][..],
        ),
        ((s, "Matching flows"), &["flows", "bytes", "packets"][..]),
        ((s, "Matching traffic"), ts_bits),
        (
            (s, "Flows"),
            &[
                "time",
                "first_switched",
                "exporter",
                "src",
                "src_port",
                "dst",
                "dst_port",
                "protocol",
                "bytes",
                "packets",
                "sampling_rate",
                "tcp_flags",
                "input_if",
                "output_if",
                "src_as",
                "dst_as",
            ][..],
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// Grafana's expansion.

/// A dashboard variable's value as Grafana holds it.
#[derive(Clone, Debug)]
enum VarValue {
    /// A plain value (textbox, constant, or a chosen value of a query variable).
    Text(String),
    /// "All" of an include-All variable with a custom all value.
    All(String),
}

#[derive(Clone)]
struct Var {
    value: VarValue,
    /// multi or includeAll: the SQL datasources quote its values as literals.
    quoted: bool,
}

/// The variables of a dashboard with their defaults (`current`, or the textbox/constant query).
fn default_vars(dash: &Value) -> BTreeMap<String, Var> {
    let mut vars = BTreeMap::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let quoted = v["multi"].as_bool() == Some(true) || v["includeAll"].as_bool() == Some(true);
        let value = match v["type"].as_str() {
            Some("textbox") | Some("constant") => {
                VarValue::Text(v["query"].as_str().unwrap_or_default().to_owned())
            }
            Some("query") if v["current"]["value"] == "$__all" => {
                VarValue::All(v["allValue"].as_str().unwrap_or_default().to_owned())
            }
            _ => VarValue::Text(
                v["current"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
        };
        vars.insert(name, Var { value, quoted });
    }
    vars
}

/// A query variable without "All" and without a saved value (the hidden `rollup_end`): Grafana
/// gives it the first value its query returns.
fn takes_first_value(v: &Value) -> bool {
    v["type"] == "query"
        && v["includeAll"].as_bool() != Some(true)
        && !v["current"]["value"].is_string()
}

/// Sets such a variable ([`takes_first_value`]) from its query's rows; others keep their value.
fn set_from_query(vars: &mut BTreeMap<String, Var>, v: &Value, rows: &Rows) {
    if !takes_first_value(v) {
        return;
    }
    if let (Some(name), Some(Some(first))) = (
        v["name"].as_str(),
        rows.rows.first().and_then(|r| r.first()),
    ) {
        vars.insert(
            name.to_owned(),
            Var {
                value: VarValue::Text(first.clone()),
                quoted: false,
            },
        );
    }
}

/// The frontend's `templateSrv.replace(sql, scopedVars, interpolateVariable)` for the forms the
/// dashboards use: `$name`, `${name}`, `${name:raw}`, `[[name]]`. Built-in `$__` names are left
/// for the backend.
fn interpolate(sql: &str, vars: &BTreeMap<String, Var>) -> String {
    let mut out = String::with_capacity(sql.len());
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let (name, fmt, end) = if sql[i..].starts_with("${") {
            match sql[i + 2..].find('}') {
                Some(close) => {
                    let inner = &sql[i + 2..i + 2 + close];
                    let (n, f) = inner.split_once(':').unwrap_or((inner, ""));
                    (n, f, i + 3 + close)
                }
                None => ("", "", i),
            }
        } else if sql[i..].starts_with("[[") {
            match sql[i + 2..].find("]]") {
                Some(close) => (&sql[i + 2..i + 2 + close], "", i + 4 + close),
                None => ("", "", i),
            }
        } else if b[i] == b'$' {
            let len = sql[i + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(sql.len() - i - 1);
            (&sql[i + 1..i + 1 + len], "", i + 1 + len)
        } else {
            ("", "", i)
        };
        match vars.get(name) {
            Some(var) if !name.starts_with("__") && end > i => {
                let v = match (&var.value, fmt) {
                    (VarValue::All(all), _) => all.clone(),
                    (VarValue::Text(t), "raw") => t.clone(),
                    (VarValue::Text(t), "") if var.quoted => format!("'{}'", t.replace('\'', "''")),
                    (VarValue::Text(t), "") => t.replace('\'', "''"),
                    (VarValue::Text(_), other) => panic!("format :{other} not emulated"),
                };
                out.push_str(&v);
                i = end;
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// A time range: Unix seconds.
#[derive(Clone, Copy, Debug)]
struct Range {
    from: i64,
    to: i64,
}

fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The panel interval Grafana computes: range / max data points, rounded up to a round value,
/// at least the SQL datasource's default minimum of 1m.
fn interval_secs(range: Range, max_points: i64) -> i64 {
    const ROUND: &[i64] = &[
        60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 604_800,
        2_592_000, 31_536_000,
    ];
    let raw = (range.to - range.from) / max_points.max(1);
    ROUND
        .iter()
        .copied()
        .find(|&r| r >= raw)
        .unwrap_or(31_536_000)
}

fn format_interval(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The backend's expansion: sqleng's interval variables, then the PostgreSQL macros.
fn expand_macros(sql: &str, range: Range, interval: i64, timescaledb: bool) -> String {
    expand_macros_in(sql, range, interval, timescaledb, false)
}

/// [`expand_macros`] for PostgreSQL (`mysql` false) or MySQL (pkg/tsdb/mysql/macros.go:
/// FROM_UNIXTIME bounds, `UNIX_TIMESTAMP(col) DIV n * n` groups).
fn expand_macros_in(
    sql: &str,
    range: Range,
    interval: i64,
    timescaledb: bool,
    mysql: bool,
) -> String {
    let sql = sql
        .replace("$__interval_ms", &(interval * 1000).to_string())
        .replace("$__interval", &format_interval(interval))
        .replace("$__unixEpochFrom()", &range.from.to_string())
        .replace("$__unixEpochTo()", &range.to.to_string());
    let mut out = String::new();
    let mut rest = sql.as_str();
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let tail = &after[name_len..];
        let Some(args_end) = tail.starts_with('(').then(|| tail.find(')')).flatten() else {
            panic!("unexpanded ${name} in {sql}");
        };
        let args: Vec<&str> = tail[1..args_end].split(',').map(str::trim).collect();
        let group = |args: &[&str]| -> String {
            let secs = parse_interval(args.get(1).copied().unwrap_or("")).expect("interval");
            if mysql {
                format!("UNIX_TIMESTAMP({}) DIV {secs} * {secs}", args[0])
            } else if timescaledb {
                format!("time_bucket('{secs}.000s',{})", args[0])
            } else {
                format!("floor(extract(epoch from {})/{secs})*{secs}", args[0])
            }
        };
        let from = rfc3339(range.from);
        let to = rfc3339(range.to);
        let expanded = match name {
            "timeFilter" if mysql => format!(
                "{} BETWEEN FROM_UNIXTIME({}) AND FROM_UNIXTIME({})",
                args[0], range.from, range.to
            ),
            "timeFrom" if mysql => format!("FROM_UNIXTIME({})", range.from),
            "timeTo" if mysql => format!("FROM_UNIXTIME({})", range.to),
            "timeFilter" => format!("{} BETWEEN '{from}' AND '{to}'", args[0]),
            "timeFrom" => format!("'{from}'"),
            "timeTo" => format!("'{to}'"),
            "time" => format!("{} AS \"time\"", args[0]),
            "timeGroup" => group(&args),
            "timeGroupAlias" => format!("{} AS \"time\"", group(&args)),
            "unixEpochFilter" => {
                format!("{0} >= {1} AND {0} <= {2}", args[0], range.from, range.to)
            }
            other => panic!("macro $__{other} not emulated"),
        };
        out.push_str(&expanded);
        rest = &tail[args_end + 1..];
    }
    out.push_str(rest);
    out
}

fn parse_interval(s: &str) -> Option<i64> {
    let s = s.trim_matches('\'');
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    Some(
        n * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        },
    )
}

/// Every panel, rows' panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

fn dashboards(dir: &Path) -> Result<Vec<(PathBuf, Value)>, Box<dyn Error>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
        out.push((p, v));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The database and the daemon.

struct Pg {
    host: String,
    port: String,
    user: String,
    db: String,
    /// A MySQL/MariaDB server, queried with the `mariadb` client (session time zone UTC, as
    /// configure-grafana sets the datasource's).
    mysql: bool,
}

/// Result of one query: column names and rows (NULL as None).
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Pg {
    fn query(&self, sql: &str) -> Result<Rows, String> {
        if self.mysql {
            return self.query_mysql(sql);
        }
        let out = Command::new("psql")
            .args([
                "-h", &self.host, "-p", &self.port, "-U", &self.user, "-d", &self.db,
            ])
            .args([
                "-X",
                "-A",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                "\x1f",
                "-P",
                "footer=off",
                "-P",
                "null=\x1e",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql failed: {}\n{sql}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let columns = lines
            .next()
            .map(|h| h.split('\x1f').map(str::to_owned).collect())
            .unwrap_or_default();
        let rows = lines
            .map(|l| {
                l.split('\x1f')
                    .map(|f| (f != "\x1e").then(|| f.to_owned()))
                    .collect()
            })
            .collect();
        Ok(Rows { columns, rows })
    }

    fn query_mysql(&self, sql: &str) -> Result<Rows, String> {
        let out = Command::new("mariadb")
            .args([
                "-h", &self.host, "-P", &self.port, "-u", &self.user, &self.db,
            ])
            .args(["--batch", "--raw", "-e"])
            .arg(format!("SET time_zone = '+00:00'; {sql}"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("mariadb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mariadb failed: {}\n{sql}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let columns = lines
            .next()
            .map(|h| h.split('\t').map(str::to_owned).collect())
            .unwrap_or_default();
        let rows = lines
            .map(|l| {
                l.split('\t')
                    .map(|f| (f != "NULL").then(|| f.to_owned()))
                    .collect()
            })
            .collect();
        Ok(Rows { columns, rows })
    }

    fn one(&self, sql: &str) -> Result<String, String> {
        self.query(sql)?
            .rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .ok_or_else(|| format!("no value from {sql}"))
    }
}

struct Daemon {
    child: Child,
    api: String,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_get(addr: &str, path: &str) -> Result<String, Box<dyn Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(body.to_owned())
}

/// Starts `goflow run` writing to `table` with backend type `kind`, sends it the generator's
/// flows and the sampled captures, and waits until every record is stored.
fn fill(pg: &Pg, kind: &str, table: &str, dir: &Path) -> Result<Daemon, Box<dyn Error>> {
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let api = format!("127.0.0.1:{}", free_tcp_port()?);
    let config = format!(
        "backends:\n  pg:\n    type: {kind}\n    config:\n      SQL_SERVER: {host}\n      \
         SQL_PORT: \"{pgport}\"\n      SQL_USERNAME: {user}\n      SQL_DB: {db}\n      \
         SQL_TABLE: {table}\n      SQL_SSLMODE: disable\n      flush_ms: 100\n\
         frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, workers: 1}}\n    backend: pg\n\
         api: {api}\nutilities:\n  max_age: 0\n",
        host = pg.host,
        pgport = pg.port,
        user = pg.user,
        db = pg.db,
    );
    let cfg = dir.join("config.yml");
    std::fs::write(&cfg, config)?;
    let log = dir.join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SQL_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()?;
    let daemon = Daemon { child, api, log };
    let log_text = || std::fs::read_to_string(&daemon.log).unwrap_or_default();
    let deadline = Instant::now() + DEADLINE;
    while !log_text().contains("listening on udp") {
        if Instant::now() > deadline {
            return Err(format!("goflow did not start: {}", log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The generator: three exporters (v5, v9, IPFIX), IPv4 and IPv6, current timestamps.
    let target = format!("127.0.0.1:{port}");
    let status = Command::new(BIN)
        .args(["bench", "--proto", "mixed", "--exporters", "3"])
        .args(["--v6-share", "30", "--flows", "6000", "--rate", "0"])
        .args(["--target", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    assert!(status.success(), "goflow bench");
    let mut sent_from_captures = 0usize;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let collector: SocketAddr = target.parse()?;
    for (i, set) in SAMPLED.iter().enumerate() {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 10 + i as u8));
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        for f in *set {
            for (_, payload) in netflow_datagrams(&std::fs::read(data.join(f))?)? {
                sock.send_to(&payload, collector)?;
                sent_from_captures += 1;
            }
        }
    }
    assert!(sent_from_captures > 4);

    // Wait until the count stops growing with the generator's 6000 in.
    let count_sql = format!("SELECT count(*) FROM {table}");
    let mut last = (0u64, Instant::now());
    loop {
        let n: u64 = pg
            .one(&count_sql)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 6000 && last.1.elapsed() > Duration::from_millis(1500) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{n} rows stored; log: {}", log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(daemon)
}

/// Materializes the closed hours of the top-K rollup now, as goflow's rollup thread does every
/// minute (its first run found the table empty): the refresh step's SQL over every closed hour
/// at once, under the thread's advisory lock.
fn materialize_top(pg: &Pg, table: &str) -> TestResult {
    use goflow_writers::pg::ddl;
    let lo = "'-infinity'::timestamptz";
    let hi = format!(
        "date_trunc('hour', now() - INTERVAL '{} minutes')",
        ddl::TOP_GRACE_MINUTES
    );
    let step = |sql: String| {
        sql.replace("$3", &ddl::TOP_KEYS_DEFAULT.to_string())
            .replace("$1", lo)
            .replace("$2", &hi)
    };
    pg.query(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({}, {}); {}; {}; COMMIT",
        ddl::SCHEMA_LOCK_CLASS,
        ddl::schema_lock_key(&ddl::top_name(table)),
        step(ddl::top_refresh_delete(table)),
        step(ddl::top_refresh_insert(table)),
    ))?;
    let hours = pg.one(&format!(
        "SELECT count(DISTINCT bucket) FROM {}",
        ddl::top_name(table)
    ))?;
    assert!(
        hours.parse::<i64>().unwrap_or(0) > 0,
        "the captures' hours are in the top-K rollup"
    );
    Ok(())
}

fn check_sql_dashboards(pg: &Pg, table: &str, timescaledb: bool) -> TestResult {
    let mut root = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana_db");
    if pg.mysql {
        root.push("mysql");
    }
    let expected = expected_columns();
    // The range covers every stored flow (captures are from years ago, the generator's are now).
    let bounds = pg.query(&if pg.mysql {
        format!(
            "SELECT floor(UNIX_TIMESTAMP(min(last_switched))) - 60, \
             ceil(UNIX_TIMESTAMP(max(last_switched))) + 60, \
             sum(CAST(in_bytes AS DECIMAL(20, 0)) * greatest(sampling_rate, 1)), sum(in_bytes), \
             count(DISTINCT exporter) FROM {table}"
        )
    } else {
        format!(
            "SELECT floor(extract(epoch from min(last_switched)))::bigint - 60, \
             ceil(extract(epoch from max(last_switched)))::bigint + 60, \
             sum(in_bytes * greatest(sampling_rate, 1))::text, sum(in_bytes)::text, \
             count(DISTINCT exporter) FROM {table}"
        )
    })?;
    let b = &bounds.rows[0];
    let num = |i: usize| -> i64 {
        b[i].as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default()
    };
    let wide = Range {
        from: num(0),
        to: num(1),
    };
    let (scaled, raw, exporters) = (num(2), num(3), num(4));
    assert!(
        scaled > raw,
        "the stream has sampled flows ({scaled} vs {raw} bytes)"
    );
    // The generator's flows alone: the last hour, as the dashboards' defaults look.
    let recent = Range {
        from: wide.to - 3600,
        to: wide.to,
    };
    if !pg.mysql {
        materialize_top(pg, table)?;
    }

    let mut seen = BTreeSet::new();
    let mut ran = 0;
    for (path, dash) in dashboards(&root)? {
        let uid = dash["uid"].as_str().unwrap_or_default().to_owned();
        assert!(uid.starts_with("goflow-"), "{}: fixed uid", path.display());
        let ds_var = dash["templating"]["list"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["type"] == "datasource"));
        assert_eq!(
            ds_var.map(|v| v["name"].as_str()),
            Some(Some("datasource")),
            "{uid}: a ${{datasource}} variable"
        );
        let kind = if pg.mysql { "mysql" } else { "postgres" };
        if ds_var.map(|v| &v["query"]) != Some(&Value::from(kind)) {
            continue;
        }
        // The MySQL dashboards are the PostgreSQL ones in MySQL's dialect: the same panels.
        let uid = uid.replacen("goflow-mysql-", "goflow-", 1);
        let mut vars = default_vars(&dash);
        vars.insert(
            "table".into(),
            Var {
                value: VarValue::Text(table.to_owned()),
                quoted: false,
            },
        );
        // Variable queries: each returns values.
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let sql = expand_macros_in(
                &interpolate(v["query"].as_str().unwrap_or_default(), &vars),
                wide,
                60,
                timescaledb,
                pg.mysql,
            );
            let rows = pg.query(&sql)?;
            assert!(
                !rows.rows.is_empty(),
                "{uid}: variable {} has values",
                v["name"]
            );
            set_from_query(&mut vars, v, &rows);
        }
        for p in panels(&dash) {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let Some(raw_sql) = t["rawSql"].as_str() else {
                    continue;
                };
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{uid}/{title}: bound to the datasource variable"
                );
                let desc = p["description"].as_str().unwrap_or_default();
                if raw_sql.contains("in_bytes") || raw_sql.contains("in_pkts") {
                    assert!(
                        raw_sql.contains("greatest(sampling_rate, 1)")
                            && desc.contains("sampling_rate"),
                        "{uid}/{title}: bytes/packets times sampling_rate, said in the description"
                    );
                }
                let want = expected
                    .get(&(uid.as_str(), title))
                    .ok_or_else(|| format!("{uid}/{title}: no expected columns in the test"))?;
                for range in [wide, recent] {
                    let iv = interval_secs(range, 1000);
                    let sql = expand_macros_in(
                        &interpolate(raw_sql, &vars),
                        range,
                        iv,
                        timescaledb,
                        pg.mysql,
                    );
                    assert!(!sql.contains('$'), "{uid}/{title}: all expanded: {sql}");
                    let rows = pg.query(&sql)?;
                    assert_eq!(&rows.columns, want, "{uid}/{title}: columns");
                    assert!(
                        !rows.rows.is_empty(),
                        "{uid}/{title}: rows in {range:?}\n{sql}"
                    );
                    if t["format"] == "time_series" {
                        for r in &rows.rows {
                            let v: f64 = r.last().cloned().flatten().unwrap_or_default().parse()?;
                            assert!(v >= 0.0, "{uid}/{title}: {r:?}");
                        }
                    }
                    // Whole hours from the top-K rollup, the rest from the flow table: with K
                    // above the keys an hour has, the same rows as the flow table alone (the
                    // guard made false; rows tied with the last one may differ under LIMIT).
                    if raw_sql.contains("_1h_top") && range.from == wide.from {
                        let forced = sql.replace(">= 21600", ">= 9000000000000");
                        assert_ne!(forced, sql);
                        let raw_rows = pg.query(&forced)?;
                        if t["format"] == "table" {
                            let last = rows.rows.last().and_then(|r| r[1].clone());
                            let cut = |rs: &[Vec<Option<String>>]| -> Vec<Vec<Option<String>>> {
                                let mut v: Vec<_> =
                                    rs.iter().filter(|r| r[1] != last).cloned().collect();
                                v.sort();
                                v
                            };
                            assert_eq!(
                                cut(&rows.rows),
                                cut(&raw_rows.rows),
                                "{uid}/{title}: rollup and flow table agree\n{sql}"
                            );
                            // A stale `rollup_end` (after the first materialized hour only):
                            // the later hours come from the flow table instead, none twice.
                            let mut stale_vars = vars.clone();
                            let first_hour = pg.one(&format!(
                                "SELECT extract(epoch FROM min(bucket))::bigint + 3600 \
                                 FROM {table}_1h_top"
                            ))?;
                            stale_vars.insert(
                                "rollup_end".into(),
                                Var {
                                    value: VarValue::Text(first_hour),
                                    quoted: false,
                                },
                            );
                            let stale = expand_macros_in(
                                &interpolate(raw_sql, &stale_vars),
                                range,
                                iv,
                                timescaledb,
                                pg.mysql,
                            );
                            assert_ne!(stale, sql, "{uid}/{title}: reads rollup_end");
                            assert_eq!(
                                cut(&pg.query(&stale)?.rows),
                                cut(&rows.rows),
                                "{uid}/{title}: a stale rollup_end counts nothing twice\n{stale}"
                            );
                        } else {
                            assert!(!raw_rows.rows.is_empty(), "{uid}/{title}: raw series");
                        }
                    }
                    if !pg.mysql && title.starts_with("Matching") && range.from == wide.from {
                        // From the per-minute rollup: every flow, bytes times the sampling rate.
                        let forced = sql.replace("> 10800", "> 9000000000000");
                        assert_ne!(forced, sql);
                        let raw_rows = pg.query(&forced)?;
                        if title == "Matching flows" {
                            assert_eq!(rows.rows, raw_rows.rows, "{uid}/{title}: rollup = raw");
                            assert_eq!(
                                rows.rows[0][1]
                                    .as_deref()
                                    .and_then(|s| s.parse::<i64>().ok()),
                                Some(scaled),
                                "{uid}/{title}: bytes times the sampling rate"
                            );
                        }
                    }
                    if title == "Top exporters" && range.from == wide.from {
                        let total: i64 = rows
                            .rows
                            .iter()
                            .map(|r| r[1].as_deref().unwrap_or("0").parse::<i64>().unwrap_or(-1))
                            .sum();
                        assert!(exporters <= 10, "Top N covers every exporter");
                        assert_eq!(total, scaled, "bytes times the sampling rate");
                    }
                }
                seen.insert((uid.clone(), title.to_owned()));
                ran += 1;
            }
        }
        // The filters with values: one exporter, one CIDR, one port, one protocol, one AS.
        if uid == "goflow-flow-search" {
            let host = if pg.mysql { "INET6_NTOA" } else { "host" };
            let r = pg.query(&format!(
                "SELECT {host}(exporter), {host}(src_ip), dst_port, protocol, src_as FROM {table} \
                 WHERE src_ip IS NOT NULL AND dst_port IS NOT NULL AND protocol IS NOT NULL \
                 AND src_as IS NOT NULL ORDER BY last_switched DESC LIMIT 1"
            ))?;
            let f = &r.rows[0];
            let cidr = match f[1].as_deref().unwrap_or_default() {
                a if a.contains(':') => format!("{a}/64"),
                a => format!("{a}/24"),
            };
            let mut vars = default_vars(&dash);
            let set = |vars: &mut BTreeMap<String, Var>, k: &str, v: &str| {
                let quoted = vars.get(k).is_some_and(|x| x.quoted);
                vars.insert(
                    k.into(),
                    Var {
                        value: VarValue::Text(v.to_owned()),
                        quoted,
                    },
                );
            };
            set(&mut vars, "table", table);
            set(&mut vars, "exporter", f[0].as_deref().unwrap_or_default());
            set(&mut vars, "src", &cidr);
            set(&mut vars, "port", f[2].as_deref().unwrap_or_default());
            set(&mut vars, "protocol", f[3].as_deref().unwrap_or_default());
            set(&mut vars, "asn", f[4].as_deref().unwrap_or_default());
            let flows = panels(&dash)
                .into_iter()
                .find(|p| p["title"] == "Flows")
                .ok_or("Flows panel")?;
            let sql = expand_macros_in(
                &interpolate(
                    flows["targets"][0]["rawSql"].as_str().unwrap_or_default(),
                    &vars,
                ),
                wide,
                60,
                timescaledb,
                pg.mysql,
            );
            let rows = pg.query(&sql)?;
            assert!(
                !rows.rows.is_empty(),
                "filtered search finds the flow\n{sql}"
            );
            for r in &rows.rows {
                assert_eq!(r[2], f[0], "exporter filter");
            }
        }
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "every expected panel ran: {seen:?}"
    );
    eprintln!(
        "{ran} SQL panel queries ran on {} (timescaledb: {timescaledb}), two ranges each",
        pg.port
    );
    Ok(())
}

fn check_prometheus_dashboards(api: &str) -> TestResult {
    let page = http_get(api, "/metrics")?;
    let names: BTreeSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert!(names.contains("goflow_receiver_datagrams_total"), "{page}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana_db");
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n = 0;
    for (_, dash) in dashboards(&root)? {
        let uid = dash["uid"].as_str().unwrap_or_default();
        for p in panels(&dash) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let Some(expr) = t["expr"].as_str() else {
                    continue;
                };
                assert_eq!(t["datasource"]["uid"], "${datasource}");
                let mut found = 0;
                for (at, _) in expr.match_indices("goflow_") {
                    let name: String = expr[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        names.contains(name.as_str()),
                        "{uid}/{}: {name} is not on /metrics",
                        p["title"]
                    );
                    found += 1;
                }
                assert!(found > 0, "{uid}/{}: names a goflow metric", p["title"]);
                let e = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*");
                n += 1;
                rules.push_str(&format!(
                    "      - record: goflow:panel{n}\n        expr: '{}'\n",
                    e.replace('\'', "''")
                ));
            }
        }
    }
    assert!(n >= 10, "{n} Prometheus expressions");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules)?;
    match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("skipping the PromQL syntax check: promtool not installed"),
    }
    eprintln!("{n} Prometheus expressions name metrics on /metrics");
    Ok(())
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[test]
fn every_panel_runs_on_postgres() -> TestResult {
    let pg = Pg {
        host: env_or("PGHOST", "127.0.0.1"),
        port: env_or("PGPORT", "5432"),
        user: env_or("PGUSER", "postgres"),
        db: env_or("PGDATABASE", "test"),
        mysql: false,
    };
    pg.one("SELECT 1").map_err(|e| {
        format!(
            "no PostgreSQL at {}:{} ({e}); these tests run against the real server",
            pg.host, pg.port
        )
    })?;
    let table = format!("goflow_t_grafana_{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let result = (|| -> TestResult {
        let daemon = fill(&pg, "postgres", &table, dir.path())?;
        check_sql_dashboards(&pg, &table, false)?;
        check_prometheus_dashboards(&daemon.api)?;
        Ok(())
    })();
    let _ = pg.query(&format!("DROP TABLE IF EXISTS {table} CASCADE"));
    let _ = pg.query(&format!("DROP TABLE IF EXISTS {table}_positions"));
    let _ = pg.query(&format!("DROP TABLE IF EXISTS {table}_1h_top"));
    let _ = pg.query(&format!(
        "DROP VIEW IF EXISTS {table}_1m; DROP FUNCTION IF EXISTS {table}_1m_live(); \
         DROP TABLE IF EXISTS {table}_1m_data"
    ));
    result
}

#[test]
fn every_panel_runs_on_timescaledb() -> TestResult {
    let Some(addr) = std::env::var("GOFLOW_TEST_TIMESCALE")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!("skipping every_panel_runs_on_timescaledb: GOFLOW_TEST_TIMESCALE is not set");
        return Ok(());
    };
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "5433"));
    let pg = Pg {
        host: host.to_owned(),
        port: port.to_owned(),
        user: env_or("PGUSER", "postgres"),
        db: "test".to_owned(),
        mysql: false,
    };
    pg.one("SELECT 1")
        .map_err(|e| format!("GOFLOW_TEST_TIMESCALE={addr} but no server there: {e}"))?;
    let table = format!("goflow_t_grafana_ts_{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let result = (|| -> TestResult {
        let _daemon = fill(&pg, "timescale", &table, dir.path())?;
        let hyper = pg.one(&format!(
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = '{table}'"
        ))?;
        assert_eq!(hyper, "1", "the table is a hypertable");
        check_sql_dashboards(&pg, &table, true)?;
        Ok(())
    })();
    let _ = pg.query(&format!("DROP TABLE IF EXISTS {table} CASCADE"));
    let _ = pg.query(&format!("DROP TABLE IF EXISTS {table}_positions"));
    let _ = pg.query(&format!("DROP TABLE IF EXISTS {table}_1h_top"));
    result
}

#[test]
fn every_mysql_panel_runs_on_mariadb() -> TestResult {
    let Some(addr) = std::env::var("GOFLOW_TEST_MYSQL")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!("skipping every_mysql_panel_runs_on_mariadb: GOFLOW_TEST_MYSQL is not set");
        return Ok(());
    };
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "3306"));
    let my = Pg {
        host: host.to_owned(),
        port: port.to_owned(),
        user: env_or("MYSQL_USER", "root"),
        db: env_or("MYSQL_DATABASE", "test"),
        mysql: true,
    };
    my.one("SELECT 1")
        .map_err(|e| format!("GOFLOW_TEST_MYSQL={addr} but no server there: {e}"))?;
    let table = format!("goflow_t_grafana_my_{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let result = (|| -> TestResult {
        let _daemon = fill(&my, "mysql", &table, dir.path())?;
        check_sql_dashboards(&my, &table, false)?;
        Ok(())
    })();
    let _ = my.query(&format!(
        "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_positions"
    ));
    result
}

#[test]
fn grafana_expansion_matches_the_documented_forms() {
    let r = Range {
        from: 1_492_750_877,
        to: 1_492_751_177,
    };
    assert_eq!(rfc3339(r.from), "2017-04-21T05:01:17Z");
    assert_eq!(
        expand_macros("WHERE $__timeFilter(t)", r, 300, false),
        "WHERE t BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z'"
    );
    assert_eq!(
        expand_macros(
            "SELECT $__timeGroupAlias(t, $__interval), x/$__interval_ms",
            r,
            300,
            false
        ),
        "SELECT floor(extract(epoch from t)/300)*300 AS \"time\", x/300000"
    );
    assert_eq!(
        expand_macros("$__timeGroup(t,'5m')", r, 60, true),
        "time_bucket('300.000s',t)"
    );
    assert_eq!(
        expand_macros_in(
            "WHERE $__timeFilter(t) GROUP BY $__timeGroupAlias(t, $__interval)",
            r,
            300,
            false,
            true
        ),
        "WHERE t BETWEEN FROM_UNIXTIME(1492750877) AND FROM_UNIXTIME(1492751177) \
         GROUP BY UNIX_TIMESTAMP(t) DIV 300 * 300 AS \"time\""
    );
    assert_eq!(
        expand_macros("$__unixEpochFilter(t)", r, 60, false),
        "t >= 1492750877 AND t <= 1492751177"
    );
    let mut vars = BTreeMap::new();
    vars.insert(
        "s".to_owned(),
        Var {
            value: VarValue::Text("o'k".into()),
            quoted: false,
        },
    );
    vars.insert(
        "e".to_owned(),
        Var {
            value: VarValue::Text("10.0.0.1".into()),
            quoted: true,
        },
    );
    vars.insert(
        "a".to_owned(),
        Var {
            value: VarValue::All("*".into()),
            quoted: true,
        },
    );
    assert_eq!(
        interpolate("'${s}' $e '${e:raw}' [[a]] $__interval", &vars),
        "'o''k' '10.0.0.1' '10.0.0.1' * $__interval"
    );
}

/// Not a check: writes every SQL panel's query of the PostgreSQL dashboards, expanded as in the
/// tests, for the last 1 h, 24 h and 7 days before GOFLOW_PANEL_TO (Unix seconds, default now),
/// on GOFLOW_PANEL_TABLE, one file per panel and range into GOFLOW_PANEL_DUMP
/// (`<uid>.<n>.<range>.sql`, the panel's title on the first line as a comment), with
/// `time_bucket` when GOFLOW_PANEL_TIMESCALE=1. Query variables without a saved value are read
/// from the server at GOFLOW_PANEL_PG (host:port; PGUSER, PGDATABASE). perf/grafana.sh times them.
#[test]
#[ignore = "a helper of perf/grafana.sh"]
fn dump_panel_queries() -> TestResult {
    let dir = PathBuf::from(std::env::var("GOFLOW_PANEL_DUMP")?);
    let table = std::env::var("GOFLOW_PANEL_TABLE")?;
    let timescaledb = std::env::var("GOFLOW_PANEL_TIMESCALE").is_ok_and(|v| v == "1");
    let to: i64 = match std::env::var("GOFLOW_PANEL_TO") {
        Ok(v) => v.parse()?,
        Err(_) => i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        )?,
    };
    let pg = match std::env::var("GOFLOW_PANEL_PG") {
        Ok(addr) => {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("GOFLOW_PANEL_PG={addr}: not host:port"))?;
            Some(Pg {
                host: host.to_owned(),
                port: port.to_owned(),
                user: env_or("PGUSER", "postgres"),
                db: env_or("PGDATABASE", "test"),
                mysql: false,
            })
        }
        Err(_) => None,
    };
    std::fs::create_dir_all(&dir)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana_db");
    let mut n = 0;
    for (_, dash) in dashboards(&root)? {
        let is_pg = dash["templating"]["list"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["type"] == "datasource"))
            .is_some_and(|v| v["query"] == "postgres");
        if !is_pg {
            continue;
        }
        let uid = dash["uid"].as_str().unwrap_or_default();
        let mut vars = default_vars(&dash);
        vars.insert(
            "table".into(),
            Var {
                value: VarValue::Text(table.clone()),
                quoted: false,
            },
        );
        // Query variables with no saved value (the hidden `rollup_end`) take their first value
        // from the server, as Grafana does when the dashboard loads.
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            if !takes_first_value(v) {
                continue;
            }
            let pg = pg.as_ref().ok_or_else(|| {
                format!(
                    "{uid}: variable {} is read from the server: set GOFLOW_PANEL_PG=host:port",
                    v["name"]
                )
            })?;
            let range = Range {
                from: to - 86_400,
                to,
            };
            let sql = expand_macros(
                &interpolate(v["query"].as_str().unwrap_or_default(), &vars),
                range,
                60,
                timescaledb,
            );
            set_from_query(&mut vars, v, &pg.query(&sql)?);
        }
        for (i, p) in panels(&dash).into_iter().enumerate() {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let Some(raw_sql) = t["rawSql"].as_str() else {
                    continue;
                };
                for (name, secs) in [("1h", 3600), ("24h", 86_400), ("7d", 7 * 86_400)] {
                    let range = Range {
                        from: to - secs,
                        to,
                    };
                    let sql = expand_macros(
                        &interpolate(raw_sql, &vars),
                        range,
                        interval_secs(range, 1000),
                        timescaledb,
                    );
                    std::fs::write(
                        dir.join(format!("{uid}.{i:02}.{name}.sql")),
                        format!("-- {title}\n{sql};\n"),
                    )?;
                    n += 1;
                }
            }
        }
    }
    eprintln!("{n} queries in {}", dir.display());
    Ok(())
}
