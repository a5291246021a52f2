/* api_files.c - list, stat (HEAD), download (GET with Range and ETag) and delete through the file backend. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include "api.h"
#include "api_call.h"
#include "errors.h"
#include "files.h"
#include "server.h"
#include "upcall.h"
#include "validate.h"
#include "worker.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"

/* The file list travels as a JSON array in a frame body; past this it is refused rather than held. */
#define LIST_MAX_BODY (64u << 20)
/*
 * libmicrohttpd's buffer for a download (allocated per response): the
 * backend is read straight into it and it is sent from there. At 1 MiB a
 * 1 GiB GET costs the gateway about a fifth less system time than at 256 KiB
 * (fewer poll, read and send rounds; docs/internals/gateway.md, "Files").
 */
#define DOWNLOAD_BLOCK (1024u * 1024u)
#define DOWNLOAD_MIN_BLOCK 4096u

/* The response buffer for a body of size bytes: libmicrohttpd allocates it whole, so a small file gets its own size. */
static size_t download_block(uint64_t size)
{
    if (size >= DOWNLOAD_BLOCK)
        return DOWNLOAD_BLOCK;
    return size < DOWNLOAD_MIN_BLOCK ? DOWNLOAD_MIN_BLOCK : (size_t)size;
}

/* What the gateway needs of a stored file for its headers. */
struct file_meta {
    uint64_t size;
    int64_t mtime;
    char sha256[72];
};

/*
 * A download in progress, read by libmicrohttpd's content callback straight
 * from the backend socket: the call (its connection), the body bytes that
 * came with the answer's header, how much of the body is still to come, and
 * whether the connection waits (suspended) for the backend.
 */
struct get_state {
    struct request *rq;
    struct upcall *call;
    size_t pre_off;      /* next unserved byte of the call's res->body */
    uint64_t left;       /* body bytes not yet handed to libmicrohttpd */
    int is_partial;
    uint64_t off, len;   /* the range asked for, when is_partial */
    int is_waiting;      /* suspended until the backend socket is readable */
    int is_stalled;      /* the backend sent nothing for the call's timeout */
    int64_t stall_ms;    /* how long the backend may stay silent mid-body */
    struct wk_timer stall;
};

void files_url_encode(const char *name, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && o + 4 <= outlen; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
            *p == '_' || *p == '.' || *p == '~') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

int files_respond_created(struct request *rq, json_t *result)
{
    char location[64 + 3 * sizeof rq->param], enc[3 * sizeof rq->param];
    const char *name = json_string_value(json_object_get(result, "name"));
    int is_created = !json_is_false(json_object_get(result, "created"));
    char *text;
    struct MHD_Response *resp;

    files_url_encode(name ? name : rq->param, enc, sizeof enc);
    snprintf(location, sizeof location, "/api/v1/files/%s", enc);
    text = result ? json_dumps(result, JSON_COMPACT) : NULL;
    json_decref(result);
    if (!text)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "Location", location);
    rq->bytes_out += strlen(text);
    return respond(rq, is_created ? 201 : 200, resp);
}

/* Returns the sha256 of a strong ETag of ours ("\"<64 hex>\"", surrounding blanks allowed) in hex, else 0. */
static int etag_sha256(const char *tag, char hex[65])
{
    size_t n;
    while (*tag == ' ' || *tag == '\t')
        tag++;
    n = strlen(tag);
    while (n > 0 && (tag[n - 1] == ' ' || tag[n - 1] == '\t'))
        n--;
    if (n != 66 || tag[0] != '"' || tag[65] != '"' || strspn(tag + 1, "0123456789abcdef") < 64)
        return 0;
    memcpy(hex, tag + 1, 64);
    hex[64] = '\0';
    return 1;
}

int files_conditions(struct request *rq, json_t **out)
{
    const char *inm = request_header(rq, "If-None-Match"), *im = request_header(rq, "If-Match");
    char hex[65];
    *out = NULL;
    if (!inm && !im)
        return SG_OK;
    if (inm && im)
        return request_fail(rq, SG_ERR_INVALID, "If-None-Match and If-Match together can never both hold");
    if (inm) {
        if (strcmp(inm, "*") != 0)
            return request_fail(rq, SG_ERR_INVALID, "on a write, If-None-Match takes only * (create only)");
        *out = json_pack("{s:s}", "if_none_match", "*");
    } else if (strcmp(im, "*") == 0) {
        *out = json_pack("{s:s}", "if_match", "*");
    } else if (etag_sha256(im, hex)) {
        *out = json_pack("{s:s}", "if_match", hex);
    } else {
        /* Our ETags are strong sha256 tags: anything else names no version this gateway ever gave out. */
        return request_fail(rq, SG_ERR_PRECONDITION, "If-Match %.80s names no version of %s (ETags are \"sha256\")",
                            im, rq->param);
    }
    return *out ? SG_OK : request_fail(rq, SG_ERR_NOMEM, "out of memory");
}

