//! Test packets: a builder for well-formed packets, the malformations the
//! generator applies, and the model parser: an independent reading, in
//! Rust, of the parsing rules templates/bpf/parse.h documents.

use polc_runtime::datapath::Reason;
use std::net::IpAddr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An IPv6 extension header to put before L4: (type, 8-byte units after the first).
#[derive(Debug, Clone, Copy)]
pub enum Ext {
    Options(u8, u8),
    /// A fragment header with this fragment offset (in 8-byte units).
    Fragment(u16),
}

#[derive(Debug, Clone)]
pub struct PacketSpec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_id: u16,
    pub tcp_flags: u8,
    pub ipv4_options: u8, // 32-bit words of options
    pub ipv4_frag: u16,   // the flags + offset field
    pub ipv6_ext: Vec<Ext>,
    pub payload: usize,
}

impl PacketSpec {
    /// The first packet of a flow: a TCP SYN, or a UDP/SCTP datagram; no
    /// IP options or extension headers, no payload.
    pub fn opening(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> PacketSpec {
        PacketSpec {
            src,
            dst,
            proto,
            sport,
            dport,
            icmp_type: 0,
            icmp_id: 0,
            tcp_flags: TCP_SYN,
            ipv4_options: 0,
            ipv4_frag: 0,
            ipv6_ext: Vec::new(),
            payload: 0,
        }
    }

    /// The reply to this packet (addresses and ports swapped, echo answered).
    pub fn reply(&self) -> PacketSpec {
        let mut r = self.clone();
        r.src = self.dst;
        r.dst = self.src;
        r.sport = self.dport;
        r.dport = self.sport;
        r.icmp_type = match (self.proto, self.icmp_type) {
            (ICMP, 8) => 0,
            (ICMPV6, 128) => 129,
            (_, t) => t,
        };
        r.tcp_flags = if self.tcp_flags & TCP_SYN != 0 { TCP_SYN | TCP_ACK } else { TCP_ACK };
        r.ipv6_ext.clear();
        r.ipv4_frag = 0;
        r
    }
}

fn l4_header(spec: &PacketSpec) -> Vec<u8> {
    let ports = |v: &mut Vec<u8>| {
        v.extend(spec.sport.to_be_bytes());
        v.extend(spec.dport.to_be_bytes());
    };
    let mut v = Vec::new();
    match spec.proto {
        TCP => {
            ports(&mut v);
            v.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, spec.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
        }
        UDP => {
            ports(&mut v);
            v.extend([0, 8, 0, 0]);
        }
        SCTP => {
            ports(&mut v);
            v.extend([0; 8]);
        }
        ICMP | ICMPV6 => {
            v.extend([spec.icmp_type, 0, 0, 0]);
            v.extend(spec.icmp_id.to_be_bytes());
            v.extend([0, 1]);
        }
        _ => v.extend([0xab; 8]),
    }
    v.extend(std::iter::repeat_n(0x5a, spec.payload));
    v
}

pub fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut v = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    v.extend(ethertype.to_be_bytes());
    v
}

pub fn build(spec: &PacketSpec) -> Vec<u8> {
    let l4 = l4_header(spec);
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut v = ethernet(0x0800);
            let ihl = 5 + spec.ipv4_options;
            let total = u16::from(ihl) * 4 + l4.len() as u16;
            v.push(0x40 | ihl);
            v.push(0);
            v.extend(total.to_be_bytes());
            v.extend([0x12, 0x34]);
            v.extend(spec.ipv4_frag.to_be_bytes());
            v.extend([64, spec.proto, 0, 0]);
            v.extend(s.octets());
            v.extend(d.octets());
            v.extend(std::iter::repeat_n(1u8, usize::from(spec.ipv4_options) * 4)); // NOP options
            v.extend(l4);
            v
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            let mut exts = Vec::new();
            let mut types = Vec::new();
            for ext in &spec.ipv6_ext {
                match *ext {
                    Ext::Options(kind, units) => {
                        types.push(kind);
                        exts.push((units, vec![0u8; (usize::from(units) + 1) * 8]));
                    }
                    Ext::Fragment(offset) => {
                        types.push(44);
                        let mut h = vec![0u8; 8];
                        h[2..4].copy_from_slice(&(offset << 3).to_be_bytes());
                        exts.push((0, h));
                    }
                }
            }
            // Chain the next-header fields: each header names the one after it.
            let mut chain: Vec<u8> = types.clone();
            chain.push(spec.proto);
            let mut body = Vec::new();
            for (i, (units, mut h)) in exts.into_iter().enumerate() {
                h[0] = chain[i + 1];
                if types[i] != 44 {
                    h[1] = units;
                }
                body.extend(h);
            }
            body.extend(l4);
            let mut v = ethernet(0x86dd);
            v.extend([0x60, 0, 0, 0]);
            v.extend((body.len() as u16).to_be_bytes());
            v.extend([chain[0], 64]);
            v.extend(s.octets());
            v.extend(d.octets());
            v.extend(body);
            v
        }
    }
}

