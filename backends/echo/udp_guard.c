/* udp_guard.c - the reflection guard of the UDP services (echo, time). */
#include "udp_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* Returns 1 when a host-order IPv4 source address can be a real, single sender. */
static int ipv4_source_ok(uint32_t a)
{
    if ((a >> 24) == 0)
        return 0; /* 0.0.0.0/8: "this network", never a valid source */
    if ((a >> 28) >= 0xE)
        return 0; /* 224.0.0.0/4 multicast, 240.0.0.0/4 reserved and 255.255.255.255 broadcast */
    return 1;
}

static int port_ok(uint16_t port, uint16_t own_port)
{
    switch (port) {
    case 0:  /* not a port anyone can receive on: a forged source */
    case 7:  /* echo */
    case 13: /* daytime */
    case 17: /* qotd */
    case 19: /* chargen */
    case 37: /* time */
        return 0;
    default:
        return port != own_port;
    }
}

int udp_reply_allowed(const struct sockaddr *src, uint16_t own_port)
{
    /* The kernel fills a UNIX sender's address itself: nobody can forge one, so there is nothing to reflect. */
    if (src->sa_family == AF_UNIX)
        return 1;
    if (src->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)src;
        return port_ok(ntohs(in->sin_port), own_port) && ipv4_source_ok(ntohl(in->sin_addr.s_addr));
    }
    if (src->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)src;
        const uint8_t *b = in6->sin6_addr.s6_addr;
        if (!port_ok(ntohs(in6->sin6_port), own_port))
            return 0;
        if (IN6_IS_ADDR_MULTICAST(&in6->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            return 0;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return ipv4_source_ok((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15]);
        return 1;
    }
    return 0;
}
