//! Packet captures in and out: reads pcap and pcapng files (pcap-file) down to the UDP datagrams
//! they carry (etherparse), and writes UDP datagrams as a pcap. `goflow decode` and
//! `goflow bench --pcap` read captures through [`for_each_udp`]; `goflow bench --write-pcap` and
//! the tests write them with [`PcapWriter`].
//!
//! Link types: Ethernet (with VLAN tags), Linux cooked SLL and SLL2, raw IP (101, and the
//! BSD-specific 12 and 14), IPv4 (228), IPv6 (229) and BSD loopback (NULL). No IP reassembly:
//! fragments are skipped and counted. Timestamps are Unix microseconds.
//!
//! pcap-file 2.0 is used at the level of raw records and blocks on purpose: its cooked packet
//! types reject records whose original length exceeds the snap length (any capture taken with
//! `-s`), and it reads every pcapng timestamp as nanoseconds whatever the interface's
//! `if_tsresol` says; both are handled here.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use etherparse::{EtherType, PacketBuilder, SlicedPacket, TransportSlice};
use pcap_file::TsResolution;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{
    Block, PcapNgReader, blocks::interface_description::InterfaceDescriptionOption,
};

/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW: raw IPv4 or IPv6, no link header.
pub const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_NULL: u32 = 0;
/// DLT_RAW as some BSDs number it.
const DLT_RAW_BSD_12: u32 = 12;
const DLT_RAW_OPENBSD_14: u32 = 14;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;

const SLL_HEADER_BYTES: usize = 16;
const SLL2_HEADER_BYTES: usize = 20;
const PCAP_SNAPLEN_BYTES: u32 = 65_535;

/// One captured frame.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture time, Unix microseconds.
    pub ts_us: i64,
    /// LINKTYPE_* of the interface it was captured on.
    pub link: u32,
    pub data: &'a [u8],
}

/// A UDP datagram found in a frame.
#[derive(Clone, Copy, Debug)]
pub struct Udp<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
}

/// Why a frame yielded no UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A link type this module does not read.
    LinkType,
    /// Not IPv4/IPv6 (ARP, LLDP, ...), or not UDP.
    NotUdp,
    /// An IP fragment (no reassembly).
    Fragment,
    /// Headers cut short or inconsistent.
    Malformed,
}

impl Skip {
    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::LinkType => "unsupported_link_type",
            Skip::NotUdp => "not_udp",
            Skip::Fragment => "ip_fragment",
            Skip::Malformed => "malformed",
        }
    }
}

/// What reading a capture found besides frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub frames: u64,
    /// The capture ended inside a record or block (a cut-off file): reading stopped there.
    pub truncated: bool,
}

/// Whether `bytes` start like a pcap or pcapng file.
pub fn is_capture(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(..4),
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4])
            | Some([0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d])
            | Some([0x0a, 0x0d, 0x0d, 0x0a])
    )
}

/// Calls `on_frame` for every packet of a pcap or pcapng capture held in `bytes`, in file
/// order. Errs if `bytes` is not a capture at all; a capture cut off mid-record stops early with
/// [`ReadSummary::truncated`] set.
pub fn for_each_frame(
    bytes: &[u8],
    mut on_frame: impl FnMut(Frame<'_>),
) -> anyhow::Result<ReadSummary> {
    match bytes.get(..4) {
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => read_pcapng(bytes, &mut on_frame),
        _ if is_capture(bytes) => read_pcap(bytes, &mut on_frame),
        Some(m) => bail!(
            "not a pcap or pcapng file (starts with {:02x}{:02x}{:02x}{:02x})",
            m[0],
            m[1],
            m[2],
            m[3]
        ),
        None => bail!("not a pcap or pcapng file (shorter than 4 bytes)"),
    }
}

fn read_pcap(bytes: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) -> anyhow::Result<ReadSummary> {
    let mut reader = PcapReader::new(bytes).context("reading the pcap header")?;
    let header = reader.header();
    let link = u32::from(header.datalink);
    let nanos = header.ts_resolution == TsResolution::NanoSecond;
    let mut summary = ReadSummary::default();
    while let Some(rec) = reader.next_raw_packet() {
        let Ok(rec) = rec else {
            summary.truncated = true;
            break;
        };
        let frac_us = if nanos {
            i64::from(rec.ts_frac / 1000)
        } else {
            i64::from(rec.ts_frac)
        };
        summary.frames += 1;
        on_frame(Frame {
            ts_us: i64::from(rec.ts_sec) * 1_000_000 + frac_us,
            link,
            data: &rec.data,
        });
    }
    Ok(summary)
}

/// One pcapng interface: its link type and how long its timestamp unit is.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: u32,
    /// `if_tsresol`: bit 7 clear = 10^-n s, set = 2^-n s. Default 6 (microseconds).
    tsresol: u8,
}

