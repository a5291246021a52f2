/*
 * test_gateway_balance.c - the gateway as a client-side load balancer: real backends on several
 * loopback addresses (127.0.0.2, .3, .4), spread, ejection, recovery, retries, at-most-once, drain.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "gwtest.h"

#define N_REPLICAS 3

static char dir[256];
static char workdir[N_REPLICAS][300];
static struct sg_proc exec_p[N_REPLICAS];
static char replica_addr[N_REPLICAS][64]; /* "127.0.0.N:PORT" */

static void start_exec(int i, const char *listen)
{
    const char *argv[] = {"sockgate-exec", "--listen", listen, "--allow", "pwd,echo,sleep", "--workdir", workdir[i],
                          "--sandbox", "off", NULL};
    CHECK(sg_proc_start(&exec_p[i], argv, 10000) == 0);
    snprintf(replica_addr[i], sizeof replica_addr[i], "%.63s", exec_p[i].addr);
}

/* Runs pwd through the gateway and returns which replica answered (its workdir), or -1 after a non-200. */
static int which_replica(struct gw *g)
{
    struct http_resp *r = gw_do(g, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"pwd\"]}");
    int who = -1;
    if (r->status == 200) {
        json_t *j = http_json(r);
        const char *out = json_string_value(json_object_get(j, "stdout"));
        for (int i = 0; out && i < N_REPLICAS; i++)
            if (strncmp(out, workdir[i], strlen(workdir[i])) == 0 && out[strlen(workdir[i])] == '\n')
                who = i;
        CHECK(who >= 0); /* a 200 is always one of ours */
        json_decref(j);
    } else {
        fprintf(stderr, "exec answered %ld: %s\n", r->status, r->body);
    }
    http_free(r);
    return who;
}

/* Returns the state /readyz gives the exec address addr ("healthy", "ejected"...), in a static buffer. */
static const char *address_state(struct gw *g, const char *addr)
{
    static char state[32];
    struct http_resp *r = gw_do(g, "GET", "/readyz", NULL, NULL);
    json_t *j = http_json(r), *list = json_object_get(json_object_get(json_object_get(j, "backends"), "exec"), "addresses");
    size_t i;
    json_t *one;
    snprintf(state, sizeof state, "absent");
    json_array_foreach(list, i, one)
        if (strcmp(json_string_value(json_object_get(one, "address")), addr) == 0)
            snprintf(state, sizeof state, "%s", json_string_value(json_object_get(one, "state")));
    json_decref(j);
    http_free(r);
    return state;
}

/* Polls /readyz (at most about 15 s, a bound, not a measured time) until addr is in state want. */
static void wait_state(struct gw *g, const char *addr, const char *want)
{
    for (int i = 0; i < 300; i++) {
        if (strcmp(address_state(g, addr), want) == 0)
            return;
        usleep(50 * 1000);
    }
    fprintf(stderr, "address %s never became %s (now %s)\n", addr, want, address_state(g, addr));
    CHECK(0);
}

/* Returns the value of a /metrics line "name{backend=\"exec\",address=\"addr\"} V", or -1. */
static long metric(struct gw *g, const char *name, const char *backend, const char *addr)
{
    struct http_resp *r = gw_do(g, "GET", "/metrics", NULL, NULL);
    char key[300];
    const char *p;
    long v = -1;
    snprintf(key, sizeof key, "%s{backend=\"%s\",address=\"%s\"} ", name, backend, addr);
    p = strstr(r->body, key);
    if (p)
        v = strtol(p + strlen(key), NULL, 10);
    http_free(r);
    return v;
}

static struct gw g;

static void test_spread_over_every_replica(void)
{
    int seen[N_REPLICAS] = {0};
    for (int k = 0; k < 60; k++) {
        int who = which_replica(&g);
        CHECK(who >= 0);
        seen[who]++;
    }
    fprintf(stderr, "60 calls: %d / %d / %d\n", seen[0], seen[1], seen[2]);
    for (int i = 0; i < N_REPLICAS; i++) {
        CHECK(seen[i] > 0);
        CHECK_STR_EQ(address_state(&g, replica_addr[i]), "healthy");
        CHECK(metric(&g, "sockgate_backend_address_calls_total", "exec", replica_addr[i]) >= seen[i]);
    }
}

