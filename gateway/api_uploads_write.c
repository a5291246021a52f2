/* api_uploads_write.c - tus 1.0 POST (creation, with or without upload) and PATCH: session ops with a body. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "errors.h"
#include "files.h"
#include "metrics.h"
#include "server.h"
#include "spool.h"
#include "upload_stream.h"
#include "uploads.h"
#include "sockgate/error.h"
#include "sockgate/opts.h"

/* A POST or PATCH in flight: its session op's frame, whose body is the request's. */
struct write_state {
    struct upload_stream *stream; /* NULL until the op is known good */
    uint64_t body_len; /* Content-Length, 0 without a body */
};

static void write_free(struct request *rq, int is_complete)
{
    struct write_state *st = rq->state;
    (void)is_complete;
    /* Cut mid-body: what arrived goes on to the backend and stays in the session, after the request is gone. */
    upload_stream_abandon(st->stream);
    metrics_uploads(-1);
    free(st);
    rq->state = NULL;
}

/* Makes rq's state; SG_OK or a failure recorded. */
static int write_state_new(struct request *rq, struct write_state **out)
{
    struct write_state *st = calloc(1, sizeof *st);
    if (!st)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    rq->state = st;
    rq->state_free = write_free;
    metrics_uploads(1);
    *out = st;
    return SG_OK;
}

/* Reads a non-negative integer header into *v (at most max); SG_OK, or a 400/413 recorded. */
static int header_u64(struct request *rq, const char *name, uint64_t max, uint64_t *v)
{
    const char *text = request_header(rq, name);
    if (!text || sg_parse_u64(text, 0, UINT64_MAX, 0, v) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID, "%s must be a number of bytes, not '%.40s'", name, text ? text : "");
    if (*v > max)
        return request_fail(rq, SG_ERR_TOO_LARGE, "an upload may have at most %s (--max-upload); %s is %" PRIu64,
                            rq->gw->cfg.max_upload_text, name, *v);
    return SG_OK;
}

/* Reads Content-Length when the request has a body (and checks its type); 0 without one. */
static int body_length(struct request *rq, uint64_t *len)
{
    int rc;
    *len = 0;
    if (!request_header(rq, "Content-Length") && !request_header(rq, "Transfer-Encoding"))
        return SG_OK;
    if (request_header(rq, "Content-Length") && strcmp(request_header(rq, "Content-Length"), "0") == 0)
        return SG_OK;
    rc = uploads_check_body(rq);
    if (rc == SG_OK)
        rc = header_u64(rq, "Content-Length", rq->gw->cfg.max_upload, len);
    return rc;
}

int api_uploads_create_begin(struct request *rq)
{
    const char *metadata = request_header(rq, "Upload-Metadata");
    const char *defer = request_header(rq, "Upload-Defer-Length");
    struct write_state *st = NULL;
    char name[1024];
    uint64_t length = 0;
    json_t *hdr = NULL;
    int rc = uploads_check_version(rq);

    if (rc != SG_OK)
        return rc;
    if (defer && request_header(rq, "Upload-Length"))
        return request_fail(rq, SG_ERR_INVALID, "send Upload-Length or Upload-Defer-Length, not both");
    if (defer && strcmp(defer, "1") != 0)
        return request_fail(rq, SG_ERR_INVALID, "Upload-Defer-Length takes only 1");
    if (!defer) {
        if (!request_header(rq, "Upload-Length"))
            return request_fail(rq, SG_ERR_INVALID, "send Upload-Length (or Upload-Defer-Length: 1)");
        rc = header_u64(rq, "Upload-Length", rq->gw->cfg.max_upload, &length);
        if (rc != SG_OK)
            return rc;
    }
    /* Every check that can refuse comes before the session exists: a refused POST leaves nothing behind. */
    rc = uploads_metadata(rq, metadata ? metadata : "", name, sizeof name);
    if (rc == SG_OK)
        rc = write_state_new(rq, &st);
    if (rc == SG_OK)
        rc = body_length(rq, &st->body_len);
    if (rc != SG_OK)
        return rc;
    hdr = json_pack("{s:s,s:s,s:s}", "op", "session_create", "filename", name, "id", rq->id);
    if (!hdr)
        return request_fail(rq, SG_ERR_INVALID_NAME, "the file name is not UTF-8");
    if (defer)
        json_object_set_new(hdr, "defer_length", json_true());
    else
        json_object_set_new(hdr, "length", json_integer((json_int_t)length));
    if (metadata && *metadata)
        json_object_set_new(hdr, "metadata", json_string(metadata));
    rc = uploads_checksum(rq, hdr);
    if (rc == SG_OK)
        rc = upload_stream_open(rq, &st->stream, hdr, st->body_len);
    json_decref(hdr);
    return rc;
}

