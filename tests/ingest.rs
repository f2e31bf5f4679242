//! Receive back-ends on real loopback sockets, each test once per back-end (recvmmsg always;
//! io_uring when `probe_uring` passes, otherwise the test prints why it skipped that half):
//! payloads and source addresses arrive intact over IPv4, IPv6 and a dual-stack bind; oversized
//! datagrams are reported truncated; a ZERO timeout drains and then returns 0; the SO_RXQ_OVFL
//! drop counter moves after a flood; and the reuseport BPF program keeps every datagram of one
//! exporter address on one socket whatever its source port.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use goflow::ingest::{
    Receiver, ReceiverChoice, ReceiverConfig, ReceiverKind, affinity_index, open_sockets,
    probe_uring,
};

type TestResult = Result<(), Box<dyn Error>>;

/// Upper bound for any wait on loopback traffic.
const DEADLINE: Duration = Duration::from_secs(5);

/// The back-ends to exercise here: recvmmsg always, io_uring when the kernel allows it.
fn choices() -> Vec<ReceiverChoice> {
    let mut out = vec![ReceiverChoice::Mmsg];
    match probe_uring() {
        Ok(()) => out.push(ReceiverChoice::Uring),
        Err(reason) => println!("skipping the io_uring half: {reason}"),
    }
    out
}

fn config(
    bind: &str,
    workers: usize,
    choice: ReceiverChoice,
) -> Result<ReceiverConfig, Box<dyn Error>> {
    let mut cfg = ReceiverConfig::new(bind.parse()?);
    cfg.workers = workers;
    cfg.choice = choice;
    cfg.rcvbuf = 4 << 20;
    Ok(cfg)
}

fn open_one(cfg: &ReceiverConfig) -> Result<(Receiver, SocketAddr), Box<dyn Error>> {
    let socket = open_sockets(cfg)?.pop().ok_or("no socket")?;
    let addr = socket.local_addr()?;
    let receiver = Receiver::new(socket, cfg)?;
    let want = if cfg.choice == ReceiverChoice::Uring {
        ReceiverKind::Uring
    } else {
        ReceiverKind::Mmsg
    };
    assert_eq!(receiver.kind(), want);
    Ok((receiver, addr))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    source: SocketAddr,
    payload: Vec<u8>,
    truncated: bool,
}

/// Receives until `count` datagrams arrived or the deadline passed.
fn receive(receiver: &mut Receiver, count: usize) -> Result<Vec<Got>, Box<dyn Error>> {
    let mut got = Vec::with_capacity(count);
    let start = Instant::now();
    while got.len() < count && start.elapsed() < DEADLINE {
        receiver.recv_batch(Duration::from_millis(50), |d| {
            got.push(Got {
                source: d.source,
                payload: d.payload.to_vec(),
                truncated: d.truncated,
            });
        })?;
    }
    Ok(got)
}

fn payload(i: usize) -> Vec<u8> {
    // Sizes from 1 to ~1500 bytes, content tied to the index.
    let len = 1 + (i * 97) % 1500;
    (0..len).map(|j| (i + j) as u8).collect()
}

fn v4_localhost_to(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
}

#[test]
fn loopback_ipv4_datagrams_arrive_intact_with_source() -> TestResult {
    for choice in choices() {
        let (mut receiver, addr) = open_one(&config("127.0.0.1:0", 1, choice)?)?;
        let sender = UdpSocket::bind("127.0.0.1:0")?;
        const N: usize = 300;
        for i in 0..N {
            sender.send_to(&payload(i), addr)?;
        }
        let got = receive(&mut receiver, N)?;
        assert_eq!(got.len(), N, "{choice:?}");
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.source, sender.local_addr()?, "{choice:?}");
            assert!(!g.truncated);
            assert_eq!(g.payload, payload(i), "{choice:?} datagram {i}");
        }
        assert_eq!(receiver.truncated(), 0);
    }
    Ok(())
}

#[test]
fn loopback_ipv6_bind_reports_v6_source() -> TestResult {
    if UdpSocket::bind("[::1]:0").is_err() {
        println!("skipping: no IPv6 loopback here");
        return Ok(());
    }
    for choice in choices() {
        let (mut receiver, addr) = open_one(&config("[::1]:0", 1, choice)?)?;
        let sender = UdpSocket::bind("[::1]:0")?;
        for i in 0..20 {
            sender.send_to(&payload(i), addr)?;
        }
        let got = receive(&mut receiver, 20)?;
        assert_eq!(got.len(), 20, "{choice:?}");
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.source, sender.local_addr()?, "{choice:?}");
            assert_eq!(g.payload, payload(i));
        }
    }
    Ok(())
}

