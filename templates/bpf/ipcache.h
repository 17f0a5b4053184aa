/* Peer identity: the node-wide ipcache, an LPM trie from IP prefix to
 * security identity, with host addresses (/32, /128) in a hash map in front
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

struct ipcache_host_key {
	__u8 family;
	__u8 pad[3];
	__u32 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ipcache_host_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, IPCACHE_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_ipc_host SEC(".maps");

static __always_inline __u32 ipcache_identity(__u8 family, const __u32 *addr)
{
	struct ipcache_host_key host = { .family = family };
	__builtin_memcpy(host.addr, addr, sizeof(host.addr));
	struct ipcache_value *value = bpf_map_lookup_elem(&node_ipc_host, &host);
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
