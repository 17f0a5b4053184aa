/* Connection tracking, node-wide. An entry records a connection some
 * endpoint's policy allowed in one direction; later packets of it
 * (established) and its replies pass without a policy lookup, even where
 * the reverse direction is denied. TCP RST, or FIN from both sides, closes
 * the entry: it then lives CT_CLOSE_TIMEOUT_SEC more and is not refreshed.
 * An expired entry is deleted when found and the packet counts as new. */
#ifndef POLC_CONNTRACK_H
#define POLC_CONNTRACK_H

#include "common.h"

struct ct_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 dir; /* policy direction of the packet that opened the connection */
	__u8 pad;
};

#define CT_FIN_FORWARD 0x01
#define CT_FIN_REPLY 0x02
#define CT_CLOSED 0x04

struct ct_entry {
	__u64 expires; /* bpf_ktime_get_ns() deadline */
	__u32 rule;    /* the rule that allowed the connection (0: not enforced) */
	__u8 flags;
	__u8 pad;
	__u16 slot;    /* its counter slot in the endpoint that opened it */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, CT_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_ct SEC(".maps");

enum ct_state {
	CT_NEW,
	CT_ESTABLISHED,
	CT_REPLY,
};

#define NSEC_PER_SEC 1000000000ULL

static __always_inline void ct_key_of(struct ct_key *key, const struct packet *p, __u8 dir, int reverse)
{
	__builtin_memset(key, 0, sizeof(*key));
	if (reverse) {
		__builtin_memcpy(key->saddr, p->daddr, sizeof(key->saddr));
		__builtin_memcpy(key->daddr, p->saddr, sizeof(key->daddr));
		key->sport = p->dport;
		key->dport = p->sport;
		key->dir = !dir;
	} else {
		__builtin_memcpy(key->saddr, p->saddr, sizeof(key->saddr));
		__builtin_memcpy(key->daddr, p->daddr, sizeof(key->daddr));
		key->sport = p->sport;
		key->dport = p->dport;
		key->dir = dir;
	}
	key->proto = p->proto;
	key->family = p->family;
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
	entry->flags = flags;
	entry->expires = now + ct_lifetime(p, flags);
}

/* A live entry for `key`, deleting it if it has expired. */
static __always_inline struct ct_entry *ct_find(struct ct_key *key, __u64 now)
{
	struct ct_entry *entry = bpf_map_lookup_elem(&node_ct, key);
	if (entry && entry->expires <= now) {
		bpf_map_delete_elem(&node_ct, key);
		return NULL;
	}
	return entry;
}

static __always_inline enum ct_state ct_lookup(const struct packet *p, __u8 dir, struct rule_ref *rule)
{
	struct ct_key key;
	__u64 now = bpf_ktime_get_ns();

	ct_key_of(&key, p, dir, 0);
	struct ct_entry *entry = ct_find(&key, now);
	if (entry) {
		ct_observe(entry, p, 0, now);
		rule->id = entry->rule;
		rule->slot = entry->slot;
		return CT_ESTABLISHED;
	}
	ct_key_of(&key, p, dir, 1);
	entry = ct_find(&key, now);
	if (entry) {
		ct_observe(entry, p, 1, now);
		rule->id = entry->rule;
		rule->slot = entry->slot;
		return CT_REPLY;
	}
	return CT_NEW;
}

static __always_inline void ct_create(const struct packet *p, __u8 dir, const struct rule_ref *rule)
{
	struct ct_key key;
	struct ct_entry entry = { .rule = rule->id, .slot = rule->slot };
	__u64 now = bpf_ktime_get_ns();

	ct_key_of(&key, p, dir, 0);
	ct_observe(&entry, p, 0, now);
	bpf_map_update_elem(&node_ct, &key, &entry, BPF_ANY);
}

#endif
