/* upcall_pipe.c - raw (echo) calls of one worker pipelined on one connection per backend address. */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "upcall_impl.h"

/*
 * Why a pipe: the echo protocol answers byte for byte, in order, so any number
 * of calls can share one connection, their answers told apart by length. A
 * connection per call in flight cost a backend connection per client (1,000
 * clients: 1,000 sockets each side, a send, a recv and two wake-ups per call);
 * a pipe sends what a loop round queued in one sendmsg and reads the answers
 * in one recv.
 *
 * Bytes sent and not answered yet, per connection. The echo service reads
 * 16 KiB at a time and stops reading while its answer waits for us; we always
 * read, so this bounds only what sits in the sockets' buffers.
 */
#define PIPE_WINDOW (64u * 1024u)
/* Calls one sendmsg carries at most. */
#define PIPE_IOV 64
/* An idle pipe unused this long is reconnected rather than trusted. */
#define PIPE_MAX_IDLE_MS 30000

/*
 * One connection of one worker to one backend address, and the calls on it in
 * the order their bytes go out and their answers come back. The loop's thread
 * only, so no lock.
 */
struct bpipe {
    struct wk_watch watch; /* fd -1 once closed (the struct lives to the end of the round) */
    struct worker *wk;
    struct upstream *up;
    int slot;
    uint32_t gen;
    int is_connecting;
    int64_t connect_by;
    struct upcall *head, *tail; /* head: the call whose answer comes next */
    struct upcall *unsent;      /* the first call with bytes still to send, NULL when all went */
    uint64_t sent, answered;    /* bytes, for the window */
    int64_t idle_since;
    int is_flush_queued;
    struct bpipe *flush_next;
    struct bpipe *all_prev, *all_next; /* every open pipe of the worker, for the shutdown */
};

/*
 * This worker's pipes per backend and address (a pipe of an address that left
 * its slot is out of the table and closes when its last call ends), every open
 * one, and those with calls queued this round.
 */
static _Thread_local struct bpipe *pipes[BACKEND__COUNT][BAL_MAX_ADDRS];
static _Thread_local struct bpipe *all_pipes;
static _Thread_local struct bpipe *flush_list;

static void pipe_broke(struct bpipe *p, int rc, const char *what);

static void pipe_want_flush(struct bpipe *p)
{
    if (p->is_flush_queued)
        return;
    p->is_flush_queued = 1;
    p->flush_next = flush_list;
    flush_list = p;
}

static void queue_append(struct bpipe *p, struct upcall *c)
{
    c->pipe = p;
    c->pipe_next = NULL;
    c->pipe_prev = p->tail;
    if (p->tail)
        p->tail->pipe_next = c;
    else
        p->head = c;
    p->tail = c;
    if (!p->unsent)
        p->unsent = c;
}

static void queue_remove(struct bpipe *p, struct upcall *c)
{
    if (p->unsent == c)
        p->unsent = c->pipe_next;
    if (c->pipe_prev)
        c->pipe_prev->pipe_next = c->pipe_next;
    else
        p->head = c->pipe_next;
    if (c->pipe_next)
        c->pipe_next->pipe_prev = c->pipe_prev;
    else
        p->tail = c->pipe_prev;
    c->pipe = NULL;
    c->pipe_prev = c->pipe_next = NULL;
    if (!p->head)
        p->idle_since = sg_now_ms();
}

/* Closes p's connection and takes it out of the worker's table; its calls are the caller's business. */
static void pipe_close(struct bpipe *p)
{
    if (p->watch.fd < 0)
        return;
    if (pipes[p->up->id][p->slot] == p)
        pipes[p->up->id][p->slot] = NULL;
    if (p->all_prev)
        p->all_prev->all_next = p->all_next;
    else
        all_pipes = p->all_next;
    if (p->all_next)
        p->all_next->all_prev = p->all_prev;
    worker_unwatch(p->wk, &p->watch);
    close(p->watch.fd);
    p->watch.fd = -1;
    /* This round may still hold an event of its watch, or p on the flush list. */
    worker_free_later(p->wk, p);
}

/* Closes p when it left the table and its last call ended. */
static void close_if_retired(struct bpipe *p)
{
    if (!p->head && p->watch.fd >= 0 && pipes[p->up->id][p->slot] != p)
        pipe_close(p);
}

