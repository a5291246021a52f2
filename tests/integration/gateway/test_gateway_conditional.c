/* test_gateway_conditional.c - conditional writes: If-None-Match: * and If-Match on PUT and DELETE, atomic under races. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "check.h"
#include "gwtest.h"

static struct gw g;

static struct http_resp *put_with(const char *name, const char *body, const char *header)
{
    const char *headers[] = {"Content-Type: application/octet-stream", header, NULL};
    char url[512];
    snprintf(url, sizeof url, "%s/api/v1/files/%s", g.base, name);
    return http_do("PUT", url, headers, body, strlen(body));
}

/* Returns the ETag of name (a new string) from a HEAD. */
static char *etag_of(const char *name)
{
    char path[300];
    struct http_resp *r;
    char *etag;
    snprintf(path, sizeof path, "/api/v1/files/%s", name);
    r = gw_do(&g, "HEAD", path, NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    etag = http_header(r, "ETag");
    CHECK(etag != NULL);
    http_free(r);
    return etag;
}

/* PUT answers 201 when it created the file and 200 when it replaced one, and says which. */
static void test_created_or_replaced(void)
{
    struct http_resp *r = put_with("plain.txt", "one", NULL);
    json_t *j = http_ok_json(r, 201);
    CHECK(json_is_true(json_object_get(j, "created")));
    json_decref(j);
    http_free(r);
    r = put_with("plain.txt", "two", NULL);
    j = http_ok_json(r, 200);
    CHECK(json_is_false(json_object_get(j, "created")));
    json_decref(j);
    http_free(r);
}

static void test_create_only(void)
{
    struct http_resp *r = put_with("once.txt", "first", "If-None-Match: *");
    json_t *j = http_ok_json(r, 201);
    json_decref(j);
    http_free(r);
    r = put_with("once.txt", "second", "If-None-Match: *");
    check_error(r, 412, "precondition_failed");
    http_free(r);
    /* The first version is still there, whole. */
    r = gw_do(&g, "GET", "/api/v1/files/once.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK(r->len == 5 && memcmp(r->body, "first", 5) == 0);
    http_free(r);
}

static void test_replace_this_version_only(void)
{
    char *etag, header[200];
    struct http_resp *r = put_with("versioned.txt", "v1", NULL);
    http_free(r);
    etag = etag_of("versioned.txt");
    snprintf(header, sizeof header, "If-Match: %s", etag);
    r = put_with("versioned.txt", "v2", header);
    CHECK_INT_EQ(r->status, 200);
    http_free(r);
    /* The same tag again is now stale: nothing is replaced. */
    r = put_with("versioned.txt", "v3", header);
    check_error(r, 412, "precondition_failed");
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/files/versioned.txt", NULL, NULL);
    CHECK(r->len == 2 && memcmp(r->body, "v2", 2) == 0);
    http_free(r);
    /* A weak tag, or one of another server, can match no version: 412 at once. */
    r = put_with("versioned.txt", "v4", "If-Match: W/\"abc\"");
    check_error(r, 412, "precondition_failed");
    http_free(r);
    /* If-Match: * replaces only a file that exists. */
    r = put_with("never-there.txt", "x", "If-Match: *");
    check_error(r, 412, "precondition_failed");
    http_free(r);
    gw_expect_error(&g, "GET", "/api/v1/files/never-there.txt", NULL, NULL, 404, "not_found");
    /* Chunked bodies (spooled first) honour the condition too. */
    {
        const char *headers[] = {"Transfer-Encoding: chunked", header, NULL};
        char url[300];
        snprintf(url, sizeof url, "%s/api/v1/files/versioned.txt", g.base);
        r = http_do("PUT", url, headers, "v5", 2);
        check_error(r, 412, "precondition_failed");
        http_free(r);
    }
    free(etag);
}

static void test_delete_if_match(void)
{
    char *etag, header[200];
    struct http_resp *r = put_with("doomed.txt", "a", NULL);
    http_free(r);
    etag = etag_of("doomed.txt");
    r = put_with("doomed.txt", "b", NULL);
    http_free(r);
    snprintf(header, sizeof header, "If-Match: %s", etag);
    {
        const char *headers[] = {header, NULL};
        gw_expect_error(&g, "DELETE", "/api/v1/files/doomed.txt", headers, NULL, 412, "precondition_failed");
    }
    free(etag);
    etag = etag_of("doomed.txt");
    snprintf(header, sizeof header, "If-Match: %s", etag);
    {
        const char *headers[] = {header, NULL};
        r = gw_do(&g, "DELETE", "/api/v1/files/doomed.txt", headers, NULL);
        CHECK_INT_EQ(r->status, 204);
        http_free(r);
    }
    gw_expect_error(&g, "GET", "/api/v1/files/doomed.txt", NULL, NULL, 404, "not_found");
    free(etag);
}

struct racer {
    const char *name;
    const char *body;
    pthread_barrier_t *start;
    long status;
};

static void *race(void *arg)
{
    struct racer *rc = arg;
    struct http_resp *r;
    pthread_barrier_wait(rc->start);
    r = put_with(rc->name, rc->body, "If-None-Match: *");
    rc->status = r->status;
    http_free(r);
    return NULL;
}

/*
 * Two clients create the same name at once, 25 times over: each time exactly
 * one gets 201 and the other 412, and the stored file is the winner's.
 */
static void test_two_creators_one_wins(void)
{
    for (int round = 0; round < 25; round++) {
        char name[64];
        pthread_barrier_t start;
        pthread_t t[2];
        struct racer rc[2];
        struct http_resp *r;
        int winner;
        snprintf(name, sizeof name, "race-%d.txt", round);
        CHECK(pthread_barrier_init(&start, NULL, 2) == 0);
        rc[0] = (struct racer){name, "from-a", &start, 0};
        rc[1] = (struct racer){name, "from-b", &start, 0};
        for (int i = 0; i < 2; i++)
            CHECK(pthread_create(&t[i], NULL, race, &rc[i]) == 0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        CHECK((rc[0].status == 201 && rc[1].status == 412) || (rc[0].status == 412 && rc[1].status == 201));
        winner = rc[0].status == 201 ? 0 : 1;
        {
            char path[100];
            snprintf(path, sizeof path, "/api/v1/files/%s", name);
            r = gw_do(&g, "GET", path, NULL, NULL);
            CHECK(r->len == 6 && memcmp(r->body, rc[winner].body, 6) == 0);
            http_free(r);
        }
    }
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    gw_start(&g, NULL);
    RUN_TEST(test_created_or_replaced);
    RUN_TEST(test_create_only);
    RUN_TEST(test_replace_this_version_only);
    RUN_TEST(test_delete_if_match);
    RUN_TEST(test_two_creators_one_wins);
    gw_stop(&g);
    curl_global_cleanup();
    return TESTS_DONE();
}
