/* test_cli.c - `sockgate-cli echo` and `sockgate-cli time` against the real servers, as a user runs them. */
#include <signal.h>
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

static struct sg_proc echo, tm;
static char cli[512];
static struct et_run_result *r;

/*
 * A port with nothing behind it, held in *fd until the caller closes it: a
 * port merely closed again could be handed to another test's server meanwhile.
 */
static uint16_t dead_port(int type, int *fd)
{
    uint16_t port = sg_test_hold_port(type, 0, fd);
    CHECK(port != 0);
    return port;
}

static void test_echo_text(void)
{
    const char *argv[] = {cli, "echo", echo.addr, "hello", "world", NULL};
    CHECK_INT_EQ(et_run(argv, NULL, NULL, 10000, r), 0);
    CHECK_STR_EQ(r->out, "HELLO WORLD\n");
}

static void test_echo_udp_text(void)
{
    const char *argv[] = {cli, "echo", "--udp", echo.addr, "hello", NULL};
    CHECK_INT_EQ(et_run(argv, NULL, NULL, 10000, r), 0);
    CHECK_STR_EQ(r->out, "HELLO\n");
}

/* The tutorial's interactive loop: one reply line per line, blank lines skipped, q ends. */
static void test_echo_lines(void)
{
    const char *argv[] = {cli, "echo", echo.addr, NULL};
    const char *udp[] = {cli, "echo", "--udp", echo.addr, NULL};
    CHECK_INT_EQ(et_run(argv, "hello\n\n   \nsecond line\r\nq\nnot sent\n", NULL, 10000, r), 0);
    CHECK_STR_EQ(r->out, "HELLO\nSECOND LINE\n");
    /* No prompt when stdin is not a terminal, so the output is only the replies. */
    CHECK(strstr(r->err, ">>>") == NULL);
    CHECK_INT_EQ(et_run(argv, "no newline at the end", NULL, 10000, r), 0);
    CHECK_STR_EQ(r->out, "NO NEWLINE AT THE END\n");
    CHECK_INT_EQ(et_run(udp, "over udp\nq\n", NULL, 10000, r), 0);
    CHECK_STR_EQ(r->out, "OVER UDP\n");
}

/* A line far longer than one read is echoed whole, in order. */
static void test_echo_long_line(void)
{
    enum { LEN = 300000 };
    const char *argv[] = {cli, "echo", echo.addr, NULL};
    char *line = malloc(LEN + 2);
    CHECK(line != NULL);
    for (int i = 0; i < LEN; i++)
        line[i] = (char)('a' + i % 26);
    line[LEN] = '\n';
    line[LEN + 1] = '\0';
    CHECK_INT_EQ(et_run(argv, line, NULL, 30000, r), 0);
    /* et_run keeps the first 64 KiB of output: check those and that they are upper-cased in order. */
    CHECK(r->out_len == sizeof r->out - 1);
    for (size_t i = 0; i < r->out_len; i++)
        CHECK_INT_EQ(r->out[i], 'A' + (int)(i % 26));
    free(line);
}

static void test_time(void)
{
    const char *year[] = {cli, "time", tm.addr, "%Y", NULL};
    const char *dflt[] = {cli, "time", tm.addr, NULL};
    const char *words[] = {cli, "time", tm.addr, "%H:%M", "o'clock", NULL};
    CHECK_INT_EQ(et_run(year, NULL, NULL, 10000, r), 0);
    CHECK_INT_EQ(strlen(r->out), 5);
    CHECK(atoi(r->out) >= 2024);
    CHECK_INT_EQ(et_run(dflt, NULL, NULL, 10000, r), 0);
    CHECK_INT_EQ(strlen(r->out), strlen("2021-07-25 22:05:25\n"));
    CHECK(r->out[4] == '-' && r->out[13] == ':');
    CHECK_INT_EQ(et_run(words, NULL, NULL, 10000, r), 0);
    CHECK(strstr(r->out, " o'clock\n") != NULL);
}

/* The server's "ERROR: ..." reply is a failure: status 1 and the reason on one line. */
static void test_time_server_error(void)
{
    char format[300];
    const char *argv[] = {cli, "time", tm.addr, format, NULL};
    memset(format, 'x', sizeof format - 1);
    format[sizeof format - 1] = '\0';
    CHECK_INT_EQ(et_run(argv, NULL, NULL, 10000, r), 1);
    CHECK_STR_EQ(r->out, "");
    CHECK(strstr(r->err, "format longer than 256 bytes") != NULL);
    CHECK(strchr(r->err, '\n') == r->err + strlen(r->err) - 1);
}

