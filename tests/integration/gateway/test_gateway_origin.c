/* test_gateway_origin.c - who may call a gateway: Host names (DNS rebinding) and writes from other origins. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"

#define EXEC_BODY "{\"argv\": [\"echo\", \"ran\"]}"
#define BOUNDARY "sgorigintest"

static struct gw g; /* the token-less gateway with no --allow-host */

/* Returns 1 when the file list of g names name. */
static int has_file(struct gw *gw, const char *name)
{
    json_t *list = gw_expect_json(gw, "GET", "/api/v1/files", NULL, NULL, 200);
    json_t *f;
    size_t i;
    int found = 0;
    json_array_foreach(json_object_get(list, "files"), i, f)
    {
        const char *n = json_string_value(json_object_get(f, "name"));
        found |= n && strcmp(n, name) == 0;
    }
    json_decref(list);
    return found;
}

/* POSTs a multipart form holding one small file named name, with one extra header (or NULL). */
static struct http_resp *upload(struct gw *gw, const char *name, const char *header)
{
    const char *headers[] = {"Content-Type: multipart/form-data; boundary=" BOUNDARY, header, NULL};
    char body[512];
    snprintf(body, sizeof body,
             "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"f\"; filename=\"%s\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\nplanted\r\n--" BOUNDARY "--\r\n",
             name);
    return gw_do(gw, "POST", "/api/v1/files", headers, body);
}

/* Runs an allowed command with the given Host header; returns the status. */
static long exec_with_host(struct gw *gw, const char *host)
{
    char hdr[300];
    const char *headers[] = {hdr, "Content-Type: application/json", NULL};
    struct http_resp *r;
    long status;
    snprintf(hdr, sizeof hdr, "Host: %s", host);
    r = gw_do(gw, "POST", "/api/v1/exec", headers, EXEC_BODY);
    status = r->status;
    if (status == 400)
        check_error(r, 400, "host_not_allowed");
    http_free(r);
    return status;
}

/* Without a token: a dotted name (what a rebinding attack needs) is refused on every path. */
static void test_rebinding_names_refused(void)
{
    const char *host[] = {"Host: attacker.example:8080", NULL};
    const char *paths[] = {"/api/v1/files", "/", "/healthz", "/api/v1/openapi.json"};
    CHECK_INT_EQ(exec_with_host(&g, "attacker.example:8080"), 400);
    CHECK_INT_EQ(exec_with_host(&g, "attacker.example."), 400);
    CHECK_INT_EQ(exec_with_host(&g, "127.0.0.1.nip.example"), 400);
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        gw_expect_error(&g, "GET", paths[i], host, NULL, 400, "host_not_allowed");
    /* Refused before the body is read: nothing is stored. */
    {
        const char *headers[] = {"Content-Type: application/octet-stream", "Host: attacker.example", NULL};
        gw_expect_error(&g, "PUT", "/api/v1/files/rebound.txt", headers, "planted", 400, "host_not_allowed");
    }
    CHECK(!has_file(&g, "rebound.txt"));
}

/* Addresses, single-label names and *.localhost cannot be rebound: they are answered. */
static void test_local_names_answered(void)
{
    const char *ok[] = {"127.0.0.1:8080", "127.0.0.1", "localhost", "localhost:8080", "LOCALHOST.",
                        "app.localhost:8080", "[::1]:8080", "[::1]", "10.0.0.7", "gateway:8080"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        long status = exec_with_host(&g, ok[i]);
        if (status != 200)
            fprintf(stderr, "  Host %s: status %ld\n", ok[i], status);
        CHECK_INT_EQ(status, 200);
    }
}

/* A form on another site's page may not store, overwrite or delete files. */
static void test_cross_site_writes_refused(void)
{
    const char *evil_delete[] = {"Origin: http://evil.example", NULL};
    const char *null_put[] = {"Origin: null", "Content-Type: application/octet-stream", NULL};
    char same[160], *acao;
    struct http_resp *r;

    r = upload(&g, "planted.txt", "Origin: http://evil.example");
    check_error(r, 403, "cross_origin_refused");
    http_free(r);
    CHECK(!has_file(&g, "planted.txt"));
    gw_expect_error(&g, "PUT", "/api/v1/files/planted.txt", null_put, "x", 403, "cross_origin_refused");
    CHECK(!has_file(&g, "planted.txt"));

    /* The page's own origin uploads; another origin cannot delete what it stored. */
    snprintf(same, sizeof same, "Origin: %s", g.base);
    r = upload(&g, "mine.txt", same);
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    CHECK(has_file(&g, "mine.txt"));
    gw_expect_error(&g, "DELETE", "/api/v1/files/mine.txt", evil_delete, NULL, 403, "cross_origin_refused");
    CHECK(has_file(&g, "mine.txt"));

    /* Reading is not a write: a cross-origin GET is answered (without CORS headers, the page cannot read it). */
    r = gw_do(&g, "GET", "/api/v1/files", evil_delete, NULL);
    CHECK_INT_EQ(r->status, 200);
    acao = http_header(r, "Access-Control-Allow-Origin");
    CHECK(acao == NULL);
    free(acao);
    http_free(r);

    /* No Origin at all (curl, the cli, a server): a write goes through. */
    r = gw_do(&g, "DELETE", "/api/v1/files/mine.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 204);
    http_free(r);
    CHECK(!has_file(&g, "mine.txt"));
}

/* --allow-host names the hosts answered (besides addresses); --cors-origin lets that origin write. */
static void test_configured_names_and_origins(void)
{
    const char *args[] = {"--allow-host", "sockgate.example", "--allow-host", ".corp.example",
                          "--cors-origin", "http://app.example", NULL};
    struct gw h;
    struct http_resp *r;
    gw_start(&h, args);
    CHECK_INT_EQ(exec_with_host(&h, "sockgate.example:8080"), 200);
    CHECK_INT_EQ(exec_with_host(&h, "corp.example"), 200);
    CHECK_INT_EQ(exec_with_host(&h, "gw.eu.corp.example"), 200);
    CHECK_INT_EQ(exec_with_host(&h, "127.0.0.1"), 200);
    CHECK_INT_EQ(exec_with_host(&h, "notcorp.example"), 400);
    /* With a list, only the list: single-label names are no longer implied. */
    CHECK_INT_EQ(exec_with_host(&h, "localhost"), 400);
    r = upload(&h, "allowed.txt", "Origin: http://app.example");
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    CHECK(has_file(&h, "allowed.txt"));
    r = upload(&h, "other.txt", "Origin: http://other.example");
    check_error(r, 403, "cross_origin_refused");
    http_free(r);
    CHECK(!has_file(&h, "other.txt"));
    gw_stop(&h);
}

/* A token already keeps a rebound page out, so any Host name is answered with it. */
static void test_token_answers_any_name(void)
{
    const char *args[] = {"--token", "t0ken", NULL};
    const char *headers[] = {"Host: sockgate.example", "Authorization: Bearer t0ken",
                             "Content-Type: application/json", NULL};
    struct gw h;
    json_t *j;
    gw_start(&h, args);
    j = gw_expect_json(&h, "POST", "/api/v1/exec", headers, EXEC_BODY, 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "ran\n");
    json_decref(j);
    gw_stop(&h);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    gw_start(&g, NULL);
    RUN_TEST(test_rebinding_names_refused);
    RUN_TEST(test_local_names_answered);
    RUN_TEST(test_cross_site_writes_refused);
    gw_stop(&g);
    RUN_TEST(test_configured_names_and_origins);
    RUN_TEST(test_token_answers_any_name);
    curl_global_cleanup();
    return TESTS_DONE();
}
