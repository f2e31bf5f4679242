//! Receive loops: each worker thread owns one UDP socket (SO_REUSEPORT) and one [`Receiver`],
//! which fills batches of datagrams through io_uring (`uring`: multishot recvmsg over a provided
//! buffer ring) or recvmmsg (`mmsg`). Both back-ends are compiled on every Linux build, have one
//! call shape ([`Receiver::recv_batch`]) and are chosen at run time ([`ReceiverChoice::Auto`]
//! probes io_uring once and logs one line when it falls back); nothing above this module knows
//! which one ran. `socket` opens the worker sockets (receive buffer, drop counter, exporter
//! affinity). This is the only module with `unsafe` code, confined to `uring.rs`, `mmsg.rs` and
//! the few setsockopt calls socket2 does not wrap in `socket.rs`; the byte parsers shared by both
//! back-ends (source address, control messages) live here and are safe code.

mod mmsg;
mod socket;
mod uring;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

pub use socket::{affinity_index, open_sockets};

/// Default size of one receive buffer: the largest UDP payload over IPv4 (65507) rounded up to
/// 65535, so no real datagram is ever truncated unless configured smaller.
pub const RECV_BUFFER_SIZE_BYTES: usize = 65535;
/// Default number of datagrams taken per wake-up.
pub const RECV_BATCH_DEFAULT: usize = 256;
/// Largest accepted `batch_max` (larger values are clamped): 1024 x 64 KiB is already 64 MiB of
/// preallocated buffers for recvmmsg.
pub const RECV_BATCH_LIMIT: usize = 1024;
/// Default socket receive buffer request (SO_RCVBUF), bytes.
pub const RECV_RCVBUF_DEFAULT_BYTES: usize = 32 << 20;

/// Which receive back-end to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReceiverChoice {
    /// io_uring when the kernel allows it, else recvmmsg (one log line says which).
    #[default]
    Auto,
    Uring,
    Mmsg,
}

/// One received datagram, borrowed from the receiver's buffers for the duration of a batch.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The exporter's address and port.
    pub source: SocketAddr,
    /// The datagram's bytes (empty when truncated).
    pub payload: &'a [u8],
    /// The datagram was larger than its buffer; it is counted, never parsed.
    pub truncated: bool,
}

/// How the receive side is set up: one socket and one receiver per worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Address to bind every worker socket to (IPv4 or IPv6; `[::]` also receives IPv4).
    pub bind: SocketAddr,
    /// Number of worker sockets in the SO_REUSEPORT group (0 is treated as 1).
    pub workers: usize,
    /// SO_RCVBUF request per socket, bytes (0 keeps the kernel default).
    pub rcvbuf: usize,
    /// Which back-end to use.
    pub choice: ReceiverChoice,
    /// Bytes per receive buffer; a larger datagram is reported truncated (default 65535).
    pub buffer_size: usize,
    /// Most datagrams handed over per [`Receiver::recv_batch`] call (default 256, at most 1024).
    pub batch_max: usize,
}

impl ReceiverConfig {
    /// Defaults for everything but the bind address: one worker per CPU, 32 MiB receive buffer,
    /// automatic back-end, 64 KiB buffers, batches of 256.
    pub fn new(bind: SocketAddr) -> ReceiverConfig {
        ReceiverConfig {
            bind,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            rcvbuf: RECV_RCVBUF_DEFAULT_BYTES,
            choice: ReceiverChoice::Auto,
            buffer_size: RECV_BUFFER_SIZE_BYTES,
            batch_max: RECV_BATCH_DEFAULT,
        }
    }

    /// `buffer_size` clamped to 1..=65535.
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buffer_size.clamp(1, RECV_BUFFER_SIZE_BYTES)
    }

    /// `batch_max` clamped to 1..=[`RECV_BATCH_LIMIT`].
    pub(crate) fn batch_len(&self) -> usize {
        self.batch_max.clamp(1, RECV_BATCH_LIMIT)
    }
}