/*
 * Starts one small operation on rq->param on the loop and defers rq until
 * its answer: resume reads it with file_op_answer. Errors are recorded in rq.
 */
static int file_op(struct request *rq, const char *op, size_t max, int (*resume)(struct request *rq))
{
    struct upstream *up = &rq->gw->backends[BACKEND_FILE];
    json_t *hdr = json_pack("{s:s,s:s,s:s}", "op", op, "filename", rq->param, "id", rq->id);
    int rc, is_delete = strcmp(op, "delete") == 0;
    if (!hdr)
        return request_fail(rq, SG_ERR_INVALID_NAME, "%s", validate_name_not_utf8(rq->param));
    if (strcmp(op, "list") == 0)
        json_object_del(hdr, "filename");
    if (is_delete) {
        json_t *cond = NULL;
        rc = files_conditions(rq, &cond);
        if (rc != SG_OK) {
            json_decref(hdr);
            return rc;
        }
        if (cond)
            json_object_update(hdr, cond);
        json_decref(cond);
    }
    /* Only reads are sent again on a fresh connection: a delete may have happened before the old one died. */
    rc = api_call_frame(rq, up, hdr, max, !is_delete, resume);
    json_decref(hdr);
    return rc;
}

/* Returns the answer of rq's file_op (borrowed), or NULL with the failure recorded in rq. */
static const struct upcall_result *file_op_answer(struct request *rq)
{
    const struct upcall_result *res = api_call_result(rq);
    if (res->rc != SG_OK) {
        request_fail(rq, res->rc, "%s", res->err);
        return NULL;
    }
    return res;
}

static int meta_from(struct request *rq, const json_t *h, struct file_meta *m)
{
    int64_t size = 0, mtime_ms = 0;
    const char *sha = sg_header_str(h, "sha256");
    if (sg_header_int(h, "size", 0, INT64_MAX, &size) != SG_OK || !sha || strlen(sha) >= sizeof m->sha256)
        return request_fail(rq, SG_ERR_PROTO, "the file backend's answer lacks size or sha256");
    if (sg_header_int(h, "mtime_ms", 0, INT64_MAX, &mtime_ms) != SG_OK)
        mtime_ms = 0;
    m->size = (uint64_t)size;
    m->mtime = mtime_ms / 1000; /* HTTP dates have whole seconds */
    snprintf(m->sha256, sizeof m->sha256, "%s", sha);
    return SG_OK;
}

/* Adds the headers every answer about a file carries. */
static void add_file_headers(struct MHD_Response *resp, const char *name, const struct file_meta *m)
{
    char etag[80], date[64], disp[1200], ascii[256], enc[768];
    struct tm tm;
    time_t t = (time_t)m->mtime;
    size_t i;

    snprintf(etag, sizeof etag, "\"%s\"", m->sha256);
    MHD_add_response_header(resp, "ETag", etag);
    if (m->mtime > 0 && gmtime_r(&t, &tm)) {
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        MHD_add_response_header(resp, "Last-Modified", date);
    }
    /* filename= for old clients (plain ASCII, no quotes), filename*= for the exact UTF-8 name. */
    for (i = 0; name[i] && i + 1 < sizeof ascii; i++)
        ascii[i] = ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e || name[i] == '"' ||
                    name[i] == '\\')
                       ? '_'
                       : name[i];
    ascii[i] = '\0';
    files_url_encode(name, enc, sizeof enc);
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"; filename*=UTF-8''%s", ascii, enc);
    MHD_add_response_header(resp, "Content-Disposition", disp);
    MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
}

/* Reads an unsigned decimal at *p (advancing it); 0 when there are no digits or it overflows. */
static int read_u64(const char **p, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *out = v;
    return 1;
}

