/* upload_stream.c - a tus request body streamed to the file backend in blocks on the worker loop, as PUT's is. */
#include "upload_stream.h"

#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "upcall.h"
#include "worker.h"
#include "sockgate/error.h"
#include "sockgate/iobuf.h"
#include "sockgate/net.h"

/*
 * The body is gathered into blocks of this size before each write, for the
 * reason api_files_put.c gives (fewer syscalls and backend wake-ups per GiB).
 */
#define STREAM_BLOCK (256u * 1024u)

/*
 * A PATCH this big is one piece of a big file sent in pieces (tus clients
 * send a few MiB each): its block gets 2 MiB pages as the whole file's PUT
 * would (sockgate/iobuf.h), or every PATCH pays the 4 KiB pages' copy cost.
 */
#define BULK_PATCH ((uint64_t)4 << 20)

struct upload_stream {
    struct request *rq;      /* NULL once abandoned: the stream then only finishes sending */
    struct upcall *call;     /* the exchange, started by upload_stream_open */
    json_t *hdr;             /* the frame's header, until the call starts */
    uint64_t expected;       /* the body bytes the frame header announces */
    uint64_t taken;          /* body bytes taken from the client */
    struct sg_iobuf block;   /* bytes gathered for the next write */
    size_t have;             /* bytes in block */
    size_t sent;             /* of them, written to the backend */
    int is_finishing;        /* the whole body is in: the request waits for the answer */
    int is_done;             /* the exchange ended (stream_done ran) */
    struct worker *wk;       /* the loop an abandoned stream ends on */
    struct wk_timer reap;    /* frees an abandoned stream outside the upcall's callbacks */
};

static void stream_free(struct upload_stream *s)
{
    upcall_free(s->call); /* mid-body: the cut keeps the bytes that reached the backend */
    json_decref(s->hdr);
    sg_iobuf_free(&s->block);
    free(s);
}

static void on_reap(struct wk_timer *t)
{
    stream_free((struct upload_stream *)((char *)t - offsetof(struct upload_stream, reap)));
}

/* An abandoned stream is done with: freed on the loop's next turn (never inside the upcall's own callback). */
static void reap_soon(struct upload_stream *s)
{
    worker_timer_arm(s->wk, &s->reap, sg_now_ms());
}

/* The exchange ended: its failure is the request's; a request waiting for it goes on. */
static void stream_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct upload_stream *s = arg;
    (void)c;
    s->is_done = 1;
    if (!s->rq) {
        reap_soon(s);
        return;
    }
    if (res->rc != SG_OK)
        request_fail(s->rq, res->rc, "%s", res->err);
    request_release_body(s->rq); /* a failed upload reads and drops the rest of the body */
    if (s->is_finishing)
        request_wake(s->rq);
}

static void stream_writable(struct upcall *c, void *arg);

/* Writes what may go of the block now, starting the exchange first; -1 when it failed (in rq). */
static int flush_block(struct upload_stream *s)
{
    struct upstream *up = &s->rq->gw->backends[BACKEND_FILE];
    char err[384] = "";
    if (!s->call) {
        int rc = upcall_frame_feed(up, s->hdr, s->expected, request_deadline(s->rq), stream_writable, stream_done, s,
                                   &s->call, err, sizeof err);
        json_decref(s->hdr);
        s->hdr = NULL;
        if (rc != SG_OK) {
            request_fail(s->rq, rc, "%s", err);
            return -1;
        }
    }
    while (s->sent < s->have) {
        ssize_t w = upcall_send(s->call, s->block.data + s->sent, s->have - s->sent);
        if (w < 0)
            return -1; /* stream_done recorded why */
        if (w == 0)
            break;
        s->sent += (size_t)w;
    }
    if (s->sent == s->have)
        s->have = s->sent = 0;
    return 0;
}