/* A call whose answer is all in (or that can never get one): off the pipe, then ended or freed. */
static void call_answered(struct upcall *c)
{
    if (c->is_orphan) {
        upcall_free_memory(c);
        return;
    }
    if (c->state == ST_DONE)
        return; /* it timed out already; its caller frees it */
    c->res.body[c->got] = '\0';
    c->res.body_len = (size_t)c->got;
    upcall_finish(c, SG_OK, NULL);
}

/* ---- writing ---- */

/* Sends what the window lets go, as one sendmsg per PIPE_IOV calls, until the socket is full. */
static void pipe_flush(struct bpipe *p)
{
    while (p->unsent && p->watch.fd >= 0 && !p->is_connecting) {
        struct iovec iov[PIPE_IOV];
        struct msghdr msg = {0};
        size_t room = PIPE_WINDOW - (size_t)(p->sent - p->answered);
        int n = 0;
        ssize_t w;
        for (struct upcall *c = p->unsent; c && n < PIPE_IOV && room > 0; c = c->pipe_next) {
            size_t k = c->out_len - c->out_off;
            if (k > room)
                k = room;
            iov[n].iov_base = c->out + c->out_off;
            iov[n].iov_len = k;
            room -= k;
            n++;
        }
        if (n == 0)
            return; /* the window is full: answers reopen it */
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)n;
        w = sendmsg(p->watch.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                pipe_broke(p, SG_ERR_CLOSED, strerror(errno));
            return; /* full: the writable edge brings the rest */
        }
        p->sent += (uint64_t)w;
        while (w > 0) {
            struct upcall *c = p->unsent;
            size_t k = c->out_len - c->out_off;
            if (k > (size_t)w)
                k = (size_t)w;
            c->out_off += k;
            w -= (ssize_t)k;
            if (c->out_off == c->out_len)
                p->unsent = c->pipe_next;
        }
    }
}

void upcall_pipes_flush(void)
{
    while (flush_list) {
        struct bpipe *p = flush_list;
        flush_list = p->flush_next;
        p->is_flush_queued = 0;
        pipe_flush(p);
    }
}

/* ---- reading ---- */

/* Hands what came back to the calls in order; returns 0, or -1 when p ended. */
static int pipe_read(struct bpipe *p)
{
    uint8_t buf[READ_CHUNK];
    for (;;) {
        ssize_t n = recv(p->watch.fd, buf, sizeof buf, 0);
        size_t off = 0;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            pipe_broke(p, SG_ERR_CLOSED, strerror(errno));
            return -1;
        }
        if (n == 0) {
            pipe_broke(p, SG_ERR_CLOSED, NULL);
            return -1;
        }
        while (off < (size_t)n) {
            struct upcall *c = p->head;
            size_t k;
            if (!c || c->got >= c->out_off) {
                pipe_broke(p, SG_ERR_PROTO, "answered bytes that were never sent");
                return -1;
            }
            k = (size_t)(c->out_off - c->got);
            if (k > (size_t)n - off)
                k = (size_t)n - off;
            if (c->state != ST_DONE && !c->is_orphan)
                memcpy(c->res.body + c->got, buf + off, k);
            c->got += k;
            off += k;
            p->answered += k;
            if (c->got == c->out_len) {
                queue_remove(p, c);
                call_answered(c);
                if (p->watch.fd < 0)
                    return -1; /* its caller's done() ended the connection */
            }
        }
    }
}

/* ---- joining, moving, breaking ---- */

/* Returns p's worker-table pipe for the pick when it may carry calls, else NULL (closing a stale one). */
static struct bpipe *usable_pipe(struct upstream *up, const struct bal_pick *pick)
{
    struct bpipe *p = pipes[up->id][pick->slot];
    if (!p)
        return NULL;
    if (p->gen == pick->gen && (p->head || sg_now_ms() - p->idle_since <= PIPE_MAX_IDLE_MS))
        return p;
    /* Another address now holds the slot, or the connection idled too long: its calls finish on it. */
    pipes[up->id][pick->slot] = NULL;
    if (!p->head)
        pipe_close(p);
    return NULL;
}

static void on_pipe(struct wk_watch *w, uint32_t events);

