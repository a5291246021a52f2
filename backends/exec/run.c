/* run.c - one command from spawn to reap: stdin from the frame body, capped output, timeout, kills. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exec_internal.h"
#include "reply.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

/* The most read from one pipe at once; also the step the output buffers grow by at least. */
#define READ_CHUNK (64u * 1024u)

/* Without a pidfd the leader's exit is looked for this often. */
#define EXIT_TICK_MS 10

void exec_result_free(struct exec_result *res)
{
    free(res->out.data);
    free(res->err.data);
    res->out.data = res->err.data = NULL;
    res->out.len = res->out.cap = res->err.len = res->err.cap = 0;
}

/* Makes room for want more bytes in b without letting it pass limit; returns 0 or -1 (no memory). */
static int buf_reserve(struct exec_buf *b, size_t want, size_t limit)
{
    size_t need = b->len + want, cap;
    uint8_t *p;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap * 2 : READ_CHUNK;
    if (cap < need)
        cap = need;
    if (cap > limit)
        cap = limit;
    p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

enum drain { DRAIN_AGAIN, DRAIN_EOF, DRAIN_CAP, DRAIN_NOMEM };

/*
 * Reads what one pipe holds into b while stdout and stderr together stay
 * within max_output. One byte beyond the cap is what marks the output as
 * truncated, so output of exactly max_output bytes is complete.
 */
static enum drain drain_pipe(int fd, struct exec_buf *b, struct exec_result *res, size_t max_output)
{
    for (int rounds = 0; rounds < 4; rounds++) {
        size_t used = res->out.len + res->err.len, room = max_output - used, want;
        ssize_t n;
        if (room == 0) {
            uint8_t probe;
            n = read(fd, &probe, 1);
            if (n > 0)
                return DRAIN_CAP;
        } else {
            want = room < READ_CHUNK ? room : READ_CHUNK;
            if (buf_reserve(b, want, b->len + room) != 0)
                return DRAIN_NOMEM;
            n = read(fd, b->data + b->len, want);
            if (n > 0) {
                b->len += (size_t)n;
                continue;
            }
        }
        if (n == 0)
            return DRAIN_EOF;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN ? DRAIN_AGAIN : DRAIN_EOF;
    }
    return DRAIN_AGAIN; /* more may be there: the next poll says so, and the other pipe gets its turn */
}

/* Decodes the next piece of the request body from bytes already received. */
static enum sg_frame_event body_next(struct exec_conn *c, const uint8_t **chunk, size_t *len)
{
    size_t used = 0;
    enum sg_frame_event ev = sg_frame_decode(&c->dec, c->in + c->in_off, c->in_len - c->in_off, &used, chunk, len);
    c->in_off += used;
    return ev;
}

/* Writes what it can of the pending stdin bytes; a command that closed its stdin gets no more. */
static void feed_stdin(struct exec_job *job, const uint8_t **pending, size_t *pending_len)
{
    ssize_t n = write(job->stdin_fd, *pending, *pending_len);
    if (n > 0) {
        *pending += n;
        *pending_len -= (size_t)n;
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (errno == EPIPE) {
        /* The thread blocks SIGPIPE; take the pending one so it never reaches anyone. */
        sigset_t pipe_set;
        struct timespec zero = {0, 0};
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    exec_job_close_fd(&job->stdin_fd);
    *pending_len = 0;
}

static int64_t earliest(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/*
 * A streamed run's one frame on its way to the client: while it is not all
 * written, the pipes are not read, so a slow client slows the command (it
 * blocks on its own write) instead of growing a buffer here.
 */
struct stream_out {
    uint8_t *buf;      /* room for a frame header and READ_CHUNK bytes of output */
    size_t off, len;   /* bytes still to write: buf[off, len) */
    int is_client_gone;
};

/* Room before the output in stream_out.buf for its frame header (a few dozen bytes of JSON). */
#define STREAM_HEADROOM 512u

/* Per-run state the loop below works on. */
struct run_state {
    struct exec_job job;
    const uint8_t *pending;
    size_t pending_len;
    int body_open;
    int term_sent, kill_sent;
    int64_t deadline, kill_at, drain_until, body_until;
    struct stream_out so; /* streamed runs only */
};

/*
 * Makes the frame {"event": event, "total_size": len} + the len bytes already
 * at so->buf + STREAM_HEADROOM the next thing to write. Returns SG_OK or an error.
 */
static int stream_queue(struct stream_out *so, const json_t *id, const char *event, size_t len)
{
    uint8_t *head = NULL;
    size_t head_len = 0;
    int rc = exec_stream_header(id, event, len, &head, &head_len);
    if (rc != SG_OK)
        return rc;
    if (head_len > STREAM_HEADROOM) {
        free(head);
        return SG_ERR_TOO_LARGE;
    }
    memcpy(so->buf + STREAM_HEADROOM - head_len, head, head_len);
    free(head);
    so->off = STREAM_HEADROOM - head_len;
    so->len = STREAM_HEADROOM + len;
    return SG_OK;
}

/* Writes what the socket takes of the pending frame; 0, or -1 when the client is gone. */
static int stream_flush(struct exec_conn *c, struct stream_out *so)
{
    while (so->off < so->len) {
        ssize_t n = send(c->fd, so->buf + so->off, so->len - so->off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            so->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return -1;
    }
    return 0;
}

/*
 * Reads what one pipe holds (at most READ_CHUNK) into the stream buffer and
 * queues it as an event frame; DRAIN_EOF at the end of the pipe.
 */
static enum drain stream_read(int fd, struct stream_out *so, const json_t *id, const char *event)
{
    ssize_t n;
    for (;;) {
        n = read(fd, so->buf + STREAM_HEADROOM, READ_CHUNK);
        if (n >= 0 || errno != EINTR)
            break;
    }
    if (n == 0)
        return DRAIN_EOF;
    if (n < 0)
        return errno == EAGAIN ? DRAIN_AGAIN : DRAIN_EOF;
    if (so->is_client_gone) {
        so->off = so->len = 0; /* nobody to send it to: read only so the command can go on to its end */
        return DRAIN_AGAIN;
    }
    return stream_queue(so, id, event, (size_t)n) == SG_OK ? DRAIN_AGAIN : DRAIN_NOMEM;
}

/* The client of a streamed run left: SIGTERM to the command's group now, SIGKILL within a second. */
static void stream_client_gone(struct run_state *s, int64_t grace)
{
    int64_t now = sg_now_ms();
    s->so.is_client_gone = 1;
    s->so.off = s->so.len = 0;
    if (s->job.reaped)
        return;
    if (!s->term_sent) {
        exec_job_signal(&s->job, SIGTERM);
        s->term_sent = 1;
        s->kill_at = now + (grace < 900 ? grace : 900);
    } else if (s->kill_at > now + 900) {
        s->kill_at = now + 900;
    }
}

/* Applies the timers: SIGTERM at the deadline, SIGKILL after the grace, giving up on held pipes. */
static int64_t run_timers(struct run_state *s, struct exec_result *res, int64_t grace)
{
    int64_t now = sg_now_ms(), wake = -1;
    if (!s->job.reaped) {
        if (!s->term_sent && now >= s->deadline) {
            exec_job_signal(&s->job, SIGTERM);
            s->term_sent = 1;
            s->kill_at = now + grace;
            res->timed_out = 1;
        }
        if (s->term_sent && !s->kill_sent && now >= s->kill_at) {
            exec_job_signal(&s->job, SIGKILL);
            s->kill_sent = 1;
        }
        if (!s->term_sent)
            wake = s->deadline;
        else if (!s->kill_sent)
            wake = s->kill_at;
        if (s->job.pidfd < 0)
            wake = earliest(wake, now + EXIT_TICK_MS);
        return wake;
    }
    if (now >= s->drain_until) {
        exec_job_close_fd(&s->job.stdout_fd);
        exec_job_close_fd(&s->job.stderr_fd);
    }
    if (s->job.stdout_fd >= 0 || s->job.stderr_fd >= 0)
        wake = s->drain_until;
    if (s->body_open || s->so.off < s->so.len)
        wake = earliest(wake, s->body_until);
    return wake;
}

enum exec_run_end exec_run(struct exec_conn *c, const struct exec_allowed *cmd, const struct exec_request *rq,
                           struct exec_result *res)
{
    struct exec_server *srv = c->srv;
    struct run_state s;
    enum exec_run_end end = EXEC_RUN_DONE;
    int rc;

    memset(&s, 0, sizeof s);
    res->status = -1;
    if (rq->is_stream) {
        s.so.buf = malloc(STREAM_HEADROOM + READ_CHUNK);
        if (!s.so.buf) {
            res->spawn_err = SG_ERR_NOMEM;
            snprintf(res->spawn_msg, sizeof res->spawn_msg, "out of memory for the output stream");
            return EXEC_RUN_DONE;
        }
    }
    rc = exec_job_spawn(&s.job, cmd->path, rq->argv, &srv->spawn, rq->body_size > 0, res->spawn_msg,
                        sizeof res->spawn_msg);
    if (rc != SG_OK) {
        free(s.so.buf);
        res->spawn_err = rc;
        return EXEC_RUN_DONE; /* the caller skips the body and answers with the reason */
    }
    /* A streamed run says it started before anything else: the client knows the command runs. */
    if (rq->is_stream && stream_queue(&s.so, rq->id, "start", 0) != SG_OK) {
        exec_job_signal(&s.job, SIGKILL);
        end = EXEC_RUN_BROKEN;
        goto out;
    }
    s.body_open = rq->framed;
    s.deadline = s.job.started_ms + rq->timeout_ms;
    s.kill_at = s.drain_until = s.body_until = -1;
    for (;;) {
        struct pollfd p[6];
        int n = 0, i_pid = -1, i_out = -1, i_err = -1, i_in = -1, i_sock, timeout = -1, want_body;
        int64_t wake;

        while (s.body_open && s.pending_len == 0) {
            const uint8_t *chunk;
            size_t len;
            enum sg_frame_event ev = body_next(c, &chunk, &len);
            if (ev == SG_FRAME_NEED_MORE)
                break;
            if (ev == SG_FRAME_BODY && s.job.stdin_fd >= 0) {
                s.pending = chunk;
                s.pending_len = len;
            } else if (ev == SG_FRAME_END) {
                s.body_open = 0;
                exec_job_close_fd(&s.job.stdin_fd); /* EOF for the command */
            } else if (ev == SG_FRAME_ERROR) {
                end = EXEC_RUN_BROKEN;
                goto out;
            }
        }
        /* The timers may close the pipes (drain over), so they run before the check for the end. */
        wake = run_timers(&s, res, srv->kill_grace_ms);
        if (s.job.reaped && s.job.stdout_fd < 0 && s.job.stderr_fd < 0 && !s.body_open && s.so.off == s.so.len)
            break;
        if (s.job.reaped && s.so.off < s.so.len && sg_now_ms() >= s.body_until) {
            end = EXEC_RUN_BROKEN; /* the command is done but the client stopped reading its output */
            goto out;
        }
        if (s.job.reaped && s.body_open && sg_now_ms() >= s.body_until) {
            end = EXEC_RUN_BROKEN; /* the command is done but the client never finishes its body */
            goto out;
        }
        if (wake >= 0) {
            int64_t left = wake - sg_now_ms();
            timeout = left <= 0 ? 0 : (left > 60000 ? 60000 : (int)left);
        }

        p[n++] = (struct pollfd){.fd = srv->stop_fd, .events = POLLIN};
        if (!s.job.reaped && s.job.pidfd >= 0) {
            i_pid = n;
            p[n++] = (struct pollfd){.fd = s.job.pidfd, .events = POLLIN};
        }
        /* A streamed run reads its pipes only once the last frame went out: that is the backpressure. */
        if (s.job.stdout_fd >= 0 && s.so.off == s.so.len) {
            i_out = n;
            p[n++] = (struct pollfd){.fd = s.job.stdout_fd, .events = POLLIN};
        }
        if (s.job.stderr_fd >= 0 && s.so.off == s.so.len) {
            i_err = n;
            p[n++] = (struct pollfd){.fd = s.job.stderr_fd, .events = POLLIN};
        }
        if (s.pending_len > 0 && s.job.stdin_fd >= 0) {
            i_in = n;
            p[n++] = (struct pollfd){.fd = s.job.stdin_fd, .events = POLLOUT};
        }
        /* Only the body is read from the client meanwhile; a next request waits, but a hang-up is seen. */
        want_body = s.body_open && s.pending_len == 0;
        i_sock = n;
        p[n++] = (struct pollfd){.fd = c->fd, .events = (short)(POLLRDHUP | (want_body ? POLLIN : 0) |
                                                                (s.so.off < s.so.len ? POLLOUT : 0))};
        if (s.so.is_client_gone)
            p[i_sock].fd = -1; /* the client is gone: poll would report its hang-up over and over */

        if (poll(p, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            sg_error("poll: %s", strerror(errno));
            end = EXEC_RUN_BROKEN;
            goto out;
        }
        if (p[0].revents) {
            end = EXEC_RUN_STOPPED;
            goto out;
        }
        if (want_body && (p[i_sock].revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))) {
            ssize_t got = exec_conn_recv(c);
            if (got == 0 || got == -2 || got == -3) {
                end = got == -3 ? EXEC_RUN_BROKEN : EXEC_RUN_CLIENT_GONE;
                goto out;
            }
        } else if (!want_body && !s.so.is_client_gone && (p[i_sock].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            if (!rq->is_stream) {
                end = EXEC_RUN_CLIENT_GONE;
                goto out;
            }
            stream_client_gone(&s, srv->kill_grace_ms);
            end = EXEC_RUN_CLIENT_GONE;
        }
        if (rq->is_stream && !s.so.is_client_gone && (p[i_sock].revents & POLLOUT) && stream_flush(c, &s.so) != 0) {
            stream_client_gone(&s, srv->kill_grace_ms);
            end = EXEC_RUN_CLIENT_GONE;
        }
        if (i_in >= 0 && p[i_in].revents)
            feed_stdin(&s.job, &s.pending, &s.pending_len);
        for (int k = 0; k < 2; k++) {
            int idx = k == 0 ? i_out : i_err;
            int *fd = k == 0 ? &s.job.stdout_fd : &s.job.stderr_fd;
            enum drain d;
            if (idx < 0 || !p[idx].revents || *fd < 0 || s.so.off < s.so.len)
                continue;
            /* Streamed output has no cap, only the time limit; it goes out as soon as it is read. */
            d = rq->is_stream ? stream_read(*fd, &s.so, rq->id, k == 0 ? "stdout" : "stderr")
                              : drain_pipe(*fd, k == 0 ? &res->out : &res->err, res, srv->max_output);
            if (rq->is_stream && s.so.off < s.so.len && stream_flush(c, &s.so) != 0) {
                stream_client_gone(&s, srv->kill_grace_ms);
                end = EXEC_RUN_CLIENT_GONE;
            }
            if (d == DRAIN_EOF) {
                exec_job_close_fd(fd);
            } else if (d == DRAIN_CAP || d == DRAIN_NOMEM) {
                if (d == DRAIN_CAP)
                    res->truncated = 1;
                else
                    sg_error("out of memory for the output of %s", cmd->name);
                exec_job_signal(&s.job, SIGKILL);
                exec_job_close_fd(&s.job.stdout_fd);
                exec_job_close_fd(&s.job.stderr_fd);
                if (d == DRAIN_NOMEM)
                    res->truncated = 1; /* what was kept is still sent, marked as cut */
            }
        }
        if (!s.job.reaped && (i_pid < 0 || p[i_pid].revents) && exec_job_has_exited(&s.job)) {
            exec_job_reap(&s.job); /* also kills what the leader left running in its group */
            s.drain_until = s.job.ended_ms + EXEC_DRAIN_MS;
            s.body_until = s.job.ended_ms + EXEC_IO_TIMEOUT_MS;
        }
    }
out:
    exec_job_destroy(&s.job);
    free(s.so.buf);
    res->status = s.job.status;
    res->duration_ms = s.job.ended_ms - s.job.started_ms;
    return end;
}
