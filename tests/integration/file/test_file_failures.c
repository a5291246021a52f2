/*
 * test_file_failures.c - nothing partial is ever visible: a client killed
 * mid-upload, a short body, a wrong checksum, a size over --max-size, a full
 * disk, a stop in the middle, and two concurrent uploads of one name.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fclient.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define MIB (1024u * 1024u)

static char dir[256], root[300];
static struct sg_proc server;

/* Waits up to 10 s for the root to hold exactly want temporary uploads; returns 1 when it does. */
static int wait_temps(const char *r, int want)
{
    int64_t until = sg_now_ms() + 10000;
    while (fc_count_prefix(r, ".upload-") != want) {
        if (sg_now_ms() > until)
            return 0;
        usleep(10 * 1000);
    }
    return 1;
}

/* Uploads buf as name on a fresh connection and checks it is stored. */
static void put_ok(const char *name, const void *buf, size_t len)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    fc_upload(c, name, buf, len, NULL, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    fc_close(c);
}

/* Checks that name is served with exactly want[0..len), or is absent when want is NULL. */
static void expect_content(const char *name, const void *want, size_t len)
{
    struct fc_conn *c = fc_open(server.port);
    char path[400];
    struct fc_resp r;
    fc_download(c, name, 0, -1, &r);
    if (!want) {
        CHECK_STR_EQ(fc_error(&r), "not_found");
        snprintf(path, sizeof path, "%s/%s", root, name);
        CHECK(!fc_exists(path));
    } else {
        CHECK(fc_error(&r) == NULL);
        CHECK_INT_EQ(r.len, len);
        CHECK(memcmp(r.body, want, len) == 0);
    }
    fc_resp_free(&r);
    fc_close(c);
}

/* Starts an upload of total bytes as name in a child, which sends sent bytes, reports, and waits to die. */
static pid_t partial_upload_child(const char *name, size_t total, size_t sent, int ready_fd)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct fc_conn *c = fc_open(server.port);
        uint8_t *buf = malloc(sent);
        json_t *h = json_pack("{s:s, s:s, s:I}", "op", "upload", "filename", name, "total_size", (json_int_t)total);
        if (!buf || !h || fc_send(c, h, NULL, 0) != SG_OK)
            _exit(2);
        fc_fill(buf, sent, 99);
        if (sg_write_all(c->fd, buf, sent, sg_now_ms() + 10000) != SG_OK)
            _exit(3);
        if (write(ready_fd, "r", 1) != 1)
            _exit(4);
        for (;;)
            pause();
    }
    return pid;
}

static void killed_mid_upload(const char *name)
{
    int p[2];
    char b;
    pid_t pid;
    CHECK(pipe(p) == 0);
    pid = partial_upload_child(name, 10 * MIB, 3 * MIB, p[1]);
    CHECK(read(p[0], &b, 1) == 1);
    /* The upload is really under way: its temporary file exists. */
    CHECK(wait_temps(root, 1));
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, NULL, 0) == pid);
    CHECK(wait_temps(root, 0));
    close(p[0]);
    close(p[1]);
}

static void test_killed_client_leaves_no_trace(void)
{
    killed_mid_upload("never-finished");
    expect_content("never-finished", NULL, 0);
    /* An existing file of that name stays intact. */
    put_ok("kept", "the old content", 15);
    killed_mid_upload("kept");
    expect_content("kept", "the old content", 15);
}

static void test_short_body_leaves_no_trace(void)
{
    struct fc_conn *c = fc_open(server.port);
    uint8_t buf[500];
    size_t got;
    memset(buf, 'x', sizeof buf);
    CHECK(fc_send(c, json_pack("{s:s, s:s, s:i}", "op", "upload", "filename", "short", "total_size", 1000), buf,
                  sizeof buf) == SG_OK);
    shutdown(c->fd, SHUT_WR); /* 500 of the 1000 bytes, then end of stream */
    CHECK(sg_read_some(c->fd, buf, sizeof buf, &got, sg_now_ms() + 10000) == SG_ERR_CLOSED);
    fc_close(c);
    CHECK(wait_temps(root, 0));
    expect_content("short", NULL, 0);
}