/// The back-end a [`Receiver`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiverKind {
    /// io_uring multishot recvmsg over a provided buffer ring.
    Uring,
    /// recvmmsg(2) into preallocated buffers.
    Mmsg,
}

impl ReceiverKind {
    /// `"uring"` or `"mmsg"` (the config spelling, also shown in /status).
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Uring => "uring",
            ReceiverKind::Mmsg => "mmsg",
        }
    }
}

impl std::fmt::Display for ReceiverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One worker's receive loop state: its socket and the buffers the kernel fills.
#[derive(Debug)]
pub struct Receiver {
    backend: Backend,
    /// The socket's own drop counter (SO_MEMINFO), as last read.
    socket_drops: DropCounter,
}

#[derive(Debug)]
enum Backend {
    // Boxed: the uring receiver is large and its msghdr must not move while armed (it also
    // boxes that itself; this just keeps the enum small).
    Uring(Box<uring::UringReceiver>),
    Mmsg(mmsg::MmsgReceiver),
}

impl Receiver {
    /// Builds the receiver for `socket` (one of [`open_sockets`]'s). `ReceiverChoice::Auto`
    /// probes io_uring once per process (see [`probe_uring`]) and falls back to recvmmsg;
    /// `Uring` fails when io_uring cannot be set up.
    pub fn new(socket: UdpSocket, cfg: &ReceiverConfig) -> io::Result<Receiver> {
        let backend = match cfg.choice {
            ReceiverChoice::Mmsg => Backend::Mmsg(mmsg::MmsgReceiver::new(socket, cfg)?),
            ReceiverChoice::Uring => match uring::UringReceiver::new(socket, cfg) {
                Ok(r) => Backend::Uring(Box::new(r)),
                Err((e, _)) => return Err(e),
            },
            ReceiverChoice::Auto => match probe_uring_cached() {
                Ok(()) => match uring::UringReceiver::new(socket, cfg) {
                    Ok(r) => Backend::Uring(Box::new(r)),
                    // The probe passed but this ring could not be set up (memory, limits):
                    // this worker degrades alone.
                    Err((e, socket)) => {
                        log::warn!("io_uring receiver setup failed ({e}), using recvmmsg");
                        Backend::Mmsg(mmsg::MmsgReceiver::new(socket, cfg)?)
                    }
                },
                Err(_) => Backend::Mmsg(mmsg::MmsgReceiver::new(socket, cfg)?),
            },
        };
        let mut r = Receiver {
            backend,
            socket_drops: DropCounter::default(),
        };
        // Drops before this receiver existed (none: the socket was just opened) are a baseline.
        r.refresh_drops();
        Ok(r)
    }

    /// Which back-end this receiver runs on.
    pub fn kind(&self) -> ReceiverKind {
        match self.backend {
            Backend::Uring(_) => ReceiverKind::Uring,
            Backend::Mmsg(_) => ReceiverKind::Mmsg,
        }
    }

