//! `receiver: auto` on a kernel that refuses io_uring: with `kernel.io_uring_disabled = 2`
//! (Linux 6.6+; io_uring_setup fails with EPERM for every process) the probe fails, every
//! worker runs on recvmmsg and still receives, and `receiver: uring` is refused with the
//! kernel's reason. The sysctl is global, so this is the only test in its binary (cargo runs
//! test binaries one after another) and the old value is restored even when an assertion
//! fails. Needs root, as CI has; without it the test fails and says so.

use std::error::Error;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use goflow::ingest::{
    Receiver, ReceiverChoice, ReceiverConfig, ReceiverKind, open_sockets, probe_uring,
};

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Sets `kernel.io_uring_disabled` and puts the old value back when dropped.
struct UringDisabled {
    old: String,
}

impl UringDisabled {
    fn set() -> Result<UringDisabled, Box<dyn Error>> {
        let old = std::fs::read_to_string(SYSCTL)
            .map_err(|e| format!("{SYSCTL}: {e} (the kernel needs to be 6.6 or newer)"))?;
        std::fs::write(SYSCTL, "2").map_err(|e| format!("{SYSCTL}: {e} (this test needs root)"))?;
        Ok(UringDisabled { old })
    }
}

impl Drop for UringDisabled {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, self.old.trim()) {
            eprintln!("could not restore {SYSCTL} to {}: {e}", self.old.trim());
        }
    }
}

#[test]
fn auto_falls_back_to_recvmmsg_when_the_kernel_refuses_io_uring() -> Result<(), Box<dyn Error>> {
    let guard = UringDisabled::set()?;
    let old = guard.old.trim().to_owned();

    let reason = probe_uring().expect_err("io_uring is disabled");
    assert!(reason.contains("not permitted"), "{reason}");

    let mut cfg = ReceiverConfig::new("127.0.0.1:0".parse()?);
    cfg.workers = 1;
    cfg.choice = ReceiverChoice::Uring;
    let socket = open_sockets(&cfg)?.pop().ok_or("no socket")?;
    let err = Receiver::new(socket, &cfg).expect_err("uring is refused");
    assert!(err.to_string().contains("not permitted"), "{err}");

    cfg.choice = ReceiverChoice::Auto;
    let socket = open_sockets(&cfg)?.pop().ok_or("no socket")?;
    let addr = socket.local_addr()?;
    let mut receiver = Receiver::new(socket, &cfg)?;
    assert_eq!(receiver.kind(), ReceiverKind::Mmsg);

    let sender = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..10u8 {
        sender.send_to(&[i; 100], addr)?;
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 10 && Instant::now() < deadline {
        receiver.recv_batch(Duration::from_millis(50), |d| got.push(d.payload.to_vec()))?;
    }
    assert_eq!(got, (0..10u8).map(|i| vec![i; 100]).collect::<Vec<_>>());

    drop(guard);
    assert_eq!(std::fs::read_to_string(SYSCTL)?.trim(), old, "restored");
    Ok(())
}
