/* test_gateway_api.c - the gateway with every backend embedded: each API row, the errors, headers, docs. */
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"
#include "sockgate/net.h"

static struct gw g;

static void test_echo(void)
{
    json_t *j = gw_expect_json(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"hi there\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "HI THERE");
    json_decref(j);

    /* Only ASCII letters change: the UTF-8 bytes of é pass through untouched. */
    j = gw_expect_json(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"h\\u00e9llo 42\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "H\xc3\xa9LLO 42");
    json_decref(j);

    j = gw_expect_json(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "");
    json_decref(j);
}

static void test_echo_long_message(void)
{
    /* 40000 bytes cross the echo protocol's 16 KiB window in pieces and come back whole. */
    size_t n = 40000;
    char *msg = malloc(n + 1), *body = malloc(n + 32), *want = malloc(n + 1);
    json_t *j;
    CHECK(msg && body && want);
    for (size_t i = 0; i < n; i++) {
        msg[i] = (char)('a' + i % 26);
        want[i] = (char)('A' + i % 26);
    }
    msg[n] = want[n] = '\0';
    snprintf(body, n + 32, "{\"message\":\"%s\"}", msg);
    j = gw_expect_json(&g, "POST", "/api/v1/echo", gw_json_headers, body, 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), want);
    json_decref(j);
    free(msg);
    free(body);
    free(want);
}

static void test_echo_errors(void)
{
    const char *text_plain[] = {"Content-Type: text/plain", NULL};
    const char *json_type[] = {"Content-Type: application/json", NULL};
    char *big;
    gw_expect_error(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": ", 400, "invalid_request");
    gw_expect_error(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"msg\": \"x\"}", 400, "invalid_request");
    gw_expect_error(&g, "POST", "/api/v1/echo", gw_json_headers, "[1, 2]", 400, "invalid_request");
    gw_expect_error(&g, "POST", "/api/v1/echo", gw_json_headers, "", 400, "invalid_request");
    /* POST with neither Content-Length nor chunked encoding. */
    gw_expect_error(&g, "POST", "/api/v1/echo", json_type, NULL, 411, "length_required");
    gw_expect_error(&g, "POST", "/api/v1/echo", text_plain, "{\"message\": \"x\"}", 415, "unsupported_media_type");
    /* Over the default --max-json of 1 MiB: refused from its Content-Length, before any byte is read. */
    big = malloc(2u << 20);
    CHECK(big);
    memset(big, ' ', (2u << 20) - 1);
    big[(2u << 20) - 1] = '\0';
    {
        struct http_resp *r = gw_do(&g, "POST", "/api/v1/echo", gw_json_headers, big);
        check_error(r, 413, "too_large");
        CHECK(strstr(r->body, "at most 1M (--max-json)") != NULL); /* the limit as the user writes it */
        http_free(r);
    }
    free(big);
}

/* Errors in sockgate's words: unknown fields and query parameters named, one pattern per field, no parser flags. */
static void test_one_voice(void)
{
    struct http_resp *r = gw_post_json(&g, "/api/v1/exec", "{\"argv\": [\"true\"], \"timout_ms\": 5}");
    check_error(r, 400, "invalid_request");
    CHECK(strstr(r->body, "unknown field \\\"timout_ms\\\"") != NULL);
    CHECK(strstr(r->body, "timeout_ms") != NULL); /* the known ones are listed */
    http_free(r);
    r = gw_post_json(&g, "/api/v1/echo", "{\"message\": \"a\", \"extra\": 1}");
    check_error(r, 400, "invalid_request");
    CHECK(strstr(r->body, "unknown field \\\"extra\\\"") != NULL);
    http_free(r);
    r = gw_post_json(&g, "/api/v1/echo", "{\"message\": 5}");
    CHECK(strstr(r->body, "the field \\\"message\\\" must be a string") != NULL);
    http_free(r);
    r = gw_post_json(&g, "/api/v1/exec", "{\"argv\": [1]}");
    CHECK(strstr(r->body, "the field \\\"argv\\\"") != NULL);
    http_free(r);
    r = gw_post_json(&g, "/api/v1/echo", "{\"message\": \"a\\u0000b\"}");
    check_error(r, 400, "invalid_request");
    CHECK(strstr(r->body, "JSON_ALLOW_NUL") == NULL);
    CHECK(strstr(r->body, "NUL character") != NULL);
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/time?fromat=%25Y", NULL, NULL);
    check_error(r, 400, "invalid_request");
    CHECK(strstr(r->body, "unknown query parameter \\\"fromat\\\"") != NULL);
    CHECK(strstr(r->body, "format") != NULL);
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/files?x=1", NULL, NULL);
    check_error(r, 400, "invalid_request");
    http_free(r);
    r = gw_do(&g, "PUT", "/api/v1/files/a%00b", NULL, "x");
    check_error(r, 400, "invalid_name");
    CHECK(strstr(r->body, "NUL byte") != NULL);
    http_free(r);
}

/* Writes the local year of t into buf. */
static void year_of(time_t t, char *buf, size_t cap)
{
    struct tm tm;
    localtime_r(&t, &tm);
    snprintf(buf, cap, "%d", tm.tm_year + 1900);
}

static void test_time(void)
{
    char before[16], after[16];
    const char *got;
    json_t *j;
    year_of(time(NULL), before, sizeof before);
    j = gw_expect_json(&g, "GET", "/api/v1/time?format=%25Y", NULL, NULL, 200);
    year_of(time(NULL), after, sizeof after);
    /* Around New Year the gateway may answer with either year. */
    got = json_string_value(json_object_get(j, "time"));
    CHECK(got && (strcmp(got, before) == 0 || strcmp(got, after) == 0));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "format")), "%Y");
    json_decref(j);

    j = gw_expect_json(&g, "GET", "/api/v1/time", NULL, NULL, 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "format")), "%Y-%m-%d %X");
    /* "2024-05-01 12:34:56": the tutorial's default format. */
    CHECK_INT_EQ(strlen(json_string_value(json_object_get(j, "time"))), 19);
    json_decref(j);
}

