/* chat_stream.c - chat subscriptions as Server-Sent Events on the worker's loop: parked connections, bounded buffers. */
#include "chat_stream.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "api.h"
#include "server.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "upcall_stream.h"
#include "worker.h"

/*
 * A chat message header is at most about 6.3 KiB (1024 bytes of text, each
 * escaped as \u00XX, plus addresses); room for one this large is kept.
 */
#define MAX_HEADER (16u * 1024u)
/*
 * Bytes waiting for the client. The subscription is read only while the
 * largest event still fits, so this is the most a slow reader ever costs;
 * past it the chat service's own buffer fills and it cuts the reader as too slow.
 */
#define OUT_CAP (32u * 1024u)
#define EVENT_ROOM (MAX_HEADER + 64u)
/* Kept free for one comment (a heartbeat, why a stream ends) whatever the messages took. */
#define COMMENT_ROOM 256u
/* libmicrohttpd asks for at most this much per call. */
#define BLOCK_SIZE (16u * 1024u)
/* Unacknowledged data older than this drops a client that vanished without a FIN (heartbeats make data). */
#define CLIENT_USER_TIMEOUT_MS 45000u

/*
 * One event stream. Shared by the request (until it ends) and by
 * libmicrohttpd's response (until it releases it): freed when both let go.
 * Everything runs on the worker's thread that owns the connection.
 */
struct chat_stream {
    struct chat_stream *prev, *next; /* this worker's streams (streams_of_thread) */
    int refs;
    struct request *rq;          /* NULL once the request ended */
    struct MHD_Connection *conn; /* the response's connection, NULL once released */
    struct worker *wk;
    struct upcall_stream *us;    /* the subscription; NULL once closed */
    int is_subscribed;           /* the chat service acknowledged */
    int is_ended;                /* nothing follows what is in out */
    int is_suspended;            /* our content callback parked the connection */
    int is_paused;               /* the subscription is not read until out has room */
    int end_rc;                  /* why the stream ended before it was acknowledged */
    char end_err[384];
    struct wk_timer heartbeat;
    int64_t last_out_ms;
    size_t out_off, out_len;
    char out[OUT_CAP];
};

static _Thread_local struct chat_stream *streams_of_thread;
static _Thread_local int is_closing_here; /* this worker quiesced: no new streams */
static atomic_long n_open;

long chat_streams_open(void)
{
    return atomic_load_explicit(&n_open, memory_order_relaxed);
}

static void cs_drop(struct chat_stream *cs)
{
    if (--cs->refs > 0)
        return;
    if (cs->prev)
        cs->prev->next = cs->next;
    else
        streams_of_thread = cs->next;
    if (cs->next)
        cs->next->prev = cs->prev;
    upcall_stream_close(cs->us); /* the chat service forgets the subscriber at once */
    worker_timer_cancel(cs->wk, &cs->heartbeat);
    free(cs);
    atomic_fetch_sub_explicit(&n_open, 1, memory_order_relaxed);
}

/* Lets libmicrohttpd call the content callback again when it is parked. */
static void cs_wake(struct chat_stream *cs)
{
    if (!cs->is_suspended || !cs->conn)
        return;
    cs->is_suspended = 0;
    worker_resume(cs->conn);
}

static size_t queued(const struct chat_stream *cs)
{
    return cs->out_len - cs->out_off;
}

/* Appends len bytes for the client when they fit below limit; returns 0 when they do not. */
static int out_append(struct chat_stream *cs, const char *text, size_t len, size_t limit)
{
    if (cs->out_off > 0) {
        memmove(cs->out, cs->out + cs->out_off, queued(cs));
        cs->out_len -= cs->out_off;
        cs->out_off = 0;
    }
    if (len > limit - cs->out_len)
        return 0;
    memcpy(cs->out + cs->out_len, text, len);
    cs->out_len += len;
    cs->last_out_ms = sg_now_ms();
    return 1;
}