impl Interface {
    fn micros(&self, units: u64) -> i64 {
        let n = u32::from(self.tsresol & 0x7f);
        let us = if self.tsresol & 0x80 == 0 {
            match n.cmp(&6) {
                std::cmp::Ordering::Equal => u128::from(units),
                std::cmp::Ordering::Greater => {
                    u128::from(units) / 10u128.saturating_pow(n - 6).max(1)
                }
                std::cmp::Ordering::Less => u128::from(units) * 10u128.pow(6 - n),
            }
        } else {
            (u128::from(units) * 1_000_000) >> n.min(127)
        };
        i64::try_from(us).unwrap_or(i64::MAX)
    }
}

fn read_pcapng(bytes: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) -> anyhow::Result<ReadSummary> {
    let mut reader = PcapNgReader::new(bytes).context("reading the pcapng section header")?;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut summary = ReadSummary::default();
    while let Some(block) = reader.next_block() {
        let Ok(block) = block else {
            summary.truncated = true;
            break;
        };
        // pcap-file turns the 64-bit timestamp units into a Duration as if they were
        // nanoseconds; undo that and apply the interface's own resolution.
        let (iface, units, data) = match &block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                let tsresol = idb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                        _ => None,
                    })
                    .unwrap_or(6);
                interfaces.push(Interface {
                    link: u32::from(idb.linktype),
                    tsresol,
                });
                continue;
            }
            Block::EnhancedPacket(epb) => (
                epb.interface_id,
                epb.timestamp.as_nanos() as u64,
                &epb.data[..],
            ),
            Block::Packet(pb) => (u32::from(pb.interface_id), pb.timestamp, &pb.data[..]),
            Block::SimplePacket(spb) => (0, 0, &spb.data[..]),
            _ => continue,
        };
        let Some(iface) = usize::try_from(iface).ok().and_then(|i| interfaces.get(i)) else {
            // A packet for an interface never described: nothing says how to read it.
            summary.truncated = true;
            break;
        };
        summary.frames += 1;
        on_frame(Frame {
            ts_us: iface.micros(units),
            link: iface.link,
            data,
        });
    }
    Ok(summary)
}

/// The UDP datagram inside a frame of link type `link`.
pub fn udp_in_frame(link: u32, data: &[u8]) -> Result<Udp<'_>, Skip> {
    let sliced = match link {
        LINKTYPE_ETHERNET => SlicedPacket::from_ethernet(data),
        LINKTYPE_RAW | DLT_RAW_BSD_12 | DLT_RAW_OPENBSD_14 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            SlicedPacket::from_ip(data)
        }
        LINKTYPE_NULL => SlicedPacket::from_ip(data.get(4..).ok_or(Skip::Malformed)?),
        LINKTYPE_LINUX_SLL => {
            let et = data.get(14..16).ok_or(Skip::Malformed)?;
            let rest = data.get(SLL_HEADER_BYTES..).ok_or(Skip::Malformed)?;
            SlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([et[0], et[1]])), rest)
        }
        LINKTYPE_LINUX_SLL2 => {
            let et = data.get(0..2).ok_or(Skip::Malformed)?;
            let rest = data.get(SLL2_HEADER_BYTES..).ok_or(Skip::Malformed)?;
            SlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([et[0], et[1]])), rest)
        }
        _ => return Err(Skip::LinkType),
    }
    .map_err(|_| Skip::Malformed)?;
    if sliced.is_ip_payload_fragmented() {
        return Err(Skip::Fragment);
    }
    let (src, dst) = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        Some(etherparse::NetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        _ => return Err(Skip::NotUdp),
    };
    match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => Ok(Udp {
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            payload: udp.payload(),
        }),
        _ => Err(Skip::NotUdp),
    }
}

