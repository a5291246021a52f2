/* test_gateway_chat.c - the chat through the gateway: a real UDP client, Server-Sent Events, replies, the cookie. */
#include <errno.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"

#define TOKEN "chat-token-42"
/* A stream's body is small in these tests; more means the gateway sent far too much. */
#define SSE_MAX_BUF (4u << 20)
/* Every wait for something that must happen is bounded by this. */
#define WAIT_MS 20000

static struct gw g;
static struct sg_addr chat_addr; /* the chat service the gateway talks to (UDP on the same port) */
static int udp_fd = -1;          /* the tutorial's chat client */
static char udp_name[SG_ADDR_STRLEN];

/* ---- a Server-Sent Events client on libcurl's multi interface, driven step by step ---- */

struct sse {
    CURLM *multi;
    CURL *easy;
    struct curl_slist *headers;
    char *buf; /* body bytes not parsed yet */
    size_t len;
    char head[8192];
    size_t head_len;
    long status;
    int is_done;
};

struct sse_event {
    char id[32];
    char name[32];
    char comment[512];
    char *data; /* NULL when the block had no data line; freed by sse_event_free */
};

static size_t sse_on_body(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    struct sse *s = ctx;
    size_t n = size * nmemb;
    char *p;
    if (s->len + n > SSE_MAX_BUF)
        return 0;
    p = realloc(s->buf, s->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + s->len, ptr, n);
    s->buf = p;
    s->len += n;
    s->buf[s->len] = '\0';
    return n;
}

static size_t sse_on_header(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    struct sse *s = ctx;
    size_t n = size * nmemb;
    if (s->head_len + n < sizeof s->head) {
        memcpy(s->head + s->head_len, ptr, n);
        s->head_len += n;
        s->head[s->head_len] = '\0';
    }
    return n;
}

/* Lets curl work for up to ms; notes when the transfer is over. */
static void sse_pump(struct sse *s, int ms)
{
    int running = 0;
    CURLMsg *m;
    int left;
    curl_multi_perform(s->multi, &running);
    if (running)
        curl_multi_poll(s->multi, NULL, 0, ms, NULL);
    curl_multi_perform(s->multi, &running);
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE)
            s->is_done = 1;
    if (!s->status)
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->status);
}

/* Opens GET path on gw with extra headers (NULL-terminated, may be NULL) and waits for the status line. */
static struct sse *sse_open(struct gw *gw, const char *path, const char *const headers[])
{
    struct sse *s = calloc(1, sizeof *s);
    char url[512];
    int64_t deadline = sg_now_ms() + WAIT_MS;
    CHECK(s);
    snprintf(url, sizeof url, "%s%s", gw->base, path);
    for (size_t i = 0; headers && headers[i]; i++)
        s->headers = curl_slist_append(s->headers, headers[i]);
    s->multi = curl_multi_init();
    s->easy = curl_easy_init();
    CHECK(s->multi && s->easy);
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, sse_on_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, sse_on_header);
    curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
    curl_multi_add_handle(s->multi, s->easy);
    while (!s->status && !s->is_done && sg_now_ms() < deadline)
        sse_pump(s, 50);
    CHECK(s->status != 0);
    return s;
}

/* Closes the client side at once, as a browser tab that goes away. */
static void sse_close(struct sse *s)
{
    curl_multi_remove_handle(s->multi, s->easy);
    curl_easy_cleanup(s->easy);
    curl_multi_cleanup(s->multi);
    curl_slist_free_all(s->headers);
    free(s->buf);
    free(s);
}

static void sse_event_free(struct sse_event *ev)
{
    free(ev->data);
    ev->data = NULL;
}

/* Parses one block (without its blank line) into ev. */
static void parse_block(const char *block, size_t n, struct sse_event *ev)
{
    const char *p = block, *end = block + n;
    memset(ev, 0, sizeof *ev);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (len >= 4 && strncmp(p, "id: ", 4) == 0)
            snprintf(ev->id, sizeof ev->id, "%.*s", (int)(len - 4), p + 4);
        else if (len >= 7 && strncmp(p, "event: ", 7) == 0)
            snprintf(ev->name, sizeof ev->name, "%.*s", (int)(len - 7), p + 7);
        else if (len >= 6 && strncmp(p, "data: ", 6) == 0) {
            CHECK(ev->data == NULL); /* the gateway sends one data line per event */
            ev->data = strndup(p + 6, len - 6);
        } else if (len >= 1 && p[0] == ':')
            snprintf(ev->comment, sizeof ev->comment, "%.*s", (int)(len - 1), p + 1);
        else
            CHECK(!"a line that is no SSE field");
        p += len + 1;
    }
}

