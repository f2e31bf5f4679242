//! `goflow bench`: a synthetic exporter that drives any collector at an exact rate and knows
//! its totals. It builds NetFlow v5, v9 or IPFIX with `codec::encode` from seeded random flows
//! (or replays the NetFlow datagrams of a capture), paces them with a token bucket over batches
//! of datagrams (or sends as fast as it can with `--rate 0`), and writes them to UDP sockets, one
//! per exporter, or to a pcap file. Progress goes to stderr; at the end one JSON line on stdout
//! says what was sent: flows, datagrams, seconds, the sums of the byte and packet counters (so a
//! collector's stored totals can be checked exactly) and each exporter's sequence range.
//!
//! Pacing keeps an absolute schedule (flow n is due at n / rate seconds after the start), so
//! errors do not accumulate; a batch covers at most about a millisecond of the schedule. The
//! generator waits for a batch's deadline by sleeping (`clock_nanosleep` on CLOCK_MONOTONIC to
//! an absolute time, with the thread's timer slack at 1 µs) and spins at most the last
//! [`SPIN_LAST`]: on a 2-core machine it must not compete with the collector it measures. A late
//! wake-up only makes one batch late; the next deadline is still where the schedule says. The
//! summary reports the generator's own CPU time (CLOCK_PROCESS_CPUTIME_ID).

mod exporter;
mod flowgen;
mod output;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use goflow_codec::{Decoder, DecoderConfig};

pub use exporter::Proto;
use exporter::{Built, Exporter};
use flowgen::FlowGen;
use output::{Batch, Output};

/// Default run length when neither --duration nor --flows is given.
const DEFAULT_DURATION_SECS: f64 = 10.0;
/// Datagrams per batch (one sendmmsg-sized burst) at full speed.
const BATCH_MAX_DATAGRAMS: usize = 64;
/// A paced batch covers at most this much of the schedule.
const BATCH_SPAN_SECS: f64 = 0.001;
/// Progress line refresh interval (on a terminal).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// Progress line interval when stderr is not a terminal (a pipe, a log file): plain lines.
const PROGRESS_INTERVAL_PLAIN: Duration = Duration::from_secs(5);
/// The pacer sleeps until this long before a deadline and spins the rest.
const SPIN_LAST: Duration = Duration::from_micros(5);
/// Longest single sleep (so SIGINT/SIGTERM stop a slow run promptly).
const SLEEP_SLICE: Duration = Duration::from_millis(100);
/// Timer slack asked for the pacing thread: the kernel's default (50 µs) would make every
/// wake-up up to that much late.
const TIMER_SLACK_NS: u64 = 1_000;
/// First source port of the exporters written to a pcap.
const PCAP_SOURCE_PORT: u16 = 40_000;
/// 127.0.0.1 .. 127.0.0.254.
const EXPORTERS_MAX: u16 = 254;

/// Where bench sends without `--target` or a config file.
const DEFAULT_TARGET: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2055);

/// Options of `goflow bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchOpt {
    /// Flows per second to send (0 = as fast as possible).
    #[arg(long, default_value_t = 10_000.0, value_parser = parse_rate, value_name = "FLOWS_PER_SEC")]
    pub rate: f64,

    /// Wire format; `mixed` gives the exporters v5, v9 and IPFIX in turn (at least 3 exporters).
    #[arg(long, value_enum, default_value_t = Proto::V9)]
    pub proto: Proto,

    /// Collector address (default: the listen address of the configuration goflow would run
    /// with, `--config`/`$GOFLOW_CONFIG`/`./config.yml`, with 0.0.0.0 or :: meaning loopback;
    /// without a config file 127.0.0.1:2055).
    #[arg(long = "target", value_parser = parse_target, value_name = "HOST:PORT")]
    pub target_arg: Option<SocketAddr>,

    /// Where datagrams go: `--target`, else from the configuration (resolved by [`run`]).
    #[arg(skip = DEFAULT_TARGET)]
    pub target: SocketAddr,

    /// Run this long (default 10 s unless --flows is given).
    #[arg(long, value_parser = parse_duration, value_name = "SECS", conflicts_with = "flows")]
    pub duration: Option<f64>,

    /// Send exactly this many flows, then stop.
    #[arg(long, value_name = "N")]
    pub flows: Option<u64>,

    /// Exporters, each with its own socket (127.0.0.(1+i), or ::1 with its own port for an
    /// IPv6 target), sequence space and observation domain.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=EXPORTERS_MAX as i64))]
    pub exporters: u16,

    /// Share of IPv6 flows in percent (v9 and IPFIX exporters; v5 carries IPv4 only).
    #[arg(long, default_value_t = 0.0, value_parser = parse_pct, value_name = "PCT")]
    pub v6_share: f64,

    /// Resend the templates every this many datagrams (v9, IPFIX).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..), value_name = "PACKETS")]
    pub template_every: u64,

    /// Seed of the flow generator: the same seed gives the same flows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Replay the NetFlow/IPFIX datagrams of this capture (looping) instead of generating flows.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["proto", "v6_share", "template_every"])]
    pub pcap: Option<PathBuf>,

    /// Write the datagrams to this pcap file instead of sending them (Ethernet/IPv4 or IPv6/UDP).
    #[arg(long, value_name = "FILE")]
    pub write_pcap: Option<PathBuf>,
}

