/* exec_split_test.c - the raw command line splitter: quoting rules in, argv out, nothing else. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "exec/argv_split.h"
#include "check.h"
#include "sockgate/error.h"

/* Splits line and checks the words are exactly the NULL-terminated list that follows. */
static void expect_words(const char *line, ...)
{
    char **argv = NULL, err[256] = "";
    size_t argc = 0, i = 0;
    va_list ap;
    int rc = exec_argv_split(line, strlen(line), &argv, &argc, err, sizeof err);
    if (rc != SG_OK)
        fprintf(stderr, "split of [%s] failed: %s\n", line, err);
    CHECK_INT_EQ(rc, SG_OK);
    va_start(ap, line);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL; i++) {
        CHECK(i < argc);
        if (strcmp(argv[i], want) != 0)
            fprintf(stderr, "line [%s] word %zu: [%s], wanted [%s]\n", line, i, argv[i], want);
        CHECK_STR_EQ(argv[i], want);
    }
    va_end(ap);
    CHECK_INT_EQ(argc, i);
    CHECK(argv[argc] == NULL);
    free(argv);
}

/* Splits len bytes and checks it is refused with a message containing why. */
static void expect_error(const char *line, size_t len, const char *why)
{
    char **argv = (char **)1, err[256] = "";
    size_t argc = 99;
    CHECK_INT_EQ(exec_argv_split(line, len, &argv, &argc, err, sizeof err), SG_ERR_INVALID);
    CHECK(argv == NULL);
    CHECK_INT_EQ(argc, 0);
    if (!strstr(err, why))
        fprintf(stderr, "error for [%.*s] is [%s], wanted [%s]\n", (int)len, line, err, why);
    CHECK(strstr(err, why) != NULL);
}

static void test_plain_words(void)
{
    expect_words("ls -l /tmp", "ls", "-l", "/tmp", NULL);
    expect_words("  ls\t\t-a  ", "ls", "-a", NULL);
    expect_words("date", "date", NULL);
}

static void test_blank_lines(void)
{
    expect_words("", NULL);
    expect_words("   \t ", NULL);
}

static void test_single_quotes(void)
{
    expect_words("echo 'a b'  'c\"d'", "echo", "a b", "c\"d", NULL);
    expect_words("echo 'back\\slash'", "echo", "back\\slash", NULL);
    expect_words("echo ''", "echo", "", NULL);
    expect_words("echo a''b", "echo", "ab", NULL);
}

static void test_double_quotes(void)
{
    expect_words("echo \"a b\" \"it's\"", "echo", "a b", "it's", NULL);
    expect_words("echo \"\\\"q\\\" \\\\ \\$HOME \\`x\\`\"", "echo", "\"q\" \\ $HOME `x`", NULL);
    expect_words("echo \"\\n stays\"", "echo", "\\n stays", NULL);
    expect_words("echo \"\"", "echo", "", NULL);
    expect_words("echo \"a\\\nb\"", "echo", "ab", NULL);
}

static void test_backslash(void)
{
    expect_words("echo a\\ b \\'c\\' \\\"d", "echo", "a b", "'c'", "\"d", NULL);
    expect_words("echo \\\\", "echo", "\\", NULL);
    expect_words("echo a \\\n b", "echo", "a", "b", NULL);
    expect_words("echo a\\\nb", "echo", "ab", NULL);
}

static void test_mixed_quotes_join(void)
{
    expect_words("echo 'a'\"b\"\\ c", "echo", "ab c", NULL);
    expect_words("--flag='x y'", "--flag=x y", NULL);
}

static void test_shell_syntax_is_plain(void)
{
    expect_words("echo a;b | c && d > e < f", "echo", "a;b", "|", "c", "&&", "d", ">", "e", "<", "f", NULL);
    expect_words("echo $(id) `id` ${HOME} $HOME", "echo", "$(id)", "`id`", "${HOME}", "$HOME", NULL);
    expect_words("echo * ? ~ # !", "echo", "*", "?", "~", "#", "!", NULL);
    expect_words("A=1 echo", "A=1", "echo", NULL);
    expect_words("echo a\nrm b", "echo", "a\nrm", "b", NULL);
    expect_words("echo a\r\n", "echo", "a\r\n", NULL);
    expect_words("echo &", "echo", "&", NULL);
}

static void test_bytes_pass_through(void)
{
    expect_words("echo \xff\xfe \xe4\xbd\xa0\xe5\xa5\xbd", "echo", "\xff\xfe", "\xe4\xbd\xa0\xe5\xa5\xbd", NULL);
}

static void test_errors(void)
{
    expect_error("echo 'abc", 9, "unterminated single quote");
    expect_error("echo \"abc", 9, "unterminated double quote");
    expect_error("echo abc\\", 9, "backslash with nothing after it");
    expect_error("echo a\0b", 8, "NUL byte");
    expect_error("'", 1, "unterminated single quote");
}

static void test_too_many_words(void)
{
    size_t n = EXEC_SPLIT_MAX_ARGS + 1, len = n * 2;
    char *line = malloc(len);
    char **argv = NULL, err[256];
    size_t argc = 0;
    CHECK(line != NULL);
    for (size_t i = 0; i < n; i++) {
        line[2 * i] = 'x';
        line[2 * i + 1] = ' ';
    }
    expect_error(line, len, "more than");
    /* Exactly the maximum is fine. */
    CHECK_INT_EQ(exec_argv_split(line, len - 2, &argv, &argc, err, sizeof err), SG_OK);
    CHECK_INT_EQ(argc, EXEC_SPLIT_MAX_ARGS);
    free(argv);
    free(line);
}

static void test_not_nul_terminated_input(void)
{
    /* The splitter reads exactly len bytes: what follows in memory is never part of the line. */
    const char buf[] = "echo ab" "GARBAGE";
    char **argv = NULL, err[64];
    size_t argc = 0;
    CHECK_INT_EQ(exec_argv_split(buf, 7, &argv, &argc, err, sizeof err), SG_OK);
    CHECK_INT_EQ(argc, 2);
    CHECK_STR_EQ(argv[1], "ab");
    free(argv);
}

int main(void)
{
    RUN_TEST(test_plain_words);
    RUN_TEST(test_blank_lines);
    RUN_TEST(test_single_quotes);
    RUN_TEST(test_double_quotes);
    RUN_TEST(test_backslash);
    RUN_TEST(test_mixed_quotes_join);
    RUN_TEST(test_shell_syntax_is_plain);
    RUN_TEST(test_bytes_pass_through);
    RUN_TEST(test_errors);
    RUN_TEST(test_too_many_words);
    RUN_TEST(test_not_nul_terminated_input);
    return TESTS_DONE();
}
