//! `goflow run` (and plain `goflow`): the daemon. Loads the configuration, starts each backend
//! (a bounded queue drained by one writer thread per sink: one, or `connections` for
//! PostgreSQL), opens one SO_REUSEPORT socket per worker and runs a receive
//! loop on each ([`pipeline::worker::run`]), serves the ops API, and logs a one-line summary
//! every 10 s. SIGINT/SIGTERM stop it cleanly: receiving stops, every worker drains what the
//! kernel already delivered, every backend writes and flushes its queue, exit 0.
//!
//! Under systemd (`Type=notify`, dist/goflow.service) it tells systemd when it is ready, keeps
//! the watchdog fed from the receive loops and says when it stops ([`crate::notify`]). SIGHUP
//! reopens the file backends' files (logrotate) and reloads what can change without a restart
//! ([`RELOADABLE_KEYS`]); every other changed key is named in one log line as needing a
//! restart. No socket, worker or backend is touched, so no datagram is dropped.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use goflow_codec::DecoderConfig;
use goflow_writers::backend::{Backend, BackendOptions, ConnectState, FlushHook, FlushReport};
use goflow_writers::file::{FileIo, FileSink, JsonEncoder, NullEncoder, NullSink};
use goflow_writers::sink::{RowEncoder, Sink};
use goflow_writers::spool::SpoolConfig;

use crate::config::{self, BackendConfig, BackendKind, RunConfig, SqlConfig};
use crate::ingest::{self, Receiver, ReceiverKind};
use crate::notify::{Notifier, Watchdog};
use crate::ops::{HistogramHub, LocalHistograms};
use crate::pipeline::{self, EncoderFactory, Pipeline, Shared, WorkerCounters};
use crate::state::{StateDir, TemplateSaver};
use goflow_codec::decoder::saved::SavedState;