impl Default for BenchOpt {
    fn default() -> Self {
        BenchOpt {
            rate: 10_000.0,
            proto: Proto::V9,
            target_arg: None,
            target: DEFAULT_TARGET,
            duration: None,
            flows: None,
            exporters: 1,
            v6_share: 0.0,
            template_every: 20,
            seed: 1,
            pcap: None,
            write_pcap: None,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err("must be a number >= 0 (0 = as fast as possible)".into());
    }
    Ok(v)
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err("must be a number of seconds > 0".into());
    }
    Ok(v)
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err("must be between 0 and 100".into());
    }
    Ok(v)
}

fn parse_target(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

/// Totals of the run.
#[derive(Debug, Default)]
struct Totals {
    flows: u64,
    datagrams: u64,
    bytes: u64,
    packets: u64,
}

impl Totals {
    fn add(&mut self, b: Built) {
        self.flows += b.flows;
        self.datagrams += 1;
        self.bytes += b.bytes;
        self.packets += b.packets;
    }
}

/// When to stop.
#[derive(Clone, Copy, Debug)]
struct Limits {
    flows: Option<u64>,
    seconds: Option<f64>,
}

/// The absolute send schedule: token n is due at n / rate seconds after the start (no pacing
/// at rate 0).
struct Pacer {
    rate: f64,
    /// Where the schedule stands, in seconds since the start.
    sched: f64,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer { rate, sched: 0.0 }
    }

    /// Waits until `tokens` sent tokens' worth of the schedule is due and returns the send time
    /// in seconds since the start, or None when the run is over (stopped, `flows` reached the
    /// flow limit, or the time limit passed).
    fn next(
        &mut self,
        clock: &Clock,
        tokens: u64,
        flows: u64,
        limits: &Limits,
        stop: &AtomicBool,
    ) -> Option<f64> {
        if stop.load(Ordering::Relaxed) || limits.flows.is_some_and(|f| flows >= f) {
            return None;
        }
        let paced = self.rate > 0.0;
        if paced {
            self.sched = tokens as f64 / self.rate;
        }
        let t = if paced { self.sched } else { clock.wall_secs() };
        if limits.seconds.is_some_and(|s| t >= s) {
            return None;
        }
        if paced {
            clock.wait_until(self.sched, stop);
            if stop.load(Ordering::Relaxed) {
                return None;
            }
        }
        Some(clock.secs(self.sched))
    }
}

/// Time as the run sees it: the wall clock, or, when writing a paced run to a file, the schedule
/// itself (nothing waits; the capture's timestamps say when each datagram was due).
#[derive(Debug)]
struct Clock {
    start: Instant,
    /// CLOCK_MONOTONIC at `start` (what `Instant` reads on Linux), in nanoseconds: the base of
    /// the absolute sleep deadlines.
    start_mono_ns: u128,
    start_unix_us: i64,
    /// The process's CPU time at the start (CLOCK_PROCESS_CPUTIME_ID), nanoseconds.
    start_cpu_ns: u128,
    virtual_time: bool,
}

fn timespec_ns(t: rustix::time::Timespec) -> u128 {
    (t.tv_sec.max(0) as u128) * 1_000_000_000 + t.tv_nsec.max(0) as u128
}

