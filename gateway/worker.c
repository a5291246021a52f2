/* worker.c - one event loop per worker thread: its libmicrohttpd daemon, client hang-ups, head and body deadlines, timers. */
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chat_stream.h"
#include "http_strict.h"
#include "metrics.h"
#include "upcall.h"
#include "ws.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"

#define MAX_EVENTS 128
#define HEAP_INITIAL 64

/* Where a client connection is, as far as the deadlines care. */
enum conn_phase {
    PHASE_IDLE, /* between requests: no byte of a next head seen yet (libmicrohttpd's idle timeout applies) */
    PHASE_HEAD, /* a head is coming in: the header deadline runs */
    PHASE_BODY, /* the head is in, the body is coming: the silence deadline runs */
    PHASE_BUSY  /* the request is being answered: no deadline of ours */
};

/* One client connection, from libmicrohttpd's "started" notice to its "closed" one. */
struct wk_conn {
    struct http_conn_flags http; /* what libmicrohttpd's callbacks note about the connection (server.c) */
    struct wk_watch watch; /* the client socket, for EPOLLIN edges and EPOLLRDHUP */
    struct worker *wk;
    struct MHD_Connection *conn;
    struct wk_timer timer; /* the head or body deadline */
    enum conn_phase phase;
    int64_t last_in;       /* when bytes last arrived (sg_now_ms) */
    unsigned long seen_round; /* the loop round in which libmicrohttpd last began or ended a request here */
    int is_hup;            /* the client closed its side */
    int is_suspended;      /* suspended by worker_suspend */
    int is_cut;            /* we shut the socket down: libmicrohttpd will close it */
    int is_released;       /* the socket went to an upgraded connection's owner (worker_release_socket) */
    struct wk_conn *hup_next;
    struct wk_conn *prev, *next; /* every connection of the worker (the stop sweep) */
};


struct worker {
    int epfd;
    struct wk_watch wake;  /* eventfd: quiesce and stop requests */
    struct wk_watch mhd;   /* the daemon's own epoll descriptor */
    struct MHD_Daemon *daemon;
    pthread_t thread;
    int is_running;
    atomic_int want_quiesce, want_stop;
    int is_quiesced;
    int is_stopping;      /* the loop ended: parked answers are resumed one last time (worker_is_stopping) */
    int needs_run;        /* a connection was resumed since the daemon last ran: do not sleep */
    unsigned long round;  /* loop rounds so far: one epoll_wait, its events, one libmicrohttpd run */
    struct wk_timer **heap;
    size_t n_heap, cap_heap;
    struct wk_conn *hups; /* connections whose client closed, checked after each libmicrohttpd round */
    struct wk_conn *conns; /* every watched connection */
    void **later;         /* freed after the round (worker_free_later) */
    size_t n_later, cap_later;
};

static _Thread_local struct worker *self;
static unsigned header_timeout_ms = 20000, body_timeout_ms = 30000;

void worker_set_timeouts(unsigned header_ms, unsigned body_ms)
{
    header_timeout_ms = header_ms;
    body_timeout_ms = body_ms;
}

struct worker *worker_self(void)
{
    return self;
}

/* ---- timers: a binary min-heap of deadlines ---- */

static void heap_swap(struct worker *wk, size_t a, size_t b)
{
    struct wk_timer *t = wk->heap[a];
    wk->heap[a] = wk->heap[b];
    wk->heap[b] = t;
    wk->heap[a]->slot = a + 1;
    wk->heap[b]->slot = b + 1;
}

static void heap_up(struct worker *wk, size_t i)
{
    while (i > 0 && wk->heap[(i - 1) / 2]->at > wk->heap[i]->at) {
        heap_swap(wk, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct worker *wk, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < wk->n_heap && wk->heap[l]->at < wk->heap[m]->at)
            m = l;
        if (r < wk->n_heap && wk->heap[r]->at < wk->heap[m]->at)
            m = r;
        if (m == i)
            return;
        heap_swap(wk, i, m);
        i = m;
    }
}

void worker_timer_cancel(struct worker *wk, struct wk_timer *t)
{
    size_t i;
    if (!t->slot)
        return;
    i = t->slot - 1;
    t->slot = 0;
    wk->n_heap--;
    if (i == wk->n_heap)
        return;
    {
        struct wk_timer *moved = wk->heap[wk->n_heap];
        wk->heap[i] = moved;
        moved->slot = i + 1;
        heap_up(wk, i);
        heap_down(wk, moved->slot - 1);
    }
}

