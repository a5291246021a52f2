/* spool.c - bodies whose size is unknown up front: a nameless temporary file, then forwarded to the file backend. */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"
#include "upcall.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/opts.h"
#include "upstream.h"

int spool_check(const char *dir, char *err, size_t errlen)
{
    struct spool s;
    int rc = spool_open(&s, dir, 1, err, errlen);
    if (rc == SG_OK)
        spool_close(&s);
    return rc;
}

int spool_open(struct spool *s, const char *dir, uint64_t max, char *err, size_t errlen)
{
    char path[4096];
    s->size = 0;
    s->max = max;
    /* O_TMPFILE: the kernel frees the space when the descriptor closes, even after a crash. */
    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd >= 0)
        return SG_OK;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
        snprintf(err, errlen, "cannot create a temporary file in %s: %s", dir, strerror(errno));
        return SG_ERR_SYS;
    }
    /* A filesystem without O_TMPFILE: a named file, unlinked at once. */
    if ((size_t)snprintf(path, sizeof path, "%s/sockgate-spool-XXXXXX", dir) >= sizeof path) {
        snprintf(err, errlen, "the spool directory's path is too long");
        return SG_ERR_INVALID;
    }
    s->fd = mkostemp(path, O_CLOEXEC);
    if (s->fd < 0) {
        snprintf(err, errlen, "cannot create a temporary file in %s: %s", dir, strerror(errno));
        return SG_ERR_SYS;
    }
    unlink(path);
    return SG_OK;
}

int spool_write(struct spool *s, const void *buf, size_t len, char *err, size_t errlen)
{
    const char *p = buf;
    if (len > s->max - s->size) {
        char limit[32];
        sg_format_size(s->max, limit, sizeof limit);
        snprintf(err, errlen, "an upload may have at most %s (--max-upload)", limit);
        return SG_ERR_TOO_LARGE;
    }
    while (len > 0) {
        ssize_t n = write(s->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int is_full = n < 0 && (errno == ENOSPC || errno == EDQUOT);
            snprintf(err, errlen, "cannot spool the upload: %s", n < 0 ? strerror(errno) : "short write");
            return is_full ? SG_ERR_NO_SPACE : SG_ERR_SYS;
        }
        p += n;
        len -= (size_t)n;
        s->size += (uint64_t)n;
    }
    return SG_OK;
}

void spool_close(struct spool *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

json_t *upload_result(const json_t *resp)
{
    json_t *out = json_object();
    const char *keys[] = {"name", "size", "sha256", "created"};
    if (!out)
        return NULL;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(resp, keys[i]);
        if (v)
            json_object_set(out, keys[i], v);
    }
    return out;
}

/* ---- the same on the loop ---- */

struct spool_send {
    struct request *rq;
    struct upcall *call;
    int fd;
    uint64_t off, end;
    int is_done;
    void (*sent)(void *arg);
    void *arg;
};

static void send_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct spool_send *ss = arg;
    (void)c;
    (void)res;
    ss->is_done = 1;
    ss->sent(ss->arg);
}

/* Sends what the socket takes now (sendfile: no copy in user space). */
static void send_more(struct upcall *c, void *arg)
{
    struct spool_send *ss = arg;
    while (ss->off < ss->end) {
        uint64_t n = ss->end - ss->off;
        if (upcall_sendfile(c, ss->fd, &ss->off, n > (1u << 30) ? (1u << 30) : (size_t)n) <= 0)
            return; /* full (writable() comes back), or ended (send_done ran) */
    }
}

int spool_send_start(struct request *rq, const struct spool *s, uint64_t off, uint64_t len, const char *name,
                     const json_t *conditions, void (*sent)(void *arg), void *arg, struct spool_send **out)
{
    struct spool_send *ss = calloc(1, sizeof *ss);
    json_t *hdr = NULL;
    char err[384] = "";
    int rc;

    *out = NULL;
    if (!ss)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    hdr = json_pack("{s:s,s:s,s:I,s:s}", "op", "upload", "filename", name, "total_size", (json_int_t)len, "id",
                    rq->id);
    if (!hdr) {
        free(ss);
        return request_fail(rq, SG_ERR_INVALID, "the file name is not valid UTF-8");
    }
    if (conditions)
        json_object_update(hdr, (json_t *)conditions);
    ss->rq = rq;
    ss->fd = s->fd;
    ss->off = off;
    ss->end = off + len;
    ss->sent = sent;
    ss->arg = arg;
    rc = upcall_frame_feed(&rq->gw->backends[BACKEND_FILE], hdr, len, request_deadline(rq), send_more, send_done, ss,
                           &ss->call, err, sizeof err);
    json_decref(hdr);
    if (rc != SG_OK) {
        free(ss);
        return request_fail(rq, rc, "%s", err);
    }
    *out = ss;
    send_more(ss->call, ss); /* a pooled connection takes it at once; a fresh one says writable() when connected */
    return SG_OK;
}

int spool_send_is_done(const struct spool_send *ss)
{
    return ss->is_done;
}

int spool_send_result(struct spool_send *ss, json_t **result)
{
    const struct upcall_result *res = upcall_result(ss->call);
    *result = NULL;
    if (res->rc != SG_OK)
        return request_fail(ss->rq, res->rc, "%s", res->err);
    *result = upload_result(res->header);
    return *result ? SG_OK : request_fail(ss->rq, SG_ERR_NOMEM, "out of memory");
}

void spool_send_free(struct spool_send *ss)
{
    if (!ss)
        return;
    upcall_free(ss->call);
    free(ss);
}
