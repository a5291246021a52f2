/* chat_stream.c - chat subscriptions as Server-Sent Events: one pump thread, suspended connections, bounded buffers. */
#include "chat_stream.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "sockgate/wake.h"
#include "worker.h"

/*
 * A chat message header is at most about 6.3 KiB (1024 bytes of text, each
 * escaped as \u00XX, plus addresses); a longer one means a broken service.
 */
#define MAX_HEADER (16u * 1024u)
/* Subscription bytes not decoded yet; also holds what was read past the acknowledgement. */
#define IN_CAP (16u * 1024u)
/*
 * Bytes waiting for the client. A message is decoded only while the largest
 * event still fits, so this is the most a slow reader ever costs; past it
 * the subscription is not read, and the chat service cuts it as too slow.
 */
#define OUT_CAP (32u * 1024u)
#define EVENT_ROOM (MAX_HEADER + 64u)
/* Kept free for one comment (a heartbeat, why a stream ends) whatever the messages took. */
#define COMMENT_ROOM 256u
/* libmicrohttpd asks for at most this much per call. */
#define BLOCK_SIZE (16u * 1024u)
/* The pump wakes at least this often to send heartbeats. */
#define TICK_MS 1000
/* Unacknowledged data older than this drops a client that vanished without a FIN (heartbeats make data). */
#define CLIENT_USER_TIMEOUT_MS 45000u

enum watch_kind { WATCH_UPSTREAM, WATCH_CLIENT };

/* What an epoll event points at: one of the two sockets of a stream. */
struct watch {
    struct chat_stream *s;
    enum watch_kind kind;
};

/*
 * One event stream. Fields marked (lock) are shared between the pump and the
 * libmicrohttpd worker that owns conn and are guarded by the pump's mutex;
 * (pump) fields are the pump thread's alone. Only the pump frees a stream,
 * after libmicrohttpd released its response (is_released).
 */
struct chat_stream {
    struct chat_stream *prev, *next; /* (lock) the pump's list */
    struct MHD_Connection *conn;
    struct worker *wk;         /* the loop that owns conn: woken after a resume */
    struct watch up_watch, client_watch;
    int up_fd;                 /* (pump) the subscription; -1 once closed */
    int client_fd;             /* the HTTP client's socket, owned by libmicrohttpd */
    int is_client_watched;     /* (lock) client_fd is in the epoll set */
    int is_reading;            /* (pump) up_fd is armed for EPOLLIN */
    int is_suspended;          /* (lock) suspended by the callback and not resumed yet */
    int is_ended;              /* (lock) nothing more comes: the response ends once out is sent */
    int is_released;           /* (lock) libmicrohttpd is done with the response */
    int is_full;               /* (lock) the pump stopped decoding for want of room in out */
    int needs_service;         /* (lock) the callback made room: the pump decodes again */
    int64_t last_out_ms;       /* (lock) when bytes were last queued for the client */
    uint64_t *bytes_out;       /* the request's counter; touched by the worker only */
    struct sg_frame_decoder dec; /* (pump) */
    size_t in_off, in_len;       /* (pump) */
    size_t out_off, out_len;     /* (lock) */
    uint8_t in[IN_CAP];
    char out[OUT_CAP];
};

/* The one pump of the process. */
static struct {
    pthread_mutex_t lock;
    pthread_t thread;
    int has_thread;
    int ep;      /* the epoll set: every subscription, every watched client, wake_fd */
    int wake_fd; /* a wake-up descriptor (sockgate/wake.h): streams to service or to free, or stop */
    int is_closing, is_stopping;
    struct chat_stream *head;
    atomic_long n_open;
} P = {.lock = PTHREAD_MUTEX_INITIALIZER, .ep = -1, .wake_fd = -1};

long chat_streams_open(void)
{
    return atomic_load_explicit(&P.n_open, memory_order_relaxed);
}

int chat_streams_have_room(void)
{
    return chat_streams_open() < CHAT_STREAMS_MAX;
}