/// Interval of the summary log line.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// How often the main thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long start-up waits for the backends' first connect attempts (PostgreSQL's own connect
/// timeout is 10 s).
const CONNECT_WAIT: Duration = Duration::from_secs(12);
/// How long a backend keeps retrying at shutdown before it counts the rest as dropped.
const BACKEND_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The keys a SIGHUP applies to the running daemon (besides reopening the file backends'
/// files); a change to any other key is logged as needing a restart.
pub const RELOADABLE_KEYS: &[&str] = &["log_level", "sampling"];

/// Options of `goflow run`.
#[derive(Debug, Default, clap::Args)]
pub struct RunOpt {
    /// Check everything that can be checked without receiving (config, state_dir, ports, each
    /// backend reached with its credentials), one line per item; exit 2 on a config error, 3
    /// when any check fails.
    #[arg(long)]
    pub check: bool,
}

pub fn run(cli: &crate::cli::Cli, opt: &RunOpt) -> anyhow::Result<ExitCode> {
    let cfg = config::load(cli.config.as_deref())?;
    if opt.check {
        print_plan(&cfg);
        return Ok(super::check::run(&cfg));
    }
    Daemon::start(cfg, cli.verbose)
        .map_err(crate::exit::start)?
        .wait()
}

fn print_plan(cfg: &RunConfig) {
    println!("configuration: {}", cfg.source_name());
    let receiver = match cfg.receiver.choice {
        ingest::ReceiverChoice::Auto => "auto",
        ingest::ReceiverChoice::Uring => "uring",
        ingest::ReceiverChoice::Mmsg => "mmsg",
    };
    match &cfg.netflow {
        Some(names) => println!(
            "listen: udp {} ({} workers, receiver {receiver}) -> {}",
            cfg.receiver.bind,
            cfg.receiver.workers,
            names.join(", ")
        ),
        None => println!("listen: no netflow frontend"),
    }
    if let Some(k) = &cfg.kafka {
        println!(
            "kafka frontend: {} topics {} group {} ({}) -> {}",
            k.kafka.server,
            k.topics.join(", "),
            k.group_id,
            k.format.name(),
            k.backends.join(", ")
        );
    }
    for b in &cfg.backends {
        println!(
            "backend {} ({}): {}{}",
            b.name,
            b.kind.type_name(),
            b.kind.target(),
            connections_note(&b.kind) + &columns_note(b.columns)
        );
    }
    match cfg.api {
        Some(a) => println!("api: {a}"),
        None => println!("api: off"),
    }
    println!("state_dir: {}", cfg.state_dir.display());
}

/// What to do when the ops API address cannot be bound (usually another goflow, or anything
/// else on that port).
fn api_taken_hint(api: std::net::SocketAddr) -> String {
    let mut other = api;
    other.set_port(api.port().wrapping_add(1).max(1));
    format!("set `api: {other}` (another address) or `api: off` in the config")
}

/// `, columns a,b,c` for a backend that stores fewer than all columns.
fn columns_note(set: goflow_writers::schema::ColumnSet) -> String {
    if set.is_all() {
        String::new()
    } else {
        format!(", columns {}", set.names())
    }
}

/// `, N connections` for a PostgreSQL backend with more than one (for the plan and the log).
fn connections_note(kind: &BackendKind) -> String {
    match kind {
        BackendKind::Postgres { connections, .. } | BackendKind::Mysql { connections, .. }
            if *connections > 1 =>
        {
            format!(", {connections} connections")
        }
        _ => String::new(),
    }
}

/// A backend ready to start: how workers encode for it and the sinks that ship it (one per
/// lane).
pub(crate) struct Plan {
    pub(crate) encoder: EncoderFactory,
    pub(crate) sinks: Vec<Box<dyn Sink>>,
}

/// Builds the encoder and sink of one configured backend. Types that are not built fail here,
/// at start (never while parsing the config).
pub(crate) fn plan_backend(b: &BackendConfig, max_age_days: Option<u32>) -> anyhow::Result<Plan> {
    let columns = b.columns;
    let json: EncoderFactory =
        Arc::new(move || Box::new(JsonEncoder::new(columns)) as Box<dyn RowEncoder>);
    Ok(match &b.kind {
        BackendKind::File {
            path,
            keep_page_cache,
        } => Plan {
            encoder: json,
            sinks: vec![Box::new(
                FileSink::open(
                    path,
                    if *keep_page_cache {
                        FileIo::PageCache
                    } else {
                        FileIo::Direct
                    },
                )
                .with_context(|| {
                    format!(
                        "backend {}: cannot open {} for appending",
                        b.name,
                        path.display()
                    )
                })?,
            )],
        },
        BackendKind::Dump => Plan {
            encoder: json,
            sinks: vec![Box::new(FileSink::stdout())],
        },
        BackendKind::Null => Plan {
            encoder: Arc::new(|| Box::new(NullEncoder) as Box<dyn RowEncoder>),
            sinks: vec![Box::new(NullSink::default())],
        },
        BackendKind::Postgres {
            sql, connections, ..
        } => pg_plan(sql, *connections, max_age_days),
        #[cfg(feature = "mysql")]
        BackendKind::Mysql {
            sql,
            socket,
            connections,
        } => mysql_plan(sql, socket.clone(), *connections, max_age_days),
        #[cfg(not(feature = "mysql"))]
        BackendKind::Mysql { .. } => bail!(
            "backend {}: backend type {} is not available in this build",
            b.name,
            b.kind.type_name()
        ),
        #[cfg(feature = "kafka")]
        BackendKind::Kafka(k) => kafka_plan(k, &b.name, columns)?,
        #[cfg(not(feature = "kafka"))]
        BackendKind::Kafka(_) => bail!(
            "backend {}: backend type {} is not available in this build",
            b.name,
            b.kind.type_name()
        ),
    })
}

/// The Kafka backend (goflow_writers::kafka): one producer shared by `lanes` sinks. A broker
/// that is down does not stop the start: a background probe logs whether it answered, and the
/// backend delivers (retrying its flushes) once it does.
#[cfg(feature = "kafka")]
fn kafka_plan(
    k: &config::KafkaConfig,
    name: &str,
    columns: goflow_writers::schema::ColumnSet,
) -> anyhow::Result<Plan> {
    use goflow_writers::kafka::{KafkaEncoder, sink::KafkaSink};
    let sinks = KafkaSink::lanes(k, name).map_err(|e| anyhow::anyhow!("backend {name}: {e}"))?;
    if let Some(first) = sinks.first() {
        let probe = first.probe_handle();
        let (name, target) = (name.to_owned(), k.target());
        let _ = thread::Builder::new()
            .name(format!("probe-{name}"))
            .spawn(move || match probe.probe(Duration::from_secs(5)) {
                Ok(parts) => log::info!(
                    "backend {name}: kafka broker answered, {target} has {parts} partitions"
                ),
                Err(e) => log::warn!(
                    "backend {name}: kafka broker not reachable yet ({e}); \
                     flows are queued and delivered once it is"
                ),
            });
    }
    let (format, key) = (k.format, k.key);
    Ok(Plan {
        encoder: Arc::new(move || {
            Box::new(KafkaEncoder::new(format, key).with_columns(columns)) as Box<dyn RowEncoder>
        }),
        sinks: sinks
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn Sink>)
            .collect(),
    })
}

/// The PostgreSQL / TimescaleDB backend (goflow_writers::pg): one sink per connection, sharing
/// their status. The sinks connect lazily, so a database that is down at start only delays
/// writing (the backend retries with backoff).
fn pg_plan(sql: &SqlConfig, connections: usize, max_age_days: Option<u32>) -> Plan {
    use goflow_writers::pg::{self, PgConfig, PgSink};
    let cfg = PgConfig {
        max_age_days,
        ..sql.clone()
    };
    let columns = cfg.columns;
    Plan {
        encoder: Arc::new(move || Box::new(pg::encoder_for(columns)) as Box<dyn RowEncoder>),
        sinks: PgSink::lanes(cfg, connections)
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn Sink>)
            .collect(),
    }
}

