//! io_uring back-end: one multishot `RecvMsgMulti` (kernel >= 6.0) armed on the worker socket,
//! picking buffers from a provided buffer ring (PBUF_RING, >= 5.19) of ~1024 buffers. Each
//! completion names the buffer the kernel filled (header, source address, control messages,
//! payload: `RecvMsgOut` layout); [`UringReceiver::recv_batch`] hands those datagrams to the
//! callback and only after the whole batch returns the buffers to the ring, publishing the tail
//! once. The operation is re-armed when the kernel ends it (ENOBUFS when the ring ran dry, or
//! any completion without the MORE flag).
//!
//! Waiting. The ring is set up DEFER_TASKRUN (6.1; COOP_TASKRUN before): the kernel copies
//! datagrams into buffers only inside our `io_uring_enter`, never interrupting the worker while
//! it decodes, so one wake-up is one batch. It hands over at most 32 datagrams per run of that
//! work, so a batch re-enters (without waiting) while the TASKRUN flag says more is ready.
//! Timeouts are EXT_ARG waits (a timespec on the enter call); ZERO never waits. DEFER_TASKRUN
//! needs SINGLE_ISSUER: the ring starts disabled and the first `recv_batch` enables it on the
//! calling thread, which then owns it.
//!
//! Memory and drop order. The kernel reads the ring entries and the `msghdr`, and writes the
//! buffers, while the operation is armed, so all three live in heap allocations at stable
//! addresses owned by the receiver ([`BufRing`] holds the ring and the buffer slab, the msghdr
//! is boxed). A buffer has one owner at a time: the kernel (in the ring) or, from its completion
//! until the end of the batch, this receiver through a move-only [`Lease`]. `Drop` first cancels
//! the armed operation and waits for its final completion, then unregisters the buffer ring;
//! only then are the ring fd, the msghdr and the buffers freed (field order). If the kernel
//! cannot be shown to be done with them, the msghdr and buffers are leaked rather than freed.
#![allow(unsafe_code)]
#![warn(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    clippy::missing_safety_doc
)]

use std::alloc::Layout;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};

use super::{Datagram, DropCounter, ReceiverConfig, UNKNOWN_SOURCE, parse_sockaddr, rxq_ovfl};

/// Buffers in the provided ring by default (stack notes: 64 caused thousands of re-arms per
/// 200k datagrams; 1024 made them rare). Always a power of two and more than one batch.
const URING_BUFFERS: usize = 1024;
/// Buffer group id of our ring (one ring per io_uring instance, so any constant works).
const BUF_GROUP: u16 = 7;
/// user_data of the multishot receive and of its cancellation.
const RECV_UD: u64 = 1;
const CANCEL_UD: u64 = 2;
/// Source-address room in each buffer (sockaddr_in6 is 28 bytes; 32 keeps what follows aligned).
const NAME_BYTES: usize = 32;
/// Control-message room in each buffer: CMSG_SPACE(4) = 24 for SO_RXQ_OVFL, rounded up.
const CONTROL_BYTES: usize = 32;
/// Bytes before the payload in every buffer: `io_uring_recvmsg_out` (16) + name + control.
const HEADER_BYTES: usize = 16 + NAME_BYTES + CONTROL_BYTES;
/// How long `Drop` waits for the kernel to confirm the cancellation.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// The provided buffer ring and its buffers: `entries` ring slots (16-byte `BufRingEntry`,
/// page-aligned as the kernel requires) and one slab of `entries x stride` bytes. Both are
/// raw allocations because the kernel reads and writes them behind Rust's back; they are only
/// touched through raw pointers, except the slices handed out under a [`Lease`].
struct BufRing {
    ring: NonNull<types::BufRingEntry>,
    ring_layout: Layout,
    slab: NonNull<u8>,
    slab_layout: Layout,
    entries: u16,
    /// Bytes the kernel may fill per buffer (header room + `buffer_size`, exactly, so a
    /// larger datagram is reported truncated).
    buf_len: usize,
    /// Distance between buffers in the slab (`buf_len` rounded up to a cache line).
    stride: usize,
    /// Our copy of the tail (the next slot we fill), published to the kernel in `publish`.
    tail: u16,
    /// `true` while a buffer is the kernel's (in the ring); `false` while a lease holds it.
    in_ring: Box<[bool]>,
}