/* Appends an SSE comment line (best effort: dropped when even the reserve is used up). */
static void out_comment(struct chat_stream *cs, const char *text)
{
    char line[COMMENT_ROOM];
    int n = snprintf(line, sizeof line, ": %s\n\n", text);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    /* A comment is one line: a line break inside it would end it early. */
    for (int i = 2; i < n - 2; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n - 2] = '\n';
    line[n - 1] = '\n';
    out_append(cs, line, (size_t)n, OUT_CAP);
}

/* Ends the stream: what is queued is still sent (why as a comment last), then the response ends. */
static void end_stream(struct chat_stream *cs, const char *why)
{
    if (cs->is_ended)
        return;
    if (why)
        out_comment(cs, why);
    cs->is_ended = 1;
    upcall_stream_close(cs->us);
    cs->us = NULL;
    cs_wake(cs);
}

/* The acknowledgement as the stream's first event (replay count, missed, reset), without the request id. */
static int append_subscribed(struct chat_stream *cs, const json_t *ack)
{
    json_t *copy = json_copy((json_t *)ack);
    char *data = NULL;
    int ok = 0;
    if (copy && json_object_del(copy, "id") == 0 && (data = json_dumps(copy, JSON_COMPACT)) != NULL) {
        char *text = malloc(strlen(data) + 64);
        if (text) {
            int n = snprintf(text, strlen(data) + 64, "event: subscribed\ndata: %s\n\n", data);
            ok = out_append(cs, text, (size_t)n, OUT_CAP - COMMENT_ROOM);
            free(text);
        }
    }
    free(data);
    json_decref(copy);
    return ok;
}

/* Turns one message frame header into "id: SEQ / event: message / data: JSON"; SG_ERR_TOO_LARGE when it does not fit. */
static int append_message(struct chat_stream *cs, const json_t *h)
{
    char head[64];
    int64_t seq = 0;
    size_t json_len, need;
    int n;

    if (sg_header_int(h, "seq", 1, INT64_MAX, &seq) != SG_OK)
        return SG_OK; /* not a message (a key this gateway does not know): nothing to forward */
    n = snprintf(head, sizeof head, "id: %" PRId64 "\nevent: message\ndata: ", seq);
    json_len = json_dumpb(h, NULL, 0, JSON_COMPACT);
    need = (size_t)n + json_len + 2;
    if (json_len == 0 || queued(cs) + need > OUT_CAP - COMMENT_ROOM)
        return SG_ERR_TOO_LARGE;
    out_append(cs, head, (size_t)n, OUT_CAP);
    /* Compact JSON escapes every control character, so the data is one line whatever the text holds. */
    json_dumpb(h, cs->out + cs->out_len, json_len, JSON_COMPACT);
    cs->out_len += json_len;
    out_append(cs, "\n\n", 2, OUT_CAP);
    return SG_OK;
}

/* 1 when the largest event still fits next to what is queued. */
static int has_room(const struct chat_stream *cs)
{
    return queued(cs) + EVENT_ROOM <= OUT_CAP - COMMENT_ROOM;
}

/* The subscription's frames: the acknowledgement first, then one per message. */
static int on_frame(struct upcall_stream *us, const json_t *h, const uint8_t *body, size_t len, void *arg)
{
    struct chat_stream *cs = arg;
    (void)body;
    (void)len;
    if (!cs->is_subscribed) {
        cs->is_subscribed = 1;
        upcall_stream_set_deadline(us, 0); /* a subscription lasts as long as its reader */
        if (!append_subscribed(cs, h)) {
            cs->end_rc = SG_ERR_NOMEM;
            snprintf(cs->end_err, sizeof cs->end_err, "out of memory");
            cs->is_subscribed = 0;
            cs->is_ended = 1;
        }
        if (cs->rq)
            request_wake(cs->rq);
        return cs->is_ended;
    }
    if (append_message(cs, h) != SG_OK) {
        out_comment(cs, "a chat message too large to forward");
        cs->is_ended = 1;
        cs_wake(cs);
        return 1;
    }
    if (!has_room(cs)) {
        /* The client reads slower than messages come: the chat service's buffer takes the rest, then cuts it. */
        cs->is_paused = 1;
        upcall_stream_pause(us);
    }
    cs_wake(cs);
    return 0;
}