/// The MySQL / MariaDB backend (goflow_writers::mysql): one sink per connection, sharing
/// their status. Each lane connects when it starts (`Sink::connect`): the server's version,
/// local_infile and the table are checked then, and a failure names the key to fix.
#[cfg(feature = "mysql")]
fn mysql_plan(
    sql: &SqlConfig,
    socket: Option<std::path::PathBuf>,
    connections: usize,
    max_age_days: Option<u32>,
) -> Plan {
    use goflow_writers::mysql::{self, MysqlConfig, MysqlSink};
    let cfg = MysqlConfig {
        host: sql.host.clone(),
        port: sql.port,
        socket,
        user: sql.user.clone(),
        password: sql.password.clone(),
        dbname: sql.dbname.clone(),
        table: sql.table.clone(),
        sslmode: sql.sslmode.clone(),
        max_age_days,
        columns: sql.columns,
    };
    let columns = sql.columns;
    Plan {
        encoder: Arc::new(move || Box::new(mysql::encoder_for(columns)) as Box<dyn RowEncoder>),
        sinks: MysqlSink::lanes(cfg, connections)
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn Sink>)
            .collect(),
    }
}

/// What the rows a backend spools are: its encoder and its columns (`columns:`). A segment
/// written under another format (an upgrade that added columns, another column set) is set
/// aside, not replayed.
fn spool_format(kind: &BackendKind, columns: goflow_writers::schema::ColumnSet) -> String {
    format!("{}:{}", kind.type_name(), columns.names())
}

/// The running daemon.
struct Daemon {
    cfg: RunConfig,
    /// Locked for the life of the daemon (released last, after the backends stopped).
    state: StateDir,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// The Kafka frontend's consumer, when configured.
    #[cfg(feature = "kafka")]
    consumer: Option<crate::consume::ConsumerFrontend>,
    backends: Vec<Backend>,
    ops: Option<crate::ops::OpsServer>,
    /// Writes the workers' templates and sampling state to state_dir.
    saver: Option<TemplateSaver>,
    /// systemd's notification socket (a no-op without one).
    notifier: Notifier,
    /// Set by SIGHUP.
    hup: Arc<AtomicBool>,
    /// `-v` count: when given, it decides the log level, not `log_level`.
    verbose: u8,
}

impl Daemon {
    fn start(cfg: RunConfig, verbose: u8) -> anyhow::Result<Daemon> {
        crate::cli::set_log_level(verbose, cfg.log_level);
        // First: a directory that cannot be created or is in use stops the daemon before it
        // touches a backend or a socket.
        let state = StateDir::open(&cfg.state_dir)?;
        for name in &cfg.unused_backends {
            log::warn!("backend {name} is defined but no frontend names it: not started");
        }
        // Every backend is planned before any starts, so an unavailable type or a bad path stops
        // the daemon before it binds anything.
        let plans = cfg
            .backends
            .iter()
            .map(|b| plan_backend(b, cfg.max_age_days))
            .collect::<anyhow::Result<Vec<Plan>>>()?;

        let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
        let histograms = Arc::new(HistogramHub::new(&names));
        let mut backends = Vec::with_capacity(plans.len());
        let mut encoders = Vec::with_capacity(plans.len());
        let mut factories: Vec<EncoderFactory> = Vec::with_capacity(plans.len());
        for (i, (b, plan)) in cfg.backends.iter().zip(plans).enumerate() {
            let opts = BackendOptions {
                name: b.name.clone(),
                kind: b.kind.type_name().to_owned(),
                target: b.kind.target(),
                flush_rows: b.flush.rows,
                flush_interval: b.flush.interval,
                flushes_in_flight: b.flush.in_flight,
                queue_bytes: b.flush.queue_bytes,
                shutdown_timeout: BACKEND_SHUTDOWN_TIMEOUT,
                on_flush: Some(flush_hook(Arc::clone(&histograms), i)),
                spool: (b.flush.spool_bytes > 0).then(|| SpoolConfig {
                    dir: state.spool_dir(&b.name),
                    max_bytes: b.flush.spool_bytes,
                    format: spool_format(&b.kind, b.columns),
                }),
            };
            let backend = Backend::spawn_lanes(plan.sinks, opts)
                .with_context(|| format!("backend {}: cannot start its thread", b.name))?;
            if cfg.netflow.as_ref().is_some_and(|n| n.contains(&b.name)) {
                encoders.push((Arc::clone(&plan.encoder), backend.sender()));
            }
            factories.push(plan.encoder);
            backends.push(backend);
        }

        let rcfg = cfg.receiver.clone();
        let daemon_decoder = cfg.decoder.clone();
        let netflow_workers = if cfg.netflow.is_some() {
            rcfg.workers
        } else {
            0
        };
        let mut shared = Shared::new(
            cfg.source_name(),
            rcfg.bind,
            rcfg.choice,
            netflow_workers,
            backends.iter().map(|b| Arc::clone(b.stats())).collect(),
            Arc::clone(&histograms),
        );
        shared.decoder = cfg.decoder.clone();
        let consumer_stats = cfg.kafka.as_ref().map(|k| {
            Arc::new(crate::consume::ConsumerStats::new(
                k.group_id.clone(),
                k.topics.clone(),
                k.format.name(),
                k.kafka.server.clone(),
            ))
        });
        shared.consumers = consumer_stats.iter().cloned().collect();
        let shared = Arc::new(shared);

        // The flag is registered before any socket exists: a signal during start-up still stops
        // the daemon cleanly once it runs. A second signal while shutting down (a backend that
        // keeps failing holds the flush for up to 30 s) exits at once with status 1.
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
                .with_context(|| format!("cannot install the handler for signal {sig}"))?;
        }
        // SIGHUP (whose default is to terminate) reloads instead, from the first moment.
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
            .context("cannot install the handler for SIGHUP")?;

