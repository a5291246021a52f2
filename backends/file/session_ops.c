/*
 * session_ops.c - the upload sessions' operations: session_create,
 * session_append, session_stat, session_finish, session_abort
 * (docs/protocol.md, "Upload sessions"). A session's bytes go to its data
 * file as they arrive, so a cut connection keeps them; the file appears
 * under its name only whole, through the same commit as an upload's.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "body.h"
#include "conn.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

/* The digests an append may carry for its own bytes (tus's Upload-Checksum, in hex). */
struct want_digests {
    const char *sha256;
    const char *md5;
    const char *sha1;
    unsigned algs; /* enum sg_hash_alg bits of those given */
};

/*
 * One request on one session, so every exit is one clean-up. The claim
 * (live) makes requests on one session take turns; while it is held, the
 * session's files are ours.
 */
struct sreq {
    struct file_conn *c;
    struct file_sessions *ss;
    const char *op;
    char id[FILE_SESSION_ID_HEX + 1];  /* "" until known */
    struct file_session_live *live;    /* claimed, or NULL */
    struct file_session_record rec;
    int has_rec;
    int fd;                            /* the data file, or -1 */
    struct stat sb;                    /* the data file's, as of the last look */
    int is_gone;                       /* the session left the disk (finished, aborted, expired) */
    uint64_t got;                      /* body bytes kept, for the log */
    int64_t start_ms;
};

/*
 * Lets go of the session: closes its data file and releases the claim
 * (idempotent). Every answer is sent after this, never before: a client that
 * sends its next request on the answer must not find the session still held.
 */
static void sreq_release(struct sreq *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    file_session_release(r->ss, r->live, r->is_gone, r->is_gone);
    r->live = NULL;
}

/* Releases the session, then sends h (stolen); returns the outcome. */
static int reply(struct sreq *r, json_t *h)
{
    sreq_release(r);
    return file_conn_reply(r->c, h);
}