static void on_end(struct upcall_stream *us, int rc, const char *err, void *arg)
{
    struct chat_stream *cs = arg;
    char why[300];
    (void)us;
    if (!cs->is_subscribed) {
        /* Refused or unreachable before the acknowledgement: an HTTP error, not an empty stream. */
        if (!cs->end_rc) {
            cs->end_rc = rc != SG_OK ? rc : SG_ERR_PROTO;
            snprintf(cs->end_err, sizeof cs->end_err, "%s",
                     rc != SG_OK ? err : "the chat backend ended the subscription before acknowledging it");
        }
        if (cs->rq)
            request_wake(cs->rq);
        return;
    }
    if (rc == SG_OK || cs->is_ended)
        snprintf(why, sizeof why, "%s", "");
    else if (rc == SG_ERR_CLOSED)
        snprintf(why, sizeof why, "the chat service closed the subscription");
    else if (rc == SG_ERR_PROTO)
        snprintf(why, sizeof why, "the chat service broke the protocol");
    else /* the service cuts a subscriber that fell a whole history behind ("busy: too slow") */
        snprintf(why, sizeof why, "the chat service ended the subscription: %s: %.200s", sg_err_code(rc), err);
    if (rc != SG_OK && rc != SG_ERR_CLOSED)
        sg_warn("chat subscription: %s", err);
    end_stream(cs, why[0] ? why : NULL);
}

static void on_heartbeat(struct wk_timer *t)
{
    struct chat_stream *cs = (struct chat_stream *)((char *)t - offsetof(struct chat_stream, heartbeat));
    int64_t now = sg_now_ms(), due = cs->last_out_ms + CHAT_HEARTBEAT_MS;
    if (cs->is_ended || !cs->conn)
        return;
    if (now >= due && queued(cs) == 0) {
        /* Proxies drop a connection that stays silent, and a write is how a vanished client is found. */
        out_comment(cs, "keep-alive");
        cs_wake(cs);
        due = cs->last_out_ms + CHAT_HEARTBEAT_MS;
    } else if (due <= now) {
        due = now + CHAT_HEARTBEAT_MS; /* bytes are still queued: the client is not silent to us */
    }
    worker_timer_arm(cs->wk, &cs->heartbeat, due);
}

void chat_streams_close_here(void)
{
    is_closing_here = 1;
    for (struct chat_stream *cs = streams_of_thread; cs; cs = cs->next) {
        if (!cs->is_subscribed) {
            upcall_stream_close(cs->us);
            cs->us = NULL;
            if (!cs->end_rc) {
                cs->end_rc = SG_ERR_REFUSED;
                snprintf(cs->end_err, sizeof cs->end_err, "the gateway is shutting down");
            }
            if (cs->rq)
                request_wake(cs->rq);
            continue;
        }
        end_stream(cs, "the gateway is shutting down");
    }
}

/* libmicrohttpd wants more of the body: hand over what is queued, end, or park the connection. */
static ssize_t cs_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct chat_stream *cs = cls;
    size_t n;
    (void)pos;
    if (worker_is_stopping())
        end_stream(cs, "the gateway is shutting down"); /* one that began after its worker quiesced */
    n = queued(cs);
    if (n > 0) {
        if (n > max)
            n = max;
        memcpy(buf, cs->out + cs->out_off, n);
        cs->out_off += n;
        if (cs->out_off == cs->out_len)
            cs->out_off = cs->out_len = 0;
        if (cs->rq)
            cs->rq->bytes_out += n;
        if (cs->is_paused && has_room(cs) && cs->us) {
            cs->is_paused = 0;
            upcall_stream_resume(cs->us); /* from the loop's next round, never inside this callback */
        }
        return (ssize_t)n;
    }
    if (cs->is_ended)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (worker_client_gone(cs->conn))
        return MHD_CONTENT_READER_END_WITH_ERROR; /* nobody reads: end, and the subscription closes */
    /* Nothing to send: blocking would stall the worker, and returning 0 alone would spin. */
    cs->is_suspended = 1;
    worker_suspend(cs->conn);
    return 0;
}