#[test]
fn dual_stack_bind_reports_ipv4_exporters_as_ipv4() -> TestResult {
    if UdpSocket::bind("[::]:0").is_err() {
        println!("skipping: no IPv6 here");
        return Ok(());
    }
    for choice in choices() {
        let (mut receiver, addr) = open_one(&config("[::]:0", 1, choice)?)?;
        let sender = UdpSocket::bind("127.0.0.1:0")?;
        sender.send_to(b"v4 exporter", v4_localhost_to(addr))?;
        let got = receive(&mut receiver, 1)?;
        assert_eq!(got.len(), 1, "{choice:?}");
        assert_eq!(
            got[0].source,
            sender.local_addr()?,
            "{choice:?}: v4-mapped must become v4"
        );
        assert_eq!(got[0].payload, b"v4 exporter");
    }
    Ok(())
}

#[test]
fn datagram_larger_than_buffer_is_truncated_not_parsed() -> TestResult {
    for choice in choices() {
        let mut cfg = config("127.0.0.1:0", 1, choice)?;
        cfg.buffer_size = 128;
        let (mut receiver, addr) = open_one(&cfg)?;
        let sender = UdpSocket::bind("127.0.0.1:0")?;
        sender.send_to(&[0xAB; 129], addr)?;
        sender.send_to(&[0xCD; 128], addr)?;
        sender.send_to(&[0xEF; 1400], addr)?;
        let got = receive(&mut receiver, 3)?;
        assert_eq!(got.len(), 3, "{choice:?}");
        assert!(
            got[0].truncated && got[0].payload.is_empty(),
            "{choice:?}: {:?}",
            got[0]
        );
        assert!(
            !got[1].truncated && got[1].payload == [0xCD; 128],
            "{choice:?}"
        );
        assert!(got[2].truncated && got[2].payload.is_empty(), "{choice:?}");
        assert_eq!(got[0].source, sender.local_addr()?);
        assert_eq!(receiver.truncated(), 2);
    }
    Ok(())
}

#[test]
fn zero_timeout_drains_queued_then_returns_zero_within_batch_max() -> TestResult {
    for choice in choices() {
        let mut cfg = config("127.0.0.1:0", 1, choice)?;
        cfg.batch_max = 16;
        let (mut receiver, addr) = open_one(&cfg)?;
        // Nothing queued: returns at once with 0.
        let start = Instant::now();
        assert_eq!(
            receiver.recv_batch(Duration::ZERO, |_| {})?,
            0,
            "{choice:?}"
        );
        assert!(start.elapsed() < Duration::from_millis(500));
        let sender = UdpSocket::bind("127.0.0.1:0")?;
        const N: usize = 100;
        for i in 0..N {
            sender.send_to(&payload(i), addr)?;
        }
        let mut total = 0;
        let mut calls = 0;
        loop {
            let mut seen = 0;
            let n = receiver.recv_batch(Duration::ZERO, |_| seen += 1)?;
            assert_eq!(n, seen);
            assert!(n <= 16, "{choice:?}: batch of {n} > batch_max");
            calls += 1;
            if n == 0 {
                break;
            }
            total += n;
            assert!(calls < 10 * N, "{choice:?}: ZERO drain never ended");
        }
        assert_eq!(
            total, N,
            "{choice:?}: ZERO timeout must drain everything queued"
        );
        assert!(
            calls > N / 16,
            "{choice:?}: batches must be bounded by batch_max"
        );
        assert_eq!(receiver.recv_batch(Duration::ZERO, |_| {})?, 0);
    }
    Ok(())
}

#[test]
fn timeout_waits_and_returns_zero_when_idle() -> TestResult {
    for choice in choices() {
        let (mut receiver, _) = open_one(&config("127.0.0.1:0", 1, choice)?)?;
        let start = Instant::now();
        assert_eq!(receiver.recv_batch(Duration::from_millis(100), |_| {})?, 0);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(90),
            "{choice:?}: waited only {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(2),
            "{choice:?}: waited {waited:?}"
        );
    }
    Ok(())
}