/// The process's CPU time so far (user + system, all threads), nanoseconds.
fn process_cpu_ns() -> u128 {
    timespec_ns(rustix::time::clock_gettime(
        rustix::time::ClockId::ProcessCPUTime,
    ))
}

impl Clock {
    fn new(virtual_time: bool) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if !virtual_time {
            // Best effort: with the default slack every wake-up may be 50 µs late.
            let _ =
                rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(TIMER_SLACK_NS));
        }
        let start = Instant::now();
        let mono = timespec_ns(rustix::time::clock_gettime(
            rustix::time::ClockId::Monotonic,
        ));
        Clock {
            start,
            start_mono_ns: mono,
            start_unix_us: i64::try_from(now.as_micros()).unwrap_or(0),
            start_cpu_ns: process_cpu_ns(),
            virtual_time,
        }
    }

    /// CPU seconds this process used since the start.
    fn cpu_secs(&self) -> f64 {
        process_cpu_ns().saturating_sub(self.start_cpu_ns) as f64 / 1e9
    }

    /// Sleeps until `secs` after the start on CLOCK_MONOTONIC (absolute, so no drift).
    fn sleep_until(&self, secs: f64) {
        let at = self.start_mono_ns + (secs.max(0.0) * 1e9) as u128;
        let ts = rustix::time::Timespec {
            tv_sec: i64::try_from(at / 1_000_000_000).unwrap_or(i64::MAX),
            tv_nsec: (at % 1_000_000_000) as _,
        };
        // EINTR (a signal) just returns early: the caller loops and checks the stop flag.
        let _ = rustix::thread::clock_nanosleep_absolute(rustix::thread::ClockId::Monotonic, &ts);
    }

    fn wall_secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Seconds since the start: the schedule's time `sched` when virtual, else the wall clock.
    fn secs(&self, sched: f64) -> f64 {
        if self.virtual_time {
            sched
        } else {
            self.wall_secs()
        }
    }

    /// The run's length: where the schedule ended (virtual), else the wall clock.
    fn end_secs(&self, sched: f64, rate: f64, t: &Totals) -> f64 {
        let secs = if self.virtual_time && rate > 0.0 {
            t.flows.max(t.datagrams) as f64 / rate
        } else {
            self.secs(sched)
        };
        secs.max(1e-9)
    }

    fn unix_us(&self, secs: f64) -> i64 {
        self.start_unix_us + (secs * 1e6) as i64
    }

    /// Waits until `secs` after the start (or `stop`): sleeps to [`SPIN_LAST`] before the
    /// deadline (in slices of at most [`SLEEP_SLICE`]), spins the rest.
    fn wait_until(&self, secs: f64, stop: &AtomicBool) {
        if self.virtual_time {
            return;
        }
        let spin = SPIN_LAST.as_secs_f64();
        loop {
            let now = self.wall_secs();
            let left = secs - now;
            if left <= 0.0 || stop.load(Ordering::Relaxed) {
                return;
            }
            if left > spin {
                self.sleep_until((secs - spin).min(now + SLEEP_SLICE.as_secs_f64()));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The progress display on stderr: on a terminal one line rewritten in place (`\r`) twice a
/// second; into a pipe or a file one plain line every [`PROGRESS_INTERVAL_PLAIN`], so a log
/// holds readable lines and no carriage returns.
#[derive(Debug)]
struct Progress {
    last: Instant,
    last_flows: u64,
    shown: bool,
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        Progress::with_tty(std::io::stderr().is_terminal())
    }

    fn with_tty(tty: bool) -> Self {
        Progress {
            last: Instant::now(),
            last_flows: 0,
            shown: false,
            tty,
        }
    }

    fn interval(&self) -> Duration {
        if self.tty {
            PROGRESS_INTERVAL
        } else {
            PROGRESS_INTERVAL_PLAIN
        }
    }

    fn tick(&mut self, clock: &Clock, t: &Totals) {
        if self.last.elapsed() >= self.interval() {
            self.show(clock, t);
        }
    }

    fn line(&self, clock: &Clock, t: &Totals) -> String {
        let dt = self.last.elapsed().as_secs_f64().max(1e-9);
        let rate = t.flows.saturating_sub(self.last_flows) as f64 / dt;
        format!(
            "{:7.1} s  {:>12} flows  {:>11.0} flows/s  {:>10} datagrams",
            clock.wall_secs(),
            t.flows,
            rate,
            t.datagrams
        )
    }

    fn show(&mut self, clock: &Clock, t: &Totals) {
        let line = self.line(clock, t);
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("bench: {}", line.trim_start());
        }
        self.last = Instant::now();
        self.last_flows = t.flows;
        self.shown = true;
    }

    /// The final figures (on a terminal: then a newline, if the line was ever shown).
    fn done(&mut self, clock: &Clock, t: &Totals) {
        if self.tty && self.shown {
            self.show(clock, t);
            eprintln!();
        }
        let cpu = clock.cpu_secs();
        let wall = clock.wall_secs().max(1e-9);
        eprintln!(
            "bench: sent {} {} in {} {} in {wall:.3} s; generator CPU {cpu:.3} s ({:.1}% of one core)",
            t.flows,
            plural(t.flows, "flow", "flows"),
            t.datagrams,
            plural(t.datagrams, "datagram", "datagrams"),
            100.0 * cpu / wall
        );
    }
}

/// `one` for 1, else `many`.
fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// The address the daemon would listen on with `config` (see [`crate::config::load`]), with
/// an unspecified address (0.0.0.0, ::) turned into loopback of the same family.
pub fn config_target(config: Option<&std::path::Path>) -> anyhow::Result<SocketAddr> {
    let cfg = crate::config::load(config)?;
    let mut bind = cfg.receiver.bind;
    if bind.ip().is_unspecified() {
        bind.set_ip(match bind {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(bind)
}

pub fn run(cli: &crate::cli::Cli, opt: &BenchOpt) -> anyhow::Result<ExitCode> {
    let mut opt = opt.clone();
    opt.target = match opt.target_arg {
        Some(t) => t,
        None => {
            let t = config_target(cli.config.as_deref())?;
            if cli.config.is_some()
                || std::path::Path::new(crate::config::DEFAULT_CONFIG_PATH).exists()
            {
                log::info!("bench: sending to {t} (the configuration's listen address)");
            }
            t
        }
    };
    let opt = &opt;
    let limits = Limits {
        flows: opt.flows,
        seconds: match (opt.duration, opt.flows) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_DURATION_SECS),
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("installing the SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))
        .context("installing the SIGTERM handler")?;

    let clock = Clock::new(opt.write_pcap.is_some() && opt.rate > 0.0);
    let summary = match &opt.pcap {
        Some(path) => replay(opt, path, limits, &clock, &stop)?,
        None => generate(opt, limits, &clock, &stop)?,
    };
    let line = serde_json::to_string(&summary).context("encoding the summary")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("writing the summary")?;
    Ok(ExitCode::SUCCESS)
}

/// The addresses exporter `i` sends from and the output they write to.
fn open_output(opt: &BenchOpt, n: usize) -> anyhow::Result<Output> {
    match &opt.write_pcap {
        Some(path) => {
            let sources = (0..n)
                .map(|i| {
                    let port = PCAP_SOURCE_PORT + i as u16;
                    match opt.target {
                        SocketAddr::V4(_) => {
                            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8)), port)
                        }
                        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
                    }
                })
                .collect();
            Output::pcap(path, opt.target, sources)
        }
        None => Output::sockets(opt.target, n),
    }
}

fn batch_datagrams(rate: f64, flows_per_datagram: f64) -> usize {
    if rate <= 0.0 {
        return BATCH_MAX_DATAGRAMS;
    }
    ((rate * BATCH_SPAN_SECS / flows_per_datagram) as usize).clamp(1, BATCH_MAX_DATAGRAMS)
}

fn generate(
    opt: &BenchOpt,
    limits: Limits,
    clock: &Clock,
    stop: &AtomicBool,
) -> anyhow::Result<Summary> {
    let n = match opt.proto {
        Proto::Mixed => usize::from(opt.exporters).max(3),
        _ => usize::from(opt.exporters),
    };
    let mut out = open_output(opt, n)?;
    let start_unix_ms = (clock.start_unix_us / 1000) as u64;
    let mut exporters: Vec<Exporter> = out
        .sources()
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let proto = match opt.proto {
                Proto::Mixed => [Proto::V5, Proto::V9, Proto::Ipfix][i % 3],
                p => p,
            };
            Exporter::new(
                addr,
                proto,
                i as u32 + 1,
                start_unix_ms,
                opt.template_every,
                opt.v6_share > 0.0,
            )
        })
        .collect();
    let mut flow_gen = FlowGen::new(opt.seed, opt.v6_share);
    let per_datagram = match opt.proto {
        Proto::V5 => 30.0,
        _ => 20.0,
    };
    let batch_max = batch_datagrams(opt.rate, per_datagram);
    let mut totals = Totals::default();
    let mut progress = Progress::new();
    let mut batch = Batch::default();
    let mut turn = 0usize;
    let mut pacer = Pacer::new(opt.rate);
    while let Some(now_secs) = pacer.next(clock, totals.flows, totals.flows, &limits, stop) {
        let now_unix_ms = (clock.unix_us(now_secs) / 1000) as u64;
        let i = turn % exporters.len();
        turn += 1;
        let Some(e) = exporters.get_mut(i) else {
            break;
        };
        batch.clear();
        // --flows stops the last datagram exactly at the limit.
        let mut budget = limits.flows.map_or(u64::MAX, |f| f - totals.flows);
        // A short --flows run still spreads over every exporter.
        let fair = (budget as f64 / (per_datagram * n as f64)).ceil() as usize;
        for _ in 0..batch_max.min(fair.max(1)) {
            if budget == 0 {
                break;
            }
            let b = batch.push_with(|buf| e.next_datagram(&mut flow_gen, now_unix_ms, budget, buf));
            budget = budget.saturating_sub(b.flows);
            totals.add(b);
        }
        out.send(i, &batch, clock.unix_us(now_secs))?;
        progress.tick(clock, &totals);
    }
    out.finish()?;
    progress.done(clock, &totals);
    let seconds = clock.end_secs(pacer.sched, opt.rate, &totals);
    let per_exporter = exporters
        .iter()
        .map(|e| ExporterSummary {
            address: e.address.to_string(),
            proto: Some(e.proto.as_str()),
            replays: None,
            first_sequence: e.first_sequence,
            last_sequence: e.first_sequence.map(|_| e.last_sequence),
        })
        .collect();
    Ok(Summary::new(
        opt.proto.as_str(),
        &totals,
        seconds,
        clock.cpu_secs(),
        per_exporter,
    ))
}

