/* upstream.c - connections to the backends: keep-alive pools, health checks, framed calls with deadlines. */
#include "upstream.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/frame.h"
#include "balancer.h"
#include "reply_check.h"

/* Read-ahead for frame headers; a larger header is read into a buffer of its own. */
#define RBUF_CAP 16384u
/* Idle connections kept per backend; more than the worker threads is never useful. */
#define MAX_IDLE 64u
/* A pooled connection unused this long is closed rather than trusted. */
#define MAX_IDLE_MS 30000
/* A connect never waits longer than this, whatever the call's deadline. */
#define CONNECT_MAX_MS 3000
/* How long a refused body's error frame is waited for once sending broke. */
#define EARLY_ANSWER_MS 1000

static const char *const names[BACKEND__COUNT] = {"echo", "time", "exec", "file", "chat"};

const char *backend_name(enum backend_id id)
{
    return (unsigned)id < BACKEND__COUNT ? names[id] : "unknown";
}

void upstream_init(struct upstream *up, enum backend_id id, int type, int timeout_ms)
{
    memset(up, 0, sizeof *up);
    up->id = id;
    up->type = type;
    up->timeout_ms = timeout_ms;
    pthread_mutex_init(&up->lock, NULL);
    atomic_init(&up->n_errors, 0);
    atomic_init(&up->n_connects, 0);
}

int upstream_set_addr(struct upstream *up, const char *addr_text, int is_embedded, char *err, size_t errlen)
{
    struct bal_pick first;
    int rc = balancer_create(backend_name(up->id), addr_text, up->type, &up->bal, err, errlen);
    if (rc != SG_OK)
        return rc;
    if (balancer_pick(up->bal, 0, &first) == SG_OK) { /* kept for upstream_addr's callers of old */
        up->addr = first.addr;
        balancer_done(up->bal, &first, BAL_NEUTRAL);
    }
    snprintf(up->name, sizeof up->name, "%s", addr_text);
    sg_addr_format((const struct sockaddr *)&up->addr.ss, up->addr.len, up->addr_text, sizeof up->addr_text);
    up->resolved_ms = sg_now_ms();
    up->is_configured = 1;
    up->is_embedded = is_embedded;
    return SG_OK;
}

void upstream_addr(struct upstream *up, struct sg_addr *addr, char *text, size_t textlen)
{
    struct bal_pick p;
    if (up->bal && balancer_pick(up->bal, 0, &p) == SG_OK) {
        balancer_done(up->bal, &p, BAL_NEUTRAL);
        *addr = p.addr;
        if (text)
            snprintf(text, textlen, "%s", p.text);
        return;
    }
    pthread_mutex_lock(&up->lock);
    *addr = up->addr;
    if (text)
        snprintf(text, textlen, "%s", up->addr_text);
    pthread_mutex_unlock(&up->lock);
}

int upstream_reresolve(struct upstream *up)
{
    (void)up; /* the balancer's resolver thread looks names up, on a schedule and at once after a failure */
    return 0;
}

static void conn_close(struct upstream_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->rbuf);
    free(c);
}

void upstream_free(struct upstream *up)
{
    struct upstream_conn *c = up->idle, *next;
    for (; c; c = next) {
        next = c->next;
        conn_close(c);
    }
    up->idle = NULL;
    up->n_idle = 0;
    balancer_free(up->bal);
    up->bal = NULL;
    pthread_mutex_destroy(&up->lock);
}

int upstream_failed(struct upstream *up, int err)
{
    atomic_fetch_add_explicit(&up->n_errors, 1, memory_order_relaxed);
    return err;
}

