/* The endpoint's policy, one LPM trie per enforced direction (installed in
 * the direction's outer map, see below), holding the
 * IR's DirectionTable exactly (compiler/src/codegen/entries.rs writes it):
 *   key  = {prefixlen, identity (BE), proto, 0, port (BE)}, 64 data bits
 *   len 32 : the identity has a table of its own; value = its `other`
 *            decision, or "no match"
 *   len 40 : a protocol listed (or known but absent) in that table; "no match"
 *   len 48+: a port interval split into prefixes; the decision
 * Identity 0 keys the `any` table. A peer whose identity has no entry at all
 * falls back to identity 0; the longest match is then L4Table::lookup. */
#ifndef POLC_POLICY_H
#define POLC_POLICY_H

#include "common.h"

struct policy_key {
	__u32 prefixlen;
	__be32 identity;
	__u8 proto;
	__u8 pad;
	__be16 port;
};

#define POLICY_NO_MATCH 0
#define POLICY_ALLOW 1
#define POLICY_DENY 2

struct policy_value {
	__u32 rule;
	__u8 action;
	__u8 pad;
	__u16 slot; /* the rule's counter slot */
};

/* The table itself is not named in the object: each enforced direction has
 * an outer map with one slot that holds the current table (an inner map the
 * runtime creates, fills completely, then installs with one slot update).
 * The program looks the slot up once per packet, so a packet sees one whole
 * table; a swap never shows a mix of old and new entries, and the program is
 * not reloaded. An empty slot (no table installed yet) denies. */
struct policy_table {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	/* Sizes, not types: BTF has no complete type for an inner map's key. */
	__uint(key_size, sizeof(struct policy_key));
	__uint(value_size, sizeof(struct policy_value));
	__uint(max_entries, POLICY_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

#define POLICY_TABLE_SLOT 0

#define POLICY_MAP(name)                                        \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);       \
		__uint(max_entries, 1);                         \
		__type(key, __u32);                             \
		__uint(pinning, LIBBPF_PIN_BY_NAME);            \
		__array(values, struct policy_table);           \
	} name SEC(".maps")

#ifdef ENABLE_INGRESS_POLICY
POLICY_MAP(ep_pol_in);
#endif
#ifdef ENABLE_EGRESS_POLICY
POLICY_MAP(ep_pol_eg);
#endif

struct decision {
	struct rule_ref rule;
	__u8 reason;
};

static __always_inline void policy_lookup(void *tables, __u32 peer, const struct packet *p, struct decision *d)
{
	__u32 slot = POLICY_TABLE_SLOT;
	void *map = bpf_map_lookup_elem(tables, &slot);
	d->rule.id = 0;
	d->rule.slot = 0;
	d->reason = REASON_DEFAULT_DENY;
	if (!map)
		return;
	struct policy_key key = {
		.prefixlen = 64,
		.identity = bpf_htonl(peer),
		.proto = p->proto,
		.port = bpf_htons(p->policy_port),
	};
	struct policy_value *value = bpf_map_lookup_elem(map, &key);
	if (!value && peer != 0) {
		key.identity = 0;
		value = bpf_map_lookup_elem(map, &key);
	}
	if (!value)
		return;
	if (value->action == POLICY_ALLOW) {
		d->rule.id = value->rule;
		d->rule.slot = value->slot;
		d->reason = REASON_POLICY_ALLOW;
	}
#ifdef ENABLE_DENY_RULES
	if (value->action == POLICY_DENY) {
		d->rule.id = value->rule;
		d->rule.slot = value->slot;
		d->reason = REASON_POLICY_DENY;
	}
#endif
}

/* The decision for a new connection in direction `dir`. */
static __always_inline void policy_decide(__u8 dir, __u32 peer, const struct packet *p, struct decision *d)
{
	if (dir == DIR_INGRESS) {
#ifdef ENABLE_INGRESS_POLICY
		policy_lookup(&ep_pol_in, peer, p, d);
		return;
#endif
	} else {
#ifdef ENABLE_EGRESS_POLICY
		policy_lookup(&ep_pol_eg, peer, p, d);
		return;
#endif
	}
	d->rule.id = 0;
	d->rule.slot = 0;
	d->reason = REASON_NOT_ENFORCED;
}

#endif