static void test_time_errors(void)
{
    char path[1200] = "/api/v1/time?format=";
    size_t n = strlen(path);
    for (int i = 0; i < 300; i++)
        path[n++] = 'x';
    path[n] = '\0';
    gw_expect_error(&g, "GET", path, NULL, NULL, 400, "invalid_request");
}

static void test_exec(void)
{
    json_t *j = gw_expect_json(&g, "POST", "/api/v1/exec",
                               gw_json_headers, "{\"argv\": [\"echo\", \"a\", \"b\"]}", 200);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "exit_code")), 0);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "a b\n");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stderr")), "");
    CHECK(json_is_false(json_object_get(j, "timed_out")));
    CHECK(json_is_false(json_object_get(j, "truncated")));
    CHECK(json_is_integer(json_object_get(j, "duration_ms")));
    json_decref(j);

    /* A command line is split with shell quoting, and no shell runs it: ';' is a plain word. */
    j = gw_expect_json(&g, "POST", "/api/v1/exec", gw_json_headers, "{\"command\": \"echo 'a  b' ; c\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "a  b ; c\n");
    json_decref(j);

    j = gw_expect_json(&g, "POST", "/api/v1/exec",
                       gw_json_headers, "{\"argv\": [\"cat\"], \"stdin\": \"from stdin\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "from stdin");
    json_decref(j);

    j = gw_expect_json(&g, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"false\"]}", 200);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "exit_code")), 1);
    json_decref(j);
}

