/* test_chat_ops.c - sockgate-chat's framed ops against the real server: messages, reply, peers, stats, refusals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat_util.h"
#include "check.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static struct sg_proc srv;
static struct ct_conn ctl; /* requests; stays open across the tests, as a gateway's pooled connection */

/*
 * The sockets that became peers of srv stay open until srv stops: a closed
 * one's port can be handed to a later test's socket, which srv would then
 * take for that old peer (a "silent" socket found in the table, a count of
 * messages off by the old ones).
 */
static int peer_fds[8];
static int n_peer_fds;

static void keep_peer_open(int fd)
{
    CHECK(n_peer_fds < (int)(sizeof peer_fds / sizeof peer_fds[0]));
    peer_fds[n_peer_fds++] = fd;
}

static json_t *reply_req(const char *to, const char *text)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "op", "reply", "to", to, "text", text, "id", "r");
}

/* Reads the next frame of a subscription and checks it is the message expected. */
static json_t *expect_message(struct ct_conn *sub, const char *kind, const char *peer, const char *text)
{
    json_t *m = NULL;
    CHECK_INT_EQ(ct_read(sub, 10000, &m, NULL, NULL), SG_OK);
    CHECK(ct_error_code(m) == NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "kind")), kind);
    CHECK_STR_EQ(json_string_value(json_object_get(m, strcmp(kind, "in") == 0 ? "from" : "to")), peer);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), text);
    CHECK(json_integer_value(json_object_get(m, "seq")) >= 1);
    return m;
}

/* The tutorial's exchange, seen from the operator's seat: a message comes in, the reply goes back. */
static void test_message_and_reply(void)
{
    char addr[SG_ADDR_STRLEN], got[2048];
    const char *text = "发给taibai: 你好, 世界";
    struct ct_conn sub;
    json_t *h, *m;
    long long t, now_ms = (long long)time(NULL) * 1000;
    int u = ct_udp(addr);

    ct_connect(&sub, srv.port, 0);
    h = ct_call(&sub, json_pack("{s:s, s:s}", "op", "subscribe", "id", "s1"));
    CHECK(json_is_true(json_object_get(h, "subscribed")));
    CHECK_STR_EQ(json_string_value(json_object_get(h, "id")), "s1");
    CHECK_INT_EQ(json_integer_value(json_object_get(h, "replay")), 0);
    json_decref(h);

    ct_udp_send(u, srv.port, text, strlen(text));
    m = expect_message(&sub, "in", addr, text);
    t = json_integer_value(json_object_get(m, "time_ms"));
    CHECK(t > now_ms - 3600 * 1000 && t < now_ms + 3600 * 1000); /* Unix milliseconds, not seconds or ns */
    json_decref(m);

    h = ct_call(&ctl, reply_req(addr, "收到 hi"));
    CHECK(ct_error_code(h) == NULL);
    CHECK(json_is_true(json_object_get(h, "sent")));
    CHECK_STR_EQ(json_string_value(json_object_get(h, "id")), "r");
    CHECK_INT_EQ(json_integer_value(json_object_get(h, "bytes")), strlen("收到 hi"));
    json_decref(h);
    CHECK_INT_EQ(ct_udp_recv(u, got, sizeof got, 5000), strlen("收到 hi"));
    CHECK_STR_EQ(got, "收到 hi");
    /* Every open page sees the operator's reply too. */
    json_decref(expect_message(&sub, "out", addr, "收到 hi"));
    ct_close(&sub);
    keep_peer_open(u);
}

