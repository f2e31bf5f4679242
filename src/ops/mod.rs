//! The ops API: what the daemon tells operators about itself, and the client side of it.
//!
//! - [`histogram`]: latency and size histograms, recorded per worker without locks and published
//!   about once a second into a shared [`HistogramHub`] (last minute and since start).
//! - [`status`]: the /status, /templates and /healthz documents and the [`OpsSource`] trait
//!   through which the server reads the daemon's state.
//! - [`metrics`]: the same figures in the Prometheus text format (/metrics), and a strict parser
//!   of that format for the tests.
//! - [`server`]: a small HTTP/1.1 server (one poll thread, a bounded pool), never on the
//!   receive path ([`serve`]).
//! - [`client`] and [`render`]: `goflow status` and `goflow stats`.
//!
//! Not here: the counters themselves, which live with whoever counts (workers, backends, the
//! decoder); this module only reads and publishes them.

pub mod client;
pub mod histogram;
pub mod metrics;
pub mod render;
pub mod server;
pub mod source;
pub mod status;

pub use histogram::{HistogramHub, LocalHistograms, StatsReport};
pub use server::{OpsServer, serve};
pub use status::{OpsSource, Status, TemplatesReport};