/* Answers an error; when the session is known, the frame also names it and its offset. */
static int reply_error(struct sreq *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int reply_error(struct sreq *r, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_t *h;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    h = sg_frame_error_header(err, msg, NULL);
    if (h && r->id[0] && !r->is_gone) {
        json_object_set_new(h, "session", json_string(r->id));
        if (r->fd >= 0 && fstat(r->fd, &r->sb) == 0)
            json_object_set_new(h, "offset", json_integer((json_int_t)r->sb.st_size));
    }
    return reply(r, h);
}

/* Answers a refusal before any body byte was read, then skips the body; returns the outcome. */
static int refuse(struct sreq *r, uint64_t body_size, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(struct sreq *r, uint64_t body_size, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int outcome;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    outcome = reply_error(r, err, "%s", msg);
    return outcome == FILE_NEXT ? file_conn_skip_body(r->c, body_size) : outcome;
}

/* Ends the request: lets go of the session (when no answer did), frees the record, logs. */
static void sreq_end(struct sreq *r, int rc)
{
    sreq_release(r);
    file_conn_log(r->c, r->op, r->has_rec ? r->rec.filename : NULL, r->got, rc, r->start_ms);
    if (r->has_rec)
        file_session_record_free(&r->rec);
    r->has_rec = 0;
}

/* Reads the request's "session" into r->id; SG_OK or SG_ERR_INVALID (not answered). */
static int request_id(struct sreq *r, const json_t *req)
{
    const char *id = sg_header_str(req, "session");
    if (!file_session_id_valid(id))
        return SG_ERR_INVALID;
    memcpy(r->id, id, FILE_SESSION_ID_HEX + 1);
    return SG_OK;
}

/* Reads the optional digests of the body (sha256, md5, sha1 in hex); SG_OK or SG_ERR_INVALID. */
static int request_digests(const json_t *req, struct want_digests *w)
{
    memset(w, 0, sizeof *w);
    if (file_conn_request_digest(req, "sha256", SG_SHA256_HEX - 1, &w->sha256) != SG_OK ||
        file_conn_request_digest(req, "md5", SG_MD5_HEX - 1, &w->md5) != SG_OK ||
        file_conn_request_digest(req, "sha1", SG_SHA1_HEX - 1, &w->sha1) != SG_OK)
        return SG_ERR_INVALID;
    w->algs = (w->sha256 ? SG_HASH_SHA256 : 0) | (w->md5 ? SG_HASH_MD5 : 0) | (w->sha1 ? SG_HASH_SHA1 : 0);
    return SG_OK;
}

/*
 * Claims r->id, reads its record and opens its data. SG_OK, or an sg_err
 * value (SG_ERR_LOCKED, SG_ERR_NOT_FOUND: missing or expired, in which case
 * an expired session is removed now) with why in why.
 */
static int open_session(struct sreq *r, char *why, size_t whylen)
{
    int rc = file_session_claim(r->ss, r->id, &r->live);
    if (rc == SG_ERR_LOCKED) {
        snprintf(why, whylen, "upload session %s is in use by another request; try again when it is done", r->id);
        return rc;
    }
    if (rc != SG_OK) {
        snprintf(why, whylen, "cannot take upload session %s: %s", r->id, sg_strerror(rc));
        return rc;
    }
    rc = file_session_record_read(r->ss, r->id, &r->rec);
    r->has_rec = rc == SG_OK;
    if (rc == SG_OK)
        rc = file_session_open_data(r->ss, r->id, &r->fd, &r->sb);
    if (rc == SG_OK && file_session_expires(r->ss, &r->sb) <= (int64_t)time(NULL)) {
        /* Expired and not yet swept: it is gone for every request from now on. */
        file_session_remove(r->ss, r->id);
        r->is_gone = 1;
        rc = SG_ERR_NOT_FOUND;
    }
    if (rc == SG_ERR_NOT_FOUND)
        snprintf(why, whylen, "no upload session %s (never made, finished, aborted or expired)", r->id);
    else if (rc != SG_OK)
        snprintf(why, whylen, "upload session %s cannot be read: %s", r->id, sg_strerror(rc));
    return rc;
}

/* Adds the fields every success answer about a live session carries. */
static void describe(struct sreq *r, json_t *h, uint64_t offset)
{
    json_object_set_new(h, "session", json_string(r->id));
    json_object_set_new(h, "offset", json_integer((json_int_t)offset));
    if (r->rec.has_length)
        json_object_set_new(h, "length", json_integer((json_int_t)r->rec.length));
    /* Unix milliseconds, as every time the services give (docs/protocol.md, "Times"). */
    json_object_set_new(h, "expires_ms", json_integer((json_int_t)file_session_expires(r->ss, &r->sb) * 1000));
}

/*
 * Makes the session's data the file r->rec.filename, exactly as an upload's
 * commit does, and ends the session. The sha256 is the running one when it
 * covers every byte, else it is computed from the data (the running hash was
 * lost: a restart, a failed write). Answers either way; returns the outcome
 * with *rc the result.
 */
static int finish(struct sreq *r, int *rc)
{
    struct file_store *st = &r->c->srv->store;
    struct file_condition cond = {.must_not_exist = r->rec.must_not_exist,
                                  .must_exist = r->rec.must_exist,
                                  .sha256 = r->rec.if_match[0] ? r->rec.if_match : NULL};
    struct stat sb;
    struct sg_hash copy;
    char sha[SG_SHA256_HEX], data_name[64], why[256];
    uint64_t size;
    int existed = 0;
    json_t *h;

    if (fstat(r->fd, &r->sb) != 0) {
        *rc = file_store_errno(errno);
        return reply_error(r, *rc, "upload session %s: %s", r->id, strerror(errno));
    }
    size = (uint64_t)r->sb.st_size;
    if (r->live->has_hash && r->live->hashed == size && sg_hash_copy(&copy, &r->live->hash) == SG_OK) {
        sg_hash_final(&copy, sha, NULL); /* a copy: should the commit fail, the running hash stays */
    } else {
        *rc = file_session_hash_data(r->fd, size, sha);
        if (*rc != SG_OK)
            return reply_error(r, *rc, "upload session %s: reading its bytes back failed: %s", r->id,
                               sg_strerror(*rc));
    }
    file_session_data_name(r->id, data_name, sizeof data_name);
    *rc = file_store_commit_at(st, r->fd, r->ss->dir_fd, data_name, r->rec.filename, &cond, &existed, &sb, why,
                               sizeof why);
    if (*rc != SG_OK)
        return reply_error(r, *rc,
                           "storing %s failed: %s; nothing stored, the upload is kept (finish it again, or abort it)",
                           r->rec.filename, why);
    file_store_meta_put(st, r->rec.filename, &sb, sha);
    file_session_remove_record(r->ss, r->id);
    r->is_gone = 1;
    h = json_pack("{s:s, s:b, s:s, s:I, s:I, s:I, s:s, s:b}", "session", r->id, "finished", 1, "name",
                  r->rec.filename, "size", (json_int_t)size, "offset", (json_int_t)size, "length",
                  (json_int_t)size, "sha256", sha, "created", !existed);
    return reply(r, h);
}

/* Compares the digests the client sent with what its bytes hash to; the first that differs goes into why. */
static int digests_match(const struct want_digests *w, struct sg_hash *got, char *why, size_t whylen)
{
    char sha256[SG_SHA256_HEX] = "", md5[SG_MD5_HEX] = "", sha1[SG_SHA1_HEX] = "";
    sg_hash_final_all(got, sha256, md5, sha1);
    if (w->sha256 && strcasecmp(w->sha256, sha256) != 0)
        snprintf(why, whylen, "sha256 of these bytes is %s, not %s", sha256, w->sha256);
    else if (w->md5 && strcasecmp(w->md5, md5) != 0)
        snprintf(why, whylen, "md5 of these bytes is %s, not %s", md5, w->md5);
    else if (w->sha1 && strcasecmp(w->sha1, sha1) != 0)
        snprintf(why, whylen, "sha1 of these bytes is %s, not %s", sha1, w->sha1);
    else
        return 1;
    return 0;
}

/*
 * Cuts the data back to offset and the running hash back to checkpoint
 * (NULL: there was none), dropping bytes that failed or could not be
 * checked. On failure the bytes stay and the running hash is dropped.
 */
static void roll_back(struct sreq *r, uint64_t offset, struct sg_hash *checkpoint, int has_checkpoint)
{
    if (ftruncate(r->fd, (off_t)offset) != 0) {
        sg_warn("upload session %s: cannot drop unverified bytes past %llu: %s", r->id, (unsigned long long)offset,
                strerror(errno));
        file_session_drop_hash(r->live);
        return;
    }
    if (has_checkpoint) {
        sg_hash_free(&r->live->hash);
        r->live->hash = *checkpoint;
        memset(checkpoint, 0, sizeof *checkpoint);
        r->live->hashed = offset;
    }
}

/*
 * Receives the request's body (size bytes) into the session at offset
 * (its current end), feeding the running sha256 while the appends are
 * contiguous, and checking the body's own digests when given: bytes that do
 * not match them, or that a broken connection left unverifiable, are
 * dropped. Without digests a broken connection keeps every byte that
 * arrived. Returns SG_OK (nothing answered yet), or an sg_err value with
 * *outcome set (answered, or FILE_CLOSE).
 */
static int append_body(struct sreq *r, uint64_t offset, uint64_t size, const struct want_digests *w, int *outcome)
{
    struct file_session_live *l = r->live;
    struct sg_hash check = {0}, checkpoint = {0};
    struct file_body body = {.c = r->c, .fd = r->fd, .size = size,
                             .whole_size = r->rec.has_length ? r->rec.length : r->c->srv->max_size};
    int rc, has_checkpoint = 0;
    char why[256];

    *outcome = FILE_NEXT;
    if (lseek(r->fd, (off_t)offset, SEEK_SET) < 0) {
        rc = file_store_errno(errno);
        *outcome = refuse(r, size, rc, "upload session %s: %s", r->id, strerror(errno));
        return rc;
    }
    /* The running hash goes on only where it stopped; from byte 0 it can always start. */
    if (l->has_hash && l->hashed != offset)
        file_session_drop_hash(l);
    if (!l->has_hash && offset == 0 && sg_hash_init(&l->hash, 0) == SG_OK) {
        l->has_hash = 1;
        l->hashed = 0;
    }
    if (w->algs) {
        rc = sg_hash_start(&check, w->algs);
        if (rc != SG_OK) {
            *outcome = refuse(r, size, rc, "out of memory");
            return rc;
        }
        /* Bytes that fail their check are dropped: the running hash must be able to forget them too. */
        if (l->has_hash) {
            has_checkpoint = sg_hash_copy(&checkpoint, &l->hash) == SG_OK;
            if (!has_checkpoint)
                file_session_drop_hash(l);
        }
    }
    body.hash[0] = l->has_hash ? &l->hash : NULL;
    body.hash[1] = w->algs ? &check : NULL;
    file_body_start(&body);
    rc = file_body_receive(&body);
    file_body_end(&body);
    /* The expiry counts from the last request that touched the session, even an empty one. */
    futimens(r->fd, NULL);
    r->got = body.got;
    if (rc == SG_OK && w->algs && !digests_match(w, &check, why, sizeof why)) {
        roll_back(r, offset, &checkpoint, has_checkpoint);
        r->got = 0;
        rc = SG_ERR_CHUNK_CHECKSUM;
        *outcome = reply_error(r, rc, "%s; the %llu bytes were not kept", why, (unsigned long long)size);
    } else if (rc == FILE_BODY_WRITE_FAILED) {
        int err = body.write_errno;
        rc = file_store_errno(err);
        /* The hashes hold bytes the file may not: only a cut back to a checkpoint restores them. */
        if (w->algs)
            roll_back(r, offset, &checkpoint, has_checkpoint);
        else
            file_session_drop_hash(l);
        *outcome = reply_error(r, rc, "writing upload session %s failed after %llu bytes: %s", r->id,
                               (unsigned long long)body.got, strerror(err));
        if (*outcome == FILE_NEXT)
            *outcome = file_conn_skip_body(r->c, size - body.got);
    } else if (rc != SG_OK) {
        /* The connection broke: what arrived is kept unless it was to be checked. */
        if (w->algs) {
            roll_back(r, offset, &checkpoint, has_checkpoint);
            r->got = 0;
        } else if (l->has_hash) {
            l->hashed = offset + body.got;
        }
        *outcome = FILE_CLOSE;
    } else if (l->has_hash) {
        l->hashed = offset + size;
    }
    /* An answer sent above has let go of the session: l may be gone. */
    sg_hash_free(&check);
    sg_hash_free(&checkpoint);
    return rc;
}

/* After a successful append: finishes the session when its last byte came, else answers where it stands. */
static int after_append(struct sreq *r, int *rc)
{
    json_t *h;
    if (fstat(r->fd, &r->sb) != 0) {
        *rc = file_store_errno(errno);
        return reply_error(r, *rc, "upload session %s: %s", r->id, strerror(errno));
    }
    if (r->rec.has_length && (uint64_t)r->sb.st_size == r->rec.length)
        return finish(r, rc);
    h = json_pack("{s:b}", "finished", 0);
    if (h)
        describe(r, h, (uint64_t)r->sb.st_size);
    return reply(r, h);
}

/*
 * Checks that size more bytes at offset fit the session's length (or, when
 * deferred, the largest upload) and the disk. SG_OK, or the error with why.
 */
static int check_room(struct sreq *r, uint64_t offset, uint64_t size, char *why, size_t whylen)
{
    uint64_t limit = r->rec.has_length ? r->rec.length : r->c->srv->max_size;
    uint64_t free_bytes = file_store_free_bytes(&r->c->srv->store);
    if (size > limit || offset > limit - size) {
        snprintf(why, whylen, "this append would end at byte %llu; the upload %s %llu bytes",
                 (unsigned long long)(offset + size), r->rec.has_length ? "is" : "may be at most",
                 (unsigned long long)limit);
        return SG_ERR_TOO_LARGE;
    }
    if (size > free_bytes) {
        snprintf(why, whylen, "this append is %llu bytes; the disk has %llu free", (unsigned long long)size,
                 (unsigned long long)free_bytes);
        return SG_ERR_NO_SPACE;
    }
    return SG_OK;
}

int file_op_session_create(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct sreq r = {.c = c, .ss = &c->srv->sessions, .op = "session_create", .fd = -1, .start_ms = sg_now_ms()};
    const json_t *meta = json_object_get(req, "metadata"), *defer = json_object_get(req, "defer_length");
    struct file_condition cond;
    struct want_digests w;
    const char *name = NULL;
    int64_t length = -1;
    int outcome = FILE_NEXT, rc;
    char why[256];

    rc = file_conn_request_name(c, req, &name);
    if (rc != SG_OK) {
        outcome = file_conn_skip_body(c, body_size);
        goto out;
    }
    rc = sg_header_int(req, "length", 0, (int64_t)SG_FRAME_MAX_BODY, &length);
    if ((rc == SG_ERR_NOT_FOUND) == !json_is_true(defer) || (defer && !json_is_boolean(defer)) ||
        (rc != SG_OK && rc != SG_ERR_NOT_FOUND)) {
        rc = SG_ERR_INVALID;
        outcome = refuse(&r, body_size, rc,
                         "give either length (an integer from 0 to 2^53) or defer_length: true, not both");
        goto out;
    }
    if (meta && (!json_is_string(meta) || json_string_length(meta) > FILE_SESSION_METADATA_MAX ||
                 strlen(json_string_value(meta)) != json_string_length(meta))) {
        rc = SG_ERR_INVALID;
        outcome = refuse(&r, body_size, rc, "metadata must be a string of at most %u bytes without NUL",
                         FILE_SESSION_METADATA_MAX);
        goto out;
    }
    if (request_digests(req, &w) != SG_OK) {
        rc = SG_ERR_INVALID;
        outcome = refuse(&r, body_size, rc, "sha256 must be 64, md5 32 and sha1 40 hex digits");
        goto out;
    }
    rc = file_conn_request_condition(req, &cond, why, sizeof why);
    /* Checked now so a condition that fails costs no upload; it is checked again at the finish. */
    if (rc == SG_OK)
        rc = file_store_check(&c->srv->store, name, &cond, NULL, why, sizeof why);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "%s", why);
        goto out;
    }
    memset(&r.rec, 0, sizeof r.rec);
    r.has_rec = 1;
    snprintf(r.rec.filename, sizeof r.rec.filename, "%s", name);
    r.rec.has_length = length >= 0;
    r.rec.length = length >= 0 ? (uint64_t)length : 0;
    r.rec.created = (int64_t)time(NULL);
    r.rec.must_not_exist = cond.must_not_exist;
    r.rec.must_exist = cond.must_exist;
    if (cond.sha256)
        snprintf(r.rec.if_match, sizeof r.rec.if_match, "%s", cond.sha256);
    if (meta && !(r.rec.metadata = strdup(json_string_value(meta)))) {
        rc = SG_ERR_NOMEM;
        outcome = refuse(&r, body_size, rc, "out of memory");
        goto out;
    }
    if (length > (int64_t)c->srv->max_size) {
        rc = SG_ERR_TOO_LARGE;
        outcome = refuse(&r, body_size, rc, "the upload is %lld bytes; this server takes at most %llu",
                         (long long)length, (unsigned long long)c->srv->max_size);
        goto out;
    }
    rc = check_room(&r, 0, body_size, why, sizeof why);
    if (rc == SG_OK && length > 0 && (uint64_t)length > file_store_free_bytes(&c->srv->store)) {
        rc = SG_ERR_NO_SPACE;
        snprintf(why, sizeof why, "the upload is %lld bytes; the disk has %llu free", (long long)length,
                 (unsigned long long)file_store_free_bytes(&c->srv->store));
    }
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "%s", why);
        goto out;
    }
    rc = file_sessions_reserve(r.ss);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "%u unfinished uploads are kept already; finish or abort some first",
                         r.ss->max);
        goto out;
    }
    rc = file_session_new_id(r.id);
    if (rc == SG_OK)
        rc = file_session_claim(r.ss, r.id, &r.live);
    if (rc == SG_OK)
        rc = file_session_create(r.ss, r.id, &r.rec, &r.fd);
    if (rc != SG_OK) {
        /* Nothing of it is on disk: give its place back. */
        file_session_release(r.ss, r.live, 1, 0);
        r.live = NULL;
        file_sessions_unreserve(r.ss);
        r.id[0] = '\0';
        outcome = refuse(&r, body_size, rc, "cannot create the upload session: %s",
                         rc == SG_ERR_SYS ? strerror(errno) : sg_strerror(rc));
        goto out;
    }
    if (fstat(r.fd, &r.sb) != 0)
        memset(&r.sb, 0, sizeof r.sb);
    /* creation-with-upload: the first bytes come with the request. */
    rc = append_body(&r, 0, body_size, &w, &outcome);
    if (rc == SG_OK)
        outcome = after_append(&r, &rc);
