/*
 * test_file_roundtrip.c - sockgate-file end to end with real sockets: the
 * tutorial's own upload client, round trips of 0 B, 1 B and 10 MiB, byte
 * ranges, list/stat/delete, pipelined requests, ids, the sha256 cache, and
 * start-up clean-up.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fclient.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static char dir[256], root[300];
static struct sg_proc server;

/* Waits up to 10 s for name to be served (the tutorial's client never reads a reply to know). */
static void wait_for_file(const char *name, struct fc_resp *r)
{
    int64_t until = sg_now_ms() + 10000;
    for (;;) {
        struct fc_conn *c = fc_open(server.port);
        fc_request(c, json_pack("{s:s, s:s}", "op", "stat", "filename", name), NULL, 0, r);
        fc_close(c);
        if (!fc_error(r) || sg_now_ms() > until)
            return;
        fc_resp_free(r);
        usleep(20 * 1000);
    }
}

static void tutorial_upload(size_t size, uint64_t seed)
{
    char src_dir[300], src[400], script[512], port[16], want[SG_SHA256_HEX], stored_path[400];
    const char *srcdir_env = getenv("SOCKGATE_SOURCE_DIR");
    uint8_t *data = malloc(size ? size : 1), *stored;
    size_t stored_len;
    struct fc_resp r;

    CHECK(data && srcdir_env);
    fc_fill(data, size, seed);
    fc_sha256(data, size, want);
    snprintf(src_dir, sizeof src_dir, "%s/src", dir);
    mkdir(src_dir, 0755);
    snprintf(src, sizeof src, "%s/config-%zu", src_dir, size);
    fc_write_file(src, data, size);
    snprintf(script, sizeof script, "%s/tests/integration/file/tutorial_upload.py", srcdir_env);
    snprintf(port, sizeof port, "%u", (unsigned)server.port);
    {
        const char *argv[] = {"python3", script, port, src, NULL};
        CHECK_INT_EQ(fc_run(argv, NULL, NULL), 0);
    }
    wait_for_file(strrchr(src, '/') + 1, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "size"), size);
    CHECK_STR_EQ(fc_str(&r, "sha256"), want);
    fc_resp_free(&r);
    /* The bytes on disk are the bytes sent, and no temporary file is left. */
    snprintf(stored_path, sizeof stored_path, "%s/%s", root, strrchr(src, '/') + 1);
    stored = fc_read_file(stored_path, &stored_len);
    CHECK(stored != NULL);
    CHECK_INT_EQ(stored_len, size);
    CHECK(memcmp(stored, data, size) == 0);
    CHECK_INT_EQ(fc_count_prefix(root, ".upload-"), 0);
    free(stored);
    free(data);
}

static void test_tutorial_upload(void)
{
    tutorial_upload(100 * 1024 + 37, 1); /* not a multiple of the tutorial's 1024-byte pieces */
    tutorial_upload(3 * 1024 * 1024 + 5, 2);
    tutorial_upload(1024, 3);
}

/* Uploads size bytes, downloads them back over a second connection, and compares everything. */
static void roundtrip(size_t size, uint64_t seed)
{
    struct fc_conn *up = fc_open(server.port), *down = fc_open(server.port);
    uint8_t *data = malloc(size ? size : 1);
    char name[64], want[SG_SHA256_HEX];
    struct fc_resp r;

    CHECK(data != NULL);
    fc_fill(data, size, seed);
    fc_sha256(data, size, want);
    snprintf(name, sizeof name, "round-%zu.bin", size);
    fc_upload(up, name, data, size, NULL, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_STR_EQ(fc_str(&r, "name"), name);
    CHECK_INT_EQ(fc_int(&r, "size"), size);
    CHECK_STR_EQ(fc_str(&r, "sha256"), want);
    fc_resp_free(&r);

    fc_download(down, name, 0, -1, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_STR_EQ(fc_str(&r, "name"), name);
    CHECK_INT_EQ(fc_int(&r, "total_size"), size);
    CHECK_INT_EQ(fc_int(&r, "size"), size);
    CHECK_INT_EQ(fc_int(&r, "offset"), 0);
    CHECK(fc_int(&r, "mtime_ms") > 1000000000000LL);
    CHECK_STR_EQ(fc_str(&r, "sha256"), want);
    CHECK_INT_EQ(r.len, size);
    CHECK_STR_EQ(r.sha256, want);
    CHECK(memcmp(r.body, data, size) == 0);
    fc_resp_free(&r);
    fc_close(up);
    fc_close(down);
    free(data);
}

static void test_roundtrip_sizes(void)
{
    roundtrip(0, 10);
    roundtrip(1, 11);
    roundtrip(10 * 1024 * 1024, 12);
}

static void expect_range(struct fc_conn *c, const uint8_t *data, size_t size, int64_t off, int64_t len,
                         size_t want_count)
{
    struct fc_resp r;
    char whole[SG_SHA256_HEX];
    fc_sha256(data, size, whole);
    fc_download(c, "ranged", off, len, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "total_size"), want_count);
    CHECK_INT_EQ(fc_int(&r, "size"), size);
    CHECK_INT_EQ(fc_int(&r, "offset"), off);
    CHECK_STR_EQ(fc_str(&r, "sha256"), whole); /* always the whole file's */
    CHECK_INT_EQ(r.len, want_count);
    CHECK(want_count == 0 || memcmp(r.body, data + off, want_count) == 0);
    fc_resp_free(&r);
}

static void expect_range_error(struct fc_conn *c, json_t *req, const char *code)
{
    struct fc_resp r;
    fc_request(c, req, NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), code);
    fc_resp_free(&r);
}

