/* api_files_put.c - PUT /api/v1/files/{name}: the body streamed to the file backend piece by piece. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "files.h"
#include "metrics.h"
#include "server.h"
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
 * With a Content-Length the upload frame's header goes out before the first
 * body byte arrives and the body follows in PUT_BLOCK blocks: memory stays
 * at one block whatever the size. A chunked body has no size for the frame
 * header, so it waits in a spool file first.
 */
struct put_state {
    struct upstream_conn *c; /* the backend connection of a streamed upload */
    uint64_t expected;       /* Content-Length */
    /*
     * Bytes gathered for the next write (streamed uploads): PUT_BLOCK, or the
     * whole body when smaller, so a small upload holds no big block; on 2 MiB
     * pages for a large upload (sockgate/iobuf.h).
     */
    struct sg_iobuf block;
    size_t have;             /* bytes in block */
    int is_spooled;
    struct spool sp;
    json_t *conditions;      /* If-None-Match / If-Match as frame fields (files_conditions), or NULL */
};

static void put_free(struct request *rq, int is_complete)
{
    struct put_state *st = rq->state;
    (void)is_complete;
    /* Still held: the body broke off. Closing makes the backend drop its partial file. */
    upstream_release(st->c, 0);
    spool_close(&st->sp);
    json_decref(st->conditions);
    metrics_uploads(-1);
    sg_iobuf_free(&st->block);
    free(st);
    rq->state = NULL;
}

int api_files_put_begin(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_FILE];
    const char *cl = request_header(rq, "Content-Length");
    struct put_state *st = calloc(1, sizeof *st);
    char err[384] = "";
    size_t block_size;
    json_t *hdr, *cond = NULL;
    int rc;

    if (!st)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
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
        return request_fail(rq, SG_ERR_TOO_LARGE, "the upload of %llu bytes is over the limit of %llu bytes",
                            (unsigned long long)st->expected, (unsigned long long)rq->gw->cfg.max_upload);
    hdr = json_pack("{s:s,s:s,s:I,s:s}", "op", "upload", "filename", rq->param, "total_size",
                    (json_int_t)st->expected, "id", rq->id);
    if (!hdr)
        return request_fail(rq, SG_ERR_INVALID_NAME, "the file name is not valid UTF-8");
    if (cond)
        json_object_update(hdr, cond);
    block_size = st->expected < PUT_BLOCK ? (size_t)st->expected : PUT_BLOCK;
    if (st->expected > 0 && sg_iobuf_alloc(&st->block, block_size, st->expected) != SG_OK) {
        json_decref(hdr);
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    rc = upstream_begin(up, hdr, &st->c, request_deadline(rq), err, sizeof err);
    json_decref(hdr);
    return rc == SG_OK ? SG_OK : request_fail(rq, rc, "%s", err);
}

/* Writes len bytes of the body to the backend; on failure records the error in rq and drops the connection. */
static int send_body(struct request *rq, struct put_state *st, const void *data, size_t len)
{
    char err[384] = "";
    int rc = upstream_write(st->c, data, len, request_deadline(rq));
    if (rc == SG_OK)
        return SG_OK;
    rc = upstream_failed_send(st->c, rc, err, sizeof err);
    upstream_release(st->c, 0);
    st->c = NULL;
    return request_fail(rq, rc, "%s", err);
}

int api_files_put_body(struct request *rq, const char *data, size_t len)
{
    struct put_state *st = rq->state;
    char err[384] = "";
    int rc;

    /*
     * The frame header announced exactly st->expected bytes. libmicrohttpd
     * holds a Content-Length body to its length, but the backend must never
     * get a byte more than announced whatever the HTTP layer does: surplus
     * bytes would be read by the file service as its next request.
     */
    if (!st->is_spooled && (st->c == NULL || len > st->c->body_owed - st->have)) {
        upstream_release(st->c, 0);
        st->c = NULL;
        return request_fail(rq, SG_ERR_INVALID, "the body is longer than its Content-Length of %llu bytes",
                            (unsigned long long)st->expected);
    }
    if (st->is_spooled) {
        rc = spool_write(&st->sp, data, len, err, sizeof err);
        if (rc == SG_OK)
            return SG_OK;
        spool_close(&st->sp); /* give the disk space back now, not when the client is done sending */
        return request_fail(rq, rc, "%s", err);
    }
    while (len > 0) {
        size_t n = st->block.size - st->have < len ? st->block.size - st->have : len;
        if (st->have == 0 && n == st->block.size) {
            rc = send_body(rq, st, data, n); /* a whole block in libmicrohttpd's buffer needs no copy */
        } else {
            memcpy(st->block.data + st->have, data, n);
            st->have += n;
            rc = SG_OK;
            if (st->have == st->block.size) {
                st->have = 0;
                rc = send_body(rq, st, st->block.data, st->block.size);
            }
        }
        if (rc != SG_OK)
            return rc;
        data += n;
        len -= n;
    }
    return SG_OK;
}

int api_files_put_finish(struct request *rq)
{
    struct put_state *st = rq->state;
    struct upstream *up = &rq->gw->backends[BACKEND_FILE];
    json_t *resp = NULL, *result = NULL;
    char err[384] = "";
    uint64_t size = 0;
    int rc;

    if (st->is_spooled) {
        rc = spool_upload(rq, &st->sp, 0, st->sp.size, rq->param, st->conditions, &result);
        spool_close(&st->sp);
        if (rc != SG_OK)
            return rc;
        return files_respond_created(rq, result);
    }
    if (st->have > 0) {
        rc = send_body(rq, st, st->block.data, st->have);
        st->have = 0;
        if (rc != SG_OK)
            return rc;
    }
    if (st->c->body_owed != 0) {
        /* Fewer bytes than announced: the backend would take the next request's bytes for the rest. */
        upstream_release(st->c, 0);
        st->c = NULL;
        return request_fail(rq, SG_ERR_INVALID, "the body is shorter than its Content-Length of %llu bytes",
                            (unsigned long long)st->expected);
    }
    rc = upstream_read_header(st->c, &resp, &size, request_deadline(rq), err, sizeof err);
    if (rc == SG_OK)
        rc = upstream_skip_body(st->c, size, request_deadline(rq));
    if (rc != SG_OK) {
        json_decref(resp);
        return request_fail(rq, upstream_failed(up, rc), "file backend at %s: %s", up->name,
                            err[0] ? err : sg_strerror(rc));
    }
    upstream_release(st->c, 1);
    st->c = NULL;
    rc = upstream_answer_error(up, resp, err, sizeof err);
    if (rc == SG_OK)
        result = upload_result(resp);
    json_decref(resp);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    return files_respond_created(rq, result);
}
