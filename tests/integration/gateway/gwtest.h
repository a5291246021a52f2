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
    char base[128]; /* "http://127.0.0.1:PORT", or https:// when the gateway serves HTTPS */
};

/*
 * Starts sockgate on 127.0.0.1:0 with --file-root DIR/files and --spool-dir
 * DIR plus extra (NULL-terminated, may be NULL). Fails the test if it does not start.
 */
void gw_start(struct gw *g, const char *const extra[]);

/* The CA file every request of http_do trusts when not empty (HTTPS tests set it). */
extern char gw_ca_file[512];

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

/* Checks that header name is there with exactly the value want (first match, case-insensitive). */
void check_header(const struct http_resp *r, const char *name, const char *want);

/* Frees r. */
void http_free(struct http_resp *r);

/* The headers of a request with a JSON body, for gw_do and the gw_expect_* calls. */
extern const char *const gw_json_headers[];

/* Checks the status (printing the body when it differs) and parses the body as JSON; new reference. */
json_t *http_ok_json(const struct http_resp *r, long status);

/*
 * Sends method path as gw_do does, checks the answer's status and returns its
 * body as JSON (new reference); the answer itself is freed. A failure names
 * the request.
 */
json_t *gw_expect_json(struct gw *g, const char *method, const char *path, const char *const headers[],
                       const char *body, long status);

/* Sends method path as gw_do does and checks the answer with check_error; a failure names the request. */
void gw_expect_error(struct gw *g, const char *method, const char *path, const char *const headers[],
                     const char *body, long status, const char *code);

/* Opens a plain TCP connection to the gateway, for tests that write raw HTTP bytes; fails the test when it cannot. */
int gw_connect_raw(const struct gw *to);

/* Sends all len bytes of buf on fd (retrying short writes, no SIGPIPE); fails the test when the peer is gone. */
void send_all(int fd, const void *buf, size_t len);

/* Writes len bytes of a repeatable pseudo-random stream (seeded by seed) into buf. */
void fill_pattern(unsigned char *buf, size_t len, unsigned seed);

/* Returns the sha256 of buf[0..len) as lower-case hex in out (65 bytes). */
void sha256_hex(const void *buf, size_t len, char out[65]);

#endif