int upstream_answer_error(struct upstream *up, const json_t *resp, char *err, size_t errlen)
{
    int rc = sg_frame_header_error(resp, err, errlen);
    switch (rc) {
    case SG_ERR_SYS:
    case SG_ERR_NOMEM:
    case SG_ERR_TIMEOUT:
    case SG_ERR_BUSY:
    case SG_ERR_NO_SPACE:
    case SG_ERR_INTERNAL:
    case SG_ERR_REFUSED:
    case SG_ERR_PROTO:
        return upstream_failed(up, rc); /* the backend could not serve: a failure of the backend */
    default:
        return rc; /* SG_OK, or the client's own mistake the backend refused (bad name, not found) */
    }
}

/* Writes "<name> backend at <addr>: <what>" into err and returns rc (counted as a backend failure). */
static int fail(struct upstream *up, int rc, char *err, size_t errlen, const char *what)
{
    char detail[256];
    snprintf(detail, sizeof detail, "%s", what && *what ? what : sg_strerror(rc));
    snprintf(err, errlen, "%s backend at %s: %s", backend_name(up->id), up->name, detail);
    return upstream_failed(up, rc);
}

/* Transport failures after connect are all "the backend broke off": 502, not a gateway bug. */
static int io_error(int rc)
{
    return rc == SG_ERR_SYS ? SG_ERR_CLOSED : rc;
}

/* Returns 1 when an idle connection still looks usable: nothing to read, no hang-up, not too old. */
static int is_healthy(const struct upstream_conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    if (sg_now_ms() - c->idle_since > MAX_IDLE_MS || !balancer_is_current(c->up->bal, c->slot, c->gen))
        return 0; /* too old, or its address was ejected or is gone */
    /* Readable while idle means EOF, an error, or bytes nobody asked for: unusable in every case. */
    return poll(&p, 1, 0) == 0;
}

static int acquire(struct upstream *up, struct upstream_conn **out, int is_fresh_only, int64_t deadline_ms,
                   char *err, size_t errlen)
{
    struct upstream_conn *c = NULL;
    struct sg_addr addr;
    struct bal_pick pick;
    char why[200] = "";
    int64_t left;
    int rc, fd = -1;

    *out = NULL;
    if (!up->is_configured) {
        snprintf(err, errlen, "the %s backend is not configured: it is not built into this gateway and no address was given",
                 backend_name(up->id));
        return SG_ERR_REFUSED;
    }
    while (!is_fresh_only) {
        pthread_mutex_lock(&up->lock);
        c = up->idle;
        if (c) {
            up->idle = c->next;
            up->n_idle--;
        }
        pthread_mutex_unlock(&up->lock);
        if (!c)
            break;
        if (is_healthy(c)) {
            c->next = NULL;
            c->is_reused = 1;
            c->got = 0;
            *out = c;
            return SG_OK;
        }
        conn_close(c);
        c = NULL;
    }
    left = deadline_ms < 0 ? CONNECT_MAX_MS : deadline_ms - sg_now_ms();
    if (left <= 0)
        return fail(up, SG_ERR_TIMEOUT, err, errlen, "no time left to connect");
    /* The balancer picks the address; one refused at once moves the connect to another (nothing was sent). */
    for (uint64_t avoid = 0;;) {
        if (balancer_pick(up->bal, avoid, &pick) != SG_OK) {
            rc = SG_ERR_REFUSED;
            if (!why[0])
                snprintf(why, sizeof why, "no address left to try");
            break;
        }
        rc = sg_connect(&pick.addr, up->type, left > CONNECT_MAX_MS ? CONNECT_MAX_MS : (int)left, &fd, why,
                        sizeof why);
        balancer_done(up->bal, &pick, rc == SG_OK ? BAL_OK : rc == SG_ERR_SYS ? BAL_NEUTRAL : BAL_CONNECT_FAIL);
        if (rc == SG_OK || rc == SG_ERR_SYS)
            break;
        avoid |= UINT64_C(1) << pick.slot;
        left = deadline_ms < 0 ? CONNECT_MAX_MS : deadline_ms - sg_now_ms();
        if (left <= 0)
            break;
    }
    (void)addr;
    if (rc != SG_OK)
        return fail(up, rc == SG_ERR_SYS ? SG_ERR_REFUSED : rc, err, errlen, why);
    atomic_fetch_add_explicit(&up->n_connects, 1, memory_order_relaxed);
    c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    c->up = up;
    c->fd = fd;
    c->slot = pick.slot;
    c->gen = pick.gen;
    *out = c;
    return SG_OK;
}

