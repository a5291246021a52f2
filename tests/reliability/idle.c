/*
 * idle.c - sockgate-idle: opens N connections to a server, makes one real round trip on
 * each (so every one is known to be accepted and served, not waiting in the listen
 * backlog), then keeps them all open and silent for a while and reports how many the
 * server closed. Prints "holding N connections" on stderr once they are all idle.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"

#define MAX_CONNS 60000
#define REPLY_MAX 1024

enum conn_state { C_NEW, C_CONNECTING, C_WAITING, C_IDLE, C_CLOSED, C_FAILED };

struct conn {
    int fd;
    enum conn_state state;
    char buf[REPLY_MAX];
    size_t got;
};

struct idle {
    struct sg_addr addr;
    int is_http;
    const char *request;
    struct conn *conns;
    unsigned n, served, failed, closed_by_server, pending;
    int epfd;
    char first_error[200];
};

static void fail(struct idle *s, struct conn *c, const char *why)
{
    if (!s->first_error[0])
        snprintf(s->first_error, sizeof s->first_error, "%s", why);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->state == C_CONNECTING || c->state == C_WAITING)
        s->pending--;
    c->state = C_FAILED;
    s->failed++;
}

/* Returns 1 once buf holds a whole answer: an HTTP 200 with its body, or the echo of "ping\n". */
static int is_complete(const struct idle *s, const struct conn *c, int *is_good)
{
    const char *end, *cl;
    *is_good = 0;
    if (!s->is_http) {
        if (c->got < 5)
            return 0;
        *is_good = memcmp(c->buf, "PING\n", 5) == 0;
        return 1;
    }
    end = memmem(c->buf, c->got, "\r\n\r\n", 4);
    if (!end)
        return c->got >= REPLY_MAX - 1;
    cl = strcasestr(c->buf, "\r\nContent-Length:");
    if (cl && cl < end && (size_t)(end + 4 - c->buf) + (size_t)atol(cl + 17) > c->got)
        return 0;
    *is_good = strncmp(c->buf, "HTTP/1.1 200", 12) == 0;
    return 1;
}

static int start_connect(struct idle *s, struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)(c - s->conns)};
    c->fd = socket(s->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(s, c, strerror(errno));
        return -1;
    }
    c->state = C_CONNECTING;
    s->pending++;
    if (connect(c->fd, (struct sockaddr *)&s->addr.ss, s->addr.len) != 0 && errno != EINPROGRESS) {
        fail(s, c, strerror(errno));
        return 0;
    }
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        fail(s, c, strerror(errno));
    return 0;
}

/* Moves connection c one step on: send the request once connected, read the reply, then go idle. */
static void on_event(struct idle *s, struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)(c - s->conns)};
    int is_good;
    ssize_t n;

    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            fail(s, c, err ? strerror(err) : "connection failed");
            return;
        }
        if (send(c->fd, s->request, strlen(s->request), MSG_NOSIGNAL) != (ssize_t)strlen(s->request)) {
            fail(s, c, "the request did not go out in one send");
            return;
        }
        c->state = C_WAITING;
        epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    if (c->state == C_WAITING) {
        n = recv(c->fd, c->buf + c->got, REPLY_MAX - 1 - c->got, 0);
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN)
                return;
            fail(s, c, n == 0 ? "closed before answering" : strerror(errno));
            return;
        }
        c->got += (size_t)n;
        c->buf[c->got] = '\0';
        if (!is_complete(s, c, &is_good))
            return;
        if (!is_good) {
            fail(s, c, "the answer was not the expected one");
            return;
        }
        c->state = C_IDLE;
        s->pending--;
        s->served++;
        return;
    }
    if (c->state == C_IDLE) {
        char b;
        n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
            return;
        /* The server spoke or hung up on an idle connection: either way it is no longer held. */
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->state = C_CLOSED;
        s->closed_by_server++;
    }
}

/* Runs the event loop until deadline_ms, opening new connections while fewer than batch are pending. */
static void pump(struct idle *s, unsigned *next, unsigned batch, int64_t deadline_ms, int until_served)
{
    struct epoll_event evs[512];
    while (sg_now_ms() < deadline_ms) {
        int64_t left = deadline_ms - sg_now_ms();
        int n;
        while (*next < s->n && s->pending < batch)
            if (start_connect(s, &s->conns[(*next)++]) != 0)
                *next = s->n; /* out of descriptors: the rest fail */
        if (until_served && *next >= s->n && s->pending == 0)
            return;
        n = epoll_wait(s->epfd, evs, 512, left > 100 ? 100 : (int)left);
        for (int i = 0; i < n; i++)
            on_event(s, &s->conns[evs[i].data.u32], evs[i].events);
    }
}

