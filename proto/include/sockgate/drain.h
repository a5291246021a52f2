/* drain.h - how a connection thread waits for its next request while its service may start draining. */
#ifndef SOCKGATE_DRAIN_H
#define SOCKGATE_DRAIN_H

#include <stdint.h>

/* What sg_drain_wait saw. */
enum sg_drain_wait { SG_DRAIN_READABLE, SG_DRAIN_CLOSE, SG_DRAIN_TIMEOUT, SG_DRAIN_ERROR };

/*
 * Waits until fd is readable (a request, or EOF, is there) or until
 * deadline_ms (sg_now_ms; -1: none). When drain_fd (a wake-up descriptor
 * signalled when the drain starts and never drained, or -1) is readable and
 * fd has no byte pending, returns SG_DRAIN_CLOSE: the connection is idle and
 * its service drains, so the caller closes it (the client sees EOF at once
 * and moves to another replica). A request already in the socket wins over
 * the drain: it is answered.
 */
enum sg_drain_wait sg_drain_wait(int fd, int drain_fd, int64_t deadline_ms);

/* Returns 1 when fd has bytes (or EOF) to read right now, else 0. */
int sg_drain_has_input(int fd);

#endif
