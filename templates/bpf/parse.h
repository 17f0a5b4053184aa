/* Packet parsing: Ethernet, IPv4, IPv6 (with extension headers), and the L4
 * fields policy and conntrack need. Direct packet access only, every read
 * after an explicit bounds check against data_end, so a truncated or
 * malformed packet yields a drop reason and never an out-of-bounds read.
 *
 * Minimal lengths (what "truncated" means): IPv4 20 bytes and then its IHL,
 * IPv6 40, each IPv6 extension header 8 and then its length, TCP 20, UDP 8,
 * SCTP 12, ICMP and ICMPv6 8; other protocols need nothing. */
#ifndef POLC_PARSE_H
#define POLC_PARSE_H

#include "common.h"

#define IPV6_MAX_EXT_HEADERS 4

#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define ICMPV6_ND_FIRST 133 /* router solicitation .. redirect */
#define ICMPV6_ND_LAST 137

#define PARSE_OK 0

static __always_inline __u16 load_be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline int icmp_is_echo(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMP)
		return type == ICMP_ECHO_REQUEST || type == ICMP_ECHO_REPLY;
	return type == ICMPV6_ECHO_REQUEST || type == ICMPV6_ECHO_REPLY;
}

/* Reads the L4 header at `off`. Returns PARSE_OK, a drop reason, or
 * REASON_NEIGHBOUR for neighbour discovery. */
static __always_inline int parse_l4(void *data, void *data_end, __u32 off, struct packet *p)
{
	__u8 *l4 = data + off;

	p->sport = 0;
	p->dport = 0;
	p->policy_port = 0;
	p->tcp_flags = 0;
	p->tracked = 1;

	switch (p->proto) {
	case IPPROTO_TCP:
		if ((void *)(l4 + 20) > data_end)
			return REASON_TRUNCATED;
		p->tcp_flags = l4[13];
		break;
	case IPPROTO_UDP:
		if ((void *)(l4 + 8) > data_end)
			return REASON_TRUNCATED;
		break;
	case IPPROTO_SCTP:
		if ((void *)(l4 + 12) > data_end)
			return REASON_TRUNCATED;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		if ((void *)(l4 + 8) > data_end)
			return REASON_TRUNCATED;
		__u8 type = l4[0];
		p->policy_port = type;
		if (p->proto == IPPROTO_ICMPV6 && type >= ICMPV6_ND_FIRST && type <= ICMPV6_ND_LAST)
			return REASON_NEIGHBOUR;
		/* Echo request and reply share the identifier: tracked like a port
		 * pair that reads the same both ways. Other ICMP messages are
		 * decided by policy each time. */
		if (icmp_is_echo(p->proto, type)) {
			__builtin_memcpy(&p->sport, l4 + 4, 2);
			p->dport = p->sport;
		} else {
			p->tracked = 0;
		}
		return PARSE_OK;
	}
	default:
		return PARSE_OK;
	}
	__builtin_memcpy(&p->sport, l4, 2);
	__builtin_memcpy(&p->dport, l4 + 2, 2);
	p->policy_port = load_be16(l4 + 2);
	return PARSE_OK;
}

/* parse_l4 for IPv6, as a global function: the extension headers leave the
 * L4 offset different on each path, and the verifier would walk parse_l4
 * once per path; a global function it checks once, for any offset. The
 * offset is at most 54 + 4 * 2048 bytes, so the bound below never cuts
 * (the verifier needs one to check packet access from it). */
#define IPV6_MAX_L4_OFFSET 0x3fff
__noinline int parse_l4_at(struct __sk_buff *skb, __u32 off, struct packet *p __arg_nonnull)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (off > IPV6_MAX_L4_OFFSET)
		return REASON_TRUNCATED;
	return parse_l4(data, data_end, off, p);
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *ip = data + ETH_HLEN;

	p->len = skb->len;
	if ((void *)(ip + 20) > data_end)
		return REASON_TRUNCATED;
	if ((ip[0] >> 4) != 4)
		return REASON_INVALID;
	__u32 ihl = ip[0] & 0x0f;
	if (ihl < 5)
		return REASON_INVALID;
	__u32 off = ETH_HLEN + ihl * 4;
	if (data + off > data_end)
		return REASON_TRUNCATED;
	if (load_be16(ip + 6) & 0x1fff)
		return REASON_FRAGMENT;

	p->family = AF_INET;
	p->proto = ip[9];
	__builtin_memset(p->saddr, 0, sizeof(p->saddr));
	__builtin_memset(p->daddr, 0, sizeof(p->daddr));
	__builtin_memcpy(&p->saddr[0], ip + 12, 4);
	__builtin_memcpy(&p->daddr[0], ip + 16, 4);
	return parse_l4(data, data_end, off, p);
}

/* Hop-by-hop (0), routing (43), fragment (44), destination options (60),
 * as one bit test: a chain of comparisons would give the verifier a known
 * header type on each path and multiply the paths it walks. */
#define IPV6_EXTENSION_MASK ((1ULL << 0) | (1ULL << 43) | (1ULL << 44) | (1ULL << 60))

static __always_inline int ipv6_is_extension(__u8 nexthdr)
{
	return nexthdr < 64 && ((IPV6_EXTENSION_MASK >> nexthdr) & 1);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *ip6 = data + ETH_HLEN;

	p->len = skb->len;
	if ((void *)(ip6 + 40) > data_end)
		return REASON_TRUNCATED;
	if ((ip6[0] >> 4) != 6)
		return REASON_INVALID;

	p->family = AF_INET6;
	__builtin_memcpy(p->saddr, ip6 + 8, 16);
	__builtin_memcpy(p->daddr, ip6 + 24, 16);

	__u8 nexthdr = ip6[6];
	__u32 off = ETH_HLEN + 40;
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		if (!ipv6_is_extension(nexthdr))
			break;
		__u8 *ext = data + off;
		if ((void *)(ext + 8) > data_end)
			return REASON_TRUNCATED;
		__u32 len;
		if (nexthdr == 44) {
			if (load_be16(ext + 2) & 0xfff8)
				return REASON_FRAGMENT;
			len = 8;
		} else {
			len = ((__u32)ext[1] + 1) * 8;
		}
		nexthdr = ext[0];
		off += len;
	}
	if (ipv6_is_extension(nexthdr))
		return REASON_INVALID;
	p->proto = nexthdr;
	return parse_l4_at(skb, off, p);
}

#endif