static void test_wrong_checksum_leaves_no_trace(void)
{
    struct fc_conn *c = fc_open(server.port);
    char other[SG_SHA256_HEX];
    struct fc_resp r;
    fc_sha256("something else", 14, other);
    fc_upload(c, "summed", "the real body", 13, json_pack("{s:s}", "sha256", other), &r);
    CHECK_STR_EQ(fc_error(&r), "checksum_mismatch");
    fc_resp_free(&r);
    fc_upload(c, "summed", "the real body", 13, json_pack("{s:s}", "md5", "00000000000000000000000000000000"), &r);
    CHECK_STR_EQ(fc_error(&r), "checksum_mismatch");
    fc_resp_free(&r);
    expect_content("summed", NULL, 0);
    put_ok("summed", "version one", 11);
    fc_upload(c, "summed", "version two", 11, json_pack("{s:s}", "sha256", other), &r);
    CHECK_STR_EQ(fc_error(&r), "checksum_mismatch");
    fc_resp_free(&r);
    expect_content("summed", "version one", 11);
    CHECK_INT_EQ(fc_count_prefix(root, ".upload-"), 0);
    /* The connection is still in step after a refusal. */
    fc_request(c, json_pack("{s:s}", "op", "list"), NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    fc_close(c);
}

static void test_max_size(void)
{
    char root2[400];
    const char *flags[] = {"--max-size", "1M", NULL};
    struct sg_proc small;
    struct fc_conn *c;
    struct fc_resp r;
    uint8_t *buf = calloc(1, MIB + 1), junk[16];
    size_t got;

    CHECK(buf != NULL);
    snprintf(root2, sizeof root2, "%s/root-max", dir);
    fc_server_start(&small, root2, flags);
    c = fc_open(small.port);
    fc_upload(c, "big", buf, MIB + 1, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "too_large");
    fc_resp_free(&r);
    fc_upload(c, "big", buf, MIB, NULL, &r); /* exactly the limit; same connection */
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    /* A body too big to skip: answered at once, before any byte of it, then the connection ends. */
    CHECK(fc_send(c, json_pack("{s:s, s:I}", "filename", "huge", "total_size", (json_int_t)1 << 40), NULL, 0) ==
          SG_OK);
    CHECK(fc_recv(c, &r, 4096) == SG_OK);
    CHECK_STR_EQ(fc_error(&r), "too_large");
    fc_resp_free(&r);
    CHECK(sg_read_some(c->fd, junk, sizeof junk, &got, sg_now_ms() + 10000) == SG_ERR_CLOSED);
    fc_close(c);
    CHECK_INT_EQ(fc_count_prefix(root2, ".upload-"), 0);
    fc_server_stop(&small);
    free(buf);
}

/* One uploader of the concurrency test: sends buf in pieces as name, at the pace the other side sets. */
struct racer {
    struct fc_conn *c;
    const uint8_t *buf;
    size_t len;
    const char *name;
    char error[64];
};

static void *race_upload(void *arg)
{
    struct racer *u = arg;
    struct fc_resp r;
    fc_upload(u->c, u->name, u->buf, u->len, NULL, &r);
    snprintf(u->error, sizeof u->error, "%s", fc_error(&r) ? fc_error(&r) : "");
    fc_resp_free(&r);
    return NULL;
}

/* Downloads name over and over while uploads run; every copy must be one whole version. */
struct watcher {
    uint16_t port;
    const char *name;
    char allowed[3][SG_SHA256_HEX];
    volatile int stop;
    int seen;
    int bad;
};

static void *watch_downloads(void *arg)
{
    struct watcher *w = arg;
    struct fc_conn *c = fc_open(w->port);
    for (int i = 0; i < 200 && !w->stop; i++) {
        struct fc_resp r;
        json_t *h = json_pack("{s:s, s:s}", "op", "download", "filename", w->name);
        int ok = 0;
        if (fc_send(c, h, NULL, 0) != SG_OK || fc_recv(c, &r, 0) != SG_OK) {
            w->bad++;
            break;
        }
        for (int k = 0; k < 3; k++)
            ok |= strcmp(r.sha256, w->allowed[k]) == 0 && strcmp(fc_str(&r, "sha256"), r.sha256) == 0;
        w->bad += !ok;
        w->seen++;
        fc_resp_free(&r);
    }
    fc_close(c);
    return NULL;
}

/* Sends the header and all but the last piece of an upload on c. */
static void send_all_but_last(struct fc_conn *c, const char *name, const uint8_t *buf, size_t len, size_t last)
{
    CHECK(fc_send(c, json_pack("{s:s, s:s, s:I}", "op", "upload", "filename", name, "total_size", (json_int_t)len),
                  buf, len - last) == SG_OK);
}

static void test_concurrent_uploads_never_mix(void)
{
    size_t len = 8 * MIB, last = 4096;
    uint8_t *a = malloc(len), *b = malloc(len), *old = malloc(len);
    struct watcher w = {.port = server.port, .name = "contended"};
    struct fc_resp r;
    pthread_t wt;

    CHECK(a && b && old);
    fc_fill(a, len, 1001);
    fc_fill(b, len, 2002);
    fc_fill(old, len, 3003);
    fc_sha256(a, len, w.allowed[0]);
    fc_sha256(b, len, w.allowed[1]);
    fc_sha256(old, len, w.allowed[2]);
    put_ok("contended", old, len);
    CHECK(pthread_create(&wt, NULL, watch_downloads, &w) == 0);

    /* Both in flight at once; the one that finishes last wins, whole. */
    for (int round = 0; round < 2; round++) {
        struct fc_conn *first = fc_open(server.port), *second = fc_open(server.port);
        const uint8_t *fb = round == 0 ? a : b, *sb = round == 0 ? b : a;
        send_all_but_last(first, "contended", fb, len, last);
        send_all_but_last(second, "contended", sb, len, last);
        CHECK(sg_write_all(first->fd, fb + len - last, last, sg_now_ms() + 10000) == SG_OK);
        CHECK(fc_recv(first, &r, 0) == SG_OK && fc_error(&r) == NULL);
        fc_resp_free(&r);
        CHECK(sg_write_all(second->fd, sb + len - last, last, sg_now_ms() + 10000) == SG_OK);
        CHECK(fc_recv(second, &r, 0) == SG_OK && fc_error(&r) == NULL);
        fc_resp_free(&r);
        expect_content("contended", sb, len);
        fc_close(first);
        fc_close(second);
    }
    /* Truly simultaneous: either version, never a mix. */
    for (int round = 0; round < 3; round++) {
        struct racer ra = {.c = fc_open(server.port), .buf = a, .len = len, .name = "contended"};
        struct racer rb = {.c = fc_open(server.port), .buf = b, .len = len, .name = "contended"};
        pthread_t ta, tb;
        struct fc_conn *c;
        CHECK(pthread_create(&ta, NULL, race_upload, &ra) == 0);
        CHECK(pthread_create(&tb, NULL, race_upload, &rb) == 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        CHECK_STR_EQ(ra.error, "");
        CHECK_STR_EQ(rb.error, "");
        c = fc_open(server.port);
        fc_download(c, "contended", 0, -1, &r);
        CHECK(strcmp(r.sha256, w.allowed[0]) == 0 || strcmp(r.sha256, w.allowed[1]) == 0);
        CHECK_STR_EQ(fc_str(&r, "sha256"), r.sha256);
        fc_resp_free(&r);
        fc_close(c);
        fc_close(ra.c);
        fc_close(rb.c);
    }
    w.stop = 1;
    pthread_join(wt, NULL);
    fprintf(stderr, "the watcher saw %d downloads, %d of them not one whole version\n", w.seen, w.bad);
    CHECK(w.seen > 0);
    CHECK_INT_EQ(w.bad, 0);
    CHECK_INT_EQ(fc_count_prefix(root, ".upload-"), 0);
    free(a);
    free(b);
    free(old);
}

static void test_max_conns(void)
{
    char root2[400];
    const char *flags[] = {"--max-conns", "2", NULL};
    struct sg_proc small;
    struct fc_conn *c1, *c2, *c3;
    struct fc_resp r;
    int64_t until;
    int served = 0;

    snprintf(root2, sizeof root2, "%s/root-conns", dir);
    fc_server_start(&small, root2, flags);
    c1 = fc_open(small.port);
    c2 = fc_open(small.port);
    fc_request(c1, json_pack("{s:s}", "op", "list"), NULL, 0, &r);
    fc_resp_free(&r);
    fc_request(c2, json_pack("{s:s}", "op", "list"), NULL, 0, &r);
    fc_resp_free(&r);
    c3 = fc_open(small.port);
    CHECK(fc_recv(c3, &r, 4096) == SG_OK);
    CHECK_STR_EQ(fc_error(&r), "busy");
    fc_resp_free(&r);
    fc_close(c3);
    /* A slot freed is a slot taken again. */
    fc_close(c1);
    until = sg_now_ms() + 10000;
    while (!served && sg_now_ms() < until) {
        c3 = fc_open(small.port);
        if (fc_send(c3, json_pack("{s:s}", "op", "list"), NULL, 0) == SG_OK && fc_recv(c3, &r, 4096) == SG_OK) {
            served = fc_error(&r) == NULL;
            fc_resp_free(&r);
        }
        fc_close(c3);
        if (!served)
            usleep(20 * 1000);
    }
    CHECK(served);
    fc_close(c2);
    fc_server_stop(&small);
}

static void test_stop_mid_upload(void)
{
    char root2[400];
    struct sg_proc other;
    struct fc_conn *c;
    uint8_t buf[65536] = {0};
    snprintf(root2, sizeof root2, "%s/root-stop", dir);
    fc_server_start(&other, root2, NULL);
    c = fc_open(other.port);
    CHECK(fc_send(c, json_pack("{s:s, s:i}", "filename", "interrupted", "total_size", 10 * MIB), buf, sizeof buf) ==
          SG_OK);
    CHECK(wait_temps(root2, 1));
    fc_server_stop(&other); /* exit status 0 although an upload was under way */
    CHECK_INT_EQ(fc_count_prefix(root2, ".upload-"), 0);
    CHECK_INT_EQ(fc_count_prefix(root2, "interrupted"), 0);
    fc_close(c);
}

static void test_idle_connection_closed(void)
{
    char root2[400];
    const char *flags[] = {"--idle-timeout", "1", NULL};
    struct sg_proc other;
    struct fc_conn *c;
    uint8_t b;
    size_t got;
    snprintf(root2, sizeof root2, "%s/root-idle", dir);
    fc_server_start(&other, root2, flags);
    c = fc_open(other.port);
    CHECK(sg_read_some(c->fd, &b, 1, &got, sg_now_ms() + 15000) == SG_ERR_CLOSED);
    fc_close(c);
    fc_server_stop(&other);
}

/*
 * A big upload waits for a few hundred KiB at a time (SO_RCVLOWAT), but a
 * sender that trickles 32 KiB every 350 ms makes progress and must not hit a
 * 2 s I/O timeout: the upload completes, whole. 256 KiB take 2.45 s to come,
 * longer than the timeout, while a pause may stretch by 1.6 s on a loaded
 * machine before the sender really is idle.
 */
static void test_slow_sender_is_not_idle(void)
{
    const size_t size = MIB + 4096, piece = 32 * 1024;
    char root2[400], sha[SG_SHA256_HEX];
    const char *flags[] = {"--io-timeout", "2", NULL};
    uint8_t *data = malloc(size);
    struct sg_proc other;
    struct fc_conn *c;
    struct fc_resp r;

    CHECK(data != NULL);
    fc_fill(data, size, 91);
    fc_sha256(data, size, sha);
    snprintf(root2, sizeof root2, "%s/root-slow", dir);
    fc_server_start(&other, root2, flags);
    c = fc_open(other.port);
    CHECK(fc_send(c, json_pack("{s:s, s:s, s:I}", "op", "upload", "filename", "slow", "total_size", (json_int_t)size),
                  NULL, 0) == SG_OK);
    for (size_t off = 0; off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        CHECK(sg_write_all(c->fd, data + off, n, sg_now_ms() + 5000) == SG_OK);
        usleep(350 * 1000);
    }
    CHECK(fc_recv(c, &r, 0) == SG_OK);
    CHECK(fc_error(&r) == NULL);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    fc_resp_free(&r);
    fc_close(c);
    fc_server_stop(&other);
    free(data);
}

static void test_disk_full(void)
{
    char mnt[400], root2[420];
    struct sg_proc small;
    struct fc_conn *a, *b;
    struct fc_resp r;
    uint8_t *buf = malloc(8 * MIB);
    size_t got;

    snprintf(mnt, sizeof mnt, "%s/small-disk", dir);
    CHECK(buf != NULL && mkdir(mnt, 0755) == 0);
    /*
     * A small tmpfs is a disk that fills up for real. It is mounted in a
     * mount namespace of this test's own (inherited by the server it starts),
     * so nobody else ever sees it, even if the test dies half-way.
     */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=4m") != 0) {
        fprintf(stderr, "SKIPPED test_disk_full: cannot mount a 4 MiB tmpfs in a private mount namespace (%s); "
                        "needs root or CAP_SYS_ADMIN\n",
                strerror(errno));
        free(buf);
        return;
    }
    snprintf(root2, sizeof root2, "%s/root", mnt);
    fc_server_start(&small, root2, NULL);
    fc_fill(buf, 8 * MIB, 7);
    a = fc_open(small.port);
    b = fc_open(small.port);
    /* Announced bigger than the free space: refused before a byte is written. */
    fc_upload(a, "too-big", buf, 8 * MIB, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "no_space");
    fc_resp_free(&r);
    /* A starts while the space is there; B takes it; A then fills the disk halfway through. */
    CHECK(fc_send(a, json_pack("{s:s, s:I}", "filename", "loser", "total_size", (json_int_t)3 * MIB), NULL, 0) ==
          SG_OK);
    CHECK(wait_temps(root2, 1));
    fc_upload(b, "winner", buf, 3 * MIB, NULL, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    CHECK(sg_write_all(a->fd, buf, 3 * MIB, sg_now_ms() + 20000) == SG_OK);
    CHECK(fc_recv(a, &r, 4096) == SG_OK);
    CHECK_STR_EQ(fc_error(&r), "no_space");
    fc_resp_free(&r);
    CHECK_INT_EQ(fc_count_prefix(root2, ".upload-"), 0);
    CHECK_INT_EQ(fc_count_prefix(root2, "loser"), 0);
    /* The refused body was skipped: the connection still works, and the winner is whole. */
    fc_download(a, "winner", 0, -1, &r);
    CHECK(fc_error(&r) == NULL && r.len == 3 * MIB && memcmp(r.body, buf, r.len) == 0);
    fc_resp_free(&r);
    (void)got;
    fc_close(a);
    fc_close(b);
    fc_server_stop(&small);
    CHECK(umount2(mnt, MNT_DETACH) == 0);
    free(buf);
}

int main(void)
{
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s/root", dir);
    fc_server_start(&server, root, NULL);
    RUN_TEST(test_killed_client_leaves_no_trace);
    RUN_TEST(test_short_body_leaves_no_trace);
    RUN_TEST(test_wrong_checksum_leaves_no_trace);
    RUN_TEST(test_max_size);
    RUN_TEST(test_concurrent_uploads_never_mix);
    RUN_TEST(test_max_conns);
    RUN_TEST(test_stop_mid_upload);
    RUN_TEST(test_idle_connection_closed);
    RUN_TEST(test_slow_sender_is_not_idle);
    RUN_TEST(test_disk_full);
    fc_server_stop(&server);
    sg_test_rmtree(dir);
    return TESTS_DONE();
}
