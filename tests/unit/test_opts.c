/* test_opts.c - flags, environment variables, repeatable flags and integer parsing. */
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

int main(void)
{
    RUN_TEST(test_flags_env_defaults);
    RUN_TEST(test_errors);
    RUN_TEST(test_repeatable);
    RUN_TEST(test_parse_u64);
    return TESTS_DONE();
}
