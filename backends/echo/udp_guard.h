/* udp_guard.h - which UDP senders a service that answers datagrams must not answer. */
#ifndef SOCKGATE_UDP_GUARD_H
#define SOCKGATE_UDP_GUARD_H

#include <stdint.h>
#include <sys/socket.h>

/*
 * Returns 1 when a reply may be sent to the datagram's source src, 0 when it
 * must be dropped: source port 0, a broadcast, multicast, unspecified or
 * reserved IPv4 source (also inside an IPv4-mapped IPv6 address), an IPv6
 * multicast or unspecified source, the well-known ports of other reflecting
 * services (echo 7, daytime 13, qotd 17, chargen 19, time 37), and own_port
 * (another instance of the same service). Such sources are forged or are a
 * service that would answer back, which turns a reply into a loop or a
 * reflection attack.
 */
int udp_reply_allowed(const struct sockaddr *src, uint16_t own_port);

#endif
