/* test_file_name.c - the file service's name rules (file_name_check), one case per rule and its edges. */
#include <string.h>

#include "check.h"
#include "file/name.h"
#include "sockgate/error.h"

/* Checks name[0..len) gets the expected verdict; why must say something when refused. */
static void expect(const char *name, size_t len, int ok)
{
    char why[160] = "";
    int rc = file_name_check(name, len, why, sizeof why);
    if ((rc == SG_OK) != ok) {
        fprintf(stderr, "name of %zu bytes starting \"%.40s\": expected %s, got %s (%s)\n", len, name,
                ok ? "accepted" : "refused", rc == SG_OK ? "accepted" : "refused", why);
        exit(1);
    }
    if (!ok) {
        CHECK_INT_EQ(rc, SG_ERR_INVALID_NAME);
        CHECK(why[0] != '\0');
    }
}

#define OK(s) expect(s, sizeof(s) - 1, 1)
#define BAD(s) expect(s, sizeof(s) - 1, 0)

static void test_ordinary_names(void)
{
    OK("a");
    OK("config");
    OK("report 2024.pdf");
    OK("a..b");
    OK("trailing.");
    OK("x-y_z+1=2,3;4@5");
    OK("新建文件夹.txt");           /* the tutorial's own example folder name */
    OK("emoji-\xf0\x9f\x98\x80");  /* U+1F600, 4-byte UTF-8 */
    OK("%2e%2e%2f");               /* URL-encoding means nothing here: a literal name */
    OK("\xef\xbc\x8e\xef\xbc\x8e\xef\xbc\x8f" "x"); /* fullwidth "．．／" is not "../" */
    OK("~");
    OK("C:");
    OK("a\xc2\xa0" "b");           /* U+00A0 is not a control character */
}

static void test_dots_and_separators(void)
{
    BAD(".");
    BAD("..");
    BAD("...");
    BAD(".hidden");
    BAD(".upload-0123456789abcdef");
    BAD(".meta");
    BAD("../escape");
    BAD("a/b");
    BAD("/etc/passwd");
    BAD("dir/");
    BAD("a\\b");
    BAD("..\\..\\escape");
    BAD("C:\\Windows");
}

static void test_control_bytes(void)
{
    BAD("a\0b");
    BAD("\0");
    BAD("tab\there");
    BAD("line\nbreak");
    BAD("cr\r");
    BAD("esc\x1b[31m");
    BAD("del\x7f");
    BAD("c1\xc2\x85");  /* U+0085 NEXT LINE */
    BAD("c1\xc2\x9f");  /* U+009F, the last C1 control */
}

static void test_invalid_utf8(void)
{
    BAD("\xff");
    BAD("a\x80");
    BAD("\xc0\xaf");          /* overlong '/' */
    BAD("..\xc0\xae");        /* overlong '.' */
    BAD("\xe0\x80\xaf");      /* 3-byte overlong '/' */
    BAD("\xf0\x80\x80\xaf");  /* 4-byte overlong '/' */
    BAD("\xed\xa0\x80");      /* a UTF-16 surrogate */
    BAD("\xe4\xb8");          /* truncated sequence */
    BAD("\xf4\x90\x80\x80");  /* above U+10FFFF */
}

static void test_lengths(void)
{
    char buf[4097];
    memset(buf, 'a', sizeof buf);
    expect(buf, 0, 0);
    expect(buf, 1, 1);
    expect(buf, 255, 1);
    expect(buf, 256, 0);
    expect(buf, 4096, 0);
    /* 85 three-byte characters are 255 bytes: accepted; one more byte is too many. */
    for (int i = 0; i < 86; i++)
        memcpy(buf + 3 * i, "\xe6\x96\x87", 3);
    expect(buf, 255, 1);
    buf[255] = 'a';
    expect(buf, 256, 0);
    /* A NULL why buffer is allowed. */
    CHECK_INT_EQ(file_name_check("..", 2, NULL, 0), SG_ERR_INVALID_NAME);
}

/* The reason given is the real one: "../evil" is refused for its '/', not for its leading dot. */
static void test_reasons(void)
{
    char why[160] = "";
    CHECK_INT_EQ(file_name_check("../evil", 7, why, sizeof why), SG_ERR_INVALID_NAME);
    CHECK(strstr(why, "'/'") != NULL);
    CHECK_INT_EQ(file_name_check(".hidden", 7, why, sizeof why), SG_ERR_INVALID_NAME);
    CHECK(strstr(why, "starts with '.'") != NULL);
}

int main(void)
{
    RUN_TEST(test_reasons);
    RUN_TEST(test_ordinary_names);
    RUN_TEST(test_dots_and_separators);
    RUN_TEST(test_control_bytes);
    RUN_TEST(test_invalid_utf8);
    RUN_TEST(test_lengths);
    return TESTS_DONE();
}