static void test_exec_binary_output(void)
{
    /* 0xff 0xfe is not UTF-8: it comes back as base64 instead of text. */
    json_t *j = gw_expect_json(&g, "POST", "/api/v1/exec",
                               gw_json_headers, "{\"argv\": [\"printf\", \"\\\\377\\\\376\"]}", 200);
    CHECK(json_object_get(j, "stdout") == NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout_base64")), "//4=");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stderr")), "");
    json_decref(j);
}

static void test_exec_timeout(void)
{
    json_t *j = gw_expect_json(&g, "POST", "/api/v1/exec",
                               gw_json_headers, "{\"argv\": [\"sleep\", \"30\"], \"timeout_ms\": 300}", 200);
    CHECK(json_is_true(json_object_get(j, "timed_out")));
    json_decref(j);
}

static void test_exec_errors(void)
{
    gw_expect_error(&g, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"rm\", \"-rf\", \"x\"]}", 403, "command_not_allowed");
    gw_expect_error(&g, "POST", "/api/v1/exec",
                    gw_json_headers, "{\"argv\": [\"echo\"], \"command\": \"echo\"}", 400, "invalid_request");
    gw_expect_error(&g, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": []}", 400, "invalid_request");
    gw_expect_error(&g, "POST", "/api/v1/exec",
                    gw_json_headers, "{\"command\": \"echo 'unterminated\"}", 400, "invalid_request");
    gw_expect_error(&g, "POST", "/api/v1/exec",
                    gw_json_headers, "{\"argv\": [\"echo\"], \"timeout_ms\": -5}", 400, "invalid_request");
}

static struct http_resp *put_bytes(const char *name, const void *data, size_t len)
{
    const char *octet[] = {"Content-Type: application/octet-stream", NULL};
    char url[512];
    snprintf(url, sizeof url, "%s/api/v1/files/%s", g.base, name);
    return http_do("PUT", url, octet, data, len);
}

static void test_files(void)
{
    unsigned char data[5000];
    char want[65], got[65], *h;
    struct http_resp *r;
    json_t *j, *list;
    size_t i;
    int seen = 0;

    fill_pattern(data, sizeof data, 1);
    sha256_hex(data, sizeof data, want);
    r = put_bytes("hello%20world.bin", data, sizeof data);
    j = http_ok_json(r, 201);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "name")), "hello world.bin");
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "size")), sizeof data);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "sha256")), want);
    check_header(r, "Location", "/api/v1/files/hello%20world.bin");
    json_decref(j);
    http_free(r);

    j = gw_expect_json(&g, "GET", "/api/v1/files", NULL, NULL, 200);
    list = json_object_get(j, "files");
    CHECK(json_is_array(list));
    for (i = 0; i < json_array_size(list); i++) {
        json_t *f = json_array_get(list, i);
        if (strcmp(json_string_value(json_object_get(f, "name")), "hello world.bin") != 0)
            continue;
        seen = 1;
        CHECK_INT_EQ(json_integer_value(json_object_get(f, "size")), sizeof data);
        CHECK_STR_EQ(json_string_value(json_object_get(f, "sha256")), want);
        CHECK(json_integer_value(json_object_get(f, "mtime_ms")) > 1000000000000LL);
    }
    CHECK(seen);
    json_decref(j);

    r = gw_do(&g, "GET", "/api/v1/files/hello%20world.bin", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_INT_EQ(r->len, sizeof data);
    sha256_hex(r->body, r->len, got);
    CHECK_STR_EQ(got, want);
    h = http_header(r, "Content-Disposition");
    CHECK(h && strstr(h, "attachment") && strstr(h, "hello world.bin"));
    free(h);
    http_free(r);

    r = gw_do(&g, "HEAD", "/api/v1/files/hello%20world.bin", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_INT_EQ(r->len, 0);
    check_header(r, "Content-Length", "5000");
    h = http_header(r, "ETag");
    CHECK(h && strlen(h) == 66 && strncmp(h + 1, want, 64) == 0);
    free(h);
    http_free(r);

    r = gw_do(&g, "DELETE", "/api/v1/files/hello%20world.bin", NULL, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    gw_expect_error(&g, "GET", "/api/v1/files/hello%20world.bin", NULL, NULL, 404, "not_found");
    gw_expect_error(&g, "DELETE", "/api/v1/files/hello%20world.bin", NULL, NULL, 404, "not_found");
}

static void test_files_errors(void)
{
    struct http_resp *r = put_bytes(".hidden", "x", 1);
    check_error(r, 400, "invalid_name");
    http_free(r);
    gw_expect_error(&g, "PUT", "/api/v1/files/empty-put", NULL, NULL, 411, "length_required");
    /* An explicitly empty body is a legitimate empty file. */
    r = put_bytes("empty", "", 0);
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/files/empty", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_INT_EQ(r->len, 0);
    http_free(r);
}

static void test_routing_errors(void)
{
    struct http_resp *r;
    gw_expect_error(&g, "GET", "/api/v1/nothing-here", NULL, NULL, 404, "not_found");
    r = gw_do(&g, "PATCH", "/api/v1/files/x", NULL, NULL);
    check_error(r, 405, "method_not_allowed");
    check_header(r, "Allow", "GET, HEAD, PUT, DELETE, OPTIONS");
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/echo", NULL, NULL);
    check_error(r, 405, "method_not_allowed");
    check_header(r, "Allow", "POST, OPTIONS");
    http_free(r);
    r = gw_do(&g, "OPTIONS", "/api/v1/files", NULL, NULL);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Allow", "GET, HEAD, POST, OPTIONS");
    http_free(r);
}

static void test_request_id(void)
{
    const char *given[] = {"X-Request-Id: test-id-42", NULL};
    const char *bad[] = {"X-Request-Id: has spaces and \"quotes\"", NULL};
    struct http_resp *r = gw_do(&g, "GET", "/healthz", given, NULL);
    char *h = http_header(r, "X-Request-Id"), *h2, line[4096];
    FILE *log;
    int logged = 0;
    CHECK_STR_EQ(h, "test-id-42");
    free(h);
    http_free(r);

    /* A plain id the client did not send, or sent malformed, is replaced by a fresh one each time. */
    r = gw_do(&g, "GET", "/healthz", bad, NULL);
    h = http_header(r, "X-Request-Id");
    http_free(r);
    r = gw_do(&g, "GET", "/healthz", NULL, NULL);
    h2 = http_header(r, "X-Request-Id");
    http_free(r);
    CHECK(h && h2 && *h && *h2 && strcmp(h, h2) != 0 && !strchr(h, ' '));
    free(h);
    free(h2);

    /* The access log has one line for the request, with its id. */
    log = fopen(g.proc.log_path, "r");
    CHECK(log);
    while (fgets(line, sizeof line, log))
        if (strstr(line, "test-id-42") && strstr(line, "/healthz") && strstr(line, "200"))
            logged++;
    fclose(log);
    CHECK_INT_EQ(logged, 1);
}

static void test_security_headers(void)
{
    struct http_resp *r = gw_do(&g, "GET", "/healthz", NULL, NULL);
    char *h = http_header(r, "X-Content-Type-Options");
    CHECK_STR_EQ(h, "nosniff");
    free(h);
    h = http_header(r, "Content-Security-Policy");
    CHECK(h && strstr(h, "default-src 'none'"));
    free(h);
    http_free(r);
}

static void test_page(void)
{
    char path[600], *want = NULL, *h;
    const char *src = getenv("SOCKGATE_SOURCE_DIR");
    struct http_resp *r = gw_do(&g, "GET", "/", NULL, NULL);
    FILE *f;
    long n = 0;

    snprintf(path, sizeof path, "%s/web/index.html", src ? src : ".");
    f = fopen(path, "rb");
    if (!f) {
        /* Built without a page: / is simply not there. */
        check_error(r, 404, "not_found");
        http_free(r);
        return;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    want = malloc((size_t)n + 1);
    CHECK(want && fread(want, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    CHECK_INT_EQ(r->status, 200);
    CHECK_INT_EQ(r->len, n);
    CHECK(memcmp(r->body, want, (size_t)n) == 0);
    h = http_header(r, "Content-Type");
    CHECK(h && strncmp(h, "text/html", 9) == 0);
    free(h);
    h = http_header(r, "Content-Security-Policy");
    CHECK(h && strstr(h, "default-src 'self'") && strstr(h, "frame-ancestors 'none'"));
    free(h);
    free(want);
    http_free(r);
    gw_expect_error(&g, "GET", "/no-such-asset.js", NULL, NULL, 404, "not_found");
}

static void test_web_root(void)
{
    struct gw w;
    const char *args[] = {"--web-root", NULL, NULL};
    char dir[300], file[400];
    struct http_resp *r;
    FILE *f;
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(file, sizeof file, "%s/index.html", dir);
    f = fopen(file, "w");
    CHECK(f);
    fputs("<p>from the web root</p>\n", f);
    fclose(f);
    args[1] = dir;
    gw_start(&w, args);
    r = gw_do(&w, "GET", "/", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "<p>from the web root</p>\n");
    http_free(r);
    gw_expect_error(&w, "GET", "/.secret", NULL, NULL, 404, "not_found");
    gw_stop(&w);
    sg_test_rmtree(dir);
}

static void test_health(void)
{
    struct http_resp *r = gw_do(&g, "GET", "/healthz", NULL, NULL);
    json_t *j = http_ok_json(r, 200), *b;
    const char *names[] = {"echo", "time", "exec", "file"};
    CHECK_STR_EQ(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    http_free(r);

    j = gw_expect_json(&g, "GET", "/readyz", NULL, NULL, 200);
    CHECK(json_is_true(json_object_get(j, "ready")));
    b = json_object_get(j, "backends");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        json_t *one = json_object_get(b, names[i]);
        CHECK(json_is_true(json_object_get(one, "ok")));
        CHECK(json_is_true(json_object_get(one, "embedded")));
        const char *addr = json_string_value(json_object_get(one, "address"));
        char dir[256];
        struct stat st;
        /* Embedded backends sit on UNIX sockets in one private directory only this user may enter. */
        CHECK(addr && strncmp(addr, "unix:", 5) == 0 && strlen(addr) < sizeof dir);
        snprintf(dir, sizeof dir, "%s", addr + 5);
        CHECK(strrchr(dir, '/') != NULL);
        *strrchr(dir, '/') = '\0';
        CHECK(stat(addr + 5, &st) == 0 && S_ISSOCK(st.st_mode));
        CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
        CHECK_INT_EQ(st.st_mode & 07777, 0700);
    }
    json_decref(j);
}

static void test_metrics(void)
{
    int64_t deadline = sg_now_ms() + 10000;
    struct http_resp *r;
    char *h;
    /*
     * An earlier request leaves the gauges once its connection has sent the
     * last byte (libmicrohttpd's completion callback), which its client may
     * see first: this request can find it still in flight for a moment.
     */
    for (;;) {
        r = gw_do(&g, "GET", "/metrics", NULL, NULL);
        if ((strstr(r->body, "sockgate_uploads_in_flight 0\n") &&
             strstr(r->body, "sockgate_http_requests_in_flight 1\n")) ||
            sg_now_ms() >= deadline)
            break;
        http_free(r);
        usleep(20 * 1000);
    }
    h = http_header(r, "Content-Type");
    CHECK_INT_EQ(r->status, 200);
    CHECK(h && strncmp(h, "text/plain", 10) == 0);
    free(h);
    /* Earlier tests made these: answered requests, by route and status. */
    CHECK(strstr(r->body, "sockgate_http_requests_total{route=\"echo\",status=\"200\"} "));
    CHECK(strstr(r->body, "sockgate_http_requests_total{route=\"exec\",status=\"403\"} "));
    CHECK(strstr(r->body, "sockgate_http_requests_total{route=\"files_put\",status=\"201\"} "));
    CHECK(strstr(r->body, "sockgate_http_request_duration_seconds_bucket{route=\"echo\",le=\"+Inf\"} "));
    CHECK(strstr(r->body, "sockgate_http_request_duration_seconds_count{route=\"time\"} "));
    CHECK(strstr(r->body, "sockgate_http_bytes_total{route=\"files_put\",direction=\"in\"} "));
    CHECK(strstr(r->body, "sockgate_backend_errors_total{backend=\"file\"} "));
    CHECK(strstr(r->body, "sockgate_uploads_in_flight 0\n"));
    /* This very request is in flight while the text is made. */
    CHECK(strstr(r->body, "sockgate_http_requests_in_flight 1\n"));
    http_free(r);
    /*
     * The bytes /metrics sent are counted like any other answer's (they used to
     * be 0). They are counted when libmicrohttpd reports the answer complete,
     * which may come after the client already has it, and the next request may
     * land on another worker: ask again until it shows, within a deadline.
     */
    deadline = sg_now_ms() + 5000;
    for (;;) {
        r = gw_do(&g, "GET", "/metrics", NULL, NULL);
        if (!strstr(r->body, "sockgate_http_bytes_total{route=\"metrics\",direction=\"out\"} 0\n") ||
            sg_now_ms() >= deadline)
            break;
        http_free(r);
        usleep(20 * 1000);
    }
    CHECK(strstr(r->body, "sockgate_http_bytes_total{route=\"metrics\",direction=\"out\"} 0\n") == NULL);
    CHECK(strstr(r->body, "sockgate_http_bytes_total{route=\"metrics\",direction=\"out\"} "));
    http_free(r);
}

/* A spool directory that cannot hold a file stops the start (exit 2, a message), not the first upload. */
static void test_unusable_spool_dir_is_a_start_error(void)
{
    char bin[512], cmd[800], out[1024] = "";
    size_t n;
    FILE *p;
    snprintf(cmd, sizeof cmd, "%s --listen 127.0.0.1:0 --spool-dir /nonexistent/sockgate-spool 2>&1",
             sg_test_bin("sockgate", bin, sizeof bin));
    p = popen(cmd, "r");
    CHECK(p);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    CHECK_INT_EQ(WEXITSTATUS(pclose(p)), 2);
    CHECK(strstr(out, "--spool-dir") != NULL);
    CHECK(strstr(out, "listening on") == NULL);
}

/* Lower-cases an HTTP method for an OpenAPI operation key. */
static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* Returns 1 when the router lists method on path (routes: "METHOD PATTERN" lines, each ending in a newline). */
static int router_serves(const char *routes, const char *method, const char *path)
{
    char want[300];
    snprintf(want, sizeof want, "%s %s\n", method, path);
    return strstr(routes, want) != NULL;
}

static void test_openapi(void)
{
    struct http_resp *r = gw_do(&g, "GET", "/api/v1/openapi.json", NULL, NULL);
    json_t *doc = http_ok_json(r, 200), *paths = json_object_get(doc, "paths"), *ops;
    char cmd[600], bin[512], method[16], path[256], name[64], routes[8192] = "";
    const char *key;
    size_t n_routes = 0;
    FILE *p;

    CHECK(strncmp(json_string_value(json_object_get(doc, "openapi")), "3.", 2) == 0);
    CHECK(json_is_object(paths));
    snprintf(cmd, sizeof cmd, "%s --print-routes", sg_test_bin("sockgate", bin, sizeof bin));
    p = popen(cmd, "r");
    CHECK(p);
    while (fscanf(p, "%15s %255s %63s", method, path, name) == 3) {
        json_t *item = json_object_get(paths, path);
        size_t used = strlen(routes);
        snprintf(routes + used, sizeof routes - used, "%s %s\n", method, path);
        lower(method);
        if (!json_object_get(item, method))
            fprintf(stderr, "docs/openapi.json lacks %s %s\n", method, path);
        CHECK(json_object_get(item, method) != NULL);
        n_routes++;
    }
    CHECK_INT_EQ(pclose(p), 0);
    CHECK(n_routes >= 14);
    /*
     * And the other way round: the document promises nothing the router does
     * not serve. HEAD is served wherever GET is, OPTIONS on every known path.
     * Every operation lists 400 (the Host and header rules run first, on every
     * path) and 501 (a Transfer-Encoding that is not plain chunked).
     */
    json_object_foreach(paths, key, ops)
    {
        const char *m;
        json_t *op;
        json_object_foreach(ops, m, op)
        {
            char upper[16];
            size_t i;
            json_t *responses = json_object_get(op, "responses");
            if (strcmp(m, "parameters") == 0)
                continue;
            for (i = 0; m[i] && i + 1 < sizeof upper; i++)
                upper[i] = (char)(m[i] >= 'a' && m[i] <= 'z' ? m[i] - 'a' + 'A' : m[i]);
            upper[i] = '\0';
            if (!router_serves(routes, upper, key) && !(strcmp(upper, "HEAD") == 0 && router_serves(routes, "GET", key)) &&
                strcmp(upper, "OPTIONS") != 0)
                fprintf(stderr, "docs/openapi.json has %s %s, which the router does not serve\n", upper, key);
            CHECK(router_serves(routes, upper, key) || (strcmp(upper, "HEAD") == 0 && router_serves(routes, "GET", key)) ||
                  strcmp(upper, "OPTIONS") == 0);
            CHECK(json_object_get(responses, "400") != NULL);
            CHECK(json_object_get(responses, "501") != NULL);
        }
        CHECK(json_object_get(ops, "options") != NULL);
    }
    json_decref(doc);
    http_free(r);
}

struct slow_call {
    struct gw *g;
    long status;
    atomic_int done;
};

static void *run_slow_exec(void *arg)
{
    struct slow_call *c = arg;
    /* Long enough that a loaded machine still sees it in flight before it ends. */
    struct http_resp *r = gw_post_json(c->g, "/api/v1/exec", "{\"command\": \"sleep 3\"}");
    c->status = r->status;
    http_free(r);
    atomic_store(&c->done, 1);
    return NULL;
}

static long in_flight(struct gw *gw)
{
    struct http_resp *r = gw_do(gw, "GET", "/metrics", NULL, NULL);
    const char *at = strstr(r->body, "\nsockgate_http_requests_in_flight ");
    long n = at ? atol(at + strlen("\nsockgate_http_requests_in_flight ")) : -1;
    http_free(r);
    return n;
}

static void test_sigterm_waits_for_requests(void)
{
    struct slow_call c = {.g = &g};
    pthread_t t;
    int polls = 0;
    CHECK(pthread_create(&t, NULL, run_slow_exec, &c) == 0);
    /* Wait (bounded) until the slow request is in flight besides this /metrics call. */
    while (in_flight(&g) < 2 && polls++ < 500 && !atomic_load(&c.done))
        usleep(10 * 1000);
    if (atomic_load(&c.done))
        fprintf(stderr, "the slow exec ended (status %ld) before it was seen in flight\n", c.status);
    CHECK(polls < 500 && !atomic_load(&c.done));
    /* SIGTERM now: the in-flight command still gets its answer, then the gateway exits 0. */
    CHECK_INT_EQ(sg_proc_stop(&g.proc, 15000), 0);
    pthread_join(t, NULL);
    CHECK_INT_EQ(c.status, 200);
    sg_test_rmtree(g.dir);
}

/* A call the gateway may cut: status 0 when no answer came (here a cut is the expected outcome). */
static void *run_long_exec(void *arg)
{
    struct slow_call *c = arg;
    static const char body[] = "{\"command\": \"sleep 30\", \"timeout_ms\": 60000}";
    struct curl_slist *list = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *h = curl_easy_init();
    char url[sizeof c->g->base + 16];
    long status = 0;
    snprintf(url, sizeof url, "%s/api/v1/exec", c->g->base);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    c->status = status;
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
    atomic_store(&c->done, 1);
    return NULL;
}

/*
 * A call still waiting on its backend when the grace period ends is cut and
 * the gateway exits 0 (libmicrohttpd 0.9.75 aborts the whole process when a
 * daemon stops with a parked connection: it used to end on SIGABRT here).
 */
static void test_sigterm_after_grace_cuts_parked_calls(void)
{
    const char *args[] = {"--allow", "sleep", "--grace", "500ms", "--threads", "1", NULL};
    struct gw g2;
    struct slow_call c = {.g = &g2};
    pthread_t t;
    int polls = 0;
    gw_start(&g2, args);
    CHECK(pthread_create(&t, NULL, run_long_exec, &c) == 0);
    while (in_flight(&g2) < 2 && polls++ < 500 && !atomic_load(&c.done))
        usleep(10 * 1000);
    CHECK(polls < 500 && !atomic_load(&c.done));
    CHECK_INT_EQ(sg_proc_stop(&g2.proc, 15000), 0);
    pthread_join(t, NULL);
    CHECK(c.status != 200); /* cut: no answer, never a made-up one */
    sg_test_rmtree(g2.dir);
}

int main(void)
{
    const char *args[] = {"--allow", "echo,cat,printf,sleep,false", NULL};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    gw_start(&g, args);
    RUN_TEST(test_echo);
    RUN_TEST(test_echo_long_message);
    RUN_TEST(test_echo_errors);
    RUN_TEST(test_one_voice);
    RUN_TEST(test_time);
    RUN_TEST(test_time_errors);
    RUN_TEST(test_exec);
    RUN_TEST(test_exec_binary_output);
    RUN_TEST(test_exec_timeout);
    RUN_TEST(test_exec_errors);
    RUN_TEST(test_files);
    RUN_TEST(test_files_errors);
    RUN_TEST(test_routing_errors);
    RUN_TEST(test_request_id);
    RUN_TEST(test_security_headers);
    RUN_TEST(test_page);
    RUN_TEST(test_web_root);
    RUN_TEST(test_health);
    RUN_TEST(test_metrics);
    RUN_TEST(test_openapi);
    RUN_TEST(test_unusable_spool_dir_is_a_start_error);
    RUN_TEST(test_sigterm_waits_for_requests);
    RUN_TEST(test_sigterm_after_grace_cuts_parked_calls);
    curl_global_cleanup();
    return TESTS_DONE();
}
