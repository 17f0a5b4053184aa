/* The one place every verdict goes through: it counts the packet per rule,
 * reason and direction (a per-CPU array per endpoint, indexed by the rule's
 * dense slot, so counting costs no hash lookup), reports it on the node-wide
 * ring buffer when the trace level asks for it, and returns the tc action.
 *   trace level 0: drops; 1: drops and new connections; 2: every verdict. */
#ifndef POLC_EVENTS_H
#define POLC_EVENTS_H

#include "common.h"

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/* Index: (slot * REASON_COUNT + reason_index) * 2 + dir. The loader sizes
 * the map for the endpoint's slots. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, METRICS_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_metrics SEC(".maps");

#define TRACE_DROPS 0
#define TRACE_NEW 1
#define TRACE_ALL 2

/* Layout shared with runtime/src/datapath.rs (`VerdictEvent`). */
struct verdict_event {
	__u32 endpoint;
	__u32 rule;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 reason;
	__u8 dir;
	__u8 family;
	__u8 proto;
};

#ifdef ENABLE_EVENTS
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RINGBUF_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_events SEC(".maps");
#endif

static __always_inline void count_verdict(__u32 slot, __u8 reason, __u8 dir, __u32 len)
{
	__u32 index = (slot * REASON_COUNT + reason_index(reason)) * 2 + dir;
	struct metrics_value *value = bpf_map_lookup_elem(&ep_metrics, &index);
	if (value) {
		value->packets += 1;
		value->bytes += len;
	}
}

#ifdef ENABLE_EVENTS
static __always_inline int should_report(__u8 reason)
{
	if (reason >= REASON_FIRST_DROP)
		return 1;
	if (EP_TRACE_LEVEL >= TRACE_ALL)
		return 1;
	return EP_TRACE_LEVEL >= TRACE_NEW && (reason == REASON_POLICY_ALLOW || reason == REASON_NOT_ENFORCED);
}

/* A global function: the verifier checks it once, not at each of the
 * verdicts that report (a verdict that does not report pays no call). */
__noinline int report_verdict(const struct packet *p __arg_nonnull, __u32 dir, __u32 reason, __u32 rule, __u32 peer)
{
	struct verdict_event *ev = bpf_ringbuf_reserve(&node_events, sizeof(*ev), 0);
	if (!ev)
		return 0;
	ev->endpoint = EP_ID;
	ev->rule = rule;
	ev->src_identity = dir == DIR_EGRESS ? EP_IDENTITY : peer;
	ev->dst_identity = dir == DIR_EGRESS ? peer : EP_IDENTITY;
	__builtin_memcpy(ev->saddr, p->saddr, sizeof(ev->saddr));
	__builtin_memcpy(ev->daddr, p->daddr, sizeof(ev->daddr));
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->reason = reason;
	ev->dir = dir;
	ev->family = p->family;
	ev->proto = p->proto;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
#endif

/* `peer` is the peer's identity, 0 when the packet was dropped before the
 * ipcache lookup. */
static const struct rule_ref NO_RULE = {};

static __always_inline int verdict(const struct packet *p, __u8 dir, __u8 reason, const struct rule_ref *rule, __u32 peer)
{
	count_verdict(rule->slot, reason, dir, p->len);
#ifdef ENABLE_EVENTS
	if (should_report(reason))
		report_verdict(p, dir, reason, rule->id, peer);
#endif
	return reason >= REASON_FIRST_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

#endif
