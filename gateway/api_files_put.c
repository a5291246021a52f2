/* api_files_put.c - PUT /api/v1/files/{name}: the body streamed to the file backend piece by piece. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "files.h"
#include "metrics.h"
#include "server.h"
#include "upcall.h"
#include "validate.h"
#include "sockgate/error.h"
#include "sockgate/iobuf.h"
#include "sockgate/frame.h"
#include "spool.h"

/*
 * libmicrohttpd hands the body over in pieces of its connection buffer (about
 * 17 KiB with a 32 KiB pool). Sent one by one, each is a syscall, a TCP
 * segment and a wake-up of the file backend; gathered here and sent in
 * blocks of this size, the gateway's and the backend's system time per GiB
 * fall by about a third (docs/internals/gateway.md, "Files").
 */
#define PUT_BLOCK (256u * 1024u)

/*
 * With a Content-Length the body is gathered in PUT_BLOCK blocks and each
 * full block is written to the backend on the loop (upcall_frame_feed):
 * memory stays at one block whatever the size, and while the backend does
 * not take a block the request is held (request_hold_body), so the client
 * slows down instead of the gateway buffering. The backend connection is
 * taken only once the first block is full (or the body, when smaller, is
 * whole): an upload that stalls after its head holds no connection of the
 * file service, whose --max-conns stalled clients would otherwise use up.
 * A chunked body has no size for the frame header, so it waits in a spool
 * file first.
 */
struct put_state {
    struct request *rq;
    struct upcall *call;     /* the exchange with the file backend, once the first block is full */
    json_t *hdr;             /* the upload frame's header, until the call starts */
    uint64_t expected;       /* Content-Length */
    uint64_t taken;          /* body bytes taken from the client */
    /*
     * Bytes gathered for the next write (streamed uploads): PUT_BLOCK, or the
     * whole body when smaller, so a small upload holds no big block; on 2 MiB
     * pages for a large upload (sockgate/iobuf.h).
     */
    struct sg_iobuf block;
    size_t have;             /* bytes in block */
    size_t sent;             /* of them, written to the backend */
    int is_finishing;        /* the whole body is in: the request waits for the answer */
    int is_done;             /* the exchange ended (put_done ran) */
    int is_spooled;
    struct spool sp;
    struct spool_send *ss;   /* a spooled body on its way to the backend */
    json_t *conditions;      /* If-None-Match / If-Match as frame fields (files_conditions), or NULL */
};

static void put_free(struct request *rq, int is_complete)
{
    struct put_state *st = rq->state;
    (void)is_complete;
    /* Still running: the body broke off. Closing makes the backend drop its partial file. */
    upcall_free(st->call);
    spool_send_free(st->ss);
    json_decref(st->hdr);
    spool_close(&st->sp);
    json_decref(st->conditions);
    metrics_uploads(-1);
    sg_iobuf_free(&st->block);
    free(st);
    rq->state = NULL;
}

/* The exchange ended: its failure is the request's; a request waiting for it goes on. */
static void put_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct put_state *st = arg;
    (void)c;
    st->is_done = 1;
    if (res->rc != SG_OK)
        request_fail(st->rq, res->rc, "%s", res->err);
    request_release_body(st->rq); /* a failed upload reads and drops the rest of the body */
    if (st->is_finishing)
        request_wake(st->rq);
}

static void put_writable(struct upcall *c, void *arg);

/* Writes what may go of the block now, taking the backend connection first; -1 when the upload failed (in rq). */
static int flush_block(struct put_state *st)
{
    struct upstream *up = &st->rq->gw->backends[BACKEND_FILE];
    char err[384] = "";
    if (!st->call) {
        int rc = upcall_frame_feed(up, st->hdr, st->expected, request_deadline(st->rq), put_writable, put_done, st,
                                   &st->call, err, sizeof err);
        json_decref(st->hdr);
        st->hdr = NULL;
        if (rc != SG_OK) {
            request_fail(st->rq, rc, "%s", err);
            return -1;
        }
    }
    while (st->sent < st->have) {
        ssize_t w = upcall_send(st->call, st->block.data + st->sent, st->have - st->sent);
        if (w < 0)
            return -1; /* put_done recorded why */
        if (w == 0)
            break;
        st->sent += (size_t)w;
    }
    if (st->sent == st->have)
        st->have = st->sent = 0;
    return 0;
}

/* The backend takes more: the block goes on, and a held body with it. */
static void put_writable(struct upcall *c, void *arg)
{
    struct put_state *st = arg;
    (void)c;
    if (flush_block(st) == 0 && st->have == 0)
        request_release_body(st->rq);
}

