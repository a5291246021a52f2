/* echo_loop.h - private to backends/echo: the server's state shared by its loop, TCP and UDP parts. */
#ifndef SOCKGATE_ECHO_LOOP_H
#define SOCKGATE_ECHO_LOOP_H

#include <stdint.h>

#include "server.h"
#include "sockgate/evloop.h"

/* Size of the scratch buffer every read goes through: the largest UDP datagram fits. */
#define ECHO_SCRATCH 65536u

/*
 * One TCP connection. Kept small on purpose (48 bytes on x86-64): ten
 * thousand idle clients cost under a megabyte here, because a connection
 * holds a reply buffer only while its client is not reading its replies.
 */
struct conn {
    int fd;
    uint32_t events;      /* the epoll mask registered now: EPOLLIN or EPOLLOUT, never both */
    uint32_t out_off;     /* bytes of out already sent */
    uint32_t out_len;     /* bytes in out; 0 when out is NULL */
    unsigned char *out;   /* replies the socket did not take yet (at most ECHO_CHUNK bytes) */
    int64_t last_ms;      /* when bytes last moved either way (idle timeout) */
    struct conn *prev;    /* all connections, least recently active first */
    struct conn *next;
};

/* A rate-limited warning: at most one line per interval, with the count of what it hid. */
struct echo_warn_limit {
    int64_t last_ms;
    uint64_t suppressed;
};

struct echo_server {
    enum echo_mode mode;
    unsigned max_conns;
    int64_t idle_timeout_ms;    /* 0: connections never time out */
    struct sg_evloop loop;      /* the epoll set; stop() wakes it */
    int drain_fd;               /* wake-up descriptor: the drain started (drain()) */
    int is_draining;            /* the loop's thread only: a connection closes once idle */
    int tcp_fd;
    int udp_fd;
    uint16_t port;              /* the UDP port we listen on (reflection guard) */
    unsigned nconns;
    struct conn *head;          /* least recently active connection */
    struct conn *tail;          /* most recently active connection */
    unsigned char *scratch;     /* ECHO_SCRATCH bytes: reads land here and are answered from here */
    struct echo_warn_limit warn_full;
    struct echo_warn_limit warn_udp_drop;
};

/* Accepts what the listener has queued, closing connections over max_conns at once. */
void echo_accept_ready(struct echo_server *srv, int64_t now);

/* Handles the epoll events of one connection: reads, answers, flushes or closes it. */
void echo_conn_ready(struct echo_server *srv, struct conn *c, uint32_t events, int64_t now);


/* Closes and frees c. */
void echo_conn_close(struct echo_server *srv, struct conn *c);

/* Closes the connections idle for idle_timeout_ms; returns ms until the next may expire, or -1. */
int echo_conns_expire(struct echo_server *srv, int64_t now);

/* Starts the drain: closes every idle connection now; echo_conn_ready closes the others once answered. */
void echo_conns_drain(struct echo_server *srv);

/* Answers the datagrams waiting on the UDP socket (a bounded batch per call). */
void echo_udp_ready(struct echo_server *srv);

/* Logs a warning unless one went out less than 10 s ago (then counts it for the next line). */
void echo_warn_limited(struct echo_warn_limit *w, int64_t now, const char *what);

#endif
