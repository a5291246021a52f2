/* test_echo_load.c - sockgate-echo under load: 1000 concurrent clients, and one that never reads. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "et_util.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define CLIENTS 1000
#define MESSAGES 100
#define MSG_MAX 96

/* One client of the concurrent test: which message it is on and how far that message got. */
struct client {
    int fd;
    int msg;
    size_t len, sent, received;
    char out[MSG_MAX], expect[MSG_MAX], in[MSG_MAX];
};

/* Message m of client c: its length varies so replies of different sizes interleave. */
static void make_message(struct client *cl, int c)
{
    int n = snprintf(cl->out, sizeof cl->out, "client %d says message %d ", c, cl->msg);
    int pad = (c * 7 + cl->msg * 13) % 40;
    for (int i = 0; i < pad; i++)
        cl->out[n + i] = (char)('a' + (i + c) % 26);
    cl->len = (size_t)(n + pad);
    for (size_t i = 0; i < cl->len; i++)
        cl->expect[i] = (cl->out[i] >= 'a' && cl->out[i] <= 'z') ? (char)(cl->out[i] - 32) : cl->out[i];
    cl->sent = cl->received = 0;
}

/* 1000 clients connected at once, each echoing 100 messages in turn, all checked byte for byte. */
static void test_thousand_clients(void)
{
    struct sg_proc p;
    const char *argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", NULL};
    struct client *cl = calloc(CLIENTS, sizeof *cl);
    struct pollfd *pfd = calloc(CLIENTS, sizeof *pfd);
    int64_t deadline;
    int done = 0, base_fds;

    CHECK(cl && pfd);
    CHECK(et_raise_fd_limit(CLIENTS + 256) >= CLIENTS + 64);
    et_start(&p, argv);
    base_fds = sg_proc_fd_count(p.pid);
    for (int c = 0; c < CLIENTS; c++) {
        cl[c].fd = et_tcp_connect(p.port);
        make_message(&cl[c], c);
    }
    deadline = sg_deadline_after(120000);
    while (done < CLIENTS) {
        int ready;
        CHECK(sg_now_ms() < deadline);
        for (int c = 0; c < CLIENTS; c++) {
            pfd[c].fd = cl[c].msg < MESSAGES ? cl[c].fd : -1;
            pfd[c].events = cl[c].sent < cl[c].len ? POLLOUT : POLLIN;
        }
        ready = poll(pfd, CLIENTS, 1000);
        CHECK(ready >= 0 || errno == EINTR);
        for (int c = 0; c < CLIENTS && ready > 0; c++) {
            struct client *k = &cl[c];
            if (!pfd[c].revents)
                continue;
            if (k->sent < k->len) {
                ssize_t w = send(k->fd, k->out + k->sent, k->len - k->sent, MSG_DONTWAIT | MSG_NOSIGNAL);
                CHECK(w > 0 || errno == EAGAIN);
                if (w > 0)
                    k->sent += (size_t)w;
                continue;
            }
            ssize_t n = recv(k->fd, k->in + k->received, k->len - k->received, MSG_DONTWAIT);
            CHECK(n > 0 || (n < 0 && errno == EAGAIN));
            if (n > 0)
                k->received += (size_t)n;
            if (k->received < k->len)
                continue;
            if (memcmp(k->in, k->expect, k->len) != 0) {
                fprintf(stderr, "client %d message %d: got '%.*s', expected '%.*s'\n", c, k->msg, (int)k->len,
                        k->in, (int)k->len, k->expect);
                CHECK(0);
            }
            if (++k->msg == MESSAGES)
                done++;
            else
                make_message(k, c);
        }
    }
    /* All were connected at once: the server held one descriptor per client. */
    CHECK_INT_EQ(sg_proc_fd_count(p.pid), base_fds + CLIENTS);
    for (int c = 0; c < CLIENTS; c++)
        close(cl[c].fd);
    CHECK_INT_EQ(sg_proc_stop(&p, 10000), 0);
    free(cl);
    free(pfd);
}

#define TOTAL (100u << 20)
#define CHUNK (64u << 10)

/* Fills buf with the pattern as it continues at offset of the stream ('a'..'z' repeating). */
static void pattern(unsigned char *buf, size_t len, size_t offset, int upper)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((upper ? 'A' : 'a') + (offset + i) % 26);
}

/*
 * A client sends 100 MiB and reads nothing: the server must stop reading it
 * (so the client stalls long before 100 MiB) without its memory growing,
 * keep serving others, and deliver every reply once the client reads.
 */
