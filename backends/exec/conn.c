/* conn.c - one client connection on its own thread: read a request, run it, answer with one frame. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "argv_split.h"
#include "exec_internal.h"
#include "reply.h"
#include "sockgate/error.h"
#include "sockgate/drain.h"
#include "sockgate/log.h"

/* What reading one request led to. */
enum req_status {
    REQ_OK,    /* rq holds a request */
    REQ_BAD,   /* the request is refused with an error; the connection goes on */
    REQ_FATAL, /* the request is refused with an error; the connection closes after it */
    REQ_CLOSE, /* close without a word: the client left, idled out, or the server stops */
    REQ_PING   /* a framed "ping": answered with the service's name */
};

/* What a wait on the client led to. */
enum wait_status { WAIT_READY, WAIT_TIMEOUT, WAIT_STOP, WAIT_ERROR };

ssize_t exec_conn_recv(struct exec_conn *c)
{
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
    } else if (c->in_off > 0 && c->in_len == sizeof c->in) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_len == sizeof c->in)
        return -3; /* nothing consumed yet: no room to read into */
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            return n;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
    }
}

/* Waits for events on the client until deadline_ms (-1: none) or the server's stop. */
static enum wait_status wait_client(struct exec_conn *c, short events, int64_t deadline_ms)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = c->fd, .events = events}, {.fd = c->srv->stop_fd, .events = POLLIN}};
        int timeout = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - sg_now_ms();
            if (left <= 0)
                return WAIT_TIMEOUT;
            timeout = left > 60000 ? 60000 : (int)left;
        }
        if (poll(p, 2, timeout) < 0) {
            if (errno == EINTR)
                continue;
            return WAIT_ERROR;
        }
        if (p[1].revents)
            return WAIT_STOP;
        if (p[0].revents)
            return WAIT_READY;
    }
}

/* Reads until at least one more byte is buffered: 1 on success, 0 on EOF, -1 on timeout, stop or error. */
static int read_more(struct exec_conn *c, int64_t deadline_ms)
{
    for (;;) {
        ssize_t n = exec_conn_recv(c);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (n == -2 || n == -3 || wait_client(c, POLLIN, deadline_ms) != WAIT_READY)
            return -1;
    }
}

