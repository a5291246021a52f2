/* reply.c - building and sending the frame that answers an exec request. */
#include "reply.h"

#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/text.h"

/* Waits until the client can take more bytes; SG_OK, SG_ERR_TIMEOUT, or SG_ERR_CLOSED when the server stops. */
static int wait_writable(struct exec_conn *c, int64_t deadline_ms)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = c->fd, .events = POLLOUT}, {.fd = c->srv->stop_fd, .events = POLLIN}};
        int64_t left = deadline_ms - sg_now_ms();
        if (left <= 0)
            return SG_ERR_TIMEOUT;
        if (poll(p, 2, left > 60000 ? 60000 : (int)left) < 0) {
            if (errno == EINTR)
                continue;
            return SG_ERR_SYS;
        }
        if (p[1].revents)
            return SG_ERR_CLOSED;
        if (p[0].revents)
            return SG_OK;
    }
}

/* Sends every byte of iov[0..cnt) (the array is consumed), waiting while the socket is full. */
static int send_iov(struct exec_conn *c, struct iovec *iov, int cnt)
{
    int64_t deadline = sg_now_ms() + EXEC_IO_TIMEOUT_MS;
    while (cnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t n;
        if (iov[0].iov_len == 0) {
            iov++;
            cnt--;
            continue;
        }
        n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            int rc;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return (errno == EPIPE || errno == ECONNRESET) ? SG_ERR_CLOSED : SG_ERR_SYS;
            rc = wait_writable(c, deadline);
            if (rc != SG_OK)
                return rc;
            continue;
        }
        while (n > 0 && cnt > 0) {
            size_t step = (size_t)n < iov[0].iov_len ? (size_t)n : iov[0].iov_len;
            if (step > 0) /* an empty segment may have a NULL base: no arithmetic on it */
                iov[0].iov_base = (char *)iov[0].iov_base + step;
            iov[0].iov_len -= step;
            n -= (ssize_t)step;
            if (iov[0].iov_len == 0) {
                iov++;
                cnt--;
            }
        }
    }
    return SG_OK;
}

/* Writes the md5 of a then b as lower-case hex into hex (SG_MD5_HEX bytes); empty string on failure. */
static void md5_hex(const void *a, size_t alen, const void *b, size_t blen, char hex[33])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    hex[0] = '\0';
    if (ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
        EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == 16)
        sg_hex_encode(digest, dlen, hex);
    EVP_MD_CTX_free(ctx);
}

/*
 * Marks a last reply of a draining server with "close": true (docs/protocol.md),
 * so the client never sends another request on a connection about to close.
 */
static int mark_closing(struct exec_conn *c, json_t *hdr)
{
    if (!atomic_load_explicit(&c->srv->is_draining, memory_order_relaxed))
        return SG_OK;
    c->is_closing = 1;
    return json_object_set_new(hdr, "close", json_true()) == 0 ? SG_OK : SG_ERR_NOMEM;
}

/* Adds the size and digest fields every exec response carries, then sends header and body. */
static int send_frame(struct exec_conn *c, json_t *hdr, const uint8_t *out, size_t out_len, const uint8_t *err,
                      size_t err_len)
{
    uint8_t *head = NULL;
    size_t head_len = 0;
    char md5[33];
    struct iovec iov[3];
    int rc;

    md5_hex(out, out_len, err, err_len, md5);
    if (json_object_set_new(hdr, "total_size", json_integer((json_int_t)(out_len + err_len))) != 0 ||
        json_object_set_new(hdr, "stdout_size", json_integer((json_int_t)out_len)) != 0 ||
        json_object_set_new(hdr, "stderr_size", json_integer((json_int_t)err_len)) != 0 ||
        json_object_set_new(hdr, "md5", json_string(md5)) != 0 || mark_closing(c, hdr) != SG_OK)
        return SG_ERR_NOMEM;
    rc = sg_frame_encode_header(hdr, 0, &head, &head_len);
    if (rc != SG_OK)
        return rc;
    iov[0] = (struct iovec){.iov_base = head, .iov_len = head_len};
    iov[1] = (struct iovec){.iov_base = (void *)out, .iov_len = out_len};
    iov[2] = (struct iovec){.iov_base = (void *)err, .iov_len = err_len};
    rc = send_iov(c, iov, 3);
    free(head);
    return rc;
}

int exec_reply_result(struct exec_conn *c, const struct exec_request *rq, const struct exec_result *res)
{
    json_t *hdr = json_object();
    int exit_code = -1, rc = SG_ERR_NOMEM;

    if (!hdr)
        return SG_ERR_NOMEM;
    if (res->status != -1 && WIFEXITED(res->status)) {
        exit_code = WEXITSTATUS(res->status);
    } else if (res->status != -1 && WIFSIGNALED(res->status)) {
        exit_code = 128 + WTERMSIG(res->status); /* what a shell reports for a killed command */
        if (json_object_set_new(hdr, "signal", json_integer(WTERMSIG(res->status))) != 0)
            goto out;
    }
    if ((rq->id && json_object_set(hdr, "id", rq->id) != 0) ||
        json_object_set_new(hdr, "exit_code", json_integer(exit_code)) != 0 ||
        json_object_set_new(hdr, "timed_out", json_boolean(res->timed_out)) != 0 ||
        json_object_set_new(hdr, "truncated", json_boolean(res->truncated)) != 0 ||
        json_object_set_new(hdr, "duration_ms", json_integer(res->duration_ms)) != 0)
        goto out;
    rc = send_frame(c, hdr, res->out.data, res->out.len, res->err.data, res->err.len);
out:
    json_decref(hdr);
    return rc;
}