/// The right to read one kernel-filled buffer until it is given back. Move-only: exactly one
/// exists per buffer the kernel handed us.
#[derive(Debug)]
struct Lease {
    bid: u16,
}

impl BufRing {
    fn new(entries: u16, buf_len: usize) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::other(
                "buffer ring size must be a power of two <= 32768",
            ));
        }
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let stride = buf_len.next_multiple_of(64);
        let slab_size = usize::from(entries)
            .checked_mul(stride)
            .ok_or_else(|| io::Error::other("buffer slab too large"))?;
        // Alignment 16, not more: std's `alloc_zeroed` is calloc only up to the malloc alignment;
        // above it, it is posix_memalign + memset, which would make every page of the slab
        // (2 x 64 MiB with two workers) resident at start. calloc maps fresh zero pages lazily.
        let slab_layout = Layout::from_size_align(slab_size, 16).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size (entries >= 1, 16-byte entries).
        let ring = NonNull::new(unsafe { std::alloc::alloc_zeroed(ring_layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: non-zero size (entries >= 1, buf_len > HEADER_BYTES). With the layout above
        // this is calloc: untouched buffers cost no resident memory.
        let slab = match NonNull::new(unsafe { std::alloc::alloc_zeroed(slab_layout) }) {
            Some(slab) => slab,
            None => {
                // SAFETY: `ring` was allocated just above with `ring_layout` and is unused.
                unsafe { std::alloc::dealloc(ring.as_ptr(), ring_layout) };
                return Err(io::ErrorKind::OutOfMemory.into());
            }
        };
        let mut bufs = BufRing {
            ring: ring.cast(),
            ring_layout,
            slab,
            slab_layout,
            entries,
            buf_len,
            stride,
            tail: 0,
            in_ring: vec![false; usize::from(entries)].into_boxed_slice(),
        };
        for bid in 0..entries {
            bufs.give_back(Lease { bid });
        }
        bufs.publish();
        Ok(bufs)
    }

    /// The kernel handed us buffer `bid`: take it out of the ring. None if `bid` is out of
    /// range or already leased (a kernel contract violation; never trusted blindly).
    fn take(&mut self, bid: u16) -> Option<Lease> {
        let slot = self.in_ring.get_mut(usize::from(bid))?;
        if !*slot {
            return None;
        }
        *slot = false;
        Some(Lease { bid })
    }

    /// The first `len` bytes of a leased buffer (clamped to the buffer).
    fn bytes(&self, lease: &Lease, len: usize) -> &[u8] {
        let len = len.min(self.buf_len);
        let start = usize::from(lease.bid) * self.stride;
        // SAFETY: `lease.bid < entries` (checked in `take`) and `len <= buf_len <= stride`, so
        // `start + len <= entries * stride`, inside the slab allocation; the kernel wrote these bytes before posting the
        // completion and will not write them again until the buffer is back in the ring, which
        // needs the lease (moved into `give_back`), so nothing writes while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.slab.as_ptr().wrapping_add(start), len) }
    }

    /// Puts a buffer back into the ring slot at the tail; the kernel sees it after `publish`.
    fn give_back(&mut self, lease: Lease) {
        let bid = lease.bid;
        let Some(slot) = self.in_ring.get_mut(usize::from(bid)) else {
            return;
        };
        *slot = true;
        let index = usize::from(self.tail & (self.entries - 1));
        let addr = self
            .slab
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.stride) as u64;
        // SAFETY: `index < entries`, inside the ring allocation. The slot at our tail is not
        // one the kernel reads (it only reads between its head and the published tail, and at
        // most `entries` buffers exist, all accounted for by `in_ring`), so writing it races
        // with nothing; the tail store in `publish` (Release) makes it visible.
        let entry = unsafe { &mut *self.ring.as_ptr().wrapping_add(index) };
        entry.set_addr(addr);
        entry.set_len(u32::try_from(self.buf_len).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes every slot written since the last call (one Release store per batch).
    fn publish(&self) {
        // SAFETY: `ring` is the base of a live ring of `entries` BufRingEntry values; `tail`
        // returns a pointer to the tail field that overlays the first entry's `resv`.
        let tail = unsafe { types::BufRingEntry::tail(self.ring.as_ptr()) };
        // SAFETY: the tail field is a naturally aligned u16 inside our allocation that the
        // kernel reads concurrently, so it must be accessed atomically; AtomicU16 has the size
        // and alignment of u16.
        let tail = unsafe { &*tail.cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts; `UringReceiver::drop` only
        // lets a BufRing drop once no operation is armed and the ring is unregistered.
        unsafe { std::alloc::dealloc(self.slab.as_ptr(), self.slab_layout) };
        // SAFETY: as above, for the ring entries.
        unsafe { std::alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout) };
    }
}

/// The io_uring receiver of one worker. Field order is drop order: the ring (its fd) goes
/// before the msghdr and the buffers it points to, and `Drop` has cancelled the operation and
/// unregistered the buffer ring before any of them.
pub(crate) struct UringReceiver {
    ring: IoUring,
    /// Read by the kernel when the receive is armed (name and control lengths); `None` only
    /// after `Drop` decided to leak it.
    msghdr: Option<Box<libc::msghdr>>,
    bufs: Option<BufRing>,
    socket: UdpSocket,
    /// A multishot receive is armed (pushed; it stays armed until a completion without MORE).
    armed: bool,
    /// The ring was set up SINGLE_ISSUER (+ DEFER_TASKRUN, R_DISABLED): only `owner` may use it.
    single_issuer: bool,
    /// The thread that enabled the ring (first `recv_batch`); None before.
    owner: Option<std::thread::ThreadId>,
    batch_max: usize,
    /// Leases of the current batch, given back when it ends (capacity `batch_max`).
    leased: Vec<Lease>,
    pub(crate) drops: DropCounter,
    pub(crate) truncated: u64,
    pub(crate) rearms: u64,
}

// SAFETY: the raw pointers (buffer ring, slab, msghdr) point into allocations owned by this
// value alone and are used only through `&mut self`, so moving the receiver moves their only
// user. The kernel's view of that memory does not depend on the thread; which thread may
// submit is the kernel's SINGLE_ISSUER rule, enforced at run time by `bind_thread` (an error,
// never unsoundness). IoUring itself is Send.
unsafe impl Send for UringReceiver {}

impl std::fmt::Debug for UringReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReceiver")
            .field("socket", &self.socket)
            .field("armed", &self.armed)
            .field("batch_max", &self.batch_max)
            .field("drops", &self.drops)
            .field("truncated", &self.truncated)
            .field("rearms", &self.rearms)
            .finish_non_exhaustive()
    }
}