/* The service can only ever send to an address that wrote to it, matched byte for byte. */
static void test_reply_refused(void)
{
    char writer[SG_ADDR_STRLEN], silent[SG_ADDR_STRLEN], got[2048], alias[96];
    const char *writer_port;
    int w = ct_udp(writer), s = ct_udp(silent);
    const char *tos[6];
    long long replies = ct_stat(&ctl, "replies");
    json_t *h;

    ct_udp_send(w, srv.port, "hello", 5);
    CHECK(ct_udp_recv(w, got, sizeof got, 200) < 0); /* the server never answers by itself */
    writer_port = strrchr(writer, ':') + 1;
    snprintf(alias, sizeof alias, "localhost:%s", writer_port);
    tos[0] = silent;            /* a real socket that never wrote */
    tos[1] = alias;             /* the writer, but not as it was seen: never resolved */
    tos[2] = "127.0.0.1:0";
    tos[3] = "255.255.255.255:9";
    tos[4] = "";
    tos[5] = "not an address";
    for (int i = 0; i < 6; i++) {
        h = ct_call(&ctl, reply_req(tos[i], "you there?"));
        CHECK_STR_EQ(ct_error_code(h), "not_found");
        CHECK_STR_EQ(json_string_value(json_object_get(h, "id")), "r");
        json_decref(h);
    }
    CHECK(ct_udp_recv(s, got, sizeof got, 300) < 0);
    CHECK(ct_udp_recv(w, got, sizeof got, 100) < 0);
    CHECK_INT_EQ(ct_stat(&ctl, "replies"), replies);

    h = ct_call(&ctl, json_pack("{s:s, s:s, s:i}", "op", "reply", "to", writer, "text", 5));
    CHECK_STR_EQ(ct_error_code(h), "invalid_request");
    json_decref(h);
    h = ct_call(&ctl, json_pack("{s:s, s:s}", "op", "reply", "text", "no to"));
    CHECK_STR_EQ(ct_error_code(h), "invalid_request");
    json_decref(h);
    h = ct_call(&ctl, reply_req(writer, ""));
    CHECK_STR_EQ(ct_error_code(h), "invalid_request");
    json_decref(h);
    {
        char big[1026];
        memset(big, 'a', sizeof big - 1);
        big[1025] = '\0';
        h = ct_call(&ctl, reply_req(writer, big));
        CHECK_STR_EQ(ct_error_code(h), "too_large");
        json_decref(h);
        big[1024] = '\0'; /* exactly the tutorial's BUFSIZE fits */
        h = ct_call(&ctl, reply_req(writer, big));
        CHECK(ct_error_code(h) == NULL);
        json_decref(h);
        CHECK_INT_EQ(ct_udp_recv(w, got, sizeof got, 5000), 1024);
    }
    keep_peer_open(w);
    close(s);
}

/* Invalid datagrams are dropped and counted; their senders never become peers. */
static void test_bad_datagrams(void)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *counter;
    } bad[] = {
        {"\xff\xfe", 2, "dropped_invalid_utf8"},
        {"\xc0\xaf", 2, "dropped_invalid_utf8"},   /* overlong '/' */
        {"\xed\xa0\x80", 3, "dropped_invalid_utf8"}, /* a surrogate */
        {"a\0b", 3, "dropped_invalid_utf8"},       /* U+0000 cannot travel in a frame header */
        {"", 0, "dropped_empty"},
    };
    char addr[SG_ADDR_STRLEN], big[1025];
    long long before[5], last_seq = ct_stat(&ctl, "last_seq"), large = ct_stat(&ctl, "dropped_too_large");
    int u = ct_udp(addr);
    json_t *h;

    for (int i = 0; i < 5; i++)
        before[i] = ct_stat(&ctl, bad[i].counter);
    for (int i = 0; i < 5; i++)
        ct_udp_send(u, srv.port, bad[i].bytes, bad[i].len);
    memset(big, 'x', sizeof big);
    ct_udp_send(u, srv.port, big, sizeof big);
    CHECK_INT_EQ(ct_stat(&ctl, "dropped_too_large"), large + 1);
    CHECK_INT_EQ(ct_stat(&ctl, "dropped_invalid_utf8"), before[0] + 4);
    CHECK_INT_EQ(ct_stat(&ctl, "dropped_empty"), before[4] + 1);
    CHECK_INT_EQ(ct_stat(&ctl, "last_seq"), last_seq);
    h = ct_call(&ctl, reply_req(addr, "not for you"));
    CHECK_STR_EQ(ct_error_code(h), "not_found");
    json_decref(h);
    close(u);
}

