/* upcall.c - backend exchanges driven by the worker's loop: non-blocking connect, send, receive, per-worker pools. */
#include "upcall.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/drain.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "balancer.h"
#include "reply_check.h"
#include "upcall_impl.h"
#include "worker.h"

/*
 * Idle connections kept per backend per worker. A framed call in flight holds
 * a connection of its own, so under load a worker needs about as many as it
 * has calls in flight, and a pool smaller than that closes and reopens
 * connections on every call. But idle connections count against the
 * backend's own --max-conns, shared by every worker and every other client:
 * exec's is 256 (8 workers x 16 leaves it half), chat's 1,024, file's 128.
 * Echo calls share one pipelined connection instead (upcall_pipe.c), and
 * time is a datagram.
 */
static const unsigned pool_max[BACKEND__COUNT] = {
    [BACKEND_ECHO] = 0, [BACKEND_TIME] = 0, [BACKEND_EXEC] = 16, [BACKEND_FILE] = 4, [BACKEND_CHAT] = 32,
};
/* A pooled connection unused this long is closed rather than trusted. */
#define POOL_MAX_IDLE_MS 30000


/*
 * One TCP connection to a backend, watched by the worker's epoll set from its
 * connect to its close (edge-triggered, both directions), so that handing it
 * from the pool to a call and back costs no epoll_ctl. Its events go to the
 * call that owns it; while it idles in the pool, any sign of input (EOF, an
 * error, bytes nobody asked for) marks it dead.
 */
struct bconn {
    struct wk_watch watch;
    struct worker *wk;
    struct upcall *owner; /* NULL while pooled */
    int slot;             /* the balancer's address it goes to (its pool), and that slot's generation */
    uint32_t gen;
    int is_dead;
    int64_t idle_since;
    struct bconn *next;
};

/* This worker's idle connections per backend and address (the loop's thread only, so no lock). */
static _Thread_local struct {
    struct bconn *head;
    unsigned n;
} pool[BACKEND__COUNT][BAL_MAX_ADDRS];

/* ---- the per-worker pool ---- */

static void on_owned(struct upcall *c, uint32_t events);
static void dgram_move(struct upcall *c, int rc, const char *what);

static void on_bconn(struct wk_watch *w, uint32_t events)
{
    struct bconn *b = (struct bconn *)((char *)w - offsetof(struct bconn, watch));
    if (b->owner)
        on_owned(b->owner, events);
    else if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        b->is_dead = 1;
}

static void bconn_close(struct bconn *b)
{
    worker_unwatch(b->wk, &b->watch);
    close(b->watch.fd);
    worker_free_later(b->wk, b); /* this round may still hold an event of its watch */
}

/* Wraps a connected (or connecting) socket and watches it; NULL (fd closed) on failure. */
static struct bconn *bconn_new(struct worker *wk, int fd)
{
    struct bconn *b = calloc(1, sizeof *b);
    if (b) {
        b->wk = wk;
        b->watch.fd = fd;
        b->watch.ready = on_bconn;
        if (worker_watch(wk, &b->watch, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) == 0)
            return b;
        free(b);
    }
    close(fd);
    return NULL;
}

static void pool_put(struct upstream *up, struct bconn *b)
{
    b->owner = NULL;
    if (b->is_dead || b->slot < 0 || pool[up->id][b->slot].n >= pool_max[up->id] ||
        !balancer_is_current(up->bal, b->slot, b->gen)) {
        bconn_close(b);
        return;
    }
    b->idle_since = sg_now_ms();
    b->next = pool[up->id][b->slot].head;
    pool[up->id][b->slot].head = b;
    pool[up->id][b->slot].n++;
}

/*
 * Returns a live idle connection of up to the picked address (no sign of
 * input while idle, not too old), or NULL. is_peeked: also look for an EOF
 * the loop has not dispatched yet (one recv, about 1.4 us here: worth it only
 * for a request that cannot be repeated; a read is repeated by broke()).
 */
static struct bconn *pool_take(struct upstream *up, const struct bal_pick *p, int is_peeked)
{
    struct bconn *b;
    while ((b = pool[up->id][p->slot].head)) {
        pool[up->id][p->slot].head = b->next;
        pool[up->id][p->slot].n--;
        b->next = NULL;
        /* A connection of the slot's previous address (gen changed) never carries a call meant for the new one. */
        /*
         * The peek catches an EOF the loop has not dispatched yet (a backend
         * that started draining closed it this instant): a request sent on it
         * would fail, and one that may not be replayed (exec) would fail the call.
         */
        if (!b->is_dead && b->gen == p->gen && sg_now_ms() - b->idle_since <= POOL_MAX_IDLE_MS &&
            !(is_peeked && sg_drain_has_input(b->watch.fd)))
            return b;
        bconn_close(b);
    }
    return NULL;
}