/* Opens a pipe to the pick: SG_OK, or why in err (SG_ERR_REFUSED when the address refused at once). */
static int pipe_open(struct upstream *up, const struct bal_pick *pick, struct bpipe **out, char *err, size_t errlen)
{
    struct worker *wk = worker_self();
    struct bpipe *p;
    int fd, is_pending, rc = upcall_connect_start(pick, SOCK_STREAM, &fd, &is_pending, err, errlen);
    if (rc != SG_OK)
        return rc;
    p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    p->wk = wk;
    p->up = up;
    p->slot = pick->slot;
    p->gen = pick->gen;
    p->is_connecting = is_pending;
    p->connect_by = sg_now_ms() + UPCALL_CONNECT_MAX_MS;
    p->idle_since = sg_now_ms();
    p->watch.fd = fd;
    p->watch.ready = on_pipe;
    if (worker_watch(wk, &p->watch, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) != 0) {
        snprintf(err, errlen, "cannot watch a backend connection: %s", strerror(errno));
        close(fd);
        free(p);
        return SG_ERR_SYS;
    }
    atomic_fetch_add_explicit(&up->n_connects, 1, memory_order_relaxed);
    pipes[up->id][pick->slot] = p;
    p->all_next = all_pipes;
    if (all_pipes)
        all_pipes->all_prev = p;
    all_pipes = p;
    *out = p;
    return SG_OK;
}

/* Arms c's deadline for where its pipe is: a connect waits at most UPCALL_CONNECT_MAX_MS. */
static void arm_deadline(struct upcall *c)
{
    int64_t at = c->deadline_ms;
    if (c->pipe->is_connecting && c->pipe->connect_by < at)
        at = c->pipe->connect_by;
    worker_timer_arm(c->wk, &c->deadline, at);
}

int upcall_pipe_join(struct upcall *c, char *err, size_t errlen)
{
    struct bpipe *p = NULL;
    for (;;) {
        int rc;
        if (balancer_pick(c->up->bal, c->avoid, &c->pick) != SG_OK) {
            if (!err[0])
                snprintf(err, errlen, "no address of %s left to try", c->up->name);
            return SG_ERR_REFUSED;
        }
        c->has_pick = 1;
        p = usable_pipe(c->up, &c->pick);
        if (p)
            break;
        rc = pipe_open(c->up, &c->pick, &p, err, errlen);
        if (rc == SG_OK)
            break;
        upcall_release_pick(c, rc == SG_ERR_REFUSED ? BAL_CONNECT_FAIL : BAL_NEUTRAL);
        if (rc != SG_ERR_REFUSED || c->moves >= MAX_MOVES)
            return rc;
        c->avoid |= UINT64_C(1) << c->pick.slot; /* never reached it: another address */
        c->moves++;
    }
    c->out_off = 0;
    c->got = 0;
    queue_append(p, c);
    c->state = p->is_connecting ? ST_CONNECTING : ST_EXCHANGING;
    arm_deadline(c);
    pipe_want_flush(p); /* sent at the end of the loop's round, with every other call the round queued */
    return SG_OK;
}

/*
 * c (off its pipe, nothing of its answer in) goes again: once on a fresh
 * connection to the same address unless must_move (the address refused or
 * broke the protocol), then to other addresses, as a pooled connection's call
 * would (an echo does nothing twice that matters). how: what the balancer
 * hears of the attempt that failed.
 */
static void call_again(struct upcall *c, int rc, const char *what, int must_move, enum bal_outcome how)
{
    char err[256] = "";
    upcall_release_pick(c, how);
    if (!must_move && !c->has_retried) {
        c->has_retried = 1;
    } else {
        if (c->moves >= MAX_MOVES || sg_now_ms() >= c->deadline_ms) {
            upcall_fail(c, rc, what);
            return;
        }
        c->avoid |= UINT64_C(1) << c->pick.slot;
        c->moves++;
    }
    if (upcall_pipe_join(c, err, sizeof err) != SG_OK) {
        c->state = ST_EXCHANGING; /* the failure is the last attempt's, not a connect's */
        upcall_fail(c, SG_ERR_REFUSED, err);
    }
}

/*
 * The connection failed with rc (what: why; NULL for an end of stream): every
 * call on it leaves it. A call with part of its answer in fails; the others
 * go again (call_again). The balancer hears of it once, from the first call,
 * as of a pooled connection: one that carried answers before most likely
 * closed at a restart or a drain and says nothing bad of the address; one
 * that never answered (a refused connect, a hang-up, a protocol break) does,
 * and its calls move to another address.
 */
