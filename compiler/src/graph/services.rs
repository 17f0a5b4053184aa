//! Port sets as a person writes them: `tcp/80, tcp/8000-8080, icmp
//! echo-request`; a whole protocol is its name (`udp`), everything is `any`.

use super::model::{L4Proto, Segment};
use crate::sema::icmp;

/// The compact text of what `segments` cover (their outcomes are ignored:
/// callers pass the allowed ones, or one rule's denied ones).
pub fn describe<'a>(segments: impl IntoIterator<Item = &'a Segment>) -> String {
    let ranges = merged(segments);
    let whole =
        |proto: L4Proto| ranges.iter().any(|&(p, low, high)| p == proto && low == 0 && high == proto.max_port());
    if L4Proto::ALL.into_iter().all(whole) {
        return "any".to_string();
    }
    ranges.iter().map(|&(proto, low, high)| range_text(proto, low, high)).collect::<Vec<_>>().join(", ")
}

/// Adjacent ranges of one protocol joined, in protocol then port order.
fn merged<'a>(segments: impl IntoIterator<Item = &'a Segment>) -> Vec<(L4Proto, u16, u16)> {
    let mut list: Vec<(L4Proto, u16, u16)> = segments.into_iter().map(|s| (s.proto, s.low, s.high)).collect();
    list.sort_by_key(|&(proto, low, _)| (L4Proto::ALL.iter().position(|p| *p == proto), low));
    let mut out: Vec<(L4Proto, u16, u16)> = Vec::new();
    for (proto, low, high) in list {
        match out.last_mut() {
            Some(last) if last.0 == proto && u32::from(last.2) + 1 >= u32::from(low) => last.2 = last.2.max(high),
            _ => out.push((proto, low, high)),
        }
    }
    out
}

fn range_text(proto: L4Proto, low: u16, high: u16) -> String {
    let L4Proto::Known(p) = proto else {
        return "other protocols".to_string();
    };
    let name = p.name();
    if low == 0 && high == proto.max_port() {
        return name.to_string();
    }
    if p.is_icmp() {
        let type_name = u8::try_from(low).ok().and_then(|t| icmp::type_name(p, t));
        return match type_name {
            Some(type_name) if low == high => format!("{name} {type_name}"),
            _ if low == high => format!("{name} type {low}"),
            _ => format!("{name} types {low}-{high}"),
        };
    }
    if low == high {
        format!("{name}/{low}")
    } else {
        format!("{name}/{low}-{high}")
    }
}