int upstream_acquire(struct upstream *up, struct upstream_conn **out, int64_t deadline_ms, char *err,
                     size_t errlen)
{
    return acquire(up, out, 0, deadline_ms, err, errlen);
}

int upstream_begin(struct upstream *up, const json_t *header, struct upstream_conn **out, int64_t deadline_ms,
                   char *err, size_t errlen)
{
    struct upstream_conn *c = NULL;
    int rc = SG_OK, is_reused;
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = acquire(up, &c, attempt > 0, deadline_ms, err, errlen);
        if (rc != SG_OK)
            return rc;
        rc = upstream_send_frame(c, header, NULL, 0, deadline_ms);
        if (rc == SG_OK) {
            *out = c;
            return SG_OK;
        }
        is_reused = c->is_reused;
        upstream_release(c, 0);
        if (!is_reused || rc != SG_ERR_CLOSED)
            break; /* only a connection that died while pooled deserves a second try */
    }
    return fail(up, rc, err, errlen, "could not send the request header");
}

int upstream_failed_send(struct upstream_conn *c, int write_rc, char *err, size_t errlen)
{
    char why[256] = "";
    json_t *resp = NULL;
    uint64_t size = 0;
    int rc;
    if (write_rc == SG_ERR_CLOSED &&
        upstream_read_header(c, &resp, &size, sg_now_ms() + EARLY_ANSWER_MS, why, sizeof why) == SG_OK &&
        (rc = upstream_answer_error(c->up, resp, err, errlen)) != SG_OK) {
        json_decref(resp);
        return rc;
    }
    json_decref(resp);
    return fail(c->up, write_rc, err, errlen,
                write_rc == SG_ERR_TIMEOUT ? "stopped taking the body before the deadline"
                                           : "closed the connection in the middle of the body");
}

void upstream_release(struct upstream_conn *c, int is_reusable)
{
    struct upstream *up;
    if (!c)
        return;
    up = c->up;
    /*
     * Only a stream at a frame boundary is pooled: the announced body sent
     * exactly, the answer read whole, nothing buffered past it (those bytes
     * would be read as the next answer). Anything else could let one
     * request's bytes be taken for another's.
     */
    if (!is_reusable || c->roff != c->rlen || c->body_owed != 0 || c->answer_left != 0 || !c->is_answered) {
        conn_close(c);
        return;
    }
    c->roff = c->rlen = 0;
    c->idle_since = sg_now_ms();
    pthread_mutex_lock(&up->lock);
    if (up->n_idle < MAX_IDLE) {
        c->next = up->idle;
        up->idle = c;
        up->n_idle++;
        c = NULL;
    }
    pthread_mutex_unlock(&up->lock);
    if (c)
        conn_close(c);
}

/*
 * Writes len bytes of a request body to c before the deadline (upstream_call's
 * body; uploads feed theirs on the loop). More than the frame header
 * announced is never sent: SG_ERR_PROTO, nothing written.
 */
static int upstream_write(struct upstream_conn *c, const void *buf, size_t len, int64_t deadline_ms)
{
    int rc;
    if (len > c->body_owed)
        return SG_ERR_PROTO;
    rc = io_error(sg_write_all(c->fd, buf, len, deadline_ms));
    if (rc == SG_OK)
        c->body_owed -= len;
    return rc;
}

