/* test_echo.c - sockgate-echo over real sockets: the tutorial's exchanges, UDP, limits and timeouts. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "et_util.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"
#include "echo/udp_guard.h"

static struct sg_proc echo; /* one upper-casing server shared by most cases */
static int echo_idle_fds;     /* its descriptors with no client connected, counted at start */

static void start_echo(struct sg_proc *p, const char *extra1, const char *extra2)
{
    const char *argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", extra1, extra2, NULL};
    et_start(p, argv);
}

/* The tutorial's first client: send "hello", print what comes back. */
static void test_tutorial_hello(void)
{
    int fd = et_tcp_connect(echo.port);
    et_expect_reply(fd, "hello", "HELLO");
    close(fd);
}

/* The tutorial's second and third clients: many messages on one connection. */
static void test_message_loop(void)
{
    int fd = et_tcp_connect(echo.port);
    char msg[64], expect[64];
    for (int i = 0; i < 50; i++) {
        snprintf(msg, sizeof msg, "message %d: Mixed Case, digits 0123 and {}[]!", i);
        snprintf(expect, sizeof expect, "MESSAGE %d: MIXED CASE, DIGITS 0123 AND {}[]!", i);
        et_expect_reply(fd, msg, expect);
    }
    close(fd);
}

/* The tutorial's sticky-packet example: two quick writes come back as the ten bytes, in order. */
static void test_two_quick_writes(void)
{
    int fd = et_tcp_connect(echo.port);
    char got[11] = {0};
    CHECK(send(fd, "hello", 5, 0) == 5);
    CHECK(send(fd, "world", 5, 0) == 5);
    CHECK_INT_EQ(sg_read_full(fd, got, 10, sg_deadline_after(10000)), SG_OK);
    CHECK_STR_EQ(got, "HELLOWORLD");
    close(fd);
}

/* Bytes that are not ASCII letters come back unchanged (UTF-8 text stays valid UTF-8). */
static void test_binary_and_utf8(void)
{
    int fd = et_tcp_connect(echo.port);
    unsigned char all[256], got[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    CHECK_INT_EQ(sg_write_all(fd, all, sizeof all, sg_deadline_after(10000)), SG_OK);
    CHECK_INT_EQ(sg_read_full(fd, got, sizeof got, sg_deadline_after(10000)), SG_OK);
    for (int i = 0; i < 256; i++)
        CHECK_INT_EQ(got[i], (i >= 'a' && i <= 'z') ? i - 32 : i);
    et_expect_reply(fd, "héllo 世界", "HéLLO 世界");
    close(fd);
}

/* A connection stays open between messages while other clients come and go. */
static void test_connections_stay_open(void)
{
    int a = et_tcp_connect(echo.port), b;
    et_expect_reply(a, "first", "FIRST");
    b = et_tcp_connect(echo.port);
    et_expect_reply(b, "other", "OTHER");
    close(b);
    CHECK_INT_EQ(et_wait_closed(a, 200), 0);
    et_expect_reply(a, "second", "SECOND");
    close(a);
}

/* A client that sends, then shuts down its side still gets every reply byte, then EOF. */
static void test_half_close_flushes(void)
{
    enum { LEN = 1 << 20 };
    int fd = et_tcp_connect(echo.port);
    unsigned char *msg = malloc(LEN), *got = malloc(LEN);
    size_t sent = 0, received = 0;
    int64_t deadline = sg_deadline_after(30000);
    CHECK(msg && got);
    for (size_t i = 0; i < LEN; i++)
        msg[i] = (unsigned char)('a' + i % 26);
    /* Write and read together: the server stops reading a client that does not read. */
    while (received < LEN) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (sent < LEN ? POLLOUT : 0)};
        CHECK(sg_now_ms() < deadline);
        CHECK(poll(&p, 1, 1000) >= 0);
        if ((p.revents & POLLOUT) && sent < LEN) {
            ssize_t w = send(fd, msg + sent, LEN - sent, MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
            if (sent == LEN)
                CHECK(shutdown(fd, SHUT_WR) == 0);
        }
        if (p.revents & POLLIN) {
            ssize_t n = recv(fd, got + received, LEN - received, MSG_DONTWAIT);
            CHECK(n != 0);
            if (n > 0)
                received += (size_t)n;
        }
    }
    for (size_t i = 0; i < LEN; i++)
        CHECK_INT_EQ(got[i], 'A' + i % 26);
    CHECK_INT_EQ(et_wait_closed(fd, 10000), 1);
    close(fd);
    free(msg);
    free(got);
}

