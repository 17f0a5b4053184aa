// SPDX-License-Identifier: GPL-2.0
/* The endpoint programs, attached to the host side of the endpoint's veth:
 *   from_ep  (tcx ingress): traffic from the endpoint, its egress policy
 *   to_ep    (tcx egress):  traffic to the endpoint, its ingress policy
 * Each entry program decides IPv4 itself (the common case pays no tail
 * call) and tail-calls the IPv6 program through its direction's prog array
 * (tail call targets must share the entry's attach type). */
#include "common.h"
#include "parse.h"
#include "ipcache.h"
#include "conntrack.h"
#include "policy.h"
#include "events.h"

/* Slot 0 is unused since IPv4 is decided in the entry program. */
#define SLOT_IPV6 1

#define PROG_ARRAY(name)                             \
	struct {                                     \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY); \
		__uint(max_entries, 2);              \
		__type(key, __u32);                  \
		__type(value, __u32);                \
		__uint(pinning, LIBBPF_PIN_BY_NAME); \
	} name SEC(".maps")

PROG_ARRAY(ep_calls_eg);
PROG_ARRAY(ep_calls_in);

/* The peer's identity, for the policy and for events. A packet of a tracked
 * connection needs it only when events report it. */
static __always_inline __u32 peer_identity(const struct packet *p, __u8 dir, __u8 family)
{
	return ipcache_identity(family, dir == DIR_EGRESS ? p->daddr : p->saddr);
}

#ifdef ENABLE_EVENTS
#define TRACKED_PEER(p, dir, family) peer_identity(p, dir, family)
#else
#define TRACKED_PEER(p, dir, family) 0
#endif

/* A packet of a new connection (no conntrack entry, or not tracked): peer
 * identity -> policy -> a conntrack entry if allowed and tracked -> verdict.
 * `t` is the packet's conntrack tuple when it is tracked, `now` the clock
 * if already read (0: not yet). */
static __always_inline int decide_new(struct packet *p, struct ct_tuple *t, __u64 now, __u8 dir, __u8 family)
{
	__u32 peer = peer_identity(p, dir, family);
	struct decision d;
	policy_decide(dir, peer, p, &d);
	if (d.reason < REASON_FIRST_DROP && p->tracked)
		ct_create(t, family, p, now ? now : ct_now(), &d.rule);
	return verdict(p, dir, d.reason, &d.rule, peer);
}

/* decide_new as one global (not inlined, not static) function per
 * direction and family: the verifier checks a global function once, for any
 * arguments, instead of once for each of the many paths parsing and
 * conntrack leave, and the caller sees its result as an unknown scalar.
 * It holds the policy lookup, the most of the program. A packet of a new
 * connection pays one BPF-to-BPF call for it; a tracked one none. */
#define DECIDE_NEW(name, dir, family)                                                                  \
	__noinline int name(struct packet *p __arg_nonnull, struct ct_tuple *t __arg_nonnull, __u64 now) \
	{                                                                                              \
		return decide_new(p, t, now, dir, family);                                             \
	}

#ifdef ENABLE_IPV4
DECIDE_NEW(decide_new_v4_ingress, DIR_INGRESS, AF_INET)
DECIDE_NEW(decide_new_v4_egress, DIR_EGRESS, AF_INET)
#endif
#ifdef ENABLE_IPV6
DECIDE_NEW(decide_new_v6_ingress, DIR_INGRESS, AF_INET6)
DECIDE_NEW(decide_new_v6_egress, DIR_EGRESS, AF_INET6)
#endif

static __always_inline int call_decide_new(struct packet *p, struct ct_tuple *t, __u64 now, __u8 dir, __u8 family)
{
#ifdef ENABLE_IPV4
	if (family == AF_INET)
		return dir == DIR_INGRESS ? decide_new_v4_ingress(p, t, now) : decide_new_v4_egress(p, t, now);
#endif
#ifdef ENABLE_IPV6
	if (family == AF_INET6)
		return dir == DIR_INGRESS ? decide_new_v6_ingress(p, t, now) : decide_new_v6_egress(p, t, now);
#endif
	return TC_ACT_SHOT;
}

