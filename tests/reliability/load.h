/* load.h - the mixed-traffic load driver: what a client is, and what each kind of request sends and checks. */
#ifndef SOCKGATE_RELIABILITY_LOAD_H
#define SOCKGATE_RELIABILITY_LOAD_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

/* The kinds of round trip the driver mixes; a file round trip is a PUT, then a GET that checks it. */
enum kind { KIND_ECHO, KIND_TIME, KIND_EXEC, KIND_FILE_PUT, KIND_FILE_GET, KIND__COUNT };

/* A response body is kept up to this size; a larger one is a failed check, never a bigger buffer. */
#define LOAD_MAX_BODY (1u << 20)

/* One simulated user: a libcurl handle reused request after request, so its connection stays alive. */
struct client {
    unsigned idx;
    CURL *easy;
    struct curl_slist *headers;
    enum kind kind;
    uint64_t n;            /* requests this client has made */
    uint64_t rng;          /* xorshift state: the mix is the same on every run */
    uint64_t file_ok;      /* seq of the last PUT answered 201 (0: none) */
    uint64_t file_try;     /* seq of the last PUT sent */
    char *req;             /* request body, owned */
    size_t req_len;
    char *resp;            /* response body, at most LOAD_MAX_BODY bytes */
    size_t resp_len, resp_cap;
    int is_truncated;      /* the response was longer than LOAD_MAX_BODY */
    char expect[96];       /* what the answer must contain (echo reply, exec stdout) */
    int64_t start_us;
    int64_t resume_us;     /* paused until then after a failed request (0: not paused) */
    int is_busy;           /* added to the multi handle */
};

/* What every client shares: the base URL and the sizes the kinds use. */
struct load_cfg {
    const char *url;       /* http://127.0.0.1:PORT */
    const char *prefix;    /* file names are PREFIX-cIDX */
    const char *token;     /* NULL: no Authorization header */
    size_t file_size;
    long hang_ms;          /* a request unanswered this long counts as hung */
    unsigned weights[4];   /* echo, time, exec, file */
};

/* Returns "echo", "time", "exec", "file_put" or "file_get". */
const char *kind_name(enum kind k);

/* Chooses the client's next kind from the weights (a file GET always follows a confirmed or tried PUT). */
enum kind kind_next(struct client *c, const struct load_cfg *cfg);

/* Sets up c->easy (after curl_easy_reset) for its next request of kind c->kind; returns 0 or -1 (out of memory). */
int kind_prepare(struct client *c, const struct load_cfg *cfg);

/*
 * Checks a 2xx answer's body against what the request asked for; returns 1
 * when it is right. For a file GET the body must be exactly one of the
 * client's uploads, no older than the last confirmed one.
 */
int kind_check(struct client *c, const struct load_cfg *cfg, long status);

/* Records the outcome of a PUT so the next GET knows which contents are acceptable. */
void kind_after(struct client *c, long status);

#endif
