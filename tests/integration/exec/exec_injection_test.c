/*
 * exec_injection_test.c - shell injection attempts against sockgate-exec: each one runs
 * literally or is refused, and none creates a file or runs a second command.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "xt_util.h"

/* What a case must lead to. */
enum expect {
    LITERAL, /* runs, exit 0, stdout exactly out */
    RAN,     /* runs (no shell: the "operators" are just arguments), exit code as given */
    REFUSED, /* command_not_allowed, exit 127 */
    INVALID  /* invalid_request */
};

/* One attempt. '@' in line, argv and out stands for the marker directory. */
struct attempt {
    const char *line;           /* a raw command line, or NULL for a framed request */
    const char *argv[4];        /* the framed request's argv when line is NULL */
    size_t line_len;            /* 0: strlen(line); set for lines holding a NUL byte */
    enum expect expect;
    const char *out;            /* LITERAL: expected stdout */
    int exit_code;              /* RAN: expected exit code */
};

static const struct attempt attempts[] = {
    {"echo a; touch @/m1", {NULL}, 0, LITERAL, "a; touch @/m1\n", 0},
    {"echo a | touch @/m2", {NULL}, 0, LITERAL, "a | touch @/m2\n", 0},
    {"echo a && touch @/m3", {NULL}, 0, LITERAL, "a && touch @/m3\n", 0},
    {"echo a || touch @/m4", {NULL}, 0, LITERAL, "a || touch @/m4\n", 0},
    {"echo a > @/m5", {NULL}, 0, LITERAL, "a > @/m5\n", 0},
    {"echo a >> @/m6 2>&1", {NULL}, 0, LITERAL, "a >> @/m6 2>&1\n", 0},
    {"echo $(touch @/m7)", {NULL}, 0, LITERAL, "$(touch @/m7)\n", 0},
    {"echo `touch @/m8`", {NULL}, 0, LITERAL, "`touch @/m8`\n", 0},
    {"echo \"$(touch @/m9)\"", {NULL}, 0, LITERAL, "$(touch @/m9)\n", 0},
    {"echo *", {NULL}, 0, LITERAL, "*\n", 0}, /* the workdir holds a file a glob would list */
    {"echo a\ntouch @/m11", {NULL}, 0, LITERAL, "a\ntouch @/m11\n", 0},
    {"echo a & touch @/m12", {NULL}, 0, LITERAL, "a & touch @/m12\n", 0},
    {"echo ${IFS}touch${IFS}@/m13", {NULL}, 0, LITERAL, "${IFS}touch${IFS}@/m13\n", 0},
    {"echo ~ $HOME", {NULL}, 0, LITERAL, "~ $HOME\n", 0},
    {"echo hi #; touch @/m15", {NULL}, 0, LITERAL, "hi #; touch @/m15\n", 0},
    {"echo <(touch @/m16)", {NULL}, 0, LITERAL, "<(touch @/m16)\n", 0},
    {"touch @/m17", {NULL}, 0, REFUSED, NULL, 0},
    {"sh -c 'touch @/m18'", {NULL}, 0, REFUSED, NULL, 0},
    {"/bin/sh -c 'touch @/m19'", {NULL}, 0, REFUSED, NULL, 0},
    {"../../../../../../bin/sh -c 'touch @/m20'", {NULL}, 0, REFUSED, NULL, 0},
    {"/usr/bin/../bin/touch @/m21", {NULL}, 0, REFUSED, NULL, 0},
    {"./echo hi", {NULL}, 0, REFUSED, NULL, 0},
    {"PATH=@ echo hi", {NULL}, 0, REFUSED, NULL, 0},
    {"LD_PRELOAD=/tmp/evil.so echo hi", {NULL}, 0, REFUSED, NULL, 0},
    {"env touch @/m25", {NULL}, 0, REFUSED, NULL, 0},
    {"'echo;touch' @/m26", {NULL}, 0, REFUSED, NULL, 0},
    {"ECHO hi", {NULL}, 0, REFUSED, NULL, 0},
    {"\"echo \" hi", {NULL}, 0, REFUSED, NULL, 0},
    {"echo a\0; touch @/m29", {NULL}, 20, INVALID, NULL, 0},
    {"ls @; touch @/m30", {NULL}, 0, RAN, NULL, 2},
    {"echo 'unclosed; touch @/m31", {NULL}, 0, INVALID, NULL, 0},
    {NULL, {"echo", "a; touch @/m32", NULL}, 0, LITERAL, "a; touch @/m32\n", 0},
    {NULL, {"echo", "$(touch @/m33)", "`touch @/m33b`"}, 0, LITERAL, "$(touch @/m33) `touch @/m33b`\n", 0},
    {NULL, {"sh", "-c", "touch @/m34"}, 0, REFUSED, NULL, 0},
    {NULL, {" echo", "x", NULL}, 0, REFUSED, NULL, 0},
    {NULL, {"echo\n", "x", NULL}, 0, REFUSED, NULL, 0},
    {NULL, {"echo/../touch", "@/m37", NULL}, 0, REFUSED, NULL, 0},
};