/* Returns 1 with the next block in ev, 0 when the stream ended first; fails the test after WAIT_MS. */
static int sse_next_block(struct sse *s, struct sse_event *ev)
{
    int64_t deadline = sg_now_ms() + WAIT_MS;
    for (;;) {
        char *sep = s->buf ? strstr(s->buf, "\n\n") : NULL;
        if (sep) {
            size_t n = (size_t)(sep - s->buf);
            parse_block(s->buf, n, ev);
            memmove(s->buf, sep + 2, s->len - n - 2 + 1);
            s->len -= n + 2;
            return 1;
        }
        if (s->is_done)
            return 0;
        CHECK(sg_now_ms() < deadline);
        sse_pump(s, 100);
    }
}

/* Returns the next event with data (comments such as heartbeats are skipped); fails when the stream ends. */
static void sse_next(struct sse *s, struct sse_event *ev)
{
    do {
        CHECK(sse_next_block(s, ev) == 1);
        if (!ev->data)
            sse_event_free(ev);
    } while (!ev->data);
}

/* Reads the "subscribed" event that starts every stream and returns its data as JSON. */
static json_t *sse_subscribed(struct sse *s)
{
    struct sse_event ev;
    json_t *j;
    sse_next(s, &ev);
    CHECK_STR_EQ(ev.name, "subscribed");
    j = json_loads(ev.data, 0, NULL);
    CHECK(json_is_true(json_object_get(j, "subscribed")));
    sse_event_free(&ev);
    return j;
}

/* Reads the next message event and returns its data as JSON, checking id == seq. */
static json_t *sse_message(struct sse *s, long long *seq)
{
    struct sse_event ev;
    json_t *j;
    sse_next(s, &ev);
    CHECK_STR_EQ(ev.name, "message");
    j = json_loads(ev.data, 0, NULL);
    CHECK(json_is_object(j));
    *seq = json_integer_value(json_object_get(j, "seq"));
    CHECK(*seq > 0);
    CHECK_INT_EQ(atoll(ev.id), *seq);
    CHECK(json_integer_value(json_object_get(j, "time_ms")) > 1000000000000LL);
    sse_event_free(&ev);
    return j;
}

/* ---- the chat client and the chat service's own view ---- */

