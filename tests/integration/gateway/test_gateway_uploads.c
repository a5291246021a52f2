/*
 * test_gateway_uploads.c - tus 1.0 at /api/v1/uploads/ through the real gateway and its embedded file
 * backend, with libcurl and raw sockets: every route and status, a PATCH cut mid-body keeping its bytes,
 * 423 on concurrent PATCHes, 460, expiry, and that nothing unfinished is ever listed or downloadable.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "check.h"
#include "gwtest.h"

#define TUS "Tus-Resumable: 1.0.0"
#define OCTETS "Content-Type: application/offset+octet-stream"

static struct gw g;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* "filename <base64 of name>" plus extra pairs (may be ""). */
static void metadata_of(const char *name, const char *extra, char *out, size_t outlen)
{
    unsigned char b64[1024];
    EVP_EncodeBlock(b64, (const unsigned char *)name, (int)strlen(name));
    snprintf(out, outlen, "Upload-Metadata: filename %s%s", b64, extra);
}

/* Creates an upload of name (length < 0: deferred); returns its path (new string) after checking the 201. */
static char *create(struct gw *to, const char *name, long long length, const char *const more[])
{
    char meta[1200], len[64], url[300];
    const char *headers[12] = {TUS, meta, len, NULL};
    size_t n = 3;
    struct http_resp *r;
    char *loc, *path;
    metadata_of(name, "", meta, sizeof meta);
    if (length < 0)
        snprintf(len, sizeof len, "Upload-Defer-Length: 1");
    else
        snprintf(len, sizeof len, "Upload-Length: %lld", length);
    for (size_t i = 0; more && more[i] && n < 10; i++)
        headers[n++] = more[i];
    headers[n] = NULL;
    snprintf(url, sizeof url, "%s/api/v1/uploads/", to->base);
    r = http_do("POST", url, headers, NULL, 0);
    if (r->status != 201)
        fprintf(stderr, "create %s: %ld %s\n", name, r->status, r->body);
    CHECK_INT_EQ(r->status, 201);
    check_header(r, "Tus-Resumable", "1.0.0");
    check_header(r, "Upload-Offset", "0");
    loc = http_header(r, "Location");
    CHECK(loc && strncmp(loc, "/api/v1/uploads/", 16) == 0 && strlen(loc) == 16 + 32);
    path = strdup(loc);
    free(loc);
    http_free(r);
    return path;
}

/* PATCHes len bytes at offset to path with extra headers (NULL-terminated, may be NULL); returns the answer. */
static struct http_resp *patch(struct gw *to, const char *path, unsigned long long offset, const void *data,
                               size_t len, const char *const more[])
{
    char off[64], url[300];
    const char *headers[12] = {TUS, OCTETS, off, "Expect:", NULL};
    size_t n = 4;
    snprintf(off, sizeof off, "Upload-Offset: %llu", offset);
    for (size_t i = 0; more && more[i] && n < 10; i++)
        headers[n++] = more[i];
    headers[n] = NULL;
    snprintf(url, sizeof url, "%s%s", to->base, path);
    /* libcurl sends no body for an empty POSTFIELDS given as NULL: an empty string keeps Content-Length: 0. */
    return http_do("PATCH", url, headers, data ? data : "", len);
}

/* HEADs path; returns the status and the offset (-1 when absent). */
static long head(struct gw *to, const char *path, long long *offset)
{
    const char *headers[] = {TUS, NULL};
    char url[300];
    struct http_resp *r;
    char *v;
    long status;
    snprintf(url, sizeof url, "%s%s", to->base, path);
    r = http_do("HEAD", url, headers, NULL, 0);
    check_header(r, "Tus-Resumable", "1.0.0");
    v = http_header(r, "Upload-Offset");
    *offset = v ? atoll(v) : -1;
    free(v);
    status = r->status;
    http_free(r);
    return status;
}

