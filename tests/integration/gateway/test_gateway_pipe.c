/* test_gateway_pipe.c - echo calls pipelined on one backend connection: every answer to its own call, whatever happens. */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

/* Returns the value of the metric line that starts with prefix (name and labels), or -1. */
static long long metric(struct gw *g, const char *prefix)
{
    struct http_resp *r = gw_do(g, "GET", "/metrics", NULL, NULL);
    const char *at = strstr(r->body, prefix);
    long long v = at ? atoll(at + strlen(prefix)) : -1;
    http_free(r);
    return v;
}

/* ---- many calls at once, through libcurl's multi interface ---- */

struct call {
    CURL *h;
    char *body;      /* the request's JSON */
    char *message;   /* what was sent, to check the reply against */
    char *reply;     /* the answer's body */
    size_t reply_len;
    struct curl_slist *headers;
    long status;
    CURLcode result;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct call *c = arg;
    char *grown = realloc(c->reply, c->reply_len + size * n + 1);
    CHECK(grown != NULL);
    c->reply = grown;
    memcpy(c->reply + c->reply_len, p, size * n);
    c->reply_len += size * n;
    c->reply[c->reply_len] = '\0';
    return size * n;
}

/* A message of len bytes only call k could have sent: its number, then letters in a pattern of its own. */
static char *make_message(int k, size_t len)
{
    char *m = malloc(len + 1);
    int head = snprintf(m, len + 1, "call %d ", k);
    CHECK(m != NULL);
    for (size_t i = (size_t)head; i < len; i++)
        m[i] = (char)('a' + (i * 7 + (size_t)k * 13) % 16); /* a to p: never a lone "q", the tutorial server's quit */
    m[len] = '\0';
    return m;
}

static void call_init(struct call *c, const char *url, char *message, long timeout_ms)
{
    json_t *j = json_pack("{s:s}", "message", message);
    memset(c, 0, sizeof *c);
    c->message = message;
    c->body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    c->headers = curl_slist_append(NULL, "Content-Type: application/json");
    c->h = curl_easy_init();
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, timeout_ms);
}

static void call_free(struct call *c)
{
    curl_easy_cleanup(c->h);
    curl_slist_free_all(c->headers);
    free(c->body);
    free(c->message);
    free(c->reply);
}

/* Runs every call of calls[0..n) at once until all ended. */
static void run_all(struct call *calls, int n)
{
    CURLM *m = curl_multi_init();
    int running = 0;
    CURLMsg *msg;
    int left;
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    for (int i = 0; i < n; i++)
        curl_multi_add_handle(m, calls[i].h);
    do {
        CHECK(curl_multi_perform(m, &running) == CURLM_OK);
        if (running)
            CHECK(curl_multi_poll(m, NULL, 0, 1000, NULL) == CURLM_OK);
    } while (running);
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
        struct call *c;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        c->result = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &c->status);
    }
    for (int i = 0; i < n; i++)
        curl_multi_remove_handle(m, calls[i].h);
    curl_multi_cleanup(m);
}

/* Checks that c was answered 200 with its own message upper-cased, nobody else's. */
static void check_own_reply(const struct call *c)
{
    json_t *j;
    char *want;
    size_t len = strlen(c->message);
    CHECK(c->result == CURLE_OK);
    CHECK_INT_EQ(c->status, 200);
    if (c->status != 200)
        return;
    j = json_loads(c->reply, 0, NULL);
    CHECK(j != NULL);
    want = malloc(len + 1);
    for (size_t i = 0; i <= len; i++)
        want[i] = (char)toupper((unsigned char)c->message[i]);
    CHECK(json_string_value(json_object_get(j, "reply")) != NULL &&
          strcmp(json_string_value(json_object_get(j, "reply")), want) == 0);
    free(want);
    json_decref(j);
}

/*
 * 300 echoes at once through one worker, of sizes from a few bytes to 60 KiB
 * (past the pipe's 64 KiB window together): each gets its own message back,
 * and they all went over one or two backend connections, not one each.
 */
