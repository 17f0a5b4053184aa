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

/* <0, 0, >0 as the source end sorts before, equal to, after the destination
 * end: addresses in network byte order, then ports. */
static __always_inline int ct_compare_ends(const struct packet *p, __u8 family)
{
	int words = family == AF_INET ? 1 : 4;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (i >= words)
			break;
		__u32 s = bpf_ntohl(p->saddr[i]);
		__u32 d = bpf_ntohl(p->daddr[i]);
		if (s != d)
			return s < d ? -1 : 1;
	}
	__u16 sport = bpf_ntohs(p->sport);
	__u16 dport = bpf_ntohs(p->dport);
	if (sport != dport)
		return sport < dport ? -1 : 1;
	return 0;
}

#define CT_FILL_KEY(k, p, t, dir)                                     \
	do {                                                          \
		if ((t)->flipped) {                                   \
			(k)->sport = (p)->dport;                      \
			(k)->dport = (p)->sport;                      \
		} else {                                              \
			(k)->sport = (p)->sport;                      \
			(k)->dport = (p)->dport;                      \
		}                                                     \
		(k)->proto = (p)->proto;                              \
		(k)->dir = (t)->flipped ? !(dir) : (dir);             \
	} while (0)

static __always_inline void ct_tuple_of(struct ct_tuple *t, const struct packet *p, __u8 dir, __u8 family)
{
	int order = ct_compare_ends(p, family);

	t->flipped = order > 0;
	t->symmetric = order == 0;
	const __u32 *first = t->flipped ? p->daddr : p->saddr;
	const __u32 *second = t->flipped ? p->saddr : p->daddr;
	/* Zeroed per family: padding is part of the hashed key, and an IPv4
	 * key is 16 of the union's 40 bytes. */
	if (family == AF_INET) {
		__builtin_memset(&t->key.v4, 0, sizeof(t->key.v4));
		t->key.v4.saddr = first[0];
		t->key.v4.daddr = second[0];
		CT_FILL_KEY(&t->key.v4, p, t, dir);
	} else {
		__builtin_memset(&t->key.v6, 0, sizeof(t->key.v6));
		__builtin_memcpy(t->key.v6.saddr, first, sizeof(t->key.v6.saddr));
		__builtin_memcpy(t->key.v6.daddr, second, sizeof(t->key.v6.daddr));
		CT_FILL_KEY(&t->key.v6, p, t, dir);
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
			flags |= reply ? CT_FIN_REPLY : CT_FIN_FORWARD;
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
		reply = entry->flipped != t->flipped;
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
	return reply ? CT_REPLY : CT_ESTABLISHED;
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