out:
    sreq_end(&r, rc);
    return outcome;
}

int file_op_session_append(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct sreq r = {.c = c, .ss = &c->srv->sessions, .op = "session_append", .fd = -1, .start_ms = sg_now_ms()};
    struct want_digests w;
    int64_t offset = -1, length = -1;
    int outcome = FILE_NEXT, rc, rc_len;
    char why[256];

    rc = request_id(&r, req);
    if (rc == SG_OK)
        rc = sg_header_int(req, "offset", 0, (int64_t)SG_FRAME_MAX_BODY, &offset);
    rc_len = sg_header_int(req, "length", 0, (int64_t)SG_FRAME_MAX_BODY, &length);
    if (rc != SG_OK || (rc_len != SG_OK && rc_len != SG_ERR_NOT_FOUND) || request_digests(req, &w) != SG_OK) {
        r.id[0] = '\0';
        rc = SG_ERR_INVALID;
        outcome = refuse(&r, body_size, rc,
                         "session_append needs session (32 lower-case hex digits) and offset (an integer from 0 to "
                         "2^53); length, when given, is such an integer; sha256, md5 and sha1 are 64, 32 and 40 hex "
                         "digits");
        goto out;
    }
    rc = open_session(&r, why, sizeof why);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "%s", why);
        goto out;
    }
    if ((uint64_t)offset != (uint64_t)r.sb.st_size) {
        rc = SG_ERR_CONFLICT;
        outcome = refuse(&r, body_size, rc, "upload session %s is at byte %llu, not %lld; nothing written", r.id,
                         (unsigned long long)r.sb.st_size, (long long)offset);
        goto out;
    }
    if (length >= 0 && r.rec.has_length && (uint64_t)length != r.rec.length) {
        rc = SG_ERR_INVALID;
        outcome = refuse(&r, body_size, rc, "the upload's length is %llu already, not %lld",
                         (unsigned long long)r.rec.length, (long long)length);
        goto out;
    }
    if (length >= 0 && !r.rec.has_length) {
        if ((uint64_t)length < (uint64_t)offset + body_size || (uint64_t)length > c->srv->max_size) {
            rc = (uint64_t)length > c->srv->max_size ? SG_ERR_TOO_LARGE : SG_ERR_INVALID;
            outcome = refuse(&r, body_size, rc, "length %lld must be from %llu (the bytes so far and these) to %llu",
                             (long long)length, (unsigned long long)((uint64_t)offset + body_size),
                             (unsigned long long)c->srv->max_size);
            goto out;
        }
        r.rec.has_length = 1;
        r.rec.length = (uint64_t)length;
        rc = file_session_record_write(r.ss, r.id, &r.rec);
        if (rc != SG_OK) {
            outcome = refuse(&r, body_size, rc, "cannot record the upload's length: %s", sg_strerror(rc));
            goto out;
        }
    }
    rc = check_room(&r, (uint64_t)offset, body_size, why, sizeof why);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "%s", why);
        goto out;
    }
    rc = append_body(&r, (uint64_t)offset, body_size, &w, &outcome);
    if (rc == SG_OK)
        outcome = after_append(&r, &rc);