void worker_timer_arm(struct worker *wk, struct wk_timer *t, int64_t at)
{
    worker_timer_cancel(wk, t);
    if (wk->n_heap == wk->cap_heap) {
        size_t cap = wk->cap_heap ? wk->cap_heap * 2 : HEAP_INITIAL;
        struct wk_timer **h = realloc(wk->heap, cap * sizeof *h);
        if (!h) {
            /* Out of memory: the deadline is lost, never the process; libmicrohttpd's idle timeout still holds. */
            sg_warn("worker: out of memory for a timer");
            return;
        }
        wk->heap = h;
        wk->cap_heap = cap;
    }
    t->at = at;
    wk->heap[wk->n_heap] = t;
    t->slot = ++wk->n_heap;
    heap_up(wk, t->slot - 1);
}

/* Fires every timer whose deadline passed. A fire() may arm or cancel timers. */
static void run_timers(struct worker *wk)
{
    int64_t now = sg_now_ms();
    while (wk->n_heap > 0 && wk->heap[0]->at <= now) {
        struct wk_timer *t = wk->heap[0];
        worker_timer_cancel(wk, t);
        t->fire(t);
    }
}

/* Returns the milliseconds until the first timer (INT_MAX when none). */
static int timers_wait(struct worker *wk)
{
    int64_t d;
    if (wk->n_heap == 0)
        return INT_MAX;
    d = wk->heap[0]->at - sg_now_ms();
    return d < 0 ? 0 : d > INT_MAX ? INT_MAX : (int)d;
}

/* ---- descriptors ---- */

