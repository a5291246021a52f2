/*
 * upload.c - the upload operation: the body streams into a temporary file in
 * the root while it is hashed, and only a complete, verified, fsync'ed file
 * is renamed into place. Every other ending removes the temporary file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "body.h"
#include "sockgate/error.h"
#include "sockgate/hash.h"
#include "sockgate/log.h"

/* The state of one upload, so every exit path is one clean-up. */
struct upload {
    struct file_conn *c;
    const char *name;
    uint64_t size;
    struct file_temp tmp;
    struct file_body body;
    struct sg_hash hash;
    const char *want_sha256;
    const char *want_md5;
    char sha256[SG_SHA256_HEX];
    char md5[SG_MD5_HEX];
};

/*
 * Streams the body into u->tmp. Returns SG_OK once END was read; an sg_err
 * value (already answered, body drained or connection marked) when the
 * write failed; or the reader's error when the connection itself failed
 * (*outcome FILE_CLOSE).
 */
static int receive_body(struct upload *u, int *outcome)
{
    int rc, err;
    char why[128];
    u->body = (struct file_body){.c = u->c, .fd = u->tmp.fd, .size = u->size, .hash = {&u->hash, NULL}};
    file_body_start(&u->body);
    rc = file_body_receive(&u->body);
    file_body_end(&u->body);
    if (rc == SG_OK) {
        *outcome = FILE_NEXT;
        return SG_OK;
    }
    if (rc != FILE_BODY_WRITE_FAILED) {
        *outcome = FILE_CLOSE;
        return rc; /* a short body: disconnect, timeout or stop */
    }
    err = file_store_errno(u->body.write_errno);
    snprintf(why, sizeof why, "%s", strerror(u->body.write_errno));
    /* Remove the partial file now and say so at once; the client may stop sending. */
    file_store_temp_discard(&u->c->srv->store, &u->tmp);
    *outcome = file_conn_reply_error(u->c, err, "writing %s failed after %llu bytes: %s", u->name,
                                     (unsigned long long)u->body.got, why);
    if (*outcome == FILE_NEXT)
        *outcome = file_conn_skip_body(u->c, u->size - u->body.got);
    return err;
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
    if (file_conn_request_digest(req, "sha256", SG_SHA256_HEX - 1, &u.want_sha256) != SG_OK ||
        file_conn_request_digest(req, "md5", SG_MD5_HEX - 1, &u.want_md5) != SG_OK) {
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
    rc = receive_body(&u, &outcome);
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
        json_t *resp = json_pack("{s:s, s:I, s:s, s:b}", "name", u.name, "size", (json_int_t)u.body.got, "sha256",
                                 u.sha256, "created", !existed);
        if (resp && u.want_md5)
            json_object_set_new(resp, "md5", json_string(u.md5));
        outcome = file_conn_reply(c, resp);
    }
out:
    /* Whatever went wrong, the temporary file goes: nothing partial stays in the root. */
    file_store_temp_discard(st, &u.tmp);
    sg_hash_free(&u.hash);
    file_conn_log(c, "upload", u.name, u.body.got, rc, start);
    return outcome;
}