/* decide maps a conntrack state to its reason by offset. */
_Static_assert(REASON_REPLY - REASON_ESTABLISHED == CT_REPLY - CT_ESTABLISHED,
	       "REASON_ESTABLISHED/REASON_REPLY must follow CT_ESTABLISHED/CT_REPLY");

/* Parsed packet -> conntrack -> (new connection) decide_new.
 * `family` is the program's constant. */
static __always_inline int decide(struct packet *p, int parsed, __u8 dir, __u8 family)
{
	if (parsed != PARSE_OK)
		return verdict(p, dir, parsed, &NO_RULE, 0);
	/* The bytes conntrack branches on are read again from `*p` (the empty
	 * asm says they may have changed), not taken from the registers each
	 * parser path left (a known protocol, TCP flags 0 for UDP): the paths
	 * the parser told apart then look the same to the verifier, which walks
	 * what follows once for all of them instead of once per protocol. */
	asm volatile("" : "+m"(p->proto), "+m"(p->tracked), "+m"(p->tcp_flags));

	struct ct_tuple tuple;
	/* Read when needed: an entry found, or one to create. */
	__u64 now = 0;
	if (p->tracked) {
		struct rule_ref rule = {};
		ct_tuple_of(&tuple, p, dir, family);
		enum ct_state state = ct_lookup(&tuple, family, p, &now, &rule);
		/* REASON_REPLY for CT_REPLY, without a branch on which. */
		if (state != CT_NEW)
			return verdict(p, dir, REASON_ESTABLISHED + (state - CT_ESTABLISHED), &rule,
				       TRACKED_PEER(p, dir, family));
	}
	return call_decide_new(p, &tuple, now, dir, family);
}

static __always_inline int dispatch(struct __sk_buff *skb, void *calls, __u8 dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct packet p = { .len = skb->len };

	if (data + ETH_HLEN > data_end)
		return verdict(&p, dir, REASON_TRUNCATED, &NO_RULE, 0);
	__u16 ethertype = load_be16((__u8 *)data + 12);
	switch (ethertype) {
	case ETH_P_ARP:
		return verdict(&p, dir, REASON_ARP, &NO_RULE, 0);
#ifdef ENABLE_IPV4
	case ETH_P_IP: {
		int parsed = parse_ipv4(skb, &p);
		return decide(&p, parsed, dir, AF_INET);
	}
#endif
#ifdef ENABLE_IPV6
	case ETH_P_IPV6:
		bpf_tail_call(skb, calls, SLOT_IPV6);
		return verdict(&p, dir, REASON_NO_TAIL_CALL, &NO_RULE, 0);
#endif
	default:
		return verdict(&p, dir, REASON_UNKNOWN_L3, &NO_RULE, 0);
	}
}

SEC("tcx/ingress")
int from_ep(struct __sk_buff *skb)
{
	return dispatch(skb, &ep_calls_eg, DIR_EGRESS);
}

SEC("tcx/egress")
int to_ep(struct __sk_buff *skb)
{
	return dispatch(skb, &ep_calls_in, DIR_INGRESS);
}

#ifdef ENABLE_IPV6
SEC("tcx/ingress")
int from_ep_v6(struct __sk_buff *skb)
{
	struct packet p = {};
	int parsed = parse_ipv6(skb, &p);
	return decide(&p, parsed, DIR_EGRESS, AF_INET6);
}

SEC("tcx/egress")
int to_ep_v6(struct __sk_buff *skb)
{
	struct packet p = {};
	int parsed = parse_ipv6(skb, &p);
	return decide(&p, parsed, DIR_INGRESS, AF_INET6);
}
#endif

char LICENSE[] SEC("license") = "GPL";
