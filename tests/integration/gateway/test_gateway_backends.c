/* test_gateway_backends.c - the gateway in front of separately started backends: failures and recovery. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static struct gw g;
static struct sg_proc echo_p, time_p, exec_p, file_p;
static char file_root[400];

/*
 * The port of a backend that is down, held until the backend is started on
 * it again: a port merely freed could be taken by another test's server or
 * socket meanwhile (sg_test_hold_port), and the restart would fail.
 */
static int held_tcp = -1, held_udp = -1;

/* Holds p's TCP port, and its UDP port too when is_udp, until start_backend. */
static void hold_port(const struct sg_proc *p, int is_udp)
{
    CHECK(sg_test_hold_port(SOCK_STREAM, p->port, &held_tcp) == p->port);
    if (is_udp)
        CHECK(sg_test_hold_port(SOCK_DGRAM, p->port, &held_udp) == p->port);
}

static void start_backend(struct sg_proc *p, const char *const argv[])
{
    CHECK(sg_proc_start(p, argv, 10000) == 0); /* the harness kills it at exit unless stopped */
    if (held_tcp >= 0)
        close(held_tcp);
    if (held_udp >= 0)
        close(held_udp);
    held_tcp = held_udp = -1;
}

static void start_file_backend(const char *listen)
{
    const char *argv[] = {"sockgate-file", "--listen", listen, "--root", file_root, NULL};
    start_backend(&file_p, argv);
}

/* SIGKILL: the (file) backend dies as a crash would, with connections open and nothing flushed; its port is held. */
static void kill_backend(struct sg_proc *p)
{
    CHECK(p->pid > 0);
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    sg_test_forget(p->pid);
    unlink(p->log_path);
    p->pid = 0;
    hold_port(p, 0);
}

static void stop_backend(struct sg_proc *p)
{
    CHECK_INT_EQ(sg_proc_stop(p, 10000), 0);
}

static void test_ready_with_separate_backends(void)
{
    struct http_resp *r = gw_do(&g, "GET", "/readyz", NULL, NULL);
    json_t *j = http_ok_json(r, 200), *b = json_object_get(j, "backends");
    const char *names[] = {"echo", "time", "exec", "file"};
    const struct sg_proc *procs[] = {&echo_p, &time_p, &exec_p, &file_p};
    for (size_t i = 0; i < 4; i++) {
        json_t *one = json_object_get(b, names[i]);
        CHECK(json_is_true(json_object_get(one, "ok")));
        CHECK(json_is_false(json_object_get(one, "embedded")));
        CHECK_STR_EQ(json_string_value(json_object_get(one, "address")), procs[i]->addr);
    }
    json_decref(j);
    http_free(r);
}

static void test_every_row(void)
{
    const char *octet[] = {"Content-Type: application/octet-stream", NULL};
    struct http_resp *r;
    json_t *j = gw_expect_json(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"separate\"}", 200);
    char url[300];
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "SEPARATE");
    json_decref(j);

    j = gw_expect_json(&g, "GET", "/api/v1/time?format=%25H", NULL, NULL, 200);
    CHECK_INT_EQ(json_string_length(json_object_get(j, "time")), 2);
    json_decref(j);

    j = gw_expect_json(&g, "POST", "/api/v1/exec", gw_json_headers, "{\"command\": \"echo separate\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "separate\n");
    json_decref(j);

    snprintf(url, sizeof url, "%s/api/v1/files/sep.txt", g.base);
    r = http_do("PUT", url, octet, "separate file", 13);
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/files/sep.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "separate file");
    http_free(r);
    j = gw_expect_json(&g, "GET", "/api/v1/files", NULL, NULL, 200);
    CHECK_INT_EQ(json_array_size(json_object_get(j, "files")), 1);
    json_decref(j);
}

/* An upload whose read callback kills the file backend after kill_at bytes. */
struct killer {
    uint64_t total, sent, kill_at;
    struct sg_proc *victim;
};

static size_t feed_and_kill(char *buf, size_t size, size_t nmemb, void *ctx)
{
    struct killer *k = ctx;
    size_t n = size * nmemb;
    if (k->sent >= k->kill_at && k->victim->pid > 0)
        kill_backend(k->victim);
    if (n > k->total - k->sent)
        n = (size_t)(k->total - k->sent);
    memset(buf, 'k', n);
    k->sent += n;
    return n;
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    (void)ptr;
    (void)ctx;
    return size * nmemb;
}