#[test]
fn kernel_drops_are_counted_after_a_flood() -> TestResult {
    for choice in choices() {
        let mut cfg = config("127.0.0.1:0", 1, choice)?;
        cfg.rcvbuf = 4096;
        let (mut receiver, addr) = open_one(&cfg)?;
        let sender = UdpSocket::bind("127.0.0.1:0")?;
        // Nothing reads yet (the io_uring receive is only armed by the first recv_batch).
        for _ in 0..2000 {
            sender.send_to(&[7u8; 1000], addr)?;
        }
        // Drain what was queued, then one more datagram carries the drop count.
        while receiver.recv_batch(Duration::ZERO, |_| {})? > 0 {}
        sender.send_to(b"after the flood", addr)?;
        let got = receive(&mut receiver, 1)?;
        assert_eq!(
            got.last().map(|g| g.payload.as_slice()),
            Some(&b"after the flood"[..])
        );
        let drops = receiver.kernel_drops();
        assert!(drops > 0, "{choice:?}: no drops reported");
        assert!(drops <= 2000, "{choice:?}: {drops} drops of 2000 sent");
    }
    Ok(())
}

/// Per socket index: the source addresses seen and the number of datagrams.
type PerSocket = BTreeMap<usize, (BTreeSet<SocketAddr>, usize)>;

/// Receives on every socket of a group until `count` datagrams arrived; returns, per socket
/// index, the set of source addresses seen and the number of datagrams.
fn receive_group(receivers: &mut [Receiver], count: usize) -> Result<PerSocket, Box<dyn Error>> {
    let mut per_socket = PerSocket::new();
    let mut total = 0;
    let start = Instant::now();
    while total < count && start.elapsed() < DEADLINE {
        for (index, receiver) in receivers.iter_mut().enumerate() {
            total += receiver.recv_batch(Duration::from_millis(5), |d| {
                let entry = per_socket.entry(index).or_default();
                entry.0.insert(d.source);
                entry.1 += 1;
            })?;
        }
    }
    assert_eq!(total, count);
    Ok(per_socket)
}

fn open_group(cfg: &ReceiverConfig) -> Result<(Vec<Receiver>, SocketAddr), Box<dyn Error>> {
    let sockets = open_sockets(cfg)?;
    assert_eq!(sockets.len(), cfg.workers);
    let addr = sockets.first().ok_or("no socket")?.local_addr()?;
    for s in &sockets {
        assert_eq!(s.local_addr()?, addr, "every worker socket shares the port");
    }
    let receivers = sockets
        .into_iter()
        .map(|s| Receiver::new(s, cfg))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((receivers, addr))
}

