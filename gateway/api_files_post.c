/* api_files_post.c - POST /api/v1/files: multipart/form-data with one or more files (curl -F, a browser form). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "errors.h"
#include "files.h"
#include "metrics.h"
#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "spool.h"

/* Files one request may carry. */
#define MAX_PARTS 64
/* libmicrohttpd's buffer for part headers and plain form fields. */
#define POST_BUFFER (64u * 1024u)

/*
 * A part's size is unknown until its boundary, and the upload frame's header
 * needs it first: every file part is appended to one nameless spool file and
 * remembered as (name, offset, size), then each is sent with sendfile once
 * the body is complete.
 */
struct part {
    char name[256];
    char field[64];
    uint64_t off, size;
};

struct post_state {
    struct request *rq;
    struct MHD_PostProcessor *pp;
    struct spool sp;
    struct part parts[MAX_PARTS];
    size_t n_parts;
    int has_current; /* parts[n_parts - 1] is still receiving bytes */
};

static void post_free(struct request *rq, int is_complete)
{
    struct post_state *st = rq->state;
    (void)is_complete;
    if (st->pp)
        MHD_destroy_post_processor(st->pp);
    spool_close(&st->sp);
    metrics_uploads(-1);
    free(st);
    rq->state = NULL;
}

/* Keeps the last path segment of a browser's file name ("C:\\x\\a.txt" and "dir/a.txt" both give "a.txt"). */
static const char *base_name(const char *filename)
{
    const char *slash = strrchr(filename, '/'), *back = strrchr(filename, '\\');
    if (back && (!slash || back > slash))
        slash = back;
    return slash ? slash + 1 : filename;
}

static int start_part(struct post_state *st, const char *key, const char *filename)
{
    struct request *rq = st->rq;
    struct part *p;
    const char *name = base_name(filename);
    if (st->n_parts == MAX_PARTS)
        return request_fail(rq, SG_ERR_TOO_LARGE, "at most %d files per request", MAX_PARTS);
    if (strlen(name) >= sizeof p->name)
        return request_fail(rq, SG_ERR_INVALID_NAME, "a file name may have at most %zu bytes", sizeof p->name - 1);
    /* Two parts with one name would store one file and report two: refused before anything is stored. */
    for (size_t i = 0; i < st->n_parts; i++)
        if (strcmp(st->parts[i].name, name) == 0)
            return request_fail(rq, SG_ERR_INVALID, "the form holds two files named \"%s\": each name may appear once",
                                name);
    p = &st->parts[st->n_parts++];
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->field, sizeof p->field, "%s", key ? key : "");
    p->off = st->sp.size;
    p->size = 0;
    st->has_current = 1;
    return SG_OK;
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                               const char *content_type, const char *transfer_encoding, const char *data,
                               uint64_t off, size_t size)
{
    struct post_state *st = cls;
    struct part *cur = st->has_current ? &st->parts[st->n_parts - 1] : NULL;
    char err[256];
    int rc;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    /* Plain fields and the empty file input of a form sent with nothing chosen carry no file. */
    if (!filename || !*base_name(filename)) {
        st->has_current = 0;
        return MHD_YES;
    }
    /* Offset 0 starts a part; the same name again at 0 with bytes already taken starts a new one too. */
    if (!cur || (off == 0 && (cur->size > 0 || strcmp(cur->name, base_name(filename)) != 0 ||
                              strcmp(cur->field, key ? key : "") != 0))) {
        if (start_part(st, key, filename) != SG_OK)
            return MHD_NO;
        cur = &st->parts[st->n_parts - 1];
    }
    if (size == 0)
        return MHD_YES;
    rc = spool_write(&st->sp, data, size, err, sizeof err);
    if (rc != SG_OK) {
        request_fail(st->rq, rc, "%s", err);
        return MHD_NO;
    }
    cur->size += size;
    return MHD_YES;
}

int api_files_post_begin(struct request *rq)
{
    const char *ctype = request_header(rq, "Content-Type");
    struct post_state *st;
    char err[256];
    int rc;

    if (!ctype || strncasecmp(ctype, "multipart/form-data", 19) != 0)
        return request_fail(rq, GW_ERR_MEDIA_TYPE,
                            "send files as multipart/form-data (curl -F file=@path), or PUT one file's bytes to "
                            "/api/v1/files/{name}");
    st = calloc(1, sizeof *st);
    if (!st)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    st->rq = rq;
    st->sp.fd = -1;
    rq->state = st;
    rq->state_free = post_free;
    metrics_uploads(1);
    rc = spool_open(&st->sp, rq->gw->cfg.spool_dir, rq->gw->cfg.max_upload, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    st->pp = MHD_create_post_processor(rq->conn, POST_BUFFER, on_part, st);
    if (!st->pp)
        return request_fail(rq, SG_ERR_INVALID, "the multipart/form-data body has no usable boundary");
    return SG_OK;
}

int api_files_post_body(struct request *rq, const char *data, size_t len)
{
    struct post_state *st = rq->state;
    if (MHD_post_process(st->pp, data, len) != MHD_YES) {
        spool_close(&st->sp); /* give the disk space back at once */
        return request_fail(rq, SG_ERR_INVALID, "the multipart/form-data body is malformed");
    }
    return SG_OK;
}

/* Removes the files of this request already stored, so a failed request leaves none of them (best effort). */
static void roll_back(struct request *rq, size_t n_stored)
{
    for (size_t i = 0; i < n_stored; i++) {
        struct post_state *st = rq->state;
        json_t *hdr = json_pack("{s:s,s:s,s:s}", "op", "delete", "filename", st->parts[i].name, "id", rq->id);
        json_t *resp = NULL;
        char err[256];
        if (hdr && upstream_call(&rq->gw->backends[BACKEND_FILE], hdr, NULL, 0, &resp, NULL, NULL, 0,
                                 request_deadline(rq), err, sizeof err) != SG_OK)
            sg_warn("request %s: could not remove %s after a failed upload: %s", rq->id, st->parts[i].name, err);
        json_decref(hdr);
        json_decref(resp);
    }
}

int api_files_post_finish(struct request *rq)
{
    struct post_state *st = rq->state;
    json_t *files = json_array();
    int rc = SG_OK;

    /* Destroying the processor flushes the last part; it fails when the closing boundary never came. */
    if (MHD_destroy_post_processor(st->pp) != MHD_YES)
        rc = request_fail(rq, SG_ERR_INVALID, "the multipart/form-data body ends before its closing boundary");
    st->pp = NULL;
    if (rc == SG_OK && st->n_parts == 0)
        rc = request_fail(rq, SG_ERR_INVALID, "the form holds no file part (curl -F file=@path)");
    if (!files && rc == SG_OK)
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == SG_OK && i < st->n_parts; i++) {
        json_t *one = NULL;
        rc = spool_upload(rq, &st->sp, st->parts[i].off, st->parts[i].size, st->parts[i].name, NULL, &one);
        if (rc != SG_OK) {
            roll_back(rq, i);
            break;
        }
        json_array_append_new(files, one);
    }
    spool_close(&st->sp);
    if (rc != SG_OK) {
        json_decref(files);
        return rc;
    }
    return respond_json(rq, 201, json_pack("{s:o}", "files", files));
}