static void udp_client_open(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(udp_fd >= 0);
    CHECK(bind(udp_fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CHECK(getsockname(udp_fd, (struct sockaddr *)&ss, &len) == 0);
    sg_addr_format((struct sockaddr *)&ss, len, udp_name, sizeof udp_name);
}

static void udp_say(const char *text)
{
    CHECK(sendto(udp_fd, text, strlen(text), 0, (const struct sockaddr *)&chat_addr.ss, chat_addr.len) ==
          (ssize_t)strlen(text));
}

/* Waits for one datagram; returns its length, and its sender's port in *port. */
static size_t udp_hear(char *buf, size_t cap, unsigned *port)
{
    struct pollfd p = {.fd = udp_fd, .events = POLLIN};
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n;
    CHECK(poll(&p, 1, WAIT_MS) == 1);
    n = recvfrom(udp_fd, buf, cap - 1, 0, (struct sockaddr *)&from, &flen);
    CHECK(n >= 0);
    buf[n] = '\0';
    *port = sg_addr_port((struct sockaddr *)&from);
    return (size_t)n;
}

/* Asks the chat service itself for its stats (framed TCP), to see subscriptions come and go. */
static json_t *chat_stats(void)
{
    static struct sg_frame_reader r;
    json_t *req = json_pack("{s:s}", "op", "stats"), *stats;
    enum sg_frame_event ev = SG_FRAME_NEED_MORE;
    const uint8_t *chunk;
    size_t chunk_len;
    char err[200];
    int fd = -1;
    CHECK(sg_connect(&chat_addr, SOCK_STREAM, 5000, &fd, err, sizeof err) == SG_OK);
    CHECK(sg_frame_send(fd, req, NULL, 0, sg_now_ms() + 5000) == SG_OK);
    sg_frame_reader_init(&r, fd, 0);
    CHECK(sg_frame_reader_next(&r, &ev, &chunk, &chunk_len, sg_now_ms() + 5000) == SG_OK);
    CHECK(ev == SG_FRAME_HEADER);
    stats = json_incref(json_object_get(sg_frame_decoder_header(&r.dec), "stats"));
    CHECK(json_is_object(stats));
    sg_frame_reader_free(&r);
    close(fd);
    json_decref(req);
    return stats;
}

static long long chat_stat(const char *key)
{
    json_t *s = chat_stats();
    long long v = json_integer_value(json_object_get(s, key));
    json_decref(s);
    return v;
}

/* Returns the gauge of open event streams from the gateway's /metrics (behind the token where there is one). */
static long streams_open(struct gw *gw)
{
    const char *auth[] = {"Authorization: Bearer " TOKEN, NULL};
    struct http_resp *r = gw_do(gw, "GET", "/metrics", auth, NULL);
    const char *p = strstr(r->body, "\nsockgate_chat_streams_open ");
    long v;
    CHECK(p);
    v = atol(p + strlen("\nsockgate_chat_streams_open "));
    http_free(r);
    return v;
}

/* Polls until the chat service has recorded message seq (datagrams travel asynchronously). */
static void wait_recorded(long long seq)
{
    int64_t deadline = sg_now_ms() + WAIT_MS;
    while (chat_stat("last_seq") < seq) {
        CHECK(sg_now_ms() < deadline);
        usleep(20 * 1000);
    }
}

static void wait_streams(struct gw *gw, long n, long long subscribers)
{
    int64_t deadline = sg_now_ms() + WAIT_MS;
    while (streams_open(gw) != n || chat_stat("subscribers") != subscribers) {
        CHECK(sg_now_ms() < deadline);
        usleep(20 * 1000);
    }
}

static long long last_seq; /* the newest message the tests have seen */

/* ---- the embedded chat service ---- */

static void test_readyz_lists_chat(void)
{
    struct http_resp *r = gw_do(&g, "GET", "/readyz", NULL, NULL);
    json_t *j = http_json(r), *chat = json_object_get(json_object_get(j, "backends"), "chat");
    char err[200];
    CHECK_INT_EQ(r->status, 200);
    CHECK(json_is_true(json_object_get(chat, "ok")));
    CHECK(json_is_true(json_object_get(chat, "embedded")));
    /* The embedded chat serves UDP on the port /readyz names for its TCP side. */
    CHECK(sg_addr_parse(json_string_value(json_object_get(chat, "address")), &chat_addr, err, sizeof err) == SG_OK);
    json_decref(j);
    http_free(r);
}

static void test_message_arrives_as_event(void)
{
    struct sse *s = sse_open(&g, "/api/v1/chat/events", NULL);
    char *ctype = NULL;
    json_t *m;
    long long seq;

    CHECK_INT_EQ(s->status, 200);
    ctype = strcasestr(s->head, "\ncontent-type: text/event-stream");
    CHECK(ctype != NULL);
    json_decref(sse_subscribed(s));
    udp_say("发给taibai: 你好");
    m = sse_message(s, &seq);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "kind")), "in");
    CHECK_STR_EQ(json_string_value(json_object_get(m, "from")), udp_name);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), "发给taibai: 你好");
    json_decref(m);
    /* A line break in the text must not break the event: data stays one JSON line. */
    udp_say("two\nlines");
    m = sse_message(s, &last_seq);
    CHECK_INT_EQ(last_seq, seq + 1);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), "two\nlines");
    json_decref(m);
    sse_close(s);
}