impl UringReceiver {
    /// Sets up the ring and buffers for `socket`. On failure the socket is handed back (so
    /// `ReceiverChoice::Auto` can fall back to recvmmsg on it).
    pub(crate) fn new(
        socket: UdpSocket,
        cfg: &ReceiverConfig,
    ) -> Result<UringReceiver, (io::Error, UdpSocket)> {
        let batch_max = cfg.batch_len();
        // Larger than what one batch holds leased, so the kernel always has buffers left.
        let entries = URING_BUFFERS.max((2 * batch_max).next_power_of_two());
        let entries = u16::try_from(entries).unwrap_or(32768);
        Self::with_buffers(socket, cfg.buffer_bytes(), batch_max, entries)
    }

    fn with_buffers(
        socket: UdpSocket,
        buffer_size: usize,
        batch_max: usize,
        entries: u16,
    ) -> Result<UringReceiver, (io::Error, UdpSocket)> {
        let (ring, single_issuer, bufs, msghdr) = match Self::setup(buffer_size, entries) {
            Ok(parts) => parts,
            Err(e) => return Err((e, socket)),
        };
        Ok(UringReceiver {
            ring,
            msghdr: Some(msghdr),
            bufs: Some(bufs),
            socket,
            armed: false,
            single_issuer,
            owner: None,
            batch_max,
            leased: Vec::with_capacity(batch_max),
            drops: DropCounter::default(),
            truncated: 0,
            rearms: 0,
        })
    }