/* The peer list: most recent first, with counts; the body holds the array. */
static void test_peers(void)
{
    char a[SG_ADDR_STRLEN], b[SG_ADDR_STRLEN], *body = NULL;
    int ua = ct_udp(a), ub = ct_udp(b);
    size_t len = 0;
    json_t *h = NULL, *list, *first;
    json_error_t jerr;

    ct_udp_send(ua, srv.port, "one", 3);
    ct_udp_send(ua, srv.port, "two", 3);
    ct_udp_send(ub, srv.port, "three", 5);
    ct_stat(&ctl, "received"); /* a round trip: the datagrams are in */
    ct_send(&ctl, json_pack("{s:s, s:s}", "op", "peers", "id", "p"));
    CHECK_INT_EQ(ct_read(&ctl, 10000, &h, &body, &len), SG_OK);
    CHECK_STR_EQ(json_string_value(json_object_get(h, "id")), "p");
    CHECK_INT_EQ(json_integer_value(json_object_get(h, "total_size")), len);
    CHECK(json_is_object(json_object_get(h, "stats")));
    list = json_loadb(body, len, 0, &jerr);
    CHECK(json_is_array(list));
    CHECK_INT_EQ(json_array_size(list), json_integer_value(json_object_get(h, "count")));
    first = json_array_get(list, 0);
    CHECK_STR_EQ(json_string_value(json_object_get(first, "addr")), b);
    CHECK_INT_EQ(json_integer_value(json_object_get(first, "messages")), 1);
    first = json_array_get(list, 1);
    CHECK_STR_EQ(json_string_value(json_object_get(first, "addr")), a);
    CHECK_INT_EQ(json_integer_value(json_object_get(first, "messages")), 2);
    CHECK(json_integer_value(json_object_get(first, "last_seen_ms")) >=
          json_integer_value(json_object_get(first, "first_seen_ms")));
    json_decref(list);
    json_decref(h);
    free(body);
    keep_peer_open(ua);
    keep_peer_open(ub);
}

/* Bad requests get an error and leave the connection usable; a broken frame closes it. */
static void test_bad_requests(void)
{
    static const char *const bad[] = {
        "{\"op\":\"dance\"}",
        "{\"id\":\"x\"}",
        "{\"op\":\"subscribe\",\"after\":-1}",
        "{\"op\":\"subscribe\",\"after\":\"5\"}",
        "{\"op\":\"subscribe\",\"after\":1.5}",
        "{\"op\":7}",
    };
    struct ct_conn c;
    json_t *h;
    uint8_t raw[64] = {3, 0, 0, 0, 'a', 'b', 'c'};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_error_t jerr;
        json_t *req = json_loads(bad[i], 0, &jerr);
        CHECK(req != NULL);
        h = ct_call(&ctl, req);
        CHECK_STR_EQ(ct_error_code(h), "invalid_request");
        json_decref(h);
    }
    /* A body is refused but skipped, so the next request is read right. */
    h = json_pack("{s:s, s:i}", "op", "stats", "total_size", 5);
    CHECK_INT_EQ(sg_frame_send(ctl.fd, h, "12345", 5, sg_now_ms() + 5000), SG_OK);
    json_decref(h);
    CHECK_INT_EQ(ct_read(&ctl, 10000, &h, NULL, NULL), SG_OK);
    CHECK_STR_EQ(ct_error_code(h), "invalid_request");
    json_decref(h);
    CHECK(ct_stat(&ctl, "received") >= 1);

    /* A body too large to skip: refused with the request's id, and the connection is closed. */
    ct_connect(&c, srv.port, 0);
    ct_send(&c, json_pack("{s:s, s:s, s:i}", "op", "stats", "id", "big", "total_size", 100000));
    CHECK_INT_EQ(ct_read(&c, 10000, &h, NULL, NULL), SG_OK);
    CHECK_STR_EQ(ct_error_code(h), "too_large");
    CHECK_STR_EQ(json_string_value(json_object_get(h, "id")), "big");
    json_decref(h);
    CHECK_INT_EQ(ct_read(&c, 10000, &h, NULL, NULL), SG_ERR_CLOSED);
    ct_close(&c);

    ct_connect(&c, srv.port, 0);
    CHECK_INT_EQ(sg_write_all(c.fd, raw, 7, sg_now_ms() + 5000), SG_OK);
    CHECK_INT_EQ(ct_read(&c, 10000, &h, NULL, NULL), SG_OK);
    CHECK_STR_EQ(ct_error_code(h), "protocol_error");
    json_decref(h);
    CHECK_INT_EQ(ct_read(&c, 10000, &h, NULL, NULL), SG_ERR_CLOSED);
    ct_close(&c);
}

/*
 * Requests sent back to back by a client that reads slowly: the server
 * stops reading while a response waits, keeps the rest, and answers every
 * request once, in order.
 */
