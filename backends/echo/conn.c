/* conn.c - the echo service's TCP connections: accept, read, answer, backpressure, idle timeout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo_loop.h"
#include "sockgate/drain.h"
#include "sockgate/log.h"

#define ACCEPT_BATCH 64          /* accepts per wake-up, so a connection storm cannot starve clients */

/* Unlinks c from the activity list. */
static void list_remove(struct echo_server *srv, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->tail = c->prev;
    c->prev = c->next = NULL;
}

/* Appends c as the most recently active connection. */
static void list_append(struct echo_server *srv, struct conn *c)
{
    c->prev = srv->tail;
    c->next = NULL;
    if (srv->tail)
        srv->tail->next = c;
    else
        srv->head = c;
    srv->tail = c;
}

/*
 * Records progress on c. Keeping the list in activity order makes the idle
 * check look only at its head, so the timeout costs O(1) per event however
 * many connections there are.
 */
static void touch(struct echo_server *srv, struct conn *c, int64_t now)
{
    c->last_ms = now;
    if (srv->idle_timeout_ms && srv->tail != c) {
        list_remove(srv, c);
        list_append(srv, c);
    }
}

void echo_conn_close(struct echo_server *srv, struct conn *c)
{
    list_remove(srv, c);
    /* close() also removes the descriptor from epoll: it is never shared or dup'ed. */
    close(c->fd);
    free(c->out);
    free(c);
    srv->nconns--;
}

/* Switches c between reading (EPOLLIN) and flushing (EPOLLOUT); returns -1 if epoll refuses. */
static int set_events(struct echo_server *srv, struct conn *c, uint32_t events)
{
    return sg_evloop_set_events(&srv->loop, c->fd, &c->events, events, c);
}

/*
 * Policy for connections over max_conns: accept and close at once rather
 * than leave them in the listen queue. A client then sees EOF immediately
 * instead of a connection that hangs with no answer, and the listener never
 * stays readable while ignored (which with level-triggered epoll would spin).
 */
static void refuse(struct echo_server *srv, int fd, int64_t now)
{
    close(fd);
    echo_warn_limited(&srv->warn_full, now, "connection refused: --max-conns reached");
}

void echo_accept_ready(struct echo_server *srv, int64_t now)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct conn *c;
        /* -1: nothing queued, or out of descriptors (the loop then pauses accepts for a moment). */
        int fd = sg_evloop_accept(&srv->loop, now);
        if (fd < 0)
            return;
        if (srv->nconns >= srv->max_conns) {
            refuse(srv, fd, now);
            continue;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
            sg_warn("out of memory for a new connection; closing it");
            close(fd);
            continue;
        }
        c->fd = fd;
        c->events = EPOLLIN;
        c->last_ms = now;
        if (sg_evloop_add(&srv->loop, fd, EPOLLIN, c) < 0) {
            sg_error("epoll_ctl add: %s", strerror(errno));
            close(fd);
            free(c);
            continue;
        }
        list_append(srv, c);
        srv->nconns++;
    }
}

/* Sends what c holds; returns -1 when c must be closed. */
static int flush_out(struct echo_server *srv, struct conn *c, int64_t now)
{
    ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    c->out_off += (uint32_t)w;
    touch(srv, c, now);
    if (c->out_off < c->out_len)
        return 0;
    /* Drained: give the buffer back so an idle connection costs only its struct, and read again. */
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = 0;
    return set_events(srv, c, EPOLLIN);
}

/*
 * Reads one chunk from c and answers it at once from the scratch buffer.
 * Whatever the socket does not take is kept in c->out and reading stops
 * until it is sent: a client that never reads its replies therefore holds at
 * most ECHO_CHUNK bytes here, and TCP flow control pushes back on it.
 * Returns -1 when c must be closed (EOF, error).
 */
static int read_and_answer(struct echo_server *srv, struct conn *c, int64_t now)
{
    unsigned char *buf = srv->scratch;
    ssize_t n = recv(c->fd, buf, ECHO_CHUNK, MSG_DONTWAIT);
    ssize_t w;

    if (n == 0)
        return -1; /* nothing is pending (we only read when out is empty): close now */
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    touch(srv, c, now);
    if (srv->mode == ECHO_MODE_UPPER)
        echo_upper(buf, (size_t)n);
    w = send(c->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        w = 0;
    }
    if (w == n)
        return 0;
    c->out = malloc((size_t)(n - w));
    if (!c->out) {
        sg_warn("out of memory for a reply; closing the connection");
        return -1;
    }
    memcpy(c->out, buf + w, (size_t)(n - w));
    c->out_off = 0;
    c->out_len = (uint32_t)(n - w);
    return set_events(srv, c, EPOLLOUT);
}

void echo_conn_ready(struct echo_server *srv, struct conn *c, uint32_t events, int64_t now)
{
    int rc = 0;
    if (events & EPOLLERR) {
        rc = -1;
    } else if (c->out) {
        /* Flushing: EPOLLHUP too means the peer is gone, which send() then reports. */
        if (events & (EPOLLOUT | EPOLLHUP))
            rc = flush_out(srv, c, now);
    } else if (events & (EPOLLIN | EPOLLHUP)) {
        rc = read_and_answer(srv, c, now);
    }
    /* Draining: a connection with nothing left to answer and nothing asked closes (the client sees EOF and moves on). */
    if (rc < 0 || (srv->is_draining && !c->out && !sg_drain_has_input(c->fd)))
        echo_conn_close(srv, c);
}

void echo_conns_drain(struct echo_server *srv)
{
    struct conn *c = srv->head, *next;
    srv->is_draining = 1;
    for (; c; c = next) {
        next = c->next;
        if (!c->out && !sg_drain_has_input(c->fd))
            echo_conn_close(srv, c);
    }
}

int echo_conns_expire(struct echo_server *srv, int64_t now)
{
    if (!srv->idle_timeout_ms)
        return -1;
    while (srv->head && now - srv->head->last_ms >= srv->idle_timeout_ms)
        echo_conn_close(srv, srv->head);
    if (!srv->head)
        return -1;
    return (int)(srv->head->last_ms + srv->idle_timeout_ms - now);
}
