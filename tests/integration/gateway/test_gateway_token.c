/* test_gateway_token.c - a token-protected gateway with one CORS origin: who gets in, who gets CORS headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"

static struct gw g;

#define TOKEN "s3cret-token"
#define ORIGIN "http://app.example"

static void test_api_needs_token(void)
{
    const char *wrong[] = {"Authorization: Bearer not-the-token", NULL};
    const char *prefix[] = {"Authorization: Bearer s3cret", NULL};
    const char *basic[] = {"Authorization: Basic czNjcmV0LXRva2Vu", NULL};
    const char *paths[] = {"/api/v1/files", "/api/v1/time", "/api/v1/openapi.json", "/api/v1/files/x"};
    struct http_resp *r;
    char *h;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        r = gw_do(&g, "GET", paths[i], NULL, NULL);
        check_error(r, 401, "unauthorized");
        h = http_header(r, "WWW-Authenticate");
        CHECK(h && strncmp(h, "Bearer", 6) == 0);
        free(h);
        http_free(r);
    }
    gw_expect_error(&g, "GET", "/api/v1/files", wrong, NULL, 401, "unauthorized");
    gw_expect_error(&g, "GET", "/api/v1/files", prefix, NULL, 401, "unauthorized");
    gw_expect_error(&g, "GET", "/api/v1/files", basic, NULL, 401, "unauthorized");
    /* Refused before its body is read, whatever the body. */
    gw_expect_error(&g, "POST", "/api/v1/echo", gw_json_headers, "{\"message\": \"x\"}", 401, "unauthorized");
}

static void test_right_token_works(void)
{
    const char *auth[] = {"Authorization: Bearer " TOKEN, "Content-Type: application/json", NULL};
    const char *lower[] = {"Authorization: bearer " TOKEN, NULL};
    struct http_resp *r = gw_do(&g, "POST", "/api/v1/echo", auth, "{\"message\": \"with token\"}");
    json_t *j;
    CHECK_INT_EQ(r->status, 200);
    j = http_json(r);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "WITH TOKEN");
    json_decref(j);
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/files", lower, NULL);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
}

static void test_probes_stay_open(void)
{
    const char *paths[] = {"/healthz", "/readyz", "/metrics"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct http_resp *r = gw_do(&g, "GET", paths[i], NULL, NULL);
        CHECK_INT_EQ(r->status, 200);
        http_free(r);
    }
}

static void test_cors(void)
{
    const char *allowed[] = {"Origin: " ORIGIN, "Authorization: Bearer " TOKEN, NULL};
    const char *other[] = {"Origin: http://evil.example", "Authorization: Bearer " TOKEN, NULL};
    const char *preflight[] = {"Origin: " ORIGIN, "Access-Control-Request-Method: PUT",
                               "Access-Control-Request-Headers: authorization", NULL};
    struct http_resp *r = gw_do(&g, "GET", "/api/v1/files", allowed, NULL);
    char *h = http_header(r, "Access-Control-Allow-Origin");
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(h, ORIGIN);
    free(h);
    h = http_header(r, "Access-Control-Expose-Headers");
    CHECK(h && strstr(h, "X-Request-Id"));
    free(h);
    check_header(r, "Vary", "Origin");
    http_free(r);

    r = gw_do(&g, "GET", "/api/v1/files", other, NULL);
    CHECK_INT_EQ(r->status, 200);
    h = http_header(r, "Access-Control-Allow-Origin");
    CHECK(h == NULL);
    http_free(r);

    /* A preflight carries no credentials, so it is answered without the token. */
    r = gw_do(&g, "OPTIONS", "/api/v1/files/x", preflight, NULL);
    CHECK_INT_EQ(r->status, 204);
    check_header(r, "Access-Control-Allow-Origin", ORIGIN);
    h = http_header(r, "Access-Control-Allow-Methods");
    CHECK(h && strstr(h, "PUT") && strstr(h, "DELETE"));
    free(h);
    h = http_header(r, "Access-Control-Allow-Headers");
    CHECK(h && strstr(h, "Authorization") && strstr(h, "If-Range") && strstr(h, "Last-Event-ID") &&
          strstr(h, "If-Modified-Since"));
    free(h);
    http_free(r);
}

int main(void)
{
    const char *args[] = {"--token", TOKEN, "--cors-origin", ORIGIN, NULL};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    gw_start(&g, args);
    RUN_TEST(test_api_needs_token);
    RUN_TEST(test_right_token_works);
    RUN_TEST(test_probes_stay_open);
    RUN_TEST(test_cors);
    gw_stop(&g);
    curl_global_cleanup();
    return TESTS_DONE();
}
