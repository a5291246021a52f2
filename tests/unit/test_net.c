/* test_net.c - address parsing and formatting, listening on port 0, connect errors, deadlines. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static void test_parse_and_format(void)
{
    struct sg_addr a;
    char err[256], text[SG_ADDR_STRLEN];
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:8080", &a, err, sizeof err), SG_OK);
    sg_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof text);
    CHECK_STR_EQ(text, "127.0.0.1:8080");
    CHECK_INT_EQ(sg_addr_parse("[::1]:9001", &a, err, sizeof err), SG_OK);
    sg_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof text);
    CHECK_STR_EQ(text, "[::1]:9001");
    CHECK_INT_EQ(sg_addr_parse(":0", &a, err, sizeof err), SG_OK);
    sg_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof text);
    CHECK_STR_EQ(text, "127.0.0.1:0");
    CHECK_INT_EQ(sg_addr_parse("localhost:65535", &a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_addr_port((struct sockaddr *)&a.ss), 65535);
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:65536", &a, err, sizeof err), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:-1", &a, err, sizeof err), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:", &a, err, sizeof err), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:80x", &a, err, sizeof err), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1", &a, err, sizeof err), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_addr_parse("::1:80", &a, err, sizeof err), SG_ERR_INVALID); /* v6 needs brackets */
    CHECK_INT_EQ(sg_addr_parse("[::1:80", &a, err, sizeof err), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_addr_parse("", &a, err, sizeof err), SG_ERR_INVALID);
    CHECK(strlen(err) > 0);
}

/* unix:PATH: parsed, printed back, length-checked; the empty and over-long paths refused. */
static void test_parse_unix(void)
{
    struct sg_addr a;
    char err[256], text[SG_ADDR_STRLEN], longpath[200];
    CHECK_INT_EQ(sg_addr_parse("unix:/run/sockgate/exec.sock", &a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(a.ss.ss_family, AF_UNIX);
    sg_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof text);
    CHECK_STR_EQ(text, "unix:/run/sockgate/exec.sock");
    CHECK_INT_EQ(sg_addr_port((struct sockaddr *)&a.ss), 0);
    CHECK_INT_EQ(sg_addr_parse("unix:", &a, err, sizeof err), SG_ERR_INVALID);
    memset(longpath, 'a', sizeof longpath - 1);
    memcpy(longpath, "unix:/", 6);
    longpath[sizeof longpath - 1] = '\0';
    CHECK_INT_EQ(sg_addr_parse(longpath, &a, err, sizeof err), SG_ERR_INVALID);
    CHECK(strstr(err, "unix:PATH") != NULL);
}

/* A UNIX stream pair and datagram pair at PATH and PATH.dgram; both files go with sg_close_listener. */
static void test_listen_unix_pair(void)
{
    struct sg_addr a;
    char err[256], dir[] = "/tmp/sockgate-unit-XXXXXX", addr[128], path[128];
    int t = -1, u = -1;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(addr, sizeof addr, "unix:%s/s.sock", dir);
    CHECK_INT_EQ(sg_addr_parse(addr, &a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_listen_tcp_udp(&a, &t, &u, err, sizeof err), SG_OK);
    snprintf(path, sizeof path, "%s/s.sock.dgram", dir);
    CHECK(access(path, F_OK) == 0);
    sg_close_listener(&t);
    sg_close_listener(&u);
    CHECK(t == -1 && u == -1);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "%s/s.sock", dir);
    CHECK(access(path, F_OK) != 0);
    CHECK(rmdir(dir) == 0);
}

static void test_listen_port_zero_tcp_udp(void)
{
    struct sg_addr a;
    char err[256];
    int t = -1, u = -1;
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_listen_tcp_udp(&a, &t, &u, err, sizeof err), SG_OK);
    CHECK(sg_local_port(t) != 0);
    CHECK_INT_EQ(sg_local_port(t), sg_local_port(u));
    close(t);
    close(u);
}