int api_uploads_write_body(struct request *rq, const char *data, size_t len)
{
    struct write_state *st = rq->state;
    if (!st || !st->stream) /* begin refused the request: the body is read and dropped */
        return rq->err;
    return upload_stream_push(st->stream, data, len);
}

/* The answer of a creation: 201, the upload's Location, its offset, and the stored file when it finished. */
static int respond_created(struct request *rq, json_t *answer)
{
    const char *session = json_string_value(json_object_get(answer, "session"));
    char location[64];
    char *text = NULL;
    struct MHD_Response *resp;

    if (!session || strlen(session) > 32)
        return request_fail(rq, SG_ERR_PROTO, "the file backend answered session_create without a session id");
    snprintf(location, sizeof location, "%s%s", UPLOADS_PREFIX, session);
    if (json_is_true(json_object_get(answer, "finished"))) {
        /* The last byte came with the POST: the body says what was stored, as a PUT's does. */
        json_t *result = upload_result(answer);
        text = result ? json_dumps(result, JSON_COMPACT) : NULL;
        json_decref(result);
        if (!text)
            return request_fail(rq, SG_ERR_NOMEM, "out of memory");
        resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (resp) {
            MHD_add_response_header(resp, "Content-Type", "application/json");
            rq->bytes_out += strlen(text);
        } else {
            free(text);
        }
    } else {
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    }
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    MHD_add_response_header(resp, "Location", location);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    uploads_add_offset(resp, answer);
    uploads_add_expires(resp, answer);
    return respond(rq, 201, resp);
}

/* The backend answered session_create. */
static int create_answer(struct request *rq)
{
    struct write_state *st = rq->state;
    json_t *answer = NULL;
    int rc = upload_stream_answer(st->stream, &answer);
    if (rc == SG_OK)
        rc = respond_created(rq, answer);
    json_decref(answer);
    return rc;
}

int api_uploads_create_finish(struct request *rq)
{
    struct write_state *st = rq->state;
    return upload_stream_close(st->stream, create_answer);
}

int api_uploads_patch_begin(struct request *rq)
{
    struct write_state *st = NULL;
    uint64_t offset = 0, length = 0;
    json_t *hdr = NULL;
    int rc = uploads_check_version(rq);

    if (rc != SG_OK)
        return rc;
    rc = uploads_check_id(rq);
    if (rc == SG_OK)
        rc = uploads_check_body(rq);
    if (rc == SG_OK && !request_header(rq, "Upload-Offset"))
        rc = request_fail(rq, SG_ERR_INVALID, "a PATCH needs Upload-Offset: where the client believes the upload is");
    if (rc == SG_OK)
        rc = header_u64(rq, "Upload-Offset", UINT64_MAX, &offset);
    if (rc == SG_OK && request_header(rq, "Upload-Length"))
        rc = header_u64(rq, "Upload-Length", rq->gw->cfg.max_upload, &length);
    if (rc == SG_OK)
        rc = write_state_new(rq, &st);
    if (rc == SG_OK)
        rc = header_u64(rq, "Content-Length", rq->gw->cfg.max_upload, &st->body_len);
    if (rc != SG_OK)
        return rc;
    hdr = json_pack("{s:s,s:s,s:I,s:s}", "op", "session_append", "session", rq->param, "offset", (json_int_t)offset,
                    "id", rq->id);
    if (!hdr)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    if (request_header(rq, "Upload-Length"))
        json_object_set_new(hdr, "length", json_integer((json_int_t)length));
    rc = uploads_checksum(rq, hdr);
    if (rc == SG_OK)
        rc = upload_stream_open(rq, &st->stream, hdr, st->body_len);
    json_decref(hdr);
    return rc;
}

/* The backend answered session_append: 204 with the new offset. */
static int patch_answer(struct request *rq)
{
    struct write_state *st = rq->state;
    struct MHD_Response *resp;
    json_t *answer = NULL;
    int rc = upload_stream_answer(st->stream, &answer);

    if (rc != SG_OK)
        goto out;
    resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    uploads_add_offset(resp, answer);
    /* A finished upload is a file now, with no session left to expire. */
    if (!json_is_true(json_object_get(answer, "finished")))
        uploads_add_expires(resp, answer);
    rc = respond(rq, 204, resp);
out:
    json_decref(answer);
    return rc;
}

int api_uploads_patch_finish(struct request *rq)
{
    struct write_state *st = rq->state;
    return upload_stream_close(st->stream, patch_answer);
}
