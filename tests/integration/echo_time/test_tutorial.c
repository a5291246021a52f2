/* test_tutorial.c - the tutorial's own Python clients, run with python3 against the real servers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "et_util.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static struct sg_proc echo, tm;
static struct et_run_result *r;
static const char *const py_env[] = {"PYTHONIOENCODING=utf-8", "PYTHONDONTWRITEBYTECODE=1", NULL};

/* Runs tests/integration/echo_time/script with the port as its argument; returns its exit status. */
static int run_client(const char *script, uint16_t port, const char *input)
{
    char path[1024], port_text[16];
    const char *argv[] = {"python3", path, port_text, NULL};
    et_source_file(script, path, sizeof path);
    snprintf(port_text, sizeof port_text, "%u", port);
    et_run(argv, input, py_env, 30000, r);
    if (r->status == 127)
        fprintf(stderr, "python3 is needed to run the tutorial's clients: %s\n", r->err);
    return r->status;
}

/* The tutorial's clients have no way out of their loop but the end of input: Python's EOFError. */
static void check_ended_on_eof(void)
{
    CHECK_INT_EQ(r->status, 1);
    CHECK(strstr(r->err, "EOFError") != NULL);
    CHECK(strstr(r->err, "ConnectionResetError") == NULL);
}

static void test_hello(void)
{
    CHECK_INT_EQ(run_client("tutorial_client_hello.py", echo.port, NULL), 0);
    CHECK_STR_EQ(r->out, "b'HELLO'\n");
}

static void test_loop(void)
{
    run_client("tutorial_client_loop.py", echo.port, "hello\n你好 world\nlast one\n");
    CHECK_STR_EQ(r->out, ">>> HELLO\n>>> 你好 WORLD\n>>> LAST ONE\n>>> ");
    check_ended_on_eof();
}

static void test_quit(void)
{
    CHECK_INT_EQ(run_client("tutorial_client_quit.py", echo.port, "abc\n   \nDef\nq\nafter q\n"), 0);
    CHECK_STR_EQ(r->out, ">>> ABC\n>>> >>> DEF\n>>> ");
}

/* The sticky-packet client sends and closes at once; the server must take that in its stride. */
static void test_sticky(void)
{
    int fd;
    CHECK_INT_EQ(run_client("tutorial_client_sticky.py", echo.port, NULL), 0);
    CHECK_STR_EQ(r->err, "");
    fd = et_tcp_connect(echo.port);
    et_expect_reply(fd, "helloworld", "HELLOWORLD");
    close(fd);
}

static void test_udp(void)
{
    char expect[64];
    CHECK_INT_EQ(run_client("tutorial_udp_client.py", echo.port, NULL), 0);
    snprintf(expect, sizeof expect, "HELLO ('127.0.0.1', %u)\n", echo.port);
    CHECK_STR_EQ(r->out, expect);
}

static void test_time(void)
{
    const char *prompt = "请输入时间格式(例%Y %m %d)>>: 当前日期: ";
    char *line, *next;
    run_client("tutorial_time_client.py", tm.port, "%Y\n\n%Y年%m月\n");
    check_ended_on_eof();
    /* Three answers: the year, the default format, and a format with Chinese text. */
    line = r->out;
    CHECK(strncmp(line, prompt, strlen(prompt)) == 0);
    line += strlen(prompt);
    CHECK(atoi(line) >= 2024 && line[4] == '\n');
    line += 5;
    CHECK(strncmp(line, prompt, strlen(prompt)) == 0);
    line += strlen(prompt);
    next = strchr(line, '\n');
    CHECK(next && next - line == (long)strlen("2021-07-25 22:05:25"));
    CHECK(line[4] == '-' && line[7] == '-' && line[10] == ' ' && line[13] == ':' && line[16] == ':');
    line = next + 1;
    CHECK(strncmp(line, prompt, strlen(prompt)) == 0);
    line += strlen(prompt);
    CHECK(strstr(line, "年") == line + 4);
    CHECK(strstr(line, "月\n") != NULL);
}

int main(void)
{
    const char *echo_argv[] = {"sockgate-echo", "--listen", "127.0.0.1:0", NULL};
    const char *time_argv[] = {"sockgate-time", "--listen", "127.0.0.1:0", NULL};
    r = malloc(sizeof *r);
    CHECK(r != NULL);
    et_start(&echo, echo_argv);
    et_start(&tm, time_argv);
    RUN_TEST(test_hello);
    RUN_TEST(test_loop);
    RUN_TEST(test_quit);
    RUN_TEST(test_sticky);
    RUN_TEST(test_udp);
    RUN_TEST(test_time);
    CHECK_INT_EQ(sg_proc_stop(&echo, 10000), 0);
    CHECK_INT_EQ(sg_proc_stop(&tm, 10000), 0);
    free(r);
    return TESTS_DONE();
}
