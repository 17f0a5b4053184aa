/* Peer identity: the node-wide ipcache, an LPM trie from IP prefix to
 * security identity, with host addresses (/32, /128) in hash maps in front
 * of it: a host entry is the longest match for its address, and most peers
 * are hosts (endpoints), so most lookups skip the trie walk. An address no prefix covers is the world of its
 * family (`world-ipv4` or `world-ipv6`), as Resolved::identity_of says. */
#ifndef POLC_IPCACHE_H
#define POLC_IPCACHE_H

#include "common.h"

/* prefixlen counts the family byte and padding (32 bits) plus the address
 * prefix, so IPv4 and IPv6 prefixes never match each other. */
struct ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u32 addr[4];
};

struct ipcache_value {
	__u32 identity;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, IPCACHE_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_ipcache SEC(".maps");

/* Host maps per family, keyed by the bare address: the hash over a 4-byte
 * IPv4 key is a third of the one over {family, pad, 16 bytes}. */
#define IPCACHE_HOST_MAP(name, key_type)             \
	struct {                                     \
		__uint(type, BPF_MAP_TYPE_HASH);     \
		__type(key, key_type);               \
		__type(value, struct ipcache_value); \
		__uint(max_entries, IPCACHE_MAP_SIZE); \
		__uint(pinning, LIBBPF_PIN_BY_NAME); \
	} name SEC(".maps")

struct ipcache_host6_key {
	__u32 addr[4];
};

IPCACHE_HOST_MAP(node_ipc_host4, __be32);
IPCACHE_HOST_MAP(node_ipc_host6, struct ipcache_host6_key);

/* `family` is the program's constant, so one host map is looked up. */
static __always_inline __u32 ipcache_identity(__u8 family, const __u32 *addr)
{
	struct ipcache_value *value;
	if (family == AF_INET) {
		__be32 host4 = addr[0];
		value = bpf_map_lookup_elem(&node_ipc_host4, &host4);
	} else {
		struct ipcache_host6_key host6;
		__builtin_memcpy(host6.addr, addr, sizeof(host6.addr));
		value = bpf_map_lookup_elem(&node_ipc_host6, &host6);
	}
	if (value)
		return value->identity;

	struct ipcache_key key = {
		.prefixlen = 32 + (family == AF_INET ? 32 : 128),
		.family = family,
	};
	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	value = bpf_map_lookup_elem(&node_ipcache, &key);
	if (value)
		return value->identity;
	return family == AF_INET ? IDENTITY_WORLD_IPV4 : IDENTITY_WORLD_IPV6;
}

#endif