/* Nothing listening: UDP time gives up after its retries, TCP echo is refused; both exit 1. */
static void test_failures(void)
{
    char addr[32], tcp_addr[32];
    const char *time_argv[] = {cli, "time", "--timeout", "200", "--retries", "2", addr, NULL};
    const char *echo_argv[] = {cli, "echo", tcp_addr, "x", NULL};
    const char *usage[] = {cli, "echo", NULL};
    const char *bad_timeout[] = {cli, "time", "--timeout", "soon", tm.addr, NULL};
    const char *unknown[] = {cli, "echo", "--tcp", echo.addr, NULL};
    int udp_hold, tcp_hold;
    snprintf(addr, sizeof addr, "127.0.0.1:%u", dead_port(SOCK_DGRAM, &udp_hold));
    snprintf(tcp_addr, sizeof tcp_addr, "127.0.0.1:%u", dead_port(SOCK_STREAM, &tcp_hold));
    CHECK_INT_EQ(et_run(time_argv, NULL, NULL, 10000, r), 1);
    CHECK(strstr(r->err, "refused") != NULL || strstr(r->err, "timeout") != NULL);
    CHECK_INT_EQ(et_run(echo_argv, NULL, NULL, 10000, r), 1);
    CHECK(strstr(r->err, "refused") != NULL);
    close(udp_hold);
    close(tcp_hold);
    CHECK_INT_EQ(et_run(usage, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "ADDR") != NULL);
    CHECK_INT_EQ(et_run(bad_timeout, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "--timeout") != NULL);
    CHECK_INT_EQ(et_run(unknown, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "--tcp") != NULL);
}

/* Each client pointed at the echo service says it is the wrong service and exits 1, never prints a blank answer. */
static void test_wrong_service(void)
{
    char readme[512];
    const char *time_blank[] = {cli, "time", echo.addr, NULL};
    const char *time_echoed[] = {cli, "time", echo.addr, "%Y", NULL};
    const char *ls[] = {cli, "ls", echo.addr, NULL};
    const char *put[] = {cli, "put", echo.addr, readme, NULL};
    const char *get[] = {cli, "get", echo.addr, "x", "-", NULL};
    const char *rm[] = {cli, "rm", echo.addr, "x", NULL};
    const char *exec[] = {cli, "exec", echo.addr, "ls", NULL};
    const char *const *file_cmds[] = {ls, put, get, rm};
    snprintf(readme, sizeof readme, "%s/README.md", getenv("SOCKGATE_SOURCE_DIR") ? getenv("SOCKGATE_SOURCE_DIR") : ".");
    CHECK_INT_EQ(et_run(time_blank, NULL, NULL, 10000, r), 1);
    CHECK_STR_EQ(r->out, "");
    CHECK(strstr(r->err, "is not a time server") != NULL);
    CHECK_INT_EQ(et_run(time_echoed, NULL, NULL, 10000, r), 1);
    CHECK_STR_EQ(r->out, "");
    CHECK(strstr(r->err, "is not a time server") != NULL);
    for (size_t i = 0; i < sizeof file_cmds / sizeof file_cmds[0]; i++) {
        CHECK_INT_EQ(et_run(file_cmds[i], NULL, NULL, 10000, r), 1);
        CHECK(strstr(r->err, "is not a file server") != NULL);
        CHECK(strstr(r->err, "sockgate-echo") != NULL);
    }
    CHECK_INT_EQ(et_run(exec, NULL, NULL, 10000, r), 1);
    CHECK(strstr(r->err, "is not an exec server") != NULL);
}

/* A UDP server that never answers: the client sends again, then times out with status 1. */
static void test_time_timeout(void)
{
    struct sg_proc sink;
    const char *sink_argv[] = {"sockgate-time", "--listen", "127.0.0.1:0", NULL};
    const char *argv[] = {cli, "time", "--timeout", "300", "--retries", "1", sink.addr, NULL};
    et_start(&sink, sink_argv);
    /* SIGSTOP keeps the socket bound (no ICMP refusal) while nothing answers. */
    CHECK(kill(sink.pid, SIGSTOP) == 0);
    CHECK_INT_EQ(et_run(argv, NULL, NULL, 10000, r), 1);
    CHECK(strstr(r->err, "no reply after 2 attempts") != NULL);
    CHECK(kill(sink.pid, SIGCONT) == 0);
    CHECK_INT_EQ(sg_proc_stop(&sink, 10000), 0);
}

int main(void)
{
    const char *echo_argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", NULL};
    const char *time_argv[] = {"sockgate-time", "--listen", "127.0.0.1:0", NULL};
    r = malloc(sizeof *r);
    CHECK(r != NULL);
    sg_test_bin("sockgate-cli", cli, sizeof cli);
    et_start(&echo, echo_argv);
    et_start(&tm, time_argv);
    RUN_TEST(test_echo_text);
    RUN_TEST(test_echo_udp_text);
    RUN_TEST(test_echo_lines);
    RUN_TEST(test_echo_long_line);
    RUN_TEST(test_time);
    RUN_TEST(test_wrong_service);
    RUN_TEST(test_time_server_error);
    RUN_TEST(test_failures);
    RUN_TEST(test_time_timeout);
    CHECK_INT_EQ(sg_proc_stop(&echo, 10000), 0);
    CHECK_INT_EQ(sg_proc_stop(&tm, 10000), 0);
    free(r);
    return TESTS_DONE();
}