/* Wakes the pump. */
static void poke(void)
{
    if (P.wake_fd >= 0)
        sg_wake_signal(P.wake_fd);
}

/* (lock) Lets libmicrohttpd run the stream's connection again if it is parked. */
static void wake(struct chat_stream *s)
{
    if (!s->is_suspended)
        return;
    s->is_suspended = 0;
    MHD_resume_connection(s->conn);
    worker_kick(s->wk); /* libmicrohttpd's external mode wakes no loop by itself */
}

/* (lock) Removes the client socket from the epoll set, before libmicrohttpd may close and reuse it. */
static void unwatch_client(struct chat_stream *s)
{
    if (!s->is_client_watched)
        return;
    s->is_client_watched = 0;
    if (epoll_ctl(P.ep, EPOLL_CTL_DEL, s->client_fd, NULL) != 0)
        sg_warn("epoll_ctl(DEL) of an event stream's client: %s", strerror(errno));
}

/* (lock) Appends len bytes for the client when they fit below limit; returns 0 when they do not. */
static int out_append(struct chat_stream *s, const char *text, size_t len, size_t limit)
{
    if (s->out_off > 0) {
        memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
        s->out_len -= s->out_off;
        s->out_off = 0;
    }
    if (len > limit - s->out_len)
        return 0;
    memcpy(s->out + s->out_len, text, len);
    s->out_len += len;
    s->last_out_ms = sg_now_ms();
    return 1;
}

/* (lock) Appends an SSE comment line (best effort: dropped when even the reserve is used up). */
static void out_comment(struct chat_stream *s, const char *text)
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
    out_append(s, line, (size_t)n, OUT_CAP);
}

/* (lock) Ends the stream: what is queued is still sent, then the response ends. */
static void end_stream(struct chat_stream *s, const char *why)
{
    if (s->is_ended)
        return;
    if (why)
        out_comment(s, why);
    s->is_ended = 1;
    wake(s);
}

/* (lock) Turns one message frame header into "id: SEQ / event: message / data: JSON". */
static int append_message(struct chat_stream *s, const json_t *h)
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
    if (json_len == 0 || (s->out_len - s->out_off) + need > OUT_CAP - COMMENT_ROOM)
        return SG_ERR_TOO_LARGE;
    out_append(s, head, (size_t)n, OUT_CAP);
    /* Compact JSON escapes every control character, so the data is one line whatever the text holds. */
    json_dumpb(h, s->out + s->out_len, json_len, JSON_COMPACT);
    s->out_len += json_len;
    out_append(s, "\n\n", 2, OUT_CAP);
    return SG_OK;
}

/* (lock, pump) Decodes buffered subscription bytes into events while there is room for them. */
static void service(struct chat_stream *s)
{
    char msg[200];
    int has_new = 0;

    while (!s->is_ended && s->in_off < s->in_len) {
        const uint8_t *chunk;
        size_t used = 0, chunk_len = 0;
        enum sg_frame_event ev;
        if (s->out_len - s->out_off + EVENT_ROOM > OUT_CAP - COMMENT_ROOM) {
            s->is_full = 1; /* the client reads slower than messages come: wait for the callback */
            break;
        }
        ev = sg_frame_decode(&s->dec, s->in + s->in_off, s->in_len - s->in_off, &used, &chunk, &chunk_len);
        s->in_off += used;
        if (ev == SG_FRAME_ERROR) {
            sg_warn("chat subscription: %s", sg_frame_decoder_error(&s->dec));
            end_stream(s, "the chat service broke the protocol");
        } else if (ev == SG_FRAME_HEADER) {
            const json_t *h = sg_frame_decoder_header(&s->dec);
            int err = sg_frame_header_error(h, msg, sizeof msg);
            if (err != SG_OK) {
                /* The service cuts a subscriber that fell a whole history behind ("busy: too slow"). */
                char why[260];
                snprintf(why, sizeof why, "the chat service ended the subscription: %s: %s", sg_err_code(err), msg);
                end_stream(s, why);
            } else if (append_message(s, h) != SG_OK) {
                end_stream(s, "a chat message too large to forward");
            } else {
                has_new = 1;
            }
        }
        /* BODY pieces (no chat message has a body) and END need nothing. */
    }
    if (s->in_off == s->in_len)
        s->in_off = s->in_len = 0;
    if (has_new || s->is_ended)
        wake(s);
}

