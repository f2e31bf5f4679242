//! The systemd service protocol, written by hand (sd_notify(3)): one datagram per state change
//! to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace),
//! and the watchdog interval from `$WATCHDOG_USEC` (for this process when `$WATCHDOG_PID` is
//! unset or names it). Without `$NOTIFY_SOCKET` every call is a no-op, so the daemon runs the
//! same by hand, under systemd `Type=simple` or `Type=notify`.
//!
//! The daemon sends `READY=1` once its sockets are bound, its workers run and every backend's
//! first connect attempt is over (connected, or failing and spooling/queueing); `STATUS=` with
//! the summary line every 10 s; `WATCHDOG=1` while every worker's receive loop keeps turning
//! (see [`Watchdog`]); `RELOADING=1` ... `READY=1` around a SIGHUP; `STOPPING=1` at shutdown.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// `$NOTIFY_SOCKET`: where systemd listens.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// `$WATCHDOG_USEC`: the watchdog timeout (`WatchdogSec=`), microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// `$WATCHDOG_PID`: the process the watchdog is meant for.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// A receive loop counts as stuck when it has not turned for this long (and for at least half
/// the watchdog timeout): a loop wakes at least every 100 ms, even without traffic.
const STUCK_AFTER_MIN: Duration = Duration::from_millis(500);

/// The connection to systemd's notification socket (or nothing).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half the watchdog timeout: how often `WATCHDOG=1` is due.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the process environment.
    pub fn from_env() -> Notifier {
        Notifier::from_vars(&|k| std::env::var(k).ok(), std::process::id())
    }

    /// From `env` (for tests), for process `pid`. A socket that cannot be used is logged once
    /// and leaves the notifier off: goflow runs on without systemd hearing from it.
    pub fn from_vars(env: &dyn Fn(&str) -> Option<String>, pid: u32) -> Notifier {
        let target = env(NOTIFY_SOCKET_ENV)
            .filter(|s| !s.is_empty())
            .and_then(|s| match connect(&s) {
                Ok(t) => Some(t),
                Err(e) => {
                    log::warn!("{NOTIFY_SOCKET_ENV}={s}: cannot use it ({e}); systemd will not hear from goflow");
                    None
                }
            });
        let for_us = env(WATCHDOG_PID_ENV)
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|p| p == pid);
        let watchdog = env(WATCHDOG_USEC_ENV)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us && target.is_some())
            .map(|us| Duration::from_micros(us / 2));
        Notifier { target, watchdog }
    }

    /// A notifier that sends nothing.
    pub fn off() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Whether systemd is listening.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often `WATCHDOG=1` is due (half of `WatchdogSec=`), when the watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments). Failures are logged at debug
    /// level only: systemd going away must not disturb the collector.
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
        {
            log::debug!("sd_notify {:?}: {e}", state.lines().next().unwrap_or(""));
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the monotonic time systemd expects alongside it.
    pub fn reloading(&self) {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let us = u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000
            + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000;
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={us}\nSTATUS=reloading (SIGHUP)"
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: draining the sockets and flushing the backends");
    }

    /// `WATCHDOG=1`.
    pub fn keepalive(&self) {
        self.send("WATCHDOG=1");
    }
}

/// STATUS= takes one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// An unbound datagram socket and the address of `$NOTIFY_SOCKET`.
fn connect(spec: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
    let addr = if let Some(name) = spec.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())?
    } else if spec.starts_with('/') {
        SocketAddr::from_pathname(spec)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only a path or an @abstract name is supported",
        ));
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// Sends `WATCHDOG=1` every [`Notifier::watchdog_interval`] as long as every worker's receive
/// loop keeps turning (each bumps its heartbeat once per wake-up, at least every 100 ms). A
/// loop that stopped turning (stuck in a syscall, a deadlock) withholds the keepalive, so
/// systemd restarts the service after `WatchdogSec=`; the reason is logged first.
#[derive(Debug)]
pub struct Watchdog {
    interval: Duration,
    stuck_after: Duration,
    next: Instant,
    /// Per worker: the heartbeat last seen and when it last moved.
    seen: Vec<(u64, Instant)>,
    withheld: bool,
}

impl Watchdog {
    /// A watchdog for `workers` receive loops, when the notifier has one.
    pub fn new(notifier: &Notifier, workers: usize, now: Instant) -> Option<Watchdog> {
        let interval = notifier.watchdog_interval()?;
        Some(Watchdog {
            interval,
            stuck_after: interval.max(STUCK_AFTER_MIN),
            next: now,
            seen: vec![(u64::MAX, now); workers],
            withheld: false,
        })
    }

