/* echo_load.c - sockgate-echo-load: round trips per second against sockgate-echo or redis-server. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
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

#define MAX_SIZE 65536u
#define CONNECT_TIMEOUT_MS 30000

/*
 * What is measured: every connection keeps `pipeline` requests in flight;
 * a round trip is one whole reply received and checked byte for byte. The
 * same loop drives both targets; only the request and reply bytes differ.
 */
struct workload {
    unsigned char *req;   /* one request */
    size_t req_len;
    unsigned char *reply; /* the reply it must get */
    size_t reply_len;
    unsigned pipeline;
    uint64_t per_conn;    /* round trips per connection before it goes idle; 0: no limit */
    int64_t duration_ms;
};

struct lconn {
    int fd;
    int connected;
    uint64_t issued;      /* requests queued so far (sent or about to be) */
    uint64_t done;        /* replies received whole */
    uint64_t out_bytes;   /* bytes of requests written so far */
    size_t in_pos;        /* position inside the reply being received */
    int watching_out;     /* EPOLLOUT is registered */
};

struct worker {
    pthread_t thread;
    const struct workload *w;
    const struct sg_addr *addr;
    pthread_barrier_t *barrier;
    struct lconn *conns;
    unsigned nconns;
    uint64_t round_trips;
    uint64_t errors;
    int64_t elapsed_ms;
    int failed;
    char why[160];
};

static int fail(struct worker *k, const char *what)
{
    snprintf(k->why, sizeof k->why, "%s: %s", what, strerror(errno));
    k->failed = 1;
    return -1;
}

/* Opens every connection of k and waits until all are established. */
static int connect_all(struct worker *k, int ep)
{
    unsigned pending = 0;
    int64_t deadline = sg_now_ms() + CONNECT_TIMEOUT_MS;
    for (unsigned i = 0; i < k->nconns; i++) {
        struct lconn *c = &k->conns[i];
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        int one = 1;
        c->fd = socket(k->addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            return fail(k, "socket");
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* best effort */
        if (connect(c->fd, (const struct sockaddr *)&k->addr->ss, k->addr->len) < 0 && errno != EINPROGRESS)
            return fail(k, "connect");
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            return fail(k, "epoll_ctl");
        pending++;
    }
    while (pending > 0) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 1000);
        if (sg_now_ms() > deadline) {
            errno = ETIMEDOUT;
            return fail(k, "connect");
        }
        for (int i = 0; i < n; i++) {
            struct lconn *c = evs[i].data.ptr;
            int err = 0;
            socklen_t len = sizeof err;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            if (c->connected)
                continue;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                errno = err;
                return fail(k, "connect");
            }
            c->connected = 1;
            pending--;
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    return 0;
}

/* Queues requests so pipeline are in flight (unless the per-connection budget is spent). */
static void top_up(const struct workload *w, struct lconn *c)
{
    while (c->issued - c->done < w->pipeline && (!w->per_conn || c->issued < w->per_conn))
        c->issued++;
}

/* Writes what is queued; returns -1 on a broken connection. */
static int write_some(const struct workload *w, struct lconn *c, unsigned char *batch)
{
    uint64_t want = c->issued * w->req_len - c->out_bytes;
    while (want > 0) {
        size_t off = (size_t)(c->out_bytes % w->req_len);
        size_t n = (size_t)(want < w->pipeline * w->req_len - off ? want : w->pipeline * w->req_len - off);
        ssize_t s = send(c->fd, batch + off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s < 0)
            return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->out_bytes += (uint64_t)s;
        want -= (uint64_t)s;
    }
    return 0;
}

/* Reads replies, checking each byte; returns the count of whole replies, -1 on error or mismatch. */
static long read_some(const struct workload *w, struct lconn *c, unsigned char *buf, size_t cap)
{
    long whole = 0;
    ssize_t n = recv(c->fd, buf, cap, MSG_DONTWAIT);
    if (n == 0)
        return -1;
    if (n < 0)
        return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != w->reply[c->in_pos])
            return -1;
        if (++c->in_pos == w->reply_len) {
            c->in_pos = 0;
            whole++;
        }
    }
    return whole;
}

/* Watches for writability only while requests wait to be written (one epoll_ctl per change). */
static void set_out(int ep, struct lconn *c, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (c->watching_out == want_out)
        return;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->watching_out = want_out;
}