void upcall_pool_drain(void)
{
    for (int i = 0; i < BACKEND__COUNT; i++)
        for (int s = 0; s < BAL_MAX_ADDRS; s++) {
            struct bconn *b, *next;
            for (b = pool[i][s].head; b; b = next) {
                next = b->next;
                bconn_close(b);
            }
            pool[i][s].head = NULL;
            pool[i][s].n = 0;
        }
    upcall_pipes_close_all();
}

/* ---- connecting ---- */

int upcall_is_self_connected(int fd)
{
    struct sockaddr_storage a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0 || getpeername(fd, (struct sockaddr *)&b, &lb) != 0)
        return 0;
    return la == lb && memcmp(&a, &b, la) == 0;
}

/* Starts a non-blocking connect to the picked address; SG_OK with *fd (connected or in progress), or why in err. */
int upcall_connect_start(const struct bal_pick *p, int type, int *fd, int *is_pending, char *err, size_t errlen)
{
    const struct sg_addr addr = p->addr;
    const char *text = p->text;
    int s;
    *fd = -1;
    *is_pending = 0;
    s = socket(addr.ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return SG_ERR_SYS;
    }
    if (sg_client_socket_setup(s, &addr, type) != 0) { /* TCP_NODELAY; a UNIX datagram socket is autobound */
        snprintf(err, errlen, "socket set-up for %s: %s", text, strerror(errno));
        close(s);
        return SG_ERR_SYS;
    }
    if (connect(s, (const struct sockaddr *)&addr.ss, addr.len) != 0) {
        if (errno == EINPROGRESS) {
            *is_pending = 1;
            *fd = s;
            return SG_OK;
        }
        snprintf(err, errlen, "connect %s: %s", text, strerror(errno));
        close(s);
        return SG_ERR_REFUSED;
    }
    if (upcall_is_self_connected(s)) {
        snprintf(err, errlen, "connect %s: %s", text, strerror(ECONNREFUSED));
        close(s);
        return SG_ERR_REFUSED;
    }
    *fd = s;
    return SG_OK;
}

int upcall_connect_error(int fd)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
    if (!soerr && upcall_is_self_connected(fd))
        soerr = ECONNREFUSED;
    return soerr;
}

int upcall_connect(struct upstream *up, struct bal_pick *pick, int *fd, int *is_pending, char *err, size_t errlen)
{
    uint64_t avoid = 0;
    int rc = SG_ERR_REFUSED, n = balancer_count(up->bal);
    char why[256] = "no address known";
    if (!up->is_configured) {
        snprintf(err, errlen, "the %s backend is not configured: it is not built into this gateway and no address was given",
                 backend_name(up->id));
        return SG_ERR_REFUSED;
    }
    /* An address that refuses at once is reported and the next one tried: the request has not left. */
    for (int i = 0; i < (n > 0 ? n : 1) && i < 64; i++) {
        if (balancer_pick(up->bal, avoid, pick) != SG_OK)
            break;
        rc = upcall_connect_start(pick, SOCK_STREAM, fd, is_pending, why, sizeof why);
        if (rc == SG_OK) {
            atomic_fetch_add_explicit(&up->n_connects, 1, memory_order_relaxed);
            return SG_OK;
        }
        balancer_done(up->bal, pick, rc == SG_ERR_REFUSED ? BAL_CONNECT_FAIL : BAL_NEUTRAL);
        avoid |= UINT64_C(1) << pick->slot;
    }
    snprintf(err, errlen, "%s backend at %s: %s", backend_name(up->id), up->name, why);
    upstream_failed(up, rc);
    return rc;
}

/* ---- ending ---- */

void upcall_detach(struct upcall *c)
{
    worker_timer_cancel(c->wk, &c->deadline);
    worker_timer_cancel(c->wk, &c->retry);
    if (c->is_watched) { /* the datagram socket; a stream connection stays watched for the pool */
        worker_unwatch(c->wk, &c->watch);
        c->is_watched = 0;
    }
}

/* What a transport error rc says about the address the attempt went to (for outlier detection). */
enum bal_outcome upcall_outcome_of(const struct upcall *c, int rc)
{
    switch (rc) {
    case SG_OK: return BAL_OK;
    case SG_ERR_REFUSED: return BAL_CONNECT_FAIL;
    case SG_ERR_PROTO: return BAL_PROTO;
    case SG_ERR_CLOSED: return BAL_BROKE;
    case SG_ERR_TIMEOUT:
        /* A slow command is the command's business; an unanswered datagram or connect is the address's. */
        return c->state == ST_CONNECTING ? BAL_CONNECT_FAIL : c->kind == KIND_DGRAM ? BAL_BROKE : BAL_NEUTRAL;
    default: return BAL_NEUTRAL;
    }
}

/* Ends the attempt's claim on its address, telling the balancer how it went. */
void upcall_release_pick(struct upcall *c, enum bal_outcome how)
{
    if (c->has_pick) {
        balancer_done(c->up->bal, &c->pick, how);
        c->has_pick = 0;
    }
}

