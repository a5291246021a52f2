/* test_frame_stream.c - the decoder under every way TCP can split or glue bytes, and the blocking reader. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"

/* What a decoding run saw: headers and bodies flattened into one text, e.g. "H{...}B:hello;E". */
struct transcript {
    char text[131072];
    size_t len;
    int errors;
};

static void append(struct transcript *t, const char *s, size_t n)
{
    CHECK(t->len + n < sizeof t->text);
    memcpy(t->text + t->len, s, n);
    t->len += n;
    t->text[t->len] = '\0';
}

/* Feeds one piece to d, recording every event; body chunks are merged per frame. */
static void feed(struct sg_frame_decoder *d, struct transcript *t, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    for (;;) {
        size_t used = 0, clen = 0;
        const uint8_t *chunk = NULL;
        enum sg_frame_event ev = sg_frame_decode(d, buf + off, len - off, &used, &chunk, &clen);
        CHECK(used <= len - off);
        off += used;
        if (ev == SG_FRAME_NEED_MORE) {
            CHECK_INT_EQ(off, len);
            return;
        }
        if (ev == SG_FRAME_ERROR) {
            t->errors++;
            return;
        }
        if (ev == SG_FRAME_HEADER) {
            char *s = json_dumps(sg_frame_decoder_header(d), JSON_COMPACT | JSON_SORT_KEYS);
            append(t, "H", 1);
            append(t, s, strlen(s));
            append(t, "B:", 2);
            free(s);
        } else if (ev == SG_FRAME_BODY) {
            CHECK(clen > 0);
            CHECK(chunk >= buf && chunk + clen <= buf + len); /* borrowed from the input, never copied */
            append(t, (const char *)chunk, clen);
        } else if (ev == SG_FRAME_END) {
            append(t, ";E", 2);
        }
    }
}

/* Builds a frame for header text and body into out; returns its length. */
static size_t make_frame(uint8_t *out, const char *header, const char *body)
{
    size_t hl = strlen(header), bl = strlen(body);
    out[0] = (uint8_t)hl;
    out[1] = (uint8_t)(hl >> 8);
    out[2] = (uint8_t)(hl >> 16);
    out[3] = (uint8_t)(hl >> 24);
    memcpy(out + 4, header, hl);
    memcpy(out + 4 + hl, body, bl);
    return 4 + hl + bl;
}

/* Three frames glued together: with a body, empty, and the tutorial's filesize form. */
static size_t make_stream(uint8_t *buf)
{
    size_t n = 0;
    n += make_frame(buf + n, "{\"op\":\"exec\",\"total_size\":5}", "hello");
    n += make_frame(buf + n, "{\"op\":\"list\"}", "");
    n += make_frame(buf + n, "{\"filename\":\"a.txt\",\"filepath\":\"C:\\\\x\",\"filesize\":11}", "hello world");
    return n;
}

static const char expected[] =
    "H{\"op\":\"exec\",\"total_size\":5}B:hello;E"
    "H{\"op\":\"list\"}B:;E"
    "H{\"filename\":\"a.txt\",\"filepath\":\"C:\\\\x\",\"filesize\":11}B:hello world;E";

static void test_whole_stream_in_one_buffer(void)
{
    uint8_t buf[512];
    size_t n = make_stream(buf);
    struct sg_frame_decoder d;
    struct transcript t = {0};
    sg_frame_decoder_init(&d, 0);
    feed(&d, &t, buf, n);
    CHECK_STR_EQ(t.text, expected);
    CHECK_INT_EQ(t.errors, 0);
    sg_frame_decoder_free(&d);
}

static void test_every_split_point(void)
{
    uint8_t buf[512];
    size_t n = make_stream(buf);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            struct sg_frame_decoder d;
            struct transcript t = {0};
            /* Copies, so a chunk pointing outside its own piece would be caught by feed(). */
            uint8_t *p1 = malloc(a + 1), *p2 = malloc(b - a + 1), *p3 = malloc(n - b + 1);
            memcpy(p1, buf, a);
            memcpy(p2, buf + a, b - a);
            memcpy(p3, buf + b, n - b);
            sg_frame_decoder_init(&d, 0);
            feed(&d, &t, p1, a);
            feed(&d, &t, p2, b - a);
            feed(&d, &t, p3, n - b);
            if (strcmp(t.text, expected) != 0) {
                fprintf(stderr, "split at %zu,%zu gave %s\n", a, b, t.text);
                CHECK(0);
            }
            CHECK_INT_EQ(t.errors, 0);
            sg_frame_decoder_free(&d);
            free(p1);
            free(p2);
            free(p3);
        }
    }
}

