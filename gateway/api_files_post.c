/* api_files_post.c - POST /api/v1/files: multipart/form-data with one or more files (curl -F, a browser form). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#ifdef SG_HAVE_FILE
#include "file/name.h"
#endif
#include "errors.h"
#include "files.h"
#include "metrics.h"
#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "spool.h"
#include "upcall.h"

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
    struct spool_send *ss; /* the part on its way to the backend: parts[next - 1] */
    size_t next;           /* the next part to send */
    json_t *files;         /* the answers so far */
    size_t n_undo;         /* after a refusal: parts[0 .. n_undo - 1] are still to be removed */
    struct upcall *del;    /* the removal on its way */
    int is_deleted;        /* it ended */
};

static void post_free(struct request *rq, int is_complete)
{
    struct post_state *st = rq->state;
    (void)is_complete;
    if (st->pp)
        MHD_destroy_post_processor(st->pp);
    spool_send_free(st->ss);
    upcall_free(st->del);
    spool_close(&st->sp);
    json_decref(st->files);
    metrics_uploads(-1);
    free(st);
    rq->state = NULL;
}

/*
 * A part is stored under its filename as sent, by the rule PUT
 * /api/v1/files/{name} follows: a name holding '/' or '\\' is refused, never
 * cut down to its last segment ("../../etc/x" is not quietly stored as "x").
 * Browsers send the bare name of the chosen file.
 */
static int start_part(struct post_state *st, const char *key, const char *filename)
{
    struct request *rq = st->rq;
    struct part *p;
    const char *name = filename;
    if (st->n_parts == MAX_PARTS)
        return request_fail(rq, SG_ERR_TOO_LARGE, "a form may hold at most %d files", MAX_PARTS);
    if (strlen(name) >= sizeof p->name)
        return request_fail(rq, SG_ERR_INVALID_NAME, "file %zu of the form (\"%.40s...\") was refused: "
                            "the name is longer than %zu bytes", st->n_parts + 1, name, sizeof p->name - 1);
    /* The rule PUT's names pass (server.c check_file_name): one rule, said for the file it refuses. */
#ifdef SG_HAVE_FILE
    {
        char why[200];
        if (file_name_check(name, strlen(name), why, sizeof why) != SG_OK)
            return request_fail(rq, SG_ERR_INVALID_NAME, "file %zu of the form (\"%s\") was refused: %s",
                                st->n_parts + 1, name, why);
    }
#else
    if (strpbrk(name, "/\\"))
        return request_fail(rq, SG_ERR_INVALID_NAME, "file %zu of the form (\"%s\") was refused: "
                            "the name holds a '/' or '\\' (the namespace is flat)", st->n_parts + 1, name);
#endif
    /* Two parts with one name would store one file and report two: refused before anything is stored. */
    for (size_t i = 0; i < st->n_parts; i++)
        if (strcmp(st->parts[i].name, name) == 0)
            return request_fail(rq, SG_ERR_INVALID, "file %zu of the form was refused: the form holds two files "
                                "named \"%s\": each name may appear once", st->n_parts + 1, name);
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
    if (!filename || !*filename) {
        st->has_current = 0;
        return MHD_YES;
    }
    /* Offset 0 starts a part; the same name again at 0 with bytes already taken starts a new one too. */
    if (!cur || (off == 0 && (cur->size > 0 || strcmp(cur->name, filename) != 0 ||
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

static void deleted(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct request *rq = arg;
    struct post_state *st = rq->state;
    (void)c;
    (void)res;
    st->is_deleted = 1;
    request_wake(rq);
}

/*
 * Removes the files of this request already stored, one after the other on
 * the loop, so a failed request leaves none of them (best effort), then
 * answers with the failure recorded in rq.
 */
static int roll_back(struct request *rq)
{
    struct post_state *st = rq->state;
    for (;;) {
        json_t *hdr;
        char err[384] = "";
        if (st->del) {
            const struct upcall_result *res = upcall_result(st->del);
            if (!st->is_deleted) {
                request_defer(rq, roll_back);
                return SG_OK;
            }
            if (res->rc != SG_OK)
                sg_warn("request %s: could not remove %s after a failed upload: %s", rq->id,
                        st->parts[st->n_undo].name, res->err);
            upcall_free(st->del);
            st->del = NULL;
            st->is_deleted = 0;
        }
        if (st->n_undo == 0)
            return rq->err;
        st->n_undo--;
        hdr = json_pack("{s:s,s:s,s:s}", "op", "delete", "filename", st->parts[st->n_undo].name, "id", rq->id);
        if (!hdr || upcall_frame(&rq->gw->backends[BACKEND_FILE], hdr, NULL, 0, 0, 0, request_deadline(rq), deleted,
                                 rq, &st->del, err, sizeof err) != SG_OK)
            sg_warn("request %s: could not remove %s after a failed upload: %s", rq->id, st->parts[st->n_undo].name,
                    hdr ? err : "out of memory");
        json_decref(hdr);
    }
}

/* A part was refused: say which of the batch, and that none of the batch was kept. */
static int refused(struct request *rq, size_t i, int rc)
{
    struct post_state *st = rq->state;
    char why[200];
    snprintf(why, sizeof why, "%.199s", rq->errmsg);
    snprintf(rq->errmsg, sizeof rq->errmsg, "file %zu of %zu (\"%.200s\") was refused: %s; none was kept", i + 1,
             st->n_parts, st->parts[i].name, why);
    (void)rc;
    spool_close(&st->sp);
    st->n_undo = i;
    return roll_back(rq);
}

static void part_sent(void *arg)
{
    request_wake(arg);
}

/*
 * Sends the parts one after the other on the loop: each a spool_send, the
 * request deferred while one is on its way. Runs from the finish step and
 * again as the resume of each wait; answers 201 with every file once all are in.
 */
static int post_run(struct request *rq)
{
    struct post_state *st = rq->state;
    int rc;
    for (;;) {
        if (st->ss) {
            json_t *one = NULL;
            if (!spool_send_is_done(st->ss)) {
                request_defer(rq, post_run);
                return SG_OK;
            }
            rc = spool_send_result(st->ss, &one);
            spool_send_free(st->ss);
            st->ss = NULL;
            if (rc != SG_OK)
                return refused(rq, st->next - 1, rc);
            json_array_append_new(st->files, one);
        }
        if (st->next == st->n_parts)
            break;
        rc = spool_send_start(rq, &st->sp, st->parts[st->next].off, st->parts[st->next].size,
                              st->parts[st->next].name, NULL, part_sent, rq, &st->ss);
        st->next++;
        if (rc != SG_OK)
            return refused(rq, st->next - 1, rc);
    }
    spool_close(&st->sp);
    rc = respond_json(rq, 201, json_pack("{s:O}", "files", st->files));
    return rc;
}

int api_files_post_finish(struct request *rq)
{
    struct post_state *st = rq->state;
    int rc = SG_OK;

    /* Destroying the processor flushes the last part; it fails when the closing boundary never came. */
    if (MHD_destroy_post_processor(st->pp) != MHD_YES)
        rc = request_fail(rq, SG_ERR_INVALID, "the multipart/form-data body ends before its closing boundary");
    st->pp = NULL;
    if (rc == SG_OK && st->n_parts == 0)
        rc = request_fail(rq, SG_ERR_INVALID, "the form holds no file part (curl -F file=@path)");
    if (rc == SG_OK && !(st->files = json_array()))
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
    if (rc != SG_OK) {
        spool_close(&st->sp);
        return rc;
    }
    return post_run(rq);
}
