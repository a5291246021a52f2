/* conn.c - one connection's thread: read a request, dispatch it, reply; helpers every handler shares. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "name.h"
#include "sockgate/drain.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

/* How much a closing connection reads from a client still sending, so it can read our last reply. */
#define LINGER_MAX_BYTES (UINT64_C(16) << 20)
#define LINGER_MAX_MS 2000

static int64_t deadline(int64_t timeout_ms)
{
    return timeout_ms < 0 ? -1 : sg_now_ms() + timeout_ms;
}

void file_conn_mark_closing(struct file_conn *c, json_t *header)
{
    if (!atomic_load_explicit(&c->srv->is_draining, memory_order_relaxed))
        return;
    c->is_closing = 1; /* even when the mark does not fit: the client then sees EOF, as after any idle close */
    json_object_set_new(header, "close", json_true());
}

int file_conn_reply(struct file_conn *c, json_t *header)
{
    int rc;
    if (!header)
        return FILE_CLOSE;
    if (c->id)
        json_object_set(header, "id", (json_t *)c->id);
    file_conn_mark_closing(c, header);
    rc = sg_frame_send(c->fd, header, NULL, 0, deadline(c->srv->io_timeout_ms));
    json_decref(header);
    /* A client that never reads (the tutorial's) has gone: its upload is already committed. */
    return rc == SG_OK ? FILE_NEXT : FILE_CLOSE;
}

int file_conn_reply_error(struct file_conn *c, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return file_conn_reply(c, sg_frame_error_header(err, msg, NULL));
}

int file_conn_next(struct file_conn *c, enum sg_frame_event *ev, const uint8_t **chunk, size_t *len)
{
    return sg_frame_reader_next(c->rd, ev, chunk, len, deadline(c->srv->io_timeout_ms));
}

int file_conn_skip_body(struct file_conn *c, uint64_t left)
{
    enum sg_frame_event ev = SG_FRAME_NEED_MORE;
    const uint8_t *chunk;
    size_t len;
    if (left > FILE_DRAIN_MAX) {
        c->linger = 1;
        return FILE_CLOSE;
    }
    while (ev != SG_FRAME_END)
        if (file_conn_next(c, &ev, &chunk, &len) != SG_OK)
            return FILE_CLOSE;
    return FILE_NEXT;
}

int file_conn_request_name(struct file_conn *c, const json_t *req, const char **name)
{
    json_t *v = json_object_get(req, "filename");
    char why[160];
    int rc;
    *name = NULL;
    if (!json_is_string(v)) {
        file_conn_reply_error(c, SG_ERR_INVALID, "filename is %s", v ? "not a string" : "missing");
        return SG_ERR_INVALID;
    }
    /* json_string_length counts every byte, so a NUL inside the string cannot hide the rest. */
    rc = file_name_check(json_string_value(v), json_string_length(v), why, sizeof why);
    if (rc != SG_OK) {
        file_conn_reply_error(c, rc, "invalid filename: %s", why);
        return rc;
    }
    *name = json_string_value(v);
    return SG_OK;
}

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

int file_conn_request_digest(const json_t *req, const char *key, size_t hexlen, const char **out)
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

int file_conn_request_condition(const json_t *req, struct file_condition *cond, char *why, size_t whylen)
{
    const json_t *none = json_object_get(req, "if_none_match"), *match = json_object_get(req, "if_match");
    const char *m = json_string_value(match);
    memset(cond, 0, sizeof *cond);
    if (none) {
        if (!json_is_string(none) || strcmp(json_string_value(none), "*") != 0) {
            snprintf(why, whylen, "if_none_match may only be \"*\" (create only)");
            return SG_ERR_INVALID;
        }
        cond->must_not_exist = 1;
    }
    if (match) {
        if (m && strcmp(m, "*") == 0) {
            cond->must_exist = 1;
        } else if (m && strlen(m) == SG_SHA256_HEX - 1 && strspn(m, "0123456789abcdef") == SG_SHA256_HEX - 1) {
            cond->sha256 = m;
        } else {
            snprintf(why, whylen, "if_match must be \"*\" or a sha256 in 64 lower-case hex digits");
            return SG_ERR_INVALID;
        }
    }
    if (cond->must_not_exist && (cond->must_exist || cond->sha256)) {
        snprintf(why, whylen, "if_none_match and if_match together can never hold");
        return SG_ERR_INVALID;
    }
    return SG_OK;
}

void file_conn_log(struct file_conn *c, const char *op, const char *name, uint64_t bytes, int rc, int64_t start_ms)
{
    json_t *f = json_pack("{s:s, s:s, s:I, s:s, s:I}", "op", op, "peer", c->peer, "bytes", (json_int_t)bytes,
                          "result", rc == SG_OK ? "ok" : sg_err_code(rc), "ms",
                          (json_int_t)(sg_now_ms() - start_ms));
    if (!f)
        return;
    if (name)
        json_object_set_new(f, "name", json_string(name));
    /* A client's mistake (bad name, missing file, wrong checksum) is routine; the server's own failures are not. */
    sg_log_fields(rc == SG_ERR_SYS || rc == SG_ERR_NO_SPACE || rc == SG_ERR_NOMEM || rc == SG_ERR_INTERNAL
                      ? SG_LOG_WARN
                      : SG_LOG_INFO,
                  "request", f);
    json_decref(f);
}