static void pipe_broke(struct bpipe *p, int rc, const char *what)
{
    struct upcall *c = p->head, *next;
    int is_first = 1;
    const int was_connecting = p->is_connecting;
    const int must_move = was_connecting || rc == SG_ERR_PROTO || p->answered == 0;
    pipe_close(p);
    p->head = p->tail = p->unsent = NULL;
    for (; c; c = next) {
        enum bal_outcome how = BAL_NEUTRAL;
        next = c->pipe_next;
        c->pipe = NULL;
        c->pipe_prev = c->pipe_next = NULL;
        if (c->is_orphan) {
            upcall_free_memory(c);
            continue;
        }
        if (c->state == ST_DONE)
            continue; /* timed out already; its caller frees it */
        if (c->got > 0) {
            upcall_fail(c, rc, what ? what : "closed the connection mid-answer");
            continue;
        }
        if (is_first)
            how = was_connecting ? BAL_CONNECT_FAIL : rc == SG_ERR_PROTO ? BAL_PROTO : must_move ? BAL_BROKE : BAL_NEUTRAL;
        is_first = 0;
        call_again(c, rc, what ? what : "closed the connection without answering", must_move, how);
    }
}

static void on_pipe(struct wk_watch *w, uint32_t events)
{
    struct bpipe *p = (struct bpipe *)((char *)w - offsetof(struct bpipe, watch));
    if (w->fd < 0)
        return; /* closed earlier in this round */
    if (p->is_connecting) {
        int soerr;
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        soerr = upcall_connect_error(w->fd);
        if (soerr) {
            char why[200];
            snprintf(why, sizeof why, "connect %s: %s", p->head ? p->head->pick.text : "", strerror(soerr));
            pipe_broke(p, SG_ERR_REFUSED, why);
            return;
        }
        p->is_connecting = 0;
        for (struct upcall *c = p->head; c; c = c->pipe_next)
            if (c->state == ST_CONNECTING) {
                c->state = ST_EXCHANGING;
                arm_deadline(c);
            }
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && pipe_read(p) < 0)
        return;
    pipe_flush(p); /* room again: the writable edge, or answers that reopened the window */
    close_if_retired(p);
}

/* ---- deadlines and callers that leave ---- */

void upcall_pipe_deadline(struct upcall *c)
{
    struct bpipe *p = c->pipe;
    if (p->is_connecting && sg_now_ms() < c->deadline_ms) {
        pipe_broke(p, SG_ERR_TIMEOUT, "connect timed out"); /* the address's fault: every call moves */
        return;
    }
    if (c->out_off == 0) { /* nothing of it went out: it just leaves the queue */
        queue_remove(p, c);
        upcall_fail(c, SG_ERR_TIMEOUT, p->is_connecting ? "connect timed out" : "no answer before the deadline");
        close_if_retired(p);
        return;
    }
    if (c == p->head) {
        /*
         * The backend has not answered the oldest call in its whole life: it
         * is stuck, so the connection goes, and with it the answers owed to
         * calls that already timed out (memory stays bounded). The others go again.
         */
        queue_remove(p, c);
        upcall_fail(c, SG_ERR_TIMEOUT, c->got == 0 ? "no answer before the deadline" : "stalled in the middle of an answer");
        pipe_broke(p, SG_ERR_TIMEOUT, "the connection stalled");
        return;
    }
    /* Behind others that are still answered: its answer, when it comes, is read and dropped. */
    upcall_fail(c, SG_ERR_TIMEOUT, "no answer before the deadline");
}

void upcall_pipe_leave(struct upcall *c)
{
    struct bpipe *p = c->pipe;
    upcall_detach(c);
    upcall_release_pick(c, BAL_NEUTRAL); /* cancelled: says nothing about the address */
    if (c->out_off == 0) {
        queue_remove(p, c);
        upcall_free_memory(c);
        close_if_retired(p);
        return;
    }
    /* Part of it is on the wire: its answer must still be read, or every answer after it would be misread. */
    c->is_orphan = 1;
}

void upcall_pipes_close_all(void)
{
    while (all_pipes) {
        struct bpipe *p = all_pipes;
        struct upcall *c, *next;
        for (c = p->head; c; c = next) {
            next = c->pipe_next;
            c->pipe = NULL;
            c->pipe_prev = c->pipe_next = NULL;
            if (c->is_orphan)
                upcall_free_memory(c);
        }
        p->head = p->tail = p->unsent = NULL;
        pipe_close(p);
    }
    flush_list = NULL;
}