static void test_resume_without_loss_or_duplicates(void)
{
    const char *texts[] = {"while away 1", "while away 2", "while away 3"};
    char hdr[64], path[64];
    const char *headers[] = {hdr, NULL};
    struct sse *s;
    json_t *m, *ack;
    long long seq, k;

    snprintf(hdr, sizeof hdr, "Last-Event-ID: %lld", last_seq);
    s = sse_open(&g, "/api/v1/chat/events", headers);
    ack = sse_subscribed(s);
    CHECK_INT_EQ(json_integer_value(json_object_get(ack, "replay")), 0);
    json_decref(ack);
    udp_say("before the break");
    m = sse_message(s, &k);
    CHECK_INT_EQ(k, last_seq + 1);
    json_decref(m);
    sse_close(s);

    for (size_t i = 0; i < 3; i++)
        udp_say(texts[i]);
    wait_recorded(k + 3);
    /* What a browser's EventSource sends when it reconnects: the id of the last event it got. */
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %lld", k);
    s = sse_open(&g, "/api/v1/chat/events", headers);
    ack = sse_subscribed(s);
    CHECK_INT_EQ(json_integer_value(json_object_get(ack, "replay")), 3);
    CHECK_INT_EQ(json_integer_value(json_object_get(ack, "missed")), 0);
    json_decref(ack);
    for (size_t i = 0; i < 3; i++) {
        m = sse_message(s, &seq);
        CHECK_INT_EQ(seq, k + 1 + (long long)i);
        CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), texts[i]);
        json_decref(m);
    }
    udp_say("live again");
    m = sse_message(s, &seq);
    CHECK_INT_EQ(seq, k + 4);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), "live again");
    json_decref(m);
    sse_close(s);
    last_seq = seq;

    /* ?after= works the same for clients that cannot set headers on a first connection. */
    snprintf(path, sizeof path, "/api/v1/chat/events?after=%lld", k + 2);
    s = sse_open(&g, path, NULL);
    json_decref(sse_subscribed(s));
    m = sse_message(s, &seq);
    CHECK_INT_EQ(seq, k + 3);
    json_decref(m);
    sse_close(s);

    /* Without either, a new page gets the whole history, oldest first. */
    s = sse_open(&g, "/api/v1/chat/events", NULL);
    ack = sse_subscribed(s);
    CHECK_INT_EQ(json_integer_value(json_object_get(ack, "replay")), last_seq);
    json_decref(ack);
    m = sse_message(s, &seq);
    CHECK_INT_EQ(seq, 1);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), "发给taibai: 你好");
    json_decref(m);
    sse_close(s);
}

static void test_reply_reaches_client(void)
{
    char hdr[64], body[256], got[2048];
    const char *headers[] = {hdr, NULL};
    struct http_resp *r;
    struct sse *s;
    json_t *j, *m;
    long long seq;
    unsigned port = 0;

    snprintf(hdr, sizeof hdr, "Last-Event-ID: %lld", last_seq);
    s = sse_open(&g, "/api/v1/chat/events", headers);
    json_decref(sse_subscribed(s));
    snprintf(body, sizeof body, "{\"to\": \"%s\", \"text\": \"你好, client\"}", udp_name);
    r = gw_post_json(&g, "/api/v1/chat/reply", body);
    CHECK_INT_EQ(r->status, 200);
    j = http_json(r);
    CHECK(json_is_true(json_object_get(j, "sent")));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "to")), udp_name);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "seq")), last_seq + 1);
    json_decref(j);
    http_free(r);
    /* The tutorial's client hears it from the chat service's port. */
    udp_hear(got, sizeof got, &port);
    CHECK_STR_EQ(got, "你好, client");
    CHECK_INT_EQ(port, sg_addr_port((struct sockaddr *)&chat_addr.ss));
    /* And every open page sees the operator's reply. */
    m = sse_message(s, &seq);
    CHECK_INT_EQ(seq, last_seq + 1);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "kind")), "out");
    CHECK_STR_EQ(json_string_value(json_object_get(m, "to")), udp_name);
    CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), "你好, client");
    json_decref(m);
    last_seq = seq;
    sse_close(s);
}