static void test_file_backend_killed_during_upload(void)
{
    struct killer k = {.total = 64u << 20, .kill_at = 4u << 20, .victim = &file_p};
    char url[300], listen[128];
    CURL *c = curl_easy_init();
    struct http_resp *r;
    long status = 0;

    snprintf(listen, sizeof listen, "%s", file_p.addr);
    snprintf(url, sizeof url, "%s/api/v1/files/doomed.bin", g.base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)k.total);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, feed_and_kill);
    curl_easy_setopt(c, CURLOPT_READDATA, &k);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CHECK(curl_easy_perform(c) == CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    /* The backend broke off in the middle: a bad gateway, said once the body is in. */
    CHECK_INT_EQ(status, 502);

    /* Nobody listens now: unavailable. */
    gw_expect_error(&g, "GET", "/api/v1/files", NULL, NULL, 503, "unavailable");
    r = gw_do(&g, "GET", "/readyz", NULL, NULL);
    CHECK_INT_EQ(r->status, 503);
    http_free(r);

    /* Back on the same address: used again without restarting the gateway, and the torn upload is gone. */
    start_file_backend(listen);
    gw_expect_error(&g, "GET", "/api/v1/files/doomed.bin", NULL, NULL, 404, "not_found");
    r = gw_do(&g, "GET", "/api/v1/files/sep.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "separate file");
    http_free(r);
}

struct reader {
    uint64_t got;
    struct sg_proc *victim;
};

static size_t read_and_kill(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    struct reader *rd = ctx;
    (void)ptr;
    rd->got += size * nmemb;
    if (rd->got >= (1u << 20) && rd->victim->pid > 0)
        kill_backend(rd->victim);
    return size * nmemb;
}

static void test_file_backend_killed_during_download(void)
{
    static char body[32u << 20];
    const char *octet[] = {"Content-Type: application/octet-stream", NULL};
    struct reader rd = {.victim = &file_p};
    char url[300], listen[128];
    struct http_resp *r;
    CURL *c;
    CURLcode rc;
    long status = 0;

    snprintf(listen, sizeof listen, "%s", file_p.addr);
    memset(body, 'd', sizeof body);
    snprintf(url, sizeof url, "%s/api/v1/files/big-download.bin", g.base);
    r = http_do("PUT", url, octet, body, sizeof body);
    CHECK_INT_EQ(r->status, 201);
    http_free(r);

    c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, read_and_kill);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &rd);
    /* A small receive buffer keeps the gateway from having sent everything before the kill. */
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 16384L);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    /* The status line went out before the backend died: the only honest signal left is a cut body. */
    CHECK_INT_EQ(status, 200);
    CHECK(rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR);
    CHECK(rd.got < sizeof body);

    start_file_backend(listen);
    r = gw_do(&g, "HEAD", "/api/v1/files/big-download.bin", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
}

static void test_echo_backend_gone_and_back(void)
{
    char listen[128];
    const char *argv[] = {"sockgate-echo", "--listen", listen, NULL};
    json_t *j;
    snprintf(listen, sizeof listen, "%s", echo_p.addr);
    stop_backend(&echo_p);
    hold_port(&echo_p, 1);
    gw_expect_error(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"anyone?\"}", 503, "unavailable");
    start_backend(&echo_p, argv);
    j = gw_expect_json(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"back\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "BACK");
    json_decref(j);
}

/* A backend that accepts connections and never answers, or answers garbage. */
struct fake {
    int tcp_fd, udp_fd;
    int is_garbage;
    atomic_int stop;
    pthread_t thread;
    char addr[SG_ADDR_STRLEN];
};

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    int conns[64], n = 0;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->tcp_fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(f->tcp_fd, NULL, NULL);
        if (fd < 0)
            continue;
        if (f->is_garbage) {
            /* What an HTTP server would say to a stranger: not a frame. */
            const char junk[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            if (write(fd, junk, sizeof junk - 1) < 0)
                fprintf(stderr, "fake backend: write: %s\n", strerror(errno));
        }
        if (n < 64)
            conns[n++] = fd; /* held open and silent */
        else
            close(fd);
    }
    for (int i = 0; i < n; i++)
        close(conns[i]);
    return NULL;
}

static void fake_start(struct fake *f, int is_garbage)
{
    struct sg_addr a;
    char err[256];
    memset(f, 0, sizeof *f);
    f->is_garbage = is_garbage;
    CHECK(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err) == 0);
    CHECK(sg_listen_tcp_udp(&a, &f->tcp_fd, &f->udp_fd, err, sizeof err) == 0);
    sg_local_addr(f->tcp_fd, f->addr, sizeof f->addr);
    CHECK(pthread_create(&f->thread, NULL, fake_main, f) == 0);
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    close(f->tcp_fd);
    close(f->udp_fd);
}

