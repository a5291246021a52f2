/* test_chat_flood.c - floods: the history and the server's memory stay bounded; a slow subscriber is cut alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_util.h"
#include "check.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define HISTORY 200

static struct sg_proc srv;
static struct ct_conn ctl;
static char text[1001]; /* 1000 bytes: near the largest message */

/* 22,000 messages of 1000 bytes through a 200-message history: it holds 200, and memory does not follow the flood. */
static void test_history_bounded(void)
{
    char addr[SG_ADDR_STRLEN];
    int u = ct_udp(addr);
    long long start = ct_stat(&ctl, "received"), last;
    long rss_warm, rss_after;

    CHECK_INT_EQ(ct_flood(u, srv.port, &ctl, 2000, text), start + 2000);
    rss_warm = sg_proc_rss_kib(srv.pid);
    CHECK(rss_warm > 0);
    CHECK_INT_EQ(ct_flood(u, srv.port, &ctl, 20000, text), start + 22000);
    rss_after = sg_proc_rss_kib(srv.pid);
    last = ct_stat(&ctl, "last_seq");
    CHECK_INT_EQ(ct_stat(&ctl, "history"), HISTORY);
    CHECK_INT_EQ(ct_stat(&ctl, "history_max"), HISTORY);
    CHECK_INT_EQ(ct_stat(&ctl, "first_seq"), last - HISTORY + 1);
    fprintf(stderr, "RSS after 2000 messages: %ld KiB, after 22000: %ld KiB\n", rss_warm, rss_after);
    /* Keeping the 20,000 messages would take 20 MB; the ring's turnover may cost allocator slack only. */
    CHECK(rss_after - rss_warm < 4096);
    close(u);
}

/* Reads every frame sub has ready until its seq reaches upto; returns the last seq read. */
static long long drain_fast(struct ct_conn *sub, long long last, long long upto)
{
    while (last < upto) {
        json_t *m = NULL;
        long long seq;
        CHECK_INT_EQ(ct_read(sub, 10000, &m, NULL, NULL), SG_OK);
        CHECK(ct_error_code(m) == NULL);
        seq = json_integer_value(json_object_get(m, "seq"));
        CHECK_INT_EQ(seq, last + 1); /* no message skipped, none twice */
        CHECK_INT_EQ(json_string_length(json_object_get(m, "text")), strlen(text));
        last = seq;
        json_decref(m);
    }
    return last;
}

/*
 * A subscriber that never reads is cut with "too slow" once the history
 * overtakes it; a subscriber that reads, subscribed at the same time, gets
 * every message and stays connected. The cut one reads what it was sent,
 * then the error, then EOF, and resumes with `after`.
 */
static void test_slow_subscriber_cut(void)
{
    char addr[SG_ADDR_STRLEN];
    int u = ct_udp(addr);
    struct ct_conn fast, slow;
    json_t *ack, *m = NULL;
    long long fast_last, slow_last, cut = ct_stat(&ctl, "subscribers_cut");
    long sent = 0;
    int rc;

    ct_connect(&fast, srv.port, 0);
    ct_connect(&slow, srv.port, 4096);
    ack = ct_call(&fast, json_pack("{s:s}", "op", "subscribe"));
    fast_last = json_integer_value(json_object_get(ack, "last_seq"));
    json_decref(ack);
    ack = ct_call(&slow, json_pack("{s:s}", "op", "subscribe"));
    slow_last = json_integer_value(json_object_get(ack, "last_seq"));
    json_decref(ack);
    CHECK_INT_EQ(ct_stat(&ctl, "subscribers"), 2);

    /* At most 5000 messages (5 MB); the cut comes after the history plus the socket buffers (~400). */
    while (ct_stat(&ctl, "subscribers_cut") == cut && sent < 5000) {
        ct_flood(u, srv.port, &ctl, 32, text);
        sent += 32;
        fast_last = drain_fast(&fast, fast_last, ct_stat(&ctl, "last_seq"));
    }
    fprintf(stderr, "slow subscriber cut after %ld messages\n", sent);
    CHECK_INT_EQ(ct_stat(&ctl, "subscribers_cut"), cut + 1);
    CHECK_INT_EQ(ct_stat(&ctl, "subscribers"), 1);
    CHECK(sent > HISTORY);

    /* The fast one was not harmed: it is still subscribed and gets the next message. */
    ct_flood(u, srv.port, &ctl, 1, text);
    fast_last = drain_fast(&fast, fast_last, ct_stat(&ctl, "last_seq"));
    CHECK_INT_EQ(fast_last, ct_stat(&ctl, "last_seq"));

    /* The slow one: contiguous messages, then the error, then EOF. */
    for (;;) {
        rc = ct_read(&slow, 10000, &m, NULL, NULL);
        CHECK_INT_EQ(rc, SG_OK);
        if (ct_error_code(m))
            break;
        CHECK_INT_EQ(json_integer_value(json_object_get(m, "seq")), slow_last + 1);
        slow_last++;
        json_decref(m);
    }
    CHECK_STR_EQ(ct_error_code(m), "busy");
    CHECK(strncmp(json_string_value(json_object_get(json_object_get(m, "error"), "message")), "too slow", 8) == 0);
    json_decref(m);
    CHECK_INT_EQ(ct_read(&slow, 10000, &m, NULL, NULL), SG_ERR_CLOSED);
    ct_close(&slow);
    CHECK(slow_last < fast_last);

    /* It comes back with its last seq: the history after it, and the count of what was evicted. */
    ct_connect(&slow, srv.port, 0);
    ack = ct_call(&slow, json_pack("{s:s, s:I}", "op", "subscribe", "after", (json_int_t)slow_last));
    CHECK(ct_error_code(ack) == NULL);
    CHECK_INT_EQ(json_integer_value(json_object_get(ack, "missed")),
                 json_integer_value(json_object_get(ack, "first_seq")) - slow_last - 1);
    CHECK_INT_EQ(json_integer_value(json_object_get(ack, "replay")), HISTORY);
    json_decref(ack);
    CHECK_INT_EQ(ct_read(&slow, 10000, &m, NULL, NULL), SG_OK);
    CHECK_INT_EQ(json_integer_value(json_object_get(m, "seq")), fast_last - HISTORY + 1);
    json_decref(m);
    ct_close(&slow);
    ct_close(&fast);
    close(u);
}

int main(void)
{
    const char *const extra[] = {"--history", "200", NULL};
#ifdef SG_TEST_SANITIZED
    /*
     * ASan keeps freed blocks in a quarantine of 256 MB, so a ring that frees
     * as much as it allocates would look like growth; a tiny quarantine lets
     * RSS show what the server really holds (the server inherits this).
     */
    {
        char opts[512];
        const char *old = getenv("ASAN_OPTIONS");
        snprintf(opts, sizeof opts, "%s%squarantine_size_mb=1:thread_local_quarantine_size_kb=64", old ? old : "",
                 old && *old ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
#endif
    memset(text, 'z', sizeof text - 1);
    memcpy(text, "发给flood: ", strlen("发给flood: "));
    ct_start(&srv, extra);
    ct_connect(&ctl, srv.port, 0);
    RUN_TEST(test_history_bounded);
    RUN_TEST(test_slow_subscriber_cut);
    ct_close(&ctl);
    ct_stop(&srv);
    return TESTS_DONE();
}