int worker_watch(struct worker *wk, struct wk_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(wk->epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

int worker_rewatch(struct worker *wk, struct wk_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(wk->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void worker_unwatch(struct worker *wk, struct wk_watch *w)
{
    (void)epoll_ctl(wk->epfd, EPOLL_CTL_DEL, w->fd, NULL); /* the descriptor may already be closed */
}

/* ---- client connections ---- */

/* Returns the bytes waiting unread in fd's receive queue (0 on failure). */
static int unread_bytes(int fd)
{
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

/*
 * Cuts the connection: libmicrohttpd 0.9.75 registers client sockets
 * edge-triggered and may never look at this one again by itself, but a
 * shutdown changes the socket's state, which its epoll reports (EPOLLHUP): it
 * then closes the connection and ends its request as aborted.
 */
static void cut(struct wk_conn *c)
{
    if (c->is_cut)
        return;
    c->is_cut = 1;
    worker_timer_cancel(c->wk, &c->timer);
    (void)shutdown(c->watch.fd, SHUT_RDWR);
    if (c->is_suspended) {
        /* A suspended connection is outside libmicrohttpd's epoll set: resuming puts it back, hang-up and all. */
        c->is_suspended = 0;
        c->wk->needs_run = 1;
        MHD_resume_connection(c->conn);
    }
}

static void on_deadline(struct wk_timer *t)
{
    struct wk_conn *c = (struct wk_conn *)((char *)t - offsetof(struct wk_conn, timer));
    if (c->phase == PHASE_HEAD) {
        metrics_timeout(METRIC_HEADER_TIMEOUT);
        cut(c);
    } else if (c->phase == PHASE_BODY) {
        int64_t quiet_until = c->last_in + body_timeout_ms;
        if (quiet_until > sg_now_ms()) {
            worker_timer_arm(c->wk, &c->timer, quiet_until); /* bytes came meanwhile: the silence starts later */
            return;
        }
        metrics_timeout(METRIC_BODY_TIMEOUT);
        cut(c);
    }
}

static void on_client_ready(struct wk_watch *w, uint32_t events)
{
    struct wk_conn *c = (struct wk_conn *)((char *)w - offsetof(struct wk_conn, watch));
    if (c->is_cut)
        return;
    if (events & EPOLLIN) {
        c->last_in = sg_now_ms();
        /*
         * The first bytes of a next request on a kept-alive connection start
         * its head deadline. libmicrohttpd reads its own epoll later in a
         * round than this loop does, so an edge seen in the round right after
         * it began or ended a request here may be for bytes it has already
         * taken: such an edge starts nothing, and a head that is still short
         * starts its deadline at its next byte's edge. Asking the socket how
         * much is unread would settle it exactly, at one system call per
         * request on the busiest path there is.
         */
        if (c->phase == PHASE_IDLE && header_timeout_ms && c->wk->round - c->seen_round > 1) {
            c->phase = PHASE_HEAD;
            worker_timer_arm(c->wk, &c->timer, c->last_in + header_timeout_ms);
        }
    }
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->is_hup) {
        c->is_hup = 1;
        c->hup_next = c->wk->hups;
        c->wk->hups = c;
    }
}

/*
 * After a libmicrohttpd round: a client that closed its side is cut unless
 * its request is being answered (then it gets the answer first) or bytes it
 * sent before closing are still unread (libmicrohttpd takes them first).
 */
static void check_hups(struct worker *wk)
{
    struct wk_conn **p = &wk->hups;
    while (*p) {
        struct wk_conn *c = *p;
        if (c->is_cut) {
            *p = c->hup_next;
            continue;
        }
        if ((c->phase == PHASE_BUSY && !c->is_suspended) || (!c->is_suspended && unread_bytes(c->watch.fd) > 0)) {
            p = &c->hup_next;
            continue;
        }
        *p = c->hup_next;
        cut(c);
    }
}

static void hups_remove(struct worker *wk, struct wk_conn *c)
{
    for (struct wk_conn **p = &wk->hups; *p; p = &(*p)->hup_next)
        if (*p == c) {
            *p = c->hup_next;
            return;
        }
}

void worker_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct worker *wk = cls;
    struct wk_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c = calloc(1, sizeof *c);
        if (!c || !info) {
            free(c); /* unwatched: this connection keeps only libmicrohttpd's own idle timeout */
            return;
        }
        c->wk = wk;
        c->conn = conn;
        c->watch.fd = info->connect_fd;
        c->watch.ready = on_client_ready;
        c->timer.fire = on_deadline;
        c->last_in = sg_now_ms();
        c->phase = PHASE_HEAD;
        if (worker_watch(wk, &c->watch, EPOLLIN | EPOLLRDHUP | EPOLLET) != 0) {
            sg_warn("worker: cannot watch a client socket: %s", strerror(errno));
            free(c);
            return;
        }
        if (header_timeout_ms)
            worker_timer_arm(wk, &c->timer, c->last_in + header_timeout_ms);
        c->next = wk->conns;
        if (wk->conns)
            wk->conns->prev = c;
        wk->conns = c;
        *socket_context = c;
        return;
    }
    if (!c)
        return;
    *socket_context = NULL;
    worker_timer_cancel(wk, &c->timer);
    if (!c->is_released)
        worker_unwatch(wk, &c->watch);
    if (c->is_hup)
        hups_remove(wk, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        wk->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static struct wk_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

struct http_conn_flags *worker_conn_flags(struct MHD_Connection *conn)
{
    struct wk_conn *c = conn_of(conn);
    return c ? &c->http : NULL;
}

void worker_request_started(struct MHD_Connection *conn, struct request *rq, int has_body)
{
    struct wk_conn *c = conn_of(conn);
    (void)rq;
    if (!c)
        return;
    worker_timer_cancel(c->wk, &c->timer);
    c->phase = has_body ? PHASE_BODY : PHASE_BUSY;
    c->seen_round = c->wk->round;
    if (has_body && body_timeout_ms) {
        c->last_in = sg_now_ms();
        worker_timer_arm(c->wk, &c->timer, c->last_in + body_timeout_ms);
    }
}

void worker_request_body_done(struct MHD_Connection *conn)
{
    struct wk_conn *c = conn_of(conn);
    if (!c || c->phase == PHASE_BUSY)
        return;
    worker_timer_cancel(c->wk, &c->timer);
    c->phase = PHASE_BUSY;
}

void worker_request_ended(struct MHD_Connection *conn)
{
    struct wk_conn *c = conn_of(conn);
    if (!c)
        return;
    worker_timer_cancel(c->wk, &c->timer);
    c->phase = PHASE_IDLE;
    c->seen_round = c->wk->round;
    c->is_suspended = 0;
}

void worker_suspend(struct MHD_Connection *conn)
{
    struct wk_conn *c = conn_of(conn);
    if (c)
        c->is_suspended = 1;
    MHD_suspend_connection(conn);
    if (c && c->is_hup && !c->is_cut) {
        /* The client left before its answer was started: nobody will read it. */
        cut(c);
    }
}

void worker_resume(struct MHD_Connection *conn)
{
    struct wk_conn *c = conn_of(conn);
    if (c && !c->is_suspended)
        return; /* already resumed (cut by a hang-up) */
    if (c)
        c->is_suspended = 0;
    if (self)
        self->needs_run = 1; /* without an inter-thread channel nothing else says the daemon has work */
    MHD_resume_connection(conn);
}

void worker_release_socket(struct MHD_Connection *conn)
{
    struct wk_conn *c = conn_of(conn);
    if (!c || c->is_released)
        return;
    c->is_released = 1;
    c->is_cut = 1; /* never shut down by the loop from here: its owner ends it */
    worker_timer_cancel(c->wk, &c->timer);
    worker_unwatch(c->wk, &c->watch);
    if (c->is_hup) {
        hups_remove(c->wk, c);
        c->is_hup = 0;
    }
}

void worker_free_later(struct worker *wk, void *p)
{
    if (wk->n_later == wk->cap_later) {
        size_t cap = wk->cap_later ? wk->cap_later * 2 : 16;
        void **a = realloc(wk->later, cap * sizeof *a);
        if (!a) {
            /* Out of memory: leaked rather than freed under a pending event. */
            sg_warn("worker: out of memory for a deferred free");
            return;
        }
        wk->later = a;
        wk->cap_later = cap;
    }
    wk->later[wk->n_later++] = p;
}

static void free_later_now(struct worker *wk)
{
    for (size_t i = 0; i < wk->n_later; i++)
        free(wk->later[i]);
    wk->n_later = 0;
}

int worker_is_stopping(void)
{
    return self && self->is_stopping;
}

int worker_client_gone(struct MHD_Connection *conn)
{
    struct wk_conn *c = conn_of(conn);
    return c && (c->is_hup || c->is_cut);
}

/* ---- the loop ---- */

/*
 * Before the daemon stops: libmicrohttpd 0.9.75 aborts the process when a
 * daemon stops with a suspended connection, and after the grace period some
 * may still be (a deferred call, a held upload body, a download waiting for
 * its backend, a stream). The first round resumes each as it is, so that
 * what can still say why it ends does (worker_is_stopping: a deferred call
 * is answered 503, an exec stream sends its error event); then each one
 * parked again is cut and resumed, its handler or content callback sees the
 * client gone and the connection closes. A handler may park it once more
 * before libmicrohttpd notices the shutdown, hence the rounds.
 */
static void release_suspended(struct worker *wk)
{
    for (int round = 0; round < 16; round++) {
        int n = 0;
        for (struct wk_conn *c = wk->conns; c; c = c->next) {
            if (!c->is_suspended)
                continue;
            n++;
            if (round == 0) {
                c->is_suspended = 0;
                MHD_resume_connection(c->conn);
            } else if (!c->is_cut) {
                cut(c);
            } else {
                c->is_suspended = 0;
                MHD_resume_connection(c->conn);
            }
        }
        if (n == 0)
            return;
        MHD_run(wk->daemon);
    }
    sg_warn("worker: connections still parked at stop");
}

static void on_wake(struct wk_watch *w, uint32_t events)
{
    uint64_t v;
    (void)events;
    while (read(w->fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
}

static void on_mhd(struct wk_watch *w, uint32_t events)
{
    (void)w;
    (void)events; /* the daemon runs after every batch anyway */
}

static void *loop(void *arg)
{
    struct worker *wk = arg;
    struct epoll_event evs[MAX_EVENTS];
    self = wk;
    sg_log_batch_begin(); /* access lines leave in one write per round, before the loop sleeps */
    for (;;) {
        MHD_UNSIGNED_LONG_LONG mt;
        int timeout = timers_wait(wk), n;
        if (MHD_get_timeout(wk->daemon, &mt) == MHD_YES && mt < (MHD_UNSIGNED_LONG_LONG)timeout)
            timeout = (int)mt;
        if (ws_daemon_poll_ms() >= 0 && (timeout == INT_MAX || timeout > ws_daemon_poll_ms()))
            timeout = ws_daemon_poll_ms();
        if (wk->needs_run)
            timeout = 0;
        else if (timeout == INT_MAX)
            timeout = -1;
        sg_log_batch_flush();
        n = epoll_wait(wk->epfd, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            sg_error("worker: epoll_wait: %s", strerror(errno));
            break;
        }
        wk->round++;
        for (int i = 0; i < n; i++) {
            struct wk_watch *w = evs[i].data.ptr;
            w->ready(w, evs[i].events);
        }
        run_timers(wk);
        wk->needs_run = 0;
        MHD_run(wk->daemon);
        check_hups(wk);
        upcall_pipes_flush(); /* the echo calls this round queued, together; before their pipes may be freed */
        free_later_now(wk); /* no event of this round points at them any more */
        if (atomic_load(&wk->want_quiesce) && !wk->is_quiesced) {
            /* The listener is shared by every worker: quiescing leaves it open for the others. */
            (void)MHD_quiesce_daemon(wk->daemon);
            wk->is_quiesced = 1;
            ws_close_all_here(); /* WebSockets never end by themselves: start their closing handshakes */
            chat_streams_close_here(); /* nor do chat event streams: they send what they hold and end */
        }
        if (atomic_load(&wk->want_stop))
            break;
    }
    wk->is_stopping = 1;
    release_suspended(wk);
    if (!wk->is_quiesced)
        (void)MHD_quiesce_daemon(wk->daemon); /* so MHD_stop_daemon does not close the shared listener */
    wk->is_quiesced = 1;
    ws_abort_all_here(); /* libmicrohttpd must get every upgraded socket back before it stops */
    MHD_run(wk->daemon);
    MHD_stop_daemon(wk->daemon); /* on this thread: every callback it makes runs where the loop's state lives */
    wk->daemon = NULL;
    upcall_pool_drain();
    free_later_now(wk);
    sg_log_batch_end();
    self = NULL;
    return NULL;
}

struct worker *worker_new(char *err, size_t errlen)
{
    struct worker *wk = calloc(1, sizeof *wk);
    if (!wk) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    wk->wake.fd = -1;
    wk->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (wk->epfd < 0)
        goto fail;
    wk->wake.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    wk->wake.ready = on_wake;
    if (wk->wake.fd < 0 || worker_watch(wk, &wk->wake, EPOLLIN) != 0)
        goto fail;
    return wk;
fail:
    snprintf(err, errlen, "worker: %s", strerror(errno));
    worker_free(wk);
    return NULL;
}

void worker_free(struct worker *wk)
{
    if (!wk)
        return;
    if (wk->wake.fd >= 0)
        close(wk->wake.fd);
    if (wk->epfd >= 0)
        close(wk->epfd);
    free(wk->heap);
    free(wk->later);
    free(wk);
}

int worker_run(struct worker *wk, struct MHD_Daemon *daemon, char *err, size_t errlen)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_EPOLL_FD);
    int rc;
    if (!info) {
        snprintf(err, errlen, "libmicrohttpd has no epoll descriptor (not in epoll mode)");
        return SG_ERR_SYS;
    }
    wk->daemon = daemon;
    wk->mhd.fd = info->epoll_fd;
    wk->mhd.ready = on_mhd;
    if (worker_watch(wk, &wk->mhd, EPOLLIN) != 0) {
        snprintf(err, errlen, "worker: epoll_ctl: %s", strerror(errno));
        return SG_ERR_SYS;
    }
    rc = pthread_create(&wk->thread, NULL, loop, wk);
    if (rc != 0) {
        worker_unwatch(wk, &wk->mhd);
        snprintf(err, errlen, "worker: pthread_create: %s", strerror(rc));
        return SG_ERR_SYS;
    }
    wk->is_running = 1;
    return SG_OK;
}

static void wake(struct worker *wk)
{
    uint64_t one = 1;
    if (write(wk->wake.fd, &one, sizeof one) < 0 && errno != EAGAIN)
        sg_warn("worker: cannot wake a loop: %s", strerror(errno));
}

void worker_kick(struct worker *wk)
{
    if (wk)
        wake(wk);
}

void worker_quiesce(struct worker *wk)
{
    atomic_store(&wk->want_quiesce, 1);
    wake(wk);
}

void worker_stop(struct worker *wk)
{
    if (!wk)
        return;
    if (wk->is_running) {
        atomic_store(&wk->want_quiesce, 1);
        atomic_store(&wk->want_stop, 1);
        wake(wk);
        pthread_join(wk->thread, NULL);
    }
    worker_free(wk);
}
