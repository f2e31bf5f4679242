//! recvmmsg(2) back-end: one syscall fills up to `batch_max` preallocated buffers. Everything the
//! kernel writes (payload buffers, source addresses, control messages, the mmsghdr/iovec arrays)
//! is allocated once in [`MmsgReceiver::new`] as boxed slices owned by the receiver; the
//! pointers inside the headers are rewritten from those boxes right before every call, so they
//! always point into live memory of this receiver, wherever the receiver has moved. Waiting is
//! poll(2) followed by a non-blocking recvmmsg (MSG_DONTWAIT), so a ZERO timeout is a pure drain
//! of what is queued. Datagrams are handed out as borrows valid for one callback; the buffers
//! are reused by the next call.
#![allow(unsafe_code)]
#![warn(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    clippy::missing_safety_doc
)]

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{Datagram, DropCounter, ReceiverConfig, UNKNOWN_SOURCE, parse_sockaddr, rxq_ovfl};

/// Room for one source address (the size of `sockaddr_storage`).
const NAME_BYTES: usize = std::mem::size_of::<libc::sockaddr_storage>();
/// Room for the control messages of one datagram: SO_RXQ_OVFL needs CMSG_SPACE(4) = 24 bytes;
/// the rest leaves space for one more small record so ours is never cut off (MSG_CTRUNC).
const CONTROL_BYTES: usize = 64;

/// One source-address slot, aligned like `sockaddr_storage`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct NameBuf([u8; NAME_BYTES]);

/// One control-message slot, aligned like `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct ControlBuf([u8; CONTROL_BYTES]);

/// recvmmsg receiver: the socket plus every buffer the kernel writes, allocated once.
pub(crate) struct MmsgReceiver {
    socket: UdpSocket,
    buffer_size: usize,
    /// `batch x buffer_size` payload bytes; entry i owns `[i*buffer_size, (i+1)*buffer_size)`.
    buffers: Box<[u8]>,
    names: Box<[NameBuf]>,
    controls: Box<[ControlBuf]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    pub(crate) drops: DropCounter,
    pub(crate) truncated: u64,
}

// SAFETY: the raw pointers inside `iovecs` and `headers` only ever point into heap memory owned
// by this same value (rewritten before each use in `prepare`); nothing is shared with another
// thread, so moving the whole receiver to another thread is sound. (It is not Sync, and needs
// not be.)
unsafe impl Send for MmsgReceiver {}

impl std::fmt::Debug for MmsgReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgReceiver")
            .field("socket", &self.socket)
            .field("buffer_size", &self.buffer_size)
            .field("batch", &self.headers.len())
            .field("drops", &self.drops)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

impl MmsgReceiver {
    pub(crate) fn new(socket: UdpSocket, cfg: &ReceiverConfig) -> io::Result<MmsgReceiver> {
        let buffer_size = cfg.buffer_bytes();
        let batch = cfg.batch_len();
        let total = batch
            .checked_mul(buffer_size)
            .ok_or_else(|| io::Error::other("receive buffers too large"))?;
        let empty_iovec = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: mmsghdr is a plain C struct (integers and raw pointers) for which all-zero
        // bytes is a valid value (null pointers, zero lengths).
        let empty_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Ok(MmsgReceiver {
            socket,
            buffer_size,
            buffers: vec![0u8; total].into_boxed_slice(),
            names: vec![NameBuf([0; NAME_BYTES]); batch].into_boxed_slice(),
            controls: vec![ControlBuf([0; CONTROL_BYTES]); batch].into_boxed_slice(),
            iovecs: vec![empty_iovec; batch].into_boxed_slice(),
            headers: vec![empty_header; batch].into_boxed_slice(),
            drops: DropCounter::default(),
            truncated: 0,
        })
    }

    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub(crate) fn recv_batch(
        &mut self,
        timeout: Duration,
        mut on_datagram: impl FnMut(&Datagram<'_>),
    ) -> io::Result<usize> {
        if !timeout.is_zero() && !self.wait_readable(timeout)? {
            return Ok(0);
        }
        self.prepare();
        let received = self.recvmmsg()?;
        let buffer_size = self.buffer_size;
        let entries = self
            .headers
            .iter()
            .zip(self.buffers.chunks_exact(buffer_size))
            .zip(self.names.iter().zip(self.controls.iter()))
            .take(received);
        for ((header, buffer), (name, control)) in entries {
            let msg = &header.msg_hdr;
            let name_len = (msg.msg_namelen as usize).min(NAME_BYTES);
            let control_len = msg.msg_controllen.min(CONTROL_BYTES);
            if let Some(drops) = control.0.get(..control_len).and_then(rxq_ovfl) {
                self.drops.update(drops);
            }
            let truncated = msg.msg_flags & libc::MSG_TRUNC != 0;
            let payload = if truncated {
                self.truncated += 1;
                &[][..]
            } else {
                buffer.get(..header.msg_len as usize).unwrap_or(&[])
            };
            let source = name
                .0
                .get(..name_len)
                .and_then(parse_sockaddr)
                .unwrap_or(UNKNOWN_SOURCE);
            on_datagram(&Datagram {
                source,
                payload,
                truncated,
            });
        }
        Ok(received)
    }

    /// poll(2) for readability; Ok(false) on timeout or EINTR.
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        // Round up so a sub-millisecond timeout still waits instead of spinning.
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that lives for the call (nfds = 1); the fd is open
        // (owned by `self.socket`).
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            };
        }
        Ok(rc > 0)
    }

    /// Points every header at its own iovec, payload buffer, name and control slot, and resets
    /// the lengths the kernel overwrote in the previous call.
    fn prepare(&mut self) {
        let buffer_size = self.buffer_size;
        let slots = self
            .headers
            .iter_mut()
            .zip(self.iovecs.iter_mut())
            .zip(self.buffers.chunks_exact_mut(buffer_size))
            .zip(self.names.iter_mut().zip(self.controls.iter_mut()));
        for (((header, iovec), buffer), (name, control)) in slots {
            iovec.iov_base = buffer.as_mut_ptr().cast();
            iovec.iov_len = buffer.len();
            let msg = &mut header.msg_hdr;
            msg.msg_iov = std::ptr::from_mut(iovec);
            msg.msg_iovlen = 1;
            msg.msg_name = name.0.as_mut_ptr().cast();
            msg.msg_namelen = NAME_BYTES as libc::socklen_t;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = CONTROL_BYTES;
            msg.msg_flags = 0;
            header.msg_len = 0;
        }
    }

    /// One non-blocking recvmmsg over the whole batch; 0 when nothing is queued or on EINTR.
    fn recvmmsg(&mut self) -> io::Result<usize> {
        let vlen = libc::c_uint::try_from(self.headers.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: `headers` holds `vlen` mmsghdr entries that `prepare` just pointed at
        // buffers owned by `self` with matching lengths (one iovec of `buffer_size` bytes, a
        // NAME_BYTES name slot, a CONTROL_BYTES control slot); all stay alive and unaliased for
        // the call, which only writes inside them. MSG_DONTWAIT: never blocks; a null timeout
        // is allowed.
        let rc = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc >= 0 {
            return Ok(usize::try_from(rc).unwrap_or(0).min(self.headers.len()));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(err),
        }
    }
}
