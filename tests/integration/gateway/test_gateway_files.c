/* test_gateway_files.c - uploads and downloads: multipart, Range, conditional GET, chunked, aborted and oversized uploads. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"

static struct gw g;

#define FILE_LEN 100000

static unsigned char content[FILE_LEN];

static void put_file(const char *name, const void *data, size_t len)
{
    const char *octet[] = {"Content-Type: application/octet-stream", NULL};
    char url[512];
    struct http_resp *r;
    snprintf(url, sizeof url, "%s/api/v1/files/%s", g.base, name);
    r = http_do("PUT", url, octet, data, len);
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
}

static struct http_resp *get_with(const char *name, const char *header)
{
    const char *headers[] = {header, NULL};
    char path[300];
    snprintf(path, sizeof path, "/api/v1/files/%s", name);
    return gw_do(&g, "GET", path, header ? headers : NULL, NULL);
}

static void check_range(const char *range, long status, size_t off, size_t len, const char *content_range)
{
    char header[128], *h;
    struct http_resp *r;
    snprintf(header, sizeof header, "Range: %s", range);
    r = get_with("ranged", header);
    CHECK_INT_EQ(r->status, status);
    CHECK_INT_EQ(r->len, len);
    CHECK(memcmp(r->body, content + off, len) == 0);
    h = http_header(r, "Content-Range");
    if (content_range)
        CHECK_STR_EQ(h, content_range);
    else
        CHECK(h == NULL);
    free(h);
    http_free(r);
}

static void test_range(void)
{
    struct http_resp *r;
    put_file("ranged", content, FILE_LEN);
    check_range("bytes=0-9", 206, 0, 10, "bytes 0-9/100000");
    check_range("bytes=99990-", 206, 99990, 10, "bytes 99990-99999/100000");
    check_range("bytes=-100", 206, 99900, 100, "bytes 99900-99999/100000");
    check_range("bytes=500-1000000", 206, 500, FILE_LEN - 500, "bytes 500-99999/100000");
    /* Several ranges, or nonsense, get the whole file (RFC 9110 lets a server ignore Range). */
    check_range("bytes=0-1,5-6", 200, 0, FILE_LEN, NULL);
    check_range("lines=1-2", 200, 0, FILE_LEN, NULL);
    r = get_with("ranged", "Range: bytes=100000-");
    check_error(r, 416, "range_not_satisfiable");
    check_header(r, "Content-Range", "bytes */100000");
    http_free(r);
}

