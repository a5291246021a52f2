/* test_time.c - sockgate-time over real UDP, and its formatting rules checked directly. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "et_util.h"
#include "harness.h"
#include "time/server.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static struct sg_proc local_srv; /* started with TZ=EST5, local time */
static struct sg_proc utc_srv;   /* started with --utc */

/* Asks srv for format and returns the reply as a new string (CHECK-fails when none comes). */
static char *ask(const struct sg_proc *srv, const void *format, size_t len)
{
    int fd = et_udp_connect(srv->port);
    char *reply = calloc(1, 65536);
    long n;
    CHECK(reply != NULL);
    n = et_udp_ask(fd, format, len, reply, 65535);
    CHECK(n >= 0);
    close(fd);
    return reply;
}

static char *ask_str(const struct sg_proc *srv, const char *format)
{
    return ask(srv, format, strlen(format));
}

/* Returns 1 when text is a "YYYY-MM-DD HH:MM:SS" time. */
static int is_default_format(const char *t)
{
    const char *shape = "dddd-dd-dd dd:dd:dd";
    if (strlen(t) != strlen(shape))
        return 0;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
            return 0;
    return 1;
}

/* The tutorial's exchanges: %Y gives the year, an empty datagram the default format. */
static void test_tutorial_formats(void)
{
    time_t before = time(NULL);
    char *year = ask_str(&local_srv, "%Y"), *dflt = ask(&local_srv, "", 0);
    time_t after = time(NULL);
    struct tm tb, ta;
    char yb[8], ya[8];
    gmtime_r(&before, &tb);
    gmtime_r(&after, &ta);
    strftime(yb, sizeof yb, "%Y", &tb);
    strftime(ya, sizeof ya, "%Y", &ta);
    /* EST5 is 5 h behind UTC; around New Year either year may be right. */
    CHECK(strcmp(year, yb) == 0 || strcmp(year, ya) == 0 || atoi(year) == atoi(yb) - 1);
    CHECK(is_default_format(dflt));
    free(year);
    free(dflt);
}

/* TZ from the environment is honoured; --utc answers in UTC. */
static void test_time_zones(void)
{
    char *est = ask_str(&local_srv, "%z %Z"), *utc = ask_str(&utc_srv, "%z"), *utc_dflt = ask(&utc_srv, "", 0);
    char *local_h = ask_str(&local_srv, "%H"), *utc_h = ask_str(&utc_srv, "%H");
    struct sg_proc unnamed;
    const char *argv[] = {"sockgate-time", "--listen", "127.0.0.1:0", NULL};
    char *empty;
    CHECK_STR_EQ(est, "-0500 EST");
    /* A zone without a name formats %Z as nothing: the reply is an empty datagram, not an error. */
    setenv("TZ", "<>0", 1);
    et_start(&unnamed, argv);
    setenv("TZ", "EST5", 1);
    empty = ask_str(&unnamed, "%Z");
    CHECK_STR_EQ(empty, "");
    free(empty);
    CHECK_INT_EQ(sg_proc_stop(&unnamed, 10000), 0);
    CHECK_STR_EQ(utc, "+0000");
    CHECK(is_default_format(utc_dflt));
    /* Unless the hour turned between the two requests, local is five hours behind. */
    CHECK((atoi(utc_h) - atoi(local_h) + 24) % 24 == 5 || (atoi(utc_h) - atoi(local_h) + 24) % 24 == 6);
    free(est);
    free(utc);
    free(utc_dflt);
    free(local_h);
    free(utc_h);
}

/* printf conversions mean nothing here: %s is strftime's seconds since the epoch, %n a newline. */
static void test_not_printf(void)
{
    time_t before = time(NULL);
    char *r = ask_str(&utc_srv, "%s|%n|%x%%");
    long secs = atol(r);
    CHECK(secs >= before && secs <= time(NULL));
    CHECK(strstr(r, "|\n|") != NULL);
    CHECK(r[strlen(r) - 1] == '%');
    free(r);
    r = ask_str(&utc_srv, "%d%s%s%s%s%s%s%s%s%s%n%n%n%n%p");
    CHECK(strlen(r) > 9 * 9);
    free(r);
}