/* The backend takes more: the block goes on, and a held body with it (an abandoned stream ends once it is out). */
static void stream_writable(struct upcall *c, void *arg)
{
    struct upload_stream *s = arg;
    (void)c;
    if (!s->rq) {
        while (s->sent < s->have) {
            ssize_t w = upcall_send(s->call, s->block.data + s->sent, s->have - s->sent);
            if (w <= 0)
                break;
            s->sent += (size_t)w;
        }
        if (s->sent == s->have && !s->is_done)
            reap_soon(s);
        return;
    }
    if (flush_block(s) == 0 && s->have == 0)
        request_release_body(s->rq);
}

int upload_stream_open(struct request *rq, struct upload_stream **out, json_t *hdr, uint64_t body_len)
{
    struct upload_stream *s = calloc(1, sizeof *s);

    *out = s;
    if (!s)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    s->rq = rq;
    s->expected = body_len;
    s->wk = worker_self();
    s->reap.fire = on_reap;
    if (json_object_set_new(hdr, "total_size", json_integer((json_int_t)body_len)) != 0)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    s->hdr = json_incref(hdr);
    if (body_len > 0 && sg_iobuf_alloc(&s->block, body_len < STREAM_BLOCK ? (size_t)body_len : STREAM_BLOCK,
                                       body_len >= BULK_PATCH ? SG_IOBUF_BULK_MIN : body_len) != SG_OK)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    /*
     * Unlike PUT, the exchange starts now, not with the first full block:
     * the backend locks the session when it reads the op, so a second PATCH
     * on the same upload is 423 for as long as this body streams, and a
     * wrong offset is 409 before the client sends its body.
     */
    return flush_block(s) < 0 ? rq->err : SG_OK;
}

int upload_stream_push(struct upload_stream *s, const char *data, size_t len)
{
    struct request *rq = s->rq;
    /* Never a byte past what the frame announced: the backend would read it as its next request. */
    if (len > s->expected - s->taken)
        return request_fail(rq, SG_ERR_INVALID, "the body is longer than its Content-Length of %llu bytes",
                            (unsigned long long)s->expected);
    if (rq->err != SG_OK)
        return rq->err;
    while (len > 0) {
        size_t n;
        if (s->have == s->block.size) {
            if (flush_block(s) < 0)
                return rq->err;
            if (s->have != 0) {
                request_hold_body(rq, len); /* the backend takes no more now: stream_writable goes on */
                return SG_OK;
            }
        }
        n = s->block.size - s->have < len ? s->block.size - s->have : len;
        memcpy(s->block.data + s->have, data, n);
        s->have += n;
        s->taken += n;
        data += n;
        len -= n;
    }
    /* A full block goes out at once, while the next one comes in. */
    if (s->have == s->block.size && flush_block(s) < 0)
        return rq->err;
    return SG_OK;
}

int upload_stream_close(struct upload_stream *s, int (*answer)(struct request *rq))
{
    struct request *rq = s->rq;
    if (rq->err != SG_OK)
        return rq->err;
    if (s->taken != s->expected) /* the backend would take the next request's bytes for the rest */
        return request_fail(rq, SG_ERR_INVALID, "the body is shorter than its Content-Length of %llu bytes",
                            (unsigned long long)s->expected);
    if (flush_block(s) < 0)
        return rq->err;
    if (s->is_done)
        return answer(rq);
    s->is_finishing = 1;
    request_defer(rq, answer);
    return SG_OK;
}

int upload_stream_answer(struct upload_stream *s, json_t **resp)
{
    struct request *rq = s->rq;
    const struct upcall_result *res;

    *resp = NULL;
    if (rq->err != SG_OK)
        return rq->err;
    if (!s->call || !s->is_done)
        return request_fail(rq, SG_ERR_INTERNAL, "the upload's backend exchange has not ended");
    res = upcall_result(s->call); /* a backend's error answer is res->rc already (upcall.c) */
    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    *resp = json_incref(res->header);
    return SG_OK;
}

void upload_stream_abandon(struct upload_stream *s)
{
    if (!s)
        return;
    s->rq = NULL;
    /* Gathered bytes not yet sent go on first; a stream with none, or ended, or never started ends now. */
    if (!s->call || s->is_done || s->sent == s->have || !s->wk) {
        stream_free(s);
        return;
    }
    stream_writable(s->call, s);
}
