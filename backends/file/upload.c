/*
 * upload.c - the upload operation: the body streams into a temporary file in
 * the root while it is hashed, and only a complete, verified, fsync'ed file
 * is renamed into place. Every other ending removes the temporary file.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "hasher.h"
#include "sockgate/error.h"
#include "sockgate/hash.h"
#include "sockgate/iobuf.h"
#include "sockgate/log.h"

/* Returns 1 when text is exactly len hex digits (either case). */
static int is_hex(const char *text, size_t len)
{
    if (strlen(text) != len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)text[i]))
            return 0;
    return 1;
}

/*
 * Reads an optional checksum field: *out is NULL when absent. Returns SG_OK,
 * or SG_ERR_INVALID when present but not hexlen hex digits.
 */
static int checksum_field(const json_t *req, const char *key, size_t hexlen, const char **out)
{
    json_t *v = json_object_get(req, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return SG_OK;
    if (!json_is_string(v) || !is_hex(json_string_value(v), hexlen))
        return SG_ERR_INVALID;
    *out = json_string_value(v);
    return SG_OK;
}

/*
 * A body over BODY_PIPELINE bytes is received in two alternating buffers of
 * BODY_BUF bytes: once the frame reader's 64 KiB buffer is used up, the body
 * is read straight from the socket into one while the other is hashed on a
 * helper thread (hasher.c). The socket is told not to wake us before
 * BODY_LOWAT bytes are queued (SO_RCVLOWAT), so a sender's small pieces
 * (17 KiB from the gateway) arrive as one read, one write and one hash block
 * of a few hundred KiB instead of one of each per piece.
 */
#define BODY_PIPELINE (UINT64_C(1) << 20)
#define BODY_BUF (512u * 1024u)
#define BODY_LOWAT (256 * 1024)
/*
 * How long to wait for BODY_LOWAT bytes before taking whatever came: a slow
 * sender that makes progress must not look idle to the I/O timeout.
 */
#define BODY_LOWAT_WAIT_MS 200

/* Writes all len bytes to the file fd; 0 or -1 with errno set. */
static int write_file(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The state of one upload, so every exit path is one clean-up. */
struct upload {
    struct file_conn *c;
    const char *name;
    uint64_t size;
    uint64_t got;
    struct file_temp tmp;
    /* 2 * BODY_BUF bytes for direct reads, on 2 MiB pages for a large body; data NULL: the frame reader only */
    struct sg_iobuf bufs;
    unsigned cur;            /* the buffer the next direct read fills: 0 or 1 */
    int is_direct;           /* the last chunk is in bufs (else in the frame reader's buffer) */
    int lowat;               /* the SO_RCVLOWAT set on the socket, 0 while it is the default */
    int has_hasher;
    struct hasher hasher;
    struct sg_hash hash;
    const char *want_sha256;
    const char *want_md5;
    char sha256[SG_SHA256_HEX];
    char md5[SG_MD5_HEX];
};

/*
 * Returns the next event of the upload frame like file_conn_next. Bytes the
 * frame reader holds are used first; after that, body bytes are read into
 * u->bufs.data[cur] directly, never more than the body has left, so the bytes of a
 * pipelined next request stay in the socket for the frame reader. They go
 * through the connection's decoder all the same, which keeps its count.
 */
static int next_event(struct upload *u, enum sg_frame_event *ev, const uint8_t **chunk, size_t *len)
{
    struct sg_frame_reader *rd = u->c->rd;
    uint64_t left = rd->dec.body_left;
    uint8_t *buf;
    size_t want, got = 0, used = 0;
    int rc;

    u->is_direct = 0;
    if (!u->bufs.data || rd->off < rd->len || left == 0)
        return file_conn_next(u->c, ev, chunk, len);
    buf = u->bufs.data + (size_t)u->cur * BODY_BUF;
    want = left < BODY_BUF ? (size_t)left : BODY_BUF;
    rc = sg_read_batched(u->c->fd, buf, want, left < BODY_LOWAT ? (size_t)left : BODY_LOWAT, BODY_LOWAT_WAIT_MS,
                         u->c->srv->io_timeout_ms, &u->lowat, &got);
    if (rc != SG_OK)
        return rc;
    u->is_direct = 1;
    *ev = sg_frame_decode(&rd->dec, buf, got, &used, chunk, len);
    return *ev == SG_FRAME_BODY && used == got ? SG_OK : SG_ERR_INTERNAL;
}

/* Feeds a body chunk into the digests: on the helper thread when there is one and the chunk is ours. */
static void hash_chunk(struct upload *u, const uint8_t *chunk, size_t len)
{
    if (!u->has_hasher) {
        sg_hash_update(&u->hash, chunk, len);
        return;
    }
    if (!u->is_direct) {
        /* The frame reader reuses its buffer on its next read: hash this chunk now, in order. */
        hasher_wait(&u->hasher);
        sg_hash_update(&u->hash, chunk, len);
        return;
    }
    hasher_submit(&u->hasher, chunk, len);
    u->cur ^= 1; /* the next read fills the other buffer, whose block the submit saw hashed */
}

/*
 * Streams the body into u->tmp. Returns SG_OK once END was read; an sg_err
 * value (already answered, body drained or connection marked) when the
 * write failed; or -1 when the connection itself failed (close it).
 */
static int receive_body(struct upload *u, int *outcome)
{
    enum sg_frame_event ev = SG_FRAME_NEED_MORE;
    const uint8_t *chunk;
    size_t len;
    while (ev != SG_FRAME_END) {
        int rc = next_event(u, &ev, &chunk, &len);
        if (rc != SG_OK) {
            *outcome = FILE_CLOSE;
            return rc; /* a short body: disconnect, timeout or stop */
        }
        if (ev != SG_FRAME_BODY)
            continue;
        u->got += len;
        hash_chunk(u, chunk, len);
        if (write_file(u->tmp.fd, chunk, len) != 0) {
            int err = file_store_errno(errno);
            char why[128];
            snprintf(why, sizeof why, "%s", strerror(errno));
            /* Remove the partial file now and say so at once; the client may stop sending. */
            file_store_temp_discard(&u->c->srv->store, &u->tmp);
            *outcome = file_conn_reply_error(u->c, err, "writing %s failed after %llu bytes: %s", u->name,
                                             (unsigned long long)(u->got - len), why);
            /* The rest is drained through the frame reader, whatever its size. */
            sg_set_rcvlowat(u->c->fd, 1, &u->lowat);
            if (*outcome == FILE_NEXT)
                *outcome = file_conn_skip_body(u->c, u->size - u->got);
            return err;
        }
    }
    *outcome = FILE_NEXT;
    return SG_OK;
}

/* Checks the digests the client sent against ours; SG_OK or SG_ERR_CHECKSUM (answered). */
static int verify(struct upload *u)
{
    const char *which = NULL, *want = NULL, *have = NULL;
    if (u->want_sha256 && strcasecmp(u->want_sha256, u->sha256) != 0) {
        which = "sha256";
        want = u->want_sha256;
        have = u->sha256;
    } else if (u->want_md5 && strcasecmp(u->want_md5, u->md5) != 0) {
        which = "md5";
        want = u->want_md5;
        have = u->md5;
    }
    if (!which)
        return SG_OK;
    file_conn_reply_error(u->c, SG_ERR_CHECKSUM, "%s mismatch: the client sent %s, the body hashes to %s; nothing stored",
                          which, want, have);
    return SG_ERR_CHECKSUM;
}

/* Answers a refusal (msg) before any body byte was read, then skips the body; returns the outcome. */
static int refuse(struct upload *u, int err, const char *msg)
{
    int outcome = file_conn_reply_error(u->c, err, "%s", msg);
    return outcome == FILE_NEXT ? file_conn_skip_body(u->c, u->size) : outcome;
}

int file_op_upload(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct file_store *st = &c->srv->store;
    struct upload u = {.c = c, .size = body_size, .tmp = {.fd = -1}};
    struct stat sb;
    struct file_condition cond;
    int64_t start = sg_now_ms();
    int outcome = FILE_NEXT, rc, existed = 0;
    char why[256];

    rc = file_conn_request_name(c, req, &u.name);
    if (rc != SG_OK) {
        outcome = file_conn_skip_body(c, body_size);
        goto out;
    }
    if (checksum_field(req, "sha256", SG_SHA256_HEX - 1, &u.want_sha256) != SG_OK ||
        checksum_field(req, "md5", SG_MD5_HEX - 1, &u.want_md5) != SG_OK) {
        rc = SG_ERR_INVALID;
        outcome = refuse(&u, rc, "sha256 must be 64 and md5 32 hex digits");
        goto out;
    }
    rc = file_conn_request_condition(req, &cond, why, sizeof why);
    /* Checked before the body too, so a condition that fails now costs no transfer; it is checked again at the commit. */
    if (rc == SG_OK)
        rc = file_store_check(st, u.name, &cond, NULL, why, sizeof why);
    if (rc != SG_OK) {
        outcome = refuse(&u, rc, why);
        goto out;
    }
    if (body_size > c->srv->max_size) {
        rc = SG_ERR_TOO_LARGE;
        snprintf(why, sizeof why, "the upload is %llu bytes; this server takes at most %llu",
                 (unsigned long long)body_size, (unsigned long long)c->srv->max_size);
        outcome = refuse(&u, rc, why);
        goto out;
    }
    if (body_size > file_store_free_bytes(st)) {
        rc = SG_ERR_NO_SPACE;
        snprintf(why, sizeof why, "the upload is %llu bytes; the disk has %llu free", (unsigned long long)body_size,
                 (unsigned long long)file_store_free_bytes(st));
        outcome = refuse(&u, rc, why);
        goto out;
    }
    rc = sg_hash_init(&u.hash, u.want_md5 != NULL);
    if (rc == SG_OK)
        rc = file_store_temp_create(st, &u.tmp);
    if (rc != SG_OK) {
        snprintf(why, sizeof why, "cannot start the upload: %s", rc == SG_ERR_NOMEM ? "out of memory" : strerror(errno));
        outcome = refuse(&u, rc, why);
        goto out;
    }
    /* Without the buffers or the thread the upload still works, only with smaller reads or inline hashing. */
    if (body_size > BODY_PIPELINE)
        sg_iobuf_alloc(&u.bufs, 2 * (size_t)BODY_BUF, body_size);
    u.has_hasher = u.bufs.data && hasher_start(&u.hasher, &u.hash) == SG_OK;
    rc = receive_body(&u, &outcome);
    if (u.has_hasher)
        hasher_stop(&u.hasher); /* the hash is complete, and the buffers free, only once the helper is done */
    if (u.lowat)
        sg_set_rcvlowat(c->fd, 1, &u.lowat); /* the next request's header may be a few bytes */
    sg_iobuf_free(&u.bufs);
    if (rc != SG_OK)
        goto out;
    sg_hash_final(&u.hash, u.sha256, u.want_md5 ? u.md5 : NULL);
    rc = verify(&u);
    if (rc != SG_OK)
        goto out;
    rc = file_store_temp_commit(st, &u.tmp, u.name, &cond, &existed, &sb, why, sizeof why);
    if (rc == SG_ERR_PRECONDITION) {
        outcome = file_conn_reply_error(c, rc, "%s; nothing stored", why);
        goto out;
    }
    if (rc != SG_OK) {
        outcome = file_conn_reply_error(c, rc, "storing %s failed: %s; nothing stored", u.name, why);
        goto out;
    }
    file_store_meta_put(st, u.name, &sb, u.sha256);
    {
        json_t *resp = json_pack("{s:s, s:I, s:s, s:b}", "name", u.name, "size", (json_int_t)u.got, "sha256",
                                 u.sha256, "created", !existed);
        if (resp && u.want_md5)
            json_object_set_new(resp, "md5", json_string(u.md5));
        outcome = file_conn_reply(c, resp);
    }
out:
    /* Whatever went wrong, the temporary file goes: nothing partial stays in the root. */
    file_store_temp_discard(st, &u.tmp);
    sg_hash_free(&u.hash);
    file_conn_log(c, "upload", u.name, u.got, rc, start);
    return outcome;
}