static void test_concurrent_calls_share_a_connection(void)
{
    enum { N = 300 };
    const char *argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", NULL};
    const char *extra[] = {"--echo", NULL, "--threads", "1", NULL};
    struct sg_proc echo;
    struct gw g;
    struct call *calls = calloc(N, sizeof *calls);
    char url[200];
    long long connects;
    CHECK(sg_proc_start(&echo, argv, 10000) == 0);
    extra[1] = echo.addr;
    gw_start(&g, extra);
    snprintf(url, sizeof url, "%s/api/v1/echo", g.base);
    for (int k = 0; k < N; k++)
        call_init(&calls[k], url, make_message(k, k % 50 == 7 ? 60000 : 10 + (size_t)(k * 37) % 3000), 30000);
    run_all(calls, N);
    for (int k = 0; k < N; k++) {
        check_own_reply(&calls[k]);
        call_free(&calls[k]);
    }
    free(calls);
    connects = metric(&g, "sockgate_backend_connects_total{backend=\"echo\"} ");
    fprintf(stderr, "  %d calls at once: %lld echo connection(s) opened\n", N, connects);
    CHECK(connects >= 1 && connects <= 2);
    gw_stop(&g);
    CHECK_INT_EQ(sg_proc_stop(&echo, 10000), 0);
}

/* ---- an echo backend that takes its time ---- */

struct slow_echo {
    int fd;
    atomic_int delay_ms; /* before each answer */
    atomic_int stop;
    atomic_int conns;    /* connections accepted */
    pthread_t thread;
    char addr[SG_ADDR_STRLEN];
};

struct slow_conn {
    struct slow_echo *s;
    int fd;
};

/* Reads what comes and answers it upper-cased after the delay, as the tutorial's server would, slowly. */
static void *slow_conn_main(void *arg)
{
    struct slow_conn *sc = arg;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(sc->fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        usleep((useconds_t)atomic_load(&sc->s->delay_ms) * 1000u);
        for (ssize_t i = 0; i < n; i++)
            buf[i] = (char)toupper((unsigned char)buf[i]);
        if (sg_write_all(sc->fd, buf, (size_t)n, sg_deadline_after(5000)) != SG_OK)
            break;
    }
    close(sc->fd);
    free(sc);
    return NULL;
}

static void *slow_main(void *arg)
{
    struct slow_echo *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        struct slow_conn *sc;
        pthread_t t;
        int fd;
        if (poll(&p, 1, 50) <= 0 || (fd = accept(s->fd, NULL, NULL)) < 0)
            continue;
        atomic_fetch_add(&s->conns, 1);
        sc = malloc(sizeof *sc);
        sc->s = s;
        sc->fd = fd;
        CHECK(pthread_create(&t, NULL, slow_conn_main, sc) == 0);
        pthread_detach(t);
    }
    return NULL;
}

static void slow_start(struct slow_echo *s, int delay_ms)
{
    struct sg_addr a;
    char err[256];
    memset(s, 0, sizeof *s);
    atomic_store(&s->delay_ms, delay_ms);
    CHECK(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err) == 0);
    CHECK(sg_listen(&a, SOCK_STREAM, &s->fd, err, sizeof err) == 0);
    sg_local_addr(s->fd, s->addr, sizeof s->addr);
    CHECK(pthread_create(&s->thread, NULL, slow_main, s) == 0);
}

