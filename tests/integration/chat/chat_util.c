/* chat_util.c - the chat server, framed calls, UDP peers and piped child processes for the chat tests. */
#include "chat_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

void ct_start(struct sg_proc *p, const char *const extra[])
{
    const char *argv[32] = {"sockgate-chat", "--listen", "127.0.0.1:0"};
    int n = 3;
    for (int i = 0; extra && extra[i]; i++) {
        CHECK(n < 31);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    CHECK(sg_proc_start(p, argv, 10000) == 0); /* the harness kills it at exit unless stopped */
}

void ct_stop(struct sg_proc *p)
{
    CHECK(sg_proc_stop(p, 10000) == 0);
}

void ct_connect(struct ct_conn *c, uint16_t port, int rcvbuf)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    /* Before connect, so the window never grows past it: this peer can hold little unread. */
    if (rcvbuf > 0)
        CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CHECK(sg_set_nonblock(fd, 1) == SG_OK);
    c->fd = fd;
    sg_frame_reader_init(&c->r, fd, 0);
}

void ct_close(struct ct_conn *c)
{
    sg_frame_reader_free(&c->r);
    close(c->fd);
    c->fd = -1;
}

void ct_send(struct ct_conn *c, json_t *req)
{
    CHECK(req != NULL);
    CHECK(sg_frame_send(c->fd, req, NULL, 0, sg_now_ms() + 10000) == SG_OK);
    json_decref(req);
}

int ct_read(struct ct_conn *c, int timeout_ms, json_t **h, char **body, size_t *body_len)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *h = NULL;
    for (;;) {
        enum sg_frame_event ev;
        const uint8_t *chunk;
        size_t chunk_len;
        rc = sg_frame_reader_next(&c->r, &ev, &chunk, &chunk_len, deadline);
        if (rc != SG_OK)
            break;
        if (ev == SG_FRAME_HEADER) {
            *h = json_incref(sg_frame_decoder_header(&c->r.dec));
            cap = (size_t)sg_frame_decoder_body_size(&c->r.dec) + 1;
            buf = malloc(cap);
            CHECK(buf != NULL);
        } else if (ev == SG_FRAME_BODY) {
            CHECK(len + chunk_len < cap);
            memcpy(buf + len, chunk, chunk_len);
            len += chunk_len;
        } else if (ev == SG_FRAME_END) {
            break;
        }
    }
    if (rc != SG_OK) {
        json_decref(*h);
        *h = NULL;
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    if (body) {
        *body = buf;
        *body_len = len;
    } else {
        free(buf);
    }
    return SG_OK;
}

json_t *ct_call(struct ct_conn *c, json_t *req)
{
    json_t *h = NULL;
    ct_send(c, req);
    CHECK(ct_read(c, 10000, &h, NULL, NULL) == SG_OK);
    return h;
}

long long ct_stat(struct ct_conn *c, const char *key)
{
    json_t *h = ct_call(c, json_pack("{s:s}", "op", "stats"));
    json_t *v = json_object_get(json_object_get(h, "stats"), key);
    long long n;
    CHECK(json_is_integer(v));
    n = json_integer_value(v);
    json_decref(h);
    return n;
}

const char *ct_error_code(const json_t *h)
{
    return json_string_value(json_object_get(json_object_get(h, "error"), "code"));
}

int ct_udp(char *addr)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    snprintf(addr, SG_ADDR_STRLEN, "127.0.0.1:%u", ntohs(sin.sin_port));
    return fd;
}

void ct_udp_send(int udp, uint16_t port, const void *buf, size_t len)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int tries = 0; tries < 1000; tries++) {
        if (sendto(udp, buf, len, 0, (struct sockaddr *)&sin, sizeof sin) == (ssize_t)len)
            return;
        CHECK(errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR);
        sg_wait_fd(udp, POLLOUT, sg_now_ms() + 100);
    }
    CHECK(!"the UDP socket stayed full");
}