/* A replica that dies costs no failed call: connects it refuses move to the others, and it is ejected. */
static void test_dead_replica_ejected_then_readmitted(void)
{
    char listen[64];
    int hold;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    int one = 1;
    snprintf(listen, sizeof listen, "%s", replica_addr[1]);
    kill(exec_p[1].pid, SIGKILL);
    waitpid(exec_p[1].pid, NULL, 0);
    sg_test_forget(exec_p[1].pid);
    exec_p[1].pid = 0;
    /* Hold its port (bound, not listening: connects are refused) so nobody else takes it before the restart. */
    hold = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    inet_pton(AF_INET, exec_p[1].host, &sin.sin_addr);
    sin.sin_port = htons(exec_p[1].port);
    setsockopt(hold, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    CHECK(bind(hold, (struct sockaddr *)&sin, sizeof sin) == 0);

    for (int k = 0; k < 40; k++) {
        int who = which_replica(&g);
        CHECK(who == 0 || who == 2); /* every call answered, none by the dead one */
    }
    CHECK_STR_EQ(address_state(&g, replica_addr[1]), "ejected");
    CHECK(metric(&g, "sockgate_backend_address_ejections_total", "exec", replica_addr[1]) >= 1);
    CHECK(metric(&g, "sockgate_backend_address_failures_total", "exec", replica_addr[1]) >= 1);

    /* Back at the same address: the probe readmits it and calls reach it again. */
    close(hold);
    start_exec(1, listen);
    wait_state(&g, replica_addr[1], "healthy");
    for (int k = 0, got = 0; !got; k++) {
        CHECK(k < 200);
        got = which_replica(&g) == 1;
    }
}

/* ---- hostile replicas: a listener that takes a request and hangs up without answering ---- */

struct hangup_server {
    int fd;
    char addr[64];
    atomic_int requests; /* connections on which at least one request byte arrived */
    atomic_int stop;
    pthread_t thread;
};

static void *hangup_main(void *arg)
{
    struct hangup_server *h = arg;
    while (!atomic_load(&h->stop)) {
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        int c;
        if (poll(&p, 1, 100) <= 0)
            continue;
        c = accept(h->fd, NULL, NULL);
        if (c < 0)
            continue;
        p.fd = c;
        if (poll(&p, 1, 5000) > 0) {
            char buf[4096];
            if (recv(c, buf, sizeof buf, 0) > 0)
                atomic_fetch_add(&h->requests, 1);
        }
        close(c); /* after reading the request: the backend may have acted on it */
    }
    return NULL;
}

static void hangup_start(struct hangup_server *h, const char *ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof sin;
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    inet_pton(AF_INET, ip, &sin.sin_addr);
    CHECK(bind(h->fd, (struct sockaddr *)&sin, sizeof sin) == 0 && listen(h->fd, 64) == 0);
    CHECK(getsockname(h->fd, (struct sockaddr *)&sin, &len) == 0);
    snprintf(h->addr, sizeof h->addr, "%s:%u", ip, ntohs(sin.sin_port));
    atomic_init(&h->requests, 0);
    atomic_init(&h->stop, 0);
    CHECK(pthread_create(&h->thread, NULL, hangup_main, h) == 0);
}

static void hangup_stop(struct hangup_server *h)
{
    atomic_store(&h->stop, 1);
    pthread_join(h->thread, NULL);
    close(h->fd);
}

/* An exec that reached a replica which then hung up is never sent again: 502, and one request arrived in all. */
static void test_exec_at_most_once(void)
{
    struct hangup_server a, b;
    struct gw gh;
    char list[200];
    hangup_start(&a, "127.0.0.5");
    hangup_start(&b, "127.0.0.6");
    snprintf(list, sizeof list, "%s,%s", a.addr, b.addr);
    {
        const char *extra[] = {"--exec", list, "--eject-ms", "10000", NULL};
        gw_start(&gh, extra);
    }
    for (int k = 0; k < 3; k++) {
        struct http_resp *r = gw_do(&gh, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\", \"once\"]}");
        CHECK_INT_EQ(r->status, 502);
        http_free(r);
        CHECK_INT_EQ(atomic_load(&a.requests) + atomic_load(&b.requests), k + 1);
    }
    gw_stop(&gh);
    hangup_stop(&a);
    hangup_stop(&b);
}

/* An echo (it only reads) whose replica hung up mid-way moves to another one: every call answered. */
static void test_read_retried_elsewhere(void)
{
    struct hangup_server bad;
    struct sg_proc echo_p;
    struct gw ge;
    char list[200];
    const char *echo_argv[] = {"sockgate-echo", "--listen", "127.0.0.7:0", NULL};
    hangup_start(&bad, "127.0.0.6");
    CHECK(sg_proc_start(&echo_p, echo_argv, 10000) == 0);
    snprintf(list, sizeof list, "%s,%s", bad.addr, echo_p.addr);
    {
        const char *extra[] = {"--echo", list, NULL};
        gw_start(&ge, extra);
    }
    for (int k = 0; k < 20; k++) {
        json_t *j = gw_expect_json(&ge, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"again\"}", 200);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "AGAIN");
        json_decref(j);
    }
    CHECK(atomic_load(&bad.requests) >= 1); /* it was tried, and the call went on elsewhere */
    CHECK(metric(&ge, "sockgate_backend_address_failures_total", "echo", bad.addr) >= 1);
    gw_stop(&ge);
    CHECK_INT_EQ(sg_proc_stop(&echo_p, 10000), 0);
    hangup_stop(&bad);
}

