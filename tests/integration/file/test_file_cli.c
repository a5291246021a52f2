/*
 * test_file_cli.c - sockgate-cli put, get, ls and rm against the real server,
 * and get against a lying server: exit statuses, one-line errors, and no file
 * (not even a temporary one) left behind by a failed or interrupted get.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fclient.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static char dir[256], root[300], work[300], addr[64];
static struct sg_proc server;

/* Returns the contents of path as a NUL-terminated string (empty when missing); free it. */
static char *slurp(const char *path)
{
    size_t len;
    char *text = (char *)fc_read_file(path, &len);
    if (!text)
        return strdup("");
    text[len] = '\0';
    return text;
}

/* Runs sockgate-cli with args (NULL-terminated); stdout and stderr land in work/out and work/err. */
static int cli(const char *const *args, char **out, char **err)
{
    const char *argv[16] = {"sockgate-cli"};
    char out_path[400], err_path[400];
    int n = 1, status;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(out_path, sizeof out_path, "%s/out", work);
    snprintf(err_path, sizeof err_path, "%s/err", work);
    status = fc_run(argv, out_path, err_path);
    if (out)
        *out = slurp(out_path);
    if (err)
        *err = slurp(err_path);
    return status;
}

/* Counts the temporary files get may leave next to its output in work. */
static int leftover_parts(void)
{
    /* Every entry starting with '.', less "." and "..". */
    return fc_count_prefix(work, ".") - 2;
}

static void test_put_get_ls_rm(void)
{
    char src[400], dst[400], sha[SG_SHA256_HEX], want_line[400], *out, *err;
    size_t len = 3 * 1024 * 1024 + 11, got_len;
    uint8_t *data = malloc(len), *got;
    json_t *arr;

    CHECK(data != NULL);
    fc_fill(data, len, 77);
    fc_sha256(data, len, sha);
    snprintf(src, sizeof src, "%s/photo.jpg", dir);
    fc_write_file(src, data, len);

    CHECK_INT_EQ(cli((const char *[]){"put", "--quiet", addr, src, NULL}, &out, &err), 0);
    snprintf(want_line, sizeof want_line, "%s  photo.jpg\n", sha);
    CHECK_STR_EQ(out, want_line);
    CHECK_STR_EQ(err, ""); /* no progress bar when stderr is not a terminal */
    free(out);
    free(err);
    CHECK_INT_EQ(cli((const char *[]){"put", addr, src, "copy of photo", NULL}, NULL, NULL), 0);

    /* get into a directory: OUT/NAME. */
    CHECK_INT_EQ(cli((const char *[]){"get", addr, "photo.jpg", work, NULL}, &out, NULL), 0);
    CHECK_STR_EQ(out, "");
    free(out);
    snprintf(dst, sizeof dst, "%s/photo.jpg", work);
    got = fc_read_file(dst, &got_len);
    CHECK(got && got_len == len && memcmp(got, data, len) == 0);
    free(got);
    /* get to an explicit path, then to stdout. */
    snprintf(dst, sizeof dst, "%s/renamed.bin", work);
    CHECK_INT_EQ(cli((const char *[]){"get", addr, "copy of photo", dst, NULL}, NULL, NULL), 0);
    got = fc_read_file(dst, &got_len);
    CHECK(got && got_len == len && memcmp(got, data, len) == 0);
    free(got);
    CHECK_INT_EQ(cli((const char *[]){"get", addr, "photo.jpg", "-", NULL}, &out, NULL), 0);
    free(out);
    {
        char path[400];
        snprintf(path, sizeof path, "%s/out", work);
        got = fc_read_file(path, &got_len);
        CHECK(got && got_len == len && memcmp(got, data, len) == 0);
        free(got);
    }
    CHECK_INT_EQ(leftover_parts(), 0);

    CHECK_INT_EQ(cli((const char *[]){"ls", addr, NULL}, &out, NULL), 0);
    CHECK(strstr(out, "photo.jpg\n") != NULL);
    CHECK(strstr(out, "copy of photo\n") != NULL);
    CHECK(strstr(out, sha) != NULL);
    CHECK(strstr(out, "3145739") != NULL);
    free(out);
    CHECK_INT_EQ(cli((const char *[]){"ls", "--json", addr, NULL}, &out, NULL), 0);
    arr = json_loads(out, 0, NULL);
    CHECK(json_is_array(arr) && json_array_size(arr) == 2);
    json_decref(arr);
    free(out);

    CHECK_INT_EQ(cli((const char *[]){"rm", addr, "copy of photo", NULL}, &out, NULL), 0);
    free(out);
    CHECK_INT_EQ(cli((const char *[]){"rm", addr, "copy of photo", NULL}, NULL, &err), 1);
    CHECK(strstr(err, "not_found") != NULL);
    CHECK(strchr(err, '\n') == err + strlen(err) - 1); /* one line */
    free(err);
    free(data);
}