/* The tutorial's UDP client: "hello" comes back upper-cased to the sender. */
static void test_udp_hello(void)
{
    int fd = et_udp_connect(echo.port);
    char got[16] = {0};
    CHECK_INT_EQ(et_udp_ask(fd, "hello", 5, got, sizeof got - 1), 5);
    CHECK_STR_EQ(got, "HELLO");
    close(fd);
}

/*
 * Asks one question on a socket of its own: et_udp_ask sends again after 2 s
 * without an answer, and the late answer to the first send must not be read
 * as the answer to a later question.
 */
static long udp_ask_once(const void *msg, size_t len, void *reply, size_t cap)
{
    int fd = et_udp_connect(echo.port), size = 1 << 20;
    long n;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size); /* best effort: room for a big reply */
    n = et_udp_ask(fd, msg, len, reply, cap);
    close(fd);
    return n;
}

/* Oversized, binary and empty datagrams: answered with their exact copy, and the server lives on. */
static void test_udp_bad_input(void)
{
    enum { MAX = 65507 };
    int fd = et_udp_connect(echo.port), sfd;
    unsigned char *big = malloc(MAX), *got = malloc(MAX + 1);
    char small[8];
    CHECK(big && got);
    for (int i = 0; i < MAX; i++)
        big[i] = (unsigned char)(i * 7);
    CHECK_INT_EQ(udp_ask_once(big, MAX, got, MAX + 1), MAX);
    for (int i = 0; i < MAX; i++) {
        int b = (unsigned char)(i * 7);
        CHECK_INT_EQ(got[i], (b >= 'a' && b <= 'z') ? b - 32 : b);
    }
    /* One byte over the UDP limit cannot even be sent: the kernel refuses it. */
    CHECK(send(fd, big, MAX + 1, 0) < 0 && errno == EMSGSIZE);
    CHECK_INT_EQ(udp_ask_once("", 0, got, MAX), 0);
    CHECK_INT_EQ(udp_ask_once("\0\xff\x80q", 4, got, MAX), 4);
    CHECK(memcmp(got, "\0\xff\x80Q", 4) == 0);
    CHECK_INT_EQ(udp_ask_once("still", 5, small, sizeof small), 5);
    CHECK(memcmp(small, "STILL", 5) == 0);
    /* TCP is unaffected. */
    sfd = et_tcp_connect(echo.port);
    et_expect_reply(sfd, "tcp too", "TCP TOO");
    close(sfd);
    close(fd);
    free(big);
    free(got);
}

static struct sockaddr_in v4(const char *ip, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    CHECK(inet_pton(AF_INET, ip, &a.sin_addr) == 1);
    return a;
}

static struct sockaddr_in6 v6(const char *ip, uint16_t port)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    CHECK(inet_pton(AF_INET6, ip, &a.sin6_addr) == 1);
    return a;
}

#define ALLOWED(sa) udp_reply_allowed((const struct sockaddr *)&(sa), 9001)

/* The reflection guard (forged sources cannot be sent from a test, so it is checked directly). */
static void test_udp_guard(void)
{
    struct sockaddr_in a;
    struct sockaddr_in6 b;
    a = v4("127.0.0.1", 40000);
    CHECK_INT_EQ(ALLOWED(a), 1);
    a = v4("192.0.2.7", 53000);
    CHECK_INT_EQ(ALLOWED(a), 1);
    a = v4("127.0.0.1", 0);
    CHECK_INT_EQ(ALLOWED(a), 0);
    a = v4("255.255.255.255", 40000);
    CHECK_INT_EQ(ALLOWED(a), 0);
    a = v4("224.0.0.1", 40000);
    CHECK_INT_EQ(ALLOWED(a), 0);
    a = v4("239.255.255.250", 40000);
    CHECK_INT_EQ(ALLOWED(a), 0);
    a = v4("0.0.0.0", 40000);
    CHECK_INT_EQ(ALLOWED(a), 0);
    a = v4("127.0.0.1", 7);
    CHECK_INT_EQ(ALLOWED(a), 0);
    a = v4("127.0.0.1", 19);
    CHECK_INT_EQ(ALLOWED(a), 0);
    a = v4("127.0.0.1", 9001);
    CHECK_INT_EQ(ALLOWED(a), 0);
    b = v6("::1", 40000);
    CHECK_INT_EQ(ALLOWED(b), 1);
    b = v6("ff02::1", 40000);
    CHECK_INT_EQ(ALLOWED(b), 0);
    b = v6("::", 40000);
    CHECK_INT_EQ(ALLOWED(b), 0);
    b = v6("::ffff:255.255.255.255", 40000);
    CHECK_INT_EQ(ALLOWED(b), 0);
    b = v6("::ffff:10.1.2.3", 40000);
    CHECK_INT_EQ(ALLOWED(b), 1);
    b = v6("::1", 0);
    CHECK_INT_EQ(ALLOWED(b), 0);
}