static void test_reply_errors(void)
{
    char body[2048], text[1100];
    struct http_resp *r;

    r = gw_post_json(&g, "/api/v1/chat/reply", "{\"to\": \"127.0.0.1:9\", \"text\": \"hello?\"}");
    check_error(r, 404, "not_found"); /* never wrote: the service sends nothing to it */
    http_free(r);
    snprintf(body, sizeof body, "{\"to\": \"%s\"}", udp_name);
    gw_expect_error(&g, "POST", "/api/v1/chat/reply", gw_json_headers, body, 400, "invalid_request");
    snprintf(body, sizeof body, "{\"to\": \"%s\", \"text\": \"\"}", udp_name);
    gw_expect_error(&g, "POST", "/api/v1/chat/reply", gw_json_headers, body, 400, "invalid_request");
    memset(text, 'a', 1025);
    text[1025] = '\0';
    snprintf(body, sizeof body, "{\"to\": \"%s\", \"text\": \"%s\"}", udp_name, text);
    gw_expect_error(&g, "POST", "/api/v1/chat/reply", gw_json_headers, body, 413, "too_large");
    gw_expect_error(&g, "POST", "/api/v1/chat/reply",
                    gw_json_headers, "{\"to\": 5, \"text\": \"x\"}", 400, "invalid_request");
    gw_expect_error(&g, "POST", "/api/v1/chat/reply", gw_json_headers, "not json", 400, "invalid_request");
}

static void test_peers(void)
{
    struct http_resp *r = gw_do(&g, "GET", "/api/v1/chat/peers", NULL, NULL);
    json_t *j = http_json(r), *peers = json_object_get(j, "peers"), *p;
    size_t i;
    int found = 0;
    CHECK_INT_EQ(r->status, 200);
    CHECK(json_is_array(peers));
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "count")), json_array_size(peers));
    json_array_foreach(peers, i, p)
    {
        if (strcmp(json_string_value(json_object_get(p, "addr")), udp_name) != 0)
            continue;
        found = 1;
        CHECK_INT_EQ(json_integer_value(json_object_get(p, "messages")), 7);
    }
    CHECK(found);
    json_decref(j);
    http_free(r);
}

static void test_bad_resume_point(void)
{
    const char *bad_id[] = {"Last-Event-ID: yesterday", NULL};
    gw_expect_error(&g, "GET", "/api/v1/chat/events", bad_id, NULL, 400, "invalid_request");
    gw_expect_error(&g, "GET", "/api/v1/chat/events?after=-1", NULL, NULL, 400, "invalid_request");
}

static void test_disconnect_frees_subscription(void)
{
    struct sse *s;
    wait_streams(&g, 0, 0); /* the streams of earlier tests are gone */
    s = sse_open(&g, "/api/v1/chat/events", NULL);
    json_decref(sse_subscribed(s));
    wait_streams(&g, 1, 1);
    /* The stream is idle (parked inside the gateway) when its client goes away. */
    sse_close(s);
    wait_streams(&g, 0, 0);
}

/* A quiet chat still sends something every 15 s, so proxies keep the stream and dead clients are found. */
static void test_heartbeat(void)
{
    struct sse *s = sse_open(&g, "/api/v1/chat/events?after=1000000", NULL);
    struct sse_event ev;
    json_t *ack = sse_subscribed(s);
    CHECK(json_is_true(json_object_get(ack, "reset"))); /* a resume point beyond the newest message */
    json_decref(ack);
    /* The replayed history first, then, with nothing new, a comment line. */
    for (long long i = 0; i < last_seq; i++) {
        long long seq;
        json_decref(sse_message(s, &seq));
        CHECK_INT_EQ(seq, i + 1);
    }
    CHECK(sse_next_block(s, &ev) == 1);
    CHECK(ev.data == NULL);
    CHECK_STR_EQ(ev.comment, " keep-alive");
    sse_close(s);
}

/* SIGTERM with a stream open: the stream ends, the gateway exits 0. */
static void test_stop_ends_streams(void)
{
    struct sse *s = sse_open(&g, "/api/v1/chat/events", NULL);
    struct sse_event ev;
    int is_told = 0;
    json_decref(sse_subscribed(s));
    gw_stop(&g);
    while (sse_next_block(s, &ev) == 1) {
        is_told |= strstr(ev.comment, "shutting down") != NULL;
        sse_event_free(&ev);
    }
    CHECK(is_told);
    sse_close(s);
}

