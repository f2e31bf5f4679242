//! Worker socket setup: W UDP sockets in one SO_REUSEPORT group on the configured address, each
//! with the receive buffer the config asks for (SO_RCVBUFFORCE when privileged, else SO_RCVBUF
//! capped by net.core.rmem_max; what the kernel granted is logged), SO_RXQ_OVFL so every
//! datagram carries the socket's drop counter, and a classic BPF reuseport program that picks
//! the socket from the exporter's source address, so one exporter's datagrams (templates and
//! data, whatever their source ports) always reach the same worker. socket2 covers most options;
//! the three it does not wrap (SO_RCVBUFFORCE, SO_RXQ_OVFL, SO_ATTACH_REUSEPORT_CBPF) go through
//! one small `setsockopt` helper, and the socket's drop counter is read with one `getsockopt`
//! (SO_MEMINFO): the only unsafe code in this file. At shutdown [`close_intake`] attaches a
//! filter that refuses new datagrams, so the drain ends.
#![allow(unsafe_code)]
#![warn(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    clippy::missing_safety_doc
)]

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::ReceiverConfig;

/// Opens `cfg.workers` UDP sockets (at least one) bound to `cfg.bind` in one SO_REUSEPORT group.
/// With port 0 the first socket picks the port and the others join it. Each gets SO_RCVBUF and
/// SO_RXQ_OVFL; with more than one worker the group gets the exporter-affinity BPF program
/// (socket `i` of the returned vector receives the sources for which [`affinity_index`] is `i`).
pub fn open_sockets(cfg: &ReceiverConfig) -> io::Result<Vec<UdpSocket>> {
    let workers = cfg.workers.max(1);
    let mut sockets = Vec::with_capacity(workers);
    let mut bind = cfg.bind;
    ensure_port_free(bind)?;
    for i in 0..workers {
        let socket = open_one(bind, cfg.rcvbuf, i == 0)?;
        if i == 0 {
            // With port 0 the kernel chose a port: every other socket must join that one.
            bind.set_port(socket.local_addr()?.port());
        }
        sockets.push(socket);
    }
    if let Some(first) = sockets.first()
        && workers > 1
    {
        attach_affinity(first, bind.is_ipv6(), workers)?;
        log::info!(
            "{workers} sockets on {bind}: SO_REUSEPORT with exporter affinity (hash of the source address mod {workers})"
        );
    }
    Ok(sockets)
}

/// The index of the socket that receives datagrams from `source` in a group of `workers`,
/// exactly as the BPF program attached by [`open_sockets`] computes it (tests and the pipeline
/// use it to predict placement).
pub fn affinity_index(source: IpAddr, workers: usize) -> usize {
    let word = match source {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // A v4 exporter reaching a dual-stack socket arrives as an IPv4 packet.
            Some(v4) => u32::from(v4),
            None => {
                let o = v6.octets();
                u32::from_be_bytes([o[12], o[13], o[14], o[15]])
            }
        },
    };
    let folded = fold(word);
    let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
    (folded % workers) as usize
}

/// The hash the BPF program computes: fold the high bytes into the low ones so exporters that
/// differ only above the last octet (10.0.1.1, 10.0.2.1) still spread with an even `workers`.
fn fold(word: u32) -> u32 {
    let a = word ^ (word >> 16);
    a ^ (a >> 8)
}

/// Fails when another socket already holds `bind`'s port. Sockets with SO_REUSEPORT under the
/// same uid would otherwise silently join that socket's group (a second collector started on
/// the same port) and take part of its traffic; a socket without SO_REUSEPORT cannot join, so a
/// trial bind tells.
fn ensure_port_free(bind: SocketAddr) -> io::Result<()> {
    if bind.port() == 0 {
        return Ok(());
    }
    let trial = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if let SocketAddr::V6(v6) = bind
        && v6.ip().is_unspecified()
    {
        trial.set_only_v6(false)?;
    }
    trial.bind(&bind.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!("UDP {bind} is already in use (is another collector running?)"),
            )
        } else {
            e
        }
    })
}

