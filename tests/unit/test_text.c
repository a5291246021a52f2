/* test_text.c - UTF-8 validation and hex encoding. */
#include <string.h>

#include "check.h"
#include "sockgate/text.h"

static void test_utf8(void)
{
    CHECK(sg_utf8_valid("", 0));
    CHECK(sg_utf8_valid("hello", 5));
    CHECK(sg_utf8_valid("\xe4\xbd\xa0\xe5\xa5\xbd", 6));       /* 你好 */
    CHECK(sg_utf8_valid("\xf0\x9f\x98\x80", 4));               /* U+1F600 */
    CHECK(sg_utf8_valid("\xf4\x8f\xbf\xbf", 4));               /* U+10FFFF */
    CHECK(!sg_utf8_valid("\xf4\x90\x80\x80", 4));              /* over U+10FFFF */
    CHECK(!sg_utf8_valid("\xc0\xaf", 2));                      /* overlong '/' */
    CHECK(!sg_utf8_valid("\xe0\x80\xaf", 3));                  /* overlong '/' */
    CHECK(!sg_utf8_valid("\xed\xa0\x80", 3));                  /* surrogate */
    CHECK(!sg_utf8_valid("\x80", 1));                          /* lone continuation */
    CHECK(!sg_utf8_valid("\xe4\xbd", 2));                      /* truncated */
    CHECK(!sg_utf8_valid("\xff", 1));
    CHECK(sg_utf8_valid("a\0b", 3)); /* NUL is valid UTF-8; callers that forbid it check separately */
}

static void test_hex(void)
{
    char hex[9];
    const uint8_t bin[] = {0x00, 0x9f, 0xa0, 0xff};
    sg_hex_encode(bin, sizeof bin, hex);
    CHECK_STR_EQ(hex, "009fa0ff");
}

int main(void)
{
    RUN_TEST(test_utf8);
    RUN_TEST(test_hex);
    return TESTS_DONE();
}
