/* conn.c - the chat's TCP connections: accept, framed requests, backpressure, subscriber streams, the too-slow cut. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chat_int.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

#define ACCEPT_BATCH 64       /* accepts per wake-up, so a connection storm cannot starve the rest */
#define PUMP_ROUNDS 16        /* buffers of frames one subscriber may send per wake-up (16 x 16 KiB) */
#define OUT_KEEP (64u * 1024) /* a request connection keeps an output buffer up to this size once drained */

static void slist_add(struct chat_server *srv, struct conn *c)
{
    if (c->on_slist)
        return;
    c->sprev = NULL;
    c->snext = srv->slist;
    if (srv->slist)
        srv->slist->sprev = c;
    srv->slist = c;
    c->on_slist = 1;
}

static void slist_remove(struct chat_server *srv, struct conn *c)
{
    if (!c->on_slist)
        return;
    if (c->sprev)
        c->sprev->snext = c->snext;
    else
        srv->slist = c->snext;
    if (c->snext)
        c->snext->sprev = c->sprev;
    c->sprev = c->snext = NULL;
    c->on_slist = 0;
}

void conn_close(struct chat_server *srv, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    slist_remove(srv, c);
    if (c->state == CONN_SUBSCRIBER)
        srv->nsubs--;
    /* close() also removes the descriptor from epoll: it is never shared or dup'ed. */
    close(c->fd);
    sg_frame_decoder_free(&c->dec);
    free(c->out);
    free(c->pending);
    free(c);
    srv->nconns--;
}

/* Registers events for c unless already so; returns -1 if epoll refuses. */
static int set_events(struct chat_server *srv, struct conn *c, uint32_t events)
{
    return sg_evloop_set_events(&srv->loop, c->fd, &c->events, events, c);
}

void conn_accept_ready(struct chat_server *srv, int64_t now)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct conn *c;
        /* -1: nothing queued, or out of descriptors (the loop then pauses accepts for a moment). */
        int fd = sg_evloop_accept(&srv->loop, now);
        if (fd < 0)
            return;
        /* Over the limit: accept and close at once, so the client sees EOF instead of a hang. */
        if (srv->nconns >= srv->max_conns) {
            close(fd);
            chat_warn_limited(srv, "connection refused: --max-conns (%u) reached", srv->max_conns);
            continue;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            chat_warn_limited(srv, "connection refused: out of memory");
            continue;
        }
        c->fd = fd;
        c->state = CONN_REQUEST;
        c->events = EPOLLIN;
        sg_frame_decoder_init(&c->dec, 0);
        if (sg_evloop_add(&srv->loop, fd, EPOLLIN, c) < 0) {
            sg_error("epoll_ctl add: %s", strerror(errno));
            sg_frame_decoder_free(&c->dec);
            free(c);
            close(fd);
            continue;
        }
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
    }
}

/* Makes room for extra more bytes in c->out, moving unsent bytes to the front first. */
static int out_reserve(struct conn *c, size_t extra)
{
    size_t need;
    if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    need = c->out_len + extra;
    if (need > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        uint8_t *p;
        while (cap < need)
            cap *= 2;
        p = realloc(c->out, cap);
        if (!p)
            return SG_ERR_NOMEM;
        c->out = p;
        c->out_cap = cap;
    }
    return SG_OK;
}

int conn_queue_frame(struct conn *c, const json_t *header, const void *body, size_t body_len)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = sg_frame_encode_header(header, 0, &buf, &len);
    if (rc != SG_OK)
        return rc;
    rc = out_reserve(c, len + body_len);
    if (rc == SG_OK) {
        memcpy(c->out + c->out_len, buf, len);
        if (body_len)
            memcpy(c->out + c->out_len + len, body, body_len);
        c->out_len += len + body_len;
    }
    free(buf);
    return rc;
}

/* Sends what c->out holds: 1 when all is sent, 0 when the socket is full, -1 on a dead connection. */
static int flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->state == CONN_REQUEST && c->out_cap > OUT_KEEP) {
        /* A large response (a long peer list) is not kept around for the life of a pooled connection. */
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 1;
}

