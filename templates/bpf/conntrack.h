/* Connection tracking, node-wide. An entry records a connection some
 * endpoint's policy allowed in one direction; later packets of it
 * (established) and its replies pass without a policy lookup, even where
 * the reverse direction is denied. TCP RST, or FIN from both sides, closes
 * the entry: it then lives CT_CLOSE_TIMEOUT_SEC more and is not refreshed.
 * An expired entry is deleted when found and the packet counts as new.
 *
 * One lookup per packet: a connection and its replies share one key, the
 * tuple in canonical orientation (the lower (address, port) end first, the
 * direction flipped with it), and the entry remembers the orientation of the
 * packet that opened it. A packet in the opener's orientation is
 * established, one in the other orientation a reply. A tuple that reads the
 * same both ways (same address and port at both ends) has no orientation:
 * its reply is found by a second lookup with the other direction.
 *
 * IPv4 has a map of its own so its key is 16 bytes, not 40: the hash over
 * the key is a good part of a lookup's cost. */
#ifndef POLC_CONNTRACK_H
#define POLC_CONNTRACK_H

#include "common.h"

struct ct_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* policy direction, as the canonical orientation sees it */
	__u8 pad[2];
};

struct ct_key6 {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

#define CT_FIN_FORWARD 0x01
#define CT_FIN_REPLY 0x02
#define CT_CLOSED 0x04

struct ct_entry {
	__u64 expires; /* CLOCK_MONOTONIC deadline, see ct_now() */
	__u32 rule;    /* the rule that allowed the connection (0: not enforced) */
	__u8 flags;
	__u8 flipped;  /* the opener's packet was in non-canonical orientation */
	__u16 slot;    /* its counter slot in the endpoint that opened it */
};

#define CT_MAP(name, key_type)                       \
	struct {                                     \
		__uint(type, BPF_MAP_TYPE_LRU_HASH); \
		__type(key, key_type);               \
		__type(value, struct ct_entry);      \
		__uint(max_entries, CT_MAP_SIZE);    \
		__uint(pinning, LIBBPF_PIN_BY_NAME); \
	} name SEC(".maps")

CT_MAP(node_ct4, struct ct_key4);
CT_MAP(node_ct6, struct ct_key6);

enum ct_state {
	CT_NEW,
	CT_ESTABLISHED,
	CT_REPLY,
};

/* A packet's conntrack key, built once and used for the lookup and, for a
 * new allowed connection, the entry. Every function here takes `family`,
 * the program's constant, so every branch on it folds away (the verifier
 * does not know a byte stored in the tuple: it would walk both families). */
struct ct_tuple {
	union {
		struct ct_key4 v4;
		struct ct_key6 v6;
	} key;
	__u8 flipped;   /* the packet is in non-canonical orientation */
	__u8 symmetric; /* both orientations are the same tuple */
};

#define NSEC_PER_SEC 1000000000ULL

/* CLOCK_MONOTONIC at tick resolution: lifetimes are seconds, and the coarse
 * clock reads a stored value where bpf_ktime_get_ns() reads the clock
 * source. Deadlines stay comparable with CLOCK_MONOTONIC in user space. */
static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* The tuple's orientation is computed and applied without branches: a
 * branch on it would give the verifier a known orientation on each path,
 * paths it then walks apart to the end of the program. */

/* 1 if a < b, for a and b below 2^63: the sign of a - b (the empty asm
 * keeps clang from turning it back into a compare and a branch). */
static __always_inline __u64 ct_below(__u64 a, __u64 b)
{
	__u64 diff = a - b;
	asm volatile("" : "+r"(diff));
	return diff >> 63;
}

/* `x` if `pick` is 0, `y` if it is 1. */
static __always_inline __u32 ct_pick(__u32 x, __u32 y, __u64 pick)
{
	return x ^ ((x ^ y) & -(__u32)pick);
}

/* Whether the source end sorts after (`*after`) or before (`*before`) the
 * destination end: addresses in network byte order, then ports. Compared
 * from the least significant part up, each part deciding where the more
 * significant ones are equal. */
static __always_inline void ct_compare_ends(const struct packet *p, __u8 family, __u64 *after, __u64 *before)
{
	__u64 s = bpf_ntohs(p->sport), d = bpf_ntohs(p->dport);
	__u64 gt = ct_below(d, s), lt = ct_below(s, d);
	int words = family == AF_INET ? 1 : 4;
#pragma unroll
	for (int i = 3; i >= 0; i--) {
		if (i >= words)
			continue;
		s = bpf_ntohl(p->saddr[i]);
		d = bpf_ntohl(p->daddr[i]);
		__u64 g = ct_below(d, s), l = ct_below(s, d);
		__u64 equal = (g | l) ^ 1;
		gt = g | (equal & gt);
		lt = l | (equal & lt);
	}
	*after = gt;
	*before = lt;
}

#define CT_FILL_KEY(k, p, flipped, dir)                                  \
	do {                                                             \
		(k)->sport = ct_pick((p)->sport, (p)->dport, flipped);    \
		(k)->dport = ct_pick((p)->dport, (p)->sport, flipped);    \
		(k)->proto = (p)->proto;                                 \
		(k)->dir = (dir) ^ (flipped);                            \
	} while (0)

static __always_inline void ct_tuple_of(struct ct_tuple *t, const struct packet *p, __u8 dir, __u8 family)
{
	__u64 after, before;
	ct_compare_ends(p, family, &after, &before);

	t->flipped = after;
	t->symmetric = (after | before) ^ 1;
	/* Zeroed per family: padding is part of the hashed key, and an IPv4
	 * key is 16 of the union's 40 bytes. */
	if (family == AF_INET) {
		__builtin_memset(&t->key.v4, 0, sizeof(t->key.v4));
		t->key.v4.saddr = ct_pick(p->saddr[0], p->daddr[0], after);
		t->key.v4.daddr = ct_pick(p->daddr[0], p->saddr[0], after);
		CT_FILL_KEY(&t->key.v4, p, after, dir);
	} else {
		__builtin_memset(&t->key.v6, 0, sizeof(t->key.v6));
#pragma unroll
		for (int i = 0; i < 4; i++) {
			t->key.v6.saddr[i] = ct_pick(p->saddr[i], p->daddr[i], after);
			t->key.v6.daddr[i] = ct_pick(p->daddr[i], p->saddr[i], after);
		}
		CT_FILL_KEY(&t->key.v6, p, after, dir);
	}
}

/* The other policy direction of the same tuple (only a symmetric tuple's
 * reply needs it). */
static __always_inline void ct_flip_dir(struct ct_tuple *t, __u8 family)
{
	if (family == AF_INET)
		t->key.v4.dir = !t->key.v4.dir;
	else
		t->key.v6.dir = !t->key.v6.dir;
}

static __always_inline __u64 ct_lifetime(const struct packet *p, __u8 flags)
{
	if (flags & CT_CLOSED)
		return CT_CLOSE_TIMEOUT_SEC * NSEC_PER_SEC;
	if (p->proto == IPPROTO_TCP)
		return CT_LIFETIME_TCP_SEC * NSEC_PER_SEC;
	return CT_LIFETIME_NONTCP_SEC * NSEC_PER_SEC;
}

/* Updates the close state with this packet's TCP flags and refreshes the
 * deadline; a closed entry keeps its deadline. */
static __always_inline void ct_observe(struct ct_entry *entry, const struct packet *p, int reply, __u64 now)
{
	if (entry->flags & CT_CLOSED)
		return;
	__u8 flags = entry->flags;
	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & TCP_FLAG_FIN)
			flags |= CT_FIN_FORWARD << reply; /* CT_FIN_REPLY for a reply */
		if ((p->tcp_flags & TCP_FLAG_RST) || (flags & (CT_FIN_FORWARD | CT_FIN_REPLY)) == (CT_FIN_FORWARD | CT_FIN_REPLY))
			flags |= CT_CLOSED;
	}
	/* Written only when changed: a store dirties the cache line other
	 * CPUs read for the same connection. */
	if (flags != entry->flags)
		entry->flags = flags;
	entry->expires = now + ct_lifetime(p, flags);
}