/* --mode plain is RFC 862: bytes unchanged. */
static void test_plain_mode(void)
{
    struct sg_proc p;
    int fd, ufd;
    char got[16] = {0};
    start_echo(&p, "--mode", "plain");
    fd = et_tcp_connect(p.port);
    et_expect_reply(fd, "Hello, World", "Hello, World");
    close(fd);
    ufd = et_udp_connect(p.port);
    CHECK_INT_EQ(et_udp_ask(ufd, "udp Plain", 9, got, sizeof got - 1), 9);
    CHECK_STR_EQ(got, "udp Plain");
    close(ufd);
    CHECK_INT_EQ(sg_proc_stop(&p, 10000), 0);
}

/* Over --max-conns a client is closed at once; when a slot frees up, new clients are served again. */
static void test_max_conns(void)
{
    struct sg_proc p;
    int a, b, c, d, held;
    int64_t deadline;
    const char *argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", "--max-conns=2", NULL};
    et_start(&p, argv);
    a = et_tcp_connect(p.port);
    et_expect_reply(a, "one", "ONE");
    b = et_tcp_connect(p.port);
    et_expect_reply(b, "two", "TWO");
    c = et_tcp_connect(p.port);
    CHECK_INT_EQ(et_wait_closed(c, 10000), 1);
    close(c);
    et_expect_reply(a, "one again", "ONE AGAIN");
    held = sg_proc_fd_count(p.pid); /* a's and b's; c's is closed, as c saw */
    close(a);
    /*
     * The server notices the close asynchronously: wait until it let go of
     * a's descriptor (and with it a's slot), then a new client must be served.
     * A client that is closed at once only shows so after some delay, so
     * trying clients until one stays open a moment would take one that is
     * about to be closed on a loaded machine for a served one.
     */
    deadline = sg_deadline_after(10000);
    while (sg_proc_fd_count(p.pid) >= held && sg_now_ms() < deadline)
        usleep(10 * 1000);
    CHECK(sg_proc_fd_count(p.pid) < held);
    d = et_tcp_connect(p.port);
    et_expect_reply(d, "three", "THREE");
    close(b);
    close(d);
    CHECK_INT_EQ(sg_proc_stop(&p, 10000), 0);
}

/* --idle-timeout closes a silent connection and leaves a talking one alone. */
static void test_idle_timeout(void)
{
    struct sg_proc p;
    int quiet, busy;
    start_echo(&p, "--idle-timeout", "2");
    quiet = et_tcp_connect(p.port);
    busy = et_tcp_connect(p.port);
    et_expect_reply(quiet, "hi", "HI");
    /*
     * busy talks every 200 ms for 3.6 s, well past the 2 s timeout; its
     * silences may stretch by 1.8 s on a loaded machine before it looks idle.
     */
    for (int i = 0; i < 18; i++) {
        et_expect_reply(busy, "ping", "PING");
        usleep(200 * 1000);
    }
    CHECK_INT_EQ(et_wait_closed(quiet, 5000), 1);
    et_expect_reply(busy, "still here", "STILL HERE");
    CHECK_INT_EQ(et_wait_closed(busy, 10000), 1);
    close(quiet);
    close(busy);
    CHECK_INT_EQ(sg_proc_stop(&p, 10000), 0);
}

/* Returns 1 while p has not exited (its drain is still on). */
static int is_running(const struct sg_proc *p)
{
    return waitpid(p->pid, NULL, WNOHANG) == 0;
}

/*
 * SIGTERM with --drain: an idle connection is closed at once (a gateway's pooled connection
 * moves to another replica), while the server still answers new connections until the drain
 * ends, closing each once it has answered. Every check happens while the 6 s drain lasts.
 */