/*
 * (lock, pump) Arms or disarms reading the subscription: read only when
 * nothing undecoded is waiting. The socket is added and removed rather than
 * masked, because epoll reports a hang-up even with no events asked for, and
 * that would spin the pump while the stream waits for room.
 */
static void arm(struct chat_stream *s, int want)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->up_watch};
    if (s->up_fd < 0 || s->is_reading == want)
        return;
    if (epoll_ctl(P.ep, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, s->up_fd, &ev) == 0)
        s->is_reading = want;
    else if (want)
        end_stream(s, "the gateway cannot watch the chat subscription");
}

/* (pump) Closes the subscription, so the chat service forgets the subscriber at once. */
static void close_upstream(struct chat_stream *s)
{
    if (s->up_fd < 0)
        return;
    if (s->is_reading)
        epoll_ctl(P.ep, EPOLL_CTL_DEL, s->up_fd, NULL);
    close(s->up_fd);
    s->up_fd = -1;
    s->is_reading = 0;
}

/* (pump) Reads what the subscription has; the lock is taken only to hand it over. */
static void on_upstream(struct chat_stream *s)
{
    ssize_t n;
    if (s->in_len > 0)
        return; /* undecoded bytes wait for room; reading is disarmed at the next sweep */
    n = recv(s->up_fd, s->in, IN_CAP, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    pthread_mutex_lock(&P.lock);
    if (n > 0) {
        s->in_off = 0;
        s->in_len = (size_t)n;
        service(s);
    } else {
        end_stream(s, n == 0 ? "the chat service closed the subscription" : "the chat subscription broke");
    }
    pthread_mutex_unlock(&P.lock);
}

/* (pump) The client hung up while its connection was parked: end at once, nothing left to send. */
static void on_client_gone(struct chat_stream *s)
{
    pthread_mutex_lock(&P.lock);
    unwatch_client(s);
    s->out_off = s->out_len = 0;
    end_stream(s, NULL);
    pthread_mutex_unlock(&P.lock);
}

/* (pump) Frees the streams libmicrohttpd released; returns 1 when the pump should stop. */
static int reap(void)
{
    struct chat_stream *s, *next, *dead = NULL;
    int is_stopping;
    pthread_mutex_lock(&P.lock);
    for (s = P.head; s; s = next) {
        next = s->next;
        if (!s->is_released)
            continue;
        if (s->prev)
            s->prev->next = s->next;
        else
            P.head = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->next = dead;
        dead = s;
    }
    is_stopping = P.is_stopping;
    pthread_mutex_unlock(&P.lock);
    for (s = dead; s; s = next) {
        next = s->next;
        close_upstream(s);
        sg_frame_decoder_free(&s->dec);
        free(s);
    }
    return is_stopping;
}

/* (pump) After every wake-up: close ended subscriptions, decode where the client made room, send heartbeats. */
static void sweep(int64_t now, int is_tick)
{
    pthread_mutex_lock(&P.lock);
    for (struct chat_stream *s = P.head; s; s = s->next) {
        if (s->is_released)
            continue;
        if (s->is_ended) {
            close_upstream(s);
            continue;
        }
        if (s->needs_service) {
            s->needs_service = 0;
            service(s);
        }
        if (is_tick && s->out_len == s->out_off && now - s->last_out_ms >= CHAT_HEARTBEAT_MS) {
            out_comment(s, "keep-alive");
            wake(s);
        }
        arm(s, !s->is_ended && s->in_len == 0);
    }
    pthread_mutex_unlock(&P.lock);
}

static void *pump_main(void *arg)
{
    struct epoll_event evs[64];
    int64_t last_tick = sg_now_ms();
    (void)arg;
    while (!reap()) {
        int n = epoll_wait(P.ep, evs, 64, TICK_MS), is_tick;
        int64_t now;
        if (n < 0 && errno != EINTR) {
            sg_error("chat pump: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = evs[i].data.ptr;
            int is_released;
            if (!w) {
                sg_wake_drain(P.wake_fd);
                continue;
            }
            /* A released stream is still allocated (only reap() frees it), so looking is safe. */
            pthread_mutex_lock(&P.lock);
            is_released = w->s->is_released;
            pthread_mutex_unlock(&P.lock);
            if (is_released)
                continue;
            if (w->kind == WATCH_CLIENT)
                on_client_gone(w->s);
            else if (w->s->up_fd >= 0)
                on_upstream(w->s);
        }
        now = sg_now_ms();
        is_tick = now - last_tick >= TICK_MS;
        if (is_tick)
            last_tick = now;
        sweep(now, is_tick);
    }
    return NULL;
}

int chat_streams_start(char *err, size_t errlen)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (sg_wake_open(&P.wake_fd, err, errlen) != SG_OK)
        goto fail;
    P.ep = epoll_create1(EPOLL_CLOEXEC);
    if (P.ep < 0 || epoll_ctl(P.ep, EPOLL_CTL_ADD, P.wake_fd, &ev) != 0) {
        snprintf(err, errlen, "chat event streams: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&P.thread, NULL, pump_main, NULL) != 0) {
        snprintf(err, errlen, "chat event streams: cannot start the pump thread");
        goto fail;
    }
    P.has_thread = 1;
    return SG_OK;
fail:
    if (P.ep >= 0)
        close(P.ep);
    sg_wake_close(&P.wake_fd);
    P.ep = -1;
    return SG_ERR_SYS;
}

void chat_streams_close_all(void)
{
    pthread_mutex_lock(&P.lock);
    P.is_closing = 1;
    for (struct chat_stream *s = P.head; s; s = s->next)
        if (!s->is_released)
            end_stream(s, "the gateway is shutting down");
    pthread_mutex_unlock(&P.lock);
    poke();
}

void chat_streams_stop(void)
{
    struct chat_stream *s, *next;
    if (!P.has_thread)
        return;
    pthread_mutex_lock(&P.lock);
    P.is_closing = P.is_stopping = 1;
    pthread_mutex_unlock(&P.lock);
    poke();
    pthread_join(P.thread, NULL);
    P.has_thread = 0;
    /* libmicrohttpd has stopped, so every response is released; free whatever the pump had not reaped. */
    for (s = P.head; s; s = next) {
        next = s->next;
        close_upstream(s);
        sg_frame_decoder_free(&s->dec);
        free(s);
    }
    P.head = NULL;
    close(P.ep);
    sg_wake_close(&P.wake_fd);
    P.ep = -1;
}

/* libmicrohttpd wants more of the body: hand over what is queued, end, or park the connection. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct chat_stream *s = cls;
    ssize_t n;
    (void)pos;
    pthread_mutex_lock(&P.lock);
    if (s->out_len > s->out_off) {
        size_t avail = s->out_len - s->out_off;
        n = (ssize_t)(avail < max ? avail : max);
        memcpy(buf, s->out + s->out_off, (size_t)n);
        s->out_off += (size_t)n;
        *s->bytes_out += (uint64_t)n;
        if (s->is_full) {
            s->is_full = 0;
            s->needs_service = 1;
            poke();
        }
    } else if (s->is_ended) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /*
         * Nothing to send. Returning 0 alone would make libmicrohttpd call
         * again at once (a busy loop in its internal-thread modes), and
         * blocking here would stall every other connection of this worker:
         * the connection is parked until the pump has something for it.
         */
        s->is_suspended = 1;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    pthread_mutex_unlock(&P.lock);
    return n;
}

/* libmicrohttpd is done with the response (before it closes the client socket): hand the stream to the pump. */
static void stream_release(void *cls)
{
    struct chat_stream *s = cls;
    pthread_mutex_lock(&P.lock);
    unwatch_client(s);
    s->is_released = 1;
    s->is_suspended = 0;
    s->bytes_out = NULL;
    pthread_mutex_unlock(&P.lock);
    atomic_fetch_sub_explicit(&P.n_open, 1, memory_order_relaxed);
    poke();
}

/* Allocates a stream for fd with pending input and the first text already queued. */
static struct chat_stream *stream_new(struct MHD_Connection *conn, int fd, const void *pending, size_t pending_len,
                                      const char *first, uint64_t *bytes_out)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct chat_stream *s;
    size_t first_len = first ? strlen(first) : 0;
    if (!info || pending_len > IN_CAP || first_len > OUT_CAP - COMMENT_ROOM)
        return NULL;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->conn = conn;
    s->wk = worker_self(); /* created on the loop that owns conn */
    s->up_fd = fd;
    s->client_fd = info->connect_fd;
    s->up_watch = (struct watch){s, WATCH_UPSTREAM};
    s->client_watch = (struct watch){s, WATCH_CLIENT};
    s->bytes_out = bytes_out;
    s->last_out_ms = sg_now_ms();
    sg_frame_decoder_init(&s->dec, MAX_HEADER);
    if (pending_len > 0)
        memcpy(s->in, pending, pending_len);
    s->in_len = pending_len;
    s->needs_service = pending_len > 0;
    if (first_len > 0)
        out_append(s, first, first_len, OUT_CAP);
    return s;
}