static void test_silent_backend_times_out(void)
{
    struct fake f;
    struct gw slow;
    struct http_resp *r;
    fake_start(&f, 0);
    {
        /* The UDP socket on the same port never answers either: the time backend's silence. */
        const char *args[] = {"--echo", f.addr, "--time", f.addr, "--exec", f.addr, "--file", f.addr,
                              "--timeout-ms", "500", NULL};
        gw_start(&slow, args);
    }
    gw_expect_error(&slow, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"hello?\"}", 504, "timeout");
    gw_expect_error(&slow, "GET", "/api/v1/time", NULL, NULL, 504, "timeout");
    gw_expect_error(&slow, "GET", "/api/v1/files", NULL, NULL, 504, "timeout");
    gw_expect_error(&slow, "GET", "/api/v1/files/x", NULL, NULL, 504, "timeout");
    r = gw_do(&slow, "GET", "/readyz", NULL, NULL);
    CHECK_INT_EQ(r->status, 503);
    {
        json_t *j = http_json(r);
        CHECK(json_is_false(json_object_get(j, "ready")));
        CHECK(json_is_false(json_object_get(json_object_get(json_object_get(j, "backends"), "file"), "ok")));
        json_decref(j);
    }
    http_free(r);
    r = gw_do(&slow, "GET", "/metrics", NULL, NULL);
    CHECK(strstr(r->body, "sockgate_backend_errors_total{backend=\"file\"} 0\n") == NULL);
    http_free(r);
    gw_stop(&slow);
    fake_stop(&f);
}

static void test_garbage_backend_is_bad_gateway(void)
{
    struct fake f;
    struct gw bad;
    fake_start(&f, 1);
    {
        /* The garbage comes at once; a deadline it could miss on a loaded machine would turn 502 into 504. */
        const char *args[] = {"--exec", f.addr, "--file", f.addr, "--timeout-ms", "10000", NULL};
        gw_start(&bad, args);
    }
    gw_expect_error(&bad, "GET", "/api/v1/files", NULL, NULL, 502, "protocol_error");
    gw_expect_error(&bad, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\"]}", 502, "protocol_error");
    gw_stop(&bad);
    fake_stop(&f);
}

/*
 * A framed backend that answers the first request of every connection and
 * then, on the second, reads it whole and dies without a word: a backend
 * killed while it carries out a request that came on a pooled connection.
 */
struct dying {
    int fd;
    atomic_int stop;
    atomic_int received; /* requests read, whatever their op */
    pthread_t thread;
    char addr[SG_ADDR_STRLEN];
};

/* Reads one frame from fd; returns its header (new reference) or NULL at EOF or on error. */
static json_t *read_request(int fd)
{
    unsigned char len[4];
    char *text;
    json_t *hdr = NULL;
    uint32_t n;
    int64_t deadline = sg_deadline_after(5000);
    if (sg_read_full(fd, len, 4, deadline) != SG_OK)
        return NULL;
    n = (uint32_t)len[0] | (uint32_t)len[1] << 8 | (uint32_t)len[2] << 16 | (uint32_t)len[3] << 24;
    text = n < 65536 ? malloc(n) : NULL;
    if (text && sg_read_full(fd, text, n, deadline) == SG_OK)
        hdr = json_loadb(text, n, 0, NULL);
    free(text);
    return hdr; /* the requests of this test carry no body */
}

/* Answers hdr's op as a real backend would, with an empty result. */
static void answer(int fd, const json_t *hdr)
{
    const char *op = json_string_value(json_object_get(hdr, "op"));
    int is_list = op && strcmp(op, "list") == 0;
    json_t *resp = is_list ? json_pack("{s:i,s:i}", "count", 0, "total_size", 2)
                           : json_pack("{s:i,s:i,s:i,s:i,s:b,s:b,s:i}", "total_size", 0, "stdout_size", 0,
                                       "stderr_size", 0, "exit_code", 0, "timed_out", 0, "truncated", 0,
                                       "duration_ms", 1);
    char *text;
    /* A real backend answers with its request's id; the gateway refuses an answer without it. */
    json_object_set(resp, "id", json_object_get(hdr, "id"));
    text = json_dumps(resp, JSON_COMPACT);
    size_t n = strlen(text);
    unsigned char len[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16), 0};
    int64_t deadline = sg_deadline_after(5000);
    CHECK(sg_write_all(fd, len, 4, deadline) == SG_OK && sg_write_all(fd, text, n, deadline) == SG_OK);
    if (is_list)
        CHECK(sg_write_all(fd, "[]", 2, deadline) == SG_OK);
    free(text);
    json_decref(resp);
}