/// The closing JSON line, keys in this order.
#[derive(Debug, serde::Serialize)]
struct Summary {
    proto: &'static str,
    flows: u64,
    datagrams: u64,
    seconds: f64,
    flows_per_sec: f64,
    sum_bytes: u64,
    sum_packets: u64,
    /// The generator's own CPU time (user + system) and its share of one core over `seconds`.
    cpu_seconds: f64,
    cpu_percent: f64,
    exporters: Vec<ExporterSummary>,
}

#[derive(Debug, serde::Serialize)]
struct ExporterSummary {
    address: String,
    /// The exporter's protocol (generated traffic).
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<&'static str>,
    /// The capture's exporter address this one replays.
    #[serde(skip_serializing_if = "Option::is_none")]
    replays: Option<String>,
    first_sequence: Option<u32>,
    last_sequence: Option<u32>,
}

impl Summary {
    fn new(
        proto: &'static str,
        t: &Totals,
        seconds: f64,
        cpu_seconds: f64,
        exporters: Vec<ExporterSummary>,
    ) -> Self {
        Summary {
            cpu_seconds: (cpu_seconds * 1e6).round() / 1e6,
            cpu_percent: (1000.0 * cpu_seconds / seconds).round() / 10.0,
            proto,
            flows: t.flows,
            datagrams: t.datagrams,
            seconds: (seconds * 1e6).round() / 1e6,
            flows_per_sec: (t.flows as f64 / seconds).round(),
            sum_bytes: t.bytes,
            sum_packets: t.packets,
            exporters,
        }
    }
}