    /// The ring (and whether it is single-issuer), the registered buffer ring and the msghdr.
    /// Nothing is armed yet, so dropping these in tuple order on a later error is fine.
    fn setup(
        buffer_size: usize,
        entries: u16,
    ) -> io::Result<(IoUring, bool, BufRing, Box<libc::msghdr>)> {
        let cq_entries = u32::from(entries) * 2;
        // DEFER_TASKRUN (6.1, needs SINGLE_ISSUER): the kernel copies datagrams into buffers
        // only when we wait for completions, in batches, never interrupting the worker while
        // it decodes. SINGLE_ISSUER binds the ring to the thread that enables it, so it starts
        // disabled (R_DISABLED) and the first `recv_batch` enables it on the worker's thread.
        // Older kernels: COOP_TASKRUN (5.19; no IPI per completion, the work runs on our next
        // kernel entry). The TASKRUN flag tells `submit` when such work is pending.
        let deferred = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_r_disabled()
            .setup_cqsize(cq_entries)
            .build(8);
        let (ring, single_issuer) = match deferred {
            Ok(ring) => (ring, true),
            Err(_) => {
                let ring = IoUring::builder()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .setup_cqsize(cq_entries)
                    .build(8)
                    .map_err(|e| context(e, "io_uring_setup"))?;
                (ring, false)
            }
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without EXT_ARG (kernel < 5.11)",
            ));
        }
        let bufs = BufRing::new(entries, HEADER_BYTES + buffer_size)?;
        // SAFETY: `bufs.ring` points to `entries` page-aligned BufRingEntry slots that stay
        // allocated until after `unregister_buf_ring` (or forever, see Drop): the BufRing is
        // stored in the receiver next to the ring and `Drop` unregisters before freeing it.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring.as_ptr() as u64,
                entries,
                BUF_GROUP,
                0,
            )
        }
        .map_err(|e| context(e, "register_buf_ring"))?;
        // SAFETY: msghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        // Multishot recvmsg uses only these two lengths: the fixed room for the source
        // address and for control messages (SO_RXQ_OVFL) in every buffer.
        msghdr.msg_namelen = NAME_BYTES as libc::socklen_t;
        msghdr.msg_controllen = CONTROL_BYTES;
        Ok((ring, single_issuer, bufs, msghdr))
    }

    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub(crate) fn recv_batch(
        &mut self,
        timeout: Duration,
        mut on_datagram: impl FnMut(&Datagram<'_>),
    ) -> io::Result<usize> {
        self.bind_thread()?;
        if !self.armed {
            self.arm()?;
        }
        if self.ring.completion().is_empty() {
            self.wait(timeout)?;
        } else if !self.ring.submission().is_empty() {
            self.ring.submit()?;
        }
        let (mut received, mut error) = self.reap(&mut on_datagram, self.batch_max);
        // The kernel hands over at most 32 datagrams per run of its task work (multishot retry
        // limit) and leaves the rest as pending work (TASKRUN flag): run it again, without
        // waiting, until the batch is full or nothing more is ready.
        while received > 0 && received < self.batch_max && self.ring.submission().taskrun() {
            if let Err(e) = self.ring.submit() {
                error = Some(e);
                break;
            }
            let (more, more_error) = self.reap(&mut on_datagram, self.batch_max - received);
            error = more_error.or(error);
            if more == 0 {
                break;
            }
            received += more;
        }
        // Every buffer of the batch goes back, whatever happened, before anything can fail.
        if let Some(bufs) = self.bufs.as_mut() {
            for lease in self.leased.drain(..) {
                bufs.give_back(lease);
            }
            bufs.publish();
        }
        if !self.armed {
            // Ended (ENOBUFS, or no MORE): re-arm now so the kernel fills buffers while the
            // caller processes this batch.
            self.rearms += 1;
            self.arm()?;
            self.ring.submit()?;
        }
        match error {
            Some(err) if received == 0 => Err(err),
            Some(err) => {
                log::warn!("io_uring receive: {err}");
                Ok(received)
            }
            None => Ok(received),
        }
    }

    /// A SINGLE_ISSUER ring belongs to the thread that enables it: enable it on first use and
    /// refuse any other thread afterwards (the kernel would fail its calls with EEXIST).
    fn bind_thread(&mut self) -> io::Result<()> {
        if !self.single_issuer {
            return Ok(());
        }
        let me = std::thread::current().id();
        match self.owner {
            Some(owner) if owner == me => Ok(()),
            Some(_) => Err(io::Error::other(
                "io_uring receiver used from a second thread (each worker keeps its own)",
            )),
            None => {
                self.ring
                    .submitter()
                    .register_enable_rings()
                    .map_err(|e| context(e, "io_uring enable"))?;
                self.owner = Some(me);
                Ok(())
            }
        }
    }

    /// Pushes the multishot receive (submitted by the next enter).
    fn arm(&mut self) -> io::Result<()> {
        let Some(msghdr) = self.msghdr.as_deref() else {
            return Err(io::Error::other("receiver is shutting down"));
        };
        let entry = opcode::RecvMsgMulti::new(
            types::Fd(self.socket.as_raw_fd()),
            std::ptr::from_ref(msghdr),
            BUF_GROUP,
        )
        .build()
        .user_data(RECV_UD);
        self.push(&entry)?;
        self.armed = true;
        Ok(())
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        if self.ring.submission().is_full() {
            self.ring.submit()?;
        }
        // SAFETY: the entries we push reference only the socket fd (owned by `self`, closed
        // after the ring) and the boxed msghdr (stable address; dropped after the ring, and
        // only once no receive is armed, see Drop). The buffers come from the registered ring.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    /// Submits what is queued and waits up to `timeout` for a completion. ZERO enters once
    /// without waiting: it submits, and runs the kernel's pending receive work when the TASKRUN
    /// flag is up, so datagrams already queued on the socket become completions.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let result = if timeout.is_zero() {
            self.ring.submit()
        } else {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes up to `limit` receive completions, calling the callback for each datagram;
    /// their buffers stay leased in `self.leased`. Returns the count and the last error the
    /// kernel reported (other than ENOBUFS, which only means "re-arm").
    fn reap(
        &mut self,
        on_datagram: &mut impl FnMut(&Datagram<'_>),
        limit: usize,
    ) -> (usize, Option<io::Error>) {
        let UringReceiver {
            ring,
            msghdr,
            bufs,
            armed,
            leased,
            drops,
            truncated,
            ..
        } = self;
        let (Some(msghdr), Some(bufs)) = (msghdr.as_deref(), bufs.as_mut()) else {
            return (0, None);
        };
        let mut received = 0;
        let mut error = None;
        let mut completions = ring.completion();
        while received < limit {
            let Some(cqe) = completions.next() else { break };
            if cqe.user_data() != RECV_UD {
                continue;
            }
            let flags = cqe.flags();
            if !cqueue::more(flags) {
                *armed = false;
            }
            let Ok(len) = usize::try_from(cqe.result()) else {
                if cqe.result() != -libc::ENOBUFS {
                    error = Some(io::Error::from_raw_os_error(-cqe.result()));
                }
                continue;
            };
            let Some(lease) = cqueue::buffer_select(flags).and_then(|bid| bufs.take(bid)) else {
                error = Some(io::Error::other(
                    "io_uring completion without a buffer we lent",
                ));
                continue;
            };
            let bytes = bufs.bytes(&lease, len);
            let datagram = match types::RecvMsgOut::parse(bytes, msghdr) {
                Ok(out) => {
                    if let Some(reported) = rxq_ovfl(out.control_data()) {
                        drops.update(reported);
                    }
                    let source = parse_sockaddr(out.name_data()).unwrap_or(UNKNOWN_SOURCE);
                    // The payload follows the fixed header, name and control fields; slice it
                    // from `bytes` (RecvMsgOut's accessors borrow the parser, not the buffer).
                    let end = HEADER_BYTES + out.payload_data().len();
                    match bytes.get(HEADER_BYTES..end) {
                        Some(payload) if !out.is_payload_truncated() => Datagram {
                            source,
                            payload,
                            truncated: false,
                        },
                        _ => Datagram {
                            source,
                            payload: &[],
                            truncated: true,
                        },
                    }
                }
                // Shorter than the header: cannot happen for a receive completion; counted
                // as a truncated datagram so it is visible, never parsed.
                Err(()) => Datagram {
                    source: UNKNOWN_SOURCE,
                    payload: &[],
                    truncated: true,
                },
            };
            if datagram.truncated {
                *truncated += 1;
            }
            on_datagram(&datagram);
            leased.push(lease);
            received += 1;
        }
        (received, error)
    }

    /// Cancels the armed receive and waits (bounded) for its final completion. true when no
    /// receive is armed any more, so the kernel will not touch the msghdr or buffers again.
    fn quiesce(&mut self) -> bool {
        if !self.armed {
            return true;
        }
        if self.single_issuer && self.owner != Some(std::thread::current().id()) {
            // Only the owner thread may submit the cancellation.
            return false;
        }
        let cancel = opcode::AsyncCancel::new(RECV_UD)
            .build()
            .user_data(CANCEL_UD);
        if self.push(&cancel).is_err() {
            return false;
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        while self.armed && Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(100));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(_) => return false,
            }
            for cqe in self.ring.completion() {
                if cqe.user_data() == RECV_UD && !cqueue::more(cqe.flags()) {
                    self.armed = false;
                }
            }
        }
        !self.armed
    }
}

