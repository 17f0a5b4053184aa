/* The endpoint's policy: per enforced direction, one table (of two, chosen
 * by the direction's selector, see below), holding the IR's DirectionTable
 * exactly (compiler/src/codegen/entries.rs writes it, and
 * compiler/src/codegen/lookup_model.rs is this lookup in Rust). A hash:
 *   key   = {identity, proto, kind, bucket}
 *   value = up to POLICY_INLINE sorted, disjoint port intervals, each with
 *           its decision, scanned in a bounded loop
 * kind PROTOCOL {peer, proto}: the protocol's intervals. An identity with a
 *   table of its own has an entry for every known protocol `any` has
 *   intervals for, so a miss means "no table of its own": fall back to
 *   identity 0, the `any` table.
 * kind OTHER {peer, 0}: for a protocol outside the known five that the
 *   table does not list: the table's `other` decision over every port.
 * A PROTOCOL entry with POLICY_SPLIT holds no intervals: they are in
 *   BUCKET256 entries {peer, proto, port >> 8}, and a BUCKET256 entry with
 *   POLICY_SPLIT in BUCKET16 entries {peer, proto, port >> 4}. A missing
 *   bucket matches nothing. So a packet costs one hash lookup when its
 *   peer has a table, two when it falls back to `any`, and at most two more
 *   for very long interval lists, whatever the table's size.
 *
 * In front of each hash, an array index finds the PROTOCOL entries of
 * identities below POLICY_INDEX_IDENTITIES for the five known protocols
 * without hashing (compiler/src/codegen/policy_index.rs builds it):
 *   index[identity].row[protocol slot]: POLICY_ROW_NONE no entry (what a
 *   hash miss says), POLICY_ROW_HASH the entry is in the hash (the rows ran
 *   out), r: the entry's value is rows[r - 1].
 * The verifier inlines array lookups; a hash lookup is a call into the
 * kernel's hash table (~20 ns on a 2-core VM), and a new connection already
 * pays two (conntrack, ipcache). The hash keeps every entry, so the index
 * never decides anything the hash would not. */
#ifndef POLC_POLICY_H
#define POLC_POLICY_H

#include "common.h"

#define POLICY_KIND_PROTOCOL 0
#define POLICY_KIND_BUCKET256 1
#define POLICY_KIND_BUCKET16 2
#define POLICY_KIND_OTHER 3

struct policy_key {
	__u32 identity;
	__u8 proto;
	__u8 kind;
	__u16 bucket;
};

#define POLICY_NO_MATCH 0
#define POLICY_ALLOW 1
#define POLICY_DENY 2

#define POLICY_INLINE 16
#define POLICY_SPLIT 0x01

struct policy_decision {
	__u32 rule;
	__u16 slot; /* the rule's counter slot */
	__u8 action;
	__u8 pad;
};

/* Bounds apart from decisions: the scan reads 64 bytes at most. */
struct policy_value {
	__u8 count; /* intervals used */
	__u8 flags;
	__u16 pad;
	__u16 low[POLICY_INLINE];
	__u16 high[POLICY_INLINE];
	struct policy_decision decision[POLICY_INLINE];
};

/* Two tables per enforced direction and a selector: the selector (one u32
 * in an array) says which table the program reads. The runtime fills the
 * other table completely, then flips the selector with one map update; the
 * program reads the selector once per packet, so a packet sees one whole
 * table, old or new, and the program is not reloaded. The runtime waits for
 * an RCU grace period after a flip before it refills the table it left, so
 * no packet still reading that table sees it change. */
#define POLICY_INDEX_IDENTITIES 1024
#define POLICY_INDEX_ROWS 128
#define POLICY_INDEX_SLOTS 8 /* row numbers per value, 5 used */
#define POLICY_ROW_NONE 0
#define POLICY_ROW_HASH 0xffff

struct policy_index_value {
	__u16 row[POLICY_INDEX_SLOTS];
};

/* A table: the hash, its index and the index's rows (41.6 KiB of arrays:
 * 1,024 x 16 bytes and 128 x 200 bytes). */
#define POLICY_TABLE(name)                                      \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                \
		__type(key, struct policy_key);                 \
		__type(value, struct policy_value);             \
		__uint(max_entries, POLICY_MAP_SIZE);           \
		__uint(map_flags, BPF_F_NO_PREALLOC);           \
		__uint(pinning, LIBBPF_PIN_BY_NAME);            \
	} name SEC(".maps");                                    \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_ARRAY);               \
		__type(key, __u32);                             \
		__type(value, struct policy_index_value);       \
		__uint(max_entries, POLICY_INDEX_IDENTITIES);   \
		__uint(pinning, LIBBPF_PIN_BY_NAME);            \
	} name##_idx SEC(".maps");                              \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_ARRAY);               \
		__type(key, __u32);                             \
		__type(value, struct policy_value);             \
		__uint(max_entries, POLICY_INDEX_ROWS);         \
		__uint(pinning, LIBBPF_PIN_BY_NAME);            \
	} name##_row SEC(".maps")

