/*
 * test_file_big.c - a file over 2 GiB (sparse on the client side) goes up
 * through sockgate-cli put and comes back down intact, with ranges across the
 * 2^31 boundary, while the server's resident memory stays bounded.
 *
 * Set SOCKGATE_SKIP_BIG=1 to skip it (sanitizer builds, slow disks); it also
 * skips itself, saying so, when /tmp lacks the free space.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "check.h"
#include "fclient.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define MIB (UINT64_C(1) << 20)
#define BIG_SIZE ((UINT64_C(2) << 30) + MIB + 7)
/* The server may grow by at most this much while it moves the file either way. */
#define RSS_GROWTH_MAX_KIB (16 * 1024)

static char dir[256], root[300], src[300];
static struct sg_proc server;

/* Samples the server's RSS until told to stop, keeping the peak. */
struct sampler {
    pid_t pid;
    volatile int stop;
    long peak_kib;
    int samples;
};

static void *sample_rss(void *arg)
{
    struct sampler *s = arg;
    while (!s->stop) {
        long kib = sg_proc_rss_kib(s->pid);
        if (kib > s->peak_kib)
            s->peak_kib = kib;
        s->samples++;
        usleep(20 * 1000);
    }
    return NULL;
}

/* Writes marker data at a few offsets of a sparse file of BIG_SIZE bytes (zeros elsewhere). */
static void make_sparse_source(uint8_t *marks[4], const uint64_t offsets[4], size_t mark_len)
{
    int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)BIG_SIZE) == 0);
    for (int i = 0; i < 4; i++) {
        marks[i] = malloc(mark_len);
        CHECK(marks[i] != NULL);
        fc_fill(marks[i], mark_len, 500 + (uint64_t)i);
        CHECK(pwrite(fd, marks[i], mark_len, (off_t)offsets[i]) == (ssize_t)mark_len);
    }
    CHECK(close(fd) == 0);
}

/* Hashes the source file by reading it. */
static void hash_source(char hex[SG_SHA256_HEX])
{
    struct sg_hash h;
    uint8_t *buf = malloc(MIB);
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    CHECK(buf && fd >= 0 && sg_hash_init(&h, 0) == SG_OK);
    while ((n = read(fd, buf, MIB)) > 0)
        sg_hash_update(&h, buf, (size_t)n);
    CHECK(n == 0);
    sg_hash_final(&h, hex, NULL);
    close(fd);
    free(buf);
}

/* Returns the byte of the source at off: a marker byte or zero. */
static uint8_t source_byte(uint8_t *marks[4], const uint64_t offsets[4], size_t mark_len, uint64_t off)
{
    for (int i = 0; i < 4; i++)
        if (off >= offsets[i] && off < offsets[i] + mark_len)
            return marks[i][off - offsets[i]];
    return 0;
}

static void test_big_roundtrip(void)
{
    const uint64_t offsets[4] = {0, UINT64_C(1) << 30, (UINT64_C(1) << 31) - 3000, BIG_SIZE - 4096};
    const size_t mark_len = 4096;
    uint8_t *marks[4];
    char want[SG_SHA256_HEX], out_path[400], port[16], addr[64];
    struct sampler smp = {.pid = server.pid};
    long base_kib;
    pthread_t t;
    struct fc_conn *c;
    struct fc_resp r;
    char *out;
    size_t out_len;

    make_sparse_source(marks, offsets, mark_len);
    hash_source(want);
    /* The baseline once the server has served something (its lazily touched pages are in). */
    c = fc_open(server.port);
    fc_upload(c, "warm-up", "x", 1, NULL, &r);
    fc_resp_free(&r);
    base_kib = sg_proc_rss_kib(server.pid);
    CHECK(base_kib > 0);
    smp.peak_kib = base_kib;
    CHECK(pthread_create(&t, NULL, sample_rss, &smp) == 0);

    /* Up through the real client. */
    snprintf(port, sizeof port, "%u", (unsigned)server.port);
    snprintf(addr, sizeof addr, "127.0.0.1:%s", port);
    snprintf(out_path, sizeof out_path, "%s/put.out", dir);
    {
        const char *argv[] = {"sockgate-cli", "put", "--quiet", addr, src, "big.bin", NULL};
        CHECK_INT_EQ(fc_run(argv, out_path, NULL), 0);
    }
    out = (char *)fc_read_file(out_path, &out_len);
    CHECK(out != NULL && out_len >= 64 && memcmp(out, want, 64) == 0);
    free(out);

    /* Down over the protocol: hashed as it streams, never held. */
    CHECK(fc_send(c, json_pack("{s:s, s:s}", "op", "download", "filename", "big.bin"), NULL, 0) == SG_OK);
    CHECK(fc_recv(c, &r, 0) == SG_OK);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "size"), BIG_SIZE);
    CHECK_INT_EQ(fc_int(&r, "total_size"), BIG_SIZE);
    CHECK_INT_EQ(r.len, BIG_SIZE);
    CHECK_STR_EQ(r.sha256, want);
    CHECK_STR_EQ(fc_str(&r, "sha256"), want);
    fc_resp_free(&r);
    smp.stop = 1;
    pthread_join(t, NULL);

    /* Ranges across the 2^31 boundary and at the very end. */
    {
        const uint64_t starts[] = {(UINT64_C(1) << 31) - 10, offsets[2] + 100, BIG_SIZE - 5000, BIG_SIZE - 1};
        for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++) {
            uint64_t len = BIG_SIZE - starts[i] < 8192 ? BIG_SIZE - starts[i] : 8192;
            fc_download(c, "big.bin", (int64_t)starts[i], (int64_t)len, &r);
            CHECK(fc_error(&r) == NULL);
            CHECK_INT_EQ(r.len, len);
            for (uint64_t k = 0; k < len; k++)
                CHECK(r.body[k] == source_byte(marks, offsets, mark_len, starts[i] + k));
            fc_resp_free(&r);
        }
    }
    fc_close(c);
    fprintf(stderr, "server RSS: %ld KiB before, %ld KiB peak over %d samples (growth %ld KiB, limit %d)\n",
            base_kib, smp.peak_kib, smp.samples, smp.peak_kib - base_kib, RSS_GROWTH_MAX_KIB);
    CHECK(smp.samples > 0);
    CHECK(smp.peak_kib - base_kib < RSS_GROWTH_MAX_KIB);
    for (int i = 0; i < 4; i++)
        free(marks[i]);
}

int main(void)
{
    struct statvfs vfs;
    uint64_t need = BIG_SIZE + 512 * MIB, avail;
    const char *skip = getenv("SOCKGATE_SKIP_BIG");
    if (skip && *skip && strcmp(skip, "0") != 0) {
        fprintf(stderr, "SKIPPED test_file_big: SOCKGATE_SKIP_BIG is set\n");
        return TESTS_DONE();
    }
    CHECK(statvfs("/tmp", &vfs) == 0);
    avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (avail < need) {
        fprintf(stderr, "SKIPPED test_file_big: /tmp has %llu MiB free, the test needs %llu MiB\n",
                (unsigned long long)(avail / MIB), (unsigned long long)(need / MIB));
        return TESTS_DONE();
    }
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s/root", dir);
    snprintf(src, sizeof src, "%s/sparse-source", dir);
    fc_server_start(&server, root, NULL);
    RUN_TEST(test_big_roundtrip);
    fc_server_stop(&server);
    sg_test_rmtree(dir); /* the 2 GiB copy goes at once */
    return TESTS_DONE();
}