int exec_reply_error(struct exec_conn *c, const json_t *id, int err, const char *message, int exit_code)
{
    json_t *hdr = sg_frame_error_header(err, message, NULL);
    size_t len = strlen(message);
    char *body = malloc(len + 1);
    int rc = SG_ERR_NOMEM;

    if (!hdr || !body)
        goto out;
    memcpy(body, message, len);
    body[len] = '\n';
    if ((id && json_object_set(hdr, "id", (json_t *)id) != 0) ||
        (exit_code >= 0 && json_object_set_new(hdr, "exit_code", json_integer(exit_code)) != 0))
        goto out;
    rc = send_frame(c, hdr, NULL, 0, (const uint8_t *)body, len + 1);
out:
    free(body);
    json_decref(hdr);
    return rc;
}

/* Fills exit_code (128 + signal when killed, as a shell reports) and signal from a wait status into hdr. */
static int set_exit(json_t *hdr, int status)
{
    int exit_code = -1;
    if (status != -1 && WIFEXITED(status)) {
        exit_code = WEXITSTATUS(status);
    } else if (status != -1 && WIFSIGNALED(status)) {
        exit_code = 128 + WTERMSIG(status);
        if (json_object_set_new(hdr, "signal", json_integer(WTERMSIG(status))) != 0)
            return SG_ERR_NOMEM;
    }
    return json_object_set_new(hdr, "exit_code", json_integer(exit_code)) == 0 ? SG_OK : SG_ERR_NOMEM;
}

int exec_reply_stream_exit(struct exec_conn *c, const struct exec_request *rq, const struct exec_result *res)
{
    json_t *hdr = json_pack("{s:s, s:b, s:I}", "event", "exit", "timed_out", res->timed_out, "duration_ms",
                            (json_int_t)res->duration_ms);
    uint8_t *head = NULL;
    size_t head_len = 0;
    struct iovec iov[1];
    int rc = SG_ERR_NOMEM;
    if (!hdr || set_exit(hdr, res->status) != SG_OK || (rq->id && json_object_set(hdr, "id", rq->id) != 0) ||
        mark_closing(c, hdr) != SG_OK)
        goto out;
    rc = sg_frame_encode_header(hdr, 0, &head, &head_len);
    if (rc != SG_OK)
        goto out;
    iov[0] = (struct iovec){.iov_base = head, .iov_len = head_len};
    rc = send_iov(c, iov, 1);
out:
    free(head);
    json_decref(hdr);
    return rc;
}

int exec_stream_header(const json_t *id, const char *event, size_t body_len, uint8_t **out, size_t *out_len)
{
    json_t *hdr = json_pack("{s:s, s:I}", "event", event, "total_size", (json_int_t)body_len);
    int rc = SG_ERR_NOMEM;
    if (hdr && (!id || json_object_set(hdr, "id", (json_t *)id) == 0))
        rc = sg_frame_encode_header(hdr, 0, out, out_len);
    json_decref(hdr);
    return rc;
}

int exec_reply_ping(struct exec_conn *c, const json_t *id)
{
    json_t *hdr = json_pack("{s:s}", "service", "exec");
    int rc = SG_ERR_NOMEM;
    if (hdr && (!id || json_object_set(hdr, "id", (json_t *)id) == 0))
        rc = send_frame(c, hdr, NULL, 0, NULL, 0);
    json_decref(hdr);
    return rc;
}

void exec_quote(const char *s, char *out, size_t outlen)
{
    size_t used = 0;
    if (outlen < 8) {
        if (outlen)
            out[0] = '\0';
        return;
    }
    out[used++] = '\'';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        /* Room for "\xNN", the closing quote, "..." and the NUL. */
        if (used + 4 + 1 + 3 + 1 > outlen) {
            memcpy(out + used, "...", 3);
            used += 3;
            break;
        }
        if (*p >= 0x20 && *p < 0x7f && *p != '\'' && *p != '\\')
            out[used++] = (char)*p;
        else
            used += (size_t)snprintf(out + used, outlen - used, "\\x%02x", *p);
    }
    out[used++] = '\'';
    out[used] = '\0';
}

void exec_log_result(const struct exec_conn *c, const struct exec_allowed *cmd, const struct exec_request *rq,
                     const struct exec_result *res)
{
    int noteworthy = res->timed_out || res->truncated;
    json_t *f = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b, s:b}", "peer", c->peer, "command", cmd->name, "args",
                          (json_int_t)rq->argc, "output", (json_int_t)(res->out.len + res->err.len), "duration_ms",
                          (json_int_t)res->duration_ms, "timed_out", res->timed_out, "truncated", res->truncated);
    if (f)
        sg_log_fields(noteworthy ? SG_LOG_INFO : SG_LOG_DEBUG, "command finished", f);
    json_decref(f);
}