/* UTF-8 text around conversions is kept as it is. */
static void test_utf8_format(void)
{
    char *r = ask_str(&utc_srv, "现在是 %Y 年");
    CHECK(strncmp(r, "现在是 ", strlen("现在是 ")) == 0);
    CHECK(strcmp(r + strlen(r) - strlen(" 年"), " 年") == 0);
    free(r);
}

/* Bad input gets "ERROR: why"; the server goes on answering. */
static void test_bad_input(void)
{
    char fmt[65507];
    char *r;
    memset(fmt, 'a', sizeof fmt);
    r = ask(&utc_srv, fmt, 257);
    CHECK_STR_EQ(r, "ERROR: format longer than 256 bytes");
    free(r);
    r = ask(&utc_srv, fmt, sizeof fmt); /* the largest datagram there is */
    CHECK_STR_EQ(r, "ERROR: format longer than 256 bytes");
    free(r);
    r = ask(&utc_srv, fmt, 256); /* exactly at the limit: fine */
    CHECK_INT_EQ(strlen(r), 256);
    free(r);
    r = ask(&utc_srv, "\xff\xfe%Y", 4);
    CHECK_STR_EQ(r, "ERROR: format is not valid UTF-8");
    free(r);
    r = ask(&utc_srv, "\xc0\xaf", 2); /* an overlong '/' */
    CHECK_STR_EQ(r, "ERROR: format is not valid UTF-8");
    free(r);
    r = ask(&utc_srv, "%Y\0%m", 5);
    CHECK_STR_EQ(r, "ERROR: format contains a NUL byte");
    free(r);
    r = ask_str(&utc_srv, "%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c");
    CHECK_STR_EQ(r, "ERROR: result longer than 1024 bytes");
    free(r);
    r = ask_str(&utc_srv, "%999999999Y");
    CHECK_STR_EQ(r, "ERROR: result longer than 1024 bytes");
    free(r);
    r = ask_str(&utc_srv, "%Y");
    CHECK_INT_EQ(strlen(r), 4);
    free(r);
}

/* Many datagrams at once are answered one for one (the server takes them in batches). */
static void test_burst(void)
{
    enum { N = 100 };
    int fd = et_udp_connect(utc_srv.port), seen = 0, size = 1 << 20;
    char msg[32], reply[64];
    unsigned char got[N] = {0};
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size); /* best effort: room for the replies */
    for (int i = 0; i < N; i++) {
        int n = snprintf(msg, sizeof msg, "request %d", i);
        CHECK(send(fd, msg, (size_t)n, 0) == n);
    }
    while (seen < N && sg_wait_fd(fd, POLLIN, sg_deadline_after(5000)) == SG_OK) {
        ssize_t n = recv(fd, reply, sizeof reply - 1, 0);
        int i;
        CHECK(n > 0);
        reply[n] = '\0';
        CHECK(sscanf(reply, "request %d", &i) == 1 && i >= 0 && i < N);
        CHECK(!got[i]);
        got[i] = 1;
        seen++;
    }
    CHECK_INT_EQ(seen, N);
    close(fd);
}