int chat_stream_response(struct MHD_Connection *conn, int fd, const void *pending, size_t pending_len,
                         const char *first, uint64_t *bytes_out, struct MHD_Response **out, char *err,
                         size_t errlen)
{
    struct epoll_event client_ev = {.events = EPOLLRDHUP};
    struct chat_stream *s = NULL;
    unsigned user_timeout = CLIENT_USER_TIMEOUT_MS;
    int rc = SG_OK;

    *out = NULL;
    s = stream_new(conn, fd, pending, pending_len, first, bytes_out);
    if (!s) {
        snprintf(err, errlen, "cannot set up the event stream (out of memory)");
        close(fd);
        return SG_ERR_NOMEM;
    }
    /* Best effort: without it a vanished client is noticed by TCP's own, much longer, retry limit. */
    setsockopt(s->client_fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
    client_ev.data.ptr = &s->client_watch;
    pthread_mutex_lock(&P.lock);
    if (P.is_closing || P.ep < 0) {
        snprintf(err, errlen, "the gateway is shutting down");
        rc = SG_ERR_REFUSED;
    } else if (atomic_load_explicit(&P.n_open, memory_order_relaxed) >= CHAT_STREAMS_MAX) {
        snprintf(err, errlen, "%d chat event streams are open already, the most this gateway serves", CHAT_STREAMS_MAX);
        rc = SG_ERR_BUSY;
    } else {
        /* The pump arms reading at its next sweep (first decoding what was read past the acknowledgement). */
        if (epoll_ctl(P.ep, EPOLL_CTL_ADD, s->client_fd, &client_ev) == 0)
            s->is_client_watched = 1;
        s->next = P.head;
        if (P.head)
            P.head->prev = s;
        P.head = s;
        s->needs_service = 1;
        atomic_fetch_add_explicit(&P.n_open, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&P.lock);
    if (rc != SG_OK) {
        close(fd);
        sg_frame_decoder_free(&s->dec);
        free(s);
        return rc;
    }
    poke();
    /* From here the stream belongs to the pump; a failure below releases it like a finished response. */
    *out = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK_SIZE, stream_read, s, stream_release);
    if (!*out) {
        stream_release(s);
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}