/*
 * Parses one "bytes=A-B", "bytes=A-" or "bytes=-N" range against size.
 * Returns 1 with *off and *len, -1 when it cannot be satisfied, 0 to ignore it
 * (malformed, or several ranges: answered with the whole file, as RFC 9110 allows).
 */
static int parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    uint64_t a = 0, b = 0;
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;
    h += 6;
    if (*h == '-') {
        h++;
        if (!read_u64(&h, &b) || *h)
            return 0;
        if (b == 0 || size == 0)
            return -1;
        *len = b < size ? b : size;
        *off = size - *len;
        return 1;
    }
    if (!read_u64(&h, &a) || *h++ != '-')
        return 0;
    if (*h == '\0')
        b = UINT64_MAX;
    else if (!read_u64(&h, &b) || *h || b < a)
        return 0;
    if (a >= size)
        return -1;
    if (b >= size)
        b = size - 1;
    *off = a;
    *len = b - a + 1;
    return 1;
}

/* The body went wrong after the status line: all that is left is to cut the response short. */
static ssize_t download_broke(struct get_state *st, int rc, const char *why)
{
    sg_warn("request %s: the file backend broke off the download with %llu bytes to go: %s", st->rq->id,
            (unsigned long long)st->left, why);
    upstream_failed(&st->rq->gw->backends[BACKEND_FILE], rc);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

/*
 * libmicrohttpd wants more of the body (its buffer is sent). Reads the
 * backend socket without waiting: what is there goes straight into buf; with
 * nothing there the connection is suspended until the socket's next edge, so
 * a slow client leaves the bytes in the kernel and the backend slows down.
 */
static ssize_t read_download(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct get_state *st = cls;
    const struct upcall_result *res = upcall_result(st->call);
    size_t want = st->left < max ? (size_t)st->left : max;
    ssize_t n;
    (void)pos;
    if (st->left == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (worker_client_gone(st->rq->conn))
        return MHD_CONTENT_READER_END_WITH_ERROR; /* cut (a hang-up, or the stop after the grace period) */
    if (st->is_stalled)
        return download_broke(st, SG_ERR_TIMEOUT, "it sent nothing before the deadline");
    if (st->pre_off < res->body_len) { /* what came with the header goes first */
        size_t k = res->body_len - st->pre_off;
        if (k > want)
            k = want;
        memcpy(buf, res->body + st->pre_off, k);
        st->pre_off += k;
        n = (ssize_t)k;
    } else {
        do
            n = recv(upcall_fd(st->call), buf, want, MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n == 0)
            return download_broke(st, SG_ERR_CLOSED, "it closed the connection");
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            st->is_waiting = 1;
            worker_timer_arm(worker_self(), &st->stall, sg_now_ms() + st->stall_ms);
            worker_suspend(st->rq->conn);
            return 0;
        }
        if (n < 0)
            return download_broke(st, SG_ERR_CLOSED, strerror(errno));
    }
    st->left -= (uint64_t)n;
    st->rq->bytes_out += (uint64_t)n;
    /* Exactly the body and nothing past it: the connection is at a frame boundary, fit for the pool. */
    if (st->left == 0 && st->pre_off >= res->body_len)
        upcall_body_read_whole(st->call);
    return n;
}

/* The backend socket has news (bytes, a hang-up): a download waiting for it goes on. */
static void download_ready(void *arg, uint32_t events)
{
    struct get_state *st = arg;
    (void)events;
    if (!st->is_waiting)
        return; /* libmicrohttpd will read it when it wants more */
    st->is_waiting = 0;
    worker_timer_cancel(worker_self(), &st->stall);
    worker_resume(st->rq->conn);
}

static void download_stalled(struct wk_timer *t)
{
    struct get_state *st = (struct get_state *)((char *)t - offsetof(struct get_state, stall));
    if (!st->is_waiting)
        return;
    st->is_waiting = 0;
    st->is_stalled = 1;
    worker_resume(st->rq->conn);
}

static ssize_t read_nothing(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    (void)pos;
    (void)buf;
    (void)max;
    return MHD_CONTENT_READER_END_WITH_ERROR; /* HEAD: libmicrohttpd never asks for the body */
}

static void get_free(struct request *rq, int is_complete)
{
    struct get_state *st = rq->state;
    (void)is_complete;
    worker_timer_cancel(worker_self(), &st->stall);
    upcall_free(st->call); /* pooled only when the body was read exactly; else closed */
    free(st);
    rq->state = NULL;
}

/*
 * Returns 1 when the client's copy is current (RFC 9110 13.1.2, 13.1.3):
 * If-None-Match lists the file's ETag or is "*"; without If-None-Match, an
 * If-Modified-Since date at or after the file's mtime (whole seconds).
 */
static int is_not_modified(struct request *rq, const struct file_meta *m, const char *etag)
{
    const char *inm = request_header(rq, "If-None-Match");
    const char *ims = request_header(rq, "If-Modified-Since");
    struct tm tm;
    if (inm)
        return strcmp(inm, "*") == 0 || strstr(inm, etag) != NULL;
    if (!ims || m->mtime <= 0)
        return 0;
    memset(&tm, 0, sizeof tm);
    /* RFC 9110 5.6.7: the IMF-fixdate form; a date in another form is ignored, as the RFC asks. */
    if (!strptime(ims, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        return 0;
    return (int64_t)timegm(&tm) >= m->mtime;
}

/* Queues 304 with the validators of m (ETag, Last-Modified). */
static void respond_not_modified(struct request *rq, const struct file_meta *m, const char *etag)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    char date[64];
    struct tm tm;
    time_t t = (time_t)m->mtime;
    if (!resp)
        return;
    MHD_add_response_header(resp, "ETag", etag);
    if (m->mtime > 0 && gmtime_r(&t, &tm)) {
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        MHD_add_response_header(resp, "Last-Modified", date);
    }
    respond(rq, 304, resp);
}

/* Answers 304 or 416 for a conditional or ranged GET when that is the answer; returns 1 when it did. */
static int answer_conditions(struct request *rq, const struct file_meta *m, const char *etag, int *partial,
                             uint64_t *off, uint64_t *len)
{
    const char *range = request_header(rq, "Range");
    const char *if_range = request_header(rq, "If-Range");
    struct MHD_Response *resp;
    json_t *body;
    char cr[64], *text;
    int r;

    if (is_not_modified(rq, m, etag)) {
        respond_not_modified(rq, m, etag);
        return 1;
    }
    if (!range || (if_range && strcmp(if_range, etag) != 0))
        return 0;
    r = parse_range(range, m->size, off, len);
    if (r > 0)
        *partial = 1;
    if (r >= 0)
        return 0;
    snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)m->size);
    request_fail(rq, GW_ERR_RANGE, "the range %s is outside the file's %llu bytes", range,
                 (unsigned long long)m->size);
    body = http_error_body(GW_ERR_RANGE, rq->errmsg);
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    resp = text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!resp) {
        free(text);
        return 1;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Content-Range", cr);
    rq->bytes_out += strlen(text);
    respond(rq, 416, resp);
    return 1;
}

