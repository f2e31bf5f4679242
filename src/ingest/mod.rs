//! Receive loops: each worker thread owns one UDP socket (SO_REUSEPORT) and one [`Receiver`],
//! which fills batches of datagrams through io_uring (`uring`) or recvmmsg (`mmsg`). Both
//! back-ends are compiled on every Linux build and chosen at run time; nothing above this module
//! knows which one ran. This is the only module with `unsafe` code.
//!
//! (Being written: the API below is the contract the pipeline codes against.)

use std::net::SocketAddr;

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