fn v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// What the parser makes of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Decided before any lookup: a pass (ARP, ND) or a drop reason.
    Early(Reason),
    Packet(Summary),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub policy_port: u16,
    pub tcp_flags: u8,
    pub tracked: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The rules of parse.h, read off the bytes.
pub fn model_parse(b: &[u8]) -> Parsed {
    use Reason::*;
    if b.len() < 14 {
        return Parsed::Early(Truncated);
    }
    let (src, dst, proto, l4) = match be16(b, 12) {
        0x0806 => return Parsed::Early(Arp),
        0x0800 => {
            if b.len() < 34 {
                return Parsed::Early(Truncated);
            }
            if b[14] >> 4 != 4 {
                return Parsed::Early(Invalid);
            }
            let ihl = usize::from(b[14] & 0xf);
            if ihl < 5 {
                return Parsed::Early(Invalid);
            }
            if b.len() < 14 + ihl * 4 {
                return Parsed::Early(Truncated);
            }
            if be16(b, 20) & 0x1fff != 0 {
                return Parsed::Early(Fragment);
            }
            let addr = |at: usize| IpAddr::from([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            (addr(26), addr(30), b[23], 14 + ihl * 4)
        }
        0x86dd => {
            if b.len() < 54 {
                return Parsed::Early(Truncated);
            }
            if b[14] >> 4 != 6 {
                return Parsed::Early(Invalid);
            }
            let addr = |at: usize| {
                let bytes: [u8; 16] = b[at..at + 16].try_into().unwrap_or([0; 16]);
                IpAddr::from(bytes)
            };
            let is_ext = |nh: u8| matches!(nh, 0 | 43 | 44 | 60);
            let mut nh = b[20];
            let mut off = 54;
            for _ in 0..4 {
                if !is_ext(nh) {
                    break;
                }
                if b.len() < off + 8 {
                    return Parsed::Early(Truncated);
                }
                let len = if nh == 44 {
                    if be16(b, off + 2) & 0xfff8 != 0 {
                        return Parsed::Early(Fragment);
                    }
                    8
                } else {
                    (usize::from(b[off + 1]) + 1) * 8
                };
                nh = b[off];
                off += len;
            }
            if is_ext(nh) {
                return Parsed::Early(Invalid);
            }
            (addr(22), addr(38), nh, off)
        }
        _ => return Parsed::Early(UnknownL3),
    };
    let need = |n: usize| b.len() >= l4 + n;
    let mut s = Summary { src, dst, proto, sport: 0, dport: 0, policy_port: 0, tcp_flags: 0, tracked: true };
    match proto {
        TCP | UDP | SCTP => {
            let n = match proto {
                TCP => 20,
                UDP => 8,
                _ => 12,
            };
            if !need(n) {
                return Parsed::Early(Truncated);
            }
            s.sport = be16(b, l4);
            s.dport = be16(b, l4 + 2);
            s.policy_port = s.dport;
            if proto == TCP {
                s.tcp_flags = b[l4 + 13];
            }
        }
        ICMP | ICMPV6 => {
            if !need(8) {
                return Parsed::Early(Truncated);
            }
            let t = b[l4];
            s.policy_port = u16::from(t);
            if proto == ICMPV6 && (133..=137).contains(&t) {
                return Parsed::Early(Neighbour);
            }
            let echo = if proto == ICMP { t == 0 || t == 8 } else { t == 128 || t == 129 };
            if echo {
                s.sport = be16(b, l4 + 4);
                s.dport = s.sport;
            } else {
                s.tracked = false;
            }
        }
        _ => {}
    }
    Parsed::Packet(s)
}
