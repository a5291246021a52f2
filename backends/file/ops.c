/* ops.c - the read-side operations and delete: download (with ranges, over sendfile), stat, delete. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "conn.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

/* sendfile(2) moves at most this much per call. */
#define SENDFILE_MAX 0x7ffff000

/* Answers the error of a failed store call on name. */
static int reply_store_error(struct file_conn *c, int rc, const char *name)
{
    if (rc == SG_ERR_NOT_FOUND)
        return file_conn_reply_error(c, rc, "no file named %s", name);
    return file_conn_reply_error(c, rc, "%s: %s", name, rc == SG_ERR_SYS ? strerror(errno) : sg_strerror(rc));
}

/*
 * Sends count bytes of fd from offset with sendfile, waiting for the socket
 * at most the I/O timeout each time. Returns SG_OK, or an sg_err value when
 * the client went away, stalled, or the file shrank under us.
 */
static int send_range(struct file_conn *c, int fd, uint64_t offset, uint64_t count)
{
    off_t off = (off_t)offset;
    while (count > 0) {
        size_t want = count > SENDFILE_MAX ? SENDFILE_MAX : (size_t)count;
        ssize_t n = sendfile(c->fd, fd, &off, want);
        if (n > 0) {
            count -= (uint64_t)n;
            continue;
        }
        if (n == 0)
            return SG_ERR_INTERNAL; /* the file got shorter than its stat said */
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int64_t t = c->srv->io_timeout_ms;
            int rc = sg_wait_fd(c->fd, POLLOUT, t < 0 ? -1 : sg_now_ms() + t);
            if (rc != SG_OK)
                return rc;
            continue;
        }
        return errno == EPIPE || errno == ECONNRESET ? SG_ERR_CLOSED : SG_ERR_SYS;
    }
    return SG_OK;
}

/* Reads optional non-negative integer key into *out (default def); SG_OK or SG_ERR_INVALID. */
static int range_field(const json_t *req, const char *key, uint64_t def, uint64_t *out)
{
    int64_t v;
    int rc = sg_header_int(req, key, 0, (int64_t)SG_FRAME_MAX_BODY, &v);
    if (rc == SG_ERR_NOT_FOUND || json_is_null(json_object_get(req, key))) {
        *out = def;
        return SG_OK;
    }
    if (rc != SG_OK)
        return SG_ERR_INVALID;
    *out = (uint64_t)v;
    return SG_OK;
}

int file_op_download(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct file_store *st = &c->srv->store;
    const char *name = NULL;
    char sha[SG_SHA256_HEX];
    struct stat sb;
    uint64_t offset, length, size, count = 0;
    int64_t start = sg_now_ms();
    int fd = -1, rc, outcome;
    json_t *resp;

    /* A download request carries no body; one sent anyway is skipped first. */
    outcome = file_conn_skip_body(c, body_size);
    if (outcome != FILE_NEXT)
        return outcome;
    rc = file_conn_request_name(c, req, &name);
    if (rc != SG_OK)
        goto out;
    if (range_field(req, "offset", 0, &offset) != SG_OK || range_field(req, "length", UINT64_MAX, &length) != SG_OK) {
        rc = SG_ERR_INVALID;
        outcome = file_conn_reply_error(c, rc, "offset and length must be integers from 0 to 2^53");
        goto out;
    }
    rc = file_store_open_read(st, name, &fd, &sb);
    if (rc != SG_OK) {
        outcome = reply_store_error(c, rc, name);
        goto out;
    }
    size = (uint64_t)sb.st_size;
    if (offset > size) {
        rc = SG_ERR_INVALID;
        outcome = file_conn_reply_error(c, rc, "offset %llu is past the end of %s (%llu bytes)",
                                        (unsigned long long)offset, name, (unsigned long long)size);
        goto out;
    }
    /* A length reaching past the end is cut to the end, as HTTP ranges are. */
    count = length < size - offset ? length : size - offset;
    rc = file_store_sha256(st, name, fd, &sb, sha);
    if (rc != SG_OK) {
        outcome = reply_store_error(c, rc, name);
        goto out;
    }
    resp = json_pack("{s:s, s:I, s:I, s:I, s:s, s:I}", "name", name, "total_size", (json_int_t)count, "size",
                     (json_int_t)size, "offset", (json_int_t)offset, "sha256", sha, "mtime_ms",
                     (json_int_t)((int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000));
    outcome = file_conn_reply(c, resp);
    if (outcome != FILE_NEXT) {
        rc = SG_ERR_CLOSED;
        goto out;
    }
    rc = send_range(c, fd, offset, count);
    if (rc != SG_OK) {
        /* The header promised count bytes: the stream cannot carry on without them. */
        outcome = FILE_CLOSE;
        goto out;
    }
out:
    if (fd >= 0)
        close(fd);
    file_conn_log(c, "download", name, count, rc, start);
    return outcome;
}

int file_op_stat(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct file_store *st = &c->srv->store;
    const char *name = NULL;
    char sha[SG_SHA256_HEX];
    struct stat sb;
    int64_t start = sg_now_ms();
    int rc, outcome = file_conn_skip_body(c, body_size);

    if (outcome != FILE_NEXT)
        return outcome;
    rc = file_conn_request_name(c, req, &name);
    if (rc != SG_OK)
        goto out;
    rc = file_store_stat(st, name, &sb);
    if (rc == SG_OK)
        rc = file_store_sha256(st, name, -1, &sb, sha);
    if (rc != SG_OK) {
        outcome = reply_store_error(c, rc, name);
        goto out;
    }
    outcome = file_conn_reply(c, json_pack("{s:s, s:I, s:I, s:s}", "name", name, "size", (json_int_t)sb.st_size,
                                           "mtime_ms", (json_int_t)((int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000),
                                           "sha256", sha));
out:
    file_conn_log(c, "stat", name, 0, rc, start);
    return outcome;
}

int file_op_delete(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    const char *name = NULL;
    struct file_condition cond;
    char why[256];
    int64_t start = sg_now_ms();
    int rc, outcome = file_conn_skip_body(c, body_size);

    if (outcome != FILE_NEXT)
        return outcome;
    rc = file_conn_request_name(c, req, &name);
    if (rc != SG_OK)
        goto out;
    rc = file_conn_request_condition(req, &cond, why, sizeof why);
    if (rc != SG_OK) {
        outcome = file_conn_reply_error(c, rc, "%s", why);
        goto out;
    }
    rc = file_store_remove(&c->srv->store, name, &cond, why, sizeof why);
    if (rc == SG_ERR_PRECONDITION) {
        outcome = file_conn_reply_error(c, rc, "%s; nothing deleted", why);
        goto out;
    }
    if (rc != SG_OK) {
        outcome = reply_store_error(c, rc, name);
        goto out;
    }
    outcome = file_conn_reply(c, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
out:
    file_conn_log(c, "delete", name, 0, rc, start);
    return outcome;
}