    /// Waits up to `timeout` (ZERO = don't wait) for datagrams, calls `on_datagram` for each one
    /// received in this wake-up (<= batch_max), recycles the buffers when it returns.
    /// Ok(n datagrams). An interrupted wait (EINTR) returns Ok(0) so the caller can check its
    /// stop flag.
    ///
    /// One thread per receiver: a receiver may be created anywhere and moved to its worker,
    /// but the first `recv_batch` binds an io_uring receiver to the calling thread (the ring is
    /// single-issuer); calls from another thread afterwards fail, and the receiver should be
    /// dropped on that thread too (dropped elsewhere while armed, it leaks its buffers rather
    /// than free memory the kernel may still write).
    pub fn recv_batch(
        &mut self,
        timeout: Duration,
        on_datagram: impl FnMut(&Datagram<'_>),
    ) -> io::Result<usize> {
        match &mut self.backend {
            Backend::Uring(r) => r.recv_batch(timeout, on_datagram),
            Backend::Mmsg(r) => r.recv_batch(timeout, on_datagram),
        }
    }

    /// Cumulative kernel drops on this socket: the larger of the latest SO_RXQ_OVFL value seen
    /// (the kernel attaches it to datagrams queued after a drop) and the socket's counter as
    /// last read by [`Receiver::refresh_drops`] (both count the same thing; the first lags
    /// while a backlog is read, the second does not). 32-bit wrap-around is accounted for.
    pub fn kernel_drops(&self) -> u64 {
        let seen = match &self.backend {
            Backend::Uring(r) => r.drops.total(),
            Backend::Mmsg(r) => r.drops.total(),
        };
        seen.max(self.socket_drops.total())
    }

    /// Reads the socket's drop counter now (one getsockopt; the worker calls it a few times a
    /// second). A kernel without SO_MEMINFO leaves SO_RXQ_OVFL as the only source.
    pub fn refresh_drops(&mut self) {
        if let Ok(n) = socket::socket_drops(self.socket()) {
            self.socket_drops.update(n);
        }
    }

    /// Stops the kernel queueing new datagrams for this receiver (see
    /// [`socket::close_intake`]); what is queued can still be received.
    pub fn close_intake(&self) -> io::Result<()> {
        socket::close_intake(self.socket())
    }

    /// Datagrams reported truncated (larger than `buffer_size`) since the start.
    pub fn truncated(&self) -> u64 {
        match &self.backend {
            Backend::Uring(r) => r.truncated,
            Backend::Mmsg(r) => r.truncated,
        }
    }

    /// The socket this receiver reads.
    pub fn socket(&self) -> &UdpSocket {
        match &self.backend {
            Backend::Uring(r) => r.socket(),
            Backend::Mmsg(r) => r.socket(),
        }
    }

    /// Times the io_uring multishot receive was re-armed (ENOBUFS or no MORE flag); 0 on mmsg.
    pub fn rearms(&self) -> u64 {
        match &self.backend {
            Backend::Uring(r) => r.rearms,
            Backend::Mmsg(_) => 0,
        }
    }
}

/// Checks that io_uring can run the fast path here: ring setup, `Probe` lists RecvMsg, EXT_ARG
/// waits, provided-buffer-ring registration (5.19) and a first multishot RecvMsgMulti on a
/// loopback socket that receives a datagram instead of failing with -EINVAL (6.0). Err carries
/// the reason. Runs every time it is called; [`Receiver::new`] caches its result.
pub fn probe_uring() -> Result<(), String> {
    uring::probe()
}

/// [`probe_uring`] once per process; the fallback is logged once.
fn probe_uring_cached() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let result = probe_uring();
            if let Err(reason) = &result {
                log::info!("io_uring unavailable ({reason}), using recvmmsg");
            }
            result
        })
        .clone()
}

/// The cumulative SO_RXQ_OVFL counter of one socket. The kernel reports a 32-bit running total
/// (sk_drops when the datagram was queued); this keeps the latest value and widens it to 64
/// bits across wrap-around.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DropCounter {
    last: u32,
    total: u64,
}