static void test_one_byte_at_a_time(void)
{
    uint8_t buf[512];
    size_t n = make_stream(buf);
    struct sg_frame_decoder d;
    struct transcript t = {0};
    sg_frame_decoder_init(&d, 0);
    for (size_t i = 0; i < n; i++)
        feed(&d, &t, buf + i, 1);
    CHECK_STR_EQ(t.text, expected);
    sg_frame_decoder_free(&d);
}

/* Decodes 4 length bytes for value v followed by an empty object; returns the error count. */
static int errors_for_length(uint32_t v, size_t max_header)
{
    uint8_t buf[8] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24), '{', '}'};
    struct sg_frame_decoder d;
    struct transcript t = {0};
    sg_frame_decoder_init(&d, max_header);
    feed(&d, &t, buf, 6);
    sg_frame_decoder_free(&d);
    return t.errors;
}

static void test_header_length_bounds(void)
{
    CHECK_INT_EQ(errors_for_length(0, 0), 1);
    CHECK_INT_EQ(errors_for_length(1, 0), 1);
    CHECK_INT_EQ(errors_for_length(2, 0), 0); /* "{}" */
    CHECK_INT_EQ(errors_for_length(SG_FRAME_DEFAULT_MAX_HEADER + 1, 0), 1);
    CHECK_INT_EQ(errors_for_length(UINT32_C(1) << 31, 0), 1);
    CHECK_INT_EQ(errors_for_length(UINT32_MAX, 0), 1);
    CHECK_INT_EQ(errors_for_length(100, 64), 1); /* configurable limit */
    {
        /* Exactly max: a header of max_header bytes is accepted. */
        size_t max = 300;
        char header[302];
        uint8_t frame[400];
        struct sg_frame_decoder d;
        struct transcript t = {0};
        memset(header, ' ', max);
        header[0] = '{';
        header[max - 1] = '}';
        header[max] = '\0';
        sg_frame_decoder_init(&d, max);
        feed(&d, &t, frame, make_frame(frame, header, ""));
        CHECK_INT_EQ(t.errors, 0);
        CHECK_STR_EQ(t.text, "H{}B:;E");
        sg_frame_decoder_free(&d);
        header[max - 1] = ' ';
        header[max] = '}';
        header[max + 1] = '\0';
        sg_frame_decoder_init(&d, max);
        t.len = 0;
        feed(&d, &t, frame, make_frame(frame, header, "")); /* max + 1 */
        CHECK_INT_EQ(t.errors, 1);
        sg_frame_decoder_free(&d);
    }
}

static void test_error_is_sticky(void)
{
    uint8_t buf[64];
    size_t n = make_frame(buf, "[1,2]", "");
    struct sg_frame_decoder d;
    struct transcript t = {0};
    sg_frame_decoder_init(&d, 0);
    feed(&d, &t, buf, n);
    CHECK_INT_EQ(t.errors, 1);
    CHECK(strstr(sg_frame_decoder_error(&d), "object") != NULL);
    n = make_frame(buf, "{}", "");
    feed(&d, &t, buf, n);
    CHECK_INT_EQ(t.errors, 2);
    sg_frame_decoder_free(&d);
}

static void test_body_larger_than_buffers(void)
{
    /* A 1 MiB body fed in 1000-byte pieces arrives as pieces; the decoder never buffers it. */
    size_t body = 1 << 20, fed = 0, seen = 0;
    uint8_t piece[1000];
    char header[64];
    struct sg_frame_decoder d;
    snprintf(header, sizeof header, "{\"total_size\":%zu}", body);
    sg_frame_decoder_init(&d, 0);
    {
        uint8_t start[64];
        size_t n = make_frame(start, header, ""), used;
        const uint8_t *chunk;
        size_t clen;
        CHECK_INT_EQ(sg_frame_decode(&d, start, n, &used, &chunk, &clen), SG_FRAME_HEADER);
        CHECK_INT_EQ(used, n);
        CHECK(sg_frame_decoder_body_size(&d) == body);
    }
    memset(piece, 'x', sizeof piece);
    while (fed < body) {
        size_t n = body - fed < sizeof piece ? body - fed : sizeof piece, used, clen;
        const uint8_t *chunk;
        CHECK_INT_EQ(sg_frame_decode(&d, piece, n, &used, &chunk, &clen), SG_FRAME_BODY);
        CHECK_INT_EQ(clen, n);
        seen += clen;
        fed += n;
    }
    {
        size_t used, clen;
        const uint8_t *chunk;
        CHECK_INT_EQ(sg_frame_decode(&d, piece, 0, &used, &chunk, &clen), SG_FRAME_END);
    }
    CHECK_INT_EQ(seen, body);
    sg_frame_decoder_free(&d);
}

