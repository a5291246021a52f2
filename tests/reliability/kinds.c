/* kinds.c - what each kind of request the load driver makes sends, and how its answer is checked. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "load.h"

const char *kind_name(enum kind k)
{
    static const char *const names[KIND__COUNT] = {"echo", "time", "exec", "file_put", "file_get"};
    return k < KIND__COUNT ? names[k] : "?";
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

enum kind kind_next(struct client *c, const struct load_cfg *cfg)
{
    unsigned total = 0, pick;
    for (int i = 0; i < 4; i++)
        total += cfg->weights[i];
    pick = (unsigned)(xorshift(&c->rng) % total);
    for (int i = 0; i < 4; i++) {
        if (pick < cfg->weights[i]) {
            if (i < 3)
                return (enum kind)i;
            /* Half the file round trips read back what the client stored; a GET needs a stored file. */
            return c->file_ok > 0 && (xorshift(&c->rng) & 1) ? KIND_FILE_GET : KIND_FILE_PUT;
        }
        pick -= cfg->weights[i];
    }
    return KIND_ECHO;
}

/* Fills buf with the content of upload seq of client idx: a header line, then bytes only (idx, seq) produce. */
static void file_content(char *buf, size_t size, unsigned idx, uint64_t seq)
{
    uint64_t s = ((uint64_t)idx << 32) ^ seq;
    int n = snprintf(buf, size, "sockgate-load c%u seq %" PRIu64 "\n", idx, seq);
    size_t i = n > 0 && (size_t)n < size ? (size_t)n : size;
    while (i < size) {
        uint64_t r = splitmix(&s);
        for (int k = 0; k < 8 && i < size; k++, r >>= 8)
            buf[i++] = (char)(r & 0xff);
    }
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct client *c = arg;
    size_t n = size * nmemb;
    if (c->resp_len + n > LOAD_MAX_BODY) {
        c->is_truncated = 1;
        return n; /* keep reading so the connection stays usable; the check fails */
    }
    if (c->resp_len + n + 1 > c->resp_cap) {
        size_t cap = c->resp_cap ? c->resp_cap : 4096;
        char *p;
        while (cap < c->resp_len + n + 1)
            cap *= 2;
        p = realloc(c->resp, cap);
        if (!p)
            return 0;
        c->resp = p;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, data, n);
    c->resp_len += n;
    c->resp[c->resp_len] = '\0';
    return n;
}

/* Replaces the request body with the compact text of body (stolen). */
static int set_json_body(struct client *c, json_t *body)
{
    free(c->req);
    c->req = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!c->req)
        return -1;
    c->req_len = strlen(c->req);
    return 0;
}

int kind_prepare(struct client *c, const struct load_cfg *cfg)
{
    char url[512], word[64], auth[300];

    curl_easy_reset(c->easy);
    curl_slist_free_all(c->headers);
    c->headers = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    if (cfg->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->token);
        c->headers = curl_slist_append(c->headers, auth);
    }
    c->resp_len = 0;
    c->is_truncated = 0;
    c->expect[0] = '\0';
    c->n++;
    snprintf(word, sizeof word, "c%u-n%" PRIu64, c->idx, c->n);
    switch (c->kind) {
    case KIND_ECHO:
        snprintf(url, sizeof url, "%s/api/v1/echo", cfg->url);
        if (set_json_body(c, json_pack("{s:s+}", "message", word, " hello")) != 0)
            return -1;
        for (size_t i = 0; word[i]; i++)
            c->expect[i] = (char)(word[i] >= 'a' && word[i] <= 'z' ? word[i] - 32 : word[i]);
        strcpy(c->expect + strlen(word), " HELLO");
        break;
    case KIND_TIME:
        snprintf(url, sizeof url, "%s/api/v1/time?format=%%25s", cfg->url);
        break;
    case KIND_EXEC:
        snprintf(url, sizeof url, "%s/api/v1/exec", cfg->url);
        if (set_json_body(c, json_pack("{s:[s,s]}", "argv", "echo", word)) != 0)
            return -1;
        snprintf(c->expect, sizeof c->expect, "%s\n", word);
        break;
    case KIND_FILE_PUT:
        snprintf(url, sizeof url, "%s/api/v1/files/%s-c%u", cfg->url, cfg->prefix, c->idx);
        free(c->req);
        c->req = malloc(cfg->file_size ? cfg->file_size : 1);
        if (!c->req)
            return -1;
        c->req_len = cfg->file_size;
        c->file_try = c->n;
        file_content(c->req, c->req_len, c->idx, c->file_try);
        break;
    case KIND_FILE_GET:
    default:
        snprintf(url, sizeof url, "%s/api/v1/files/%s-c%u", cfg->url, cfg->prefix, c->idx);
        break;
    }
    if (c->kind == KIND_ECHO || c->kind == KIND_EXEC) {
        c->headers = curl_slist_append(c->headers, "Content-Type: application/json");
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->req);
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->req_len);
    } else if (c->kind == KIND_FILE_PUT) {
        c->headers = curl_slist_append(c->headers, "Content-Type: application/octet-stream");
        curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->req);
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->req_len);
    }
    if (!c->headers)
        return -1;
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, cfg->hang_ms);
    curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT_MS, cfg->hang_ms);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_TCP_NODELAY, 1L);
    return 0;
}