/* Writes why a request failed into err: the code and a message. */
static enum req_status bad(int *code, char *msg, size_t msglen, int err, enum req_status st, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum req_status bad(int *code, char *msg, size_t msglen, int err, enum req_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
    *code = err;
    return st;
}

/* Copies the JSON argv of a framed request into one allocation, as exec_argv_split() does. */
static int argv_from_json(const json_t *arr, struct exec_request *rq, char *msg, size_t msglen)
{
    size_t n = json_array_size(arr), bytes = 0, i;
    char **block, *strings;
    if (!json_is_array(arr) || n == 0 || n > EXEC_SPLIT_MAX_ARGS) {
        snprintf(msg, msglen, "argv must be an array of 1 to %u strings", EXEC_SPLIT_MAX_ARGS);
        return SG_ERR_INVALID;
    }
    for (i = 0; i < n; i++) {
        const json_t *s = json_array_get(arr, i);
        const char *v = json_string_value(s);
        if (!v || strlen(v) != json_string_length(s)) {
            snprintf(msg, msglen, "argv[%zu] must be a string without NUL bytes", i);
            return SG_ERR_INVALID;
        }
        bytes += json_string_length(s) + 1;
    }
    if (json_string_length(json_array_get(arr, 0)) == 0) {
        snprintf(msg, msglen, "argv[0] must not be empty");
        return SG_ERR_INVALID;
    }
    block = malloc((n + 1) * sizeof(char *) + bytes);
    if (!block) {
        snprintf(msg, msglen, "out of memory for argv");
        return SG_ERR_NOMEM;
    }
    strings = (char *)(block + n + 1);
    for (i = 0; i < n; i++) {
        const json_t *s = json_array_get(arr, i);
        size_t len = json_string_length(s);
        block[i] = strings;
        memcpy(strings, json_string_value(s), len + 1);
        strings += len + 1;
    }
    block[n] = NULL;
    rq->argv = block;
    rq->argc = n;
    return SG_OK;
}

/* Fills rq from a framed request's header; the body (stdin) is still on the wire. */
static enum req_status parse_framed(struct exec_conn *c, struct exec_request *rq, int *code, char *msg,
                                    size_t msglen)
{
    const json_t *hdr = sg_frame_decoder_header(&c->dec);
    const json_t *op = json_object_get(hdr, "op");
    int64_t timeout = 0;
    int rc;

    rq->framed = 1;
    rq->id = json_incref(json_object_get(hdr, "id"));
    rq->body_size = sg_frame_decoder_body_size(&c->dec);
    rq->timeout_ms = c->srv->timeout_ms;
    if (rq->body_size > c->srv->max_input)
        return bad(code, msg, msglen, SG_ERR_TOO_LARGE, REQ_FATAL, "stdin of %llu bytes is over the limit of %llu",
                   (unsigned long long)rq->body_size, (unsigned long long)c->srv->max_input);
    if (json_is_string(op) && strcmp(json_string_value(op), "ping") == 0)
        return REQ_PING;
    if (op && (!json_is_string(op) || strcmp(json_string_value(op), "exec") != 0))
        return bad(code, msg, msglen, SG_ERR_INVALID, REQ_BAD, "unknown op: this service runs \"exec\" (and answers \"ping\")");
    {
        const json_t *stream = json_object_get(hdr, "stream");
        if (stream && !json_is_boolean(stream))
            return bad(code, msg, msglen, SG_ERR_INVALID, REQ_BAD, "stream must be true or false");
        rq->is_stream = json_is_true(stream);
    }
    rc = sg_header_int(hdr, "timeout_ms", 1, INT64_MAX, &timeout);
    if (rc == SG_ERR_INVALID)
        return bad(code, msg, msglen, SG_ERR_INVALID, REQ_BAD, "timeout_ms must be a positive integer");
    if (rc == SG_OK)
        rq->timeout_ms = timeout < c->srv->max_timeout_ms ? timeout : c->srv->max_timeout_ms;
    rc = argv_from_json(json_object_get(hdr, "argv"), rq, msg, msglen);
    if (rc != SG_OK) {
        *code = rc;
        return REQ_BAD;
    }
    return REQ_OK;
}

/* Fills rq from a raw command line: the bytes of one read, as the tutorial's client sends them. */
static enum req_status parse_raw(struct exec_conn *c, struct exec_request *rq, int *code, char *msg, size_t msglen)
{
    const char *line = (const char *)c->in + c->in_off;
    size_t len = c->in_len - c->in_off;
    int rc;

    c->in_off = c->in_len;
    /* One line terminator is the end of the line, not part of it (a terminal or netcat adds it). */
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    rq->timeout_ms = c->srv->timeout_ms;
    rc = exec_argv_split(line, len, &rq->argv, &rq->argc, msg, msglen);
    if (rc != SG_OK) {
        *code = rc;
        return REQ_BAD;
    }
    if (rq->argc == 0)
        return bad(code, msg, msglen, SG_ERR_INVALID, REQ_BAD, "empty command line");
    return REQ_OK;
}

/* Reads the next request: waits for bytes, tells raw from framed, and parses the header or the line. */
static enum req_status read_request(struct exec_conn *c, struct exec_request *rq, int *code, char *msg,
                                    size_t msglen)
{
    struct exec_server *srv = c->srv;
    int64_t deadline = srv->idle_timeout_ms > 0 ? sg_now_ms() + srv->idle_timeout_ms : -1;
    enum sg_sniff sniff;
    int r;

    /*
     * Between requests a draining server closes the connection (the gateway
     * sees EOF on its idle pooled connection and moves on); a fresh one gets
     * its first request served, since its client may be sending it already.
     */
    if (c->in_off == c->in_len && c->served > 0 && sg_drain_wait(c->fd, srv->drain_fd, deadline) != SG_DRAIN_READABLE)
        return REQ_CLOSE;
    if (c->in_off == c->in_len && read_more(c, deadline) != 1)
        return REQ_CLOSE;
    deadline = sg_now_ms();
    while ((sniff = sg_frame_sniff(c->in + c->in_off, c->in_len - c->in_off, 0)) == SG_SNIFF_NEED_MORE) {
        /*
         * Under 4 bytes, a short raw line ("ls") could still be a frame's length
         * prefix: a short pause decides. A whole prefix with a plausible length
         * holds bytes no typed line has, so its '{' may take as long as any header.
         */
        int64_t wait = c->in_len - c->in_off >= 4 ? EXEC_IO_TIMEOUT_MS : EXEC_SNIFF_WAIT_MS;
        if (read_more(c, deadline + wait) != 1) {
            sniff = SG_SNIFF_RAW;
            break;
        }
    }
    if (sniff == SG_SNIFF_RAW)
        return parse_raw(c, rq, code, msg, msglen);
    deadline = sg_now_ms() + EXEC_IO_TIMEOUT_MS;
    for (;;) {
        const uint8_t *chunk;
        size_t used = 0, chunk_len;
        enum sg_frame_event ev = sg_frame_decode(&c->dec, c->in + c->in_off, c->in_len - c->in_off, &used, &chunk,
                                                 &chunk_len);
        c->in_off += used;
        if (ev == SG_FRAME_HEADER)
            return parse_framed(c, rq, code, msg, msglen);
        if (ev == SG_FRAME_ERROR)
            return bad(code, msg, msglen, SG_ERR_PROTO, REQ_FATAL, "%s", sg_frame_decoder_error(&c->dec));
        r = read_more(c, deadline);
        if (r == 0)
            return REQ_CLOSE;
        if (r < 0)
            return sg_now_ms() >= deadline
                       ? bad(code, msg, msglen, SG_ERR_TIMEOUT, REQ_FATAL, "the request header did not arrive in time")
                       : REQ_CLOSE;
    }
}

/* Reads and drops the rest of a framed request's body; returns SG_OK or why the connection must close. */
static int skip_body(struct exec_conn *c, const struct exec_request *rq)
{
    int64_t deadline = sg_now_ms() + EXEC_IO_TIMEOUT_MS;
    if (!rq->framed)
        return SG_OK;
    for (;;) {
        const uint8_t *chunk;
        size_t used = 0, chunk_len;
        enum sg_frame_event ev = sg_frame_decode(&c->dec, c->in + c->in_off, c->in_len - c->in_off, &used, &chunk,
                                                 &chunk_len);
        c->in_off += used;
        if (ev == SG_FRAME_END)
            return SG_OK;
        if (ev == SG_FRAME_ERROR)
            return SG_ERR_PROTO;
        if (ev == SG_FRAME_NEED_MORE && read_more(c, deadline) != 1)
            return SG_ERR_CLOSED;
    }
}

/* Takes a command slot, waiting while all are busy; SG_OK, or SG_ERR_CLOSED when the client left or the server stops. */
static int slot_acquire(struct exec_conn *c)
{
    for (;;) {
        struct pollfd p[3] = {{.fd = c->srv->slot_fd, .events = POLLIN},
                              {.fd = c->srv->stop_fd, .events = POLLIN},
                              {.fd = c->fd, .events = POLLRDHUP}};
        uint64_t one;
        if (read(c->srv->slot_fd, &one, sizeof one) == (ssize_t)sizeof one)
            return SG_OK;
        if (errno != EAGAIN && errno != EINTR)
            return SG_ERR_SYS;
        if (poll(p, 3, -1) < 0 && errno != EINTR)
            return SG_ERR_SYS;
        if (p[1].revents || (p[2].revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return SG_ERR_CLOSED;
    }
}

void exec_slot_release(struct exec_server *srv)
{
    uint64_t one = 1;
    /* An eventfd counter far below its maximum cannot refuse this write. */
    if (write(srv->slot_fd, &one, sizeof one) != (ssize_t)sizeof one)
        sg_error("cannot release a command slot: %s", strerror(errno));
}

/* Runs an allowed request and answers it; returns 0 to go on with the connection, -1 to close it. */
static int run_request(struct exec_conn *c, const struct exec_allowed *cmd, struct exec_request *rq)
{
    struct exec_result res;
    enum exec_run_end end;
    int rc, keep = -1;

    if (slot_acquire(c) != SG_OK)
        return -1;
    memset(&res, 0, sizeof res);
    end = exec_run(c, cmd, rq, &res);
    if (end == EXEC_RUN_DONE && !res.spawn_err) {
        /* A streamed run sent its output already: what is left is how it ended. */
        rc = rq->is_stream ? exec_reply_stream_exit(c, rq, &res) : exec_reply_result(c, rq, &res);
        exec_slot_release(c->srv);
        keep = rc == SG_OK ? 0 : -1;
        exec_log_result(c, cmd, rq, &res);
        goto out;
    }
    exec_slot_release(c->srv);
    if (end == EXEC_RUN_DONE) {
        sg_warn("%s: %s", c->peer, res.spawn_msg);
        if (skip_body(c, rq) == SG_OK &&
            exec_reply_error(c, rq->id, res.spawn_err, res.spawn_msg, res.spawn_err == SG_ERR_NOT_FOUND ? 127 : 126) ==
                SG_OK)
            keep = 0;
    } else if (end == EXEC_RUN_BROKEN) {
        exec_reply_error(c, rq->id, SG_ERR_PROTO, "the request body broke off or stalled", -1);
    } else if (end == EXEC_RUN_CLIENT_GONE) {
        sg_info("%s left while %s ran: killed it", c->peer, cmd->name);
    }
out:
    exec_result_free(&res);
    return keep;
}

/* Serves one request; returns 0 to go on with the connection, -1 to close it. */
static int serve_one(struct exec_conn *c)
{
    struct exec_request rq;
    const struct exec_allowed *cmd;
    char msg[512], shown[160];
    int code = SG_ERR_INVALID, keep = -1;
    enum req_status st;

    memset(&rq, 0, sizeof rq);
    st = read_request(c, &rq, &code, msg, sizeof msg);
    if (st == REQ_CLOSE)
        goto out;
    if (st == REQ_FATAL) {
        exec_reply_error(c, rq.id, code, msg, -1);
        goto out;
    }
    if (st == REQ_PING) {
        if (skip_body(c, &rq) == SG_OK && exec_reply_ping(c, rq.id) == SG_OK)
            keep = 0;
        goto out;
    }
    if (st == REQ_BAD) {
        if (skip_body(c, &rq) == SG_OK && exec_reply_error(c, rq.id, code, msg, -1) == SG_OK)
            keep = 0;
        goto out;
    }
    cmd = exec_policy_match(&c->srv->policy, rq.argv[0]);
    if (!cmd) {
        exec_quote(rq.argv[0], shown, sizeof shown);
        snprintf(msg, sizeof msg, "command not allowed: %s", shown);
        sg_info("%s: refused %s", c->peer, shown);
        if (skip_body(c, &rq) == SG_OK &&
            exec_reply_error(c, rq.id, SG_ERR_NOT_ALLOWED, msg, 127) == SG_OK)
            keep = 0;
        goto out;
    }
    keep = run_request(c, cmd, &rq);
out:
    free(rq.argv);
    json_decref(rq.id);
    return keep;
}

void *exec_conn_main(void *arg)
{
    struct exec_conn *c = arg;
    struct exec_server *srv = c->srv;
    sigset_t pipe_set;

    /* A command that closes its stdin early makes our write fail with EPIPE, never kill the process. */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    sg_frame_decoder_init(&c->dec, 0);
    while (serve_one(c) == 0 && !c->is_closing)
        c->served++;
    sg_frame_decoder_free(&c->dec);
    close(c->fd);
    free(c);
    pthread_mutex_lock(&srv->lock);
    srv->live--;
    pthread_cond_broadcast(&srv->idle);
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}