impl Drop for UringReceiver {
    fn drop(&mut self) {
        let done = self.quiesce();
        if done {
            // With no receive armed nothing reads the ring or writes the buffers any more;
            // unregistering makes that explicit (it fails only on a ring never enabled by this
            // thread, which then has nothing armed either).
            let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP);
        } else {
            // The kernel may still write into these: never free them. (Not expected to
            // happen; a leak of one receiver's buffers is the safe outcome.)
            log::warn!("io_uring receive could not be cancelled; leaking its buffers");
            std::mem::forget(self.msghdr.take());
            std::mem::forget(self.bufs.take());
        }
        // Fields drop next, in order: ring (fd), msghdr, buffers, socket.
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// See [`super::probe_uring`].
pub(crate) fn probe() -> Result<(), String> {
    let ring = IoUring::new(4).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe: {e}"))?;
    if !probe.is_supported(opcode::RecvMsg::CODE) {
        return Err("io_uring lacks RecvMsg".to_owned());
    }
    drop(ring);
    // The real path on a loopback socket: buffer ring registration, then a multishot receive
    // of one datagram sent to ourselves (kernels before 6.0 complete it with -EINVAL).
    let socket =
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("probe socket: {e}"))?;
    let addr: SocketAddr = socket
        .local_addr()
        .map_err(|e| format!("probe socket: {e}"))?;
    let mut receiver =
        UringReceiver::with_buffers(socket, 64, 4, 8).map_err(|(e, _)| e.to_string())?;
    receiver
        .socket()
        .send_to(b"goflow io_uring probe", addr)
        .map_err(|e| format!("probe send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let mut seen = false;
        match receiver.recv_batch(Duration::from_millis(100), |d| seen |= d.source == addr) {
            Ok(_) if seen => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("multishot RecvMsgMulti: {e}")),
        }
    }
    Err("multishot RecvMsgMulti: no completion within 1 s".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a ring of 8 buffers and batches of up to 64, the multishot receive runs dry
    /// (ENOBUFS, no MORE) again and again; every datagram must still arrive once, in order,
    /// through re-arms and recycled buffers.
    #[test]
    fn tiny_ring_rearms_and_loses_nothing() -> Result<(), Box<dyn std::error::Error>> {
        if let Err(reason) = probe() {
            println!("skipping: io_uring unavailable ({reason})");
            return Ok(());
        }
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = socket.local_addr()?;
        let mut receiver = UringReceiver::with_buffers(socket, 256, 64, 8).map_err(|(e, _)| e)?;
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        const N: u32 = 200;
        for i in 0..N {
            sender.send_to(&i.to_be_bytes(), addr)?;
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < N as usize && Instant::now() < deadline {
            receiver.recv_batch(Duration::from_millis(20), |d| {
                got.push(d.payload.try_into().map(u32::from_be_bytes).ok());
            })?;
        }
        let expected: Vec<_> = (0..N).map(Some).collect();
        assert_eq!(got, expected);
        assert!(
            receiver.rearms > 0,
            "8 buffers for 200 datagrams must run dry"
        );
        Ok(())
    }
}
