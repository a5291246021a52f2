/* test_frame.c - header validation, body sizes, sniffing and encoding of the frame codec. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"

/* Parses text as a header; returns the sg_err result and the body size. */
static int parse(const char *text, uint64_t *body)
{
    json_t *h = NULL;
    char err[160] = "";
    uint64_t size = 0;
    int rc = sg_frame_parse_header(text, strlen(text), &h, &size, err, sizeof err);
    if (rc == SG_OK)
        CHECK(json_is_object(h));
    else
        CHECK(h == NULL && err[0] != '\0');
    json_decref(h);
    if (body)
        *body = size;
    return rc;
}

static void test_header_must_be_object(void)
{
    uint64_t body;
    CHECK_INT_EQ(parse("{}", &body), SG_OK);
    CHECK_INT_EQ(body, 0);
    CHECK_INT_EQ(parse("[]", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("\"op\"", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("42", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("null", NULL), SG_ERR_PROTO);
}

static void test_invalid_json(void)
{
    CHECK_INT_EQ(parse("{", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"a\":}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{'a':1}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{} x", NULL), SG_ERR_PROTO);       /* trailing garbage */
    CHECK_INT_EQ(parse("{}{}", NULL), SG_ERR_PROTO);       /* two values */
    CHECK_INT_EQ(parse("{\"a\":1,\"a\":2}", NULL), SG_ERR_PROTO); /* duplicate keys */
    CHECK_INT_EQ(parse("{\"a\":\"\\u0000\"}", NULL), SG_ERR_PROTO); /* NUL in a string */
    CHECK_INT_EQ(parse("{\"a\":\"\xff\xfe\"}", NULL), SG_ERR_PROTO); /* invalid UTF-8 */
    CHECK_INT_EQ(parse("{\"a\":\"\xc0\xaf\"}", NULL), SG_ERR_PROTO); /* overlong UTF-8 */
    {
        const char raw_nul[] = "{\"a\":\"x\0\"}";
        json_t *h = NULL;
        char err[160];
        uint64_t size;
        CHECK_INT_EQ(sg_frame_parse_header(raw_nul, sizeof raw_nul - 1, &h, &size, err, sizeof err),
                     SG_ERR_PROTO);
    }
    CHECK_INT_EQ(parse("  {\"op\": \"list\"}\n", NULL), SG_OK); /* whitespace is fine */
}

static void test_nesting_limit(void)
{
    char deep[256];
    size_t n = 0;
    /* 32 levels are allowed, 33 are not. */
    for (int levels = 32; levels <= 33; levels++) {
        n = 0;
        deep[n++] = '{';
        deep[n++] = '"';
        deep[n++] = 'a';
        deep[n++] = '"';
        deep[n++] = ':';
        for (int i = 1; i < levels; i++)
            deep[n++] = '[';
        for (int i = 1; i < levels; i++)
            deep[n++] = ']';
        deep[n++] = '}';
        deep[n] = '\0';
        CHECK_INT_EQ(parse(deep, NULL), levels == 32 ? SG_OK : SG_ERR_PROTO);
    }
    /* Brackets inside strings do not count. */
    CHECK_INT_EQ(parse("{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[\"}", NULL), SG_OK);
}

static void test_body_size(void)
{
    uint64_t body;
    CHECK_INT_EQ(parse("{\"total_size\":10}", &body), SG_OK);
    CHECK_INT_EQ(body, 10);
    CHECK_INT_EQ(parse("{\"filesize\":7}", &body), SG_OK); /* the tutorial's upload header */
    CHECK_INT_EQ(body, 7);
    CHECK_INT_EQ(parse("{\"filesize\":7,\"total_size\":3}", &body), SG_OK); /* total_size wins */
    CHECK_INT_EQ(body, 3);
    CHECK_INT_EQ(parse("{\"total_size\":0}", &body), SG_OK);
    CHECK_INT_EQ(body, 0);
    CHECK_INT_EQ(parse("{\"total_size\":9007199254740992}", &body), SG_OK); /* 2^53 */
    CHECK(body == (UINT64_C(1) << 53));
    CHECK_INT_EQ(parse("{\"total_size\":9007199254740993}", NULL), SG_ERR_PROTO); /* 2^53+1 */
    CHECK_INT_EQ(parse("{\"total_size\":-1}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"total_size\":1.5}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"total_size\":1.0}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"total_size\":\"10\"}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"total_size\":null}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"filesize\":null}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"total_size\":1e3}", NULL), SG_ERR_PROTO);
    CHECK_INT_EQ(parse("{\"total_size\":99999999999999999999999}", NULL), SG_ERR_PROTO);
}

static void test_sniff(void)
{
    const uint8_t framed[] = {0x02, 0x00, 0x00, 0x00, '{', '}'};
    const uint8_t max[] = {0x00, 0x00, 0x01, 0x00, '{'};  /* 65536 */
    const uint8_t over[] = {0x01, 0x00, 0x01, 0x00, '{'}; /* 65537 */
    const uint8_t one[] = {0x01, 0x00, 0x00, 0x00, '{'};
    const uint8_t no_brace[] = {0x05, 0x00, 0x00, 0x00, 'h'};
    CHECK_INT_EQ(sg_frame_sniff(framed, sizeof framed, 0), SG_SNIFF_FRAMED);
    CHECK_INT_EQ(sg_frame_sniff(max, sizeof max, 0), SG_SNIFF_FRAMED);
    CHECK_INT_EQ(sg_frame_sniff(over, sizeof over, 0), SG_SNIFF_RAW);
    CHECK_INT_EQ(sg_frame_sniff(one, sizeof one, 0), SG_SNIFF_RAW);
    CHECK_INT_EQ(sg_frame_sniff(no_brace, sizeof no_brace, 0), SG_SNIFF_RAW);
    CHECK_INT_EQ(sg_frame_sniff((const uint8_t *)"hello", 5, 0), SG_SNIFF_RAW);
    CHECK_INT_EQ(sg_frame_sniff((const uint8_t *)"ls -l", 5, 0), SG_SNIFF_RAW);
    CHECK_INT_EQ(sg_frame_sniff((const uint8_t *)"ls", 2, 0), SG_SNIFF_NEED_MORE); /* could still be framed */
    CHECK_INT_EQ(sg_frame_sniff((const uint8_t *)"dir", 3, 0), SG_SNIFF_RAW); /* 3rd byte too big */
    CHECK_INT_EQ(sg_frame_sniff(framed, 4, 0), SG_SNIFF_NEED_MORE);
    CHECK_INT_EQ(sg_frame_sniff(framed, 1, 0), SG_SNIFF_NEED_MORE);
    CHECK_INT_EQ(sg_frame_sniff(framed, 0, 0), SG_SNIFF_NEED_MORE);
    /* A smaller limit moves the boundary. */
    CHECK_INT_EQ(sg_frame_sniff(max, sizeof max, 1024), SG_SNIFF_RAW);
}

static void test_encode(void)
{
    json_t *h = json_pack("{s:s, s:i}", "op", "list", "total_size", 0);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_INT_EQ(sg_frame_encode_header(h, 0, &buf, &len), SG_OK);
    CHECK_INT_EQ(len, 4 + buf[0]);
    CHECK(buf[1] == 0 && buf[2] == 0 && buf[3] == 0);
    CHECK(buf[4] == '{' && buf[len - 1] == '}');
    CHECK_INT_EQ(sg_frame_sniff(buf, len, 0), SG_SNIFF_FRAMED);
    free(buf);
    CHECK_INT_EQ(sg_frame_encode_header(h, 8, &buf, &len), SG_ERR_TOO_LARGE);
    CHECK(buf == NULL);
    json_decref(h);
}

static void test_error_header(void)
{
    json_t *h = sg_frame_error_header(SG_ERR_NOT_ALLOWED, "rm is not allowed", "req-1");
    char msg[64];
    CHECK_STR_EQ(sg_header_str(h, "id"), "req-1");
    CHECK_INT_EQ(sg_frame_header_error(h, msg, sizeof msg), SG_ERR_NOT_ALLOWED);
    CHECK_STR_EQ(msg, "rm is not allowed");
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(h, "error"), "code")),
                 "command_not_allowed");
    json_decref(h);
    h = json_pack("{s:i}", "exit_code", 0);
    CHECK_INT_EQ(sg_frame_header_error(h, msg, sizeof msg), SG_OK);
    json_decref(h);
}

