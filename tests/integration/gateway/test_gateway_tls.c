/*
 * test_gateway_tls.c - HTTPS: every route over TLS with a CA the test makes with openssl, a wrong CA
 * refused, plain HTTP to the TLS port refused, SIGHUP swapping the certificate for new connections
 * while an old connection lives on, HSTS and a Secure session cookie.
 */
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static struct gw g;
static char dir[300];

/* Runs a shell command line built from fmt; fails the test when it does not exit 0. */
static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        fprintf(stderr, "failed: %s\n", cmd);
        CHECK(0);
    }
}

/* Makes a CA (NAME-ca.pem) and a server certificate for 127.0.0.1 and localhost signed by it (NAME.pem, NAME.key). */
static void make_pki(const char *name, const char *key_type)
{
    run("cd %s && openssl req -x509 -newkey %s -nodes -keyout %s-ca.key -out %s-ca.pem -days 2 -subj /CN=%s-ca "
        ">/dev/null 2>&1",
        dir, key_type, name, name, name);
    run("cd %s && openssl req -newkey %s -nodes -keyout %s.key -out %s.csr -subj /CN=localhost >/dev/null 2>&1 && "
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > %s.ext && "
        "openssl x509 -req -in %s.csr -CA %s-ca.pem -CAkey %s-ca.key -CAcreateserial -out %s.pem -days 2 "
        "-extfile %s.ext >/dev/null 2>&1",
        dir, key_type, name, name, name, name, name, name, name, name);
}

/* Every answer over HTTPS tells browsers to stay on HTTPS. */
static void check_hsts(const struct http_resp *r)
{
    char *h = http_header(r, "Strict-Transport-Security");
    CHECK(h && strncmp(h, "max-age=", 8) == 0);
    free(h);
}

static void test_every_route(void)
{
    static const char *const mp_headers[] = {"Content-Type: multipart/form-data; boundary=XyZ", NULL};
    static const char *const chunked[] = {"Transfer-Encoding: chunked", NULL};
    const char *mp = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"mp.txt\"\r\n\r\nmultipart"
                     "\r\n--XyZ--\r\n";
    const char *paths[] = {"/healthz", "/readyz", "/metrics", "/", "/api/v1/openapi.json", "/api/v1/time",
                           "/api/v1/files", "/api/v1/chat/peers"};
    struct http_resp *r;
    json_t *j;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        r = gw_do(&g, "GET", paths[i], NULL, NULL);
        CHECK_INT_EQ(r->status, 200);
        check_hsts(r);
        http_free(r);
    }
    j = gw_expect_json(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"over tls\"}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "OVER TLS");
    json_decref(j);
    j = gw_expect_json(&g, "POST", "/api/v1/exec", gw_json_headers, "{\"argv\": [\"echo\", \"hi\"]}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "hi\n");
    json_decref(j);
    /* Upload (Content-Length, chunked, multipart), download, HEAD, Range, delete. */
    r = gw_do(&g, "PUT", "/api/v1/files/tls.txt", NULL, "secret bytes");
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    r = gw_do(&g, "PUT", "/api/v1/files/chunked.txt", chunked, "chunked bytes");
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    r = gw_do(&g, "POST", "/api/v1/files", mp_headers, mp);
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/files/tls.txt", NULL, NULL);
    CHECK(r->status == 200 && r->len == 12 && memcmp(r->body, "secret bytes", 12) == 0);
    check_hsts(r);
    http_free(r);
    {
        const char *range[] = {"Range: bytes=7-11", NULL};
        r = gw_do(&g, "GET", "/api/v1/files/tls.txt", range, NULL);
        CHECK(r->status == 206 && r->len == 5 && memcmp(r->body, "bytes", 5) == 0);
        http_free(r);
    }
    r = gw_do(&g, "HEAD", "/api/v1/files/mp.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    r = gw_do(&g, "DELETE", "/api/v1/files/chunked.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
}

/* The chat's event stream (SSE) over TLS: the first event arrives. */
static size_t first_event(char *data, size_t size, size_t n, void *ctx)
{
    char *seen = ctx;
    size_t have = strlen(seen), add = size * n;
    if (add > 4000 - have)
        add = 4000 - have;
    memcpy(seen + have, data, add);
    seen[have + add] = '\0';
    return strstr(seen, "event: subscribed") ? 0 : size * n; /* 0 ends the transfer once it came */
}

static void test_event_stream(void)
{
    char url[300], seen[4001] = "";
    CURL *c = curl_easy_init();
    snprintf(url, sizeof url, "%s/api/v1/chat/events", g.base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, gw_ca_file);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, first_event);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, (void *)seen);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_perform(c); /* ends with a write error: the callback stopped it */
    curl_easy_cleanup(c);
    CHECK(strstr(seen, "event: subscribed") != NULL);
}