/* A replica stopped (SIGTERM, with a drain) while calls stream: every call is answered by one replica or the other. */
static void test_backend_drain_without_errors(void)
{
    struct sg_proc e1, e2;
    struct gw ge;
    char list[300];
    const char *argv1[] = {"sockgate-echo", "--listen", "127.0.0.8:0", "--drain-ms", "300", NULL};
    const char *argv2[] = {"sockgate-echo", "--listen", "127.0.0.9:0", "--drain", "300ms", NULL};
    int status, is_stopped = 0;
    CHECK(sg_proc_start(&e1, argv1, 10000) == 0);
    CHECK(sg_proc_start(&e2, argv2, 10000) == 0);
    snprintf(list, sizeof list, "%s,%s", e1.addr, e2.addr);
    {
        const char *extra[] = {"--echo", list, NULL};
        gw_start(&ge, extra);
    }
    for (int k = 0; k < 300; k++) {
        json_t *j;
        if (k == 50)
            kill(e1.pid, SIGTERM);
        if (!is_stopped && k > 50 && waitpid(e1.pid, &status, WNOHANG) == e1.pid) {
            is_stopped = 1;
            sg_test_forget(e1.pid);
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        j = gw_expect_json(&ge, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"steady\"}", 200);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "STEADY");
        json_decref(j);
    }
    if (!is_stopped) { /* a slow machine: the calls outran the drain; the check that counts is that none failed */
        CHECK(waitpid(e1.pid, &status, 0) == e1.pid);
        sg_test_forget(e1.pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    e1.pid = 0;
    {
        json_t *j = gw_expect_json(&ge, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"after\"}", 200);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "AFTER");
        json_decref(j);
    }
    gw_stop(&ge);
    CHECK_INT_EQ(sg_proc_stop(&e2, 10000), 0);
}

/* Returns the pid's exit status once it exited (0 while it runs); records it in *is_gone. */
static void reap_if_gone(pid_t pid, int *is_gone)
{
    int status;
    if (!*is_gone && waitpid(pid, &status, WNOHANG) == pid) {
        *is_gone = 1;
        sg_test_forget(pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* Runs echo steady through g; on a failure shows the logs of the gateway and of the draining replica. */
static json_t *steady_exec(struct gw *gx, const struct sg_proc *draining)
{
    struct http_resp *r = gw_do(gx, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\", \"steady\"]}");
    json_t *j;
    if (r->status != 200) {
        char cmd[1200];
        fprintf(stderr, "exec answered %ld: %s\n", r->status, r->body);
        snprintf(cmd, sizeof cmd, "tail -n 20 %s; echo ===; tail -n 20 %s", gx->proc.log_path, draining->log_path);
        CHECK(system(cmd) >= 0);
        CHECK(0);
    }
    j = http_json(r);
    http_free(r);
    return j;
}

/*
 * An exec replica and an echo replica stopped with a drain while exec and echo calls stream,
 * their pooled connections idle in the gateway: the drain closes those at once, and no call fails,
 * not even an exec (never repeated once it may have run, so it must never go out on a closed one).
 */
static void test_exec_drain_without_errors(void)
{
    struct sg_proc x1, x2, e1, e2;
    struct gw ge;
    char xlist[300], elist[300];
    const char *xargv1[] = {"sockgate-exec", "--listen", "127.0.0.10:0", "--allow", "echo", "--workdir", workdir[0],
                            "--sandbox", "off", "--drain", "400ms", NULL};
    const char *xargv2[] = {"sockgate-exec", "--listen", "127.0.0.11:0", "--allow", "echo", "--workdir", workdir[2],
                            "--sandbox", "off", NULL};
    const char *eargv1[] = {"sockgate-echo", "--listen", "127.0.0.12:0", "--drain", "400ms", NULL};
    const char *eargv2[] = {"sockgate-echo", "--listen", "127.0.0.13:0", NULL};
    int x_gone = 0, e_gone = 0, after = 0;
    CHECK(sg_proc_start(&x1, xargv1, 10000) == 0);
    CHECK(sg_proc_start(&x2, xargv2, 10000) == 0);
    CHECK(sg_proc_start(&e1, eargv1, 10000) == 0);
    CHECK(sg_proc_start(&e2, eargv2, 10000) == 0);
    snprintf(xlist, sizeof xlist, "%s,%s", x1.addr, x2.addr);
    snprintf(elist, sizeof elist, "%s,%s", e1.addr, e2.addr);
    {
        const char *extra[] = {"--exec", xlist, "--echo", elist, NULL};
        gw_start(&ge, extra);
    }
    /* Bounded: 2,000 rounds, or 40 rounds after both drained replicas exited. */
    for (int k = 0; k < 2000 && after < 40; k++) {
        json_t *j;
        if (k == 40) { /* by now both replicas of each have pooled connections in the gateway */
            CHECK(metric(&ge, "sockgate_backend_address_calls_total", "exec", x1.addr) > 0);
            CHECK(metric(&ge, "sockgate_backend_address_calls_total", "echo", e1.addr) > 0);
            kill(x1.pid, SIGTERM);
            kill(e1.pid, SIGTERM);
        }
        if (k > 40) {
            reap_if_gone(x1.pid, &x_gone);
            reap_if_gone(e1.pid, &e_gone);
            after += x_gone && e_gone;
        }
        j = steady_exec(&ge, &x1);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "steady\n");
        json_decref(j);
        j = gw_expect_json(&ge, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"steady\"}", 200);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "STEADY");
        json_decref(j);
    }
    CHECK(x_gone && e_gone);
    x1.pid = e1.pid = 0;
    gw_stop(&ge);
    CHECK_INT_EQ(sg_proc_stop(&x2, 10000), 0);
    CHECK_INT_EQ(sg_proc_stop(&e2, 10000), 0);
}

/* Returns 1 after a 200 from GET /api/v1/time with a "time" field, else 0 (logged). */
static int time_ok(struct gw *gx)
{
    struct http_resp *r = gw_do(gx, "GET", "/api/v1/time", NULL, NULL);
    int ok = 0;
    if (r->status == 200) {
        json_t *j = http_json(r);
        ok = json_string_value(json_object_get(j, "time")) != NULL;
        json_decref(j);
    }
    if (!ok)
        fprintf(stderr, "time answered %ld: %s\n", r->status, r->body);
    http_free(r);
    return ok;
}

/*
 * A time call (a datagram: it only reads) moves to the other address within the same call, when
 * its address is stopped (no answer within its share of --timeout) and when it is gone (ICMP
 * port unreachable): every call is answered, and the bad address shows failures.
 */
static void test_time_moves_to_another_address(void)
{
    struct sg_proc t1, t2;
    struct gw gt;
    char list[300];
    const char *argv1[] = {"sockgate-time", "--listen", "127.0.0.14:0", NULL};
    const char *argv2[] = {"sockgate-time", "--listen", "127.0.0.15:0", NULL};
    CHECK(sg_proc_start(&t1, argv1, 10000) == 0);
    CHECK(sg_proc_start(&t2, argv2, 10000) == 0);
    snprintf(list, sizeof list, "%s,%s", t1.addr, t2.addr);
    {
        /* A long ejection: an address stays out once ejected, so the calls that meet it come first. */
        const char *extra[] = {"--time", list, "--timeout", "4s", "--eject", "30s", NULL};
        gw_start(&gt, extra);
    }
    for (int k = 0; k < 10; k++)
        CHECK(time_ok(&gt));
    CHECK(metric(&gt, "sockgate_backend_address_calls_total", "time", t1.addr) > 0);

    /* Stopped: silent. Calls that go to it move on after its share of the deadline. */
    CHECK(kill(t1.pid, SIGSTOP) == 0);
    for (int k = 0; k < 200 && metric(&gt, "sockgate_backend_address_failures_total", "time", t1.addr) < 1; k++)
        CHECK(time_ok(&gt));
    CHECK(metric(&gt, "sockgate_backend_address_failures_total", "time", t1.addr) >= 1);
    CHECK(kill(t1.pid, SIGKILL) == 0);
    waitpid(t1.pid, NULL, 0);
    sg_test_forget(t1.pid);
    t1.pid = 0;
    gw_stop(&gt);

    /* Gone: refused at once (ICMP). A fresh gateway, so the address is not already ejected. */
    {
        const char *extra[] = {"--time", list, "--timeout", "4s", "--eject", "30s", NULL};
        gw_start(&gt, extra);
    }
    for (int k = 0; k < 200 && metric(&gt, "sockgate_backend_address_failures_total", "time", t1.addr) < 1; k++)
        CHECK(time_ok(&gt));
    CHECK(metric(&gt, "sockgate_backend_address_failures_total", "time", t1.addr) >= 1);
    for (int k = 0; k < 10; k++)
        CHECK(time_ok(&gt));
    gw_stop(&gt);
    CHECK_INT_EQ(sg_proc_stop(&t2, 10000), 0);
}

/* SIGTERM: /readyz is 503 at once while the API still serves for --drain, then a clean exit. */
static void test_gateway_drain(void)
{
    struct gw gd;
    struct http_resp *r;
    json_t *j;
    int status;
    char list[200];
    snprintf(list, sizeof list, "%s,%s", replica_addr[0], replica_addr[2]);
    {
        const char *extra[] = {"--exec", list, "--drain-ms", "4000", NULL};
        gw_start(&gd, extra);
    }
    r = gw_do(&gd, "GET", "/readyz", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    kill(gd.proc.pid, SIGTERM);
    for (int k = 0; k < 50; k++) { /* the log line says the drain began; until then the signal may be in flight */
        FILE *f = fopen(gd.proc.log_path, "r");
        char line[512];
        int seen = 0;
        while (f && fgets(line, sizeof line, f))
            seen |= strstr(line, "draining") != NULL;
        if (f)
            fclose(f);
        if (seen)
            break;
        usleep(20 * 1000);
    }
    r = gw_do(&gd, "GET", "/readyz", NULL, NULL);
    j = http_ok_json(r, 503);
    CHECK(json_is_true(json_object_get(j, "draining")));
    json_decref(j);
    http_free(r);
    CHECK(which_replica(&gd) >= 0); /* still serving */
    waitpid(gd.proc.pid, &status, 0);
    sg_test_forget(gd.proc.pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    gd.proc.pid = 0;
    sg_test_rmtree(gd.dir);
}

int main(void)
{
    char list[300];
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    for (int i = 0; i < N_REPLICAS; i++) {
        char listen[64];
        snprintf(workdir[i], sizeof workdir[i], "%s/replica%d", dir, i);
        CHECK(mkdir(workdir[i], 0700) == 0);
        snprintf(listen, sizeof listen, "127.0.0.%d:0", i + 2);
        start_exec(i, listen);
    }
    snprintf(list, sizeof list, "%s,%s,%s", replica_addr[0], replica_addr[1], replica_addr[2]);
    {
        /* A short ejection, so the recovery case's probe comes soon. */
        const char *extra[] = {"--exec", list, "--eject-ms", "200", NULL};
        gw_start(&g, extra);
    }
    RUN_TEST(test_spread_over_every_replica);
    RUN_TEST(test_dead_replica_ejected_then_readmitted);
    RUN_TEST(test_exec_at_most_once);
    RUN_TEST(test_read_retried_elsewhere);
    RUN_TEST(test_backend_drain_without_errors);
    RUN_TEST(test_exec_drain_without_errors);
    RUN_TEST(test_time_moves_to_another_address);
    RUN_TEST(test_gateway_drain);
    gw_stop(&g);
    for (int i = 0; i < N_REPLICAS; i++)
        CHECK_INT_EQ(sg_proc_stop(&exec_p[i], 10000), 0);
    sg_test_rmtree(dir);
    return TESTS_DONE();
}