static void *dying_main(void *arg)
{
    struct dying *d = arg;
    while (!atomic_load(&d->stop)) {
        struct pollfd p = {.fd = d->fd, .events = POLLIN};
        json_t *hdr;
        int fd;
        if (poll(&p, 1, 50) <= 0 || (fd = accept(d->fd, NULL, NULL)) < 0)
            continue;
        for (int nth = 0; nth < 2 && (hdr = read_request(fd)) != NULL; nth++) {
            atomic_fetch_add(&d->received, 1);
            if (nth == 0)
                answer(fd, hdr);
            json_decref(hdr);
        }
        close(fd);
    }
    return NULL;
}

/*
 * A write (an exec) whose pooled connection dies with it is not sent again:
 * the backend may have run it already, so the caller hears 502. A read (the
 * file list) is sent again on a fresh connection and answered.
 */
static void test_pooled_death_replays_reads_only(void)
{
    struct sg_addr a;
    struct dying d;
    struct gw gd;
    char err[256];
    json_t *j;
    memset(&d, 0, sizeof d);
    CHECK(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err) == 0);
    CHECK(sg_listen(&a, SOCK_STREAM, &d.fd, err, sizeof err) == 0);
    sg_local_addr(d.fd, d.addr, sizeof d.addr);
    CHECK(pthread_create(&d.thread, NULL, dying_main, &d) == 0);
    {
        /* One worker: backend connections are pooled per worker, and the second call must find the first's. */
        const char *args[] = {"--exec", d.addr, "--file", d.addr, "--timeout-ms", "3000", "--threads", "1", NULL};
        gw_start(&gd, args);
    }
    j = gw_expect_json(&gd, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\"]}", 200);
    json_decref(j);
    /* Sent on the pooled connection, read, then the backend died: not run a second time. */
    gw_expect_error(&gd, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\"]}", 502,
                    "connection_closed");
    CHECK_INT_EQ(atomic_load(&d.received), 2);

    j = gw_expect_json(&gd, "GET", "/api/v1/files", NULL, NULL, 200);
    json_decref(j);
    /* The same death under a list: asked again on a fresh connection, answered. */
    j = gw_expect_json(&gd, "GET", "/api/v1/files", NULL, NULL, 200);
    CHECK_INT_EQ((int)json_array_size(json_object_get(j, "files")), 0);
    json_decref(j);
    CHECK_INT_EQ(atomic_load(&d.received), 5);
    gw_stop(&gd);
    atomic_store(&d.stop, 1);
    pthread_join(d.thread, NULL);
    close(d.fd);
}

/*
 * Never trust a backend's reply: with --file and --exec pointed at the echo
 * server, every answer is the request upper-cased, a well-formed frame
 * without this request's id. Nothing may be reported as stored, deleted or
 * run, and /readyz must say the file service is not there.
 */
static void test_wrong_service_is_not_believed(void)
{
    static const char *const mp_headers[] = {"Content-Type: multipart/form-data; boundary=XyZ", NULL};
    static const char mp_body[] = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n"
                                  "Content-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";
    struct gw wrong;
    struct http_resp *r;
    json_t *j;
    {
        const char *args[] = {"--file", echo_p.addr, "--exec", echo_p.addr, "--timeout-ms", "3000", NULL};
        gw_start(&wrong, args);
    }
    r = gw_do(&wrong, "PUT", "/api/v1/files/x.txt", NULL, "hello");
    check_error(r, 502, "protocol_error");
    http_free(r);
    r = gw_do(&wrong, "POST", "/api/v1/files", mp_headers, mp_body);
    check_error(r, 502, "protocol_error");
    http_free(r);
    gw_expect_error(&wrong, "DELETE", "/api/v1/files/x.txt", NULL, NULL, 502, "protocol_error");
    gw_expect_error(&wrong, "GET", "/api/v1/files", NULL, NULL, 502, "protocol_error");
    gw_expect_error(&wrong, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\"]}", 502, "protocol_error");
    r = gw_do(&wrong, "GET", "/readyz", NULL, NULL);
    CHECK_INT_EQ(r->status, 503);
    j = http_json(r);
    CHECK(json_is_false(json_object_get(json_object_get(json_object_get(j, "backends"), "file"), "ok")));
    CHECK(json_is_false(json_object_get(json_object_get(json_object_get(j, "backends"), "exec"), "ok")));
    json_decref(j);
    http_free(r);
    r = gw_do(&wrong, "GET", "/metrics", NULL, NULL);
    CHECK(strstr(r->body, "sockgate_backend_errors_total{backend=\"file\"} 0\n") == NULL);
    http_free(r);
    gw_stop(&wrong);
}