static void *worker_main(void *arg)
{
    struct worker *k = arg;
    const struct workload *w = k->w;
    unsigned char *batch = malloc(w->pipeline * w->req_len), *buf = malloc(MAX_SIZE);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int64_t start, deadline;

    if (!batch || !buf || ep < 0) {
        fail(k, "set-up");
        pthread_barrier_wait(k->barrier);
        goto out;
    }
    for (unsigned i = 0; i < w->pipeline; i++)
        memcpy(batch + i * w->req_len, w->req, w->req_len);
    connect_all(k, ep);
    pthread_barrier_wait(k->barrier); /* everyone starts measuring together */
    if (k->failed)
        goto out;
    start = sg_now_ms();
    deadline = start + w->duration_ms;
    for (unsigned i = 0; i < k->nconns; i++) {
        top_up(w, &k->conns[i]);
        if (write_some(w, &k->conns[i], batch) < 0) {
            k->errors++;
            fail(k, "send");
            goto out;
        }
        set_out(ep, &k->conns[i], k->conns[i].out_bytes < k->conns[i].issued * w->req_len);
    }
    while (sg_now_ms() < deadline) {
        struct epoll_event evs[256];
        int64_t left = deadline - sg_now_ms();
        int n = epoll_wait(ep, evs, 256, left > 100 ? 100 : (int)left);
        for (int i = 0; i < n; i++) {
            struct lconn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                long got = read_some(w, c, buf, MAX_SIZE);
                if (got < 0) {
                    k->errors++;
                    snprintf(k->why, sizeof k->why, "a connection broke or sent a wrong reply");
                    k->failed = 1;
                    goto out;
                }
                c->done += (uint64_t)got;
                k->round_trips += (uint64_t)got;
                top_up(w, c);
            }
            if (write_some(w, c, batch) < 0) {
                k->errors++;
                fail(k, "send");
                goto out;
            }
            set_out(ep, c, c->out_bytes < c->issued * w->req_len);
        }
    }
    k->elapsed_ms = sg_now_ms() - start;
out:
    if (ep >= 0)
        close(ep);
    free(batch);
    free(buf);
    return NULL;
}