int upstream_sendfile(struct upstream_conn *c, int fd, uint64_t off, uint64_t len, int step_ms)
{
    off_t pos = (off_t)off;
    if (len > c->body_owed)
        return SG_ERR_PROTO;
    c->body_owed -= len; /* on failure the connection is closed, so the count no longer matters */
    while (len > 0) {
        size_t want = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t n = sendfile(c->fd, fd, &pos, want);
        if (n > 0) {
            len -= (uint64_t)n;
            continue;
        }
        if (n == 0)
            return SG_ERR_INTERNAL; /* the spool file is shorter than it said: a gateway bug */
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return errno == EPIPE || errno == ECONNRESET ? SG_ERR_CLOSED : SG_ERR_SYS;
        if (sg_wait_fd(c->fd, POLLOUT, sg_now_ms() + step_ms) != SG_OK)
            return SG_ERR_TIMEOUT;
    }
    return SG_OK;
}

/* Returns the body size header announces (total_size, else the tutorial's filesize, else 0). */
static uint64_t announced_size(const json_t *header)
{
    const json_t *v = json_object_get(header, "total_size");
    if (!v)
        v = json_object_get(header, "filesize");
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

int upstream_send_frame(struct upstream_conn *c, const json_t *header, const void *body, size_t body_len,
                        int64_t deadline_ms)
{
    uint64_t announced = announced_size(header);
    const char *op = json_string_value(json_object_get(header, "op"));
    const char *id = json_string_value(json_object_get(header, "id"));
    if (body_len > announced || c->body_owed != 0)
        return SG_ERR_INTERNAL; /* a gateway bug: never put more on the wire than the frame says */
    snprintf(c->req_op, sizeof c->req_op, "%s", op ? op : "");
    snprintf(c->req_id, sizeof c->req_id, "%s", id ? id : "");
    c->is_answered = 0;
    c->answer_left = 0;
    c->body_owed = announced - body_len;
    return io_error(sg_frame_send(c->fd, header, body, body_len, deadline_ms));
}

/* Makes at least n bytes (n <= RBUF_CAP) available at c->rbuf + c->roff. */
static int fill(struct upstream_conn *c, size_t n, int64_t deadline_ms)
{
    if (!c->rbuf) {
        c->rbuf = malloc(RBUF_CAP);
        if (!c->rbuf)
            return SG_ERR_NOMEM;
    }
    if (c->roff + n > RBUF_CAP) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
        c->rlen -= c->roff;
        c->roff = 0;
    }
    while (c->rlen - c->roff < n) {
        size_t got = 0;
        int rc = sg_read_some(c->fd, c->rbuf + c->rlen, RBUF_CAP - c->rlen, &got, deadline_ms);
        if (rc != SG_OK)
            return io_error(rc);
        c->rlen += got;
        c->got += got;
    }
    return SG_OK;
}

/*
 * Waits for the first bytes of an answer when none is buffered. Right after a
 * request the backend cannot have answered yet, so a read would only fail with
 * EAGAIN before the poll: waiting first saves that syscall on every call.
 */
static int await_answer(struct upstream_conn *c, int64_t deadline_ms)
{
    if (c->roff < c->rlen)
        return SG_OK;
    return io_error(sg_wait_fd(c->fd, POLLIN, deadline_ms));
}