/* A framed backend that answers every request with a well-formed frame carrying another request's id. */
struct liar {
    int fd;
    atomic_int stop;
    pthread_t thread;
    char addr[SG_ADDR_STRLEN];
};

static void *liar_main(void *arg)
{
    struct liar *l = arg;
    while (!atomic_load(&l->stop)) {
        struct pollfd p = {.fd = l->fd, .events = POLLIN};
        json_t *hdr;
        int fd;
        if (poll(&p, 1, 50) <= 0 || (fd = accept(l->fd, NULL, NULL)) < 0)
            continue;
        while ((hdr = read_request(fd)) != NULL) {
            json_t *resp = json_pack("{s:s,s:i,s:i,s:i,s:i,s:b,s:i,s:i}", "id", "not-yours", "total_size", 0,
                                     "stdout_size", 0, "stderr_size", 0, "exit_code", 0, "timed_out", 0, "count", 0,
                                     "duration_ms", 1);
            char *text = json_dumps(resp, JSON_COMPACT);
            size_t n = strlen(text);
            unsigned char len[4] = {(unsigned char)n, (unsigned char)(n >> 8), 0, 0};
            int64_t deadline = sg_deadline_after(5000);
            int ok = sg_write_all(fd, len, 4, deadline) == SG_OK && sg_write_all(fd, text, n, deadline) == SG_OK;
            free(text);
            json_decref(resp);
            json_decref(hdr);
            if (!ok)
                break;
        }
        close(fd);
    }
    return NULL;
}

static void test_foreign_id_is_not_believed(void)
{
    struct sg_addr a;
    struct liar l;
    struct gw gl;
    char err[256];
    memset(&l, 0, sizeof l);
    CHECK(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err) == 0);
    CHECK(sg_listen(&a, SOCK_STREAM, &l.fd, err, sizeof err) == 0);
    sg_local_addr(l.fd, l.addr, sizeof l.addr);
    CHECK(pthread_create(&l.thread, NULL, liar_main, &l) == 0);
    {
        const char *args[] = {"--exec", l.addr, "--file", l.addr, "--timeout-ms", "3000", NULL};
        gw_start(&gl, args);
    }
    gw_expect_error(&gl, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\"]}", 502, "protocol_error");
    gw_expect_error(&gl, "GET", "/api/v1/files", NULL, NULL, 502, "protocol_error");
    gw_expect_error(&gl, "PUT", "/api/v1/files/y.txt", NULL, "hello", 502, "protocol_error");
    gw_stop(&gl);
    atomic_store(&l.stop, 1);
    pthread_join(l.thread, NULL);
    close(l.fd);
}

/*
 * A file backend that answers a download with half of its body and holds the
 * rest until the test lets it go: a slow or stuck disk behind the gateway.
 */
struct trickler {
    int fd;
    atomic_int half_sent, release, stop;
    pthread_t thread;
    char addr[SG_ADDR_STRLEN];
    unsigned char body[256 * 1024];
};

static void *trickler_main(void *arg)
{
    struct trickler *t = arg;
    while (!atomic_load(&t->stop)) {
        struct pollfd p = {.fd = t->fd, .events = POLLIN};
        json_t *hdr, *resp;
        char *text;
        int fd;
        if (poll(&p, 1, 50) <= 0 || (fd = accept(t->fd, NULL, NULL)) < 0)
            continue;
        while ((hdr = read_request(fd)) != NULL) {
            int64_t deadline = sg_deadline_after(5000);
            size_t n, half = sizeof t->body / 2;
            unsigned char len[4];
            resp = json_pack("{s:O,s:s,s:i,s:i,s:s,s:i,s:i,s:i}", "id", json_object_get(hdr, "id"), "name", "slow.bin",
                             "size", (int)sizeof t->body, "offset", 0, "sha256",
                             "0000000000000000000000000000000000000000000000000000000000000000", "mtime", 1, "mtime_ms", 1000,
                             "total_size", (int)sizeof t->body);
            text = json_dumps(resp, JSON_COMPACT);
            n = strlen(text);
            len[0] = (unsigned char)n, len[1] = (unsigned char)(n >> 8), len[2] = (unsigned char)(n >> 16), len[3] = 0;
            CHECK(sg_write_all(fd, len, 4, deadline) == SG_OK && sg_write_all(fd, text, n, deadline) == SG_OK);
            CHECK(sg_write_all(fd, t->body, half, deadline) == SG_OK);
            atomic_store(&t->half_sent, 1);
            for (int i = 0; i < 600 && !atomic_load(&t->release); i++) /* at most a minute */
                usleep(100 * 1000);
            CHECK(sg_write_all(fd, t->body + half, sizeof t->body - half, sg_deadline_after(30000)) == SG_OK);
            free(text);
            json_decref(resp);
            json_decref(hdr);
        }
        close(fd);
    }
    return NULL;
}