/* ---- a separate chat service with a short history, behind a token ---- */

static struct gw g2;
static struct sg_proc chat_p;

static void test_token_and_cookie(void)
{
    const char *bearer[] = {"Authorization: Bearer " TOKEN, NULL};
    const char *wrong_cookie[] = {"Cookie: sockgate_token=0123456789abcdef", NULL};
    char cookie_hdr[256], *set_cookie, *value;
    const char *cookie[] = {cookie_hdr, NULL};
    struct http_resp *r;
    struct sse *s;

    gw_expect_error(&g2, "GET", "/api/v1/chat/events", NULL, NULL, 401, "unauthorized");
    s = sse_open(&g2, "/api/v1/chat/events", bearer);
    CHECK_INT_EQ(s->status, 200);
    json_decref(sse_subscribed(s));
    sse_close(s);

    gw_expect_error(&g2, "POST", "/api/v1/session", NULL, "", 401, "unauthorized");
    r = gw_do(&g2, "POST", "/api/v1/session", bearer, "");
    CHECK_INT_EQ(r->status, 204);
    set_cookie = http_header(r, "Set-Cookie");
    CHECK(set_cookie && strncmp(set_cookie, "sockgate_token=", 15) == 0);
    CHECK(strstr(set_cookie, "; HttpOnly") && strstr(set_cookie, "; SameSite=Strict") &&
          strstr(set_cookie, "; Path=/api/v1"));
    value = strndup(set_cookie + 15, strcspn(set_cookie + 15, ";"));
    CHECK(strlen(value) >= 32 && strstr(value, TOKEN) == NULL); /* the cookie is not the token */
    snprintf(cookie_hdr, sizeof cookie_hdr, "Cookie: sockgate_token=%s", value);
    free(value);
    free(set_cookie);
    http_free(r);

    /* What an EventSource sends: the cookie and no Authorization header. */
    s = sse_open(&g2, "/api/v1/chat/events", cookie);
    CHECK_INT_EQ(s->status, 200);
    json_decref(sse_subscribed(s));
    sse_close(s);
    gw_expect_error(&g2, "GET", "/api/v1/chat/events", wrong_cookie, NULL, 401, "unauthorized");
    /* The cookie opens the event stream only; every other route still wants the header. */
    gw_expect_error(&g2, "GET", "/api/v1/chat/peers", cookie, NULL, 401, "unauthorized");
    r = gw_do(&g2, "GET", "/api/v1/chat/peers", bearer, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    r = gw_do(&g2, "DELETE", "/api/v1/session", NULL, NULL);
    CHECK_INT_EQ(r->status, 204);
    set_cookie = http_header(r, "Set-Cookie");
    CHECK(set_cookie && strncmp(set_cookie, "sockgate_token=;", 16) == 0 && strstr(set_cookie, "Max-Age=0"));
    free(set_cookie);
    http_free(r);
}

/* Decodes a chunked body in place; returns 1 when the last chunk was there. */
static int dechunk(char *raw, size_t len, char **out, size_t *out_len)
{
    char *body = strstr(raw, "\r\n\r\n"), *p;
    size_t o = 0;
    CHECK(body);
    p = body + 4;
    *out = malloc(len + 1);
    CHECK(*out);
    while (p < raw + len) {
        char *end;
        unsigned long n = strtoul(p, &end, 16);
        if (end == p || strncmp(end, "\r\n", 2) != 0)
            break;
        if (n == 0) {
            (*out)[o] = '\0';
            *out_len = o;
            return 1;
        }
        p = end + 2;
        if (p + n + 2 > raw + len)
            break;
        memcpy(*out + o, p, n);
        o += n;
        p += n + 2;
    }
    (*out)[o] = '\0';
    *out_len = o;
    return 0;
}

/* A client that never reads while messages flood in: gateway memory stays flat, the stream is cut, nothing skipped. */
static void test_slow_reader_is_bounded(void)
{
    const char req[] = "GET /api/v1/chat/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer " TOKEN "\r\n\r\n";
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(g2.proc.port)};
    long long cut0 = chat_stat("subscribers_cut"), prev = 0;
    long rss0 = sg_proc_rss_kib(g2.proc.pid), rss1, bound_kib;
    int rcvbuf = 4096, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), n_ids = 0;
    int64_t deadline;
    char text[1001], *raw = NULL, *body = NULL, *p;
    size_t raw_len = 0, body_len = 0;
    struct http_resp *r;

    CHECK(fd >= 0 && rss0 > 0);
    wait_streams(&g2, 0, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    wait_streams(&g2, 1, 1);
    memset(text, 'z', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    /*
     * Datagrams of 1000 bytes until the service cuts the reader: past the
     * 64-message history and every buffer on the way, the kernel's included,
     * which grow with the machine. Bounded in count (20 MB at most) and time.
     */
    deadline = sg_now_ms() + WAIT_MS;
    for (int i = 0; i < 20000; i++) {
        if (i % 100 == 0) {
            if (chat_stat("subscribers_cut") != cut0)
                break;
            usleep(5 * 1000); /* lets the service keep up, so few datagrams are dropped */
        }
        snprintf(text, 12, "%010d", i);
        text[10] = ' ';
        udp_say(text);
        CHECK(sg_now_ms() < deadline);
    }
    deadline = sg_now_ms() + WAIT_MS;
    while (chat_stat("subscribers_cut") == cut0) {
        CHECK(sg_now_ms() < deadline);
        usleep(20 * 1000);
    }
    rss1 = sg_proc_rss_kib(g2.proc.pid);
#ifdef SG_TEST_SANITIZED
    bound_kib = 64 * 1024; /* the allocator's quarantine keeps freed messages around */
#else
    bound_kib = 8 * 1024;
#endif
    fprintf(stderr, "gateway RSS %ld KiB before the flood, %ld KiB after\n", rss0, rss1);
    CHECK(rss1 - rss0 < bound_kib);
    r = gw_do(&g2, "GET", "/healthz", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);

    /* Now read it all: the events up to the cut, contiguous, then the end of the stream. */
    deadline = sg_now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;
        CHECK(sg_now_ms() < deadline);
        raw = realloc(raw, raw_len + 65536 + 1);
        CHECK(raw);
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        n = read(fd, raw + raw_len, 65536);
        CHECK(n >= 0);
        raw_len += (size_t)n;
        raw[raw_len] = '\0';
        if (n == 0 || (raw_len > 5 && memcmp(raw + raw_len - 5, "0\r\n\r\n", 5) == 0))
            break;
    }
    close(fd);
    CHECK(dechunk(raw, raw_len, &body, &body_len) == 1);
    for (p = strstr(body, "\nid: "); p; p = strstr(p + 1, "\nid: ")) {
        long long id = atoll(p + 5);
        CHECK(prev == 0 || id == prev + 1);
        prev = id;
        n_ids++;
    }
    CHECK(n_ids > 0);
    p = strstr(body, "\n: the chat service"); /* the stream says why it ended */
    CHECK(p != NULL);
    fprintf(stderr, "%d events up to the cut, then:%.*s\n", n_ids, (int)strcspn(p + 2, "\n"), p + 2);
    free(raw);
    free(body);
    wait_streams(&g2, 0, 0);
}