/* Ends the exchange with rc (why in what, counted as a backend failure unless rc is a backend's own error). */
void upcall_finish(struct upcall *c, int rc, const char *what)
{
    if (c->state == ST_DONE)
        return;
    /* An answer (what NULL), error frames included, shows the address works. */
    upcall_release_pick(c, what ? upcall_outcome_of(c, rc) : c->is_closing ? BAL_DRAINING : BAL_OK);
    c->state = ST_DONE;
    upcall_detach(c);
    c->res.rc = rc;
    if (rc != SG_OK && what)
        snprintf(c->res.err, sizeof c->res.err, "%s backend at %.100s (%.60s): %.200s", backend_name(c->up->id), c->up->name,
                 c->pick.text, what);
    c->done(c, &c->res, c->arg);
}

void upcall_fail(struct upcall *c, int rc, const char *what)
{
    upstream_failed(c->up, rc);
    upcall_finish(c, rc, what);
}

const struct upcall_result *upcall_result(const struct upcall *c)
{
    return &c->res;
}

void upcall_free_memory(struct upcall *c)
{
    if (c->watch.fd >= 0)
        close(c->watch.fd);
    sg_frame_decoder_free(&c->dec);
    json_decref(c->res.header);
    free(c->res.body);
    free(c->out);
    free(c);
}

void upcall_free(struct upcall *c)
{
    if (!c)
        return;
    if (c->pipe) {
        upcall_pipe_leave(c);
        return;
    }
    upcall_detach(c);
    upcall_release_pick(c, BAL_NEUTRAL); /* cancelled: says nothing about the address */
    if (c->bc) {
        if (c->state == ST_DONE && c->is_reusable && !c->is_closing)
            pool_put(c->up, c->bc);
        else
            bconn_close(c->bc); /* mid-exchange: the backend sees the hang-up and drops the work */
        c->bc = NULL;
    }
    upcall_free_memory(c);
}

/* ---- the exchange ---- */

/* Sends what may go now, once, ignoring failures: the edge that reports them is already queued. */
static void send_eagerly(struct upcall *c)
{
    size_t n = c->out_len - c->out_off;
    ssize_t w = send(c->bc->watch.fd, c->out + c->out_off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0)
        c->out_off += (size_t)w;
}

/*
 * Puts c on a connection to an address the balancer picks (none of those in
 * c->avoid): a pooled one unless fresh_only, else a new connect. A connect
 * refused at once moves to another address. SG_OK or why in err.
 */
static int attach(struct upcall *c, int fresh_only, char *err, size_t errlen)
{
    struct bconn *b = NULL;
    int fd = -1, is_pending = 0, rc;
    for (;;) {
        if (balancer_pick(c->up->bal, c->avoid, &c->pick) != SG_OK) {
            if (!err[0])
                snprintf(err, errlen, "no address of %s left to try", c->up->name);
            return SG_ERR_REFUSED;
        }
        c->has_pick = 1;
        b = fresh_only ? NULL : pool_take(c->up, &c->pick, !c->is_replayable);
        if (b)
            break;
        rc = upcall_connect_start(&c->pick, SOCK_STREAM, &fd, &is_pending, err, errlen);
        if (rc == SG_OK)
            break;
        upcall_release_pick(c, rc == SG_ERR_REFUSED ? BAL_CONNECT_FAIL : BAL_NEUTRAL);
        if (rc != SG_ERR_REFUSED || c->moves >= MAX_MOVES)
            return rc;
        c->avoid |= UINT64_C(1) << c->pick.slot; /* never reached it: another address, whatever the request */
        c->moves++;
    }
    c->is_reused = b != NULL;
    if (!b) {
        atomic_fetch_add_explicit(&c->up->n_connects, 1, memory_order_relaxed);
        b = bconn_new(c->wk, fd);
        if (!b) {
            upcall_release_pick(c, BAL_NEUTRAL);
            snprintf(err, errlen, "cannot watch a backend connection: %s", strerror(errno));
            return SG_ERR_SYS;
        }
        b->slot = c->pick.slot;
        b->gen = c->pick.gen;
    }
    b->owner = c;
    c->bc = b;
    c->state = is_pending ? ST_CONNECTING : ST_EXCHANGING;
    c->connect_by = sg_now_ms() + UPCALL_CONNECT_MAX_MS;
    if (is_pending && c->connect_by < c->deadline_ms)
        worker_timer_arm(c->wk, &c->deadline, c->connect_by);
    else
        worker_timer_arm(c->wk, &c->deadline, c->deadline_ms);
    /*
     * A pooled connection is writable now: the request goes at once, and the
     * answer's edge brings the rest (a fresh one's first edge is EPOLLOUT).
     */
    if (c->is_reused)
        send_eagerly(c);
    return SG_OK;
}