int upstream_read_header(struct upstream_conn *c, json_t **header, uint64_t *body_size, int64_t deadline_ms,
                         char *err, size_t errlen)
{
    char *big = NULL;
    const char *text;
    uint32_t hlen;
    int rc;

    *header = NULL;
    rc = await_answer(c, deadline_ms);
    if (rc == SG_OK)
        rc = fill(c, 4, deadline_ms);
    if (rc != SG_OK) {
        snprintf(err, errlen, "%s", rc == SG_ERR_CLOSED ? "closed the connection without answering"
                                                        : rc == SG_ERR_TIMEOUT ? "no answer before the deadline"
                                                                               : sg_strerror(rc));
        return rc;
    }
    hlen = (uint32_t)c->rbuf[c->roff] | (uint32_t)c->rbuf[c->roff + 1] << 8 |
           (uint32_t)c->rbuf[c->roff + 2] << 16 | (uint32_t)c->rbuf[c->roff + 3] << 24;
    if (hlen < SG_FRAME_MIN_HEADER || hlen > SG_FRAME_DEFAULT_MAX_HEADER) {
        snprintf(err, errlen, "answered with a header length of %u bytes", hlen);
        return SG_ERR_PROTO;
    }
    if (4 + (size_t)hlen <= RBUF_CAP) {
        rc = fill(c, 4 + hlen, deadline_ms);
        text = (const char *)c->rbuf + c->roff + 4;
    } else {
        size_t have = c->rlen - c->roff - 4;
        big = malloc(hlen);
        if (!big) {
            snprintf(err, errlen, "out of memory");
            return SG_ERR_NOMEM;
        }
        memcpy(big, c->rbuf + c->roff + 4, have);
        c->roff = c->rlen = 0;
        rc = io_error(sg_read_full(c->fd, big + have, hlen - have, deadline_ms));
        c->got += hlen - have;
        text = big;
    }
    if (rc != SG_OK) {
        snprintf(err, errlen, "%s in the middle of a response header",
                 rc == SG_ERR_TIMEOUT ? "stalled" : "closed the connection");
        goto out;
    }
    rc = sg_frame_parse_header(text, hlen, header, body_size, err, errlen);
    if (!big)
        c->roff += 4 + hlen;
    if (rc == SG_OK) {
        c->answer_left = *body_size;
        c->is_answered = 1;
        /* The first answer after a request must be that request's; later frames (a subscription's) are not answers. */
        if (c->req_op[0] || c->req_id[0])
            rc = reply_check(backend_name(c->up->id), c->req_op[0] ? c->req_op : NULL,
                             c->req_id[0] ? c->req_id : NULL, *header, *body_size, err, errlen);
        c->req_op[0] = c->req_id[0] = '\0';
        if (rc != SG_OK) {
            json_decref(*header);
            *header = NULL;
        }
    }
out:
    free(big);
    return rc;
}

int upstream_read_body(struct upstream_conn *c, void *buf, size_t cap, size_t *got, int64_t deadline_ms)
{
    int rc;
    *got = 0;
    if (cap == 0)
        return SG_OK;
    if (cap > c->answer_left)
        cap = (size_t)c->answer_left; /* never read into the next frame */
    if (cap == 0)
        return SG_ERR_PROTO;
    if (c->roff < c->rlen) {
        size_t n = c->rlen - c->roff < cap ? c->rlen - c->roff : cap;
        memcpy(buf, c->rbuf + c->roff, n);
        c->roff += n;
        c->answer_left -= n;
        *got = n;
        return SG_OK;
    }
    /* Nothing buffered: read straight into the caller's buffer, no extra copy for large bodies. */
    rc = io_error(sg_read_some(c->fd, buf, cap, got, deadline_ms));
    c->got += *got;
    c->answer_left -= *got;
    return rc;
}

int upstream_skip_body(struct upstream_conn *c, uint64_t n, int64_t deadline_ms)
{
    char tmp[8192];
    while (n > 0) {
        size_t got = 0;
        int rc = upstream_read_body(c, tmp, n < sizeof tmp ? (size_t)n : sizeof tmp, &got, deadline_ms);
        if (rc != SG_OK)
            return rc;
        n -= got;
    }
    return SG_OK;
}