int api_files_put_begin(struct request *rq)
{
    const char *cl = request_header(rq, "Content-Length");
    struct put_state *st = calloc(1, sizeof *st);
    char err[384] = "";
    size_t block_size;
    json_t *hdr, *cond = NULL;
    int rc;

    if (!st)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    st->rq = rq;
    st->sp.fd = -1;
    rq->state = st;
    rq->state_free = put_free;
    metrics_uploads(1);
    rc = files_conditions(rq, &cond);
    if (rc != SG_OK)
        return rc;
    st->conditions = cond;
    if (!cl) {
        st->is_spooled = 1;
        rc = spool_open(&st->sp, rq->gw->cfg.spool_dir, rq->gw->cfg.max_upload, err, sizeof err);
        return rc == SG_OK ? SG_OK : request_fail(rq, rc, "%s", err);
    }
    st->expected = strtoull(cl, NULL, 10); /* the server checked it is a number */
    if (st->expected > rq->gw->cfg.max_upload)
        return request_fail(rq, SG_ERR_TOO_LARGE, "an upload may have at most %s (--max-upload); this one has %llu bytes",
                            rq->gw->cfg.max_upload_text, (unsigned long long)st->expected);
    hdr = json_pack("{s:s,s:s,s:I,s:s}", "op", "upload", "filename", rq->param, "total_size",
                    (json_int_t)st->expected, "id", rq->id);
    if (!hdr)
        return request_fail(rq, SG_ERR_INVALID_NAME, "%s", validate_name_not_utf8(rq->param));
    if (cond)
        json_object_update(hdr, cond);
    st->hdr = hdr;
    block_size = st->expected < PUT_BLOCK ? (size_t)st->expected : PUT_BLOCK;
    if (st->expected > 0 && sg_iobuf_alloc(&st->block, block_size, st->expected) != SG_OK)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    return SG_OK;
}

int api_files_put_body(struct request *rq, const char *data, size_t len)
{
    struct put_state *st = rq->state;
    char err[384] = "";
    int rc;

    if (st->is_spooled) {
        rc = spool_write(&st->sp, data, len, err, sizeof err);
        if (rc == SG_OK)
            return SG_OK;
        spool_close(&st->sp); /* give the disk space back now, not when the client is done sending */
        return request_fail(rq, rc, "%s", err);
    }
    /*
     * The frame header announced exactly st->expected bytes. libmicrohttpd
     * holds a Content-Length body to its length, but the backend must never
     * get a byte more than announced whatever the HTTP layer does: surplus
     * bytes would be read by the file service as its next request.
     */
    if (len > st->expected - st->taken)
        return request_fail(rq, SG_ERR_INVALID, "the body is longer than its Content-Length of %llu bytes",
                            (unsigned long long)st->expected);
    while (len > 0) {
        size_t n;
        if (st->have == st->block.size) {
            if (flush_block(st) < 0)
                return rq->err;
            if (st->have != 0) {
                request_hold_body(rq, len); /* the backend takes no more now: put_writable goes on */
                return SG_OK;
            }
        }
        n = st->block.size - st->have < len ? st->block.size - st->have : len;
        memcpy(st->block.data + st->have, data, n);
        st->have += n;
        st->taken += n;
        data += n;
        len -= n;
    }
    /* A full block goes out at once, while the next one comes in. */
    if (st->have == st->block.size && flush_block(st) < 0)
        return rq->err;
    return SG_OK;
}

/* The backend answered the upload: where the file is, or why not. */
static int put_answer(struct request *rq)
{
    struct put_state *st = rq->state;
    const struct upcall_result *res = upcall_result(st->call);
    json_t *result;
    if (rq->err != SG_OK)
        return rq->err;
    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    result = upload_result(res->header);
    return result ? files_respond_created(rq, result) : request_fail(rq, SG_ERR_NOMEM, "out of memory");
}

/* The spooled body's upload ended: where the file is, or why not. */
static int spooled_answer(struct request *rq)
{
    struct put_state *st = rq->state;
    json_t *result = NULL;
    int rc = spool_send_result(st->ss, &result);
    spool_send_free(st->ss);
    st->ss = NULL;
    spool_close(&st->sp);
    return rc == SG_OK ? files_respond_created(rq, result) : rc;
}

static void spooled_sent(void *arg)
{
    request_wake(arg);
}

int api_files_put_finish(struct request *rq)
{
    struct put_state *st = rq->state;
    int rc;

    if (st->is_spooled) {
        rc = spool_send_start(rq, &st->sp, 0, st->sp.size, rq->param, st->conditions, spooled_sent, rq, &st->ss);
        if (rc != SG_OK)
            return rc;
        if (spool_send_is_done(st->ss))
            return spooled_answer(rq);
        request_defer(rq, spooled_answer);
        return SG_OK;
    }
    if (st->taken != st->expected) {
        /* Fewer bytes than announced: the backend would take the next request's bytes for the rest. */
        return request_fail(rq, SG_ERR_INVALID, "the body is shorter than its Content-Length of %llu bytes",
                            (unsigned long long)st->expected);
    }
    if (flush_block(st) < 0)
        return rq->err;
    if (st->is_done || rq->err != SG_OK) /* answered already (or refused early) */
        return put_answer(rq);
    st->is_finishing = 1;
    request_defer(rq, put_answer);
    return SG_OK;
}