static void test_ranges(void)
{
    size_t size = 1024 * 1024 + 3;
    uint8_t *data = malloc(size);
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;

    CHECK(data != NULL);
    fc_fill(data, size, 20);
    fc_upload(c, "ranged", data, size, NULL, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    expect_range(c, data, size, 0, 10, 10);
    expect_range(c, data, size, 1000, 5000, 5000);
    expect_range(c, data, size, 65535, 65538, 65538); /* across the server's buffer sizes */
    expect_range(c, data, size, (int64_t)size - 1, 1, 1);
    expect_range(c, data, size, (int64_t)size, -1, 0);          /* at the end: empty */
    expect_range(c, data, size, 7, 0, 0);                       /* zero length */
    expect_range(c, data, size, 500000, 10000000, size - 500000); /* cut at the end */
    expect_range(c, data, size, 123456, -1, size - 123456);     /* offset to the end */
    /* Past the end, negative, or not integers: refused, and the connection goes on. */
    expect_range_error(c, json_pack("{s:s, s:s, s:I}", "op", "download", "filename", "ranged", "offset",
                                    (json_int_t)size + 1), "invalid_request");
    expect_range_error(c, json_pack("{s:s, s:s, s:i}", "op", "download", "filename", "ranged", "offset", -1),
                       "invalid_request");
    expect_range_error(c, json_pack("{s:s, s:s, s:i}", "op", "download", "filename", "ranged", "length", -5),
                       "invalid_request");
    expect_range_error(c, json_pack("{s:s, s:s, s:s}", "op", "download", "filename", "ranged", "offset", "10"),
                       "invalid_request");
    expect_range(c, data, size, 1, 2, 2);
    fc_close(c);
    free(data);
}

static void test_list_stat_delete(void)
{
    struct fc_conn *c = fc_open(server.port);
    const char *names[] = {"zeta.txt", "alpha.txt", "mid dle.txt"};
    char shas[3][SG_SHA256_HEX], meta_path[400];
    struct fc_resp r;
    json_t *arr, *e;
    size_t i;

    for (i = 0; i < 3; i++) {
        char text[32];
        snprintf(text, sizeof text, "content %zu", i * 1000);
        fc_sha256(text, strlen(text), shas[i]);
        fc_upload(c, names[i], text, strlen(text), NULL, &r);
        CHECK(fc_error(&r) == NULL);
        fc_resp_free(&r);
    }
    fc_request(c, json_pack("{s:s}", "op", "list"), NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "total_size"), r.len);
    arr = json_loadb((const char *)r.body, r.len, 0, NULL);
    CHECK(json_is_array(arr));
    CHECK_INT_EQ(fc_int(&r, "count"), json_array_size(arr));
    /* Sorted by name; every earlier test's files are there too. */
    for (i = 1; i < json_array_size(arr); i++)
        CHECK(strcmp(json_string_value(json_object_get(json_array_get(arr, i - 1), "name")),
                     json_string_value(json_object_get(json_array_get(arr, i), "name"))) < 0);
    for (int k = 0; k < 3; k++) {
        int found = 0;
        json_array_foreach(arr, i, e)
        {
            if (strcmp(json_string_value(json_object_get(e, "name")), names[k]) != 0)
                continue;
            found = 1;
            CHECK_STR_EQ(json_string_value(json_object_get(e, "sha256")), shas[k]);
            CHECK(json_integer_value(json_object_get(e, "size")) > 0);
            CHECK(json_integer_value(json_object_get(e, "mtime_ms")) > 1000000000000LL);
        }
        CHECK(found);
    }
    json_decref(arr);
    fc_resp_free(&r);

    fc_request(c, json_pack("{s:s, s:s}", "op", "stat", "filename", "alpha.txt"), NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_STR_EQ(fc_str(&r, "name"), "alpha.txt");
    CHECK_STR_EQ(fc_str(&r, "sha256"), shas[1]);
    CHECK_INT_EQ(fc_int(&r, "size"), strlen("content 1000"));
    CHECK(fc_int(&r, "mtime_ms") > 1000000000000LL);
    fc_resp_free(&r);

    fc_request(c, json_pack("{s:s, s:s}", "op", "delete", "filename", "alpha.txt"), NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_STR_EQ(fc_str(&r, "name"), "alpha.txt");
    CHECK(json_is_true(json_object_get(r.h, "deleted")));
    fc_resp_free(&r);
    snprintf(meta_path, sizeof meta_path, "%s/alpha.txt", root);
    CHECK(!fc_exists(meta_path));
    snprintf(meta_path, sizeof meta_path, "%s/.meta/alpha.txt", root);
    CHECK(!fc_exists(meta_path));
    fc_request(c, json_pack("{s:s, s:s}", "op", "delete", "filename", "alpha.txt"), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    fc_request(c, json_pack("{s:s, s:s}", "op", "stat", "filename", "alpha.txt"), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    fc_download(c, "alpha.txt", 0, -1, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    fc_close(c);
}

/* Appends the encoded frame of header (stolen) to buf at *len. */
static void append_frame(uint8_t *buf, size_t *len, json_t *header)
{
    uint8_t *enc;
    size_t n;
    CHECK(sg_frame_encode_header(header, 0, &enc, &n) == SG_OK);
    memcpy(buf + *len, enc, n);
    *len += n;
    free(enc);
    json_decref(header);
}

static void test_pipelining_and_ids(void)
{
    struct fc_conn *c = fc_open(server.port);
    uint8_t buf[4096];
    size_t len = 0;
    struct fc_resp r;

    /* Three requests in one write: answered in order, each with its own id. */
    append_frame(buf, &len, json_pack("{s:s, s:s, s:s, s:i}", "op", "upload", "filename", "piped", "id", "a-1",
                                      "total_size", 5));
    memcpy(buf + len, "hello", 5);
    len += 5;
    append_frame(buf, &len, json_pack("{s:s, s:s, s:i}", "op", "download", "filename", "piped", "id", 42));
    append_frame(buf, &len, json_pack("{s:s, s:s}", "op", "stat", "filename", "missing"));
    CHECK(sg_write_all(c->fd, buf, len, sg_now_ms() + 5000) == SG_OK);
    CHECK(fc_recv(c, &r, 1 << 20) == SG_OK);
    CHECK(fc_error(&r) == NULL);
    CHECK_STR_EQ(fc_str(&r, "id"), "a-1");
    fc_resp_free(&r);
    CHECK(fc_recv(c, &r, 1 << 20) == SG_OK);
    CHECK_INT_EQ(fc_int(&r, "id"), 42);
    CHECK_INT_EQ(r.len, 5);
    CHECK(memcmp(r.body, "hello", 5) == 0);
    fc_resp_free(&r);
    CHECK(fc_recv(c, &r, 1 << 20) == SG_OK);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    CHECK(json_object_get(r.h, "id") == NULL);
    fc_resp_free(&r);
    fc_close(c);
}

/*
 * A body over 1 MiB is read straight from the socket in big blocks and hashed
 * on a helper thread (with md5 too, here): the requests written right behind
 * it in the same stream must still be read whole and answered in order.
 */
static void test_pipelined_after_big_upload(void)
{
    const size_t size = 3 * 1024 * 1024 + 7;
    struct fc_conn *c = fc_open(server.port);
    uint8_t *buf = malloc(2 * size + 4096), *data = malloc(size);
    char sha[SG_SHA256_HEX];
    size_t len = 0;
    struct fc_resp r;

    CHECK(buf != NULL && data != NULL);
    fc_fill(data, size, 77);
    fc_sha256(data, size, sha);
    append_frame(buf, &len, json_pack("{s:s, s:s, s:I, s:s}", "op", "upload", "filename", "big-piped", "total_size",
                                      (json_int_t)size, "md5", "0123456789abcdef0123456789abcdef"));
    memcpy(buf + len, data, size);
    len += size;
    append_frame(buf, &len, json_pack("{s:s, s:s, s:I, s:s}", "op", "upload", "filename", "big-piped", "total_size",
                                      (json_int_t)size, "sha256", sha));
    memcpy(buf + len, data, size);
    len += size - 1; /* the last byte goes with the download request below, in one write */
    CHECK(sg_write_all(c->fd, buf, len, sg_now_ms() + 30000) == SG_OK);
    len = 0;
    buf[len++] = data[size - 1];
    append_frame(buf, &len, json_pack("{s:s, s:s, s:i}", "op", "download", "filename", "big-piped", "id", 7));
    CHECK(sg_write_all(c->fd, buf, len, sg_now_ms() + 5000) == SG_OK);
    /* The first upload's md5 is wrong: refused after the whole body, the stream still in step. */
    CHECK(fc_recv(c, &r, 0) == SG_OK);
    CHECK_STR_EQ(fc_error(&r), "checksum_mismatch");
    fc_resp_free(&r);
    CHECK(fc_recv(c, &r, 0) == SG_OK);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "size"), (int64_t)size);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    fc_resp_free(&r);
    CHECK(fc_recv(c, &r, size) == SG_OK);
    CHECK_INT_EQ(fc_int(&r, "id"), 7);
    CHECK_INT_EQ(r.len, size);
    CHECK(r.body && memcmp(r.body, data, size) == 0);
    fc_resp_free(&r);
    fc_close(c);
    free(buf);
    free(data);
}

static void test_checksums_accepted(void)
{
    struct fc_conn *c = fc_open(server.port);
    char sha[SG_SHA256_HEX];
    struct fc_resp r;
    fc_sha256("payload", 7, sha);
    /* md5("payload") = 321c3cf486ed509164edec1e1981fec8; upper case is accepted too. */
    fc_upload(c, "checked", "payload", 7,
              json_pack("{s:s, s:s}", "md5", "321C3CF486ED509164EDEC1E1981FEC8", "sha256", sha), &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_STR_EQ(fc_str(&r, "md5"), "321c3cf486ed509164edec1e1981fec8");
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    fc_resp_free(&r);
    /* Without md5 asked, none is computed or sent. */
    fc_upload(c, "checked", "payload", 7, NULL, &r);
    CHECK(json_object_get(r.h, "md5") == NULL);
    fc_resp_free(&r);
    fc_close(c);
}

/* Files changed behind the server's back get their sha256 computed again, not served stale. */
/*
 * The sha256 cache. A file changed less than 2 s before it was hashed gets no
 * record: on kernels whose timestamps only move once per clock tick, a change
 * right after the hash could look like no change at all. Once the file is
 * older its hash is cached, and a later change is seen even when the size and
 * mtime stay as they were: the inode's ctime tells.
 */
static void test_cache(void)
{
    struct fc_conn *c = fc_open(server.port);
    char path[400], record[400], sha[SG_SHA256_HEX];
    struct timespec keep[2];
    struct stat sb;
    struct fc_resp r;

    snprintf(path, sizeof path, "%s/outside-made", root);
    snprintf(record, sizeof record, "%s/.meta/outside-made", root);
    fc_write_file(path, "first version", 13);
    fc_sha256("first version", 13, sha);
    fc_request(c, json_pack("{s:s, s:s}", "op", "stat", "filename", "outside-made"), NULL, 0, &r);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    fc_resp_free(&r);
    CHECK(!fc_exists(record));
    usleep(2200 * 1000); /* older than the 2 s window now: an age, not a timing assertion */
    fc_request(c, json_pack("{s:s, s:s}", "op", "stat", "filename", "outside-made"), NULL, 0, &r);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    fc_resp_free(&r);
    CHECK(fc_exists(record));

    /* Same size, and the mtime put back: only the inode's ctime tells. */
    CHECK(stat(path, &sb) == 0);
    keep[0] = sb.st_atim;
    keep[1] = sb.st_mtim;
    {
        int fd = open(path, O_WRONLY);
        CHECK(fd >= 0);
        CHECK(pwrite(fd, "FIRST", 5, 0) == 5);
        close(fd);
    }
    CHECK(utimensat(AT_FDCWD, path, keep, 0) == 0);
    fc_sha256("FIRST version", 13, sha);
    fc_request(c, json_pack("{s:s, s:s}", "op", "stat", "filename", "outside-made"), NULL, 0, &r);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    fc_resp_free(&r);
    fc_download(c, "outside-made", 0, -1, &r);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    CHECK_STR_EQ(r.sha256, sha);
    fc_resp_free(&r);
    fc_close(c);
}

static void test_bad_requests(void)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    uint8_t junk[64];
    size_t got;

    fc_request(c, json_pack("{s:s}", "op", "rename"), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    fc_request(c, json_pack("{s:i}", "op", 3), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    /* An upload without filename: refused, its body skipped, the connection still in step. */
    fc_request(c, json_pack("{s:s, s:i}", "op", "upload", "total_size", 4), "abcd", 4, &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    fc_request(c, json_pack("{s:s, s:i}", "op", "stat", "filename", 7), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    fc_upload(c, "bad-sum", "x", 1, json_pack("{s:s}", "sha256", "not-hex"), &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    fc_request(c, json_pack("{s:s}", "op", "list"), NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    fc_close(c);
    /* Bytes that are not a frame: protocol_error, then the server closes. */
    c = fc_open(server.port);
    CHECK(sg_write_all(c->fd, "GET / HTTP/1.0\r\n\r\n", 18, sg_now_ms() + 5000) == SG_OK);
    CHECK(fc_recv(c, &r, 4096) == SG_OK);
    CHECK_STR_EQ(fc_error(&r), "protocol_error");
    fc_resp_free(&r);
    CHECK(sg_read_some(c->fd, junk, sizeof junk, &got, sg_now_ms() + 5000) == SG_ERR_CLOSED);
    fc_close(c);
}

static void test_leftovers_removed_at_start(void)
{
    char path[400];
    fc_server_stop(&server);
    snprintf(path, sizeof path, "%s/.upload-00000000deadbeef", root);
    fc_write_file(path, "half an upload", 14);
    snprintf(path, sizeof path, "%s/.meta/.tmp-record", root);
    fc_write_file(path, "v1 half", 7);
    snprintf(path, sizeof path, "%s/.meta/ghost", root);
    fc_write_file(path, "v1 record of a file that is gone", 32);
    snprintf(path, sizeof path, "%s/.keep", root);
    fc_write_file(path, "", 0);
    fc_server_start(&server, root, NULL);
    snprintf(path, sizeof path, "%s/.upload-00000000deadbeef", root);
    CHECK(!fc_exists(path));
    snprintf(path, sizeof path, "%s/.meta/.tmp-record", root);
    CHECK(!fc_exists(path));
    snprintf(path, sizeof path, "%s/.meta/ghost", root);
    CHECK(!fc_exists(path));
    snprintf(path, sizeof path, "%s/.keep", root); /* not ours: left alone */
    CHECK(fc_exists(path));
    snprintf(path, sizeof path, "%s/round-1.bin", root); /* stored files survive restarts */
    CHECK(fc_exists(path));
}

static void test_root_in_use(void)
{
    /* A second server on the same root is refused: its start-up clean-up would eat live uploads. */
    const char *argv[] = {"sockgate-file", "--listen", "127.0.0.1:0", "--root", root, NULL};
    char err_path[400];
    size_t len;
    char *text;
    snprintf(err_path, sizeof err_path, "%s/second.err", dir);
    CHECK_INT_EQ(fc_run(argv, NULL, err_path), 1);
    text = (char *)fc_read_file(err_path, &len);
    CHECK(text != NULL);
    text[len] = '\0';
    CHECK(strstr(text, "in use") != NULL);
    free(text);
}

int main(void)
{
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s/root", dir);
    fc_server_start(&server, root, NULL);
    RUN_TEST(test_tutorial_upload);
    RUN_TEST(test_roundtrip_sizes);
    RUN_TEST(test_ranges);
    RUN_TEST(test_list_stat_delete);
    RUN_TEST(test_pipelining_and_ids);
    RUN_TEST(test_pipelined_after_big_upload);
    RUN_TEST(test_checksums_accepted);
    RUN_TEST(test_cache);
    RUN_TEST(test_bad_requests);
    RUN_TEST(test_leftovers_removed_at_start);
    RUN_TEST(test_root_in_use);
    fc_server_stop(&server);
    sg_test_rmtree(dir);
    return TESTS_DONE();
}
