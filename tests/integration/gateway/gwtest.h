/* gwtest.h - what the gateway's integration tests share: a started gateway and HTTP calls through libcurl. */
#ifndef SOCKGATE_TEST_GWTEST_H
#define SOCKGATE_TEST_GWTEST_H

#include <jansson.h>
#include <stddef.h>

#include "harness.h"

/* A gateway started for a test, with its own temporary directory (file root, spool, web root). */
struct gw {
    struct sg_proc proc;
    char dir[256];  /* removed by gw_stop */
    char base[128]; /* "http://127.0.0.1:PORT" */
};

/*
 * Starts sockgate on 127.0.0.1:0 with --file-root DIR/files and --spool-dir
 * DIR plus extra (NULL-terminated, may be NULL). Fails the test if it does not start.
 */
void gw_start(struct gw *g, const char *const extra[]);

/* Kills p (SIGKILL) when the test exits while it still runs: a failed CHECK must not leave it behind. */
void gw_track(struct sg_proc *p);

/* Forgets p (it was stopped). */
void gw_untrack(struct sg_proc *p);

/* Sends SIGTERM, checks the gateway exits 0, and removes its directory. */
void gw_stop(struct gw *g);

/* One HTTP answer: status, body (NUL-terminated) and raw header lines. */
struct http_resp {
    long status;
    char *body;
    size_t len;
    char *headers;
    size_t headers_len;
};

/*
 * Sends method url with the given "Name: value" headers (NULL-terminated,
 * may be NULL) and body (NULL for none); fails the test when the transfer
 * itself fails. The answer's body is kept whole (tests use small ones).
 */
struct http_resp *http_do(const char *method, const char *url, const char *const headers[], const void *body,
                          size_t len);

/* http_do with the gateway's base URL prepended to path. */
struct http_resp *gw_do(struct gw *g, const char *method, const char *path, const char *const headers[],
                        const char *body);

/* POSTs a JSON text to path with Content-Type: application/json. */
struct http_resp *gw_post_json(struct gw *g, const char *path, const char *json);

/* Returns a header's value in a new buffer the caller frees (first match, case-insensitive), or NULL. */
char *http_header(const struct http_resp *r, const char *name);

/* Parses the body as JSON (fails the test when it is not); new reference. */
json_t *http_json(const struct http_resp *r);

/* Checks the status and that the body is {"error": {"code": code, "message": non-empty}}. */
void check_error(const struct http_resp *r, long status, const char *code);

/* Frees r. */
void http_free(struct http_resp *r);

/* Writes len bytes of a repeatable pseudo-random stream (seeded by seed) into buf. */
void fill_pattern(unsigned char *buf, size_t len, unsigned seed);

/* Returns the sha256 of buf[0..len) as lower-case hex in out (65 bytes). */
void sha256_hex(const void *buf, size_t len, char out[65]);

#endif