fn open_one(bind: SocketAddr, rcvbuf: usize, log_buffer: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if let SocketAddr::V6(v6) = bind
        && v6.ip().is_unspecified()
    {
        // [::] also receives IPv4 exporters (as v4-mapped sources), whatever the sysctl default.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_port(true)?;
    if rcvbuf > 0 {
        set_rcvbuf(&socket, rcvbuf, log_buffer)?;
    }
    set_int_opt(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

/// Asks for `want` bytes of receive buffer: SO_RCVBUFFORCE first (needs CAP_NET_ADMIN, ignores
/// rmem_max), then SO_RCVBUF. The kernel doubles the request for its bookkeeping and reports
/// the doubled value; we log half of it (the usable size) and warn when rmem_max capped it.
fn set_rcvbuf(socket: &Socket, want: usize, log_it: bool) -> io::Result<()> {
    let want_int = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX / 2);
    let forced = match set_int_opt(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want_int) {
        Ok(()) => true,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOPROTOOPT)) => false,
        Err(e) => return Err(e),
    };
    if !forced {
        socket.set_recv_buffer_size(want)?;
    }
    let granted = socket.recv_buffer_size()? / 2;
    if log_it {
        let how = if forced {
            "SO_RCVBUFFORCE"
        } else {
            "SO_RCVBUF"
        };
        log::info!("receive buffer: asked {want} B ({how}), kernel granted {granted} B");
        if granted < want {
            let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "?".to_owned());
            log::warn!(
                "receive buffer capped at {granted} B of {want} B by net.core.rmem_max ({max}); \
                 raise it (sysctl -w net.core.rmem_max={want}) or run with CAP_NET_ADMIN"
            );
        }
    }
    Ok(())
}

/// Attaches the exporter-affinity program to the reuseport group of `socket`:
/// IPv4: `A = src; A = fold(A); A %= workers; return A`. IPv6/dual-stack: the version nibble
/// picks the IPv4 source (header offset 12) or the last word of the IPv6 source (the source is
/// bytes 8..24 of the IPv6 header, so offset 20).
fn attach_affinity(socket: &UdpSocket, ipv6: bool, workers: usize) -> io::Result<()> {
    let program = affinity_program(ipv6, workers)?;
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::other("BPF program too long"))?,
        filter: program.as_ptr().cast_mut(),
    };
    setsockopt(
        socket.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_REUSEPORT_CBPF,
        &fprog,
    )
}

fn affinity_program(ipv6: bool, workers: usize) -> io::Result<Vec<libc::sock_filter>> {
    const fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    let modulo = u32::try_from(workers).map_err(|_| io::Error::other("too many workers"))?;
    // Negative "network header" offsets are how classic BPF reaches the IP header here.
    let net = libc::SKF_NET_OFF as u32;
    let mut p = Vec::with_capacity(12);
    if ipv6 {
        // A = ip[0] >> 4; if A == 6 load the IPv6 source's last word, else the IPv4 source.
        p.push(stmt(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, net));
        p.push(stmt(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 4));
        p.push(jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 6, 0, 2));
        p.push(stmt(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            net.wrapping_add(20),
        ));
        p.push(stmt(libc::BPF_JMP | libc::BPF_JA, 1));
    }
    p.push(stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        net.wrapping_add(12),
    ));
    // fold: A ^= A >> 16; A ^= A >> 8 (X holds the previous A).
    for shift in [16, 8] {
        p.push(stmt(libc::BPF_MISC | libc::BPF_TAX, 0));
        p.push(stmt(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, shift));
        p.push(stmt(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0));
    }
    p.push(stmt(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, modulo));
    p.push(stmt(libc::BPF_RET | libc::BPF_A, 0));
    Ok(p)
}

