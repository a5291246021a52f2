/* upcall_stream.c - a framed request answered frame by frame on the worker's loop: bounded reads, pause and resume, deadline. */
#include "upcall_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reply_check.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "upcall.h"
#include "worker.h"

/* One read from the backend: the most that waits undecoded while the stream is paused. */
#define IN_CAP 16384u

enum state { ST_CONNECTING, ST_OPEN, ST_ENDED };

struct upcall_stream {
    struct upstream *up;
    struct worker *wk;
    struct wk_watch watch;  /* the connection, edge-triggered both ways */
    struct wk_timer deadline;
    struct wk_timer kick;   /* resume: decode again from the loop's next round */
    enum state state;
    int64_t deadline_ms;
    int is_paused;
    int in_callback;        /* on_frame runs: resume only marks, the running pump goes on */
    uint8_t *out;           /* the request: frame header and body */
    size_t out_len, out_off;
    uint8_t in[IN_CAP];     /* read, not decoded yet */
    size_t in_off, in_len;
    uint64_t got;
    struct sg_frame_decoder dec;
    json_t *header;         /* the frame being received */
    uint8_t *body;          /* its body, max_frame_body at most */
    size_t body_len, max_frame_body;
    char req_id[80];
    char first_op[16];      /* the op whose answer the first frame must be ("" : any) */
    int is_pushed;          /* after the first frame, frames are pushed and carry no request id */
    uint64_t n_headers;
    upcall_stream_frame_fn on_frame;
    upcall_stream_end_fn on_end;
    void *arg;
    struct bal_pick pick;   /* the address connected to, reported to the balancer once */
    int has_pick;
};

/* Tells the balancer once how the call on s's address went. */
static void report(struct upcall_stream *s, enum bal_outcome how)
{
    if (!s->has_pick)
        return;
    s->has_pick = 0;
    balancer_done(s->up->bal, &s->pick, how);
}

/* Stops every source of events of s; its socket stays open until close. */
static void detach(struct upcall_stream *s)
{
    worker_timer_cancel(s->wk, &s->deadline);
    worker_timer_cancel(s->wk, &s->kick);
}

/* Ends s once with rc (a failure of the backend is counted, why named after it). */
static void end(struct upcall_stream *s, int rc, const char *what)
{
    char err[384] = "";
    if (s->state == ST_ENDED)
        return;
    s->state = ST_ENDED;
    detach(s);
    if (rc != SG_OK && what)
        snprintf(err, sizeof err, "%s backend at %s: %s", backend_name(s->up->id), s->up->name, what);
    if (rc == SG_ERR_REFUSED || rc == SG_ERR_TIMEOUT || rc == SG_ERR_CLOSED || rc == SG_ERR_PROTO)
        upstream_failed(s->up, rc);
    /* A slow command is no fault of its address; a refused connect or a broken answer is. */
    report(s, rc == SG_OK || rc == SG_ERR_TIMEOUT ? BAL_NEUTRAL
              : rc == SG_ERR_REFUSED ? BAL_CONNECT_FAIL
              : rc == SG_ERR_PROTO ? BAL_PROTO
              : rc == SG_ERR_CLOSED ? BAL_BROKE : BAL_NEUTRAL);
    s->on_end(s, rc, err, s->arg);
}

/* Writes what may go of the request; returns 0, or -1 when s ended. */
static int pump_out(struct upcall_stream *s)
{
    int err = upcall_send_some(s->watch.fd, s->out, s->out_len, &s->out_off);
    if (err) {
        end(s, SG_ERR_CLOSED, strerror(err));
        return -1;
    }
    return 0;
}

/* A frame's header is in: believed only when it answers this request; an error frame ends the stream. */
static int take_header(struct upcall_stream *s)
{
    const json_t *h = sg_frame_decoder_header(&s->dec);
    uint64_t size = sg_frame_decoder_body_size(&s->dec);
    char why[384];
    int rc;
    int is_first = s->n_headers++ == 0;
    if (reply_check(backend_name(s->up->id), is_first && s->first_op[0] ? s->first_op : NULL,
                    is_first || !s->is_pushed ? s->req_id : NULL, h, size, why, sizeof why) != SG_OK) {
        end(s, SG_ERR_PROTO, why);
        return -1;
    }
    rc = upstream_answer_error(s->up, h, why, sizeof why);
    if (rc != SG_OK) {
        /* The backend's own refusal (not allowed, busy): its message as it is, not blamed on the transport. */
        s->state = ST_ENDED;
        detach(s);
        s->on_end(s, rc, why, s->arg);
        return -1;
    }
    if (size > s->max_frame_body) {
        snprintf(why, sizeof why, "sent a %llu-byte frame, over the gateway's limit of %zu bytes",
                 (unsigned long long)size, s->max_frame_body);
        end(s, SG_ERR_PROTO, why);
        return -1;
    }
    json_decref(s->header);
    s->header = json_incref((json_t *)h);
    s->body_len = 0;
    return 0;
}