impl DropCounter {
    pub(crate) fn update(&mut self, reported: u32) {
        let delta = reported.wrapping_sub(self.last);
        // A smaller value than the last one is an older datagram overtaken by a newer one (not
        // possible on one socket queue), never a wrap of more than 2^31: ignore it.
        if delta < 1 << 31 {
            self.total += u64::from(delta);
            self.last = reported;
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// CMSG_LEN(0): the aligned `cmsghdr` size, where a control record's data starts (16 on 64-bit
/// Linux). Computed here because libc's CMSG_* helpers are unsafe fns.
pub(crate) const CMSG_HEADER_BYTES: usize =
    std::mem::size_of::<libc::cmsghdr>().next_multiple_of(std::mem::size_of::<usize>());

/// Finds the SO_RXQ_OVFL value in a control-message buffer as the kernel wrote it
/// (`struct cmsghdr` records, each padded to the alignment of `size_t`). Safe byte parsing; a
/// malformed record ends the walk.
pub(crate) fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    const ALIGN: usize = std::mem::size_of::<usize>();
    let header = CMSG_HEADER_BYTES;
    let mut rest = control;
    let mut found = None;
    while rest.len() >= header {
        let len_bytes: [u8; ALIGN] = rest.get(..ALIGN)?.try_into().ok()?;
        // cmsg_len is a size_t on glibc; on musl a socklen_t plus padding that is zero, which
        // reads the same on little-endian targets.
        let len = usize::from_ne_bytes(len_bytes);
        let level = i32::from_ne_bytes(rest.get(ALIGN..ALIGN + 4)?.try_into().ok()?);
        let kind = i32::from_ne_bytes(rest.get(ALIGN + 4..ALIGN + 8)?.try_into().ok()?);
        if len < header || len > rest.len() {
            break;
        }
        if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL {
            let data = rest.get(header..len)?;
            found = Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?));
        }
        let advance = len.div_ceil(ALIGN) * ALIGN;
        rest = rest.get(advance..).unwrap_or(&[]);
    }
    found
}

/// Parses a `sockaddr_in` / `sockaddr_in6` as the kernel wrote it (family in native order, port
/// and address in network order). A v4-mapped IPv6 source (from a dual-stack socket) becomes
/// the IPv4 address, so an exporter has one key whichever socket family received it.
pub(crate) fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let addr: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(addr),
                port,
            )))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let addr: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope_id = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            let ip = Ipv6Addr::from(addr);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope_id)),
            })
        }
        _ => None,
    }
}

/// The source reported when the kernel gave no usable address (never seen on UDP; kept so a
/// datagram is still counted rather than dropped silently).
pub(crate) const UNKNOWN_SOURCE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counter_keeps_latest_and_widens() {
        let mut c = DropCounter::default();
        c.update(5);
        c.update(7);
        assert_eq!(c.total(), 7);
        c.update(6); // an older value: ignored
        assert_eq!(c.total(), 7);
        c.update(0x7000_0000);
        c.update(0xE000_0000);
        c.update(3); // wrapped past 2^32
        assert_eq!(c.total(), (1u64 << 32) + 3);
    }

    #[test]
    fn rxq_ovfl_parses_one_record_and_rejects_garbage() {
        let header = CMSG_HEADER_BYTES;
        let mut buf = vec![0u8; header + 8]; // CMSG_SPACE(4)
        buf[..8].copy_from_slice(&(header + 4).to_ne_bytes()); // cmsg_len
        buf[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes()); // cmsg_level
        buf[12..16].copy_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes()); // cmsg_type
        buf[header..header + 4].copy_from_slice(&42u32.to_ne_bytes()); // drops
        assert_eq!(rxq_ovfl(&buf), Some(42));
        assert_eq!(rxq_ovfl(&buf[..header + 2]), None);
        buf[..8].copy_from_slice(&1000usize.to_ne_bytes()); // length past the end
        assert_eq!(rxq_ovfl(&buf), None);
        assert_eq!(rxq_ovfl(&[]), None);
    }

    #[test]
    fn parse_sockaddr_maps_v4_mapped_to_v4() {
        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&2055u16.to_be_bytes());
        v6[8..24].copy_from_slice(&Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets());
        assert_eq!(
            parse_sockaddr(&v6),
            Some("10.1.2.3:2055".parse().unwrap_or(UNKNOWN_SOURCE))
        );
        v6[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(
            parse_sockaddr(&v6),
            Some("[::1]:2055".parse().unwrap_or(UNKNOWN_SOURCE))
        );
        assert_eq!(parse_sockaddr(&v6[..10]), None);
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&9u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 2]);
        assert_eq!(
            parse_sockaddr(&v4),
            Some("127.0.0.2:9".parse().unwrap_or(UNKNOWN_SOURCE))
        );
    }
}