/* Sends a raw request to gw on a new connection and returns the socket, without waiting for any answer. */
static int raw_request(struct gw *gw, const char *req)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(gw->proc.port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    return fd;
}

/* The first bytes raw_read_until read on its last connection (the status line). */
static char raw_head[64];

/*
 * Reads from fd until want shows up (bounded by WAIT_MS), keeping the
 * first bytes in raw_head and a window of the last ones (a replayed history
 * may come first).
 */
static void raw_read_until(int fd, const char *want)
{
    static char buf[16384];
    size_t len = 0, total = 0;
    int64_t deadline = sg_now_ms() + WAIT_MS;
    buf[0] = '\0';
    raw_head[0] = '\0';
    while (!strstr(buf, want)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;
        if (sg_now_ms() >= deadline)
            fprintf(stderr, "waited for '%s', got %zu bytes, the last:\n%s\n", want, total, buf);
        CHECK(sg_now_ms() < deadline);
        if (len > sizeof buf / 2) {
            memmove(buf, buf + len - 1024, 1024);
            len = 1024;
        }
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        n = read(fd, buf + len, sizeof buf - 1 - len);
        CHECK(n > 0);
        if (total == 0)
            snprintf(raw_head, sizeof raw_head, "%.*s", (int)n, buf);
        len += (size_t)n;
        total += (size_t)n;
        buf[len] = '\0';
    }
}