/*
 * A download whose backend stalls mid-body holds no worker (issue 15): with
 * one worker thread, /healthz and an echo are answered while the backend
 * still holds half the file, and once it goes on the download ends whole.
 * (With the body read by a blocking call, both waited for the backend, and
 * the download was cut at the gateway's deadline.)
 */
static void test_stalled_download_blocks_nothing(void)
{
    struct trickler *t = calloc(1, sizeof *t);
    const char req[] = "GET /api/v1/files/slow.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    struct sg_addr a;
    struct gw gd;
    char err[256], *got = malloc(sizeof t->body + 4096), *body;
    size_t have = 0;
    struct http_resp *r;
    json_t *j;
    int c;
    CHECK(t && got);
    fill_pattern(t->body, sizeof t->body, 15);
    CHECK(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err) == 0);
    CHECK(sg_listen(&a, SOCK_STREAM, &t->fd, err, sizeof err) == 0);
    sg_local_addr(t->fd, t->addr, sizeof t->addr);
    CHECK(pthread_create(&t->thread, NULL, trickler_main, t) == 0);
    {
        /* The deadline is long: only a gateway that does not wait for the backend can answer meanwhile. */
        const char *args[] = {"--file", t->addr, "--timeout", "20s", "--threads", "1", NULL};
        gw_start(&gd, args);
    }
    CHECK(sg_addr_parse(gd.base + strlen("http://"), &a, err, sizeof err) == 0);
    CHECK(sg_connect(&a, SOCK_STREAM, 5000, &c, err, sizeof err) == 0);
    CHECK(sg_write_all(c, req, strlen(req), sg_deadline_after(5000)) == SG_OK);
    for (int i = 0; i < 1000 && !atomic_load(&t->half_sent); i++)
        usleep(10 * 1000);
    CHECK(atomic_load(&t->half_sent));

    r = gw_do(&gd, "GET", "/healthz", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    j = gw_expect_json(&gd, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"still here\"}", 200);
    json_decref(j);
    CHECK(!atomic_load(&t->release)); /* answered while the download was still held */

    atomic_store(&t->release, 1);
    for (;;) {
        size_t n = 0;
        int rc = sg_read_some(c, got + have, sizeof t->body + 4096 - have, &n, sg_deadline_after(30000));
        if (rc != SG_OK || n == 0)
            break;
        have += n;
    }
    close(c);
    if (have < 12 || memcmp(got, "HTTP/1.1 200", 12) != 0)
        fprintf(stderr, "the download got %zu bytes: %.*s\n", have, (int)(have < 600 ? have : 600), got);
    CHECK(have > 12 && memcmp(got, "HTTP/1.1 200", 12) == 0);
    body = memmem(got, have, "\r\n\r\n", 4);
    CHECK(body != NULL);
    if (body) {
        body += 4;
        CHECK_INT_EQ((long)(have - (size_t)(body - got)), (long)sizeof t->body);
        CHECK(memcmp(body, t->body, sizeof t->body) == 0);
    }
    gw_stop(&gd);
    atomic_store(&t->stop, 1);
    pthread_join(t->thread, NULL);
    close(t->fd);
    free(got);
    free(t);
}

/* Returns the value of the metric line "name N" in the gateway's /metrics, or -1 when it is missing. */
static long gw_metric(struct gw *of, const char *name)
{
    struct http_resp *r = gw_do(of, "GET", "/metrics", NULL, NULL);
    size_t n = strlen(name);
    long v = -1;
    for (const char *line = r->body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, name, n) == 0 && line[n] == ' ') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    http_free(r);
    return v;
}

