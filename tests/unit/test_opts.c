/* test_opts.c - flags, environment variables, repeatable flags and integer parsing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/opts.h"

static int appended;

static int count_origin(const char *value, void *ctx)
{
    (void)ctx;
    if (strcmp(value, "bad") == 0)
        return -1;
    appended++;
    return 0;
}

static int parse(int argc, char **argv, const char **listen, const char **utc, int *first)
{
    const struct sg_option opts[] = {
        {"listen", "SGTEST_LISTEN", "HOST:PORT", "where to listen", listen, NULL, NULL},
        {"utc", "SGTEST_UTC", NULL, "use UTC", utc, NULL, NULL},
        {"origin", "SGTEST_ORIGIN", "ORIGIN", "allowed origin", NULL, count_origin, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };
    return sg_options_parse("prog", "prog [options]", "A test.", opts, argc, argv, first);
}

static void test_flags_env_defaults(void)
{
    const char *listen = "127.0.0.1:1", *utc = NULL;
    char *argv1[] = {"prog", NULL};
    char *argv2[] = {"prog", "--listen", "0.0.0.0:2", "--utc", NULL};
    char *argv3[] = {"prog", "--listen=[::1]:3", "rest", NULL};
    int first = 0;
    CHECK_INT_EQ(parse(1, argv1, &listen, &utc, NULL), 0);
    CHECK_STR_EQ(listen, "127.0.0.1:1");
    CHECK(utc == NULL);
    setenv("SGTEST_LISTEN", "10.0.0.1:4", 1);
    setenv("SGTEST_UTC", "1", 1);
    CHECK_INT_EQ(parse(1, argv1, &listen, &utc, NULL), 0);
    CHECK_STR_EQ(listen, "10.0.0.1:4");
    CHECK_STR_EQ(utc, "1");
    listen = NULL;
    CHECK_INT_EQ(parse(4, argv2, &listen, &utc, NULL), 0); /* the flag beats the environment */
    CHECK_STR_EQ(listen, "0.0.0.0:2");
    CHECK_INT_EQ(parse(3, argv3, &listen, &utc, &first), 0);
    CHECK_STR_EQ(listen, "[::1]:3");
    CHECK_INT_EQ(first, 2);
    unsetenv("SGTEST_LISTEN");
    setenv("SGTEST_UTC", "0", 1);
    utc = NULL;
    CHECK_INT_EQ(parse(1, argv1, &listen, &utc, NULL), 0);
    CHECK(utc == NULL);
    unsetenv("SGTEST_UTC");
}

static void test_errors(void)
{
    const char *listen = NULL, *utc = NULL;
    char *unknown[] = {"prog", "--nope", NULL};
    char *missing[] = {"prog", "--listen", NULL};
    char *valued_bool[] = {"prog", "--utc=1", NULL};
    char *positional[] = {"prog", "extra", NULL};
    char *help[] = {"prog", "--help", NULL};
    char *version[] = {"prog", "--version", NULL};
    CHECK_INT_EQ(parse(2, unknown, &listen, &utc, NULL), 2);
    CHECK_INT_EQ(parse(2, missing, &listen, &utc, NULL), 2);
    CHECK_INT_EQ(parse(2, valued_bool, &listen, &utc, NULL), 2);
    CHECK_INT_EQ(parse(2, positional, &listen, &utc, NULL), 2);
    CHECK_INT_EQ(parse(2, help, &listen, &utc, NULL), 1);
    CHECK_INT_EQ(parse(2, version, &listen, &utc, NULL), 1);
}

static void test_repeatable(void)
{
    const char *listen = NULL, *utc = NULL;
    char *argv[] = {"prog", "--origin", "a", "--origin=b,c", NULL};
    char *bad[] = {"prog", "--origin", "bad", NULL};
    appended = 0;
    CHECK_INT_EQ(parse(4, argv, &listen, &utc, NULL), 0);
    CHECK_INT_EQ(appended, 3);
    CHECK_INT_EQ(parse(3, bad, &listen, &utc, NULL), 2);
}