/* Forgets what the failed attempt sent and received, so the request goes again from its first byte. */
static void reset_attempt(struct upcall *c)
{
    upcall_detach(c);
    if (c->bc) {
        bconn_close(c->bc);
        c->bc = NULL;
    }
    c->out_off = 0;
    c->got = 0;
    c->is_reusable = 0;
    c->is_closing = 0;
    if (c->kind == KIND_FRAME) {
        sg_frame_decoder_free(&c->dec);
        sg_frame_decoder_init(&c->dec, 0);
        json_decref(c->res.header);
        c->res.header = NULL;
        free(c->res.body);
        c->res.body = NULL;
        c->res.body_len = 0;
    }
}

/*
 * Moves c to another address after its attempt failed with rc: returns 1
 * when it goes on there, 0 when there is no other address (or no time, or
 * the moves are used up) and the caller fails it.
 */
static int move_on(struct upcall *c, int rc)
{
    char err[256] = "";
    if (c->moves >= MAX_MOVES || sg_now_ms() >= c->deadline_ms)
        return 0;
    upcall_release_pick(c, upcall_outcome_of(c, rc));
    c->avoid |= UINT64_C(1) << c->pick.slot;
    c->moves++;
    reset_attempt(c);
    if (attach(c, 0, err, sizeof err) == SG_OK)
        return 1;
    c->state = ST_EXCHANGING; /* not connecting any more: the failure below is the last attempt's */
    upcall_fail(c, SG_ERR_REFUSED, err);
    return 1;
}

/*
 * The connection broke before the exchange ended. A pooled connection the
 * backend closed while it sat idle is replaced once when repeating cannot do
 * anything twice: no answer byte came, and the request never left whole or
 * only reads.
 */
static void broke(struct upcall *c, int rc, const char *what)
{
    char err[256] = "";
    int never_arrived = c->got == 0 && c->out_off < c->out_len; /* the backend cannot have acted on half a request */
    if (c->is_reused && !c->has_retried && c->got == 0 && (c->is_replayable || never_arrived)) {
        /* Most likely closed while idle (a restart, a drain): says nothing bad about the address. */
        upcall_release_pick(c, BAL_NEUTRAL);
        reset_attempt(c);
        c->has_retried = 1;
        if (attach(c, 1, err, sizeof err) == SG_OK)
            return;
        upcall_fail(c, SG_ERR_REFUSED, err);
        return;
    }
    /* Another address when repeating cannot do anything twice: nothing arrived whole, or the request only reads. */
    if ((never_arrived || c->is_replayable) && move_on(c, rc))
        return;
    upcall_fail(c, rc, what);
}

/* Writes what may go now; returns 0, or -1 when c ended. */
int upcall_send_some(int fd, const uint8_t *buf, size_t len, size_t *off)
{
    while (*off < len) {
        ssize_t w = send(fd, buf + *off, len - *off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return errno;
        }
        *off += (size_t)w;
    }
    return 0;
}

static int pump_out(struct upcall *c)
{
    int err;
    if (c->out_off >= c->out_len)
        return 0;
    err = upcall_send_some(c->bc->watch.fd, c->out, c->out_len, &c->out_off);
    if (err) {
        broke(c, SG_ERR_CLOSED, strerror(err));
        return -1;
    }
    return 0;
}