out:
    sreq_end(&r, rc);
    return outcome;
}

int file_op_session_finish(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct sreq r = {.c = c, .ss = &c->srv->sessions, .op = "session_finish", .fd = -1, .start_ms = sg_now_ms()};
    int outcome = FILE_NEXT, rc;
    char why[256];

    rc = request_id(&r, req);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "session must be 32 lower-case hex digits");
        goto out;
    }
    rc = open_session(&r, why, sizeof why);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "%s", why);
        goto out;
    }
    if (r.rec.has_length && (uint64_t)r.sb.st_size != r.rec.length) {
        rc = SG_ERR_INVALID;
        outcome = refuse(&r, body_size, rc, "only %llu of the upload's %llu bytes have arrived",
                         (unsigned long long)r.sb.st_size, (unsigned long long)r.rec.length);
        goto out;
    }
    if (!r.rec.has_length) {
        /* A deferred length ends where the bytes do. */
        r.rec.has_length = 1;
        r.rec.length = (uint64_t)r.sb.st_size;
        rc = file_session_record_write(r.ss, r.id, &r.rec);
        if (rc != SG_OK) {
            outcome = refuse(&r, body_size, rc, "cannot record the upload's length: %s", sg_strerror(rc));
            goto out;
        }
    }
    outcome = finish(&r, &rc);
    if (outcome == FILE_NEXT)
        outcome = file_conn_skip_body(c, body_size);