        // Templates and sampling state of the last run: every worker gets all of them (which
        // worker an exporter's datagrams reach is the kernel's choice, and may differ now).
        let saved = Arc::new(state.load_templates());
        if !saved.templates.is_empty() || !saved.domains.is_empty() {
            log::info!(
                "state_dir: restoring {} and the sampling state of {} from {}",
                crate::cli::count(saved.templates.len() as u64, "template", "templates"),
                crate::cli::count(
                    saved.domains.len() as u64,
                    "exporter domain",
                    "exporter domains"
                ),
                state.templates_path().display()
            );
        }
        let saver = TemplateSaver::spawn(state.templates_path(), shared.workers.clone())
            .context("cannot start the templates writer thread")?;

        let sockets = if cfg.netflow.is_some() {
            ingest::open_sockets(&rcfg)
                .with_context(|| format!("cannot listen on {} (UDP)", rcfg.bind))?
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, std::io::Result<ReceiverKind>)>();
        let mut workers = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let Some(counters) = shared.workers.get(i).cloned() else {
                bail!("ingest opened more sockets than workers");
            };
            let w = WorkerStart {
                socket,
                rcfg: rcfg.clone(),
                decoder: daemon_decoder.clone(),
                counters,
                outputs: encoders.clone(),
                observer: Box::new(LocalHistograms::new(Arc::clone(&histograms))),
                stop: Arc::clone(&stop),
                ready: ready_tx.clone(),
                saved: Arc::clone(&saved),
            };
            let handle = thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || w.run())
                .context("cannot start a worker thread")?;
            workers.push(handle);
        }
        drop(ready_tx);
        drop(encoders);

        let mut daemon = Daemon {
            cfg,
            state,
            shared,
            stop,
            workers,
            #[cfg(feature = "kafka")]
            consumer: None,
            backends,
            ops: None,
            saver: Some(saver),
            notifier: Notifier::from_env(),
            hup,
            verbose,
        };
        // Wait until every worker has its receiver (or report the first that failed).
        let mut kinds = Vec::new();
        for _ in 0..daemon.workers.len() {
            match ready_rx.recv() {
                Ok((_, Ok(kind))) => kinds.push(kind),
                Ok((i, Err(e))) => {
                    daemon.shutdown();
                    return Err(anyhow::Error::new(e).context(format!(
                        "worker {i}: cannot set up the {:?} receiver",
                        rcfg.choice
                    )));
                }
                Err(_) => {
                    daemon.shutdown();
                    bail!("a worker stopped during start-up");
                }
            }
        }
        // Every backend's first connect attempt (and table setup) is over before the ops API
        // answers or systemd hears READY: /healthz is honest from its first answer.
        daemon.wait_backends();
        if let (Some(k), Some(stats)) = (daemon.cfg.kafka.clone(), consumer_stats)
            && let Err(e) = daemon.start_consumer(k, &factories, stats)
        {
            daemon.shutdown();
            return Err(e);
        }
        if let Some(api) = daemon.cfg.api {
            let source: Arc<dyn crate::ops::OpsSource> = Arc::new(crate::grafana::WithGrafana {
                inner: daemon.shared.clone(),
                targets: crate::grafana::targets(&daemon.cfg),
            });
            match crate::ops::serve(&api.to_string(), source) {
                Ok(server) => daemon.ops = Some(server),
                Err(e) => {
                    daemon.shutdown();
                    return Err(anyhow::anyhow!("{e:#}; {}", api_taken_hint(api)));
                }
            }
        }
        daemon.log_start(&kinds);
        // Sockets bound, workers receiving, every backend connected or queueing/spooling.
        daemon.notifier.ready(&daemon.ready_status());
        Ok(daemon)
    }

    /// systemd's STATUS= line once ready: where it listens and each backend's state.
    fn ready_status(&self) -> String {
        let backends: Vec<String> = self
            .backends
            .iter()
            .map(|b| {
                let s = b.stats();
                let state = match s.connect_state() {
                    ConnectState::Connected => "ready",
                    ConnectState::Failed if s.spool.is_some() => "failing, spooling",
                    ConnectState::Failed => "failing, queueing",
                    ConnectState::Connecting => "connecting",
                };
                format!("{} {state}", s.name)
            })
            .collect();
        let mut fronts = Vec::new();
        if self.cfg.netflow.is_some() {
            fronts.push(format!(
                "receiving on udp {} ({} workers)",
                self.cfg.receiver.bind,
                self.workers.len()
            ));
        }
        if let Some(k) = &self.cfg.kafka {
            fronts.push(format!(
                "consuming kafka {} as group {}",
                k.topics.join(","),
                k.group_id
            ));
        }
        format!("{}; backends: {}", fronts.join("; "), backends.join(", "))
    }

    /// SIGHUP: reopens the file backends' files, reloads the config file and applies the
    /// [`RELOADABLE_KEYS`], and names every other changed key as needing a restart. A config
    /// that does not load is logged and the running one kept. Nothing stops receiving.
    fn reload(&mut self) {
        self.notifier.reloading();
        let mut parts = Vec::new();
        let files: Vec<String> = self
            .cfg
            .backends
            .iter()
            .zip(&self.backends)
            .filter(|(c, _)| matches!(&c.kind, BackendKind::File { path, .. } if path.as_os_str() != "-"))
            .map(|(c, b)| {
                b.stats().request_reopen();
                format!("{} ({})", c.name, c.kind.target())
            })
            .collect();
        if !files.is_empty() {
            parts.push(format!("reopening file backend {}", files.join(", ")));
        }
        match self.cfg.source.clone() {
            None => parts.push("no config file to reload (built-in defaults)".to_owned()),
            Some(path) => match config::load(Some(&path)) {
                Err(e) => {
                    log::error!("SIGHUP: {e}; keeping the running configuration");
                    parts.push(format!("{} not reloaded (error above)", path.display()));
                }
                Ok(new) => parts.push(self.apply_reload(&path, new)),
            },
        }
        log::info!("SIGHUP: {}", parts.join("; "));
        self.notifier.ready(&self.ready_status());
    }

    /// Applies `new`'s reloadable keys and describes what changed.
    fn apply_reload(&mut self, path: &std::path::Path, new: RunConfig) -> String {
        let mut applied = Vec::new();
        if new.log_level != self.cfg.log_level {
            match crate::cli::set_log_level(self.verbose, new.log_level) {
                Some(level) => applied.push(format!("log_level {level}")),
                None => applied
                    .push("log_level (not in force: -v or RUST_LOG decide the level)".to_owned()),
            }
            self.cfg.log_level = new.log_level;
        }
        if new.decoder.sampling != self.cfg.decoder.sampling {
            for w in &self.shared.workers {
                *crate::pipeline::counters::lock(&w.sampling_reload) =
                    Some(new.decoder.sampling.clone());
                w.reload_seq.fetch_add(1, Ordering::Release);
            }
            let s = &new.decoder.sampling;
            applied.push(format!(
                "sampling ({} exporter {}, default {})",
                s.exporters.len(),
                if s.exporters.len() == 1 {
                    "rate"
                } else {
                    "rates"
                },
                s.default
                    .map_or_else(|| "none".to_owned(), |d| d.to_string())
            ));
            self.cfg.decoder.sampling = new.decoder.sampling.clone();
        }
        let restart = restart_keys(&self.cfg, &new);
        let mut out = format!("reloaded {}: ", path.display());
        if applied.is_empty() && restart.is_empty() {
            out.push_str("no change");
            return out;
        }
        if applied.is_empty() {
            out.push_str("nothing reloadable changed");
        } else {
            out.push_str(&format!("applied {}", applied.join(", ")));
        }
        if !restart.is_empty() {
            out.push_str(&format!(
                "; NOT applied, restart goflow for: {} (only {} reload)",
                restart.join(", "),
                RELOADABLE_KEYS.join(" and ")
            ));
        }
        out
    }

    /// Starts the Kafka frontend on the backends it names (each gets its own encoder; chunks go
    /// to the backend's lanes with their partition's position).
    #[cfg(feature = "kafka")]
    fn start_consumer(
        &mut self,
        k: config::KafkaFrontend,
        factories: &[EncoderFactory],
        stats: Arc<crate::consume::ConsumerStats>,
    ) -> anyhow::Result<()> {
        let mut outputs = Vec::with_capacity(k.backends.len());
        for name in &k.backends {
            let Some(i) = self.cfg.backends.iter().position(|b| &b.name == name) else {
                bail!("kafka frontend: backend {name} is not running");
            };
            let (b, backend) = (&self.cfg.backends[i], &self.backends[i]);
            outputs.push(crate::consume::Output {
                name: name.clone(),
                encoder: factories[i](),
                sender: backend.positioned_sender(),
                // Enough for every lane to fill a flush while the next one gathers.
                max_rows: b.flush.rows.saturating_mul(backend.lanes() as u64 + 1),
                max_bytes: b.flush.queue_bytes,
            });
        }
        let c =
            crate::consume::ConsumerFrontend::start(&k, outputs, stats, Arc::clone(&self.stop))?;
        self.consumer = Some(c);
        Ok(())
    }

    #[cfg(not(feature = "kafka"))]
    fn start_consumer(
        &mut self,
        _k: config::KafkaFrontend,
        _factories: &[EncoderFactory],
        _stats: Arc<crate::consume::ConsumerStats>,
    ) -> anyhow::Result<()> {
        bail!("frontends.kafka: the Kafka frontend is not available in this build")
    }

    /// Waits (up to [`CONNECT_WAIT`]) for each backend's first connect attempt and logs where
    /// each stands. A backend that cannot connect does not stop the daemon: its lanes logged
    /// why (with what to fix) and keep retrying; /healthz says unhealthy meanwhile.
    fn wait_backends(&self) {
        let deadline = Instant::now() + CONNECT_WAIT;
        for b in &self.backends {
            let left = deadline.saturating_duration_since(Instant::now());
            let state = b.stats().wait_connected(left);
            let name = &b.stats().name;
            match state {
                ConnectState::Connected => log::debug!("backend {name}: ready"),
                ConnectState::Failed => log::warn!(
                    "backend {name} cannot write yet (see the error above); receiving anyway, \
                     /healthz reports it until it connects"
                ),
                ConnectState::Connecting => log::warn!(
                    "backend {name}: still connecting after {CONNECT_WAIT:?}; receiving anyway"
                ),
            }
        }
    }

    fn log_start(&self, kinds: &[ReceiverKind]) {
        if let Some(api) = self.cfg.api
            && !api.ip().is_loopback()
        {
            log::warn!(
                "the ops API on {api} is not on a loopback address: it has no authentication \
                 and shows every exporter's address and counters, the templates and the \
                 backends' targets to whoever reaches it (keep it on 127.0.0.1 or firewall it)"
            );
        }
        let kind = kinds.first().map_or("?", |k| k.as_str());
        if self.cfg.netflow.is_some() {
            log::info!(
                "goflow {} listening on udp {} ({} workers, {kind} receiver; config: {}; \
                 state_dir: {})",
                env!("CARGO_PKG_VERSION"),
                self.cfg.receiver.bind,
                self.workers.len(),
                self.shared.config_source,
                self.state.path().display()
            );
        } else {
            log::info!(
                "goflow {} running without a netflow frontend (config: {}; state_dir: {})",
                env!("CARGO_PKG_VERSION"),
                self.shared.config_source,
                self.state.path().display()
            );
        }
        if let Some(k) = &self.cfg.kafka {
            log::info!(
                "consuming kafka {} topics {} as group {} ({}), writing to {}",
                k.kafka.server,
                k.topics.join(", "),
                k.group_id,
                k.format.name(),
                k.backends.join(", ")
            );
        }
        for b in &self.cfg.backends {
            log::info!(
                "writing to backend {} ({}): {}{}",
                b.name,
                b.kind.type_name(),
                b.kind.target(),
                connections_note(&b.kind) + &columns_note(b.columns)
            );
        }
    }

    /// Runs until SIGINT/SIGTERM, logging the summary every [`SUMMARY_INTERVAL`].
    fn wait(mut self) -> anyhow::Result<ExitCode> {
        let mut last = Summary::take(&self.shared);
        let mut next = Instant::now() + SUMMARY_INTERVAL;
        let mut idle_since: Option<Instant> = None;
        let mut failed = false;
        let mut watchdog = Watchdog::new(&self.notifier, self.shared.workers.len(), Instant::now());
        while !self.stop.load(Ordering::Relaxed) {
            thread::sleep(STOP_POLL);
            if let Some(w) = &mut watchdog {
                let beats = self
                    .shared
                    .workers
                    .iter()
                    .map(|c| c.heartbeat.load(Ordering::Relaxed));
                w.tick(&self.notifier, beats, Instant::now());
            }
            if self.hup.swap(false, Ordering::Relaxed) && !self.stop.load(Ordering::Relaxed) {
                self.reload();
            }
            if self.workers.iter().any(|w| w.is_finished()) && !self.stop.load(Ordering::Relaxed) {
                log::error!("a worker thread stopped unexpectedly; shutting down");
                failed = true;
                break;
            }
            #[cfg(feature = "kafka")]
            if self.consumer.as_ref().is_some_and(|c| c.is_finished())
                && !self.stop.load(Ordering::Relaxed)
            {
                log::error!("the kafka consumer thread stopped unexpectedly; shutting down");
                failed = true;
                break;
            }
            if Instant::now() >= next {
                let now = Summary::take(&self.shared);
                let line = now.line(&last);
                // Quiet when idle: one line when nothing moved for an interval, none while
                // it stays so, one when traffic resumes.
                let moved = now.totals != last.totals;
                match (moved, idle_since) {
                    (true, Some(since)) => {
                        log::info!(
                            "traffic resumed after {} without any",
                            crate::ops::status::human_duration(since.elapsed().as_secs())
                        );
                        log::info!("{line}");
                        idle_since = None;
                    }
                    (true, None) => log::info!("{line}"),
                    (false, None) => {
                        log::info!(
                            "nothing received or written in the last {}s; the summary pauses \
                             until traffic resumes",
                            SUMMARY_INTERVAL.as_secs()
                        );
                        idle_since = Some(last.at);
                    }
                    (false, Some(_)) => log::debug!("{line}"),
                }
                self.notifier.status(&line);
                last = now;
                next += SUMMARY_INTERVAL;
            }
        }
        log::info!("stopping: draining the sockets and flushing the backends");
        self.notifier.stopping();
        let t = self.shutdown();
        let now = Summary::take(&self.shared);
        log::info!("stopped: {} (shutdown took {t:?})", now.totals_line());
        let losses = loss_lines(&self.shared.backends);
        for l in &losses {
            log::error!("{l}");
        }
        let held = held_lines(&self.shared.backends);
        for l in &held {
            log::warn!("{l}");
        }
        if losses.is_empty() && held.is_empty() {
            log::info!("no rows lost: every row received was written to every backend");
        } else if losses.is_empty() {
            log::info!("no rows lost (the rows not written yet are in the spool)");
        }
        if failed || !losses.is_empty() {
            return Ok(crate::exit::exit(crate::exit::RUNTIME));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Stops receiving, joins the workers (each drains its socket first), then shuts every
    /// backend down (each writes and flushes what it holds). Returns how long it took.
    fn shutdown(&mut self) -> Duration {
        let t0 = Instant::now();
        self.stop.store(true, Ordering::SeqCst);
        self.shared.stopping.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
        // The workers handed out their final state as they stopped.
        if let Some(s) = self.saver.take() {
            s.finish();
        }
        // The consumer hands over what it holds and waits (bounded) for it to be stored.
        #[cfg(feature = "kafka")]
        if let Some(c) = self.consumer.take() {
            c.join();
        }
        for b in self.backends.drain(..) {
            b.shutdown();
        }
        if let Some(ops) = self.ops.take() {
            ops.stop();
        }
        t0.elapsed()
    }
}

/// The keys whose value differs between the running configuration and `new` and that only a
/// restart applies (everything but [`RELOADABLE_KEYS`]), by their path in the file.
fn restart_keys(old: &RunConfig, new: &RunConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let listen = "frontends.netflow.config";
    let (o, n) = (&old.receiver, &new.receiver);
    if o.bind.ip() != n.bind.ip() {
        keys.push(format!("{listen}.bindaddr"));
    }
    if o.bind.port() != n.bind.port() {
        keys.push(format!("{listen}.bindport"));
    }
    for (key, changed) in [
        ("workers", o.workers != n.workers),
        ("receiver", o.choice != n.choice),
        ("rcvbuf", o.rcvbuf != n.rcvbuf),
        ("buffer_size", o.buffer_size != n.buffer_size),
        ("batch_max", o.batch_max != n.batch_max),
    ] {
        if changed {
            keys.push(format!("{listen}.{key}"));
        }
    }
    let limits = |d: &goflow_codec::DecoderConfig| {
        let mut d = d.clone();
        d.sampling = Default::default();
        format!("{d:?}")
    };
    if limits(&old.decoder) != limits(&new.decoder) {
        keys.push(format!("{listen}.limits"));
    }
    let names = |c: &RunConfig| {
        c.backends
            .iter()
            .map(|b| b.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(new) || old.netflow != new.netflow {
        keys.push("frontends.netflow.backend".to_owned());
    }
    if format!("{:?}", old.kafka) != format!("{:?}", new.kafka) {
        keys.push("frontends.kafka".to_owned());
    }
    for b in &new.backends {
        let Some(was) = old.backends.iter().find(|o| o.name == b.name) else {
            continue;
        };
        // Debug leaves passwords out; compare those on their own.
        let password = |k: &BackendKind| match k {
            BackendKind::Postgres { sql, .. } | BackendKind::Mysql { sql, .. } => {
                Some(sql.password.clone())
            }
            _ => None,
        };
        if format!("{:?}{:?}", was.kind, was.flush) != format!("{:?}{:?}", b.kind, b.flush)
            || password(&was.kind) != password(&b.kind)
        {
            keys.push(format!("backends.{}", b.name));
        }
    }
    if old.api != new.api {
        keys.push("api".to_owned());
    }
    if old.state_dir != new.state_dir {
        keys.push("state_dir".to_owned());
    }
    if old.max_age_days != new.max_age_days {
        keys.push("utilities.max_age".to_owned());
    }
    keys
}

/// One plain line per backend that lost rows: how many, why, and where they are (nowhere:
/// dropped rows are not kept).
fn loss_lines(backends: &[Arc<goflow_writers::backend::BackendStats>]) -> Vec<String> {
    let mut lines = Vec::new();
    for b in backends {
        let failed = b.rows_dropped_failed.load(Ordering::Relaxed);
        let full = b.rows_dropped_queue_full.load(Ordering::Relaxed);
        if b.rows_dropped() == 0 {
            continue;
        }
        let written = b.rows_written.load(Ordering::Relaxed);
        let spool_dropped = b.spool.as_ref().map_or(0, |s| s.rows_dropped());
        let mut why = Vec::new();
        if spool_dropped > 0 {
            why.push(format!(
                "{spool_dropped} {} its spool refused (full, or a write error)",
                rows(spool_dropped)
            ));
        }
        if failed > 0 {
            let err = b
                .detail()
                .last_error
                .unwrap_or_else(|| "unknown error".to_owned());
            why.push(format!(
                "{failed} {} the backend refused or could not store (last error: {err})",
                rows(failed)
            ));
        }
        if full > 0 {
            why.push(format!(
                "{full} {} arrived while its queue was full",
                rows(full)
            ));
        }
        lines.push(format!(
            "ROWS LOST: backend {} ({}) lost {} {} and wrote {written}: {}; the lost rows were \
             dropped and are not stored anywhere",
            b.name,
            b.kind,
            b.rows_dropped(),
            rows(b.rows_dropped()),
            why.join("; ")
        ));
    }
    lines
}

/// One line per backend whose spool still holds rows at exit: not lost, not written yet.
fn held_lines(backends: &[Arc<goflow_writers::backend::BackendStats>]) -> Vec<String> {
    let mut lines = Vec::new();
    for b in backends {
        let Some(sp) = &b.spool else { continue };
        let held = sp
            .rows_spooled
            .load(Ordering::Relaxed)
            .saturating_sub(sp.rows_replayed.load(Ordering::Relaxed));
        if held == 0 {
            continue;
        }
        lines.push(format!(
            "ROWS NOT WRITTEN YET: backend {} ({}) wrote {} {} and holds {held} {} in its spool \
             (state_dir spool/{}, {} bytes on disk): they are written when the backend works again \
             (at the next start)",
            b.name,
            b.kind,
            b.rows_written.load(Ordering::Relaxed),
            rows(b.rows_written.load(Ordering::Relaxed)),
            rows(held),
            b.name,
            sp.bytes.load(Ordering::Relaxed)
        ));
    }
    lines
}

fn rows(n: u64) -> &'static str {
    if n == 1 { "row" } else { "rows" }
}

/// Reports each flush to the histograms (flush duration, datagram age at commit).
fn flush_hook(hub: Arc<HistogramHub>, index: usize) -> FlushHook {
    Arc::new(move |r: &FlushReport<'_>| {
        // A commit age per row, from its chunk's oldest datagram (not one per flush).
        hub.record_commit(index, r.duration_us, r.committed_us, r.chunks);
    })
}

/// What a worker thread needs to start.
struct WorkerStart {
    socket: std::net::UdpSocket,
    rcfg: ingest::ReceiverConfig,
    decoder: DecoderConfig,
    counters: Arc<WorkerCounters>,
    outputs: Vec<(EncoderFactory, goflow_writers::backend::BackendSender)>,
    observer: Box<dyn pipeline::BatchObserver>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<(usize, std::io::Result<ReceiverKind>)>,
    saved: Arc<SavedState>,
}

impl WorkerStart {
    /// The worker thread: builds its receiver here (a receiver never moves between threads),
    /// reports readiness, then runs the receive loop until the stop flag is set.
    fn run(self) {
        let index = self.counters.index;
        let mut receiver = match Receiver::new(self.socket, &self.rcfg) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.ready.send((index, Err(e)));
                return;
            }
        };
        let kind = receiver.kind();
        let _ = self.counters.receiver.set(kind);
        let mut pipeline = Pipeline::new(
            self.decoder,
            &self.outputs,
            Arc::clone(&self.counters),
            self.observer,
        );
        drop(self.outputs);
        if !self.saved.templates.is_empty() || !self.saved.domains.is_empty() {
            let r = pipeline.restore(&self.saved);
            if index == 0 {
                log::info!(
                    "state_dir: restored {} ({} older than the template TTL, {} refused) and {}",
                    crate::cli::count(r.templates as u64, "template", "templates"),
                    r.expired,
                    r.refused,
                    crate::cli::count(r.domains as u64, "sampling state", "sampling states")
                );
            }
        }
        drop(self.saved);
        let _ = self.ready.send((index, Ok(kind)));
        pipeline::worker::run(&mut receiver, &mut pipeline, &self.stop);
    }
}