static long rss_kib(const char *pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%s/status", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Builds the request and the reply it must get for target and size; returns 0 or -1 (message printed). */
static int build_workload(struct workload *w, const char *target, size_t size, const char *echo_mode)
{
    w->req = malloc(size + 32);
    w->reply = malloc(size + 32);
    if (!w->req || !w->reply)
        return -1;
    if (strcmp(target, "echo") == 0) {
        int upper = strcmp(echo_mode, "upper") == 0;
        for (size_t i = 0; i < size; i++) {
            w->req[i] = (unsigned char)('a' + i % 26);
            w->reply[i] = (unsigned char)(upper ? 'A' + i % 26 : 'a' + i % 26);
        }
        w->req_len = w->reply_len = size;
        return 0;
    }
    if (strcmp(target, "redis") != 0) {
        fprintf(stderr, "sockgate-echo-load: --target must be echo or redis\n");
        return -1;
    }
    if (size == 6) {
        /* The inline command: the smallest request redis-server answers. */
        memcpy(w->req, "PING\r\n", 6);
        memcpy(w->reply, "+PONG\r\n", 7);
        w->req_len = 6;
        w->reply_len = 7;
        return 0;
    }
    if (size < 8) {
        fprintf(stderr, "sockgate-echo-load: with redis, --size is 6 (PING) or at least 8 (PING text)\n");
        return -1;
    }
    /* "PING <text>\r\n" is answered with the text as a bulk string: "$N\r\n<text>\r\n". */
    {
        size_t text = size - 7;
        memcpy(w->req, "PING ", 5);
        for (size_t i = 0; i < text; i++)
            w->req[5 + i] = (unsigned char)('a' + i % 26);
        memcpy(w->req + 5 + text, "\r\n", 2);
        w->req_len = size;
        w->reply_len = (size_t)snprintf((char *)w->reply, 24, "$%zu\r\n", text);
        memcpy(w->reply + w->reply_len, w->req + 5, text);
        memcpy(w->reply + w->reply_len + text, "\r\n", 2);
        w->reply_len += text + 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *target = "echo", *addr_text = "127.0.0.1:9001", *conns_text = "50", *size_text = "6";
    const char *pipeline_text = "1", *duration_text = "5", *threads_text = "1", *echo_mode = "upper";
    const char *per_conn_text = "0", *pid = NULL;
    struct workload w = {0};
    struct sg_addr addr;
    struct worker *workers = NULL;
    struct lconn *conns = NULL;
    pthread_barrier_t barrier;
    uint64_t conns_n, size, pipeline, duration, threads, pid_n, total = 0, errors = 0;
    int64_t elapsed = 0;
    long rss = -1;
    char err[256];
    int rc, status = 1;
    struct rlimit rl;
    const struct sg_option opts[] = {
        {"target", "SOCKGATE_BENCH_TARGET", "echo|redis", "what the server speaks", &target, NULL, NULL},
        {"addr", "SOCKGATE_BENCH_ADDR", "HOST:PORT", "the server", &addr_text, NULL, NULL},
        {"conns", "SOCKGATE_BENCH_CONNS", "N", "TCP connections", &conns_text, NULL, NULL},
        {"size", "SOCKGATE_BENCH_SIZE", "BYTES", "request size (redis: 6 is PING, more is PING text)", &size_text,
         NULL, NULL},
        {"pipeline", "SOCKGATE_BENCH_PIPELINE", "K", "requests in flight per connection", &pipeline_text, NULL,
         NULL},
        {"duration", "SOCKGATE_BENCH_DURATION", "DURATION", "how long to measure (a bare number: seconds)",
         &duration_text, NULL, NULL},
        {"threads", "SOCKGATE_BENCH_THREADS", "T", "client threads sharing the connections", &threads_text, NULL,
         NULL},
        {"echo-mode", "SOCKGATE_BENCH_ECHO_MODE", "upper|plain", "the reply sockgate-echo gives", &echo_mode, NULL,
         NULL},
        {"per-conn", "SOCKGATE_BENCH_PER_CONN", "N",
         "round trips per connection before it goes idle (0: no limit); for memory runs", &per_conn_text, NULL,
         NULL},
        {"pid", "SOCKGATE_BENCH_PID", "PID", "report this server process's resident memory at the end", &pid, NULL,
         NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-echo-load",
                          "sockgate-echo-load [--target echo|redis] [--addr HOST:PORT] [--conns N] [--size BYTES] "
                          "[--pipeline K] [--duration DURATION]",
                          "Measures round trips per second against sockgate-echo or redis-server (inline PING) with "
                          "the same connections, sizes and pipelining; prints one JSON line.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_parse_u64(conns_text, 1, 100000, 0, &conns_n) != SG_OK ||
        sg_parse_u64(size_text, 1, MAX_SIZE - 32, 1, &size) != SG_OK ||
        sg_parse_u64(pipeline_text, 1, 1024, 0, &pipeline) != SG_OK ||
        sg_parse_u64(threads_text, 1, 64, 0, &threads) != SG_OK ||
        sg_parse_u64(per_conn_text, 0, UINT64_MAX, 0, &w.per_conn) != SG_OK) {
        fprintf(stderr, "sockgate-echo-load: bad number in the options (see --help)\n");
        return 2;
    }
    if (sg_flag_duration("sockgate-echo-load", "duration", duration_text, 1000, 3600000, 1000, &duration) != 0)
        return 2;
    duration /= 1000; /* whole seconds from here on */
    if (pid && sg_parse_u64(pid, 1, INT32_MAX, 0, &pid_n) != SG_OK) {
        fprintf(stderr, "sockgate-echo-load: --pid must be a process id\n");
        return 2;
    }
    if (threads > conns_n)
        threads = conns_n;
    if (sg_addr_parse(addr_text, &addr, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sockgate-echo-load: %s\n", err);
        return 2;
    }
    if (build_workload(&w, target, (size_t)size, echo_mode) != 0)
        return 2;
    w.pipeline = (unsigned)pipeline;
    w.duration_ms = (int64_t)duration * 1000;
    /* best effort: each connection needs a descriptor */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    workers = calloc(threads, sizeof *workers);
    conns = calloc(conns_n, sizeof *conns);
    if (!workers || !conns || pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1) != 0) {
        fprintf(stderr, "sockgate-echo-load: out of memory\n");
        goto out;
    }
    for (uint64_t t = 0, first = 0; t < threads; t++) {
        struct worker *k = &workers[t];
        uint64_t n = conns_n / threads + (t < conns_n % threads);
        k->w = &w;
        k->addr = &addr;
        k->barrier = &barrier;
        k->conns = conns + first;
        k->nconns = (unsigned)n;
        first += n;
        for (uint64_t i = 0; i < n; i++)
            k->conns[i].fd = -1;
        if (pthread_create(&k->thread, NULL, worker_main, k) != 0) {
            fprintf(stderr, "sockgate-echo-load: cannot start a thread\n");
            exit(1); /* the threads already started wait on the barrier forever */
        }
    }
    pthread_barrier_wait(&barrier);
    for (uint64_t t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        total += workers[t].round_trips;
        errors += workers[t].errors;
        if (workers[t].elapsed_ms > elapsed)
            elapsed = workers[t].elapsed_ms;
    }
    if (pid)
        rss = rss_kib(pid); /* measured while every connection is still open */
    for (uint64_t t = 0; t < threads; t++)
        if (workers[t].failed) {
            fprintf(stderr, "sockgate-echo-load: %s\n", workers[t].why);
            errors += !workers[t].errors;
        }
    printf("{\"bench\":\"echo_load\",\"target\":\"%s\",\"addr\":\"%s\",\"conns\":%llu,\"size\":%llu,"
           "\"pipeline\":%llu,\"threads\":%llu,\"duration_s\":%.3f,\"round_trips\":%llu,"
           "\"round_trips_per_s\":%.1f,\"errors\":%llu",
           target, addr_text, (unsigned long long)conns_n, (unsigned long long)size,
           (unsigned long long)pipeline, (unsigned long long)threads, elapsed / 1000.0,
           (unsigned long long)total, elapsed > 0 ? total * 1000.0 / (double)elapsed : 0.0,
           (unsigned long long)errors);
    if (pid)
        printf(",\"server_pid\":%s,\"server_rss_kib\":%ld", pid, rss);
    printf("}\n");
    status = errors ? 1 : 0;
out:
    for (uint64_t i = 0; conns && i < conns_n; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    free(conns);
    free(workers);
    free(w.req);
    free(w.reply);
    return status;
}