/* Returns 1 when the file listing names name. */
static int is_listed(struct gw *to, const char *name)
{
    struct http_resp *r = gw_do(to, "GET", "/api/v1/files", NULL, NULL);
    json_t *j = http_ok_json(r, 200), *files = json_object_get(j, "files"), *f;
    size_t i;
    int found = 0;
    CHECK(json_is_array(files));
    json_array_foreach(files, i, f) found |= strcmp(json_string_value(json_object_get(f, "name")), name) == 0;
    json_decref(j);
    http_free(r);
    return found;
}

/* Checks that name is stored with exactly data[0..len): GET's bytes and the ETag's sha256. */
static void check_stored(struct gw *to, const char *name, const void *data, size_t len)
{
    char path[300], want[65], etag[70];
    struct http_resp *r;
    snprintf(path, sizeof path, "/api/v1/files/%s", name);
    r = gw_do(to, "GET", path, NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_INT_EQ(r->len, len);
    CHECK(memcmp(r->body, data, len) == 0);
    sha256_hex(data, len, want);
    snprintf(etag, sizeof etag, "\"%s\"", want);
    check_header(r, "ETag", etag);
    http_free(r);
}

/* Checks that name is neither listed nor downloadable (an upload still unfinished). */
static void check_invisible(struct gw *to, const char *name)
{
    char path[300];
    struct http_resp *r;
    snprintf(path, sizeof path, "/api/v1/files/%s", name);
    CHECK(!is_listed(to, name));
    r = gw_do(to, "GET", path, NULL, NULL);
    check_error(r, 404, "not_found");
    http_free(r);
    r = gw_do(to, "HEAD", path, NULL, NULL);
    CHECK_INT_EQ(r->status, 404);
    http_free(r);
}

/* Counts the entries of the file root's hidden session directory (the unfinished uploads' storage). */
static int session_files(struct gw *to)
{
    char dir[400];
    struct dirent *e;
    DIR *d;
    int n = 0;
    snprintf(dir, sizeof dir, "%s/files/.sessions", to->dir);
    d = opendir(dir);
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_options(void)
{
    char url[300];
    struct http_resp *r;
    char *v;
    snprintf(url, sizeof url, "%s/api/v1/uploads/", g.base);
    r = http_do("OPTIONS", url, NULL, NULL, 0); /* discovery needs no Tus-Resumable and no token */
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Tus-Version", "1.0.0");
    check_header(r, "Tus-Extension",
                 "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration");
    check_header(r, "Tus-Max-Size", "67108864"); /* --max-upload 64M */
    check_header(r, "Tus-Checksum-Algorithm", "sha1,sha256,md5");
    v = http_header(r, "Tus-Resumable");
    CHECK(v == NULL); /* every answer but OPTIONS's */
    http_free(r);
}

static void test_version(void)
{
    char meta[300], url[300];
    const char *none[] = {meta, "Upload-Length: 3", NULL};
    const char *old[] = {"Tus-Resumable: 0.2.2", meta, "Upload-Length: 3", NULL};
    struct http_resp *r;
    int before = session_files(&g);
    metadata_of("v.txt", "", meta, sizeof meta);
    snprintf(url, sizeof url, "%s/api/v1/uploads/", g.base);
    r = http_do("POST", url, none, NULL, 0);
    check_error(r, 412, "precondition_failed");
    check_header(r, "Tus-Version", "1.0.0");
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    r = http_do("POST", url, old, NULL, 0);
    check_error(r, 412, "precondition_failed");
    check_header(r, "Tus-Version", "1.0.0");
    http_free(r);
    CHECK_INT_EQ(session_files(&g), before); /* nothing created */
}

/* Every refusal of a POST comes before anything is created. */
static void test_create_refusals(void)
{
    char url[300], bad_name[300], good[300], bad_b64[] = "Upload-Metadata: filename ***", dup[600];
    const char *no_meta[] = {TUS, "Upload-Length: 3", NULL};
    const char *name_bad[] = {TUS, "Upload-Length: 3", bad_name, NULL};
    const char *b64_bad[] = {TUS, "Upload-Length: 3", bad_b64, NULL};
    const char *no_length[] = {TUS, good, NULL};
    const char *both[] = {TUS, good, "Upload-Length: 3", "Upload-Defer-Length: 1", NULL};
    const char *too_big[] = {TUS, good, "Upload-Length: 67108865", NULL};
    const char *not_number[] = {TUS, good, "Upload-Length: 12abc", NULL};
    const char *dup_key[] = {TUS, dup, "Upload-Length: 3", NULL};
    const char *bad_sum[] = {TUS, good, "Upload-Length: 3", "Upload-Checksum: crc32 AAAA", OCTETS, NULL};
    const char *wrong_type[] = {TUS, good, "Upload-Length: 3", "Content-Type: text/plain", NULL};
    struct http_resp *r;
    int before = session_files(&g);

    snprintf(url, sizeof url, "%s/api/v1/uploads/", g.base);
    metadata_of("../etc/passwd", "", bad_name, sizeof bad_name);
    metadata_of("ok.txt", "", good, sizeof good);
    metadata_of("ok.txt", ",filename eC50eHQ=", dup, sizeof dup);
    r = http_do("POST", url, no_meta, NULL, 0);
    check_error(r, 400, "invalid_request");
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    r = http_do("POST", url, name_bad, NULL, 0);
    check_error(r, 400, "invalid_name");
    http_free(r);
    r = http_do("POST", url, b64_bad, NULL, 0);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = http_do("POST", url, no_length, NULL, 0);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = http_do("POST", url, both, NULL, 0);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = http_do("POST", url, too_big, NULL, 0);
    check_error(r, 413, "too_large");
    http_free(r);
    r = http_do("POST", url, not_number, NULL, 0);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = http_do("POST", url, dup_key, NULL, 0);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = http_do("POST", url, bad_sum, "abc", 3);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = http_do("POST", url, wrong_type, "abc", 3);
    check_error(r, 415, "unsupported_media_type");
    http_free(r);
    CHECK_INT_EQ(session_files(&g), before);
    CHECK(!is_listed(&g, "ok.txt"));
}

/* Creation, HEAD, two PATCHes; the file appears only with the last byte, whole and with its sha256. */
static void test_upload_in_parts(void)
{
    static unsigned char data[300000];
    char meta[400], url[300];
    struct http_resp *r;
    char *path, *v;
    long long off;
    struct tm tm;

    fill_pattern(data, sizeof data, 18);
    metadata_of("parts.bin", ",kind dGVzdA==,empty", meta, sizeof meta);
    {
        const char *headers[] = {TUS, meta, "Upload-Length: 300000", NULL};
        snprintf(url, sizeof url, "%s/api/v1/uploads/", g.base);
        r = http_do("POST", url, headers, NULL, 0);
        CHECK_INT_EQ(r->status, 201);
        v = http_header(r, "Location");
        CHECK(v && strlen(v) == 48);
        path = v;
        v = http_header(r, "Upload-Expires");
        CHECK(v && strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm) != NULL);
        free(v);
        http_free(r);
    }
    check_invisible(&g, "parts.bin");
    snprintf(url, sizeof url, "%s%s", g.base, path);
    {
        const char *headers[] = {TUS, NULL};
        r = http_do("HEAD", url, headers, NULL, 0);
        CHECK_INT_EQ(r->status, 200);
        check_header(r, "Upload-Offset", "0");
        check_header(r, "Upload-Length", "300000");
        check_header(r, "Upload-Metadata", meta + strlen("Upload-Metadata: "));
        check_header(r, "Cache-Control", "no-store");
        check_header(r, "Tus-Resumable", "1.0.0");
        v = http_header(r, "Upload-Expires");
        CHECK(v && strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm) != NULL);
        free(v);
        http_free(r);
    }
    r = patch(&g, path, 0, data, 100000, NULL);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Upload-Offset", "100000");
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    CHECK_INT_EQ(head(&g, path, &off), 200);
    CHECK_INT_EQ(off, 100000);
    check_invisible(&g, "parts.bin");
    r = patch(&g, path, 100000, data + 100000, sizeof data - 100000, NULL);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Upload-Offset", "300000");
    v = http_header(r, "Upload-Expires");
    CHECK(v == NULL); /* finished: nothing left to expire */
    http_free(r);
    check_stored(&g, "parts.bin", data, sizeof data);
    CHECK(is_listed(&g, "parts.bin"));
    CHECK_INT_EQ(head(&g, path, &off), 404); /* the upload is the file now */
    free(path);
}

