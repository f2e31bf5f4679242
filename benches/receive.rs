//! Receive back-ends on loopback, io_uring and recvmmsg in one matrix: each iteration queues N
//! datagrams (200 B or 1400 B) into a socket with a large receive buffer (untimed), then times
//! draining all N through `Receiver::recv_batch` (batches of 256, ZERO timeout). This is the
//! pure receive-path cost per datagram (stack notes section 1 "drain"), not a live rate: on
//! loopback the sender, which also runs the softirq, is the bottleneck of a live test.
//! Throughput is in datagrams (`Throughput::Elements`).

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use goflow::ingest::{Receiver, ReceiverChoice, ReceiverConfig, open_sockets, probe_uring};

/// Datagrams per timed drain: large enough that the io_uring ring (1024 buffers) and one
/// recvmmsg batch are small against it.
const DRAIN_DATAGRAMS: usize = 4096;
/// Receive buffer requested so N datagrams fit (SO_RCVBUFFORCE as root; otherwise capped by
/// net.core.rmem_max and the sends below would be dropped, which the bench detects).
const RCVBUF_BYTES: usize = 64 << 20;

fn receiver(choice: ReceiverChoice) -> Option<(Receiver, SocketAddr)> {
    let mut cfg = ReceiverConfig::new("127.0.0.1:0".parse().ok()?);
    cfg.workers = 1;
    cfg.rcvbuf = RCVBUF_BYTES;
    cfg.choice = choice;
    let socket = open_sockets(&cfg).ok()?.pop()?;
    let addr = socket.local_addr().ok()?;
    Some((Receiver::new(socket, &cfg).ok()?, addr))
}

/// Drains `count` datagrams; returns how many arrived (fewer only if the kernel dropped some).
fn drain(receiver: &mut Receiver, count: usize) -> usize {
    let mut got = 0;
    let mut bytes = 0usize;
    let deadline = Instant::now() + Duration::from_secs(2);
    while got < count && Instant::now() < deadline {
        let timeout = if got == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(1)
        };
        match receiver.recv_batch(timeout, |d| bytes += d.payload.len()) {
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    black_box(bytes);
    got
}

fn bench_receive(c: &mut Criterion) {
    let mut choices = vec![ReceiverChoice::Mmsg];
    match probe_uring() {
        Ok(()) => choices.insert(0, ReceiverChoice::Uring),
        Err(reason) => eprintln!("io_uring unavailable ({reason}): benchmarking recvmmsg only"),
    }
    let mut group = c.benchmark_group("receive_drain");
    group.throughput(Throughput::Elements(DRAIN_DATAGRAMS as u64));
    for size in [200usize, 1400] {
        for &choice in &choices {
            let Some((mut rx, addr)) = receiver(choice) else {
                eprintln!("cannot open a {choice:?} receiver; skipped");
                continue;
            };
            let Ok(sender) = UdpSocket::bind("127.0.0.1:0") else {
                continue;
            };
            let payload = vec![0x5Au8; size];
            let name = format!("{}/{size}B", rx.kind().as_str());
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        for _ in 0..DRAIN_DATAGRAMS {
                            let _ = sender.send_to(&payload, addr);
                        }
                        let start = Instant::now();
                        let got = drain(&mut rx, DRAIN_DATAGRAMS);
                        total += start.elapsed();
                        assert_eq!(got, DRAIN_DATAGRAMS, "datagrams lost: raise the rcvbuf");
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_receive);
criterion_main!(benches);