/// Totals at one moment, for the summary line.
struct Summary {
    at: Instant,
    totals: pipeline::Totals,
}

impl Summary {
    fn take(shared: &Shared) -> Summary {
        Summary {
            at: Instant::now(),
            totals: shared.totals(),
        }
    }

    /// `datagrams 1200 (120/s), records 36000 (3600/s), drops: kernel 0, ...`
    fn line(&self, prev: &Summary) -> String {
        let secs = self
            .at
            .saturating_duration_since(prev.at)
            .as_secs_f64()
            .max(0.001);
        let (t, p) = (&self.totals, &prev.totals);
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
        format!(
            "datagrams {} ({:.0}/s), records {} ({:.0}/s), drops: kernel {}, backend rows {}, \
             truncated {}, decode errors {}, data sets without template {}, sequence gaps {}",
            t.datagrams,
            rate(t.datagrams, p.datagrams),
            t.records,
            rate(t.records, p.records),
            t.kernel_drops,
            t.rows_dropped,
            t.truncated,
            t.decode_errors,
            t.records_without_template,
            t.sequence_missing
        )
    }

    fn totals_line(&self) -> String {
        let t = &self.totals;
        format!(
            "datagrams {}, records {}, rows written {}, drops: kernel {}, backend rows {}, \
             truncated {}, decode errors {}",
            t.datagrams,
            t.records,
            t.rows_written,
            t.kernel_drops,
            t.rows_dropped,
            t.truncated,
            t.decode_errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str, port: u16, path: &str) -> RunConfig {
        let text = format!(
            "backends:\n  out: {{type: file, config: {{path: {path}}}}}\n\
             frontends:\n  netflow:\n    config: {{bindport: {port}}}\n    backend: out\n{extra}"
        );
        config::parse(&text, "t.yml", &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn restart_keys_name_what_a_reload_cannot_apply() {
        let old = cfg("", 2055, "a.jsonl");
        // The reloadable keys are not restart keys.
        let new = cfg(
            "log_level: debug\nsampling: {default: 10}\n",
            2055,
            "a.jsonl",
        );
        assert!(restart_keys(&old, &new).is_empty());
        let new = cfg(
            "api: 127.0.0.1:9999\nstate_dir: elsewhere\n",
            2056,
            "b.jsonl",
        );
        assert_eq!(
            restart_keys(&old, &new),
            [
                "frontends.netflow.config.bindport",
                "backends.out",
                "api",
                "state_dir"
            ]
        );
        let new = cfg("", 2055, "a.jsonl\n    # limits\n");
        assert!(restart_keys(&old, &new).is_empty());
    }
}