/* Decodes what is buffered while not paused; returns 0, or -1 when s ended. */
static int decode(struct upcall_stream *s)
{
    /* Until the decoder needs more: an empty body's END comes after its HEADER with no byte between. */
    while (!s->is_paused) {
        size_t used = 0, chunk_len = 0;
        const uint8_t *chunk = NULL;
        enum sg_frame_event ev =
            sg_frame_decode(&s->dec, s->in + s->in_off, s->in_len - s->in_off, &used, &chunk, &chunk_len);
        s->in_off += used;
        switch (ev) {
        case SG_FRAME_NEED_MORE:
            s->in_off = s->in_len = 0; /* all taken: the decoder keeps a partial header itself */
            return 0;
        case SG_FRAME_ERROR:
            end(s, SG_ERR_PROTO, sg_frame_decoder_error(&s->dec));
            return -1;
        case SG_FRAME_HEADER:
            if (take_header(s) < 0)
                return -1;
            break;
        case SG_FRAME_BODY:
            memcpy(s->body + s->body_len, chunk, chunk_len); /* take_header checked the size */
            s->body_len += chunk_len;
            break;
        case SG_FRAME_END: {
            int is_last;
            s->in_callback = 1;
            is_last = s->on_frame(s, s->header, s->body, s->body_len, s->arg);
            s->in_callback = 0;
            json_decref(s->header);
            s->header = NULL;
            if (is_last) {
                end(s, SG_OK, NULL);
                return -1;
            }
            break;
        }
        }
    }
    if (s->in_off == s->in_len)
        s->in_off = s->in_len = 0;
    return 0;
}

/*
 * Reads and decodes until the socket has nothing more, the stream is paused,
 * or it ended. Never reads while undecoded bytes wait: that is what bounds a
 * paused stream to IN_CAP bytes here, and lets TCP push back on the backend.
 */
static void pump_in(struct upcall_stream *s)
{
    for (;;) {
        ssize_t n;
        if (decode(s) < 0 || s->is_paused)
            return;
        n = recv(s->watch.fd, s->in, IN_CAP, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            end(s, SG_ERR_CLOSED, strerror(errno));
            return;
        }
        if (n == 0) {
            end(s, SG_ERR_CLOSED, s->got == 0 ? "closed the connection without answering" : "closed the connection mid-answer");
            return;
        }
        s->got += (uint64_t)n;
        s->in_off = 0;
        s->in_len = (size_t)n;
    }
}

/* Arms the deadline of an open stream, or cancels it when it has none (a subscription once acknowledged). */
static void arm_deadline(struct upcall_stream *s)
{
    if (s->deadline_ms > 0)
        worker_timer_arm(s->wk, &s->deadline, s->deadline_ms);
    else
        worker_timer_cancel(s->wk, &s->deadline);
}

static void on_ready(struct wk_watch *w, uint32_t events)
{
    struct upcall_stream *s = (struct upcall_stream *)((char *)w - offsetof(struct upcall_stream, watch));
    if (s->state == ST_ENDED)
        return;
    if (s->state == ST_CONNECTING) {
        int soerr;
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        soerr = upcall_connect_error(w->fd);
        if (soerr) {
            char why[200];
            snprintf(why, sizeof why, "connect %s: %s", s->pick.text, strerror(soerr));
            end(s, SG_ERR_REFUSED, why);
            return;
        }
        s->state = ST_OPEN;
        arm_deadline(s);
    }
    if (pump_out(s) < 0)
        return;
    pump_in(s);
}

static void on_deadline(struct wk_timer *t)
{
    struct upcall_stream *s = (struct upcall_stream *)((char *)t - offsetof(struct upcall_stream, deadline));
    if (s->state == ST_CONNECTING)
        end(s, SG_ERR_TIMEOUT, "connect timed out");
    else
        end(s, SG_ERR_TIMEOUT, s->got == 0 ? "no answer before the deadline" : "still answering at the deadline");
}

static void on_kick(struct wk_timer *t)
{
    struct upcall_stream *s = (struct upcall_stream *)((char *)t - offsetof(struct upcall_stream, kick));
    if (s->state == ST_OPEN && !s->is_paused)
        pump_in(s); /* edge-triggered: bytes that came while paused raised no new edge */
}

