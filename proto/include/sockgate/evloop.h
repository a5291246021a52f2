/* evloop.h - a stoppable epoll loop with one TCP listener whose accepts pause when out of descriptors. */
#ifndef SOCKGATE_EVLOOP_H
#define SOCKGATE_EVLOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "sockgate/net.h"

/*
 * The loop of a single-threaded service (echo, chat). The service keeps its
 * own dispatch: it registers each descriptor with a token (a pointer it
 * recognises) and handles the events sg_evloop_wait returns. The loop owns
 * the epoll set and a wake-up descriptor; the listener stays the caller's.
 */
struct sg_evloop {
    int epfd;
    int wake_fd;              /* written by sg_evloop_stop, never reported to the caller */
    int listen_fd;            /* borrowed; -1 until sg_evloop_add_listener */
    void *listen_token;
    int64_t accept_resume_ms; /* accepting is paused until then; 0 when accepting */
    int stopping;             /* set by sg_evloop_wait once a stop was requested */
};

/* Creates the epoll set and the wake-up descriptor; on failure l is left closed. */
int sg_evloop_open(struct sg_evloop *l, char *err, size_t errlen);

/* Closes what sg_evloop_open made (not the listener); safe on a loop that never opened. */
void sg_evloop_close(struct sg_evloop *l);

/* Watches fd for events, reported with token; returns 0, or -1 with errno set. */
int sg_evloop_add(struct sg_evloop *l, int fd, uint32_t events, void *token);

/*
 * Changes fd's events to events unless *current already holds them, and then
 * records them in *current. Returns 0, or -1 (logged) if epoll refuses.
 */
int sg_evloop_set_events(struct sg_evloop *l, int fd, uint32_t *current, uint32_t events, void *token);

/* Watches the listener fd for new connections, reported with token; returns 0, or -1 with errno set. */
int sg_evloop_add_listener(struct sg_evloop *l, int fd, void *token);

/*
 * Binds a TCP listener and a UDP socket on one port of addr (sg_listen_tcp_udp)
 * into *tcp_fd and *udp_fd, which the caller closes, and watches both, each
 * with its own address as token. Writes why into err on failure.
 */
int sg_evloop_listen_tcp_udp(struct sg_evloop *l, const struct sg_addr *addr, int *tcp_fd, int *udp_fd, char *err,
                             size_t errlen);

/*
 * Waits up to timeout_ms (-1: no limit, though a pause of accepts shortens it)
 * and stores the events in evs, at most max. Returns how many, 0 when
 * interrupted by a signal, -1 (logged) on an epoll failure. A stop request is
 * drained and sets l->stopping instead of being returned; the other events of
 * the same batch are still returned, in epoll's order, so the caller handles
 * them before it leaves its loop.
 */
int sg_evloop_wait(struct sg_evloop *l, struct epoll_event *evs, int max, int timeout_ms);

/*
 * Accepts one connection from the listener (see sg_accept). Returns the
 * descriptor, owned by the caller, or -1 when the queue is empty or the
 * process is out of descriptors; in the latter case the listener is unwatched
 * for SG_ACCEPT_PAUSE_MS, after which sg_evloop_wait watches it again.
 */
int sg_evloop_accept(struct sg_evloop *l, int64_t now);

/* Asks the loop to stop: sg_evloop_wait returns soon and sets l->stopping. Async-signal-safe. */
void sg_evloop_stop(struct sg_evloop *l);

#endif