static void test_pipelined(void)
{
    enum { N = 400, PEERS = 300 };
    int udp[PEERS];
    struct ct_conn c;
    uint8_t *all = NULL;
    size_t len = 0;
    json_t *h;

    /*
     * 300 peers make each peer list ~30 KB: 200 of them are more than the
     * socket buffers take. The sockets stay open until the peers are
     * counted: a closed one's port can be handed to the next, which would
     * then be the same peer (CI saw that).
     */
    for (int i = 0; i < PEERS; i++) {
        char addr[SG_ADDR_STRLEN];
        udp[i] = ct_udp(addr);
        ct_udp_send(udp[i], srv.port, "hi", 2);
        if (i % 32 == 31)
            ct_stat(&ctl, "received");
    }
    CHECK(ct_stat(&ctl, "peers") >= PEERS);
    for (int i = 0; i < PEERS; i++)
        close(udp[i]);

    for (int i = 0; i < N; i++) {
        char id[16];
        uint8_t *frame;
        size_t flen;
        snprintf(id, sizeof id, "%d", i);
        h = json_pack("{s:s, s:s}", "op", i % 2 ? "peers" : "stats", "id", id);
        CHECK_INT_EQ(sg_frame_encode_header(h, 0, &frame, &flen), SG_OK);
        json_decref(h);
        all = realloc(all, len + flen);
        CHECK(all != NULL);
        memcpy(all + len, frame, flen);
        len += flen;
        free(frame);
    }
    ct_connect(&c, srv.port, 4096);
    CHECK_INT_EQ(sg_write_all(c.fd, all, len, sg_now_ms() + 10000), SG_OK);
    for (int i = 0; i < N; i++) {
        char *body = NULL, id[16];
        size_t blen;
        snprintf(id, sizeof id, "%d", i);
        CHECK_INT_EQ(ct_read(&c, 10000, &h, &body, &blen), SG_OK);
        CHECK(ct_error_code(h) == NULL);
        CHECK_STR_EQ(json_string_value(json_object_get(h, "id")), id);
        CHECK(i % 2 ? blen > 2 : json_is_object(json_object_get(h, "stats")));
        json_decref(h);
        free(body);
    }
    ct_close(&c);
    free(all);
}

/* A small peer table forgets the least recently seen peer, which can then not be replied to. */
static void test_peer_eviction(void)
{
    const char *const extra[] = {"--max-peers", "2", "--max-conns", "2", NULL};
    char a[SG_ADDR_STRLEN], b[SG_ADDR_STRLEN], c[SG_ADDR_STRLEN];
    struct sg_proc small;
    struct ct_conn k, k2, k3;
    int ua = ct_udp(a), ub = ct_udp(b), uc = ct_udp(c);
    json_t *h;

    ct_start(&small, extra);
    ct_connect(&k, small.port, 0);
    ct_udp_send(ua, small.port, "a", 1);
    ct_udp_send(ub, small.port, "b", 1);
    ct_udp_send(uc, small.port, "c", 1);
    CHECK_INT_EQ(ct_stat(&k, "received"), 3);
    CHECK_INT_EQ(ct_stat(&k, "peers"), 2);
    h = ct_call(&k, reply_req(a, "gone?"));
    CHECK_STR_EQ(ct_error_code(h), "not_found");
    json_decref(h);
    h = ct_call(&k, reply_req(c, "still here"));
    CHECK(ct_error_code(h) == NULL);
    json_decref(h);

    /* --max-conns 2: a third connection is closed at once, the first two keep working. */
    ct_connect(&k2, small.port, 0);
    ct_connect(&k3, small.port, 0);
    CHECK_INT_EQ(ct_read(&k3, 10000, &h, NULL, NULL), SG_ERR_CLOSED);
    CHECK_INT_EQ(ct_stat(&k2, "peers"), 2);
    ct_close(&k3);
    ct_close(&k2);
    ct_close(&k);
    ct_stop(&small);
    close(ua);
    close(ub);
    close(uc);
}

int main(void)
{
    ct_start(&srv, NULL);
    ct_connect(&ctl, srv.port, 0);
    RUN_TEST(test_message_and_reply);
    RUN_TEST(test_reply_refused);
    RUN_TEST(test_bad_datagrams);
    RUN_TEST(test_peers);
    RUN_TEST(test_bad_requests);
    RUN_TEST(test_pipelined);
    RUN_TEST(test_peer_eviction);
    ct_close(&ctl);
    ct_stop(&srv);
    for (int i = 0; i < n_peer_fds; i++)
        close(peer_fds[i]);
    return TESTS_DONE();
}