/// Whether a UDP payload starts like NetFlow v5, v9 or IPFIX.
pub fn is_netflow(payload: &[u8]) -> bool {
    matches!(payload, [0, 5 | 9 | 10, ..])
}

/// Per-capture counts of [`for_each_udp`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpSummary {
    pub read: ReadSummary,
    pub udp: u64,
    pub skipped_link_type: u64,
    pub skipped_not_udp: u64,
    pub skipped_fragment: u64,
    pub skipped_malformed: u64,
}

/// Calls `on_udp` with the capture time and datagram of every UDP packet in the capture.
pub fn for_each_udp(
    bytes: &[u8],
    mut on_udp: impl FnMut(i64, Udp<'_>),
) -> anyhow::Result<UdpSummary> {
    let mut s = UdpSummary::default();
    s.read = for_each_frame(bytes, |frame| match udp_in_frame(frame.link, frame.data) {
        Ok(udp) => {
            s.udp += 1;
            on_udp(frame.ts_us, udp);
        }
        Err(Skip::LinkType) => s.skipped_link_type += 1,
        Err(Skip::NotUdp) => s.skipped_not_udp += 1,
        Err(Skip::Fragment) => s.skipped_fragment += 1,
        Err(Skip::Malformed) => s.skipped_malformed += 1,
    })?;
    Ok(s)
}

/// The link layer [`PcapWriter`] puts around each datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteLink {
    /// Ethernet II with locally administered MAC addresses.
    #[default]
    Ethernet,
    /// LINKTYPE_RAW: the IP header first.
    RawIp,
}