static void test_get_ranges(void)
{
    char dst[400], *out;
    size_t got_len;
    uint8_t *got;
    const char text[] = "0123456789abcdefghij";
    char src[400];
    snprintf(src, sizeof src, "%s/digits", dir);
    fc_write_file(src, text, 20);
    CHECK_INT_EQ(cli((const char *[]){"put", addr, src, NULL}, NULL, NULL), 0);
    snprintf(dst, sizeof dst, "%s/part", work);
    CHECK_INT_EQ(cli((const char *[]){"get", "--offset", "5", "--length", "7", addr, "digits", dst, NULL}, NULL, NULL),
                 0);
    got = fc_read_file(dst, &got_len);
    CHECK(got && got_len == 7 && memcmp(got, "56789ab", 7) == 0);
    free(got);
    CHECK_INT_EQ(cli((const char *[]){"get", "--offset", "15", addr, "digits", "-", NULL}, &out, NULL), 0);
    CHECK_STR_EQ(out, "fghij");
    free(out);
    CHECK_INT_EQ(cli((const char *[]){"get", "--offset", "21", addr, "digits", dst, NULL}, NULL, NULL), 1);
    CHECK_INT_EQ(leftover_parts(), 0);
}

static void test_errors(void)
{
    char dst[400], src[400], *err;
    snprintf(dst, sizeof dst, "%s/never", work);
    CHECK_INT_EQ(cli((const char *[]){"get", addr, "no-such-file", dst, NULL}, NULL, &err), 1);
    CHECK(strstr(err, "not_found") != NULL);
    free(err);
    CHECK(!fc_exists(dst));
    CHECK_INT_EQ(leftover_parts(), 0);
    snprintf(src, sizeof src, "%s/digits", dir);
    CHECK_INT_EQ(cli((const char *[]){"put", addr, src, "../escape", NULL}, NULL, &err), 1);
    CHECK(strstr(err, "invalid_name") != NULL);
    free(err);
    CHECK_INT_EQ(cli((const char *[]){"put", addr, "/nonexistent/file", NULL}, NULL, &err), 1);
    CHECK(strstr(err, "No such file") != NULL);
    free(err);
    CHECK_INT_EQ(cli((const char *[]){"put", addr, dir, NULL}, NULL, &err), 1);
    CHECK(strstr(err, "not a regular file") != NULL);
    free(err);
    CHECK_INT_EQ(cli((const char *[]){"put", addr, NULL}, NULL, NULL), 2);
    CHECK_INT_EQ(cli((const char *[]){"get", "--offset", "x", addr, "a", NULL}, NULL, NULL), 2);
    CHECK_INT_EQ(cli((const char *[]){"ls", NULL}, NULL, NULL), 2);
    CHECK_INT_EQ(cli((const char *[]){"rm", addr, NULL}, NULL, NULL), 2);
    CHECK_INT_EQ(cli((const char *[]){"get", "--help", NULL}, NULL, NULL), 0);
    /* Nothing listens on port 1. */
    CHECK_INT_EQ(cli((const char *[]){"ls", "127.0.0.1:1", NULL}, NULL, &err), 1);
    CHECK(err[0] != '\0');
    free(err);
}