static void slow_stop(struct slow_echo *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/*
 * A client that leaves while its long message is on the wire: its answer
 * still comes down the shared connection, and must be read and dropped, not
 * handed to the calls behind it. Those are answered with their own messages.
 */
static void test_left_call_does_not_shift_answers(void)
{
    struct slow_echo s;
    struct gw g;
    struct call calls[3];
    char url[200];
    const char *extra[] = {"--echo", NULL, "--threads", "1", "--timeout-ms", "10000", NULL};
    slow_start(&s, 400);
    extra[1] = s.addr;
    gw_start(&g, extra);
    snprintf(url, sizeof url, "%s/api/v1/echo", g.base);
    /* The first leaves after 150 ms, well before its answer; the two others wait for theirs. */
    call_init(&calls[0], url, make_message(0, 50000), 150);
    call_init(&calls[1], url, make_message(1, 300), 10000);
    call_init(&calls[2], url, make_message(2, 20), 10000);
    run_all(calls, 3);
    CHECK(calls[0].result == CURLE_OPERATION_TIMEDOUT);
    check_own_reply(&calls[1]);
    check_own_reply(&calls[2]);
    for (int k = 0; k < 3; k++)
        call_free(&calls[k]);
    /* And the next call, on the same connection, is not handed what is left of anyone's answer. */
    atomic_store(&s.delay_ms, 0);
    call_init(&calls[0], url, make_message(3, 100), 10000);
    run_all(calls, 1);
    check_own_reply(&calls[0]);
    call_free(&calls[0]);
    CHECK_INT_EQ(atomic_load(&s.conns), 1);
    gw_stop(&g);
    slow_stop(&s);
}

/*
 * A backend that stalls past the deadline: the call behind nobody gets 504,
 * the stalled connection is dropped (its late answer can never be taken for
 * a later call's), and once the backend is quick again calls are answered.
 */
static void test_stalled_connection_is_replaced(void)
{
    struct slow_echo s;
    struct gw g;
    struct call calls[1];
    char url[200];
    const char *extra[] = {"--echo", NULL, "--threads", "1", "--timeout-ms", "500", NULL};
    slow_start(&s, 2000);
    extra[1] = s.addr;
    gw_start(&g, extra);
    snprintf(url, sizeof url, "%s/api/v1/echo", g.base);
    gw_expect_error(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"stalled\"}", 504, "timeout");
    atomic_store(&s.delay_ms, 0);
    call_init(&calls[0], url, make_message(1, 64), 10000);
    run_all(calls, 1);
    check_own_reply(&calls[0]);
    call_free(&calls[0]);
    CHECK_INT_EQ(atomic_load(&s.conns), 2);
    gw_stop(&g);
    slow_stop(&s);
}

/* Starts the tutorial's echo server (python3) on a free port; returns its pid and the port in *port. */
static pid_t tutorial_server_start(const char *dir, int *port)
{
    char out[400], script[400];
    pid_t pid;
    snprintf(out, sizeof out, "%s/tutorial-server.out", dir);
    snprintf(script, sizeof script, "%s/tutorial_echo_server.py", SG_TEST_SOURCE_DIR);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0)
            _exit(126);
        execlp("python3", "python3", "-u", script, "0", (char *)NULL);
        _exit(127);
    }
    sg_test_kill_at_exit(pid);
    *port = 0;
    for (int i = 0; i < 100 && *port == 0; i++) { /* the port is the first line it prints */
        FILE *f = fopen(out, "r");
        if (f) {
            if (fscanf(f, "%d", port) != 1)
                *port = 0;
            fclose(f);
        }
        if (*port == 0)
            usleep(50000);
    }
    CHECK(*port > 0);
    return pid;
}

/*
 * The tutorial's own echo server as the echo backend: it serves one
 * connection at a time, reads 1,024 bytes at a time and answers each read
 * upper-cased. 50 calls at once through one worker go down one connection
 * and each gets its own message back. (With a connection per call, the
 * 49 others waited behind the first for a server that never accepts them.)
 */
static void test_tutorial_server_behind_the_pipe(void)
{
    enum { N = 50 };
    char dir[300], addr[64], url[200];
    const char *extra[] = {"--echo", addr, "--threads", "1", "--timeout-ms", "10000", NULL};
    struct call calls[N];
    struct gw g;
    int port, status;
    pid_t pid;
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    pid = tutorial_server_start(dir, &port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    gw_start(&g, extra);
    snprintf(url, sizeof url, "%s/api/v1/echo", g.base);
    for (int k = 0; k < N; k++)
        call_init(&calls[k], url, make_message(k, 10 + (size_t)(k * 61) % 3000), 20000);
    run_all(calls, N);
    for (int k = 0; k < N; k++) {
        check_own_reply(&calls[k]);
        call_free(&calls[k]);
    }
    gw_stop(&g);
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    sg_test_forget(pid);
    sg_test_rmtree(dir);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    RUN_TEST(test_concurrent_calls_share_a_connection);
    RUN_TEST(test_left_call_does_not_shift_answers);
    RUN_TEST(test_stalled_connection_is_replaced);
    RUN_TEST(test_tutorial_server_behind_the_pipe);
    curl_global_cleanup();
    return TESTS_DONE();
}