long ct_udp_recv(int udp, char *buf, size_t cap, int timeout_ms)
{
    ssize_t n;
    if (sg_wait_fd(udp, POLLIN, sg_now_ms() + timeout_ms) != SG_OK)
        return -1;
    n = recv(udp, buf, cap - 1, MSG_DONTWAIT);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return (long)n;
}

long long ct_flood(int udp, uint16_t port, struct ct_conn *ctl, long n, const char *text)
{
    long long start = ct_stat(ctl, "received"), now = start;
    long sent = 0;
    size_t len = strlen(text);
    while (now - start < n && sent < 50 * n) {
        long burst = n - (now - start) < 32 ? n - (now - start) : 32;
        for (long i = 0; i < burst; i++)
            ct_udp_send(udp, port, text, len);
        sent += burst;
        /* One round trip per burst: the server has read the burst's datagrams before this answer. */
        now = ct_stat(ctl, "received");
    }
    return now;
}

void ct_spawn(struct ct_child *c, const char *const argv[], const char *const env[])
{
    int in[2], out[2], err[2];
    memset(c, 0, sizeof *c);
    CHECK(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
    c->pid = fork();
    CHECK(c->pid >= 0);
    if (c->pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    sg_test_kill_at_exit(c->pid);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    c->in_fd = in[1];
    c->out_fd = out[0];
    c->err_fd = err[0];
    signal(SIGPIPE, SIG_IGN);
}

void ct_child_write(struct ct_child *c, const char *text)
{
    CHECK(c->in_fd >= 0);
    CHECK(write(c->in_fd, text, strlen(text)) == (ssize_t)strlen(text));
}

void ct_child_close_stdin(struct ct_child *c)
{
    if (c->in_fd >= 0)
        close(c->in_fd);
    c->in_fd = -1;
}

/* Reads what the child printed within wait_ms; returns 0 once both pipes are at EOF. */
static int collect(struct ct_child *c, int wait_ms)
{
    struct pollfd p[2] = {{.fd = c->out_fd, .events = POLLIN}, {.fd = c->err_fd, .events = POLLIN}};
    int r = poll(p, 2, wait_ms);
    if (r < 0 && errno != EINTR)
        return 0;
    for (int i = 0; i < 2; i++) {
        char *buf = i == 0 ? c->out : c->err;
        size_t *len = i == 0 ? &c->out_len : &c->err_len;
        size_t cap = (i == 0 ? sizeof c->out : sizeof c->err) - 1;
        int *fd = i == 0 ? &c->out_fd : &c->err_fd;
        ssize_t n;
        if (*fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        n = read(*fd, buf + *len, cap - *len);
        if (n <= 0 || *len + (size_t)n >= cap) {
            if (n > 0)
                *len += (size_t)n;
            close(*fd);
            *fd = -1;
        } else {
            *len += (size_t)n;
        }
        buf[*len] = '\0';
    }
    return c->out_fd >= 0 || c->err_fd >= 0;
}

int ct_child_wait_out(struct ct_child *c, const char *needle, int timeout_ms)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - sg_now_ms();
        if (strstr(c->out, needle))
            return 1;
        if (left <= 0 || !collect(c, (int)left))
            return strstr(c->out, needle) != NULL;
    }
}

int ct_child_wait(struct ct_child *c, int timeout_ms)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    int status;
    while (sg_now_ms() < deadline && collect(c, 100))
        ;
    for (;;) {
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid)
            break;
        if (sg_now_ms() >= deadline) {
            fprintf(stderr, "pid %d still running after %d ms; killing it\n", (int)c->pid, timeout_ms);
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
            break;
        }
        usleep(10 * 1000);
    }
    ct_child_close_stdin(c);
    if (c->out_fd >= 0)
        close(c->out_fd);
    if (c->err_fd >= 0)
        close(c->err_fd);
    c->out_fd = c->err_fd = -1;
    sg_test_forget(c->pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

const char *ct_source_file(const char *name, char *buf, size_t buflen)
{
    const char *dir = getenv("SOCKGATE_SOURCE_DIR");
    snprintf(buf, buflen, "%s/tests/integration/chat/%s", dir ? dir : ".", name);
    return buf;
}