static void test_parse_u64(void)
{
    uint64_t v;
    CHECK_INT_EQ(sg_parse_u64("42", 0, 100, 0, &v), SG_OK);
    CHECK_INT_EQ(v, 42);
    CHECK_INT_EQ(sg_parse_u64("101", 0, 100, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_u64("-1", 0, 100, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_u64("", 0, 100, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_u64("4x", 0, 100, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_u64("16M", 0, UINT64_MAX, 1, &v), SG_OK);
    CHECK_INT_EQ(v, 16 << 20);
    CHECK_INT_EQ(sg_parse_u64("2GiB", 0, UINT64_MAX, 1, &v), SG_OK);
    CHECK(v == (UINT64_C(2) << 30));
    CHECK_INT_EQ(sg_parse_u64("16M", 0, UINT64_MAX, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_u64("99999999999999999999", 0, UINT64_MAX, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_u64("17179869184T", 0, UINT64_MAX, 1, &v), SG_ERR_INVALID); /* overflow */
}

static void test_durations_and_sizes(void)
{
    uint64_t v = 0;
    char buf[32];
    CHECK_INT_EQ(sg_parse_duration_ms("500ms", 0, 3600000, 0, &v), SG_OK);
    CHECK_INT_EQ((int)v, 500);
    CHECK_INT_EQ(sg_parse_duration_ms("10s", 0, 3600000, 0, &v), SG_OK);
    CHECK_INT_EQ((int)v, 10000);
    CHECK_INT_EQ(sg_parse_duration_ms("2m", 0, 3600000, 0, &v), SG_OK);
    CHECK_INT_EQ((int)v, 120000);
    CHECK_INT_EQ(sg_parse_duration_ms("1h", 0, 3600000, 0, &v), SG_OK);
    CHECK_INT_EQ((int)v, 3600000);
    CHECK_INT_EQ(sg_parse_duration_ms("0", 0, 3600000, 0, &v), SG_OK); /* zero needs no unit */
    CHECK_INT_EQ((int)v, 0);
    CHECK_INT_EQ(sg_parse_duration_ms("5", 0, 3600000, 0, &v), SG_ERR_INVALID); /* a unit is needed */
    CHECK_INT_EQ(sg_parse_duration_ms("5", 0, 3600000, 1000, &v), SG_OK);       /* a bare number's old unit */
    CHECK_INT_EQ((int)v, 5000);
    CHECK_INT_EQ(sg_parse_duration_ms("2h", 0, 3600000, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_duration_ms("-1s", 0, 3600000, 0, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_parse_duration_ms("1sec", 0, 3600000, 0, &v), SG_ERR_INVALID);
    sg_format_duration(3600000, buf, sizeof buf);
    CHECK_STR_EQ(buf, "1h");
    sg_format_duration(1500, buf, sizeof buf);
    CHECK_STR_EQ(buf, "1500ms");
    sg_format_size(UINT64_C(1) << 20, buf, sizeof buf);
    CHECK_STR_EQ(buf, "1M");
    sg_format_size(1000, buf, sizeof buf);
    CHECK_STR_EQ(buf, "1000");
}

/* An old spelling (same value pointer, metavar MS) keeps bare milliseconds working; the flag given last wins. */
static void test_old_spelling(void)
{
    const char *timeout = "10s";
    const struct sg_option opts[] = {
        {"timeout", "SGTEST_TIMEOUT", "DURATION", "deadline", &timeout, NULL, NULL},
        {"timeout-ms", "SGTEST_TIMEOUT_MS", "MS", "milliseconds", &timeout, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };
    char *old[] = {"prog", "--timeout-ms", "250", NULL};
    char *both[] = {"prog", "--timeout-ms", "250", "--timeout", "3s", NULL};
    char *none[] = {"prog", NULL};
    CHECK_INT_EQ(sg_options_parse("prog", "prog", "A test.", opts, 3, old, NULL), 0);
    CHECK_STR_EQ(timeout, "250ms");
    CHECK_INT_EQ(sg_options_parse("prog", "prog", "A test.", opts, 5, both, NULL), 0);
    CHECK_STR_EQ(timeout, "3s");
    setenv("SGTEST_TIMEOUT_MS", "40", 1);
    timeout = "10s";
    CHECK_INT_EQ(sg_options_parse("prog", "prog", "A test.", opts, 1, none, NULL), 0);
    CHECK_STR_EQ(timeout, "40ms");
    setenv("SGTEST_TIMEOUT", "2s", 1); /* the flag's own variable beats its old spelling's */
    CHECK_INT_EQ(sg_options_parse("prog", "prog", "A test.", opts, 1, none, NULL), 0);
    CHECK_STR_EQ(timeout, "2s");
    CHECK_INT_EQ(sg_options_parse("prog", "prog", "A test.", opts, 3, old, NULL), 0); /* a flag beats both */
    CHECK_STR_EQ(timeout, "250ms");
    unsetenv("SGTEST_TIMEOUT_MS");
    unsetenv("SGTEST_TIMEOUT");
}

int main(void)
{
    RUN_TEST(test_durations_and_sizes);
    RUN_TEST(test_old_spelling);
    RUN_TEST(test_flags_env_defaults);
    RUN_TEST(test_errors);
    RUN_TEST(test_repeatable);
    RUN_TEST(test_parse_u64);
    return TESTS_DONE();
}