int main(int argc, char **argv)
{
    static struct idle s;
    const char *addr = NULL, *conns = "1000", *hold = "10", *proto = "http", *timeout = "60000", *batch = "256";
    const struct sg_option opts[] = {
        {"addr", "SOCKGATE_IDLE_ADDR", "HOST:PORT", "the server to hold connections to", &addr, NULL, NULL},
        {"conns", "SOCKGATE_IDLE_CONNS", "N", "connections to open", &conns, NULL, NULL},
        {"hold", "SOCKGATE_IDLE_HOLD", "S", "seconds to keep them open and silent", &hold, NULL, NULL},
        {"proto", "SOCKGATE_IDLE_PROTO", "http|echo", "the round trip made on each: GET /healthz, or ping", &proto,
         NULL, NULL},
        {"setup-ms", "SOCKGATE_IDLE_SETUP_MS", "MS", "time allowed to open and serve them all", &timeout, NULL, NULL},
        {"batch", "SOCKGATE_IDLE_BATCH", "N", "connections being opened at once", &batch, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };
    uint64_t n, hold_s, setup_ms, nbatch;
    unsigned next = 0, open_at_end = 0;
    int64_t t0, setup_took;
    char err[256];
    struct rlimit rl;
    int rc = sg_options_parse("sockgate-idle", "sockgate-idle --addr HOST:PORT [--conns N] [--hold S] [--proto http|echo]",
                              "Holds many served, idle connections to a server and reports how many it closed.",
                              opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (!addr || sg_parse_u64(conns, 1, MAX_CONNS, 0, &n) != SG_OK || sg_parse_u64(hold, 0, 3600, 0, &hold_s) != SG_OK ||
        sg_parse_u64(timeout, 100, 3600000, 0, &setup_ms) != SG_OK || sg_parse_u64(batch, 1, 10000, 0, &nbatch) != SG_OK ||
        (strcmp(proto, "http") != 0 && strcmp(proto, "echo") != 0)) {
        fprintf(stderr, "sockgate-idle: --addr is required; --conns 1..%d; --proto http or echo\n", MAX_CONNS);
        return 2;
    }
    if (sg_addr_parse(addr, &s.addr, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sockgate-idle: %s\n", err);
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* best effort: the run reports what it could not open */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    s.is_http = strcmp(proto, "http") == 0;
    s.request = s.is_http ? "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" : "ping\n";
    s.n = (unsigned)n;
    s.conns = calloc(s.n, sizeof *s.conns);
    s.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!s.conns || s.epfd < 0)
        return 1;
    for (unsigned i = 0; i < s.n; i++)
        s.conns[i].fd = -1;
    t0 = sg_now_ms();
    pump(&s, &next, (unsigned)nbatch, t0 + (int64_t)setup_ms, 1);
    setup_took = sg_now_ms() - t0;
    for (unsigned i = 0; i < s.n; i++)
        if (s.conns[i].state == C_NEW || s.conns[i].state == C_CONNECTING || s.conns[i].state == C_WAITING)
            fail(&s, &s.conns[i], "not served within --setup-ms");
    fprintf(stderr, "sockgate-idle: holding %u connections (%u failed) after %lld ms\n", s.served, s.failed,
            (long long)setup_took);
    pump(&s, &next, (unsigned)nbatch, sg_now_ms() + (int64_t)hold_s * 1000, 0);
    for (unsigned i = 0; i < s.n; i++) {
        if (s.conns[i].state == C_IDLE)
            open_at_end++;
        if (s.conns[i].fd >= 0)
            close(s.conns[i].fd);
    }
    printf("{\"conns\":%u,\"served\":%u,\"failed\":%u,\"closed_by_server\":%u,\"open_at_end\":%u,\"setup_ms\":%lld,"
           "\"first_error\":\"%s\"}\n",
           s.n, s.served, s.failed, s.closed_by_server, open_at_end, (long long)setup_took, s.first_error);
    free(s.conns);
    close(s.epfd);
    return 0;
}