/* Copies whole frames from the history cursor into c->out, up to CHAT_SUB_OUT bytes (or one frame). */
static void sub_fill(struct chat_server *srv, struct conn *c)
{
    while (c->next_seq <= srv->history.last_seq) {
        const struct chat_entry *e = history_get(&srv->history, c->next_seq);
        if (!e)
            return; /* evicted: conns_evicting() has cut this subscriber already */
        if (c->out_len > c->out_off && c->out_len - c->out_off + e->frame_len > CHAT_SUB_OUT)
            return;
        if (out_reserve(c, e->frame_len) != SG_OK)
            return; /* out of memory now; the next pump tries again */
        memcpy(c->out + c->out_len, e->frame, e->frame_len);
        c->out_len += e->frame_len;
        c->next_seq++;
    }
}

/* Sends history to subscriber c: 1 when caught up, 0 when more remains (EPOLLOUT armed), -1 when dead. */
static int sub_pump(struct chat_server *srv, struct conn *c)
{
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        int r;
        sub_fill(srv, c);
        r = flush(c);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        if (c->next_seq > srv->history.last_seq)
            return set_events(srv, c, EPOLLIN) < 0 ? -1 : 1;
    }
    /* The socket is full, or this subscriber had its share of this wake-up: go on when writable. */
    return set_events(srv, c, EPOLLIN | EPOLLOUT) < 0 ? -1 : 0;
}

void conn_make_subscriber(struct chat_server *srv, struct conn *c, uint64_t next_seq)
{
    int sndbuf = CHAT_SUB_SNDBUF;
    /* best effort: a larger kernel buffer only lets a stalled reader park more bytes there */
    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    c->state = CONN_SUBSCRIBER;
    c->next_seq = next_seq;
    srv->nsubs++;
    slist_add(srv, c);
}

/*
 * Turns c into a closing connection: its output (whole frames) is followed by
 * err_header, sent within the grace period, and then c is closed. Never
 * frees c, so it is safe from any point of the loop.
 */
static void start_closing(struct chat_server *srv, struct conn *c, json_t *err_header, int64_t now)
{
    if (c->state == CONN_SUBSCRIBER)
        srv->nsubs--;
    c->state = CONN_CLOSING;
    slist_add(srv, c);
    c->close_deadline = now + CHAT_CLOSE_GRACE_MS;
    if (!err_header || conn_queue_frame(c, err_header, NULL, 0) != SG_OK)
        c->close_deadline = now; /* nothing to say after all: close at the next expiry pass */
    json_decref(err_header);
    free(c->pending);
    c->pending = NULL;
    if (set_events(srv, c, EPOLLOUT) < 0)
        c->close_deadline = now;
}

void conns_pump_all(struct chat_server *srv)
{
    struct conn *c = srv->slist, *next;
    for (; c; c = next) {
        next = c->snext;
        if (c->state == CONN_SUBSCRIBER && !(c->events & EPOLLOUT) && sub_pump(srv, c) < 0)
            conn_close(srv, c);
    }
    srv->pumped_seq = srv->history.last_seq;
}

void conns_evicting(struct chat_server *srv, uint64_t seq, int64_t now)
{
    for (struct conn *c = srv->slist; c; c = c->snext) {
        char msg[160];
        if (c->state != CONN_SUBSCRIBER || c->next_seq > seq)
            continue;
        /* A subscriber merely waiting for the end-of-batch pump gets to send first. */
        if (!(c->events & EPOLLOUT)) {
            int r = sub_pump(srv, c);
            if (r < 0) {
                c->out_off = c->out_len = 0;
                start_closing(srv, c, NULL, now);
                continue;
            }
            if (c->next_seq > seq)
                continue;
        }
        snprintf(msg, sizeof msg, "too slow: message %llu left the history (%u held) before this subscriber read it",
                 (unsigned long long)seq, srv->history.cap);
        srv->stats.subscribers_cut++;
        start_closing(srv, c, sg_frame_error_header(SG_ERR_BUSY, msg, NULL), now);
    }
}

int conns_expire(struct chat_server *srv, int64_t now)
{
    struct conn *c = srv->slist, *next;
    int64_t soonest = -1;
    for (; c; c = next) {
        next = c->snext;
        if (c->state != CONN_CLOSING)
            continue;
        if (c->close_deadline <= now) {
            conn_close(srv, c);
            continue;
        }
        if (soonest < 0 || c->close_deadline - now < soonest)
            soonest = c->close_deadline - now;
    }
    return (int)soonest;
}

/* Keeps the unfed input buf[0..len) until the waiting response is sent. */
static int stash(struct conn *c, const uint8_t *buf, size_t len)
{
    uint8_t *p = NULL;
    if (len) {
        p = malloc(len);
        if (!p)
            return SG_ERR_NOMEM;
        memcpy(p, buf, len);
    }
    free(c->pending);
    c->pending = p;
    c->pending_len = len;
    return SG_OK;
}