/* Reads a body of size bytes into a new NUL-terminated buffer of at most max bytes. */
static int read_whole_body(struct upstream_conn *c, uint64_t size, size_t max, char **out, int64_t deadline_ms,
                           char *err, size_t errlen)
{
    char *buf;
    size_t have = 0;
    *out = NULL;
    if (size > max) {
        snprintf(err, errlen, "answered with a %llu-byte body, over the gateway's limit of %zu bytes",
                 (unsigned long long)size, max);
        return SG_ERR_PROTO;
    }
    buf = malloc((size_t)size + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    while (have < size) {
        size_t got = 0;
        int rc = upstream_read_body(c, buf + have, (size_t)size - have, &got, deadline_ms);
        if (rc != SG_OK) {
            free(buf);
            snprintf(err, errlen, "%s in the middle of a response body",
                     rc == SG_ERR_TIMEOUT ? "stalled" : "closed the connection");
            return rc;
        }
        have += got;
    }
    buf[have] = '\0';
    *out = buf;
    return SG_OK;
}

/* The dead-pooled-connection case: a reused connection that failed before a single response byte. */
static int is_stale(const struct upstream_conn *c, int rc)
{
    return c->is_reused && c->got == 0 && rc == SG_ERR_CLOSED;
}

/*
 * Returns 1 for the requests that change nothing (reads): those are the only
 * ones sent again after a pooled connection died with them in flight, since the
 * backend may have carried out the first copy before it died (an exec would
 * run twice, a chat reply go out twice, a delete answer not_found).
 */
static int is_read_only(const json_t *header)
{
    static const char *const reads[] = {"ping", "list", "stat", "download", "peers"};
    const char *op = json_string_value(json_object_get(header, "op"));
    for (size_t i = 0; op && i < sizeof reads / sizeof reads[0]; i++)
        if (strcmp(op, reads[i]) == 0)
            return 1;
    return 0;
}

int upstream_call(struct upstream *up, const json_t *header, const void *body, size_t body_len, json_t **resp,
                  char **resp_body, size_t *resp_len, size_t max_body, int64_t deadline_ms, char *err,
                  size_t errlen)
{
    struct upstream_conn *c = NULL;
    char why[256] = "";
    char *rbody = NULL;
    uint64_t size = 0;
    int rc = SG_OK;

    *resp = NULL;
    if (resp_body)
        *resp_body = NULL;
    if (resp_len)
        *resp_len = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int is_sent;
        rc = acquire(up, &c, attempt > 0, deadline_ms, err, errlen);
        if (rc != SG_OK)
            return rc;
        rc = upstream_send_frame(c, header, body, body_len, deadline_ms);
        is_sent = rc == SG_OK;
        if (is_sent)
            rc = upstream_read_header(c, resp, &size, deadline_ms, why, sizeof why);
        else
            snprintf(why, sizeof why, "%s while sending the request",
                     rc == SG_ERR_TIMEOUT ? "stalled" : "closed the connection");
        /* A request the backend could not have received whole is always safe to send again. */
        if (rc == SG_OK || !is_stale(c, rc) || (is_sent && !is_read_only(header)))
            break;
        /* The pooled connection had been closed by the backend: one retry on a fresh one. */
        upstream_release(c, 0);
        c = NULL;
    }
    if (rc != SG_OK) {
        upstream_release(c, 0);
        return fail(up, rc, err, errlen, why);
    }
    rc = read_whole_body(c, size, max_body, &rbody, deadline_ms, why, sizeof why);
    if (rc != SG_OK) {
        upstream_release(c, 0);
        json_decref(*resp);
        *resp = NULL;
        return fail(up, rc, err, errlen, why);
    }
    upstream_release(c, 1);
    if (resp_len)
        *resp_len = (size_t)size;
    if (resp_body)
        *resp_body = rbody;
    else
        free(rbody);
    /* An error frame is a complete, well-formed answer: the connection went back to the pool. */
    return upstream_answer_error(up, *resp, err, errlen);
}