/* Serves one request whose header was just decoded; returns the outcome. */
static int dispatch(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    json_t *opv = json_object_get(req, "op");
    const char *op = opv ? json_string_value(opv) : "upload";
    c->id = json_object_get(req, "id");
    if (!op) {
        file_conn_reply_error(c, SG_ERR_INVALID, "op must be a string");
        return file_conn_skip_body(c, body_size);
    }
    if (strcmp(op, "upload") == 0)
        return file_op_upload(c, req, body_size);
    if (strcmp(op, "download") == 0)
        return file_op_download(c, req, body_size);
    if (strcmp(op, "list") == 0)
        return file_op_list(c, req, body_size);
    if (strcmp(op, "stat") == 0)
        return file_op_stat(c, req, body_size);
    if (strcmp(op, "delete") == 0)
        return file_op_delete(c, req, body_size);
    if (strncmp(op, "session_", 8) == 0) {
        static const struct {
            const char *name;
            int (*fn)(struct file_conn *, const json_t *, uint64_t);
        } ops[] = {{"session_create", file_op_session_create},
                   {"session_append", file_op_session_append},
                   {"session_stat", file_op_session_stat},
                   {"session_finish", file_op_session_finish},
                   {"session_abort", file_op_session_abort}};
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
            if (strcmp(op, ops[i].name) == 0)
                return ops[i].fn(c, req, body_size);
    }
    if (strcmp(op, "ping") == 0) {
        /* Proof that this is the file service (the gateway's /readyz), not merely something framed. */
        if (file_conn_reply(c, json_pack("{s:s}", "service", "file")) != FILE_NEXT)
            return FILE_CLOSE;
        return file_conn_skip_body(c, body_size);
    }
    file_conn_reply_error(c, SG_ERR_INVALID,
                          "unknown op '%.64s' (upload, download, list, stat, delete, ping, session_create, "
                          "session_append, session_stat, session_finish, session_abort)",
                          op);
    return file_conn_skip_body(c, body_size);
}

/*
 * Half-closes and reads what the client still sends, for a bounded time and
 * amount, so the reply we wrote is not destroyed by a reset that closing
 * with unread input would send.
 */
static void linger_close(int fd)
{
    char sink[16384];
    uint64_t total = 0;
    int64_t until = sg_now_ms() + LINGER_MAX_MS;
    shutdown(fd, SHUT_WR);
    while (total < LINGER_MAX_BYTES) {
        size_t got;
        if (sg_read_some(fd, sink, sizeof sink, &got, until) != SG_OK)
            break;
        total += got;
    }
}

static void serve(struct file_conn *c)
{
    for (;;) {
        enum sg_frame_event ev;
        const uint8_t *chunk;
        size_t len;
        int64_t wait = c->srv->idle_timeout_ms;
        int rc;
        /*
         * Between requests a draining server closes the connection (the
         * gateway sees EOF on its idle pooled connection and moves on); a
         * fresh one gets its first request served, since its client may be
         * sending it already.
         */
        if (c->served > 0 && c->rd->off == c->rd->len &&
            sg_drain_wait(c->fd, c->srv->drain_fd, deadline(wait)) != SG_DRAIN_READABLE)
            return;
        rc = sg_frame_reader_next(c->rd, &ev, &chunk, &len, deadline(wait));
        if (rc == SG_ERR_PROTO) {
            c->id = NULL;
            file_conn_reply_error(c, SG_ERR_PROTO, "%s", sg_frame_decoder_error(&c->rd->dec));
            c->linger = 1;
            return;
        }
        if (rc != SG_OK)
            return; /* the client left, or stayed silent past the idle timeout */
        if (ev != SG_FRAME_HEADER)
            return; /* cannot happen: every handler consumes its frame to END */
        if (dispatch(c, sg_frame_decoder_header(&c->rd->dec), sg_frame_decoder_body_size(&c->rd->dec)) != FILE_NEXT ||
            c->is_closing)
            return;
        c->served++;
    }
}

static void *conn_main(void *arg)
{
    struct file_conn *c = arg;
    struct file_server *srv = c->srv;
    sigset_t pipe_set;
    int fd;

    /* sendfile(2) has no MSG_NOSIGNAL: keep SIGPIPE away from this thread whatever the host does. */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    serve(c);
    if (c->linger)
        linger_close(c->fd);
    sg_frame_reader_free(c->rd);
    free(c->rd);
    c->rd = NULL;
    pthread_mutex_lock(&srv->lock);
    fd = c->fd;
    c->fd = -1;
    close(fd);
    c->done = 1;
    srv->nconns--;
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

int file_conn_start(struct file_server *srv, int fd)
{
    struct file_conn *c = calloc(1, sizeof *c);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int rc;

    if (!c)
        return SG_ERR_NOMEM;
    c->rd = malloc(sizeof *c->rd);
    if (!c->rd) {
        free(c);
        return SG_ERR_NOMEM;
    }
    sg_frame_reader_init(c->rd, fd, 0);
    c->srv = srv;
    c->fd = fd;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        sg_addr_format((struct sockaddr *)&ss, sl, c->peer, sizeof c->peer);
    pthread_mutex_lock(&srv->lock);
    rc = pthread_create(&c->thread, NULL, conn_main, c);
    if (rc == 0) {
        c->next = srv->conns;
        srv->conns = c;
        srv->nconns++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (rc != 0) {
        sg_frame_reader_free(c->rd);
        free(c->rd);
        free(c);
        errno = rc;
        return SG_ERR_SYS;
    }
    return SG_OK;
}