/* POSTs a form of two files (small.txt, then big.bin of big_len bytes); returns the answer. */
static struct http_resp *post_two_files(struct gw *of, size_t big_len)
{
    struct http_resp *r = calloc(1, sizeof *r);
    unsigned char *big = malloc(big_len);
    CURL *c = curl_easy_init();
    curl_mime *mime = curl_mime_init(c);
    curl_mimepart *part;
    char url[300];
    FILE *mem;
    CHECK(r && big);
    fill_pattern(big, big_len, 16);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "file");
    curl_mime_filename(part, "small.txt");
    curl_mime_data(part, "kept only with its sibling\n", CURL_ZERO_TERMINATED);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "file");
    curl_mime_filename(part, "big.bin");
    curl_mime_data(part, (const char *)big, big_len);
    snprintf(url, sizeof url, "%s/api/v1/files", of->base);
    mem = open_memstream(&r->body, &r->len);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CHECK(curl_easy_perform(c) == CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    fclose(mem);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    free(big);
    return r;
}

/*
 * Uploads that stall after their head hold no connection of the file
 * service (issue 15): against a file backend that serves only 8 connections
 * at once, 24 PUTs that sent their head and one byte and then nothing leave
 * uploads, downloads and listings answering 2xx, on a gateway of one worker.
 * (When a PUT took its backend connection at its head, the 9th stalled one
 * and everything after it were refused busy.) Then a form whose second file
 * the backend refuses (over its --max-size) keeps neither file: the first is
 * removed again before the error is answered.
 */
static void test_stalled_uploads_hold_no_backend(void)
{
    enum { N_STALLED = 24 };
    struct sg_proc small;
    char root[480], err[256], path[520];
    const char *argv[] = {"sockgate-file", "--listen", "127.0.0.1:0", "--root", root, "--max-conns", "8",
                          "--max-size", "1K", NULL};
    int stalled[N_STALLED];
    struct sg_addr a;
    struct http_resp *r;
    struct gw gs;
    json_t *j;
    long n = -1;

    snprintf(root, sizeof root, "%s-small", file_root);
    CHECK(sg_proc_start(&small, argv, 10000) == 0);
    {
        const char *args[] = {"--file", small.addr, "--threads", "1", "--timeout", "10s", NULL};
        gw_start(&gs, args);
    }
    CHECK(sg_addr_parse(gs.base + strlen("http://"), &a, err, sizeof err) == 0);
    for (int i = 0; i < N_STALLED; i++) {
        char head[256];
        int len = snprintf(head, sizeof head,
                           "PUT /api/v1/files/stalled-%d.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Length: 100000\r\n\r\nx", i);
        CHECK(sg_connect(&a, SOCK_STREAM, 5000, &stalled[i], err, sizeof err) == 0);
        CHECK(sg_write_all(stalled[i], head, (size_t)len, sg_deadline_after(5000)) == SG_OK);
    }
    /* Every stalled upload has begun (the gauge counts them from their head) before the others are tried. */
    for (int i = 0; i < 500 && (n = gw_metric(&gs, "sockgate_uploads_in_flight")) < N_STALLED; i++)
        usleep(10 * 1000);
    CHECK_INT_EQ(n, N_STALLED);

    r = gw_do(&gs, "PUT", "/api/v1/files/fresh.txt", NULL, "uploaded past the stalled ones\n");
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    r = gw_do(&gs, "GET", "/api/v1/files/fresh.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "uploaded past the stalled ones\n");
    http_free(r);
    j = gw_expect_json(&gs, "GET", "/api/v1/files", NULL, NULL, 200);
    CHECK_INT_EQ((int)json_array_size(json_object_get(j, "files")), 1);
    json_decref(j);

    r = post_two_files(&gs, 4096);
    CHECK_INT_EQ(r->status, 413);
    CHECK(r->body && strstr(r->body, "file 2 of 2") && strstr(r->body, "none was kept"));
    http_free(r);
    j = gw_expect_json(&gs, "GET", "/api/v1/files", NULL, NULL, 200);
    CHECK_INT_EQ((int)json_array_size(json_object_get(j, "files")), 1); /* fresh.txt only: small.txt was removed */
    json_decref(j);
    snprintf(path, sizeof path, "%s/small.txt", root);
    CHECK(access(path, F_OK) != 0);

    for (int i = 0; i < N_STALLED; i++)
        close(stalled[i]);
    for (int i = 0; i < 500 && (n = gw_metric(&gs, "sockgate_uploads_in_flight")) != 0; i++)
        usleep(10 * 1000);
    CHECK_INT_EQ(n, 0);
    gw_stop(&gs);
    CHECK_INT_EQ(sg_proc_stop(&small, 10000), 0);
}

/*
 * A listener that never accepts, its one-place accept queue full: a connect
 * to it is neither accepted nor refused (Linux drops the SYN), the way a
 * backend behind a dead route or a full host looks. Returns the listener;
 * the filling connections go to fill[0..1].
 */
static int unanswering_listener(char *addr, size_t addrlen, int fill[2])
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(l >= 0);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(l, 0) == 0);
    CHECK(getsockname(l, (struct sockaddr *)&a, &len) == 0);
    snprintf(addr, addrlen, "127.0.0.1:%u", ntohs(a.sin_port));
    for (int i = 0; i < 2; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        CHECK(fill[i] >= 0);
        CHECK(connect(fill[i], (struct sockaddr *)&a, sizeof a) == 0 || errno == EINPROGRESS);
    }
    usleep(100 * 1000); /* the handshakes that fit are done */
    return l;
}