/// Writes UDP datagrams as a classic pcap (microsecond timestamps, little-endian), each in an
/// IPv4 or IPv6 packet with correct IP and UDP checksums.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    link: WriteLink,
    frame: Vec<u8>,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W, link: WriteLink) -> io::Result<Self> {
        let linktype = match link {
            WriteLink::Ethernet => LINKTYPE_ETHERNET,
            WriteLink::RawIp => LINKTYPE_RAW,
        };
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&PCAP_SNAPLEN_BYTES.to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            link,
            frame: Vec::with_capacity(2048),
        })
    }

    /// Appends one datagram from `src` to `dst` captured at `ts_us` (Unix microseconds).
    pub fn write_udp(
        &mut self,
        ts_us: i64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
        const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        self.frame.clear();
        let (sp, dp) = (src.port(), dst.port());
        let written = match (self.link, src.ip(), dst.ip()) {
            (WriteLink::Ethernet, IpAddr::V4(s), IpAddr::V4(d)) => {
                PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                    .ipv4(s.octets(), d.octets(), 64)
                    .udp(sp, dp)
                    .write(&mut self.frame, payload)
            }
            (WriteLink::Ethernet, IpAddr::V6(s), IpAddr::V6(d)) => {
                PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                    .ipv6(s.octets(), d.octets(), 64)
                    .udp(sp, dp)
                    .write(&mut self.frame, payload)
            }
            (WriteLink::RawIp, IpAddr::V4(s), IpAddr::V4(d)) => {
                PacketBuilder::ipv4(s.octets(), d.octets(), 64)
                    .udp(sp, dp)
                    .write(&mut self.frame, payload)
            }
            (WriteLink::RawIp, IpAddr::V6(s), IpAddr::V6(d)) => {
                PacketBuilder::ipv6(s.octets(), d.octets(), 64)
                    .udp(sp, dp)
                    .write(&mut self.frame, payload)
            }
            _ => return Err(invalid("source and destination address families differ")),
        };
        written.map_err(|e| invalid(&format!("building the packet: {e}")))?;
        let len = u32::try_from(self.frame.len()).map_err(|_| invalid("packet too long"))?;
        let secs = u32::try_from(ts_us.div_euclid(1_000_000)).unwrap_or(0);
        let micros = ts_us.rem_euclid(1_000_000) as u32;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&micros.to_le_bytes());
        rec[8..12].copy_from_slice(&len.to_le_bytes());
        rec[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(&self.frame)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The capture's NetFlow/IPFIX datagrams, in file order: (source address, payload). For
/// replaying a capture.
pub fn netflow_datagrams(bytes: &[u8]) -> anyhow::Result<Vec<(SocketAddr, Vec<u8>)>> {
    let mut out = Vec::new();
    for_each_udp(bytes, |_, udp| {
        if is_netflow(udp.payload) {
            out.push((udp.src, udp.payload.to_vec()));
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn write(link: WriteLink, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new(), link).expect("vec write");
        w.write_udp(1_700_000_000_123_456, src, dst, payload)
            .expect("vec write");
        w.write_udp(1_700_000_001_000_000, src, dst, b"\x00\x09xyz")
            .expect("vec write");
        w.into_inner()
    }

    #[test]
    fn write_then_read_back_every_link_and_family() {
        let v4 = (
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2055),
        );
        let v6 = (
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40_001),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 2055),
        );
        for link in [WriteLink::Ethernet, WriteLink::RawIp] {
            for (src, dst) in [v4, v6] {
                let file = write(link, src, dst, b"\x00\x05hello");
                let mut got = Vec::new();
                let s = for_each_udp(&file, |ts, udp| {
                    got.push((ts, udp.src, udp.dst, udp.payload.to_vec()))
                })
                .expect("a capture");
                assert_eq!(s.read.frames, 2);
                assert!(!s.read.truncated);
                assert_eq!(got.len(), 2, "{link:?} {src}");
                assert_eq!(got[0].0, 1_700_000_000_123_456);
                assert_eq!((got[0].1, got[0].2), (src, dst));
                assert_eq!(got[0].3, b"\x00\x05hello");
                assert_eq!(got[1].3, b"\x00\x09xyz");
            }
        }
    }

    #[test]
    fn truncated_capture_stops_and_says_so() {
        let file = write(
            WriteLink::Ethernet,
            "10.0.0.1:1".parse().expect("addr"),
            "10.0.0.2:2".parse().expect("addr"),
            b"\x00\x05",
        );
        let cut = &file[..file.len() - 3];
        let mut n = 0;
        let s = for_each_udp(cut, |_, _| n += 1).expect("still a capture");
        assert_eq!(n, 1);
        assert!(s.read.truncated);
    }

    #[test]
    fn not_a_capture_is_an_error() {
        assert!(for_each_frame(b"hello world", |_| {}).is_err());
        assert!(for_each_frame(b"", |_| {}).is_err());
    }

    #[test]
    fn sll_and_sll2_frames() {
        // An IPv4/UDP packet, raw.
        let mut ip = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2055)
            .write(&mut ip, b"\x00\x0a")
            .expect("vec write");
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(&ip);
        let udp = udp_in_frame(LINKTYPE_LINUX_SLL, &sll).expect("sll");
        assert_eq!(udp.payload, b"\x00\x0a");
        let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let udp = udp_in_frame(LINKTYPE_LINUX_SLL2, &sll2).expect("sll2");
        assert_eq!(udp.dst.port(), 2055);
        assert_eq!(
            udp_in_frame(LINKTYPE_LINUX_SLL2, &sll2[..10]).err(),
            Some(Skip::Malformed)
        );
        assert_eq!(udp_in_frame(9999, &ip).err(), Some(Skip::LinkType));
    }

    #[test]
    fn vlan_tagged_ethernet() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(100).expect("vlan id"))
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2055)
            .write(&mut frame, b"\x00\x05")
            .expect("vec write");
        let udp = udp_in_frame(LINKTYPE_ETHERNET, &frame).expect("vlan");
        assert_eq!(udp.src.ip(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn pcapng_tsresol() {
        let us = Interface {
            link: 1,
            tsresol: 6,
        };
        assert_eq!(us.micros(1_700_000_000_000_000), 1_700_000_000_000_000);
        let ns = Interface {
            link: 1,
            tsresol: 9,
        };
        assert_eq!(ns.micros(1_700_000_000_000_000_123), 1_700_000_000_000_000);
        let ms = Interface {
            link: 1,
            tsresol: 3,
        };
        assert_eq!(ms.micros(5), 5000);
        let bin = Interface {
            link: 1,
            tsresol: 0x80 | 20,
        };
        assert_eq!(bin.micros(1 << 20), 1_000_000);
    }
}