static void test_put_refused_early(void)
{
    /* The server answers too_large at once; put stops sending and prints why. */
    const char *flags[] = {"--max-size", "1K", NULL};
    char root2[400], src[400], addr2[64], *err;
    struct sg_proc small;
    size_t len = 20 * 1024 * 1024;
    uint8_t *data = calloc(1, len);
    CHECK(data != NULL);
    snprintf(root2, sizeof root2, "%s/root-small", dir);
    fc_server_start(&small, root2, flags);
    snprintf(addr2, sizeof addr2, "127.0.0.1:%u", (unsigned)small.port);
    snprintf(src, sizeof src, "%s/twenty-mib", dir);
    fc_write_file(src, data, len);
    CHECK_INT_EQ(cli((const char *[]){"put", addr2, src, NULL}, NULL, &err), 1);
    CHECK(strstr(err, "too_large") != NULL);
    free(err);
    snprintf(src, sizeof src, "%s/small-enough-to-skip", dir);
    fc_write_file(src, data, 100 * 1024);
    CHECK_INT_EQ(cli((const char *[]){"put", addr2, src, NULL}, NULL, &err), 1);
    CHECK(strstr(err, "too_large") != NULL);
    free(err);
    fc_server_stop(&small);
    free(data);
}

/* A fake file server: answers one download with a chosen header and body, then maybe stalls. */
struct liar {
    int listen_fd;
    uint16_t port;
    json_t *header;  /* sent as the reply (stolen) */
    const char *body;
    size_t body_len; /* bytes actually sent */
    int stall;       /* keep the connection open afterwards until the client leaves */
    size_t piece;    /* when set, the body goes out in pieces of this many bytes ... */
    int pace_ms;     /* ... one every pace_ms */
};

/* Sends the reply's header, then its body piece by piece at the liar's pace. */
static void send_paced(struct liar *l, int fd)
{
    sg_frame_send(fd, l->header, NULL, 0, sg_now_ms() + 10000);
    for (size_t off = 0; off < l->body_len; off += l->piece) {
        size_t n = l->body_len - off < l->piece ? l->body_len - off : l->piece;
        usleep((useconds_t)l->pace_ms * 1000u);
        if (sg_write_all(fd, l->body + off, n, sg_now_ms() + 10000) != SG_OK)
            return;
    }
}

static void *liar_main(void *arg)
{
    struct liar *l = arg;
    struct sg_frame_reader rd;
    enum sg_frame_event ev = SG_FRAME_NEED_MORE;
    const uint8_t *chunk;
    size_t len;
    int fd = accept(l->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    sg_frame_reader_init(&rd, fd, 0);
    while (ev != SG_FRAME_END && sg_frame_reader_next(&rd, &ev, &chunk, &len, sg_now_ms() + 10000) == SG_OK)
        ;
    if (l->piece)
        send_paced(l, fd);
    else
        sg_frame_send(fd, l->header, l->body, l->body_len, sg_now_ms() + 10000);
    if (l->stall) {
        char b;
        size_t got;
        sg_read_some(fd, &b, 1, &got, sg_now_ms() + 20000);
    }
    sg_frame_reader_free(&rd);
    json_decref(l->header);
    close(fd);
    return NULL;
}

static void liar_start(struct liar *l, pthread_t *t)
{
    struct sg_addr a;
    char err[256];
    CHECK(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err) == SG_OK);
    CHECK(sg_listen(&a, SOCK_STREAM, &l->listen_fd, err, sizeof err) == SG_OK);
    CHECK(sg_set_nonblock(l->listen_fd, 0) == SG_OK);
    l->port = sg_local_port(l->listen_fd);
    CHECK(pthread_create(t, NULL, liar_main, l) == 0);
}