/* A live entry for the tuple's key, deleting it if it has expired. The
 * clock is read only when an entry is found (`*now` 0: not read yet). */
static __always_inline struct ct_entry *ct_find(struct ct_tuple *t, __u8 family, __u64 *now)
{
	void *map = family == AF_INET ? (void *)&node_ct4 : (void *)&node_ct6;
	struct ct_entry *entry = bpf_map_lookup_elem(map, &t->key);
	if (!entry)
		return NULL;
	if (!*now)
		*now = ct_now();
	if (entry->expires <= *now) {
		bpf_map_delete_elem(map, &t->key);
		return NULL;
	}
	return entry;
}

static __always_inline enum ct_state ct_lookup(struct ct_tuple *t, __u8 family, const struct packet *p, __u64 *now,
					       struct rule_ref *rule)
{
	int reply;
	struct ct_entry *entry = ct_find(t, family, now);
	if (entry) {
		reply = (entry->flipped ^ t->flipped) & 1;
	} else {
		if (!t->symmetric)
			return CT_NEW;
		ct_flip_dir(t, family);
		entry = ct_find(t, family, now);
		ct_flip_dir(t, family);
		if (!entry)
			return CT_NEW;
		reply = 1;
	}
	ct_observe(entry, p, reply, *now);
	rule->id = entry->rule;
	rule->slot = entry->slot;
	return CT_ESTABLISHED + reply; /* CT_REPLY for a reply */
}

static __always_inline void ct_create(struct ct_tuple *t, __u8 family, const struct packet *p, __u64 now,
				      const struct rule_ref *rule)
{
	struct ct_entry entry = { .rule = rule->id, .slot = rule->slot, .flipped = t->flipped };
	void *map = family == AF_INET ? (void *)&node_ct4 : (void *)&node_ct6;

	ct_observe(&entry, p, 0, now);
	bpf_map_update_elem(map, &t->key, &entry, BPF_ANY);
}

#endif