int upstream_exchange_raw(struct upstream *up, const void *req, void *reply, size_t len, size_t chunk,
                          int64_t deadline_ms, char *err, size_t errlen)
{
    struct upstream_conn *c = NULL;
    int rc = SG_OK;

    for (int attempt = 0; attempt < 2; attempt++) {
        size_t off = 0;
        rc = acquire(up, &c, attempt > 0, deadline_ms, err, errlen);
        if (rc != SG_OK)
            return rc;
        /* The echo protocol's framing: every byte sent comes back once, so the exchange ends after len each way. */
        c->body_owed = len;
        c->answer_left = len;
        c->is_answered = 1;
        c->req_op[0] = c->req_id[0] = '\0';
        while (rc == SG_OK && off < len) {
            size_t n = len - off < chunk ? len - off : chunk, have = 0;
            rc = upstream_write(c, (const char *)req + off, n, deadline_ms);
            if (rc == SG_OK)
                rc = await_answer(c, deadline_ms);
            while (rc == SG_OK && have < n) {
                size_t got = 0;
                rc = upstream_read_body(c, (char *)reply + off + have, n - have, &got, deadline_ms);
                have += got;
            }
            off += n;
        }
        if (rc == SG_OK || !is_stale(c, rc))
            break;
        upstream_release(c, 0);
        c = NULL;
    }
    if (rc != SG_OK) {
        upstream_release(c, 0);
        return fail(up, rc, err, errlen,
                    rc == SG_ERR_TIMEOUT ? "no answer before the deadline" : "closed the connection");
    }
    upstream_release(c, 1);
    return SG_OK;
}

int upstream_datagram(struct upstream *up, const void *req, size_t len, void *reply, size_t cap, size_t *got,
                      int retry_ms, int64_t deadline_ms, char *err, size_t errlen)
{
    struct bal_pick pick;
    char why[200] = "";
    int fd = -1, rc;

    *got = 0;
    if (!up->is_configured) {
        snprintf(err, errlen, "the %s backend is not configured: it is not built into this gateway and no address was given",
                 backend_name(up->id));
        return SG_ERR_REFUSED;
    }
    if (balancer_pick(up->bal, 0, &pick) != SG_OK)
        return fail(up, SG_ERR_REFUSED, err, errlen, "no address known");
    rc = sg_connect(&pick.addr, SOCK_DGRAM, CONNECT_MAX_MS, &fd, why, sizeof why);
    if (rc != SG_OK) {
        balancer_done(up->bal, &pick, BAL_CONNECT_FAIL);
        return fail(up, rc == SG_ERR_SYS ? SG_ERR_REFUSED : rc, err, errlen, why);
    }
    for (;;) {
        int64_t wait_until = sg_now_ms() + retry_ms;
        ssize_t n;
        if (deadline_ms >= 0 && wait_until > deadline_ms)
            wait_until = deadline_ms;
        if (send(fd, req, len, MSG_NOSIGNAL) < 0 && errno != ECONNREFUSED) {
            rc = fail(up, SG_ERR_CLOSED, err, errlen, strerror(errno));
            goto out;
        }
        rc = sg_wait_fd(fd, POLLIN, wait_until);
        if (rc == SG_ERR_TIMEOUT) {
            if (deadline_ms >= 0 && sg_now_ms() >= deadline_ms) {
                rc = fail(up, SG_ERR_TIMEOUT, err, errlen, "no reply to any datagram before the deadline");
                goto out;
            }
            continue; /* the datagram or its reply was lost: send again */
        }
        n = recv(fd, reply, cap, 0);
        if (n >= 0) {
            *got = (size_t)n;
            rc = SG_OK;
            goto out;
        }
        if (errno == ECONNREFUSED) {
            rc = fail(up, SG_ERR_REFUSED, err, errlen, "nothing listens on that port (ICMP port unreachable)");
            goto out;
        }
        if (errno != EINTR && errno != EAGAIN) {
            rc = fail(up, SG_ERR_CLOSED, err, errlen, strerror(errno));
            goto out;
        }
    }
out:
    close(fd);
    /* Unanswered or refused: the balancer ejects the address and looks the name up again. */
    balancer_done(up->bal, &pick, rc == SG_OK ? BAL_OK : rc == SG_ERR_REFUSED ? BAL_CONNECT_FAIL : BAL_BROKE);
    return rc;
}