/// Stops the kernel queueing further datagrams on `socket` (a socket filter that accepts
/// nothing), while what it already queued stays readable: at shutdown a worker drains exactly
/// what had arrived, however fast exporters keep sending. Datagrams refused by the filter count
/// in the socket's drop counter, like any other datagram the socket could not take.
pub fn close_intake(socket: &UdpSocket) -> io::Result<()> {
    let program = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: program.as_ptr().cast_mut(),
    };
    setsockopt(
        socket.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &fprog,
    )
}

/// The socket's drop counter now (`SO_MEMINFO`'s `SK_MEMINFO_DROPS`: the `drops` column of
/// /proc/net/udp, 32 bits). Unlike SO_RXQ_OVFL, which only arrives with the next datagram read
/// (and during a backlog that datagram was queued long before), this cannot lag.
pub fn socket_drops(socket: &UdpSocket) -> io::Result<u32> {
    let mut info = [0u32; 16];
    let mut len = libc::socklen_t::try_from(std::mem::size_of_val(&info))
        .map_err(|_| io::Error::other("option buffer too large"))?;
    // SAFETY: the fd is an open socket borrowed for the call; `info` is a writable buffer of
    // `len` bytes that outlives the call, and the kernel writes at most `len` bytes into it and
    // stores the length written in `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let at = usize::try_from(libc::SK_MEMINFO_DROPS).unwrap_or(usize::MAX);
    if (usize::try_from(len).unwrap_or(0) / 4) <= at {
        return Err(io::Error::other("SO_MEMINFO without a drop counter"));
    }
    info.get(at)
        .copied()
        .ok_or_else(|| io::Error::other("SO_MEMINFO without a drop counter"))
}

fn set_int_opt(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt(socket.as_fd(), level, name, &value)
}

/// `setsockopt(fd, level, name, value, sizeof value)` for an option whose argument is a plain
/// C value of type `T` (int, sock_fprog).
fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::other("option value too large"))?;
    // SAFETY: `fd` is an open socket (BorrowedFd); `value` points to `len` initialised bytes
    // that live for the call; the kernel only reads them (and, for sock_fprog, the filter array
    // it points to, which the caller keeps alive for the call and the kernel copies).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn closed_intake_keeps_what_was_queued_and_refuses_the_rest() -> io::Result<()> {
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        let to = rx.local_addr()?;
        let before = socket_drops(&rx)?;
        tx.send_to(b"one", to)?;
        tx.send_to(b"two", to)?;
        // Loopback delivery is synchronous: both are queued when send_to returns.
        close_intake(&rx)?;
        tx.send_to(b"late", to)?;
        rx.set_nonblocking(true)?;
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        while let Ok((n, _)) = rx.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(
            socket_drops(&rx)?.wrapping_sub(before),
            1,
            "the refused one"
        );
        Ok(())
    }

    #[test]
    fn affinity_splits_neighbouring_loopback_addresses() {
        let a = affinity_index(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 2);
        let b = affinity_index(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 2);
        assert_ne!(a, b);
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(affinity_index(mapped, 2), a);
        assert_eq!(affinity_index(IpAddr::V6(Ipv6Addr::LOCALHOST), 3), 1);
        assert_eq!(affinity_index(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 1), 0);
    }

    #[test]
    fn program_shapes() -> io::Result<()> {
        assert_eq!(affinity_program(false, 4)?.len(), 9);
        assert_eq!(affinity_program(true, 4)?.len(), 14);
        Ok(())
    }

    #[test]
    fn a_second_group_on_a_taken_port_is_refused() -> io::Result<()> {
        let mut cfg = ReceiverConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        cfg.workers = 2;
        cfg.rcvbuf = 0;
        let first = open_sockets(&cfg)?;
        let port = first
            .first()
            .map(|s| s.local_addr())
            .transpose()?
            .map_or(0, |a| a.port());
        cfg.bind.set_port(port);
        let err = open_sockets(&cfg).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::AddrInUse));
        drop(first);
        assert_eq!(
            open_sockets(&cfg)?.len(),
            2,
            "the port is free again once the group closes"
        );
        Ok(())
    }
}
