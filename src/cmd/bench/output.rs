//! Where `goflow bench` puts its datagrams: one UDP socket per exporter, or a pcap file. A
//! [`Batch`] is a run of datagrams of one exporter, built back to back in one buffer and handed
//! over in one call (one sendmmsg on Linux).

use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, bail};

use super::exporter::Built;
use crate::pcap::{PcapWriter, WriteLink};
use crate::sendmmsg::Sender;

/// Datagrams built back to back in one buffer.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ranges.clear();
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Lets `build` append one datagram to the buffer.
    pub fn push_with(&mut self, build: impl FnOnce(&mut Vec<u8>) -> Built) -> Built {
        let start = self.buf.len();
        let built = build(&mut self.buf);
        if self.buf.len() > start {
            self.ranges.push(start..self.buf.len());
        }
        built
    }

    /// The buffer and where each datagram is in it.
    pub fn parts(&self) -> (&[u8], &[Range<usize>]) {
        (&self.buf, &self.ranges)
    }

    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges.iter().filter_map(|r| self.buf.get(r.clone()))
    }
}

#[derive(Debug)]
enum Sink {
    Sockets(Vec<UdpSocket>, Sender),
    Pcap(PcapWriter<BufWriter<File>>),
}

/// The exporters' sockets (or the pcap they are written to) and the collector's address.
#[derive(Debug)]
pub struct Output {
    sink: Sink,
    target: SocketAddr,
    sources: Vec<SocketAddr>,
}

impl Output {
    /// `n` sockets: bound to 127.0.0.(1+i) for an IPv4 loopback target, to ::1 (each its own
    /// port) for an IPv6 loopback target, else to the unspecified address of the target's
    /// family (the route picks the source address).
    pub fn sockets(target: SocketAddr, n: usize) -> anyhow::Result<Output> {
        let mut sockets = Vec::with_capacity(n);
        let mut sources = Vec::with_capacity(n);
        for i in 0..n {
            let bind_ip = match target.ip() {
                IpAddr::V4(t) if t.is_loopback() => {
                    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i as u8)))
                }
                IpAddr::V6(t) if t.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let sock = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
                .with_context(|| format!("binding exporter {} to {bind_ip}", i + 1))?;
            let mut local = sock.local_addr().context("reading the local address")?;
            if local.ip().is_unspecified() {
                // Ask the routing table which source address the collector will see.
                let probe = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
                    .and_then(|p| p.connect(target).map(|()| p))
                    .and_then(|p| p.local_addr())
                    .with_context(|| format!("finding a route to {target}"))?;
                local.set_ip(probe.ip());
            }
            sockets.push(sock);
            sources.push(local);
        }
        Ok(Output {
            sink: Sink::Sockets(sockets, Sender::default()),
            target,
            sources,
        })
    }

    /// Writes to a pcap at `path` as if `sources[i]` sent to `target`.
    pub fn pcap(
        path: &Path,
        target: SocketAddr,
        sources: Vec<SocketAddr>,
    ) -> anyhow::Result<Output> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file), WriteLink::Ethernet)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Output {
            sink: Sink::Pcap(w),
            target,
            sources,
        })
    }

    pub fn sources(&self) -> &[SocketAddr] {
        &self.sources
    }

    /// Sends (or writes) the batch as exporter `i`; `ts_us` stamps pcap records.
    pub fn send(&mut self, i: usize, batch: &Batch, ts_us: i64) -> anyhow::Result<()> {
        let Some(&src) = self.sources.get(i) else {
            bail!("no exporter {i}");
        };
        match &mut self.sink {
            Sink::Sockets(sockets, sender) => {
                let Some(sock) = sockets.get(i) else {
                    bail!("no exporter {i}");
                };
                let (buf, ranges) = batch.parts();
                sender
                    .send(sock, self.target, buf, ranges)
                    .with_context(|| format!("sending from {src} to {}", self.target))?;
            }
            Sink::Pcap(w) => {
                for d in batch.datagrams() {
                    w.write_udp(ts_us, src, self.target, d)
                        .context("writing the pcap")?;
                }
            }
        }
        Ok(())
    }

    /// Flushes a pcap.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Sink::Pcap(w) = &mut self.sink {
            w.flush().context("writing the pcap")?;
        }
        Ok(())
    }
}
