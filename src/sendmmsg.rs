//! Sending a batch of UDP datagrams to one address with one `sendmmsg(2)` call: `goflow bench`'s
//! transmit path. A syscall per datagram costs as much as building the datagram at full speed,
//! so the bench hands the kernel up to 64 at a time; runs of equal-sized datagrams that lie back
//! to back in the buffer go out as one UDP GSO message (`UDP_SEGMENT`, Linux 4.18+), which the
//! kernel splits into ordinary datagrams, so one trip through the stack carries many. Receivers
//! see plain datagrams either way. A kernel that refuses GSO turns it off for the sender.
//!
//! The one `unsafe` block outside `src/ingest/` lives here (opted in for this module only); it
//! passes pointers to memory this function owns or borrows for the duration of the call.
#![allow(unsafe_code)]
#![warn(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    clippy::missing_safety_doc
)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// Most segments the kernel accepts in one GSO send (UDP_MAX_SEGMENTS on older kernels).
const GSO_SEGMENTS_MAX: usize = 64;
/// GSO sends are capped by the 64 KiB IP datagram they start as.
const GSO_BYTES_MAX: usize = 65_000;

/// A control message carrying UDP_SEGMENT's u16 segment size, laid out as CMSG_SPACE(2) bytes:
/// the 16-byte header, the value at CMSG_DATA, padding to 8-byte alignment.
#[repr(C)]
#[derive(Clone, Copy)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

/// One sendmmsg message: a contiguous run of the buffer and, when it holds more than one
/// datagram, their segment size.
#[derive(Clone, Debug)]
struct Run {
    bytes: Range<usize>,
    segment: Option<u16>,
    /// Index of its first datagram in the caller's list.
    first: usize,
}

/// Sends batches from sockets. Remembers whether the kernel accepts UDP GSO.
#[derive(Debug)]
pub struct Sender {
    gso: bool,
}

impl Default for Sender {
    fn default() -> Self {
        Sender { gso: true }
    }
}

impl Sender {
    /// A sender that never uses GSO (one message per datagram).
    pub fn without_gso() -> Self {
        Sender { gso: false }
    }

    pub fn uses_gso(&self) -> bool {
        self.gso
    }