/// One datagram of a capture to replay.
#[derive(Debug)]
struct Recorded {
    exporter: usize,
    payload: Vec<u8>,
    built: Built,
    sequence: Option<u32>,
}

/// The header's sequence number (v5 flow sequence, v9 package sequence, IPFIX sequence).
fn header_sequence(d: &[u8]) -> Option<u32> {
    let at = match d.get(..2)? {
        [0, 5] => 16,
        [0, 9] => 12,
        [0, 10] => 8,
        _ => return None,
    };
    let b = d.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn replay(
    opt: &BenchOpt,
    path: &std::path::Path,
    limits: Limits,
    clock: &Clock,
    stop: &AtomicBool,
) -> anyhow::Result<Summary> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let found = crate::pcap::netflow_datagrams(&bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    // Count each datagram's flows and counters once, with the collector's own decoder.
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut sources: Vec<SocketAddr> = Vec::new();
    let mut recorded = Vec::with_capacity(found.len());
    for (src, payload) in found {
        let exporter = match sources.iter().position(|s| s.ip() == src.ip()) {
            Some(k) => k,
            None => {
                if sources.len() >= usize::from(EXPORTERS_MAX) {
                    bail!("the capture has more than {EXPORTERS_MAX} exporters");
                }
                sources.push(src);
                sources.len() - 1
            }
        };
        let mut built = Built::default();
        let _ = decoder.decode(src.ip(), 0, &payload, |r| {
            built.flows += 1;
            built.bytes += r.in_bytes().unwrap_or(0);
            built.packets += r.in_pkts().unwrap_or(0);
        });
        let sequence = header_sequence(&payload);
        recorded.push(Recorded {
            exporter,
            payload,
            built,
            sequence,
        });
    }
    if recorded.is_empty() {
        bail!("{}: no NetFlow/IPFIX datagrams", path.display());
    }
    let per_loop: u64 = recorded.iter().map(|r| r.built.flows).sum();
    if per_loop == 0 && limits.flows.is_some() {
        bail!(
            "{}: the capture's datagrams carry no decodable flow records, so --flows cannot be reached",
            path.display()
        );
    }
    let mut out = open_output(opt, sources.len())?;
    let mut seqs: Vec<(Option<u32>, u32)> = vec![(None, 0); sources.len()];
    let avg = (per_loop as f64 / recorded.len() as f64).max(1.0);
    let batch_max = batch_datagrams(opt.rate, avg);
    let mut totals = Totals::default();
    let mut progress = Progress::new();
    let mut batch = Batch::default();
    let mut next = 0usize;
    let mut pacer = Pacer::new(opt.rate);
    loop {
        // Datagrams without flows (templates) move the schedule by a token's worth too, so a
        // template-only capture still paces.
        let tokens = totals.flows.max(totals.datagrams);
        let Some(now_secs) = pacer.next(clock, tokens, totals.flows, &limits, stop) else {
            break;
        };
        batch.clear();
        let Some(first) = recorded.get(next % recorded.len()) else {
            break;
        };
        let exporter = first.exporter;
        while batch.len() < batch_max {
            let Some(r) = recorded.get(next % recorded.len()) else {
                break;
            };
            // Datagrams are replayed whole: --flows stops at the first datagram boundary at or
            // past the limit.
            if r.exporter != exporter {
                break;
            }
            batch.push_with(|buf| {
                buf.extend_from_slice(&r.payload);
                r.built
            });
            totals.add(r.built);
            if let (Some(seq), Some(s)) = (r.sequence, seqs.get_mut(exporter)) {
                s.0.get_or_insert(seq);
                s.1 = seq;
            }
            next += 1;
            if limits.flows.is_some_and(|f| totals.flows >= f) {
                break;
            }
        }
        if batch.len() == 0 {
            break;
        }
        out.send(exporter, &batch, clock.unix_us(now_secs))?;
        progress.tick(clock, &totals);
    }
    out.finish()?;
    progress.done(clock, &totals);
    let seconds = clock.end_secs(pacer.sched, opt.rate, &totals);
    let per_exporter = out
        .sources()
        .iter()
        .zip(&seqs)
        .zip(&sources)
        .map(|((addr, (first, last)), orig)| ExporterSummary {
            address: addr.to_string(),
            proto: None,
            replays: Some(orig.ip().to_string()),
            first_sequence: *first,
            last_sequence: first.map(|_| *last),
        })
        .collect();
    Ok(Summary::new(
        "pcap",
        &totals,
        seconds,
        clock.cpu_secs(),
        per_exporter,
    ))
}
