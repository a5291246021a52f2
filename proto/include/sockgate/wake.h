/* wake.h - a wake-up descriptor: how stop() makes a service's poll or epoll loop return. */
#ifndef SOCKGATE_WAKE_H
#define SOCKGATE_WAKE_H

#include <stddef.h>

/*
 * A wake-up descriptor is a non-blocking, close-on-exec eventfd. Once
 * signalled it stays readable until drained, so several threads may watch
 * the same one (exec's connection threads all watch its stop descriptor and
 * nobody drains it); a loop that keeps running after a wake-up drains it.
 */

/* Opens a wake-up descriptor into *fd; writes why into err on failure (SG_ERR_SYS). */
int sg_wake_open(int *fd, char *err, size_t errlen);

/*
 * Makes fd readable. Async-signal-safe and callable from any thread: it is
 * one write(2), and a counter already full (EAGAIN) is already readable, so
 * the result never matters.
 */
void sg_wake_signal(int fd);

/* Makes fd unreadable again until the next sg_wake_signal (best effort: a failure is logged). */
void sg_wake_drain(int fd);

/* Closes *fd if open and sets it to -1. */
void sg_wake_close(int *fd);

#endif