#define POLICY_SELECTOR(name)                                   \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_ARRAY);               \
		__uint(max_entries, 1);                         \
		__type(key, __u32);                             \
		__type(value, __u32);                           \
		__uint(pinning, LIBBPF_PIN_BY_NAME);            \
	} name SEC(".maps")

#ifdef ENABLE_INGRESS_POLICY
POLICY_SELECTOR(ep_pol_in);
POLICY_TABLE(ep_pol_in_a);
POLICY_TABLE(ep_pol_in_b);
#endif
#ifdef ENABLE_EGRESS_POLICY
POLICY_SELECTOR(ep_pol_eg);
POLICY_TABLE(ep_pol_eg_a);
POLICY_TABLE(ep_pol_eg_b);
#endif

/* A known protocol's slot in an index value plus one (KNOWN_PROTOCOLS' order
 * in compiler/src/codegen/entries.rs), 0 for any other protocol. A table
 * read, not a switch: a switch gives the verifier a known slot on each of
 * its six paths, and it would walk the index and hash lookups once per path. */
static const __u8 POLICY_PROTOCOL_SLOT[256] = {
	[IPPROTO_ICMP] = 1, [IPPROTO_TCP] = 2, [IPPROTO_UDP] = 3, [IPPROTO_ICMPV6] = 4, [IPPROTO_SCTP] = 5,
};

/* The slot, -1 for any other protocol. */
static __always_inline int policy_protocol_slot(__u8 proto)
{
	return (int)POLICY_PROTOCOL_SLOT[proto] - 1;
}

/* The PROTOCOL entry `key` names: through the table's index when it covers
 * the identity and protocol (`slot` >= 0), else from the hash. */
static __always_inline struct policy_value *policy_protocol(void *table, void *index, void *rows,
							     struct policy_key *key, int slot)
{
	if (slot >= 0 && key->identity < POLICY_INDEX_IDENTITIES) {
		__u32 identity = key->identity;
		struct policy_index_value *found = bpf_map_lookup_elem(index, &identity);
		if (found) {
			__u32 row = found->row[slot & (POLICY_INDEX_SLOTS - 1)];
			if (row == POLICY_ROW_NONE)
				return NULL;
			if (row != POLICY_ROW_HASH) {
				__u32 at = row - 1;
				struct policy_value *value = bpf_map_lookup_elem(rows, &at);
				/* The verifier inlines an array lookup only where its
				 * call sees one map: this keeps clang from merging the
				 * call with the hash lookup's below. */
				asm volatile("" : "+r"(value));
				return value;
			}
		}
	}
	return bpf_map_lookup_elem(table, key);
}

/* The peer's first entry for the packet's protocol: PROTOCOL, else OTHER
 * for an unknown protocol. `key` is left as the entry's key. `slot` is
 * policy_protocol_slot(proto) (-1: an unknown protocol), computed once by
 * the caller: testing the protocol again would give the verifier a known
 * protocol on each path, and paths it cannot merge. */
static __always_inline struct policy_value *policy_first(void *table, void *index, void *rows, struct policy_key *key,
							  __u8 proto, int slot)
{
	key->proto = proto;
	key->kind = POLICY_KIND_PROTOCOL;
	struct policy_value *value = policy_protocol(table, index, rows, key, slot);
	if (value || slot >= 0)
		return value;
	key->proto = 0;
	key->kind = POLICY_KIND_OTHER;
	return bpf_map_lookup_elem(table, key);
}

/* A lookup's outcome packed in one scalar (no pointer into the table
 * outlives the lookup): reason in bits 0-7, the rule's counter slot in bits
 * 8-23, its id in bits 32-63. */
#define POLICY_RESULT(reason, slot, rule) ((__u64)(reason) | (__u64)(slot) << 8 | (__u64)(rule) << 32)

