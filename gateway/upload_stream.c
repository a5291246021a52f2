/* upload_stream.c - a tus request body streamed to the file backend in blocks, as PUT with a Content-Length is. */
#include "upload_stream.h"

#include <string.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

/*
 * The body is gathered into blocks of this size before each write, for the
 * reason api_files_put.c gives (fewer syscalls and backend wake-ups per GiB).
 * It is also what a cut connection can lose at most: the bytes of a block
 * not yet sent are sent by upload_stream_abandon, so in practice nothing.
 */
#define STREAM_BLOCK (256u * 1024u)

/*
 * A PATCH this big is one piece of a big file sent in pieces (tus clients
 * send a few MiB each): its block gets 2 MiB pages as the whole file's PUT
 * would (sockgate/iobuf.h), or every PATCH pays the 4 KiB pages' copy cost.
 */
#define BULK_PATCH ((uint64_t)4 << 20)

/* How long upload_stream_abandon may spend handing the last gathered bytes over. */
#define ABANDON_MS 2000

/* Writes len bytes to the backend; on failure records the error and drops the connection. */
static int send_block(struct request *rq, struct upload_stream *s, const void *data, size_t len)
{
    char err[384] = "";
    int rc = upstream_write(s->c, data, len, request_deadline(rq));
    if (rc == SG_OK) {
        s->sent += len;
        return SG_OK;
    }
    rc = upstream_failed_send(s->c, rc, err, sizeof err);
    upstream_release(s->c, 0);
    s->c = NULL;
    return request_fail(rq, rc, "%s", err);
}

static void stream_free(struct upload_stream *s)
{
    upstream_release(s->c, 0);
    s->c = NULL;
    sg_iobuf_free(&s->block);
    s->have = 0;
}

int upload_stream_open(struct request *rq, struct upload_stream *s, json_t *hdr, uint64_t body_len)
{
    struct upstream *up = &rq->gw->backends[BACKEND_FILE];
    char err[384] = "";
    int rc;

    memset(s, 0, sizeof *s);
    s->expected = body_len;
    if (json_object_set_new(hdr, "total_size", json_integer((json_int_t)body_len)) != 0)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    if (body_len > 0 && sg_iobuf_alloc(&s->block, body_len < STREAM_BLOCK ? (size_t)body_len : STREAM_BLOCK,
                                       body_len >= BULK_PATCH ? SG_IOBUF_BULK_MIN : body_len) != SG_OK)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    rc = upstream_begin(up, hdr, &s->c, request_deadline(rq), err, sizeof err);
    if (rc != SG_OK) {
        stream_free(s);
        return request_fail(rq, rc, "%s", err);
    }
    return SG_OK;
}

int upload_stream_push(struct request *rq, struct upload_stream *s, const char *data, size_t len)
{
    int rc;
    /* Never a byte past what the frame announced: the backend would read it as its next request. */
    if (!s->c || len > s->expected - s->sent - s->have) {
        stream_free(s);
        return request_fail(rq, SG_ERR_INVALID, "the body is longer than its Content-Length of %llu bytes",
                            (unsigned long long)s->expected);
    }
    while (len > 0) {
        size_t n = s->block.size - s->have < len ? s->block.size - s->have : len;
        if (s->have == 0 && n == s->block.size) {
            rc = send_block(rq, s, data, n); /* a whole block in libmicrohttpd's buffer needs no copy */
        } else {
            memcpy(s->block.data + s->have, data, n);
            s->have += n;
            rc = SG_OK;
            if (s->have == s->block.size) {
                s->have = 0;
                rc = send_block(rq, s, s->block.data, s->block.size);
            }
        }
        if (rc != SG_OK) {
            stream_free(s);
            return rc;
        }
        data += n;
        len -= n;
    }
    return SG_OK;
}

int upload_stream_close(struct request *rq, struct upload_stream *s, json_t **resp)
{
    struct upstream *up = &rq->gw->backends[BACKEND_FILE];
    json_t *answer = NULL;
    char err[384] = "";
    uint64_t size = 0;
    int rc = SG_OK;

    *resp = NULL;
    if (!s->c) {
        rc = request_fail(rq, SG_ERR_INTERNAL, "the upload's backend connection is gone");
        goto out;
    }
    if (s->have > 0) {
        size_t have = s->have;
        s->have = 0;
        rc = send_block(rq, s, s->block.data, have);
        if (rc != SG_OK)
            goto out;
    }
    if (s->sent != s->expected) {
        rc = request_fail(rq, SG_ERR_INVALID, "the body is shorter than its Content-Length of %llu bytes",
                          (unsigned long long)s->expected);
        goto out;
    }
    rc = upstream_read_header(s->c, &answer, &size, request_deadline(rq), err, sizeof err);
    if (rc == SG_OK)
        rc = upstream_skip_body(s->c, size, request_deadline(rq));
    if (rc != SG_OK) {
        rc = request_fail(rq, upstream_failed(up, rc), "file backend at %s: %s", up->name,
                          err[0] ? err : sg_strerror(rc));
        goto out;
    }
    upstream_release(s->c, 1);
    s->c = NULL;
    rc = upstream_answer_error(up, answer, err, sizeof err);
    if (rc != SG_OK) {
        rc = request_fail(rq, rc, "%s", err);
        goto out;
    }
    *resp = answer;
    answer = NULL;
out:
    json_decref(answer);
    stream_free(s);
    return rc;
}

void upload_stream_abandon(struct request *rq, struct upload_stream *s)
{
    (void)rq;
    if (s->c && s->have > 0 && upstream_write(s->c, s->block.data, s->have, sg_now_ms() + ABANDON_MS) == SG_OK)
        s->sent += s->have;
    s->have = 0;
    stream_free(s);
}
