/*
 * exec_stream_test.c - streamed output of sockgate-exec ("stream": true): frames as the command
 * writes, stdout and stderr apart, no output cap, the timeout still kills, a client that leaves
 * ends the command's whole process group, and a client that reads slowly holds the command back.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "xt_util.h"

static struct sg_proc srv;

/* Sends argv as a streamed exec request (with timeout_ms when > 0). */
static void send_stream(struct xt_conn *c, const char *const argv[], long timeout_ms)
{
    json_t *hdr = json_pack("{s:s, s:[], s:b, s:s}", "op", "exec", "argv", "stream", 1, "id", "stream-test");
    for (size_t i = 0; argv[i]; i++)
        json_array_append_new(json_object_get(hdr, "argv"), json_string(argv[i]));
    if (timeout_ms > 0)
        json_object_set_new(hdr, "timeout_ms", json_integer(timeout_ms));
    xt_send_frame(c, hdr, NULL, 0);
    json_decref(hdr);
}

static const char *event_of(const struct xt_reply *r)
{
    return json_string_value(json_object_get(r->hdr, "event"));
}

/*
 * A command that writes a line, waits, writes another and exits 3: the frames
 * are start, the first line on its own (sent before the second exists), the
 * second, stderr apart, and exit with the code, each carrying the request's id.
 */
static void test_frames_as_written(void)
{
    const char *argv[] = {"sh", "-c", "echo one; sleep 1; echo two; echo oops >&2; exit 3", NULL};
    struct xt_conn c;
    struct xt_reply r;
    int n_stdout = 0;
    char out[64] = "", err[64] = "";
    xt_connect(&c, &srv);
    send_stream(&c, argv, 0);
    CHECK(xt_read(&c, &r, 10000) == SG_OK);
    CHECK_STR_EQ(event_of(&r), "start");
    CHECK_STR_EQ(json_string_value(json_object_get(r.hdr, "id")), "stream-test");
    xt_reply_free(&r);
    for (;;) {
        const char *ev;
        CHECK(xt_read(&c, &r, 10000) == SG_OK);
        ev = event_of(&r);
        CHECK(ev != NULL);
        if (strcmp(ev, "exit") == 0)
            break;
        if (strcmp(ev, "stdout") == 0) {
            n_stdout++;
            strncat(out, (const char *)r.body, r.len < sizeof out - strlen(out) - 1 ? r.len : 0);
        } else {
            CHECK_STR_EQ(ev, "stderr");
            strncat(err, (const char *)r.body, r.len < sizeof err - strlen(err) - 1 ? r.len : 0);
        }
        xt_reply_free(&r);
    }
    /* The second line did not exist when the first was sent: two frames, not one at the end. */
    CHECK_INT_EQ(n_stdout, 2);
    CHECK_STR_EQ(out, "one\ntwo\n");
    CHECK_STR_EQ(err, "oops\n");
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 3);
    CHECK(!xt_true(&r, "timed_out"));
    CHECK(xt_int(&r, "duration_ms") >= 0);
    xt_reply_free(&r);
    xt_close(&c);
}

/* Streamed output has no cap: 4 MiB through a server whose buffered answers stop at 64 KiB. */
static void test_no_output_cap(void)
{
    const char *argv[] = {"head", "-c", "4194304", "/dev/zero", NULL};
    struct xt_conn c;
    struct xt_reply r;
    size_t total = 0;
    xt_connect(&c, &srv);
    send_stream(&c, argv, 0);
    for (;;) {
        CHECK(xt_read(&c, &r, 20000) == SG_OK);
        if (strcmp(event_of(&r), "exit") == 0)
            break;
        if (strcmp(event_of(&r), "stdout") == 0)
            total += r.len;
        xt_reply_free(&r);
    }
    CHECK_INT_EQ(total, 4194304);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    CHECK(!xt_true(&r, "truncated"));
    xt_reply_free(&r);
    xt_close(&c);
}