/* Reads every event from fd with the blocking reader; returns the final status. */
static int read_all(int fd, struct transcript *t)
{
    struct sg_frame_reader *r = malloc(sizeof *r);
    int rc;
    sg_frame_reader_init(r, fd, 0);
    for (;;) {
        enum sg_frame_event ev;
        const uint8_t *chunk;
        size_t clen;
        rc = sg_frame_reader_next(r, &ev, &chunk, &clen, sg_deadline_after(5000));
        if (rc != SG_OK)
            break;
        if (ev == SG_FRAME_HEADER)
            append(t, "H", 1);
        else if (ev == SG_FRAME_BODY)
            append(t, (const char *)chunk, clen);
        else if (ev == SG_FRAME_END)
            append(t, "E", 1);
    }
    sg_frame_reader_free(r);
    free(r);
    return rc;
}

static void test_reader_truncation(void)
{
    uint8_t buf[512];
    size_t n = make_stream(buf);
    /* Whole stream then EOF: three frames then CLOSED at a frame boundary. */
    for (size_t cut = 0; cut <= n; cut += (cut < 40 ? 1 : 7)) {
        int sv[2];
        struct transcript t = {0};
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        CHECK_INT_EQ(sg_write_all(sv[0], buf, cut, -1), SG_OK);
        close(sv[0]);
        CHECK_INT_EQ(read_all(sv[1], &t), SG_ERR_CLOSED);
        close(sv[1]);
    }
    {
        int sv[2];
        struct transcript t = {0};
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        CHECK_INT_EQ(sg_write_all(sv[0], buf, n, -1), SG_OK);
        close(sv[0]);
        CHECK_INT_EQ(read_all(sv[1], &t), SG_ERR_CLOSED);
        CHECK_STR_EQ(t.text, "HhelloEHEHhello worldE");
        close(sv[1]);
    }
}

static void test_send_then_read(void)
{
    int sv[2];
    struct transcript t = {0};
    json_t *h = json_pack("{s:s, s:i}", "op", "exec", "total_size", 3);
    static char big[100000];
    json_t *h2 = json_pack("{s:I}", "total_size", (json_int_t)sizeof big);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_INT_EQ(sg_frame_send(sv[0], h, "abc", 3, -1), SG_OK);
    memset(big, 'z', sizeof big);
    if (fork() == 0) {
        /* The big body goes from a child so the socket buffer's size does not matter. */
        close(sv[1]);
        _exit(sg_frame_send(sv[0], h2, big, sizeof big, -1) == SG_OK ? 0 : 1);
    }
    close(sv[0]);
    CHECK_INT_EQ(read_all(sv[1], &t), SG_ERR_CLOSED);
    CHECK(strncmp(t.text, "HabcEH", 6) == 0);
    CHECK_INT_EQ(t.len, 6 + sizeof big + 1);
    close(sv[1]);
    json_decref(h);
    json_decref(h2);
}

static void test_reader_timeout(void)
{
    int sv[2];
    struct sg_frame_reader *r = malloc(sizeof *r);
    enum sg_frame_event ev;
    const uint8_t *chunk;
    size_t clen;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_INT_EQ(sg_write_all(sv[0], "\x02\x00\x00\x00{", 5, -1), SG_OK); /* a header that never ends */
    CHECK_INT_EQ(sg_set_nonblock(sv[1], 1), SG_OK); /* deadlines hold on non-blocking descriptors */
    sg_frame_reader_init(r, sv[1], 0);
    CHECK_INT_EQ(sg_frame_reader_next(r, &ev, &chunk, &clen, sg_deadline_after(100)), SG_ERR_TIMEOUT);
    sg_frame_reader_free(r);
    free(r);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    RUN_TEST(test_whole_stream_in_one_buffer);
    RUN_TEST(test_every_split_point);
    RUN_TEST(test_one_byte_at_a_time);
    RUN_TEST(test_header_length_bounds);
    RUN_TEST(test_error_is_sticky);
    RUN_TEST(test_body_larger_than_buffers);
    RUN_TEST(test_reader_truncation);
    RUN_TEST(test_send_then_read);
    RUN_TEST(test_reader_timeout);
    return TESTS_DONE();
}