/* The download's answer header is in: the error, or a response whose body streams from the backend. */
static int download_answer(struct request *rq)
{
    struct get_state *st = rq->state;
    const struct upcall_result *res = upcall_result(st->call);
    struct file_meta m = {0};
    struct MHD_Response *resp;
    char cr[96];
    uint64_t size = res->body_size;
    int rc;

    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    rc = meta_from(rq, res->header, &m);
    if (rc != SG_OK)
        return rc;
    st->left = size;
    if (size == 0 && res->body_len == 0)
        upcall_body_read_whole(st->call);
    upcall_on_ready(st->call, download_ready, st);
    resp = MHD_create_response_from_callback(size, download_block(size), read_download, st, NULL);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    add_file_headers(resp, rq->param, &m);
    if (st->is_partial) {
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)st->off,
                 (unsigned long long)(st->off + size - 1), (unsigned long long)m.size);
        MHD_add_response_header(resp, "Content-Range", cr);
    }
    return respond(rq, st->is_partial ? 206 : 200, resp);
}

static void download_started(struct upcall *c, const struct upcall_result *res, void *arg)
{
    (void)c;
    (void)res;
    request_wake(arg);
}

/* Asks the file backend for rq->param (of [off, off+len) when partial) on the loop, and defers rq until it answers. */
static int start_download(struct request *rq, int partial, uint64_t off, uint64_t len)
{
    struct upstream *up = &rq->gw->backends[BACKEND_FILE];
    struct get_state *st = NULL;
    json_t *hdr = NULL;
    char err[384] = "";
    int rc;

    hdr = json_pack("{s:s,s:s,s:s}", "op", "download", "filename", rq->param, "id", rq->id);
    if (!hdr)
        return request_fail(rq, SG_ERR_INVALID_NAME, "%s", validate_name_not_utf8(rq->param));
    if (partial) {
        json_object_set_new(hdr, "offset", json_integer((json_int_t)off));
        json_object_set_new(hdr, "length", json_integer((json_int_t)len));
    }
    st = calloc(1, sizeof *st);
    if (!st) {
        json_decref(hdr);
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    st->rq = rq;
    st->is_partial = partial;
    st->off = off;
    st->len = len;
    st->stall.fire = download_stalled;
    st->stall_ms = rq->gw->cfg.timeout_ms;
    rq->state = st;
    rq->state_free = get_free;
    rc = upcall_frame_head(up, hdr, 1, request_deadline(rq), download_started, rq, &st->call, err, sizeof err);
    json_decref(hdr);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    request_defer(rq, download_answer);
    return SG_OK;
}

/* A conditional or ranged GET's stat is in: 304, 416, or the download of what was asked. */
static int get_after_stat(struct request *rq)
{
    const struct upcall_result *res = file_op_answer(rq);
    struct file_meta m = {0};
    uint64_t off = 0, len = 0;
    char etag[80];
    int partial = 0, rc;

    if (!res)
        return rq->err;
    rc = meta_from(rq, res->header, &m);
    api_call_end(rq);
    if (rc != SG_OK)
        return rc;
    snprintf(etag, sizeof etag, "\"%s\"", m.sha256);
    if (answer_conditions(rq, &m, etag, &partial, &off, &len))
        return rq->has_responded ? SG_OK : request_fail(rq, SG_ERR_NOMEM, "out of memory");
    return start_download(rq, partial, off, len);
}

int api_files_get(struct request *rq)
{
    /* Only a conditional or ranged GET needs the size and sha256 before the download starts. */
    if (request_header(rq, "Range") || request_header(rq, "If-None-Match") ||
        request_header(rq, "If-Modified-Since"))
        return file_op(rq, "stat", 0, get_after_stat);
    return start_download(rq, 0, 0, 0);
}

static int head_answer(struct request *rq)
{
    const struct upcall_result *res = file_op_answer(rq);
    struct file_meta m = {0};
    struct MHD_Response *resp;
    char etag[80];
    int rc;
    if (!res)
        return rq->err;
    rc = meta_from(rq, res->header, &m);
    if (rc != SG_OK)
        return rc;
    /* HEAD answers what GET would, 304 included (RFC 9110 9.3.2). */
    snprintf(etag, sizeof etag, "\"%s\"", m.sha256);
    if (is_not_modified(rq, &m, etag)) {
        respond_not_modified(rq, &m, etag);
        return rq->has_responded ? SG_OK : request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    /* A callback response of the right size gives HEAD its Content-Length without any body. */
    resp = MHD_create_response_from_callback(m.size, 4096, read_nothing, NULL, NULL);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    add_file_headers(resp, rq->param, &m);
    return respond(rq, 200, resp);
}

int api_files_head(struct request *rq)
{
    return file_op(rq, "stat", 0, head_answer);
}

static int delete_answer(struct request *rq)
{
    return file_op_answer(rq) ? respond_empty(rq, 204) : rq->err;
}

int api_files_delete(struct request *rq)
{
    if (request_header(rq, "If-None-Match"))
        return request_fail(rq, SG_ERR_INVALID, "DELETE takes If-Match, not If-None-Match");
    return file_op(rq, "delete", 0, delete_answer);
}

static int list_answer(struct request *rq)
{
    const struct upcall_result *res = file_op_answer(rq);
    json_t *list;
    json_error_t jerr;
    if (!res)
        return rq->err;
    list = res->body_len > 0 ? json_loadb(res->body, res->body_len, 0, &jerr) : json_array();
    if (!json_is_array(list)) {
        json_decref(list);
        return request_fail(rq, upstream_failed(&rq->gw->backends[BACKEND_FILE], SG_ERR_PROTO),
                            "the file backend's list is not a JSON array");
    }
    return respond_json(rq, 200, json_pack("{s:o}", "files", list));
}

int api_files_list(struct request *rq)
{
    return file_op(rq, "list", LIST_MAX_BODY, list_answer);
}
