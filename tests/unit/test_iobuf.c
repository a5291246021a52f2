/* test_iobuf.c - a large transfer's buffer is aligned, whole, zeroed and advised for 2 MiB pages; a small one's is plain. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/iobuf.h"

/* Returns the value of key (e.g. "THPeligible:") in the smaps entry of the mapping that starts at addr, or -1. */
static long smaps_field(const void *addr, const char *key)
{
    char line[512], start[32];
    FILE *f = fopen("/proc/self/smaps", "r");
    int in_entry = 0;
    long value = -1;
    if (!f)
        return -1;
    snprintf(start, sizeof start, "%lx-", (unsigned long)(uintptr_t)addr);
    while (fgets(line, sizeof line, f)) {
        if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ') && line[0] != ' ')
            in_entry = strncmp(line, start, strlen(start)) == 0;
        else if (in_entry && strncmp(line, key, strlen(key)) == 0)
            sscanf(line + strlen(key), "%ld", &value);
    }
    fclose(f);
    return value;
}

/* Whether this kernel hands out transparent huge pages to memory that asks (mode "always" or "madvise"). */
static int thp_available(void)
{
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return 0;
    if (!fgets(mode, sizeof mode, f))
        mode[0] = '\0';
    fclose(f);
    return strstr(mode, "[never]") == NULL && mode[0] != '\0';
}

static void test_bulk(void)
{
    static const size_t sizes[] = {1, 4096, SG_IOBUF_PAGE - 1, SG_IOBUF_PAGE, SG_IOBUF_PAGE + 1, 5 * SG_IOBUF_PAGE};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t rounded = (sizes[i] + SG_IOBUF_PAGE - 1) / SG_IOBUF_PAGE * SG_IOBUF_PAGE;
        struct sg_iobuf b;
        CHECK_INT_EQ(sg_iobuf_alloc(&b, sizes[i], SG_IOBUF_BULK_MIN), SG_OK);
        CHECK(b.data != NULL);
        CHECK_INT_EQ(b.size, sizes[i]);
        CHECK_INT_EQ(b.mapped, rounded);
        CHECK_INT_EQ((uintptr_t)b.data % SG_IOBUF_PAGE, 0);
        /* The whole rounded size is there, zeroed, and keeps what is written. */
        for (size_t off = 0; off < rounded; off += 4096)
            CHECK_INT_EQ(b.data[off], 0);
        memset(b.data, 0xa5, rounded);
        CHECK_INT_EQ(b.data[rounded - 1], 0xa5);
        /* The mapping is exactly the rounded size: the trimmed ends are not part of it. */
        CHECK_INT_EQ(smaps_field(b.data, "Size:"), (long)(rounded / 1024));
        if (thp_available())
            CHECK_INT_EQ(smaps_field(b.data, "THPeligible:"), 1);
        sg_iobuf_free(&b);
        CHECK(b.data == NULL);
    }
}

/* Below SG_IOBUF_BULK_MIN a transfer gets malloc'd memory: no 2 MiB page for a small upload. */
static void test_small_transfer(void)
{
    struct sg_iobuf b;
    CHECK_INT_EQ(sg_iobuf_alloc(&b, 256 * 1024, SG_IOBUF_BULK_MIN - 1), SG_OK);
    CHECK(b.data != NULL);
    CHECK_INT_EQ(b.mapped, 0);
    memset(b.data, 1, b.size);
    sg_iobuf_free(&b);
    CHECK(b.data == NULL);
}

static void test_refusals(void)
{
    struct sg_iobuf b = {0};
    sg_iobuf_free(&b); /* harmless on a cleared one */
    CHECK_INT_EQ(sg_iobuf_alloc(&b, 0, SG_IOBUF_BULK_MIN), SG_ERR_NOMEM);
    CHECK(b.data == NULL);
    CHECK_INT_EQ(sg_iobuf_alloc(&b, SIZE_MAX, SG_IOBUF_BULK_MIN), SG_ERR_NOMEM);
    CHECK_INT_EQ(sg_iobuf_alloc(&b, SIZE_MAX - SG_IOBUF_PAGE, 1), SG_ERR_NOMEM);
    sg_iobuf_free(&b); /* and on a failed one */
}

int main(void)
{
    RUN_TEST(test_bulk);
    RUN_TEST(test_small_transfer);
    RUN_TEST(test_refusals);
    return TESTS_DONE();
}