static void test_patch_refusals(void)
{
    char *path = create(&g, "refused.txt", 10, NULL);
    char url[300];
    const char *no_type[] = {TUS, "Upload-Offset: 0", NULL};
    const char *no_offset[] = {TUS, OCTETS, NULL};
    const char *no_version[] = {OCTETS, "Upload-Offset: 0", NULL};
    struct http_resp *r;
    long long off;

    snprintf(url, sizeof url, "%s%s", g.base, path);
    r = http_do("PATCH", url, no_type, "abc", 3);
    check_error(r, 415, "unsupported_media_type");
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    r = http_do("PATCH", url, no_offset, "abc", 3);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = http_do("PATCH", url, no_version, "abc", 3);
    check_error(r, 412, "precondition_failed");
    http_free(r);
    r = patch(&g, path, 0, "abc", 3, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    /* The offset is the server's or nothing is written. */
    r = patch(&g, path, 0, "abc", 3, NULL);
    check_error(r, 409, "offset_conflict");
    http_free(r);
    r = patch(&g, path, 5, "abc", 3, NULL);
    check_error(r, 409, "offset_conflict");
    http_free(r);
    /* Past Upload-Length. */
    r = patch(&g, path, 3, "12345678", 8, NULL);
    check_error(r, 413, "too_large");
    http_free(r);
    CHECK_INT_EQ(head(&g, path, &off), 200);
    CHECK_INT_EQ(off, 3);
    /* Unknown and malformed ids. */
    r = patch(&g, "/api/v1/uploads/0123456789abcdef0123456789abcdef", 0, "a", 1, NULL);
    check_error(r, 404, "not_found");
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    r = patch(&g, "/api/v1/uploads/not-an-id", 0, "a", 1, NULL);
    check_error(r, 404, "not_found");
    http_free(r);
    CHECK_INT_EQ(head(&g, "/api/v1/uploads/0123456789abcdef0123456789abcdef", &off), 404);
    /* GET is no tus method. */
    r = gw_do(&g, "GET", path, NULL, NULL);
    check_error(r, 405, "method_not_allowed");
    http_free(r);
    check_invisible(&g, "refused.txt");
    free(path);
}

/* Upload-Checksum covers one request's bytes: a mismatch is 460 and keeps none of them. */
static void test_checksum(void)
{
    char *path = create(&g, "summed.txt", 11, NULL);
    char good_sha1[100], good_sha256[100], bad_md5[100];
    unsigned char d[32], b64[64];
    const char *with_bad[] = {bad_md5, NULL};
    const char *with_sha1[] = {good_sha1, NULL};
    const char *with_sha256[] = {good_sha256, NULL};
    struct http_resp *r;
    long long off;

    EVP_Digest("hello", 5, d, NULL, EVP_md5(), NULL);
    d[0] ^= 1;
    EVP_EncodeBlock(b64, d, 16);
    snprintf(bad_md5, sizeof bad_md5, "Upload-Checksum: md5 %s", b64);
    r = patch(&g, path, 0, "hello", 5, with_bad);
    check_error(r, 460, "chunk_checksum_mismatch");
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    CHECK_INT_EQ(head(&g, path, &off), 200);
    CHECK_INT_EQ(off, 0);
    EVP_Digest("hello", 5, d, NULL, EVP_sha1(), NULL);
    EVP_EncodeBlock(b64, d, 20);
    snprintf(good_sha1, sizeof good_sha1, "Upload-Checksum: sha1 %s", b64);
    r = patch(&g, path, 0, "hello", 5, with_sha1);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Upload-Offset", "5");
    http_free(r);
    EVP_Digest(" world", 6, d, NULL, EVP_sha256(), NULL);
    EVP_EncodeBlock(b64, d, 32);
    snprintf(good_sha256, sizeof good_sha256, "Upload-Checksum: sha256 %s", b64);
    r = patch(&g, path, 5, " world", 6, with_sha256);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    check_stored(&g, "summed.txt", "hello world", 11);
    free(path);
}

/* creation-with-upload, creation-defer-length, and an empty file. */
static void test_creation_variants(void)
{
    char meta[300], url[300];
    const char *with_body[] = {TUS, meta, "Upload-Length: 10", OCTETS, NULL};
    const char *whole[] = {TUS, meta, "Upload-Length: 4", OCTETS, NULL};
    const char *final_length[] = {"Upload-Length: 7", NULL};
    struct http_resp *r;
    json_t *j;
    char *path;
    long long off;

    snprintf(url, sizeof url, "%s/api/v1/uploads/", g.base);
    metadata_of("early.txt", "", meta, sizeof meta);
    r = http_do("POST", url, with_body, "01234", 5);
    CHECK_INT_EQ(r->status, 201);
    check_header(r, "Upload-Offset", "5");
    path = http_header(r, "Location");
    http_free(r);
    CHECK(path);
    r = patch(&g, path, 5, "56789", 5, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    check_stored(&g, "early.txt", "0123456789", 10);
    free(path);

    /* All of it with the POST: stored at once, and the answer says so as a PUT's does. */
    metadata_of("whole.txt", "", meta, sizeof meta);
    r = http_do("POST", url, whole, "abcd", 4);
    j = http_ok_json(r, 201);
    check_header(r, "Upload-Offset", "4");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "name")), "whole.txt");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "sha256")),
                 "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589");
    json_decref(j);
    http_free(r);
    check_stored(&g, "whole.txt", "abcd", 4);

    path = create(&g, "later.txt", -1, NULL);
    {
        const char *headers[] = {TUS, NULL};
        snprintf(url, sizeof url, "%s%s", g.base, path);
        r = http_do("HEAD", url, headers, NULL, 0);
        CHECK_INT_EQ(r->status, 200);
        check_header(r, "Upload-Defer-Length", "1");
        CHECK(http_header(r, "Upload-Length") == NULL);
        http_free(r);
    }
    r = patch(&g, path, 0, "abc", 3, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    check_invisible(&g, "later.txt");
    r = patch(&g, path, 3, "defg", 4, final_length);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Upload-Offset", "7");
    http_free(r);
    check_stored(&g, "later.txt", "abcdefg", 7);
    CHECK_INT_EQ(head(&g, path, &off), 404);
    free(path);

    path = create(&g, "empty.txt", 0, NULL);
    check_stored(&g, "empty.txt", "", 0);
    free(path);
}