/* Returns 1 when the body is a uploaded content of this client no older than its last confirmed upload. */
static int check_file(struct client *c, const struct load_cfg *cfg)
{
    unsigned idx = 0;
    uint64_t seq = 0;
    char *want;
    int ok;
    if (c->resp_len != cfg->file_size || c->is_truncated)
        return 0;
    if (sscanf(c->resp, "sockgate-load c%u seq %" SCNu64, &idx, &seq) != 2 || idx != c->idx)
        return 0;
    if (seq < c->file_ok || seq > c->file_try)
        return 0;
    want = malloc(cfg->file_size ? cfg->file_size : 1);
    if (!want)
        return 0;
    file_content(want, cfg->file_size, c->idx, seq);
    ok = memcmp(want, c->resp, cfg->file_size) == 0;
    free(want);
    return ok;
}

/* Returns 1 when the time is a Unix time in seconds within a minute of ours. */
static int check_time(const json_t *body)
{
    const char *t = json_string_value(json_object_get(body, "time"));
    char *end;
    long long v;
    if (!t)
        return 0;
    v = strtoll(t, &end, 10);
    return *end == '\0' && end != t && llabs(v - (long long)time(NULL)) < 60;
}

int kind_check(struct client *c, const struct load_cfg *cfg, long status)
{
    json_t *body;
    int ok = 0;
    if (c->kind == KIND_FILE_GET)
        return status == 200 && check_file(c, cfg);
    if (c->is_truncated || !c->resp)
        return 0;
    body = json_loadb(c->resp, c->resp_len, 0, NULL);
    if (!body)
        return 0;
    switch (c->kind) {
    case KIND_ECHO:
        ok = status == 200 && json_is_string(json_object_get(body, "reply")) &&
             strcmp(json_string_value(json_object_get(body, "reply")), c->expect) == 0;
        break;
    case KIND_TIME:
        ok = status == 200 && check_time(body);
        break;
    case KIND_EXEC:
        ok = status == 200 && json_integer_value(json_object_get(body, "exit_code")) == 0 &&
             json_is_string(json_object_get(body, "stdout")) &&
             strcmp(json_string_value(json_object_get(body, "stdout")), c->expect) == 0;
        break;
    case KIND_FILE_PUT:
        /* 201 for a new name, 200 when it replaced an earlier upload of the same name (both stored it). */
        ok = (status == 201 || status == 200) &&
             json_integer_value(json_object_get(body, "size")) == (json_int_t)cfg->file_size;
        break;
    default:
        break;
    }
    json_decref(body);
    return ok;
}

void kind_after(struct client *c, long status)
{
    if (c->kind == KIND_FILE_PUT && (status == 201 || status == 200))
        c->file_ok = c->file_try;
}