out:
    sreq_end(&r, rc);
    return outcome;
}

int file_op_session_abort(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct sreq r = {.c = c, .ss = &c->srv->sessions, .op = "session_abort", .fd = -1, .start_ms = sg_now_ms()};
    int outcome = FILE_NEXT, rc;
    char why[256];

    rc = request_id(&r, req);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "session must be 32 lower-case hex digits");
        goto out;
    }
    rc = open_session(&r, why, sizeof why);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "%s", why);
        goto out;
    }
    file_session_remove(r.ss, r.id);
    r.is_gone = 1;
    outcome = reply(&r, json_pack("{s:s, s:b}", "session", r.id, "aborted", 1));
    if (outcome == FILE_NEXT)
        outcome = file_conn_skip_body(c, body_size);
out:
    sreq_end(&r, rc);
    return outcome;
}

int file_op_session_stat(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct sreq r = {.c = c, .ss = &c->srv->sessions, .op = "session_stat", .fd = -1, .start_ms = sg_now_ms()};
    int outcome = FILE_NEXT, rc;
    json_t *h;

    rc = request_id(&r, req);
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, "session must be 32 lower-case hex digits");
        goto out;
    }
    /* No claim: a stat during an append sees the bytes written so far. */
    rc = file_session_record_read(r.ss, r.id, &r.rec);
    r.has_rec = rc == SG_OK;
    if (rc == SG_OK)
        rc = file_session_stat_data(r.ss, r.id, &r.sb);
    if (rc == SG_OK && file_session_expires(r.ss, &r.sb) <= (int64_t)time(NULL))
        rc = SG_ERR_NOT_FOUND;
    if (rc != SG_OK) {
        outcome = refuse(&r, body_size, rc, rc == SG_ERR_NOT_FOUND
                                                ? "no upload session %s (never made, finished, aborted or expired)"
                                                : "upload session %s cannot be read",
                         r.id);
        goto out;
    }
    h = json_pack("{s:s, s:b, s:I}", "filename", r.rec.filename, "defer_length", !r.rec.has_length, "created_ms",
                  (json_int_t)r.rec.created * 1000);
    if (h) {
        describe(&r, h, (uint64_t)r.sb.st_size);
        if (r.rec.metadata)
            json_object_set_new(h, "metadata", json_string(r.rec.metadata));
    }
    outcome = reply(&r, h);
    if (outcome == FILE_NEXT)
        outcome = file_conn_skip_body(c, body_size);
out:
    sreq_end(&r, rc);
    return outcome;
}