static void test_termination(void)
{
    char *path = create(&g, "gone.txt", 100, NULL);
    char url[300];
    const char *headers[] = {TUS, NULL};
    struct http_resp *r;
    long long off;
    int before;

    r = patch(&g, path, 0, "some bytes", 10, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    before = session_files(&g);
    snprintf(url, sizeof url, "%s%s", g.base, path);
    r = http_do("DELETE", url, headers, NULL, 0);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    CHECK_INT_EQ(head(&g, path, &off), 404);
    CHECK(session_files(&g) < before); /* its storage went with it */
    r = http_do("DELETE", url, headers, NULL, 0);
    check_error(r, 404, "not_found");
    http_free(r);
    r = patch(&g, path, 10, "more", 4, NULL);
    check_error(r, 404, "not_found");
    http_free(r);
    check_invisible(&g, "gone.txt");
    free(path);
}

/* Starts a PATCH of total bytes at offset over a raw socket to to and sends the first sent of them; returns the socket. */
static int raw_patch_start_at(const struct gw *to, const char *path, long long offset, size_t total,
                              const unsigned char *data, size_t sent)
{
    char head_text[600];
    int fd = gw_connect_raw(to);
    snprintf(head_text, sizeof head_text,
             "PATCH %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" TUS "\r\n" OCTETS "\r\nUpload-Offset: %lld\r\n"
             "Content-Length: %zu\r\n\r\n",
             path, offset, total);
    send_all(fd, head_text, strlen(head_text));
    send_all(fd, data, sent);
    return fd;
}

static int raw_patch_start(const char *path, long long offset, size_t total, const unsigned char *data, size_t sent)
{
    return raw_patch_start_at(&g, path, offset, total, data, sent);
}

/* Reads an HTTP answer's head from fd into reply (NUL-terminated; what came when the peer closed early). */
static void read_reply_head(int fd, char *reply, size_t size)
{
    size_t got = 0;
    reply[0] = '\0';
    while (got < size - 1) {
        ssize_t n = recv(fd, reply + got, size - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        reply[got] = '\0';
        if (strstr(reply, "\r\n\r\n"))
            break;
    }
}

/*
 * A PATCH cut after 700 KiB of its 2 MiB keeps at least the bytes up to the
 * gateway's last block boundary; HEAD says so, and the upload resumes from
 * there to a file equal to the original.
 */
static void test_cut_patch_keeps_bytes(void)
{
    static unsigned char data[2 << 20];
    const size_t cut = 700u << 10;
    char *path;
    long long off = 0;
    struct http_resp *r;
    int fd, tries;

    fill_pattern(data, sizeof data, 7);
    path = create(&g, "cut.bin", sizeof data, NULL);
    fd = raw_patch_start(path, 0, sizeof data, data, cut);
    /* Let the gateway read what was sent before the connection goes (bounded: 10 s). */
    for (tries = 0; tries < 200; tries++) {
        CHECK_INT_EQ(head(&g, path, &off), 200);
        if (off >= (long long)(512u << 10))
            break;
        sleep_ms(50);
    }
    close(fd);
    CHECK(off >= (long long)(512u << 10)); /* two 256 KiB blocks at least reached the backend */
    /* Resume the way a tus client does: HEAD, then PATCH from there; retry while the cut append lets go. */
    for (tries = 0; tries < 200; tries++) {
        CHECK_INT_EQ(head(&g, path, &off), 200);
        CHECK(off >= (long long)(512u << 10) && off <= (long long)cut);
        r = patch(&g, path, (unsigned long long)off, data + off, sizeof data - (size_t)off, NULL);
        if (r->status == 204) {
            http_free(r);
            break;
        }
        CHECK(r->status == 423 || r->status == 409); /* the cut append still holds the session, or grew it */
        http_free(r);
        sleep_ms(50);
    }
    CHECK(tries < 200);
    fprintf(stderr, "cut after %zu bytes; resumed from byte %lld\n", cut, off);
    check_stored(&g, "cut.bin", data, sizeof data);
    free(path);
}

/* While one PATCH is receiving its body, another on the same upload is 423 and writes nothing. */
static void test_concurrent_patch_locked(void)
{
    static unsigned char data[64 << 10];
    char reply[4096];
    char *path;
    struct http_resp *r;
    long status = 0, got = 0;
    int fd, tries;

    fill_pattern(data, sizeof data, 3);
    path = create(&g, "locked.bin", sizeof data, NULL);
    fd = raw_patch_start(path, 0, sizeof data, data, 1000);
    /* An empty PATCH at offset 0 changes nothing when it gets through: safe to retry until the lock shows. */
    for (tries = 0; tries < 200; tries++) {
        r = patch(&g, path, 0, NULL, 0, NULL);
        status = r->status;
        if (status == 423)
            check_error(r, 423, "locked");
        http_free(r);
        if (status == 423)
            break;
        CHECK_INT_EQ(status, 204);
        sleep_ms(20);
    }
    CHECK_INT_EQ(status, 423);
    send_all(fd, data + 1000, sizeof data - 1000);
    while (got < (long)sizeof reply - 1) {
        ssize_t n = recv(fd, reply + got, sizeof reply - 1 - (size_t)got, 0);
        if (n <= 0)
            break;
        got += n;
        reply[got] = '\0';
        if (strstr(reply, "\r\n\r\n"))
            break;
    }
    close(fd);
    CHECK(strncmp(reply, "HTTP/1.1 204", 12) == 0);
    check_stored(&g, "locked.bin", data, sizeof data);
    free(path);
}

/* A token guards every tus route but OPTIONS; a page of another origin gets the tus headers exposed. */
static void test_token_and_cors(void)
{
    struct gw t;
    const char *const extra[] = {"--token", "s3cret", "--cors-origin", "http://page.test", NULL};
    const char *preflight[] = {"Origin: http://page.test", "Access-Control-Request-Method: PATCH",
                               "Access-Control-Request-Headers: tus-resumable,upload-offset,content-type", NULL};
    char url[300], meta[300], *v;
    const char *post[] = {TUS, meta, "Upload-Length: 3", NULL};
    const char *post_auth[] = {TUS, meta, "Upload-Length: 3", "Authorization: Bearer s3cret", "Origin: http://page.test",
                               NULL};
    const char *post_foreign[] = {TUS, meta, "Upload-Length: 3", "Authorization: Bearer s3cret",
                                  "Origin: http://evil.test", NULL};
    struct http_resp *r;

    gw_start(&t, extra);
    metadata_of("t.txt", "", meta, sizeof meta);
    snprintf(url, sizeof url, "%s/api/v1/uploads/", t.base);
    r = http_do("OPTIONS", url, NULL, NULL, 0);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Tus-Version", "1.0.0");
    http_free(r);
    r = http_do("OPTIONS", url, preflight, NULL, 0);
    CHECK_INT_EQ(r->status, 204);
    v = http_header(r, "Access-Control-Allow-Headers");
    CHECK(v && strstr(v, "Upload-Offset") && strstr(v, "Tus-Resumable") && strstr(v, "Upload-Metadata"));
    free(v);
    http_free(r);
    r = http_do("POST", url, post, NULL, 0);
    check_error(r, 401, "unauthorized");
    check_header(r, "Tus-Resumable", "1.0.0");
    http_free(r);
    r = http_do("POST", url, post_foreign, NULL, 0);
    check_error(r, 403, "cross_origin_refused");
    http_free(r);
    r = http_do("POST", url, post_auth, NULL, 0);
    CHECK_INT_EQ(r->status, 201);
    v = http_header(r, "Access-Control-Expose-Headers");
    CHECK(v && strstr(v, "Upload-Offset") && strstr(v, "Location") && strstr(v, "Tus-Resumable") &&
          strstr(v, "Upload-Expires"));
    free(v);
    http_free(r);
    gw_stop(&t);
}

/* An unfinished upload unchanged for --upload-expiry is gone, storage and all. */
static void test_expiry(void)
{
    struct gw e;
    /* Whole seconds from the last change's second: 3 s leaves the PATCH below at least 2. */
    const char *const extra[] = {"--upload-expiry", "3s", NULL};
    char *path;
    struct http_resp *r;
    long long off;
    int tries;

    gw_start(&e, extra);
    path = create(&e, "expiring.txt", 100, NULL);
    r = patch(&e, path, 0, "0123456789", 10, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    CHECK(session_files(&e) > 0);
    sleep_ms(4200); /* past the expiry */
    CHECK_INT_EQ(head(&e, path, &off), 404);
    r = patch(&e, path, 10, "more", 4, NULL);
    check_error(r, 404, "not_found");
    http_free(r);
    /* The sweep (every half expiry here) frees its storage; bounded wait of 10 s. */
    for (tries = 0; tries < 100 && session_files(&e) > 0; tries++)
        sleep_ms(100);
    CHECK_INT_EQ(session_files(&e), 0);
    check_invisible(&e, "expiring.txt");
    free(path);
    gw_stop(&e);
}

/*
 * A PATCH never blocks its worker: with one worker thread and a separately
 * run file backend frozen (SIGSTOP) while a PATCH streams to it and waits
 * for its answer, /healthz and echo still answer. The backend call's
 * deadline is 10 minutes, beyond curl's 2, so a worker stuck on the backend
 * would fail these checks instead of answering late. After SIGCONT the
 * PATCH completes (or fails cleanly) and HEAD agrees with what was stored.
 */
static void test_patch_does_not_block_worker(void)
{
    static unsigned char data[1 << 20];
    char dir[256], root[400], reply[4096];
    const char *fargv[] = {"sockgate-file", "--listen", "127.0.0.1:0", "--root", root, NULL};
    struct sg_proc file_p;
    struct gw one;
    struct http_resp *r;
    json_t *j;
    char *path;
    size_t sent = 0;
    long long off = -1;
    int fd, flags;

    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s", dir);
    CHECK(sg_proc_start(&file_p, fargv, 10000) == 0);
    {
        const char *extra[] = {"--threads", "1", "--file", file_p.addr, "--timeout", "10m", "--max-upload", "64M", NULL};
        gw_start(&one, extra);
    }
    fill_pattern(data, sizeof data, 9);
    path = create(&one, "frozen.bin", sizeof data, NULL);

    CHECK(kill(file_p.pid, SIGSTOP) == 0);
    /* The PATCH's head and as much body as goes without waiting: the rest waits for the backend. */
    fd = raw_patch_start_at(&one, path, 0, sizeof data, data, 0);
    flags = fcntl(fd, F_GETFL);
    CHECK(fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0);
    while (sent < sizeof data) {
        ssize_t n = send(fd, data + sent, sizeof data - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        CHECK(n > 0);
        sent += (size_t)n;
    }
    CHECK(fcntl(fd, F_SETFL, flags) == 0);
    fprintf(stderr, "sent %zu of %zu PATCH bytes with the backend frozen\n", sent, sizeof data);

    /* The only worker still serves while its PATCH waits on the frozen backend. */
    r = gw_do(&one, "GET", "/healthz", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    j = gw_expect_json(&one, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"still here\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "STILL HERE");
    json_decref(j);

    CHECK(kill(file_p.pid, SIGCONT) == 0);
    send_all(fd, data + sent, sizeof data - sent);
    read_reply_head(fd, reply, sizeof reply);
    close(fd);
    if (strncmp(reply, "HTTP/1.1 204", 12) == 0) {
        CHECK(strstr(reply, "Upload-Offset: 1048576\r\n") != NULL);
        CHECK_INT_EQ(head(&one, path, &off), 404); /* the upload is the file now */
        check_stored(&one, "frozen.bin", data, sizeof data);
    } else {
        /* Failed cleanly: an HTTP error, HEAD says where the upload is, and it resumes from there. */
        fprintf(stderr, "PATCH after SIGCONT: %.40s\n", reply);
        CHECK(strncmp(reply, "HTTP/1.1 ", 9) == 0);
        CHECK_INT_EQ(head(&one, path, &off), 200);
        CHECK(off >= 0 && off <= (long long)sizeof data);
        r = patch(&one, path, (unsigned long long)off, data + off, sizeof data - (size_t)off, NULL);
        CHECK_INT_EQ(r->status, 204);
        http_free(r);
        check_stored(&one, "frozen.bin", data, sizeof data);
    }
    free(path);
    gw_stop(&one);
    CHECK_INT_EQ(sg_proc_stop(&file_p, 15000), 0);
    sg_test_rmtree(dir);
}

int main(void)
{
    const char *const extra[] = {"--max-upload", "64M", NULL};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    gw_start(&g, extra);
    RUN_TEST(test_options);
    RUN_TEST(test_version);
    RUN_TEST(test_create_refusals);
    RUN_TEST(test_upload_in_parts);
    RUN_TEST(test_patch_refusals);
    RUN_TEST(test_checksum);
    RUN_TEST(test_creation_variants);
    RUN_TEST(test_termination);
    RUN_TEST(test_cut_patch_keeps_bytes);
    RUN_TEST(test_concurrent_patch_locked);
    RUN_TEST(test_token_and_cors);
    RUN_TEST(test_expiry);
    RUN_TEST(test_patch_does_not_block_worker);
    gw_stop(&g);
    curl_global_cleanup();
    return TESTS_DONE();
}