#[test]
fn affinity_one_exporter_many_source_ports_reaches_one_socket() -> TestResult {
    for choice in choices() {
        let (mut receivers, addr) = open_group(&config("127.0.0.1:0", 2, choice)?)?;
        let senders = (0..8)
            .map(|_| UdpSocket::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        for round in 0..5 {
            for s in &senders {
                s.send_to(&payload(round), addr)?;
            }
        }
        let per_socket = receive_group(&mut receivers, 40)?;
        let expected = affinity_index(IpAddr::V4(Ipv4Addr::LOCALHOST), 2);
        assert_eq!(
            per_socket.len(),
            1,
            "{choice:?}: split over sockets: {per_socket:?}"
        );
        let (sources, n) = per_socket
            .get(&expected)
            .ok_or("not on the predicted socket")?;
        assert_eq!(*n, 40);
        assert_eq!(sources.len(), 8, "all 8 source ports seen on one socket");
    }
    Ok(())
}

#[test]
fn affinity_two_exporters_split_deterministically() -> TestResult {
    let one = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert_ne!(affinity_index(one, 2), affinity_index(two, 2));
    for choice in choices() {
        for bind in ["127.0.0.1:0", "0.0.0.0:0", "[::]:0"] {
            if bind.starts_with('[') && UdpSocket::bind("[::]:0").is_err() {
                continue;
            }
            let (mut receivers, addr) = open_group(&config(bind, 2, choice)?)?;
            let target = v4_localhost_to(addr);
            let mut senders = Vec::new();
            for ip in [one, two] {
                for _ in 0..4 {
                    senders.push(UdpSocket::bind(SocketAddr::new(ip, 0))?);
                }
            }
            for s in &senders {
                for i in 0..3 {
                    s.send_to(&payload(i), target)?;
                }
            }
            let per_socket = receive_group(&mut receivers, 24)?;
            for ip in [one, two] {
                let index = affinity_index(ip, 2);
                let (sources, n) = per_socket.get(&index).ok_or("socket got nothing")?;
                assert_eq!(*n, 12, "{choice:?} {bind}: {per_socket:?}");
                assert!(
                    sources.iter().all(|s| s.ip() == ip),
                    "{choice:?} {bind}: {per_socket:?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn affinity_ipv6_exporters_use_the_last_address_word() -> TestResult {
    if UdpSocket::bind("[::1]:0").is_err() {
        println!("skipping: no IPv6 loopback here");
        return Ok(());
    }
    for choice in choices() {
        let (mut receivers, addr) = open_group(&config("[::1]:0", 3, choice)?)?;
        let senders = (0..6)
            .map(|_| UdpSocket::bind("[::1]:0"))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &senders {
            s.send_to(b"v6", addr)?;
        }
        let per_socket = receive_group(&mut receivers, 6)?;
        let expected = affinity_index("::1".parse()?, 3);
        assert_eq!(
            per_socket.keys().copied().collect::<Vec<_>>(),
            vec![expected],
            "{choice:?}"
        );
    }
    Ok(())
}

#[test]
fn auto_choice_picks_a_backend_and_receivers_move_to_their_worker_thread() -> TestResult {
    let cfg = config("127.0.0.1:0", 1, ReceiverChoice::Auto)?;
    let socket = open_sockets(&cfg)?.pop().ok_or("no socket")?;
    let addr = socket.local_addr()?;
    // Created here, used (and dropped) on the worker thread, as the pipeline does.
    let mut receiver = Receiver::new(socket, &cfg)?;
    let expected = if probe_uring().is_ok() {
        ReceiverKind::Uring
    } else {
        ReceiverKind::Mmsg
    };
    assert_eq!(receiver.kind(), expected);
    assert_eq!(receiver.kind().as_str(), expected.as_str());
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.send_to(b"hello", addr)?;
    let got = std::thread::spawn(move || receive(&mut receiver, 1).map_err(|e| e.to_string()))
        .join()
        .map_err(|_| "receiver thread panicked")??;
    assert_eq!(
        got.first().map(|g| g.payload.as_slice()),
        Some(&b"hello"[..])
    );
    Ok(())
}

#[test]
fn uring_receiver_refuses_a_second_thread() -> TestResult {
    if let Err(reason) = probe_uring() {
        println!("skipping: io_uring unavailable ({reason})");
        return Ok(());
    }
    let (mut receiver, _) = open_one(&config("127.0.0.1:0", 1, ReceiverChoice::Uring)?)?;
    assert_eq!(receiver.recv_batch(Duration::ZERO, |_| {})?, 0);
    let (result, receiver) = std::thread::spawn(move || {
        let result = receiver
            .recv_batch(Duration::ZERO, |_| {})
            .map_err(|e| e.to_string());
        (result, receiver)
    })
    .join()
    .map_err(|_| "thread panicked")?;
    assert!(
        result.is_err(),
        "a second thread must get an error, got {result:?}"
    );
    drop(receiver); // back on the owner thread: cancels and frees normally
    Ok(())
}

#[test]
fn uring_receivers_drop_cleanly_while_armed_with_traffic() -> TestResult {
    if let Err(reason) = probe_uring() {
        println!("skipping: io_uring unavailable ({reason})");
        return Ok(());
    }
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    for round in 0..20 {
        let (mut receiver, addr) = open_one(&config("127.0.0.1:0", 1, ReceiverChoice::Uring)?)?;
        for i in 0..10 {
            sender.send_to(&payload(i), addr)?;
        }
        // Take part of it, leave the rest in flight, drop while armed.
        receiver.recv_batch(Duration::from_millis(50), |_| {})?;
        for i in 0..10 {
            sender.send_to(&payload(round + i), addr)?;
        }
        drop(receiver);
    }
    Ok(())
}

#[test]
fn more_datagrams_than_ring_buffers_arrive_in_order() -> TestResult {
    for choice in choices() {
        let mut cfg = config("127.0.0.1:0", 1, choice)?;
        cfg.rcvbuf = 32 << 20;
        cfg.buffer_size = 2048;
        let (mut receiver, addr) = open_one(&cfg)?;
        let sender = UdpSocket::bind("127.0.0.1:0")?;
        // Three times the io_uring ring (1024 buffers): the multishot receive runs dry
        // (ENOBUFS) and is re-armed; buffers are recycled batch after batch.
        const N: usize = 3000;
        for i in 0..N {
            let mut p = (i as u32).to_be_bytes().to_vec();
            p.extend_from_slice(&payload(i));
            sender.send_to(&p, addr)?;
        }
        let got = receive(&mut receiver, N)?;
        assert_eq!(got.len(), N, "{choice:?}");
        for (i, g) in got.iter().enumerate() {
            let index = g
                .payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            assert_eq!(index, Some(i as u32), "{choice:?}: order");
            assert_eq!(
                g.payload.get(4..),
                Some(&payload(i)[..]),
                "{choice:?}: datagram {i}"
            );
        }
        assert_eq!(receiver.kernel_drops(), 0, "{choice:?}");
        println!("{choice:?}: {N} datagrams, {} re-arms", receiver.rearms());
    }
    Ok(())
}
