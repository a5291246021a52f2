/* gwtest.c - start a gateway for a test and talk HTTP to it with libcurl. */
#include "gwtest.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <signal.h>

#include "sockgate/hash.h"

/* The request a gw_expect_* call checks, named when a check fails, since the failing line is then in here. */
static char checking[256];

/* check.h's CHECK, minus its pass counter that only test mains use, plus the request being checked. */
#define CHECK(cond)                                                                                  \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            fprintf(stderr, "%s:%d: %s: CHECK failed: %s%s%s\n", __FILE__, __LINE__, __func__, #cond, \
                    *checking ? " in " : "", checking);                                              \
            exit(1);                                                                                 \
        }                                                                                            \
    } while (0)
#define CHECK_INT_EQ(a, b) CHECK((long long)(a) == (long long)(b))
#define CHECK_STR_EQ(a, b) CHECK((a) && (b) && strcmp((a), (b)) == 0)

/* Answers in these tests are small; a bigger one is a bug worth failing on. */
#define MAX_BODY (64u << 20)

char gw_ca_file[512];

void gw_start(struct gw *g, const char *const extra[])
{
    const char *argv[64];
    char root[300];
    size_t n = 0;
    memset(g, 0, sizeof *g);
    CHECK(sg_test_tmpdir(g->dir, sizeof g->dir) == 0);
    snprintf(root, sizeof root, "%s/files", g->dir);
    argv[n++] = "sockgate";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--file-root";
    argv[n++] = root;
    argv[n++] = "--spool-dir";
    argv[n++] = g->dir;
    for (size_t i = 0; extra && extra[i]; i++) {
        CHECK(n < sizeof argv / sizeof argv[0] - 1);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    CHECK(sg_proc_start(&g->proc, argv, 10000) == 0); /* the harness kills it at exit unless stopped */
    snprintf(g->base, sizeof g->base, "%s://%s:%u", g->proc.is_https ? "https" : "http", g->proc.host, g->proc.port);
}

void gw_stop(struct gw *g)
{
    CHECK_INT_EQ(sg_proc_stop(&g->proc, 15000), 0);
    sg_test_rmtree(g->dir);
}

struct buf {
    char *data;
    size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    struct buf *b = ctx;
    size_t n = size * nmemb;
    char *p;
    if (b->len + n > MAX_BODY)
        return 0;
    p = realloc(b->data, b->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

struct http_resp *http_do(const char *method, const char *url, const char *const headers[], const void *body,
                          size_t len)
{
    struct http_resp *r = calloc(1, sizeof *r);
    struct buf b = {0}, h = {0};
    struct curl_slist *list = NULL;
    CURL *c = curl_easy_init();
    CURLcode rc;

    CHECK(r && c);
    for (size_t i = 0; headers && headers[i]; i++)
        list = curl_slist_append(list, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (gw_ca_file[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, gw_ca_file);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fprintf(stderr, "%s %s: %s\n", method, url, curl_easy_strerror(rc));
    CHECK(rc == CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    r->body = b.data ? b.data : calloc(1, 1);
    r->len = b.len;
    r->headers = h.data ? h.data : calloc(1, 1);
    r->headers_len = h.len;
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    return r;
}

struct http_resp *gw_do(struct gw *g, const char *method, const char *path, const char *const headers[],
                        const char *body)
{
    char url[2048];
    snprintf(url, sizeof url, "%s%s", g->base, path);
    return http_do(method, url, headers, body, body ? strlen(body) : 0);
}

const char *const gw_json_headers[] = {"Content-Type: application/json", NULL};

struct http_resp *gw_post_json(struct gw *g, const char *path, const char *json)
{
    return gw_do(g, "POST", path, gw_json_headers, json);
}

char *http_header(const struct http_resp *r, const char *name)
{
    size_t n = strlen(name);
    const char *line = r->headers;
    while (line && *line) {
        const char *end = strstr(line, "\r\n");
        size_t linelen = end ? (size_t)(end - line) : strlen(line);
        if (linelen > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            size_t vlen;
            while (*v == ' ')
                v++;
            vlen = (size_t)(line + linelen - v);
            return strndup(v, vlen);
        }
        line = end ? end + 2 : NULL;
    }
    return NULL;
}

json_t *http_json(const struct http_resp *r)
{
    json_error_t err;
    json_t *j = json_loadb(r->body, r->len, 0, &err);
    if (!j)
        fprintf(stderr, "not JSON (%s): %.300s\n", err.text, r->body);
    CHECK(j != NULL);
    return j;
}

void check_error(const struct http_resp *r, long status, const char *code)
{
    json_t *j, *e;
    char *ctype = http_header(r, "Content-Type");
    if (r->status != status)
        fprintf(stderr, "expected %ld, got %ld: %.300s\n", status, r->status, r->body);
    CHECK_INT_EQ(r->status, status);
    CHECK(ctype && strncmp(ctype, "application/json", 16) == 0);
    free(ctype);
    j = http_json(r);
    e = json_object_get(j, "error");
    CHECK(json_is_object(e));
    CHECK_STR_EQ(json_string_value(json_object_get(e, "code")), code);
    CHECK(json_string_length(json_object_get(e, "message")) > 0);
    json_decref(j);
}

void check_header(const struct http_resp *r, const char *name, const char *want)
{
    char *h = http_header(r, name);
    if (!h || strcmp(h, want) != 0)
        fprintf(stderr, "header %s: expected \"%s\", got \"%s\"\n", name, want, h ? h : "(none)");
    CHECK_STR_EQ(h, want);
    free(h);
}

void http_free(struct http_resp *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->headers);
    free(r);
}

json_t *http_ok_json(const struct http_resp *r, long status)
{
    if (r->status != status)
        fprintf(stderr, "expected %ld, got %ld: %.300s\n", status, r->status, r->body);
    CHECK_INT_EQ(r->status, status);
    return http_json(r);
}

json_t *gw_expect_json(struct gw *g, const char *method, const char *path, const char *const headers[],
                       const char *body, long status)
{
    struct http_resp *r = gw_do(g, method, path, headers, body);
    json_t *j;
    snprintf(checking, sizeof checking, "%s %s", method, path);
    j = http_ok_json(r, status);
    checking[0] = '\0';
    http_free(r);
    return j;
}

void gw_expect_error(struct gw *g, const char *method, const char *path, const char *const headers[],
                     const char *body, long status, const char *code)
{
    struct http_resp *r = gw_do(g, method, path, headers, body);
    snprintf(checking, sizeof checking, "%s %s", method, path);
    check_error(r, status, code);
    checking[0] = '\0';
    http_free(r);
}

void fill_pattern(unsigned char *buf, size_t len, unsigned seed)
{
    uint64_t x = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)(x >> 24);
    }
}

void sha256_hex(const void *buf, size_t len, char out[65])
{
    struct sg_hash h;
    CHECK(sg_hash_init(&h, 0) == 0);
    sg_hash_update(&h, buf, len);
    sg_hash_final(&h, out, NULL);
}

int gw_connect_raw(const struct gw *to)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(to->proc.port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(inet_pton(AF_INET, to->proc.host, &sa.sin_addr) == 1);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return fd;
}

void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        CHECK(n > 0);
        p += n;
        len -= (size_t)n;
    }
}