    /// Looks at the heartbeats (call often: the main loop's 50 ms poll) and sends the keepalive
    /// when due and every loop is alive.
    pub fn tick(
        &mut self,
        notifier: &Notifier,
        heartbeats: impl Iterator<Item = u64>,
        now: Instant,
    ) {
        for (seen, beat) in self.seen.iter_mut().zip(heartbeats) {
            if seen.0 != beat {
                *seen = (beat, now);
            }
        }
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        let stuck: Vec<String> = self
            .seen
            .iter()
            .enumerate()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) > self.stuck_after)
            .map(|(i, (_, at))| format!("worker {i} ({:.1?})", now.saturating_duration_since(*at)))
            .collect();
        if stuck.is_empty() {
            if self.withheld {
                log::info!("watchdog: every receive loop is turning again; keepalives resumed");
                self.withheld = false;
            }
            notifier.keepalive();
        } else if !self.withheld {
            self.withheld = true;
            log::error!(
                "watchdog: receive loop stuck: {}; withholding WATCHDOG=1, systemd restarts \
                 goflow when WatchdogSec= passes",
                stuck.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(dir: &std::path::Path) -> (UnixDatagram, String) {
        let path = dir.join("notify.sock");
        let s = UnixDatagram::bind(&path).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (s, path.display().to_string())
    }

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, path) = bound(dir.path());
        let env = |k: &str| (k == NOTIFY_SOCKET_ENV).then(|| path.clone());
        let n = Notifier::from_vars(&env, 1);
        assert!(n.enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("listening\non udp");
        assert_eq!(recv(&s), "READY=1\nSTATUS=listening on udp");
        n.stopping();
        assert!(recv(&s).starts_with("STOPPING=1\n"));
        n.reloading();
        assert!(recv(&s).starts_with("RELOADING=1\nMONOTONIC_USEC="));

        use std::os::linux::net::SocketAddrExt;
        let name = format!("goflow-notify-test-{}", std::process::id());
        let a = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("addr"),
        )
        .expect("bind abstract");
        a.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let spec = format!("@{name}");
        let env = |k: &str| (k == NOTIFY_SOCKET_ENV).then(|| spec.clone());
        Notifier::from_vars(&env, 1).keepalive();
        assert_eq!(recv(&a), "WATCHDOG=1");
    }

    #[test]
    fn no_socket_means_off_and_the_watchdog_is_for_its_pid_only() {
        let n = Notifier::from_vars(&|_| None, 1);
        assert!(!n.enabled());
        n.ready("x"); // a no-op
        let dir = tempfile::tempdir().expect("tempdir");
        let (_s, path) = bound(dir.path());
        let vars = |pid: Option<&'static str>| {
            let path = path.clone();
            move |k: &str| match k {
                NOTIFY_SOCKET_ENV => Some(path.clone()),
                WATCHDOG_USEC_ENV => Some("3000000".to_owned()),
                WATCHDOG_PID_ENV => pid.map(str::to_owned),
                _ => None,
            }
        };
        assert_eq!(
            Notifier::from_vars(&vars(None), 7).watchdog_interval(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            Notifier::from_vars(&vars(Some("7")), 7).watchdog_interval(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            Notifier::from_vars(&vars(Some("8")), 7).watchdog_interval(),
            None
        );
        // Not a path nor an abstract name: off, not a failure.
        let env = |k: &str| (k == NOTIFY_SOCKET_ENV).then(|| "vsock:2:3".to_owned());
        assert!(!Notifier::from_vars(&env, 1).enabled());
    }

    #[test]
    fn the_watchdog_withholds_the_keepalive_while_a_loop_is_stuck() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, path) = bound(dir.path());
        s.set_nonblocking(true).expect("nonblocking");
        let env = |k: &str| match k {
            NOTIFY_SOCKET_ENV => Some(path.clone()),
            WATCHDOG_USEC_ENV => Some("2000000".to_owned()),
            _ => None,
        };
        let n = Notifier::from_vars(&env, 1);
        let t0 = Instant::now();
        let mut w = Watchdog::new(&n, 2, t0).expect("watchdog on");
        let count = || {
            let mut buf = [0u8; 64];
            let mut k = 0;
            while s.recv(&mut buf).is_ok() {
                assert_eq!(&buf[..10], b"WATCHDOG=1");
                k += 1;
            }
            k
        };
        w.tick(&n, [1, 1].into_iter(), t0);
        assert_eq!(count(), 1, "due at once");
        w.tick(&n, [2, 2].into_iter(), t0 + Duration::from_millis(500));
        assert_eq!(count(), 0, "not due yet");
        w.tick(&n, [3, 3].into_iter(), t0 + Duration::from_millis(1000));
        assert_eq!(count(), 1);
        // Worker 1 stops turning: once it has been still longer than the interval, the
        // keepalive is withheld.
        w.tick(&n, [4, 3].into_iter(), t0 + Duration::from_millis(1900));
        assert_eq!(count(), 0, "not due yet");
        w.tick(&n, [5, 3].into_iter(), t0 + Duration::from_millis(2100));
        assert_eq!(count(), 0, "withheld: worker 1 still for 1.1 s");
        w.tick(&n, [6, 3].into_iter(), t0 + Duration::from_millis(3200));
        assert_eq!(count(), 0, "still withheld");
        w.tick(&n, [7, 4].into_iter(), t0 + Duration::from_millis(4300));
        assert_eq!(count(), 1, "resumed");
    }
}