static void liar_finish(struct liar *l, pthread_t t)
{
    pthread_join(t, NULL);
    close(l->listen_fd);
}

static void test_get_refuses_wrong_hash(void)
{
    struct liar l = {.body = "tampered!", .body_len = 9};
    char laddr[64], dst[400], *err;
    pthread_t t;
    l.header = json_pack("{s:s, s:i, s:i, s:i, s:s, s:i}", "name", "x", "total_size", 9, "size", 9, "offset", 0,
                         "sha256", "0000000000000000000000000000000000000000000000000000000000000000", "mtime_ms", 1000);
    liar_start(&l, &t);
    snprintf(laddr, sizeof laddr, "127.0.0.1:%u", (unsigned)l.port);
    snprintf(dst, sizeof dst, "%s/lied-to", work);
    CHECK_INT_EQ(cli((const char *[]){"get", laddr, "x", dst, NULL}, NULL, &err), 1);
    CHECK(strstr(err, "sha256 mismatch") != NULL);
    free(err);
    liar_finish(&l, t);
    CHECK(!fc_exists(dst));
    CHECK_INT_EQ(leftover_parts(), 0);

    /* A body cut short: no file either. */
    l = (struct liar){.body = "only part", .body_len = 9};
    l.header = json_pack("{s:s, s:i, s:i, s:i, s:s, s:i}", "name", "x", "total_size", 100, "size", 100, "offset", 0,
                         "sha256", "0000000000000000000000000000000000000000000000000000000000000000", "mtime_ms", 1000);
    /* sg_frame_send sends body_len bytes although the header promises 100: the liar then closes. */
    liar_start(&l, &t);
    snprintf(laddr, sizeof laddr, "127.0.0.1:%u", (unsigned)l.port);
    CHECK_INT_EQ(cli((const char *[]){"get", laddr, "x", dst, NULL}, NULL, NULL), 1);
    liar_finish(&l, t);
    CHECK(!fc_exists(dst));
    CHECK_INT_EQ(leftover_parts(), 0);
}

/*
 * The same two lies over a body of several MiB, so the download is cut (or
 * found wrong) with buffers still queued for the hashing thread: get must stop
 * it, exit 1 and leave neither OUT nor a temporary file.
 */
/* A download answer's header promising size bytes of a whole file whose sha256 is all zeros (a lie). */
static json_t *zero_sha_header(json_int_t size)
{
    return json_pack("{s:s, s:I, s:I, s:i, s:s, s:i}", "name", "x", "total_size", size, "size", size, "offset", 0,
                     "sha256", "0000000000000000000000000000000000000000000000000000000000000000", "mtime_ms", 1000);
}

/* Runs get against a liar sending body (len bytes) under a header promising size; checks the failure leaves nothing. */
static void get_from_liar(const char *body, size_t len, json_int_t size, const char *dst, const char *want_error)
{
    struct liar l = {.body = body, .body_len = len};
    char laddr[64], *err;
    pthread_t t;
    l.header = zero_sha_header(size);
    liar_start(&l, &t);
    snprintf(laddr, sizeof laddr, "127.0.0.1:%u", (unsigned)l.port);
    CHECK_INT_EQ(cli((const char *[]){"get", laddr, "x", dst, NULL}, NULL, &err), 1);
    CHECK(strstr(err, want_error) != NULL);
    free(err);
    liar_finish(&l, t);
    CHECK(!fc_exists(dst));
    CHECK_INT_EQ(leftover_parts(), 0);
}

static void test_get_big_lies_leave_nothing(void)
{
    size_t len = 5 * 1024 * 1024 + 3;
    char *data = malloc(len), dst[400];
    CHECK(data != NULL);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)(i * 131u + 7u);
    snprintf(dst, sizeof dst, "%s/big-lie", work);

    /* Whole body, wrong sha256. */
    get_from_liar(data, len, (json_int_t)len, dst, "sha256 mismatch");
    /* 5 MiB sent of the 12 MiB promised, then the connection closes. */
    get_from_liar(data, len, (json_int_t)(12 << 20), dst, "closed the connection in the middle of the file");
    free(data);
}