static void test_conditional_get(void)
{
    struct http_resp *r = get_with("ranged", NULL);
    char *etag = http_header(r, "ETag"), header[200], want[65];
    CHECK_INT_EQ(r->status, 200);
    sha256_hex(content, FILE_LEN, want);
    CHECK(etag && etag[0] == '"' && strncmp(etag + 1, want, 64) == 0);
    http_free(r);
    snprintf(header, sizeof header, "If-None-Match: %s", etag);
    r = get_with("ranged", header);
    CHECK_INT_EQ(r->status, 304);
    CHECK_INT_EQ(r->len, 0);
    http_free(r);
    /* HEAD answers what GET would: 304 for a current copy too. */
    {
        const char *headers[] = {header, NULL};
        r = gw_do(&g, "HEAD", "/api/v1/files/ranged", headers, NULL);
        CHECK_INT_EQ(r->status, 304);
        http_free(r);
    }
    /* If-Modified-Since: at or after Last-Modified is 304 (GET and HEAD), long before it is 200. */
    {
        char *last_modified, ims[200];
        r = get_with("ranged", NULL);
        last_modified = http_header(r, "Last-Modified");
        CHECK(last_modified != NULL);
        http_free(r);
        snprintf(ims, sizeof ims, "If-Modified-Since: %s", last_modified);
        r = get_with("ranged", ims);
        CHECK_INT_EQ(r->status, 304);
        http_free(r);
        {
            const char *headers[] = {ims, NULL};
            r = gw_do(&g, "HEAD", "/api/v1/files/ranged", headers, NULL);
            CHECK_INT_EQ(r->status, 304);
            http_free(r);
        }
        r = get_with("ranged", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT");
        CHECK_INT_EQ(r->status, 200);
        CHECK_INT_EQ(r->len, FILE_LEN);
        http_free(r);
        free(last_modified);
    }
    /* If-Range with a stale ETag: the Range no longer applies, the whole file comes. */
    {
        const char *headers[] = {"Range: bytes=0-9", "If-Range: \"0000\"", NULL};
        r = gw_do(&g, "GET", "/api/v1/files/ranged", headers, NULL);
        CHECK_INT_EQ(r->status, 200);
        CHECK_INT_EQ(r->len, FILE_LEN);
        http_free(r);
    }
    free(etag);
}

static void test_multipart(void)
{
    static unsigned char a[3000], b[70000];
    const char *text = "plain text part\n";
    struct http_resp *r;
    curl_mime *mime;
    curl_mimepart *part;
    struct { const char *name; const void *data; size_t len; } parts[] = {
        {"a.bin", a, sizeof a}, {"b.bin", b, sizeof b}, {"notes.txt", text, strlen(text)}};
    CURL *c = curl_easy_init();
    char url[300], want[65];
    long status = 0;
    json_t *j, *files;
    struct { char *data; size_t len; } out = {0};
    FILE *mem;

    fill_pattern(a, sizeof a, 11);
    fill_pattern(b, sizeof b, 12);
    mime = curl_mime_init(c);
    for (size_t i = 0; i < 3; i++) {
        part = curl_mime_addpart(mime);
        curl_mime_name(part, i == 2 ? "notes" : "file");
        curl_mime_filename(part, parts[i].name);
        curl_mime_data(part, parts[i].data, parts[i].len);
    }
    /* A plain field among the files is ignored. */
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "comment");
    curl_mime_data(part, "not a file", CURL_ZERO_TERMINATED);
    snprintf(url, sizeof url, "%s/api/v1/files", g.base);
    mem = open_memstream(&out.data, &out.len);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
    CHECK(curl_easy_perform(c) == CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    fclose(mem);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    if (status != 201)
        fprintf(stderr, "%s\n", out.data);
    CHECK_INT_EQ(status, 201);
    j = json_loadb(out.data, out.len, 0, NULL);
    files = json_object_get(j, "files");
    CHECK_INT_EQ(json_array_size(files), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *f = json_array_get(files, i);
        char path[300];
        sha256_hex(parts[i].data, parts[i].len, want);
        CHECK_STR_EQ(json_string_value(json_object_get(f, "name")), parts[i].name);
        CHECK_INT_EQ(json_integer_value(json_object_get(f, "size")), parts[i].len);
        CHECK_STR_EQ(json_string_value(json_object_get(f, "sha256")), want);
        /* And the stored bytes are the sent bytes. */
        snprintf(path, sizeof path, "/api/v1/files/%s", parts[i].name);
        r = gw_do(&g, "GET", path, NULL, NULL);
        CHECK_INT_EQ(r->status, 200);
        CHECK_INT_EQ(r->len, parts[i].len);
        CHECK(memcmp(r->body, parts[i].data, parts[i].len) == 0);
        http_free(r);
    }
    json_decref(j);
    free(out.data);
}

static void test_multipart_errors(void)
{
    const char *no_files[] = {"Content-Type: multipart/form-data; boundary=XyZ", NULL};
    const char *form =
        "--XyZ\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n--XyZ--\r\n";
    const char *cut =
        "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"cut.bin\"\r\n\r\npartial bytes";
    const char *urlenc[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    gw_expect_error(&g, "POST", "/api/v1/files", no_files, form, 400, "invalid_request");
    /* A body that ends before its closing boundary stores nothing. */
    gw_expect_error(&g, "POST", "/api/v1/files", no_files, cut, 400, "invalid_request");
    gw_expect_error(&g, "GET", "/api/v1/files/cut.bin", NULL, NULL, 404, "not_found");
    gw_expect_error(&g, "POST", "/api/v1/files", urlenc, "a=b", 415, "unsupported_media_type");
    /* Two parts with one name: refused, and neither is stored. */
    {
        const char *twice = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"twice.txt\"\r\n\r\none\r\n"
                            "--XyZ\r\nContent-Disposition: form-data; name=\"b\"; filename=\"twice.txt\"\r\n\r\ntwo\r\n"
                            "--XyZ--\r\n";
        gw_expect_error(&g, "POST", "/api/v1/files", no_files, twice, 400, "invalid_request");
        gw_expect_error(&g, "GET", "/api/v1/files/twice.txt", NULL, NULL, 404, "not_found");
    }
}

/* Feeds a body of a size libcurl does not announce, so it goes out chunked. */
struct feeder {
    const unsigned char *data;
    size_t len, off, abort_at;
};

static size_t feed(char *buf, size_t size, size_t nmemb, void *ctx)
{
    struct feeder *f = ctx;
    size_t n = size * nmemb;
    if (f->abort_at && f->off >= f->abort_at)
        return CURL_READFUNC_ABORT;
    if (n > f->len - f->off)
        n = f->len - f->off;
    if (n > 7000)
        n = 7000; /* many small pieces, as a slow client sends them */
    memcpy(buf, f->data + f->off, n);
    f->off += n;
    return n;
}

static long upload_stream(const struct gw *to, const char *name, struct feeder *f, curl_off_t announce,
                          CURLcode *rc_out)
{
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();
    char url[300];
    long status = 0;
    FILE *devnull = fopen("/dev/null", "w");
    snprintf(url, sizeof url, "%s/api/v1/files/%s", to->base, name);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, feed);
    curl_easy_setopt(c, CURLOPT_READDATA, f);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, devnull);
    if (announce >= 0) {
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, announce);
    } else {
        h = curl_slist_append(h, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    }
    *rc_out = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    fclose(devnull);
    return status;
}

