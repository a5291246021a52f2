/* api_uploads.c - tus 1.0 at /api/v1/uploads/: discovery (OPTIONS), HEAD, termination, and the headers' rules. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "api_call.h"
#include "errors.h"
#include "server.h"
#include "uploads.h"
#include "validate.h"
#ifdef SG_HAVE_FILE
#include "file/name.h"
#endif
#include "sockgate/error.h"
#include "sockgate/net.h"

/* A session id: 128 random bits in lower-case hex (backends/file/session.c). */
#define SESSION_ID_HEX 32

int uploads_check_version(struct request *rq)
{
    static const char *const headers[] = {"Tus-Version", "1.0.0", NULL};
    const char *v = request_header(rq, "Tus-Resumable");
    char msg[160];
    if (v && strcmp(v, "1.0.0") == 0)
        return SG_OK;
    snprintf(msg, sizeof msg, "%s%.40s%s; this server speaks tus 1.0.0 only (send Tus-Resumable: 1.0.0)",
             v ? "Tus-Resumable " : "no Tus-Resumable header", v ? v : "", v ? " is not supported" : "");
    respond_error_with(rq, SG_ERR_PRECONDITION, msg, headers);
    return SG_ERR_PRECONDITION;
}

int uploads_check_id(struct request *rq)
{
    if (strlen(rq->param) == SESSION_ID_HEX && strspn(rq->param, "0123456789abcdef") == SESSION_ID_HEX)
        return SG_OK;
    return request_fail(rq, SG_ERR_NOT_FOUND, "no upload %.80s here (upload ids are 32 hex digits)", rq->param);
}

int uploads_checksum(struct request *rq, json_t *hdr)
{
    const char *v = request_header(rq, "Upload-Checksum");
    char alg[8], hex[65], err[160];
    if (!v)
        return SG_OK;
    if (validate_tus_checksum(v, alg, hex, err, sizeof err) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID, "%s", err);
    return json_object_set_new(hdr, alg, json_string(hex)) == 0 ? SG_OK
                                                                 : request_fail(rq, SG_ERR_NOMEM, "out of memory");
}

int uploads_metadata(struct request *rq, const char *metadata, char *name, size_t namelen)
{
    char err[200];
    int rc = validate_tus_metadata(metadata, name, namelen, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
#ifdef SG_HAVE_FILE
    if (file_name_check(name, strlen(name), err, sizeof err) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID_NAME, "%s", err);
#endif
    return SG_OK;
}

int uploads_check_body(struct request *rq)
{
    const char *ctype = request_header(rq, "Content-Type");
    size_t n = ctype ? strcspn(ctype, "; \t") : 0;
    if (!ctype || n != strlen(UPLOADS_BODY_TYPE) || strncasecmp(ctype, UPLOADS_BODY_TYPE, n) != 0)
        return request_fail(rq, GW_ERR_MEDIA_TYPE, "send the bytes as Content-Type: " UPLOADS_BODY_TYPE);
    if (!request_header(rq, "Content-Length"))
        return request_fail(rq, GW_ERR_LENGTH_REQUIRED,
                            "a tus body needs a Content-Length (the file backend is told each append's size first)");
    return SG_OK;
}

void uploads_add_expires(struct MHD_Response *resp, const json_t *answer)
{
    const json_t *v = json_object_get(answer, "expires_ms");
    time_t t;
    struct tm tm;
    char date[64];
    if (!json_is_integer(v))
        return;
    t = (time_t)(json_integer_value(v) / 1000); /* HTTP dates have whole seconds */
    if (!gmtime_r(&t, &tm) || strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
        return;
    MHD_add_response_header(resp, "Upload-Expires", date);
}

void uploads_add_offset(struct MHD_Response *resp, const json_t *answer)
{
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, (int64_t)json_integer_value(json_object_get(answer, "offset")));
    MHD_add_response_header(resp, "Upload-Offset", num);
}

int api_uploads_options(struct request *rq)
{
    char max[32];
    struct MHD_Response *resp = options_response(rq);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    snprintf(max, sizeof max, "%" PRIu64, rq->gw->cfg.max_upload);
    MHD_add_response_header(resp, "Tus-Version", "1.0.0");
    MHD_add_response_header(resp, "Tus-Extension",
                            "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration");
    MHD_add_response_header(resp, "Tus-Max-Size", max);
    MHD_add_response_header(resp, "Tus-Checksum-Algorithm", "sha1,sha256,md5");
    return respond(rq, 204, resp);
}

/*
 * Starts one bodiless session op on rq->param on the loop and defers rq
 * until its answer: resume reads it with session_answer. Never replayed: a
 * session_abort may have happened before an old connection died, and a
 * stat is cheap to ask again. Errors are recorded in rq.
 */
static int session_call(struct request *rq, const char *op, int (*resume)(struct request *rq))
{
    json_t *hdr = json_pack("{s:s,s:s,s:s}", "op", op, "session", rq->param, "id", rq->id);
    int rc;
    if (!hdr)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    rc = api_call_frame(rq, &rq->gw->backends[BACKEND_FILE], hdr, 0, 0, resume);
    json_decref(hdr);
    return rc;
}

/* Returns the answer's header of rq's session op (borrowed), or NULL with the failure recorded in rq. */
static const json_t *session_answer(struct request *rq)
{
    const struct upcall_result *res = api_call_result(rq);
    if (res->rc != SG_OK) {
        request_fail(rq, res->rc, "%s", res->err);
        return NULL;
    }
    return res->header;
}

/* The backend answered session_stat: where the upload is. */
static int head_answer(struct request *rq)
{
    const json_t *answer = session_answer(rq);
    struct MHD_Response *resp;
    const char *metadata;
    char num[32];

    if (!answer)
        return rq->err;
    resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    uploads_add_offset(resp, answer);
    if (json_is_integer(json_object_get(answer, "length"))) {
        snprintf(num, sizeof num, "%" PRId64, (int64_t)json_integer_value(json_object_get(answer, "length")));
        MHD_add_response_header(resp, "Upload-Length", num);
    } else {
        MHD_add_response_header(resp, "Upload-Defer-Length", "1");
    }
    metadata = json_string_value(json_object_get(answer, "metadata"));
    if (metadata && *metadata)
        MHD_add_response_header(resp, "Upload-Metadata", metadata);
    uploads_add_expires(resp, answer);
    /* The offset changes with every PATCH: a cached one would make a client resume at the wrong byte. */
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return respond(rq, 200, resp);
}

int api_uploads_head(struct request *rq)
{
    int rc = uploads_check_version(rq);
    if (rc == SG_OK)
        rc = uploads_check_id(rq);
    return rc == SG_OK ? session_call(rq, "session_stat", head_answer) : rc;
}

/* The backend answered session_abort: the upload is gone. */
static int delete_answer(struct request *rq)
{
    return session_answer(rq) ? respond_empty(rq, 204) : rq->err;
}

int api_uploads_delete(struct request *rq)
{
    int rc = uploads_check_version(rq);
    if (rc == SG_OK)
        rc = uploads_check_id(rq);
    return rc == SG_OK ? session_call(rq, "session_abort", delete_answer) : rc;
}