/* Connects a loopback TCP pair: *l listens at *a, *c is the client (sg_connect), *s the accepted end. */
static void tcp_pair(struct sg_addr *a, int *l, int *c, int *s)
{
    char err[256];
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:0", a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_listen(a, SOCK_STREAM, l, err, sizeof err), SG_OK);
    ((struct sockaddr_in *)(void *)&a->ss)->sin_port = htons(sg_local_port(*l));
    CHECK_INT_EQ(sg_connect(a, SOCK_STREAM, 1000, c, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_wait_fd(*l, 1 /* POLLIN */, sg_deadline_after(1000)), SG_OK);
    *s = accept(*l, NULL, NULL);
    CHECK(*s >= 0);
}

static void test_connect_round_trip(void)
{
    struct sg_addr a;
    char err[256], buf[8];
    int l = -1, c = -1, s = -1;
    tcp_pair(&a, &l, &c, &s);
    CHECK_INT_EQ(sg_write_all(c, "ping", 4, sg_deadline_after(1000)), SG_OK);
    CHECK_INT_EQ(sg_read_full(s, buf, 4, sg_deadline_after(1000)), SG_OK);
    CHECK(memcmp(buf, "ping", 4) == 0);
    /* Nothing more comes: the deadline ends the wait. */
    CHECK_INT_EQ(sg_set_nonblock(s, 1), SG_OK);
    CHECK_INT_EQ(sg_read_full(s, buf, 1, sg_deadline_after(50)), SG_ERR_TIMEOUT);
    close(c);
    CHECK_INT_EQ(sg_read_full(s, buf, 1, sg_deadline_after(1000)), SG_ERR_CLOSED);
    close(s);
    /* Once the listener is gone the port refuses. */
    close(l);
    CHECK_INT_EQ(sg_connect(&a, SOCK_STREAM, 1000, &c, err, sizeof err), SG_ERR_REFUSED);
    CHECK(strstr(err, "refused") != NULL);
}

/*
 * sg_read_batched: a queued batch is read whole with the low-water mark set;
 * a batch that does not come within the patience is read as it is, the mark
 * back at 1;
 * the mark is left alone when the timeout is no longer than the patience.
 */
static void test_read_batched(void)
{
    struct sg_addr a;
    char buf[256];
    int l = -1, c = -1, s = -1, mark = 0, status = 0;
    size_t got = 0;
    pid_t pid;
    tcp_pair(&a, &l, &c, &s);
    CHECK_INT_EQ(sg_set_nonblock(s, 1), SG_OK);
    memset(buf, 'x', sizeof buf);

    CHECK_INT_EQ(sg_write_all(c, buf, 100, sg_deadline_after(1000)), SG_OK);
    CHECK_INT_EQ(sg_read_batched(s, buf, sizeof buf, 100, 5000, 10000, &mark, &got), SG_OK);
    CHECK_INT_EQ(got, 100);
    CHECK_INT_EQ(mark, 100);

    /* Only 10 of the 100 come, a little later: after the patience they are taken all the same. */
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        usleep(100 * 1000);
        _exit(sg_write_all(c, buf, 10, sg_deadline_after(1000)) == SG_OK ? 0 : 1);
    }
    CHECK_INT_EQ(sg_read_batched(s, buf, sizeof buf, 100, 300, 10000, &mark, &got), SG_OK);
    CHECK_INT_EQ(got, 10);
    CHECK_INT_EQ(mark, 1);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* A timeout within the patience: no batching, so only silence can time out. */
    CHECK_INT_EQ(sg_read_batched(s, buf, sizeof buf, 100, 5000, 50, &mark, &got), SG_ERR_TIMEOUT);
    CHECK_INT_EQ(mark, 1);
    close(c);
    CHECK_INT_EQ(sg_read_batched(s, buf, sizeof buf, 100, 50, 10000, &mark, &got), SG_ERR_CLOSED);
    close(s);
    close(l);
}

/* Brings up lo and narrows the ephemeral range to one port in a fresh network namespace. */
static int enter_one_port_namespace(int port)
{
    struct ifreq ifr;
    char range[32];
    int fd, s, n, ok;

    if (unshare(CLONE_NEWNET) < 0)
        return 0;
    s = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    ok = s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags |= IFF_UP;
    ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    if (s >= 0)
        close(s);
    n = snprintf(range, sizeof range, "%d %d", port, port);
    fd = open("/proc/sys/net/ipv4/ip_local_port_range", O_WRONLY);
    ok = ok && fd >= 0 && write(fd, range, (size_t)n) == n;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A dead loopback port that is the only ephemeral port must read as refused, not as a
 * socket connected to itself that echoes the request back as its answer. */
static void test_self_connect_is_refused(void)
{
    pid_t pid = fork();
    int status = 0;

    CHECK(pid >= 0);
    if (pid == 0) {
        struct sg_addr a;
        char err[256];
        int fd = -1, bad = 0;

        if (!enter_one_port_namespace(40000)) {
            fprintf(stderr, "  (no network namespace here: self-connect check skipped)\n");
            _exit(0);
        }
        if (sg_addr_parse("127.0.0.1:40000", &a, err, sizeof err) != SG_OK)
            _exit(3);
        if (sg_connect(&a, SOCK_DGRAM, 1000, &fd, err, sizeof err) != SG_ERR_REFUSED) {
            fprintf(stderr, "  udp connect to the only ephemeral port was not refused\n");
            bad = 1;
        }
        if (sg_connect(&a, SOCK_STREAM, 1000, &fd, err, sizeof err) != SG_ERR_REFUSED) {
            fprintf(stderr, "  tcp connect to the only ephemeral port was not refused\n");
            bad = 1;
        }
        _exit(bad);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_INT_EQ(WEXITSTATUS(status), 0);
}

int main(void)
{
    RUN_TEST(test_parse_and_format);
    RUN_TEST(test_parse_unix);
    RUN_TEST(test_listen_unix_pair);
    RUN_TEST(test_listen_port_zero_tcp_udp);
    RUN_TEST(test_connect_round_trip);
    RUN_TEST(test_read_batched);
    RUN_TEST(test_self_connect_is_refused);
    return TESTS_DONE();
}