static void test_chunked_put(void)
{
    struct feeder f = {content, FILE_LEN, 0, 0};
    struct http_resp *r;
    CURLcode rc;
    CHECK_INT_EQ(upload_stream(&g, "chunked.bin", &f, -1, &rc), 201);
    CHECK(rc == CURLE_OK);
    r = gw_do(&g, "GET", "/api/v1/files/chunked.bin", NULL, NULL);
    CHECK_INT_EQ(r->len, FILE_LEN);
    CHECK(memcmp(r->body, content, FILE_LEN) == 0);
    http_free(r);
}

/* Counts the entries of the file root that are neither listed nor the backend's metadata folder. */
static int count_leftovers(void)
{
    char root[400];
    DIR *d;
    struct dirent *e;
    int n = 0;
    snprintf(root, sizeof root, "%s/files", g.dir);
    d = opendir(root);
    CHECK(d);
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, ".upload", 7) == 0 || strcmp(e->d_name, "aborted.bin") == 0)
            n++;
    closedir(d);
    return n;
}

static void test_aborted_upload_leaves_nothing(void)
{
    static unsigned char big[8u << 20];
    struct feeder f = {big, sizeof big, 0, 1u << 20};
    CURLcode rc;
    int polls = 0;
    /* The client gives up after 1 MiB of the 8 MiB it announced. */
    upload_stream(&g, "aborted.bin", &f, (curl_off_t)sizeof big, &rc);
    CHECK(rc == CURLE_ABORTED_BY_CALLBACK);
    /* The backend notices the broken stream and drops its partial file (bounded wait). */
    while (count_leftovers() > 0 && polls++ < 500)
        usleep(10 * 1000);
    CHECK_INT_EQ(count_leftovers(), 0);
    gw_expect_error(&g, "GET", "/api/v1/files/aborted.bin", NULL, NULL, 404, "not_found");
    /* The gateway and backend are fine afterwards. */
    put_file("after-abort", "ok", 2);
}

static void test_upload_limit(void)
{
    struct gw small;
    const char *args[] = {"--max-upload", "64K", NULL};
    static unsigned char body[100000];
    struct feeder f = {body, sizeof body, 0, 0};
    struct http_resp *r;
    CURLcode rc;
    char url[300];
    gw_start(&small, args);
    /* Announced too big: refused before the body is read. */
    snprintf(url, sizeof url, "%s/api/v1/files/too-big", small.base);
    r = http_do("PUT", url, NULL, body, sizeof body);
    check_error(r, 413, "too_large");
    http_free(r);
    /* Chunked, found too big on the way: refused, nothing stored. */
    CHECK_INT_EQ(upload_stream(&small, "too-big", &f, -1, &rc), 413);
    gw_expect_error(&small, "GET", "/api/v1/files/too-big", NULL, NULL, 404, "not_found");
    gw_stop(&small);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    fill_pattern(content, FILE_LEN, 7);
    gw_start(&g, NULL);
    RUN_TEST(test_range);
    RUN_TEST(test_conditional_get);
    RUN_TEST(test_multipart);
    RUN_TEST(test_multipart_errors);
    RUN_TEST(test_chunked_put);
    RUN_TEST(test_aborted_upload_leaves_nothing);
    RUN_TEST(test_upload_limit);
    gw_stop(&g);
    curl_global_cleanup();
    return TESTS_DONE();
}