/*
 * The WebSocket echo bridge connects to the echo backend before its 101. On
 * a one-worker gateway whose echo backend never answers a connect, /healthz
 * is answered while that connect is pending (the socket has had no answer
 * yet), and the WebSocket request then gets its HTTP error (504, the connect
 * timed out) instead of a socket. A blocking connect held the worker until
 * it gave up, and answered the WebSocket first.
 */
static void test_ws_echo_connect_blocks_nothing(void)
{
    char addr[64], req[512];
    int fill[2], l = unanswering_listener(addr, sizeof addr, fill), fd;
    struct gw one;
    struct http_resp *r;
    struct pollfd p;
    char buf[4096];
    size_t got = 0;
    const char *args[] = {"--threads", "1", "--echo", addr, "--timeout-ms", "10000", NULL};

    gw_start(&one, args);
    fd = gw_connect_raw(&one);
    snprintf(req, sizeof req,
             "GET /api/v1/ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    send_all(fd, req, strlen(req));
    usleep(200 * 1000); /* the head is in: the connect has started */
    r = gw_do(&one, "GET", "/healthz", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    p = (struct pollfd){.fd = fd, .events = POLLIN};
    CHECK_INT_EQ(poll(&p, 1, 0), 0); /* /healthz went first: the WebSocket request is still waiting */
    for (;;) {
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "}"))
            break;
    }
    buf[got] = '\0';
    CHECK(strncmp(buf, "HTTP/1.1 504", 12) == 0);
    CHECK(strstr(buf, "\"timeout\"") != NULL);
    CHECK(strstr(buf, "connect timed out") != NULL);
    close(fd);
    gw_stop(&one);
    close(fill[0]);
    close(fill[1]);
    close(l);
}

int main(void)
{
    const char *echo_argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", NULL};
    const char *time_argv[] = {"sockgate-time", "--listen", "127.0.0.1:0", NULL};
    const char *exec_argv[] = {"sockgate-exec", "--listen", "127.0.0.1:0", "--allow", "echo", NULL};
    char dir[300];

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(file_root, sizeof file_root, "%s/root", dir);
    start_backend(&echo_p, echo_argv);
    start_backend(&time_p, time_argv);
    start_backend(&exec_p, exec_argv);
    start_file_backend("127.0.0.1:0");
    {
        const char *args[] = {"--echo", echo_p.addr, "--time", time_p.addr, "--exec", exec_p.addr,
                              "--file", file_p.addr, "--timeout-ms", "3000", NULL};
        gw_start(&g, args);
    }
    RUN_TEST(test_ready_with_separate_backends);
    RUN_TEST(test_every_row);
    RUN_TEST(test_file_backend_killed_during_upload);
    RUN_TEST(test_file_backend_killed_during_download);
    RUN_TEST(test_echo_backend_gone_and_back);
    RUN_TEST(test_silent_backend_times_out);
    RUN_TEST(test_garbage_backend_is_bad_gateway);
    RUN_TEST(test_pooled_death_replays_reads_only);
    RUN_TEST(test_wrong_service_is_not_believed);
    RUN_TEST(test_foreign_id_is_not_believed);
    RUN_TEST(test_stalled_download_blocks_nothing);
    RUN_TEST(test_stalled_uploads_hold_no_backend);
    RUN_TEST(test_ws_echo_connect_blocks_nothing);
    gw_stop(&g);
    stop_backend(&echo_p);
    stop_backend(&time_p);
    stop_backend(&exec_p);
    stop_backend(&file_p);
    sg_test_rmtree(dir);
    curl_global_cleanup();
    return TESTS_DONE();
}