/* The time limit still holds: the command is killed and the exit frame says timed_out. */
static void test_timeout_kills(void)
{
    const char *argv[] = {"sh", "-c", "echo started; sleep 30", NULL};
    struct xt_conn c;
    struct xt_reply r;
    xt_connect(&c, &srv);
    send_stream(&c, argv, 500);
    for (;;) {
        CHECK(xt_read(&c, &r, 15000) == SG_OK);
        if (strcmp(event_of(&r), "exit") == 0)
            break;
        xt_reply_free(&r);
    }
    CHECK(xt_true(&r, "timed_out"));
    CHECK(xt_int(&r, "signal") > 0);
    xt_reply_free(&r);
    xt_close(&c);
}

/* A client that leaves mid-run: the command and what it started are gone, even one that ignores SIGTERM. */
static void test_client_leaving_ends_the_group(void)
{
    const char *argv[] = {"sh", "-c", "trap '' TERM; echo up; sleep 4141 & sleep 4242; wait", NULL};
    struct xt_conn c;
    struct xt_reply r;
    xt_connect(&c, &srv);
    send_stream(&c, argv, 0);
    for (int i = 0; i < 2; i++) { /* start, then "up" */
        CHECK(xt_read(&c, &r, 10000) == SG_OK);
        xt_reply_free(&r);
    }
    CHECK(xt_wait_proc("4141", 5000) > 0);
    CHECK(xt_wait_proc("4242", 5000) > 0);
    xt_close(&c);
    /* Bounded waits, not timings: the group gets SIGTERM, then SIGKILL within a second of the close. */
    CHECK(xt_wait_gone("4141", 5000));
    CHECK(xt_wait_gone("4242", 5000));
}

/*
 * A client that stops reading: the command blocks on its own output (the
 * server reads the pipe only as fast as the client takes frames), so it
 * cannot run ahead. `seq` would finish 10 million lines in about a second;
 * after two seconds of the client not reading, it is still running.
 */
static void test_slow_reader_holds_the_command(void)
{
    const char *argv[] = {"seq", "1", "10000000", NULL};
    struct xt_conn c;
    struct xt_reply r;
    size_t total = 0;
    xt_connect(&c, &srv);
    send_stream(&c, argv, 60000);
    CHECK(xt_read(&c, &r, 10000) == SG_OK);
    xt_reply_free(&r);
    sleep(2);
    CHECK(xt_find_proc("10000000") > 0);
    for (;;) {
        CHECK(xt_read(&c, &r, 60000) == SG_OK);
        if (strcmp(event_of(&r), "exit") == 0)
            break;
        total += r.len;
        xt_reply_free(&r);
    }
    CHECK_INT_EQ(total, 78888897); /* every line of seq 1 10000000, nothing dropped */
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    xt_reply_free(&r);
    xt_close(&c);
}

/* The same connection serves a plain request after a streamed one. */
static void test_connection_goes_on(void)
{
    const char *stream_argv[] = {"echo", "first", NULL};
    const char *plain_argv[] = {"echo", "second", NULL};
    struct xt_conn c;
    struct xt_reply r;
    xt_connect(&c, &srv);
    send_stream(&c, stream_argv, 0);
    do {
        CHECK(xt_read(&c, &r, 10000) == SG_OK);
        if (strcmp(event_of(&r), "exit") == 0)
            break;
        xt_reply_free(&r);
    } while (1);
    xt_reply_free(&r);
    xt_send_exec(&c, plain_argv, NULL, 0);
    CHECK(xt_read(&c, &r, 10000) == SG_OK);
    xt_check_stdout(&r, "second\n");
    xt_reply_free(&r);
    xt_close(&c);
}

int main(void)
{
    const char *args[] = {"--allow", "sh,echo,head,seq", "--max-output", "65536", NULL};
    xt_start(&srv, args);
    RUN_TEST(test_frames_as_written);
    RUN_TEST(test_no_output_cap);
    RUN_TEST(test_timeout_kills);
    RUN_TEST(test_client_leaving_ends_the_group);
    RUN_TEST(test_slow_reader_holds_the_command);
    RUN_TEST(test_connection_goes_on);
    xt_stop(&srv);
    return TESTS_DONE();
}