void upcall_stream_pause(struct upcall_stream *s)
{
    s->is_paused = 1;
}

void upcall_stream_set_deadline(struct upcall_stream *s, int64_t deadline_ms)
{
    s->deadline_ms = deadline_ms;
    if (s->state == ST_OPEN)
        arm_deadline(s);
}

void upcall_stream_expect_pushed(struct upcall_stream *s, const char *first_op)
{
    snprintf(s->first_op, sizeof s->first_op, "%s", first_op);
    s->is_pushed = 1;
}

void upcall_stream_resume(struct upcall_stream *s)
{
    if (!s->is_paused)
        return;
    s->is_paused = 0;
    /* From a timer due now, so on_frame never runs inside the caller (often libmicrohttpd's content callback). */
    if (s->state == ST_OPEN && !s->in_callback)
        worker_timer_arm(s->wk, &s->kick, sg_now_ms());
}

void upcall_stream_close(struct upcall_stream *s)
{
    if (!s)
        return;
    detach(s);
    report(s, BAL_NEUTRAL); /* closed by its owner before it ended */
    sg_frame_decoder_free(&s->dec);
    json_decref(s->header);
    free(s->body);
    free(s->out);
    if (s->watch.fd >= 0) {
        worker_unwatch(s->wk, &s->watch);
        close(s->watch.fd);
        /* This round's batch may still hold an event of its watch: on_ready must find it ended, then it goes. */
        s->watch.fd = -1;
        s->state = ST_ENDED;
        s->header = NULL;
        s->body = NULL;
        s->out = NULL;
        worker_free_later(s->wk, s);
        return;
    }
    free(s);
}

int upcall_stream_open(struct upstream *up, const json_t *header, const void *body, size_t body_len,
                       size_t max_frame_body, int64_t deadline_ms, upcall_stream_frame_fn on_frame,
                       upcall_stream_end_fn on_end, void *arg, struct upcall_stream **out, char *err,
                       size_t errlen)
{
    struct upcall_stream *s = NULL;
    struct worker *wk = worker_self();
    uint8_t *hdr = NULL;
    size_t hdr_len = 0;
    const char *id = json_string_value(json_object_get(header, "id"));
    int rc, fd = -1, is_pending = 0;

    *out = NULL;
    if (!wk) {
        snprintf(err, errlen, "no event loop on this thread");
        return SG_ERR_SYS;
    }
    s = calloc(1, sizeof *s);
    if (s) {
        s->wk = wk;
        s->watch.fd = -1;
        sg_frame_decoder_init(&s->dec, 0);
    }
    rc = s ? sg_frame_encode_header(header, 0, &hdr, &hdr_len) : SG_ERR_NOMEM;
    if (rc == SG_OK && (!(s->out = malloc(hdr_len + body_len)) || !(s->body = malloc(max_frame_body ? max_frame_body : 1))))
        rc = SG_ERR_NOMEM;
    if (rc != SG_OK) {
        snprintf(err, errlen, "%s", sg_strerror(rc));
        goto out;
    }
    s->up = up;
    s->watch.ready = on_ready;
    s->deadline.fire = on_deadline;
    s->kick.fire = on_kick;
    s->deadline_ms = deadline_ms;
    s->max_frame_body = max_frame_body;
    s->on_frame = on_frame;
    s->on_end = on_end;
    s->arg = arg;
    snprintf(s->req_id, sizeof s->req_id, "%s", id ? id : "");
    memcpy(s->out, hdr, hdr_len);
    if (body_len)
        memcpy(s->out + hdr_len, body, body_len);
    s->out_len = hdr_len + body_len;

    rc = upcall_connect(up, &s->pick, &fd, &is_pending, err, errlen);
    if (rc != SG_OK)
        goto out;
    s->has_pick = 1;
    s->watch.fd = fd;
    if (worker_watch(wk, &s->watch, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) != 0) {
        snprintf(err, errlen, "cannot watch a backend connection: %s", strerror(errno));
        close(fd);
        s->watch.fd = -1;
        rc = SG_ERR_SYS;
        goto out;
    }
    s->state = is_pending ? ST_CONNECTING : ST_OPEN;
    {
        int64_t connect_by = sg_now_ms() + UPCALL_CONNECT_MAX_MS;
        worker_timer_arm(wk, &s->deadline, is_pending && connect_by < deadline_ms ? connect_by : deadline_ms);
    }
    /* The first EPOLLOUT edge (connected, or writable at once) sends the request. */
    *out = s;
    s = NULL;
out:
    free(hdr);
    upcall_stream_close(s);
    return rc;
}
