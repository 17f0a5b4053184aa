/* Shared definitions of the polc datapath: includes, configuration, the
 * verdict reasons, and the packet summary every stage fills or reads.
 *
 * Configuration comes from two generated headers found on the include path:
 *   node_config.h  node-wide: reserved identities, map sizes, conntrack lifetimes
 *   ep_config.h    the code shape: ENABLE_* features; in a full per-endpoint
 *                  compile (POLC_PER_ENDPOINT) also the endpoint's constants.
 * Without POLC_PER_ENDPOINT the endpoint's constants are `const volatile`
 * globals in .rodata, written by the loader, so one object serves every
 * endpoint of the same shape (the verifier still prunes branches on them). */
#ifndef POLC_COMMON_H
#define POLC_COMMON_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "node_config.h"
#include "ep_config.h"

#ifdef POLC_PER_ENDPOINT
#define EP_IDENTITY ((__u32)SECLABEL)
#define EP_ID ((__u32)LXC_ID)
#define EP_TRACE_LEVEL ((__u32)TRACE_LEVEL)
#else
/* Names match the #defines of the per-endpoint header (lowercase), so the
 * loader writes them by name. */
const volatile __u32 seclabel = 0;
const volatile __u32 lxc_id = 0;
const volatile __u32 trace_level = 0;
const volatile __u32 lxc_ipv4 = 0;
const volatile __u8 lxc_ipv6[16] = {};
const volatile __u8 lxc_mac[6] = {};
#define EP_IDENTITY seclabel
#define EP_ID lxc_id
#define EP_TRACE_LEVEL trace_level
#endif

/* A global function's pointer argument the caller never passes as NULL. */
#define __arg_nonnull __attribute__((btf_decl_tag("arg:nonnull")))

#define AF_INET 2
#define AF_INET6 10

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806

#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define IPPROTO_SCTP 132

/* Policy directions, as seen from the endpoint. */
#define DIR_INGRESS 0 /* to the endpoint: tcx egress of the host-side veth */
#define DIR_EGRESS 1  /* from the endpoint: tcx ingress of the host-side veth */

/* Why a packet got its verdict. Values below REASON_FIRST_DROP pass. Kept in
 * sync with runtime/src/datapath.rs (`Reason`). */
enum reason {
	REASON_POLICY_ALLOW = 1,  /* new connection allowed by a rule */
	REASON_NOT_ENFORCED = 2,  /* new connection, direction not enforced */
	REASON_ESTABLISHED = 3,   /* packet of a tracked connection */
	REASON_REPLY = 4,         /* reply of a tracked connection */
	REASON_ARP = 5,           /* ARP passes without policy */
	REASON_NEIGHBOUR = 6,     /* IPv6 neighbour discovery passes */
	REASON_FIRST_DROP = 64,
	REASON_POLICY_DENY = 64,  /* a deny rule matched */
	REASON_DEFAULT_DENY = 65, /* enforced and no rule matched */
	REASON_TRUNCATED = 66,    /* a header ends beyond the packet */
	REASON_INVALID = 67,      /* bad version, header length, too many extension headers */
	REASON_FRAGMENT = 68,     /* non-first fragment: no L4 header to decide on */
	REASON_UNKNOWN_L3 = 69,   /* neither IPv4, IPv6 nor ARP (or family not enabled) */
	REASON_NO_TAIL_CALL = 70, /* the program for the address family is missing */
};

/* Reasons numbered densely (0..REASON_COUNT-1), for the counter array. */
#define REASON_PASSES 6
#define REASON_COUNT 13

static __always_inline __u32 reason_index(__u8 reason)
{
	return reason < REASON_FIRST_DROP ? reason - 1 : reason - REASON_FIRST_DROP + REASON_PASSES;
}

/* A rule as the datapath carries it: its id (for events) and its counter
 * slot, dense per endpoint (0: no rule). */
struct rule_ref {
	__u32 id;
	__u32 slot;
};

/* What the parser extracted; everything later reads only this. Addresses
 * are in network order, IPv4 in addr[0] with the rest zero.
 *
 * The layout matters to the verifier: on the stack, it keeps a value
 * written at the start of an 8-byte slot (offsets 0, 8, .., 40 here) and
 * forgets one written elsewhere. The bytes later code branches on
 * (`tracked`, `tcp_flags`) are kept off those offsets, so a constant one
 * parser path wrote (tcp_flags 0 for UDP) does not keep that path apart from
 * the others to the end of the program (see `decide` in endpoint.bpf.c). */
struct packet {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;     /* conntrack ports: L4 ports, or the ICMP echo id twice */
	__be16 dport;
	__u16 policy_port; /* host order: destination port, or the ICMP type */
	__u8 family;
	__u8 proto;
	__u8 pad[2];       /* offset 40: a slot start */
	__u8 tracked;      /* takes part in connection tracking */
	__u8 tcp_flags;
	__u32 len;
};

/* `value`, as an unknown number to the verifier (and to clang): stored
 * and read back past a barrier. The verifier keeps a value written to the
 * stack only at the start of an 8-byte slot, or a zero: `at` is neither
 * (stored plus one). For a value that differs between paths that do the
 * same thing next: each known value would have the verifier walk the rest
 * once more. */
static __always_inline __u32 forget_u32(__u32 value)
{
	struct {
		__u32 slot_start;
		__u32 at;
	} __attribute__((aligned(8))) box;
	box.at = value + 1;
	asm volatile("" : : "r"(&box) : "memory");
	return box.at - 1;
}

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04

#endif