/* Feeds answer bytes to the frame decoder; returns 0, or -1 when c ended. */
static int take_frame(struct upcall *c, const uint8_t *buf, size_t len)
{
    for (;;) { /* until the decoder needs more: an empty body's END comes after its HEADER with no byte between */
        size_t used = 0, chunk_len = 0;
        const uint8_t *chunk = NULL;
        enum sg_frame_event ev = sg_frame_decode(&c->dec, buf, len, &used, &chunk, &chunk_len);
        buf += used;
        len -= used;
        switch (ev) {
        case SG_FRAME_NEED_MORE:
            return 0;
        case SG_FRAME_ERROR:
            upcall_fail(c, SG_ERR_PROTO, sg_frame_decoder_error(&c->dec));
            return -1;
        case SG_FRAME_HEADER: {
            uint64_t size = sg_frame_decoder_body_size(&c->dec);
            char why[300];
            c->res.header = json_incref(sg_frame_decoder_header(&c->dec));
            /* Never pooled then: a request sent on it would meet the close, and an exec could not be repeated. */
            c->is_closing = json_is_true(json_object_get(c->res.header, "close"));
            /* Believed only when it answers this request, with the fields its op promises. */
            if (reply_check(backend_name(c->up->id), c->req_op[0] ? c->req_op : NULL, c->req_id[0] ? c->req_id : NULL,
                            c->res.header, size, why, sizeof why) != SG_OK) {
                upcall_fail(c, SG_ERR_PROTO, why);
                return -1;
            }
            if (c->is_head_only) {
                char msg[300];
                int rc = upstream_answer_error(c->up, c->res.header, msg, sizeof msg);
                free(c->res.body);
                c->res.body = malloc(len + 1); /* body bytes that came with the header */
                if (!c->res.body) {
                    upcall_finish(c, SG_ERR_NOMEM, "out of memory");
                    return -1;
                }
                memcpy(c->res.body, buf, len);
                c->res.body[len] = '\0';
                c->res.body_len = len;
                c->res.body_size = size;
                if (rc != SG_OK)
                    snprintf(c->res.err, sizeof c->res.err, "%s", msg);
                upcall_finish(c, rc, NULL);
                return -1;
            }
            if (size > c->max_body) {
                snprintf(why, sizeof why, "answered with a %llu-byte body, over the gateway's limit of %zu bytes",
                         (unsigned long long)size, c->max_body);
                upcall_fail(c, SG_ERR_PROTO, why);
                return -1;
            }
            /* Always a buffer, so an empty body is "" rather than NULL. */
            free(c->res.body);
            c->res.body = malloc((size_t)size + 1);
            if (!c->res.body) {
                upcall_finish(c, SG_ERR_NOMEM, "out of memory");
                return -1;
            }
            c->res.body_len = 0;
            c->body_cap = (size_t)size;
            break;
        }
        case SG_FRAME_BODY:
            memcpy(c->res.body + c->res.body_len, chunk, chunk_len);
            c->res.body_len += chunk_len;
            break;
        case SG_FRAME_END: {
            char msg[300];
            int rc;
            if (c->res.body)
                c->res.body[c->res.body_len] = '\0';
            /* Bytes past the answer were never asked for: the stream is not at a boundary we can trust. */
            c->is_reusable = len == 0 && c->out_off == c->out_len && c->body_owed == 0;
            rc = upstream_answer_error(c->up, c->res.header, msg, sizeof msg);
            if (rc != SG_OK)
                snprintf(c->res.err, sizeof c->res.err, "%s", msg);
            upcall_finish(c, rc, NULL);
            return -1;
        }
        }
    }
    return 0;
}

/* Reads what the backend sent; returns 0, or -1 when c ended. */
static int pump_in(struct upcall *c)
{
    uint8_t buf[READ_CHUNK];
    for (;;) {
        ssize_t n = recv(c->bc->watch.fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            broke(c, SG_ERR_CLOSED, strerror(errno));
            return -1;
        }
        if (n == 0) {
            broke(c, SG_ERR_CLOSED,
                  c->got == 0 ? "closed the connection without answering" : "closed the connection mid-answer");
            return -1;
        }
        c->got += (uint64_t)n;
        if (take_frame(c, buf, (size_t)n) < 0)
            return -1;
    }
}