/*
 * A chat subscription never blocks its worker: with one worker thread and
 * the chat service frozen (SIGSTOP) while an event stream and a WebSocket
 * wait for their subscription's acknowledgement, /healthz and echo still
 * answer. The backend deadline is 10 minutes, beyond curl's 2, so a worker
 * stuck on the subscribe would fail these checks rather than answer late.
 * After SIGCONT both subscriptions are acknowledged and a message reaches both.
 */
static void test_subscribe_does_not_block_worker(void)
{
    const char *extra[] = {"--threads", "1", "--chat", chat_p.addr, "--timeout", "10m", NULL};
    const char sse_req[] = "GET /api/v1/chat/events?after=1000000000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    const char ws_req[] = "GET /api/v1/ws/chat?after=1000000000 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sockgate.chat.v1\r\n\r\n";
    struct gw one;
    struct http_resp *r;
    json_t *j;
    int sse_fd, ws_fd;

    gw_start(&one, extra);
    wait_streams(&one, 0, 0);
    CHECK(kill(chat_p.pid, SIGSTOP) == 0);
    sse_fd = raw_request(&one, sse_req);
    ws_fd = raw_request(&one, ws_req);
    /* Both requests are surely in the gateway's hands: a second connection's answer comes after their heads. */
    r = gw_do(&one, "GET", "/healthz", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    j = gw_expect_json(&one, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"not blocked\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "NOT BLOCKED");
    json_decref(j);
    r = gw_do(&one, "GET", "/healthz", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);

    CHECK(kill(chat_p.pid, SIGCONT) == 0);
    raw_read_until(sse_fd, "event: subscribed\n");
    CHECK(strncmp(raw_head, "HTTP/1.1 200", 12) == 0);
    raw_read_until(ws_fd, "\"event\":\"subscribed\"");
    CHECK(strncmp(raw_head, "HTTP/1.1 101", 12) == 0);
    wait_streams(&one, 1, 1 + 1);
    udp_say("after the thaw");
    raw_read_until(sse_fd, "after the thaw");
    raw_read_until(ws_fd, "after the thaw");
    close(sse_fd);
    close(ws_fd);
    wait_streams(&one, 0, 0);
    gw_stop(&one);
}

int main(void)
{
    const char *const chat_listen[] = {"--chat-listen", "127.0.0.1:0", NULL};
    const char *chat_argv[] = {"sockgate-chat", "--listen", "127.0.0.1:0", "--history", "64", NULL};
    const char *g2_args[] = {"--chat", chat_p.addr, "--token", TOKEN, NULL};
    char err[200];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    udp_client_open();

    /* The tutorial's UDP clients need the embedded chat on a port: by default it is a private UNIX socket. */
    gw_start(&g, chat_listen);
    RUN_TEST(test_readyz_lists_chat);
    RUN_TEST(test_message_arrives_as_event);
    RUN_TEST(test_resume_without_loss_or_duplicates);
    RUN_TEST(test_reply_reaches_client);
    RUN_TEST(test_reply_errors);
    RUN_TEST(test_peers);
    RUN_TEST(test_bad_resume_point);
    RUN_TEST(test_disconnect_frees_subscription);
    RUN_TEST(test_heartbeat);
    RUN_TEST(test_stop_ends_streams);

    CHECK(sg_proc_start(&chat_p, chat_argv, 10000) == 0);
    CHECK(sg_addr_parse(chat_p.addr, &chat_addr, err, sizeof err) == SG_OK);
    gw_start(&g2, g2_args);
    RUN_TEST(test_token_and_cookie);
    RUN_TEST(test_slow_reader_is_bounded);
    RUN_TEST(test_subscribe_does_not_block_worker);
    gw_stop(&g2);
    CHECK_INT_EQ(sg_proc_stop(&chat_p, 10000), 0);

    close(udp_fd);
    curl_global_cleanup();
    return TESTS_DONE();
}