/* time_reply's edges, checked directly on a fixed time. */
#define EPOCH 1627250725LL /* 2021-07-25 22:05:25 UTC */
static void test_reply_rules(void)
{
    struct tm tm = {.tm_year = 121, .tm_mon = 6, .tm_mday = 25, .tm_hour = 22, .tm_min = 5, .tm_sec = 25};
    char out[TIME_REPLY_BUF], fmt[TIME_MAX_FORMAT + 1];
    int is_error;
    size_t n;

    n = time_reply((const uint8_t *)"", 0, &tm, EPOCH, out, &is_error);
    CHECK_STR_EQ(out, "2021-07-25 22:05:25");
    CHECK_INT_EQ(n, strlen(out));
    CHECK_INT_EQ(is_error, 0);
    /* An empty result (a zone without a name: TZ="<>0") is a valid, empty reply, not an overflow. */
    {
        struct tm unnamed;
        time_t t = (time_t)EPOCH;
        setenv("TZ", "<>0", 1);
        tzset();
        localtime_r(&t, &unnamed);
        n = time_reply((const uint8_t *)"%Z", 2, &unnamed, EPOCH, out, &is_error);
        CHECK_INT_EQ(n, 0);
        CHECK_STR_EQ(out, "");
        CHECK_INT_EQ(is_error, 0);
        setenv("TZ", "EST5", 1);
        tzset();
    }
    /* A result of exactly 1024 bytes is allowed; one more byte is not. */
    n = time_reply((const uint8_t *)"%01024Y", 7, &tm, EPOCH, out, &is_error);
    CHECK_INT_EQ(n, 1024);
    CHECK_INT_EQ(is_error, 0);
    CHECK(strcmp(out + 1020, "2021") == 0);
    n = time_reply((const uint8_t *)"%01025Y", 7, &tm, EPOCH, out, &is_error);
    CHECK_STR_EQ(out, "ERROR: result longer than 1024 bytes");
    CHECK_INT_EQ(is_error, 1);
    CHECK_INT_EQ(n, strlen(out));
    /* A trailing '%' stays literal text rather than joining anything. */
    time_reply((const uint8_t *)"100%", 4, &tm, EPOCH, out, &is_error);
    CHECK_INT_EQ(is_error, 0);
    CHECK(strncmp(out, "100", 3) == 0);
    /* %s is the epoch given, whatever the zone, with strftime's flags and width; %%s stays literal. */
    time_reply((const uint8_t *)"%s|%_12s|%-s|%012s|%%s|%Es", 26, &tm, EPOCH, out, &is_error);
    CHECK_STR_EQ(out, "1627250725|  1627250725|1627250725|001627250725|%s|1627250725");
    n = time_reply((const uint8_t *)"%1025s", 6, &tm, EPOCH, out, &is_error);
    CHECK_STR_EQ(out, "ERROR: result longer than 1024 bytes");
    n = time_reply((const uint8_t *)"%1024s", 6, &tm, EPOCH, out, &is_error);
    CHECK_INT_EQ(n, 1024);
    CHECK_INT_EQ(is_error, 0);
    /* Exactly 256 bytes of format pass, 257 do not. */
    memset(fmt, 'x', sizeof fmt);
    n = time_reply((const uint8_t *)fmt, 256, &tm, EPOCH, out, &is_error);
    CHECK_INT_EQ(n, 256);
    time_reply((const uint8_t *)fmt, 257, &tm, EPOCH, out, &is_error);
    CHECK_STR_EQ(out, "ERROR: format longer than 256 bytes");
}

/* Bad flags: exit status 2 with a one-line error. */
static void test_bad_flags(void)
{
    char bin[512];
    struct et_run_result *r = malloc(sizeof *r);
    const char *unknown[] = {sg_test_bin("sockgate-time", bin, sizeof bin), "--zone", "x", NULL};
    const char *listen[] = {bin, "--listen", "127.0.0.1:99999", NULL};
    const char *version[] = {bin, "--version", NULL};
    CHECK(r != NULL);
    CHECK_INT_EQ(et_run(unknown, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "--zone") != NULL);
    CHECK_INT_EQ(et_run(listen, NULL, NULL, 10000, r), 2);
    CHECK(strstr(r->err, "99999") != NULL);
    CHECK_INT_EQ(et_run(version, NULL, NULL, 10000, r), 0);
    CHECK(strstr(r->out, "sockgate-time") != NULL);
    free(r);
}

int main(void)
{
    const char *local_argv[] = {"sockgate-time", "--listen", "127.0.0.1:0", NULL};
    const char *utc_argv[] = {"sockgate-time", "--listen", "127.0.0.1:0", "--utc", NULL};
    setenv("TZ", "EST5", 1); /* a POSIX TZ rule: needs no time zone database */
    et_start(&local_srv, local_argv);
    et_start(&utc_srv, utc_argv);
    RUN_TEST(test_tutorial_formats);
    RUN_TEST(test_time_zones);
    RUN_TEST(test_not_printf);
    RUN_TEST(test_utf8_format);
    RUN_TEST(test_bad_input);
    RUN_TEST(test_burst);
    RUN_TEST(test_reply_rules);
    RUN_TEST(test_bad_flags);
    CHECK_INT_EQ(sg_proc_stop(&local_srv, 10000), 0);
    CHECK_INT_EQ(sg_proc_stop(&utc_srv, 10000), 0);
    return TESTS_DONE();
}
