/* test_log.c - log lines as a reader of stderr sees them: record fields, escaping, batching, JSON. */
#include <fcntl.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/log.h"

static char capture_path[] = "/tmp/sockgate-test-log-XXXXXX";
static int capture_fd = -1, saved_stderr = -1;

/* Points stderr at an empty capture file (the test's own messages go back to the real one by release). */
static void capture(void)
{
    CHECK(ftruncate(capture_fd, 0) == 0);
    CHECK(lseek(capture_fd, 0, SEEK_SET) == 0);
    CHECK(dup2(capture_fd, STDERR_FILENO) == STDERR_FILENO);
}

static void release(void)
{
    CHECK(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
}

/* Returns what was written to the capture file so far (caller frees). */
static char *captured(void)
{
    off_t len = lseek(capture_fd, 0, SEEK_END);
    char *text = malloc((size_t)len + 1);
    CHECK(text != NULL);
    CHECK(pread(capture_fd, text, (size_t)len, 0) == (ssize_t)len);
    text[len] = '\0';
    return text;
}

static void test_record_text(void)
{
    struct sg_log_field f[] = {
        SG_LOG_FIELD_STR("id", "abc"),  SG_LOG_FIELD_STR("skipped", NULL), SG_LOG_FIELD_INT("status", 200),
        SG_LOG_FIELD_INT("neg", -12),   SG_LOG_FIELD_INT("big", 9007199254740993LL),
        SG_LOG_FIELD_BOOL("aborted", 1), SG_LOG_FIELD_BOOL("kept", 0),
    };
    regex_t re;
    char *text;
    sg_log_init("tlog", SG_LOG_TEXT, SG_LOG_INFO);
    capture();
    sg_log_record(SG_LOG_INFO, "request", f, sizeof f / sizeof f[0]);
    sg_log_record(SG_LOG_DEBUG, "not shown", f, 1);
    release();
    text = captured();
    CHECK(regcomp(&re,
                  "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z info  tlog: request id=abc "
                  "status=200 neg=-12 big=9007199254740993 aborted=true kept=false\n$",
                  REG_EXTENDED | REG_NOSUB) == 0);
    if (regexec(&re, text, 0, NULL, 0) != 0)
        fprintf(stderr, "got: %s", text);
    CHECK(regexec(&re, text, 0, NULL, 0) == 0);
    regfree(&re);
    free(text);
}

/* A value cannot end its line: control bytes are written as \xNN, in both APIs. */
static void test_control_bytes_escaped(void)
{
    struct sg_log_field f[] = {SG_LOG_FIELD_STR("path", "/a\nfake line\r\x7f\tz")};
    json_t *fields = json_pack("{s:s}", "path", "/b\ninjected");
    char *text;
    sg_log_init("tlog", SG_LOG_TEXT, SG_LOG_INFO);
    capture();
    sg_log_record(SG_LOG_WARN, "request", f, 1);
    sg_log_fields(SG_LOG_WARN, "event", fields);
    release();
    json_decref(fields);
    text = captured();
    CHECK(strstr(text, " warn  tlog: request path=/a\\x0afake line\\x0d\\x7f\\x09z\n") != NULL);
    CHECK(strstr(text, " warn  tlog: event path=/b\\x0ainjected\n") != NULL);
    CHECK(strchr(text, '\n') != NULL && strchr(strchr(text, '\n') + 1, '\n') == text + strlen(text) - 1);
    free(text);
}

/* Batched info lines wait for the flush; a warning goes at once, after them; end flushes the rest. */
static void test_batch(void)
{
    char *text;
    sg_log_init("tlog", SG_LOG_TEXT, SG_LOG_INFO);
    capture();
    sg_log_batch_begin();
    sg_log(SG_LOG_INFO, NULL, "first");
    sg_log(SG_LOG_INFO, NULL, "second");
    text = captured();
    CHECK_STR_EQ(text, "");
    free(text);
    sg_log(SG_LOG_ERROR, NULL, "boom");
    text = captured();
    CHECK(strstr(text, "first") && strstr(text, "second") && strstr(text, "boom"));
    CHECK(strstr(text, "first") < strstr(text, "second") && strstr(text, "second") < strstr(text, "boom"));
    free(text);
    sg_log(SG_LOG_INFO, NULL, "third");
    sg_log_batch_flush();
    text = captured();
    CHECK(strstr(text, "third") != NULL);
    free(text);
    sg_log(SG_LOG_INFO, NULL, "fourth");
    sg_log_batch_end();
    sg_log(SG_LOG_INFO, NULL, "fifth"); /* no batch any more: written at once */
    release();
    text = captured();
    CHECK(strstr(text, "fourth") != NULL && strstr(text, "fifth") != NULL);
    free(text);
}

/* More lines than the batch holds: every one arrives whole and in order. */
static void test_batch_overflow_keeps_lines_whole(void)
{
    enum { LINES = 3000 };
    char *text, *p;
    int next = 0;
    sg_log_init("tlog", SG_LOG_TEXT, SG_LOG_INFO);
    capture();
    sg_log_batch_begin();
    for (int i = 0; i < LINES; i++)
        sg_log(SG_LOG_INFO, NULL, "line %d of a batch that outgrows its buffer", i);
    sg_log_batch_end();
    release();
    text = captured();
    for (p = text; *p; p = strchr(p, '\n') + 1) {
        int n = -1;
        CHECK(sscanf(strstr(p, "tlog: ") + 6, "line %d of", &n) == 1);
        CHECK_INT_EQ(n, next);
        next++;
    }
    CHECK_INT_EQ(next, LINES);
    free(text);
}

static void test_record_json(void)
{
    struct sg_log_field f[] = {SG_LOG_FIELD_STR("path", "/x\ny"), SG_LOG_FIELD_STR("bad", "\xff\xfe"),
                               SG_LOG_FIELD_INT("status", 404), SG_LOG_FIELD_BOOL("aborted", 1)};
    json_error_t jerr;
    json_t *o;
    char *text;
    sg_log_init("tlog", SG_LOG_JSON, SG_LOG_INFO);
    capture();
    sg_log_record(SG_LOG_INFO, "request", f, sizeof f / sizeof f[0]);
    release();
    text = captured();
    o = json_loads(text, 0, &jerr);
    CHECK(o != NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(o, "msg")), "request");
    CHECK_STR_EQ(json_string_value(json_object_get(o, "level")), "info");
    CHECK_STR_EQ(json_string_value(json_object_get(o, "prog")), "tlog");
    CHECK_STR_EQ(json_string_value(json_object_get(o, "path")), "/x\ny");
    CHECK(json_object_get(o, "bad") == NULL); /* not UTF-8: left out, the line stays valid JSON */
    CHECK_INT_EQ(json_integer_value(json_object_get(o, "status")), 404);
    CHECK(json_is_true(json_object_get(o, "aborted")));
    CHECK(json_is_string(json_object_get(o, "ts")));
    json_decref(o);
    free(text);
}

int main(void)
{
    capture_fd = mkstemp(capture_path);
    CHECK(capture_fd >= 0);
    unlink(capture_path);
    saved_stderr = dup(STDERR_FILENO);
    CHECK(saved_stderr >= 0);
    RUN_TEST(test_record_text);
    RUN_TEST(test_control_bytes_escaped);
    RUN_TEST(test_batch);
    RUN_TEST(test_batch_overflow_keeps_lines_whole);
    RUN_TEST(test_record_json);
    return TESTS_DONE();
}