static void test_drain_closes_idle(void)
{
    struct sg_proc p;
    int idle, late;
    start_echo(&p, "--drain", "6s");
    idle = et_tcp_connect(p.port);
    et_expect_reply(idle, "hi", "HI");
    CHECK(kill(p.pid, SIGTERM) == 0);
    CHECK_INT_EQ(et_wait_closed(idle, 5000), 1);
    CHECK(is_running(&p));
    late = et_tcp_connect(p.port);
    et_expect_reply(late, "still served", "STILL SERVED");
    CHECK_INT_EQ(et_wait_closed(late, 5000), 1);
    CHECK(is_running(&p));
    close(idle);
    close(late);
    CHECK_INT_EQ(sg_proc_stop(&p, 15000), 0);
}

/* Bad flags: a clear one-line error and exit status 2, nothing left running. */
static void test_bad_flags(void)
{
    char bin[512];
    struct et_run_result *r = malloc(sizeof *r);
    const char *mode[] = {sg_test_bin("sockgate-echo", bin, sizeof bin), "--mode", "shout", NULL};
    const char *conns[] = {bin, "--max-conns", "0", NULL};
    const char *listen[] = {bin, "--listen", "nonsense", NULL};
    const char *help[] = {bin, "--help", NULL};
    const char *busy[] = {bin, "--listen", echo.addr, NULL};
    const char *env[] = {"SOCKGATE_ECHO_MODE=loud", NULL};
    const char *defaults[] = {bin, NULL};
    CHECK(r != NULL);
    CHECK_INT_EQ(et_run(mode, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "--mode") != NULL);
    CHECK_INT_EQ(et_run(conns, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "--max-conns") != NULL);
    CHECK_INT_EQ(et_run(listen, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "nonsense") != NULL);
    CHECK_INT_EQ(et_run(defaults, NULL, env, 10000, r), 2); /* the environment is checked like a flag */
    CHECK(strstr(r->err, "loud") != NULL);
    CHECK_INT_EQ(et_run(busy, NULL, NULL, 10000, r), 1); /* the port is taken: not a usage error */
    CHECK(strstr(r->err, echo.addr) != NULL);
    CHECK_INT_EQ(et_run(help, NULL, NULL, 10000, r), 0);
    CHECK(strstr(r->out, "--idle-timeout") != NULL);
    free(r);
}

/* Waits up to 10 s for the shared server to hold want descriptors; returns how many it holds. */
static int wait_echo_fds(int want)
{
    int64_t deadline = sg_deadline_after(10000);
    int n;
    while ((n = sg_proc_fd_count(echo.pid)) != want && sg_now_ms() < deadline)
        usleep(10 * 1000);
    return n;
}

/* Closed clients give their descriptors back. */
static void test_no_descriptor_leak(void)
{
    int fds[50];
    /*
     * Earlier cases' clients may still be closing on the server's side: wait
     * for the count it had with no client at all (a count that merely stays
     * put for a moment may still hold one the server is slow to close).
     */
    CHECK(echo_idle_fds > 0);
    CHECK_INT_EQ(wait_echo_fds(echo_idle_fds), echo_idle_fds);
    for (int i = 0; i < 50; i++) {
        fds[i] = et_tcp_connect(echo.port);
        et_expect_reply(fds[i], "x", "X");
    }
    CHECK_INT_EQ(sg_proc_fd_count(echo.pid), echo_idle_fds + 50);
    for (int i = 0; i < 50; i++)
        close(fds[i]);
    CHECK_INT_EQ(wait_echo_fds(echo_idle_fds), echo_idle_fds);
}

int main(void)
{
    start_echo(&echo, NULL, NULL);
    echo_idle_fds = sg_proc_fd_count(echo.pid);
    RUN_TEST(test_tutorial_hello);
    RUN_TEST(test_message_loop);
    RUN_TEST(test_two_quick_writes);
    RUN_TEST(test_binary_and_utf8);
    RUN_TEST(test_connections_stay_open);
    RUN_TEST(test_half_close_flushes);
    RUN_TEST(test_udp_hello);
    RUN_TEST(test_udp_bad_input);
    RUN_TEST(test_udp_guard);
    RUN_TEST(test_no_descriptor_leak);
    RUN_TEST(test_plain_mode);
    RUN_TEST(test_max_conns);
    RUN_TEST(test_idle_timeout);
    RUN_TEST(test_drain_closes_idle);
    RUN_TEST(test_bad_flags);
    /* SIGTERM: a clean stop with exit status 0. */
    CHECK_INT_EQ(sg_proc_stop(&echo, 10000), 0);
    return TESTS_DONE();
}
