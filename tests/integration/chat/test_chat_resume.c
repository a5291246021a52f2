/* test_chat_resume.c - a subscriber that reconnects with `after` resumes with no loss and no duplicate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_util.h"
#include "check.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define HISTORY 50

static struct sg_proc srv;
static struct ct_conn ctl;
static int peer;
static long next_text; /* the number in the text of the next message sent: "m<N>" */

/* Sends count messages "m<N>" and checks the server has recorded them. */
static void send_messages(long count)
{
    long long before = ct_stat(&ctl, "received");
    for (long i = 0; i < count; i++) {
        char text[32];
        snprintf(text, sizeof text, "m%ld", next_text++);
        ct_udp_send(peer, srv.port, text, strlen(text));
        /* A round trip every 32 datagrams: the server reads a bounded batch per wake-up. */
        if (i % 32 == 31)
            ct_stat(&ctl, "received");
    }
    CHECK_INT_EQ(ct_stat(&ctl, "received"), before + count);
}

/* Subscribes (after < 0: no "after") and returns the acknowledgement. */
static json_t *subscribe(struct ct_conn *c, long long after)
{
    json_t *req = json_pack("{s:s}", "op", "subscribe");
    json_t *ack;
    ct_connect(c, srv.port, 0);
    if (after >= 0)
        json_object_set_new(req, "after", json_integer(after));
    ack = ct_call(c, req);
    CHECK(ct_error_code(ack) == NULL);
    CHECK(json_is_true(json_object_get(ack, "subscribed")));
    return ack;
}

static long long ack_int(const json_t *ack, const char *key)
{
    return json_integer_value(json_object_get(ack, key));
}

/* Reads one message frame and returns its seq; *text_num gets the N of its "m<N>" text. */
static long long read_message(struct ct_conn *c, long *text_num)
{
    json_t *m = NULL;
    long long seq;
    const char *text;
    CHECK_INT_EQ(ct_read(c, 10000, &m, NULL, NULL), SG_OK);
    CHECK(ct_error_code(m) == NULL);
    seq = json_integer_value(json_object_get(m, "seq"));
    text = json_string_value(json_object_get(m, "text"));
    CHECK(text && text[0] == 'm');
    *text_num = strtol(text + 1, NULL, 10);
    json_decref(m);
    return seq;
}

/*
 * Messages flow while the subscriber drops its connection at arbitrary
 * points (with frames still in flight) and comes back with the last seq it
 * got: in the end it has seen every message exactly once, in order.
 */
static void test_resume_no_loss_no_duplicate(void)
{
    long long last = ct_stat(&ctl, "last_seq"), seen = 0;
    long expect_text = next_text;
    static const int read_before_drop[] = {10, 0, 25, 20, 5}; /* the backlog stays under HISTORY */
    struct ct_conn sub;
    json_t *ack = subscribe(&sub, last);

    CHECK_INT_EQ(ack_int(ack, "replay"), 0);
    json_decref(ack);
    for (int round = 0; round < 5; round++) {
        long num;
        send_messages(15);
        for (int i = 0; i < read_before_drop[round]; i++) {
            long long seq = read_message(&sub, &num);
            CHECK_INT_EQ(seq, last + 1);
            CHECK_INT_EQ(num, expect_text);
            last = seq;
            expect_text++;
            seen++;
        }
        ct_close(&sub); /* frames the server already sent are lost with the connection */
        send_messages(4);
        ack = subscribe(&sub, last);
        CHECK_INT_EQ(ack_int(ack, "missed"), 0);
        CHECK_INT_EQ(ack_int(ack, "reset"), 0);
        CHECK_INT_EQ(ack_int(ack, "replay"), ack_int(ack, "last_seq") - last);
        json_decref(ack);
    }
    /* Catch up on everything, then one live message. */
    send_messages(1);
    while (last < ct_stat(&ctl, "last_seq")) {
        long num;
        long long seq = read_message(&sub, &num);
        CHECK_INT_EQ(seq, last + 1);
        CHECK_INT_EQ(num, expect_text);
        last = seq;
        expect_text++;
        seen++;
    }
    CHECK_INT_EQ(expect_text, next_text);
    CHECK_INT_EQ(seen, 5 * 19 + 1);
    ct_close(&sub);
}

/* After a gap longer than the history, the acknowledgement says how many messages are gone. */
static void test_resume_after_eviction(void)
{
    long long last = ct_stat(&ctl, "last_seq"), first;
    struct ct_conn sub;
    json_t *ack;
    long num;

    send_messages(HISTORY + 20);
    ack = subscribe(&sub, last);
    first = ack_int(ack, "first_seq");
    CHECK_INT_EQ(ack_int(ack, "last_seq"), last + HISTORY + 20);
    CHECK_INT_EQ(first, ack_int(ack, "last_seq") - HISTORY + 1);
    CHECK_INT_EQ(ack_int(ack, "missed"), first - (last + 1));
    CHECK_INT_EQ(ack_int(ack, "replay"), HISTORY);
    json_decref(ack);
    CHECK_INT_EQ(read_message(&sub, &num), first); /* the oldest still held comes first */
    ct_close(&sub);
}

/* A number beyond ours comes from an earlier run of the service: the whole history is replayed. */
static void test_resume_after_restart(void)
{
    struct ct_conn sub;
    json_t *ack = subscribe(&sub, 1000000);
    long num;
    CHECK(json_is_true(json_object_get(ack, "reset")));
    CHECK_INT_EQ(ack_int(ack, "replay"), HISTORY);
    CHECK_INT_EQ(read_message(&sub, &num), ack_int(ack, "first_seq"));
    json_decref(ack);
    ct_close(&sub);
}

/* Without "after", only new messages; with after 0, the whole history. */
static void test_subscribe_modes(void)
{
    struct ct_conn live, all;
    json_t *ack = subscribe(&live, -1);
    long long last = ack_int(ack, "last_seq");
    long num;
    CHECK_INT_EQ(ack_int(ack, "replay"), 0);
    json_decref(ack);
    ack = subscribe(&all, 0);
    CHECK_INT_EQ(ack_int(ack, "replay"), HISTORY);
    json_decref(ack);
    send_messages(1);
    CHECK_INT_EQ(read_message(&live, &num), last + 1);
    CHECK_INT_EQ(num, next_text - 1);
    for (int i = 0; i < HISTORY; i++)
        CHECK_INT_EQ(read_message(&all, &num), last - HISTORY + 1 + i);
    CHECK_INT_EQ(read_message(&all, &num), last + 1);
    ct_close(&live);
    ct_close(&all);
}

int main(void)
{
    const char *const extra[] = {"--history", "50", NULL};
    char addr[SG_ADDR_STRLEN];
    ct_start(&srv, extra);
    ct_connect(&ctl, srv.port, 0);
    peer = ct_udp(addr);
    RUN_TEST(test_resume_no_loss_no_duplicate);
    RUN_TEST(test_resume_after_eviction);
    RUN_TEST(test_resume_after_restart);
    RUN_TEST(test_subscribe_modes);
    close(peer);
    ct_close(&ctl);
    ct_stop(&srv);
    return TESTS_DONE();
}