/* Returns curl's result of GET /healthz trusting ca (NULL: the system's store). */
static CURLcode get_with_ca(const char *ca)
{
    char url[300];
    CURLcode rc;
    CURL *c = curl_easy_init();
    snprintf(url, sizeof url, "%s/healthz", g.base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (ca)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    return rc;
}

static void test_wrong_ca_refused(void)
{
    char other[400];
    snprintf(other, sizeof other, "%s/other-ca.pem", dir);
    CHECK(get_with_ca(other) == CURLE_PEER_FAILED_VERIFICATION);
    CHECK(get_with_ca(gw_ca_file) == CURLE_OK);
}

/* Plain HTTP to the TLS port gets no answer and no hang: the connection is closed within seconds. */
static void test_plain_http_refused(void)
{
    struct sg_addr a;
    char err[200], buf[512];
    int fd = -1;
    struct pollfd p;
    ssize_t n = 0;
    CHECK(sg_addr_parse(g.proc.addr, &a, err, sizeof err) == SG_OK);
    CHECK(sg_connect(&a, SOCK_STREAM, 5000, &fd, err, sizeof err) == SG_OK);
    CHECK(sg_write_all(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 41, sg_deadline_after(5000)) == SG_OK);
    p = (struct pollfd){.fd = fd, .events = POLLIN};
    CHECK(poll(&p, 1, 10000) == 1);
    n = recv(fd, buf, sizeof buf, 0);
    /* Closed (0) or reset (-1), never an HTTP answer in plain text. */
    CHECK(n <= 0 || memcmp(buf, "HTTP/", 5) != 0);
    close(fd);
}

/* The serial number of the certificate a new connection gets (from curl's certificate info). */
static void served_serial(CURL *c, char *out, size_t outlen)
{
    struct curl_certinfo *ci = NULL;
    out[0] = '\0';
    CHECK(curl_easy_getinfo(c, CURLINFO_CERTINFO, &ci) == CURLE_OK && ci && ci->num_of_certs > 0);
    for (struct curl_slist *s = ci->certinfo[0]; s; s = s->next)
        if (strncmp(s->data, "Serial Number:", 14) == 0)
            snprintf(out, outlen, "%s", s->data + 14);
}

static long get_on(CURL *c, long *new_conns)
{
    char url[300];
    long status = 0;
    snprintf(url, sizeof url, "%s/healthz", g.base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    CHECK(curl_easy_perform(c) == CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, new_conns);
    return status;
}

/*
 * SIGHUP after the files were renewed: a new connection gets the new
 * certificate, a connection opened before keeps working, and a broken file
 * on a later SIGHUP keeps the certificate in use.
 */
static void test_sighup_swaps_certificate(void)
{
    CURL *old = curl_easy_init(), *fresh;
    FILE *devnull = fopen("/dev/null", "w");
    char before[200], after[200];
    long conns = 0;
    curl_easy_setopt(old, CURLOPT_CAINFO, gw_ca_file);
    curl_easy_setopt(old, CURLOPT_CERTINFO, 1L);
    curl_easy_setopt(old, CURLOPT_WRITEDATA, devnull);
    CHECK_INT_EQ(get_on(old, &conns), 200);
    CHECK_INT_EQ(conns, 1);
    served_serial(old, before, sizeof before);
    CHECK(before[0] != '\0');
    /* The renewal: a new key and certificate from the same CA, written over the old files. */
    run("cd %s && openssl req -newkey rsa:2048 -nodes -keyout renewed.key -out renewed.csr -subj /CN=localhost "
        ">/dev/null 2>&1 && openssl x509 -req -in renewed.csr -CA srv-ca.pem -CAkey srv-ca.key -CAcreateserial "
        "-out renewed.pem -days 2 -extfile srv.ext >/dev/null 2>&1 && cp renewed.pem srv.pem && cp renewed.key srv.key",
        dir);
    CHECK(kill(g.proc.pid, SIGHUP) == 0);
    for (int i = 0; i < 100; i++) {
        fresh = curl_easy_init();
        curl_easy_setopt(fresh, CURLOPT_CAINFO, gw_ca_file);
        curl_easy_setopt(fresh, CURLOPT_CERTINFO, 1L);
        curl_easy_setopt(fresh, CURLOPT_WRITEDATA, devnull);
        CHECK_INT_EQ(get_on(fresh, &conns), 200);
        served_serial(fresh, after, sizeof after);
        curl_easy_cleanup(fresh);
        if (strcmp(after, before) != 0)
            break;
        usleep(50 * 1000); /* the signal thread may not have run yet */
    }
    CHECK(strcmp(after, before) != 0);
    /* The connection opened before the swap is still the same one, and still served. */
    CHECK_INT_EQ(get_on(old, &conns), 200);
    CHECK_INT_EQ(conns, 0);
    /* A broken renewal: the gateway keeps serving the certificate it has. */
    run("cd %s && echo broken > srv.pem", dir);
    CHECK(kill(g.proc.pid, SIGHUP) == 0);
    usleep(300 * 1000);
    CHECK(get_with_ca(gw_ca_file) == CURLE_OK);
    CHECK(kill(g.proc.pid, 0) == 0);
    curl_easy_cleanup(old);
    fclose(devnull);
}

static void test_secure_cookie(void)
{
    struct gw tg;
    char cert[400], key[400];
    const char *auth[] = {"Authorization: Bearer tls-token", NULL};
    struct http_resp *r;
    char *cookie;
    snprintf(cert, sizeof cert, "%s/second.pem", dir);
    snprintf(key, sizeof key, "%s/second.key", dir);
    {
        const char *args[] = {"--tls-cert", cert, "--tls-key", key, "--token", "tls-token", NULL};
        gw_start(&tg, args);
    }
    CHECK(tg.proc.is_https);
    snprintf(gw_ca_file, sizeof gw_ca_file, "%s/second-ca.pem", dir);
    r = gw_do(&tg, "POST", "/api/v1/session", auth, "");
    CHECK_INT_EQ(r->status, 204);
    cookie = http_header(r, "Set-Cookie");
    CHECK(cookie && strstr(cookie, "; Secure") && strstr(cookie, "HttpOnly"));
    free(cookie);
    http_free(r);
    gw_stop(&tg);
    snprintf(gw_ca_file, sizeof gw_ca_file, "%s/srv-ca.pem", dir);
}

/* A certificate without its key, or a key of another certificate, stops the start (exit 2). */
static void test_bad_pair_is_a_start_error(void)
{
    char bin[512], cmd[1600];
    snprintf(cmd, sizeof cmd, "%s --listen 127.0.0.1:0 --tls-cert %s/second.pem --tls-key %s/other.key >/dev/null 2>&1",
             sg_test_bin("sockgate", bin, sizeof bin), dir, dir);
    CHECK_INT_EQ(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "%s --listen 127.0.0.1:0 --tls-cert %s/second.pem >/dev/null 2>&1",
             sg_test_bin("sockgate", bin, sizeof bin), dir);
    CHECK_INT_EQ(WEXITSTATUS(system(cmd)), 2);
}

int main(void)
{
    char cert[400], key[400];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    make_pki("srv", "ec -pkeyopt ec_paramgen_curve:P-256");
    make_pki("other", "ec -pkeyopt ec_paramgen_curve:P-256");
    make_pki("second", "rsa:2048");
    snprintf(cert, sizeof cert, "%s/srv.pem", dir);
    snprintf(key, sizeof key, "%s/srv.key", dir);
    snprintf(gw_ca_file, sizeof gw_ca_file, "%s/srv-ca.pem", dir);
    {
        const char *args[] = {"--tls-cert", cert, "--tls-key", key, NULL};
        gw_start(&g, args);
    }
    CHECK(g.proc.is_https);
    CHECK(strncmp(g.base, "https://", 8) == 0);
    RUN_TEST(test_every_route);
    RUN_TEST(test_event_stream);
    RUN_TEST(test_wrong_ca_refused);
    RUN_TEST(test_plain_http_refused);
    RUN_TEST(test_sighup_swaps_certificate);
    RUN_TEST(test_secure_cookie);
    RUN_TEST(test_bad_pair_is_a_start_error);
    gw_stop(&g);
    sg_test_rmtree(dir);
    curl_global_cleanup();
    return TESTS_DONE();
}