static char marker[256], workdir[256];

/* Replaces every '@' of in with the marker directory. */
static char *fill(const char *in, size_t len, size_t *out_len)
{
    size_t cap = len * (strlen(marker) + 1) + 1, used = 0;
    char *out = malloc(cap);
    CHECK(out != NULL);
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '@') {
            memcpy(out + used, marker, strlen(marker));
            used += strlen(marker);
        } else {
            out[used++] = in[i];
        }
    }
    out[used] = '\0';
    *out_len = used;
    return out;
}

/* Returns the number of entries in dir other than "." and "..", printing them. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        fprintf(stderr, "  %s holds %s\n", dir, e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static void check_attempt(struct xt_conn *c, const struct attempt *a, int index)
{
    struct xt_reply r;
    size_t len = 0;
    char *line = NULL, *want = NULL;

    if (a->line) {
        line = fill(a->line, a->line_len ? a->line_len : strlen(a->line), &len);
        xt_send_raw(c, line, len);
    } else {
        const char *argv[4] = {NULL};
        char *owned[3] = {NULL};
        for (int i = 0; i < 3 && a->argv[i]; i++)
            argv[i] = owned[i] = fill(a->argv[i], strlen(a->argv[i]), &len);
        xt_send_exec(c, argv, NULL, 0);
        for (int i = 0; i < 3; i++)
            free(owned[i]);
    }
    CHECK_INT_EQ(xt_read(c, &r, 10000), SG_OK);
    fprintf(stderr, "  attempt %d: exit %lld, error %s, %zu body bytes\n", index, xt_int(&r, "exit_code"),
            xt_err_code(&r) ? xt_err_code(&r) : "none", r.len);
    switch (a->expect) {
    case LITERAL:
        want = fill(a->out, strlen(a->out), &len);
        xt_check_stdout(&r, want);
        break;
    case RAN:
        CHECK(xt_err_code(&r) == NULL);
        CHECK_INT_EQ(xt_int(&r, "exit_code"), a->exit_code);
        break;
    case REFUSED:
        CHECK_STR_EQ(xt_err_code(&r), "command_not_allowed");
        CHECK_INT_EQ(xt_int(&r, "exit_code"), 127);
        break;
    case INVALID:
        CHECK_STR_EQ(xt_err_code(&r), "invalid_request");
        break;
    }
    xt_reply_free(&r);
    free(line);
    free(want);
}

/* Every attempt on one connection (which must survive them all), then the marker directory must be empty. */
static void test_injection_attempts(void)
{
    struct sg_proc server;
    struct xt_conn c;
    const char *args[] = {"--allow", "echo,ls,cat", "--workdir", workdir, NULL};
    char path[512];
    FILE *f;
    size_t n = sizeof attempts / sizeof attempts[0];

    CHECK(n >= 20);
    snprintf(path, sizeof path, "%s/visible", workdir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    fclose(f);
    xt_start(&server, args);
    xt_connect(&c, &server);
    for (size_t i = 0; i < n; i++)
        check_attempt(&c, &attempts[i], (int)i + 1);
    xt_close(&c);
    CHECK_INT_EQ(entries(marker), 0);
    CHECK_INT_EQ(entries(workdir), 1);
    CHECK(xt_zombies_of(server.pid) == 0);
    xt_stop(&server);
    /* A --workdir given by the operator is theirs: it stays. */
    CHECK(access(path, F_OK) == 0);
}

/* A command line with more words than the splitter takes is refused as a whole. */
static void test_word_flood_refused(void)
{
    struct sg_proc server;
    struct xt_conn c;
    struct xt_reply r;
    const char *args[] = {"--allow", "echo", NULL};
    size_t len = 4 + 5000 * 2;
    char *line = malloc(len);
    CHECK(line != NULL);
    memcpy(line, "echo", 4);
    for (size_t i = 4; i < len; i += 2) {
        line[i] = ' ';
        line[i + 1] = ';';
    }
    xt_start(&server, args);
    xt_connect(&c, &server);
    xt_send_raw(&c, line, len);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "invalid_request");
    xt_reply_free(&r);
    xt_close(&c);
    xt_stop(&server);
    free(line);
}

int main(void)
{
    CHECK(sg_test_tmpdir(marker, sizeof marker) == 0);
    CHECK(sg_test_tmpdir(workdir, sizeof workdir) == 0);
    RUN_TEST(test_injection_attempts);
    RUN_TEST(test_word_flood_refused);
    sg_test_rmtree(marker);
    sg_test_rmtree(workdir);
    return TESTS_DONE();
}