/* libmicrohttpd is done with the response. */
static void cs_release(void *cls)
{
    struct chat_stream *cs = cls;
    cs->conn = NULL;
    cs->is_suspended = 0;
    upcall_stream_close(cs->us);
    cs->us = NULL;
    worker_timer_cancel(cs->wk, &cs->heartbeat);
    cs_drop(cs);
}

/* The request ended (answered, or the client left first). */
static void cs_state_free(struct request *rq, int is_complete)
{
    struct chat_stream *cs = rq->state;
    (void)is_complete;
    rq->state = NULL;
    cs->rq = NULL;
    if (!cs->conn) { /* no response holds it: nobody reads the subscription any more */
        upcall_stream_close(cs->us);
        cs->us = NULL;
    }
    cs_drop(cs);
}

/* Adds the headers an event stream needs: no caching, and no buffering by proxies that honour the hint. */
static void add_stream_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
}

/* Runs when the chat service acknowledged, or failed before it: the 200 with its event stream, or the error. */
static int cs_answer(struct request *rq)
{
    struct chat_stream *cs = rq->state;
    const union MHD_ConnectionInfo *info;
    unsigned user_timeout = CLIENT_USER_TIMEOUT_MS;
    struct MHD_Response *resp;
    if (!cs->is_subscribed)
        return request_fail(rq, cs->end_rc ? cs->end_rc : SG_ERR_INTERNAL, "%s", cs->end_err);
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK_SIZE, cs_read, cs, cs_release);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    cs->refs++;
    cs->conn = rq->conn;
    /* Best effort: without it a vanished client is noticed by TCP's own, much longer, retry limit. */
    info = MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info)
        setsockopt(info->connect_fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
    add_stream_headers(resp);
    worker_timer_arm(cs->wk, &cs->heartbeat, cs->last_out_ms + CHAT_HEARTBEAT_MS);
    return respond(rq, 200, resp);
}

int chat_stream_start(struct request *rq, uint64_t after)
{
    struct chat_stream *cs;
    char err[384] = "";
    int rc;

    if (is_closing_here)
        return request_fail(rq, SG_ERR_REFUSED, "the gateway is shutting down");
    if (atomic_fetch_add_explicit(&n_open, 1, memory_order_relaxed) >= CHAT_STREAMS_MAX) {
        atomic_fetch_sub_explicit(&n_open, 1, memory_order_relaxed);
        return request_fail(rq, SG_ERR_BUSY, "%d chat event streams are open already, the most this gateway serves",
                            CHAT_STREAMS_MAX);
    }
    cs = calloc(1, sizeof *cs);
    if (!cs) {
        atomic_fetch_sub_explicit(&n_open, 1, memory_order_relaxed);
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    cs->refs = 1;
    cs->next = streams_of_thread;
    if (cs->next)
        cs->next->prev = cs;
    streams_of_thread = cs;
    cs->rq = rq;
    cs->wk = worker_self();
    cs->heartbeat.fire = on_heartbeat;
    cs->last_out_ms = sg_now_ms();
    rq->state = cs;
    rq->state_free = cs_state_free;
    /* The acknowledgement is awaited before the 200, so a down or refusing chat service is an HTTP error. */
    rc = api_chat_subscribe(rq, after, on_frame, on_end, cs, &cs->us, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    request_defer(rq, cs_answer);
    return SG_OK;
}