/*
 * A server slower than get's low-water mark (32 KiB every 200 ms: 512 KiB
 * would take 3.2 s) but never silent for long is not timed out by a 3 s
 * --timeout: get waits at most 1 s for a full batch, then takes what came.
 */
static void test_get_slow_server(void)
{
    size_t len = 640 * 1024;
    char *data = malloc(len), laddr[64], dst[400], sha[SG_SHA256_HEX];
    struct liar l = {.body_len = len, .piece = 32 * 1024, .pace_ms = 200};
    uint8_t *back;
    size_t back_len;
    pthread_t t;
    CHECK(data != NULL);
    fc_fill((uint8_t *)data, len, 41);
    fc_sha256(data, len, sha);
    l.body = data;
    l.header = json_pack("{s:s, s:I, s:I, s:i, s:s, s:i}", "name", "x", "total_size", (json_int_t)len, "size",
                         (json_int_t)len, "offset", 0, "sha256", sha, "mtime_ms", 1000);
    liar_start(&l, &t);
    snprintf(laddr, sizeof laddr, "127.0.0.1:%u", (unsigned)l.port);
    snprintf(dst, sizeof dst, "%s/slow", work);
    CHECK_INT_EQ(cli((const char *[]){"get", "--timeout", "3000", laddr, "x", dst, NULL}, NULL, NULL), 0);
    liar_finish(&l, t);
    back = fc_read_file(dst, &back_len);
    CHECK_INT_EQ(back_len, len);
    CHECK(memcmp(back, data, len) == 0);
    free(back);
    unlink(dst);
    free(data);
}

static void test_get_interrupted_leaves_nothing(void)
{
    struct liar l = {.body = "first bytes of many", .body_len = 19, .stall = 1};
    char laddr[64], dst[400], bin[512];
    int64_t until;
    pthread_t t;
    pid_t pid;
    int status;
    l.header = json_pack("{s:s, s:i, s:i, s:i, s:s, s:i}", "name", "x", "total_size", 1000000, "size", 1000000,
                         "offset", 0, "sha256", "00", "mtime_ms", 1000);
    liar_start(&l, &t);
    snprintf(laddr, sizeof laddr, "127.0.0.1:%u", (unsigned)l.port);
    snprintf(dst, sizeof dst, "%s/interrupted", work);
    sg_test_bin("sockgate-cli", bin, sizeof bin);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execl(bin, "sockgate-cli", "get", laddr, "x", dst, (char *)NULL);
        _exit(127);
    }
    /* Wait until the temporary file exists: the download is under way. */
    until = sg_now_ms() + 10000;
    while (leftover_parts() == 0 && sg_now_ms() < until)
        usleep(10 * 1000);
    CHECK_INT_EQ(leftover_parts(), 1);
    kill(pid, SIGINT);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGINT);
    CHECK_INT_EQ(leftover_parts(), 0);
    CHECK(!fc_exists(dst));
    liar_finish(&l, t);
}

int main(void)
{
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s/root", dir);
    snprintf(work, sizeof work, "%s/work", dir);
    CHECK(mkdir(work, 0755) == 0);
    fc_server_start(&server, root, NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)server.port);
    RUN_TEST(test_put_get_ls_rm);
    RUN_TEST(test_get_ranges);
    RUN_TEST(test_errors);
    RUN_TEST(test_put_refused_early);
    RUN_TEST(test_get_refuses_wrong_hash);
    RUN_TEST(test_get_big_lies_leave_nothing);
    RUN_TEST(test_get_slow_server);
    RUN_TEST(test_get_interrupted_leaves_nothing);
    fc_server_stop(&server);
    sg_test_rmtree(dir);
    return TESTS_DONE();
}