static void test_client_that_never_reads(void)
{
    struct sg_proc p;
    const char *argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", NULL};
    unsigned char *out = malloc(CHUNK), *in = malloc(CHUNK), *want = malloc(CHUNK);
    size_t sent = 0, received = 0;
    long rss0, rss1;
    int fd, other;
    int64_t deadline;

    CHECK(out && in && want);
    et_start(&p, argv);
    fd = et_tcp_connect(p.port);
    et_expect_reply(fd, "warm up", "WARM UP");
    rss0 = sg_proc_rss_kib(p.pid);
    CHECK(rss0 > 0);

    /* Phase 1: write only, until the socket takes nothing for a whole second. */
    deadline = sg_deadline_after(60000);
    while (sent < TOTAL && sg_now_ms() < deadline) {
        size_t n = TOTAL - sent < CHUNK ? TOTAL - sent : CHUNK;
        ssize_t w;
        if (sg_wait_fd(fd, POLLOUT, sg_deadline_after(1000)) == SG_ERR_TIMEOUT)
            break;
        pattern(out, n, sent, 0);
        w = send(fd, out, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        CHECK(w > 0 || errno == EAGAIN);
        if (w > 0)
            sent += (size_t)w;
    }
    rss1 = sg_proc_rss_kib(p.pid);
    fprintf(stderr, "stalled after %zu KiB sent; server RSS %ld KiB -> %ld KiB\n", sent >> 10, rss0, rss1);
    CHECK(sent < TOTAL);              /* backpressure reached the client */
    CHECK(rss1 - rss0 < 16 * 1024);   /* and the server held on to almost none of it */

    /* The loop is not stuck on the stalled client. */
    other = et_tcp_connect(p.port);
    et_expect_reply(other, "anyone there?", "ANYONE THERE?");
    close(other);

    /* Phase 2: read every reply (and send the rest); each byte must be the upper-cased byte sent. */
    deadline = sg_deadline_after(180000);
    while (received < TOTAL) {
        struct pollfd pf = {.fd = fd, .events = POLLIN | (sent < TOTAL ? POLLOUT : 0)};
        CHECK(sg_now_ms() < deadline);
        CHECK(poll(&pf, 1, 1000) >= 0 || errno == EINTR);
        if ((pf.revents & POLLOUT) && sent < TOTAL) {
            size_t n = TOTAL - sent < CHUNK ? TOTAL - sent : CHUNK;
            ssize_t w;
            pattern(out, n, sent, 0);
            w = send(fd, out, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            CHECK(w > 0 || errno == EAGAIN);
            if (w > 0)
                sent += (size_t)w;
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, in, CHUNK, MSG_DONTWAIT);
            CHECK(n > 0 || (n < 0 && errno == EAGAIN));
            if (n > 0) {
                pattern(want, (size_t)n, received, 1);
                CHECK(memcmp(in, want, (size_t)n) == 0);
                received += (size_t)n;
            }
        }
    }
    CHECK_INT_EQ(received, TOTAL);
    fprintf(stderr, "all 100 MiB echoed; server RSS now %ld KiB\n", sg_proc_rss_kib(p.pid));
    close(fd);
    CHECK_INT_EQ(sg_proc_stop(&p, 10000), 0);
    free(out);
    free(in);
    free(want);
}

/* The load generator (bench/) works against the real server and notices wrong replies. */
static void test_load_generator(void)
{
    struct sg_proc p;
    const char *argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", NULL};
    struct et_run_result *r = malloc(sizeof *r);
    char bin[512], pid[16];
    const char *load[] = {sg_test_bin("sockgate-echo-load", bin, sizeof bin), "--addr", p.addr, "--conns", "20",
                          "--pipeline", "4", "--size", "100", "--duration", "1", "--threads", "2", "--pid", pid,
                          NULL};
    const char *wrong[] = {bin, "--addr", p.addr, "--echo-mode", "plain", "--duration", "1", NULL};
    CHECK(r != NULL);
    et_start(&p, argv);
    snprintf(pid, sizeof pid, "%d", (int)p.pid);
    CHECK_INT_EQ(et_run(load, NULL, NULL, 30000, r), 0);
    fprintf(stderr, "%s", r->out);
    CHECK(strstr(r->out, "\"errors\":0") != NULL);
    CHECK(strstr(r->out, "\"round_trips\":0,") == NULL);
    CHECK(strstr(r->out, "\"server_rss_kib\":") != NULL);
    /* Expecting unchanged bytes from an upper-casing server: every reply is wrong. */
    CHECK_INT_EQ(et_run(wrong, NULL, NULL, 30000, r), 1);
    CHECK(strstr(r->err, "wrong reply") != NULL);
    CHECK_INT_EQ(sg_proc_stop(&p, 10000), 0);
    free(r);
}

int main(void)
{
    RUN_TEST(test_thousand_clients);
    RUN_TEST(test_client_that_never_reads);
    RUN_TEST(test_load_generator);
    return TESTS_DONE();
}