    /// Groups datagrams into runs: back to back in `buf`, the same length (the last may be
    /// shorter), at most 64 and 65000 bytes per run.
    fn runs(&self, datagrams: &[Range<usize>]) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::with_capacity(datagrams.len());
        let mut open: Option<(Run, usize, usize, bool)> = None; // run, segment, count, closed
        for (i, d) in datagrams.iter().enumerate() {
            let len = d.end.saturating_sub(d.start);
            if let Some((run, seg, count, closed)) = open.as_mut() {
                let fits = self.gso
                    && !*closed
                    && d.start == run.bytes.end
                    && len <= *seg
                    && len > 0
                    && *count < GSO_SEGMENTS_MAX
                    && run.bytes.len() + len <= GSO_BYTES_MAX
                    && u16::try_from(*seg).is_ok();
                if fits {
                    run.bytes.end = d.end;
                    *count += 1;
                    run.segment = Some(*seg as u16);
                    // A shorter datagram can only be the last segment.
                    *closed = len < *seg;
                    continue;
                }
            }
            if let Some((run, ..)) = open.take() {
                runs.push(run);
            }
            open = Some((
                Run {
                    bytes: d.clone(),
                    segment: None,
                    first: i,
                },
                len,
                1,
                false,
            ));
        }
        if let Some((run, ..)) = open {
            runs.push(run);
        }
        runs
    }

    /// Sends the datagrams `buf[d]` for every range `d` in `datagrams`, in order, from `sock` to
    /// `target`. Partial sends are resumed; `EINTR` and a momentarily full socket buffer are
    /// retried; a refused GSO send turns GSO off and is resent plainly; other errors return.
    pub fn send(
        &mut self,
        sock: &UdpSocket,
        target: SocketAddr,
        buf: &[u8],
        datagrams: &[Range<usize>],
    ) -> io::Result<()> {
        if datagrams.iter().any(|d| buf.get(d.clone()).is_none()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram range outside the buffer",
            ));
        }
        let runs = self.runs(datagrams);
        let addr = SockAddr::from(target);
        let mut cmsgs: Vec<SegmentCmsg> = runs
            .iter()
            .map(|r| SegmentCmsg {
                hdr: libc::cmsghdr {
                    // CMSG_LEN(2): header plus the u16.
                    cmsg_len: size_of::<libc::cmsghdr>() + size_of::<u16>(),
                    cmsg_level: libc::SOL_UDP,
                    cmsg_type: libc::UDP_SEGMENT,
                },
                segment: r.segment.unwrap_or(0),
                _pad: [0; 6],
            })
            .collect();
        let mut iovecs: Vec<libc::iovec> = runs
            .iter()
            .map(|r| {
                let bytes = buf.get(r.bytes.clone()).unwrap_or_default();
                libc::iovec {
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                }
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(cmsgs.iter_mut())
            .zip(&runs)
            .map(|((iov, cmsg), run)| {
                let (control, controllen) = if run.segment.is_some() {
                    (
                        std::ptr::from_mut(cmsg).cast::<libc::c_void>(),
                        size_of::<SegmentCmsg>(),
                    )
                } else {
                    (std::ptr::null_mut(), 0)
                };
                libc::mmsghdr {
                    msg_hdr: libc::msghdr {
                        msg_name: addr.as_ptr().cast_mut().cast(),
                        msg_namelen: addr.len(),
                        msg_iov: iov,
                        msg_iovlen: 1,
                        msg_control: control,
                        msg_controllen: controllen,
                        msg_flags: 0,
                    },
                    msg_len: 0,
                }
            })
            .collect();
        let fd = sock.as_raw_fd();
        let mut sent = 0usize;
        while sent < msgs.len() {
            let Some(rest) = msgs.get_mut(sent..) else {
                break;
            };
            let n = rest.len().min(libc::c_uint::MAX as usize) as libc::c_uint;
            // SAFETY: `rest` points to `n` initialised mmsghdr structs that stay alive and
            // unmoved for the call (`msgs`, `iovecs` and `cmsgs` are not touched until it
            // returns). Each msg_name points to `addr` (a valid sockaddr of msg_namelen bytes),
            // each msg_iov to one iovec describing a range of `buf` checked above, each
            // msg_control to null or to one SegmentCmsg of msg_controllen bytes laid out as
            // CMSG_SPACE(2). The kernel reads those and writes only msg_len; `fd` is an open UDP
            // socket borrowed from `sock`.
            let r = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), n, 0) };
            if r >= 0 {
                sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => std::thread::yield_now(),
                _ => {
                    let refused = matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    );
                    match runs.get(sent) {
                        Some(run) if refused && run.segment.is_some() && self.gso => {
                            log::info!("UDP GSO refused ({e}); sending one datagram per message");
                            self.gso = false;
                            let rest = datagrams.get(run.first..).unwrap_or_default();
                            return self.send(sock, target, buf, rest);
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ranges(lens: &[usize]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut buf = Vec::new();
        let mut r = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            let s = buf.len();
            buf.extend(std::iter::repeat_n(i as u8, l));
            r.push(s..buf.len());
        }
        (buf, r)
    }

    #[test]
    fn runs_group_equal_sizes_and_a_shorter_last() {
        let (_, r) = ranges(&[100, 100, 100, 60, 100, 200, 200]);
        let runs = Sender::default().runs(&r);
        let got: Vec<(usize, Option<u16>)> =
            runs.iter().map(|x| (x.bytes.len(), x.segment)).collect();
        assert_eq!(got, vec![(360, Some(100)), (100, None), (400, Some(200))]);
        let plain = Sender::without_gso().runs(&r);
        assert_eq!(plain.len(), 7);
    }

    fn send_and_receive(sender: &mut Sender, lens: &[usize]) {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (buf, r) = ranges(lens);
        sender
            .send(&tx, rx.local_addr().expect("addr"), &buf, &r)
            .expect("send");
        let mut got = [0u8; 2048];
        for (i, &l) in lens.iter().enumerate() {
            let (n, from) = rx
                .recv_from(&mut got)
                .unwrap_or_else(|e| panic!("datagram {i} of {}: {e}", lens.len()));
            assert_eq!(n, l, "datagram {i}");
            assert!(got[..n].iter().all(|&b| b == i as u8), "datagram {i}");
            assert_eq!(from, tx.local_addr().expect("addr"));
        }
    }

    #[test]
    fn batches_arrive_as_separate_datagrams_in_order() {
        let lens: Vec<usize> = (0..40)
            .map(|i| if i % 7 == 0 { 300 } else { 1400 })
            .collect();
        let mut gso = Sender::default();
        send_and_receive(&mut gso, &lens);
        // Linux 4.18+ accepts UDP_SEGMENT; this repository targets newer kernels only.
        assert!(gso.uses_gso(), "the kernel refused UDP GSO");
        send_and_receive(&mut Sender::without_gso(), &lens);
        let mut s = Sender::default();
        s.send(
            &UdpSocket::bind("127.0.0.1:0").expect("bind"),
            "127.0.0.1:9".parse().expect("addr"),
            &[],
            &[],
        )
        .expect("empty batch");
        assert!(
            s.send(
                &UdpSocket::bind("127.0.0.1:0").expect("bind"),
                "127.0.0.1:9".parse().expect("addr"),
                &[1, 2],
                std::slice::from_ref(&(0..3)),
            )
            .is_err()
        );
    }
}