static void test_header_int(void)
{
    json_t *h = json_pack("{s:i, s:f, s:s}", "n", 5, "r", 1.5, "s", "x");
    int64_t v = 0;
    CHECK_INT_EQ(sg_header_int(h, "n", 0, 10, &v), SG_OK);
    CHECK_INT_EQ(v, 5);
    CHECK_INT_EQ(sg_header_int(h, "n", 6, 10, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_header_int(h, "r", 0, 10, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_header_int(h, "s", 0, 10, &v), SG_ERR_INVALID);
    CHECK_INT_EQ(sg_header_int(h, "missing", 0, 10, &v), SG_ERR_NOT_FOUND);
    json_decref(h);
}

static void test_error_codes_round_trip(void)
{
    for (int e = SG_ERR_SYS; e < SG_ERR__COUNT; e++) {
        CHECK_INT_EQ(sg_err_from_code(sg_err_code(e)), e);
        CHECK(strlen(sg_strerror(e)) > 0);
    }
    CHECK_INT_EQ(sg_err_from_code("no_such_code"), SG_ERR_INTERNAL);
}

int main(void)
{
    RUN_TEST(test_header_must_be_object);
    RUN_TEST(test_invalid_json);
    RUN_TEST(test_nesting_limit);
    RUN_TEST(test_body_size);
    RUN_TEST(test_sniff);
    RUN_TEST(test_encode);
    RUN_TEST(test_error_header);
    RUN_TEST(test_header_int);
    RUN_TEST(test_error_codes_round_trip);
    return TESTS_DONE();
}