/* Queues an error (with the request's id, or none) and closes c once it is sent; returns what feed() returns. */
static int fail(struct chat_server *srv, struct conn *c, int err, const char *msg, const char *id, int64_t now)
{
    start_closing(srv, c, sg_frame_error_header(err, msg, id), now);
    return 1;
}

/*
 * Feeds request bytes to c's decoder and answers each complete request.
 * Returns 0 when all input was used, 1 when c now waits for its socket (the
 * rest is stashed, or c is closing), -1 when c must be closed now.
 */
static int feed(struct chat_server *srv, struct conn *c, const uint8_t *buf, size_t len, int64_t now)
{
    /* Until NEED_MORE, also with no input left: a header-only frame reports HEADER, then END. */
    for (;;) {
        const uint8_t *chunk;
        size_t used = 0, chunk_len;
        enum sg_frame_event ev = sg_frame_decode(&c->dec, buf, len, &used, &chunk, &chunk_len);
        int r;
        buf += used;
        len -= used;
        switch (ev) {
        case SG_FRAME_NEED_MORE:
            return 0;
        case SG_FRAME_ERROR:
            /* No id: the broken frame's header may never have been read. */
            return fail(srv, c, SG_ERR_PROTO, sg_frame_decoder_error(&c->dec), NULL, now);
        case SG_FRAME_HEADER:
            c->body_seen = sg_frame_decoder_body_size(&c->dec) > 0;
            if (sg_frame_decoder_body_size(&c->dec) > CHAT_MAX_REQ_BODY)
                return fail(srv, c, SG_ERR_TOO_LARGE, "chat requests carry no body",
                            sg_header_str(sg_frame_decoder_header(&c->dec), "id"), now);
            break;
        case SG_FRAME_BODY:
            break; /* skipped: the request is refused at its end */
        case SG_FRAME_END:
            if (ops_dispatch(srv, c, sg_frame_decoder_header(&c->dec), c->body_seen, now) != SG_OK)
                return -1;
            if (c->state == CONN_SUBSCRIBER) {
                /* From here the connection only streams; what the client sends is ignored. */
                sg_frame_decoder_free(&c->dec);
                return sub_pump(srv, c) < 0 ? -1 : 1;
            }
            if (c->state == CONN_CLOSING)
                return 1;
            r = flush(c);
            if (r < 0)
                return -1;
            if (r == 0) {
                if (stash(c, buf, len) != SG_OK)
                    return -1;
                return set_events(srv, c, EPOLLOUT) < 0 ? -1 : 1;
            }
            break;
        }
    }
}

/* Reads once from c; returns the bytes read, 0 at EOF or on a dead connection, -1 when nothing is there now. */
static ssize_t read_once(struct chat_server *srv, struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, srv->scratch, CHAT_SCRATCH, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : 0;
    }
}

/* Handles a request connection's events; returns -1 when it must be closed. */
static int request_ready(struct chat_server *srv, struct conn *c, uint32_t events, int64_t now)
{
    ssize_t n;
    if (events & EPOLLOUT) {
        uint8_t *p = c->pending;
        int r = flush(c);
        if (r <= 0)
            return r;
        /* The response went out: answer the requests that came behind it before reading more. */
        c->pending = NULL;
        r = p ? feed(srv, c, p, c->pending_len, now) : 0;
        free(p);
        if (r != 0)
            return r < 0 ? -1 : 0;
        return set_events(srv, c, EPOLLIN);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return 0;
    n = read_once(srv, c);
    if (n == 0)
        return -1;
    if (n < 0)
        return 0;
    return feed(srv, c, srv->scratch, (size_t)n, now) < 0 ? -1 : 0;
}

void conn_ready(struct chat_server *srv, struct conn *c, uint32_t events, int64_t now)
{
    int dead = 0;
    switch (c->state) {
    case CONN_CLOSING:
        /* Done when the last error frame is out, or the peer is gone. */
        dead = (events & (EPOLLERR | EPOLLHUP)) || flush(c) != 0;
        break;
    case CONN_SUBSCRIBER:
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            dead = read_once(srv, c) == 0; /* discarded: a subscriber has nothing more to say */
        if (!dead && (events & EPOLLOUT))
            dead = sub_pump(srv, c) < 0;
        break;
    case CONN_REQUEST:
        dead = request_ready(srv, c, events, now) < 0;
        break;
    }
    if (dead)
        conn_close(srv, c);
}