/* `table` with its index and rows (see the top of this file). */
static __always_inline __u64 policy_table_lookup(void *table, void *index, void *rows, __u32 peer, __u8 proto,
						 __u16 port)
{
	int proto_slot = policy_protocol_slot(proto);
	struct policy_key key = { .identity = peer };
	struct policy_value *value = policy_first(table, index, rows, &key, proto, proto_slot);
	if (!value && peer != 0) {
		key.identity = 0;
		value = policy_first(table, index, rows, &key, proto, proto_slot);
	}
	if (value && (value->flags & POLICY_SPLIT)) {
		key.kind = POLICY_KIND_BUCKET256;
		key.bucket = port >> 8;
		value = bpf_map_lookup_elem(table, &key);
		if (value && (value->flags & POLICY_SPLIT)) {
			key.kind = POLICY_KIND_BUCKET16;
			key.bucket = port >> 4;
			value = bpf_map_lookup_elem(table, &key);
		}
	}
	if (!value)
		return POLICY_RESULT(REASON_DEFAULT_DENY, 0, 0);
	__u32 count = value->count;
	/* A port below the first interval (a denied port, often) is decided
	 * without the scan below, which costs such a port a few ns more. */
	if (count == 0 || port < value->low[0])
		return POLICY_RESULT(REASON_DEFAULT_DENY, 0, 0);
	/* The first interval that ends at or above the port: the intervals are
	 * sorted and disjoint, so it is the only one that can hold the port. A
	 * bounded loop, which the verifier walks once per interval: it only
	 * finds `i`, with one comparison per interval. */
	__u32 i;
	for (i = 0; i < POLICY_INLINE; i++) {
		if (i >= count || port <= value->high[i])
			break;
	}
	/* `i` is a different constant on each of the loop's exits, and so is
	 * `count` (the loop's `i >= count` tells it): `i` forgotten and the
	 * count read again, the rest is walked once for all of them. */
	i = forget_u32(i);
	count = value->count;
	__u32 rule = 0, slot = 0, action = POLICY_NO_MATCH;
	if (i < count && i < POLICY_INLINE) {
		/* The mask bounds the index for the verifier; the empty asm keeps
		 * clang from dropping it as redundant. */
		__u32 at = i;
		asm volatile("" : "+r"(at));
		at &= POLICY_INLINE - 1;
		if (value->low[at] <= port) {
			rule = value->decision[at].rule;
			slot = value->decision[at].slot;
			action = value->decision[at].action;
		}
	}
	if (action == POLICY_ALLOW)
		return POLICY_RESULT(REASON_POLICY_ALLOW, slot, rule);
#ifdef ENABLE_DENY_RULES
	if (action == POLICY_DENY)
		return POLICY_RESULT(REASON_POLICY_DENY, slot, rule);
#endif
	return POLICY_RESULT(REASON_DEFAULT_DENY, 0, 0);
}

/* The lookup of one enforced direction: it reads the selector, then the
 * table it names; each table has its own copy of the lookup, so every map
 * lookup call sees one map (the verifier then calls the hash lookup
 * directly, and inlines the index's array lookups). The result is one
 * scalar: the caller, decide_new in endpoint.bpf.c, is a global function,
 * which the verifier checks once. */
#define POLICY_DIRECTION_LOOKUP(name, selector, table_a, table_b)                  \
	static __always_inline __u64 name(__u32 peer, __u32 proto, __u32 port)     \
	{                                                                           \
		__u32 zero = 0;                                                     \
		__u32 *which = bpf_map_lookup_elem(&selector, &zero);               \
		if (!which)                                                         \
			return POLICY_RESULT(REASON_DEFAULT_DENY, 0, 0);            \
		if (*which)                                                         \
			return policy_table_lookup(&table_b, &table_b##_idx,        \
						   &table_b##_row, peer, proto, port); \
		return policy_table_lookup(&table_a, &table_a##_idx,                \
					   &table_a##_row, peer, proto, port);      \
	}

#ifdef ENABLE_INGRESS_POLICY
POLICY_DIRECTION_LOOKUP(policy_lookup_ingress, ep_pol_in, ep_pol_in_a, ep_pol_in_b)
#endif
#ifdef ENABLE_EGRESS_POLICY
POLICY_DIRECTION_LOOKUP(policy_lookup_egress, ep_pol_eg, ep_pol_eg_a, ep_pol_eg_b)
#endif

struct decision {
	struct rule_ref rule;
	__u8 reason;
};

/* The decision for a new connection in direction `dir`. */
static __always_inline void policy_decide(__u8 dir, __u32 peer, const struct packet *p, struct decision *d)
{
	__u64 result = POLICY_RESULT(REASON_NOT_ENFORCED, 0, 0);
	if (dir == DIR_INGRESS) {
#ifdef ENABLE_INGRESS_POLICY
		result = policy_lookup_ingress(peer, p->proto, p->policy_port);
#endif
	} else {
#ifdef ENABLE_EGRESS_POLICY
		result = policy_lookup_egress(peer, p->proto, p->policy_port);
#endif
	}
	d->reason = result & 0xff;
	d->rule.slot = (result >> 8) & 0xffff;
	d->rule.id = result >> 32;
}

#endif