static void on_owned(struct upcall *c, uint32_t events)
{
    struct wk_watch *w = &c->bc->watch;
    if (c->state == ST_DONE) {
        if (c->ready)
            c->ready(c->ready_arg, events); /* a head-only call's body, streamed by its caller */
        return; /* the answer is in; the connection waits for upcall_free */
    }
    if (c->state == ST_CONNECTING) {
        int soerr;
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        soerr = upcall_connect_error(w->fd);
        if (soerr) {
            char why[200];
            if (move_on(c, SG_ERR_REFUSED)) /* never reached: another address, whatever the request */
                return;
            snprintf(why, sizeof why, "connect %s: %s", c->pick.text, strerror(soerr));
            upcall_fail(c, SG_ERR_REFUSED, why);
            return;
        }
        c->state = ST_EXCHANGING;
        worker_timer_arm(c->wk, &c->deadline, c->deadline_ms);
    }
    if (pump_out(c) < 0)
        return;
    /*
     * Reads only on a readable edge: the backend taking the request raises a
     * writable one first, and reading then would only hear EAGAIN. epoll
     * reports what the socket holds when it hands the event over, so bytes
     * already there always come with EPOLLIN.
     */
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && pump_in(c) < 0)
        return;
    /* The header is out and the socket may take more: the caller's body goes on (it may end c). */
    if (c->is_body_fed && c->body_owed > 0 && c->out_off == c->out_len && c->writable &&
        (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        c->writable(c, c->writable_arg);
}

static void on_deadline(struct wk_timer *t)
{
    struct upcall *c = (struct upcall *)((char *)t - offsetof(struct upcall, deadline));
    if (c->pipe) {
        upcall_pipe_deadline(c);
        return;
    }
    if (c->state == ST_CONNECTING) {
        if (move_on(c, SG_ERR_TIMEOUT))
            return;
        upcall_fail(c, SG_ERR_TIMEOUT, "connect timed out");
    }
    else if (c->kind == KIND_DGRAM && sg_now_ms() < c->deadline_ms)
        dgram_move(c, SG_ERR_TIMEOUT, "no answer"); /* this address's share of the deadline is up */
    else
        upcall_fail(c, SG_ERR_TIMEOUT, c->got == 0 ? "no answer before the deadline" : "stalled in the middle of an answer");
}

/* ---- datagrams ---- */

/* Sends the request datagram; returns 0 or the errno of a failure that ends the call. */
static int dgram_send(struct upcall *c)
{
    if (send(c->watch.fd, c->out, c->out_len, MSG_NOSIGNAL) < 0 && errno != ECONNREFUSED && errno != EAGAIN)
        return errno;
    return 0;
}

static void on_retry(struct wk_timer *t)
{
    struct upcall *c = (struct upcall *)((char *)t - offsetof(struct upcall, retry));
    int e = dgram_send(c); /* the datagram or its reply was lost: send again */
    if (e) {
        upcall_fail(c, SG_ERR_CLOSED, strerror(e));
        return;
    }
    worker_timer_arm(c->wk, &c->retry, sg_now_ms() + c->retry_ms);
}

static void on_dgram(struct wk_watch *w, uint32_t events)
{
    struct upcall *c = (struct upcall *)((char *)w - offsetof(struct upcall, watch));
    (void)events;
    for (;;) {
        ssize_t n = recv(w->fd, c->res.body, c->body_cap, 0);
        if (n >= 0) {
            c->res.body_len = (size_t)n;
            c->res.body[n] = '\0';
            upcall_finish(c, SG_OK, NULL);
            return;
        }
        if (errno == ECONNREFUSED) {
            dgram_move(c, SG_ERR_REFUSED, "nothing listens on that port (ICMP port unreachable)");
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno != EINTR) {
            upcall_fail(c, SG_ERR_CLOSED, strerror(errno));
            return;
        }
    }
}

/*
 * When the attempt on the current address gives up: the time left is shared
 * evenly by the addresses this call may still try (each at least two sends),
 * and the last one has what is left of the deadline.
 */
static int64_t dgram_attempt_end(const struct upcall *c)
{
    int64_t now = sg_now_ms(), left = c->deadline_ms - now, share;
    int others = balancer_count(c->up->bal) - 1 - __builtin_popcountll(c->avoid);
    int tries = 1 + (others < MAX_MOVES - c->moves ? others : MAX_MOVES - c->moves);
    if (tries <= 1 || left <= 0)
        return c->deadline_ms;
    share = left / tries;
    if (share < 2 * (int64_t)c->retry_ms)
        share = 2 * (int64_t)c->retry_ms;
    return now + share < c->deadline_ms ? now + share : c->deadline_ms;
}

/* Sends c's datagram from a new socket to an address the balancer picks (none in c->avoid); SG_OK or why in err. */
static int dgram_attach(struct upcall *c, char *err, size_t errlen)
{
    int rc, is_pending, e;
    if (balancer_pick(c->up->bal, c->avoid, &c->pick) != SG_OK) {
        snprintf(err, errlen, "no address of %s left to try", c->up->name);
        return SG_ERR_REFUSED;
    }
    c->has_pick = 1;
    rc = upcall_connect_start(&c->pick, SOCK_DGRAM, &c->watch.fd, &is_pending, err, errlen);
    if (rc != SG_OK)
        return rc;
    if (worker_watch(c->wk, &c->watch, EPOLLIN | EPOLLET) != 0) {
        snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
        return SG_ERR_SYS;
    }
    c->is_watched = 1;
    c->state = ST_EXCHANGING;
    worker_timer_arm(c->wk, &c->deadline, dgram_attempt_end(c));
    worker_timer_arm(c->wk, &c->retry, sg_now_ms() + c->retry_ms);
    e = dgram_send(c);
    if (e != 0) {
        snprintf(err, errlen, "%s", strerror(e));
        return SG_ERR_CLOSED;
    }
    return SG_OK;
}

/*
 * The datagram's address refused it or left it unanswered for its share of
 * the deadline: a time request only reads, so it goes to another address when
 * there is one (and time and moves are left); else the call fails with rc.
 */
static void dgram_move(struct upcall *c, int rc, const char *what)
{
    char err[256] = "";
    int others = balancer_count(c->up->bal) - 1 - __builtin_popcountll(c->avoid);
    if (c->moves >= MAX_MOVES || others <= 0 || sg_now_ms() >= c->deadline_ms) {
        upcall_fail(c, rc, what);
        return;
    }
    upcall_release_pick(c, upcall_outcome_of(c, rc));
    c->avoid |= UINT64_C(1) << c->pick.slot;
    c->moves++;
    upcall_detach(c);
    if (c->watch.fd >= 0)
        close(c->watch.fd);
    c->watch.fd = -1;
    if (dgram_attach(c, err, sizeof err) == SG_OK)
        return;
    upcall_release_pick(c, BAL_NEUTRAL);
    c->state = ST_EXCHANGING;
    upcall_fail(c, rc, what);
}

/* ---- starting ---- */

static struct upcall *upcall_new(struct upstream *up, enum kind kind, int64_t deadline_ms, upcall_done_fn done,
                                 void *arg, char *err, size_t errlen)
{
    struct upcall *c;
    struct worker *wk = worker_self();
    if (!wk) {
        snprintf(err, errlen, "no event loop on this thread");
        return NULL;
    }
    if (!up->is_configured) {
        snprintf(err, errlen, "the %s backend is not configured: it is not built into this gateway and no address was given",
                 backend_name(up->id));
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->up = up;
    c->wk = wk;
    c->kind = kind;
    c->deadline_ms = deadline_ms;
    c->done = done;
    c->arg = arg;
    c->watch.fd = -1;
    c->watch.ready = on_dgram;
    c->deadline.fire = on_deadline;
    c->retry.fire = on_retry;
    sg_frame_decoder_init(&c->dec, 0);
    return c;
}

/* Returns the error of a start that failed: counted, and up's name in err. */
static int start_failed(struct upcall *c, struct upstream *up, int rc, char *err, size_t errlen)
{
    char why[256];
    if (c) {
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "%s backend at %s: %s", backend_name(up->id), up->name, why);
        upstream_failed(up, rc);
        upcall_release_pick(c, rc == SG_ERR_REFUSED ? BAL_CONNECT_FAIL : BAL_NEUTRAL);
        upcall_free(c);
    }
    return rc;
}

int upcall_frame(struct upstream *up, const json_t *header, const void *body, size_t body_len, size_t max_body,
                 int is_replayable, int64_t deadline_ms, upcall_done_fn done, void *arg, struct upcall **out,
                 char *err, size_t errlen)
{
    struct upcall *c = upcall_new(up, KIND_FRAME, deadline_ms, done, arg, err, errlen);
    uint8_t *hdr = NULL;
    size_t hdr_len = 0;
    int rc;
    *out = NULL;
    if (!c)
        return up->is_configured ? SG_ERR_NOMEM : SG_ERR_REFUSED;
    rc = sg_frame_encode_header(header, 0, &hdr, &hdr_len);
    if (rc == SG_OK && !(c->out = malloc(hdr_len + body_len)))
        rc = SG_ERR_NOMEM;
    if (rc != SG_OK) {
        free(hdr);
        upcall_free(c);
        snprintf(err, errlen, "%s", sg_strerror(rc));
        return rc;
    }
    {
        const char *op = json_string_value(json_object_get(header, "op"));
        const char *id = json_string_value(json_object_get(header, "id"));
        snprintf(c->req_op, sizeof c->req_op, "%s", op ? op : "");
        snprintf(c->req_id, sizeof c->req_id, "%s", id ? id : "");
    }
    memcpy(c->out, hdr, hdr_len);
    if (body_len)
        memcpy(c->out + hdr_len, body, body_len);
    free(hdr);
    c->out_len = hdr_len + body_len;
    c->max_body = max_body;
    c->is_replayable = is_replayable;
    rc = attach(c, 0, err, errlen);
    if (rc != SG_OK)
        return start_failed(c, up, rc, err, errlen);
    *out = c;
    return SG_OK;
}

int upcall_raw(struct upstream *up, const void *req, size_t len, int64_t deadline_ms,
               upcall_done_fn done, void *arg, struct upcall **out, char *err, size_t errlen)
{
    struct upcall *c;
    int rc;
    *out = NULL;
    if (len == 0) { /* nothing would ever come back */
        snprintf(err, errlen, "an echo of nothing is nothing: no call needed");
        return SG_ERR_INVALID;
    }
    c = upcall_new(up, KIND_RAW, deadline_ms, done, arg, err, errlen);
    if (!c)
        return up->is_configured ? SG_ERR_NOMEM : SG_ERR_REFUSED;
    c->out = malloc(len);
    c->res.body = malloc(len + 1);
    if (!c->out || !c->res.body) {
        upcall_free(c);
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    memcpy(c->out, req, len);
    c->out_len = len;
    c->is_replayable = 1; /* an echo does nothing but answer */
    err[0] = '\0';
    rc = upcall_pipe_join(c, err, errlen);
    if (rc != SG_OK)
        return start_failed(c, up, rc, err, errlen);
    *out = c;
    return SG_OK;
}

int upcall_datagram(struct upstream *up, const void *req, size_t len, size_t cap, int retry_ms,
                    int64_t deadline_ms, upcall_done_fn done, void *arg, struct upcall **out, char *err,
                    size_t errlen)
{
    struct upcall *c = upcall_new(up, KIND_DGRAM, deadline_ms, done, arg, err, errlen);
    int rc;
    *out = NULL;
    if (!c)
        return up->is_configured ? SG_ERR_NOMEM : SG_ERR_REFUSED;
    c->out = malloc(len ? len : 1);
    c->res.body = malloc(cap + 1);
    if (!c->out || !c->res.body) {
        upcall_free(c);
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    memcpy(c->out, req, len);
    c->out_len = len;
    c->body_cap = cap;
    c->retry_ms = retry_ms;
    rc = dgram_attach(c, err, errlen);
    if (rc != SG_OK) /* reported now, never through done() */
        return start_failed(c, up, rc, err, errlen);
    *out = c;
    return SG_OK;
}

int upcall_frame_head(struct upstream *up, const json_t *header, int is_replayable, int64_t deadline_ms,
                      upcall_done_fn done, void *arg, struct upcall **out, char *err, size_t errlen)
{
    /* Nothing can be sent before the call exists: it is marked before the first answer byte is read. */
    int rc = upcall_frame(up, header, NULL, 0, 0, is_replayable, deadline_ms, done, arg, out, err, errlen);
    if (rc == SG_OK)
        (*out)->is_head_only = 1;
    return rc;
}

int upcall_fd(const struct upcall *c)
{
    return c->bc ? c->bc->watch.fd : -1;
}

void upcall_on_ready(struct upcall *c, upcall_ready_fn ready, void *arg)
{
    c->ready = ready;
    c->ready_arg = arg;
}

void upcall_body_read_whole(struct upcall *c)
{
    c->is_reusable = c->state == ST_DONE && c->out_off == c->out_len;
}

/* ---- a request body fed by the caller (uploads) ---- */

int upcall_frame_feed(struct upstream *up, const json_t *header, uint64_t body_size, int64_t deadline_ms,
                      upcall_writable_fn writable, upcall_done_fn done, void *arg, struct upcall **out, char *err,
                      size_t errlen)
{
    /* Never replayed: once a body byte went out, no one has the bytes to send again. */
    int rc = upcall_frame(up, header, NULL, 0, 0, 0, deadline_ms, done, arg, out, err, errlen);
    if (rc == SG_OK) {
        (*out)->is_body_fed = 1;
        (*out)->body_owed = body_size;
        (*out)->writable = writable;
        (*out)->writable_arg = arg;
        (*out)->step_ms = deadline_ms - sg_now_ms();
    }
    return rc;
}

uint64_t upcall_body_owed(const struct upcall *c)
{
    return c->body_owed;
}

/*
 * After a body write of w bytes (0: the socket was full). The deadline runs
 * only while the backend keeps us waiting: from a write it did not take,
 * and for its answer once the body is out; a client that is slow to send
 * is its own deadline's business (--body-timeout), not the backend's.
 */
static void body_wrote(struct upcall *c, ssize_t w)
{
    if (w > 0)
        c->body_owed -= (uint64_t)w;
    if (w > 0 && c->body_owed > 0)
        worker_timer_cancel(c->wk, &c->deadline);
    else if (c->body_owed == 0 || !c->deadline.slot)
        worker_timer_arm(c->wk, &c->deadline, sg_now_ms() + c->step_ms);
}

/* Returns 1 when c may take body bytes now: running, connected, its header out whole. */
static int takes_body(const struct upcall *c)
{
    return c->is_body_fed && c->state == ST_EXCHANGING && c->out_off == c->out_len;
}

ssize_t upcall_send(struct upcall *c, const void *buf, size_t len)
{
    ssize_t w;
    if (c->state == ST_DONE)
        return -1;
    if (len > c->body_owed)
        len = (size_t)c->body_owed; /* never a byte past what the header announced */
    if (!takes_body(c) || len == 0)
        return 0;
    do
        w = send(c->bc->watch.fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            body_wrote(c, 0);
            return 0;
        }
        /* The answer (an error frame the backend sent before closing) may be there to read. */
        if (pump_in(c) == 0 && c->state != ST_DONE)
            upcall_fail(c, SG_ERR_CLOSED, "closed the connection in the middle of the body");
        return -1;
    }
    body_wrote(c, w);
    return w;
}

ssize_t upcall_sendfile(struct upcall *c, int fd, uint64_t *off, size_t len)
{
    off_t o = (off_t)*off;
    ssize_t w;
    if (c->state == ST_DONE)
        return -1;
    if (len > c->body_owed)
        len = (size_t)c->body_owed;
    if (!takes_body(c) || len == 0)
        return 0;
    do
        w = sendfile(c->bc->watch.fd, fd, &o, len);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            body_wrote(c, 0);
            return 0;
        }
        if (errno != EPIPE && errno != ECONNRESET) {
            char why[200];
            snprintf(why, sizeof why, "sendfile: %s", strerror(errno));
            upcall_fail(c, SG_ERR_SYS, why);
            return -1;
        }
        if (pump_in(c) == 0 && c->state != ST_DONE)
            upcall_fail(c, SG_ERR_CLOSED, "closed the connection in the middle of the body");
        return -1;
    }
    if (w == 0) { /* the file is shorter than said: the frame can never be completed */
        upcall_fail(c, SG_ERR_SYS, "the spool file ended before the body did");
        return -1;
    }
    *off = (uint64_t)o;
    body_wrote(c, w);
    return w;
}
