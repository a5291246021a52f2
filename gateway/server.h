/* server.h - the HTTP server: one request's state, and how handlers answer it. */
#ifndef SOCKGATE_GATEWAY_SERVER_H
#define SOCKGATE_GATEWAY_SERVER_H

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway.h"

struct route;

#define REQUEST_ID_MAX 64

/* Where tus 1.0 lives (api_uploads*.c): every answer under it but OPTIONS's carries Tus-Resumable. */
#define UPLOADS_PREFIX "/api/v1/uploads/"


/*
 * One HTTP request, from its headers to the completion callback. It lives in
 * libmicrohttpd's *req_cls, is touched only by the worker thread whose loop
 * owns the connection, and is freed when the request completes (or the client goes).
 */
struct request {
    struct gateway *gw;
    struct MHD_Connection *conn;
    const struct route *route; /* NULL for static assets and unmatched paths */
    unsigned slot;             /* metrics slot (route index or a pseudo route) */
    const char *url;           /* decoded path in origin form, owned by libmicrohttpd for the request's life */
    char authority[256];       /* the host of an absolute-form target ("GET http://h/p"); "" otherwise */
    char method[16];
    char param[1024];          /* the {name} segment of the path, decoded (longer ones cut: over every limit) */
    char id[REQUEST_ID_MAX + 1];
    char remote[64];
    int64_t start_us;
    uint64_t bytes_in, bytes_out;
    int64_t content_length;    /* -1 when the request has none (chunked or no body) */
    unsigned status;           /* the queued response's status; 0 while none */
    int has_responded;
    int has_begun;             /* request_begin ran (at the first call when a body follows, else at the last) */
    int err;                   /* the first failure while reading the body, answered at the end */
    char errmsg[512];
    const char *cors_origin;   /* the request's Origin when it is allowed (borrowed from the config) */
    char *body;                /* a JSON body, bounded by max_json */
    size_t body_len, body_cap;
    int (*resume)(struct request *rq); /* set while the request waits on the loop (request_defer) */
    int is_woken;              /* request_wake ran: the deferred answer is ready */
    int is_body_held;          /* request_hold_body ran: the connection waits for request_release_body */
    size_t body_left;          /* bytes of the current body piece the handler did not take */
    void *state;               /* the handler's own state, freed by state_free */
    void (*state_free)(struct request *rq, int is_complete);
};

/* The running HTTP server. */
struct server;

/*
 * Binds gw->cfg.listen and starts gw->cfg.threads workers, each an event
 * loop with its own libmicrohttpd daemon on the shared listener (worker.c).
 * Returns SG_OK and *out, or writes why into err.
 */
int server_start(struct gateway *gw, struct server **out, char *err, size_t errlen);

/* Returns the listening descriptor (for the "listening on" line). */
int server_listen_fd(struct server *s);

/*
 * Stops accepting connections, waits up to grace_ms for the requests in
 * flight, then stops the worker threads and frees s.
 */
void server_stop(struct server *s, unsigned grace_ms);

/*
 * Called by a handler that started a backend operation on the worker's loop
 * instead of answering: suspends the connection. When the operation is done
 * the handler calls request_wake, and then resume(rq) runs (on the same
 * thread, inside libmicrohttpd's call) and answers like a finish handler, or
 * defers again. If the client leaves first, resume never runs; state_free
 * (with is_complete 0) must then cancel the operation.
 */
void request_defer(struct request *rq, int (*resume)(struct request *rq));

/* Marks a deferred request's answer ready and resumes its connection (worker thread only). */
void request_wake(struct request *rq);

/*
 * Called by a body handler that cannot take the last left bytes of the piece
 * it was given (its backend does not take more now): libmicrohttpd keeps
 * them and the connection is suspended, so the client is read no further
 * (TCP slows it down) until request_release_body; then the handler gets
 * those bytes again. A client that hangs up meanwhile ends the request.
 */
void request_hold_body(struct request *rq, size_t left);

/* Resumes a request held by request_hold_body (worker thread; nothing when it is not held). */
void request_release_body(struct request *rq);

/* Records the request's first failure (later ones are dropped) and returns err. */
int request_fail(struct request *rq, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Returns a request header's value (borrowed), or NULL. */
const char *request_header(struct request *rq, const char *name);

/* Returns a query argument's decoded value (borrowed), or NULL. */
const char *request_query(struct request *rq, const char *name);

/* 1 when no token is configured or rq carries it (header, or cookie where the route takes one). */
int request_is_authorized(struct request *rq);

/* Returns the deadline of one backend call made for rq (now + the configured timeout). */
int64_t request_deadline(const struct request *rq);

/*
 * Parses the request's JSON body into a new object in *out; on failure
 * records a 400 with the parser's reason and returns SG_ERR_INVALID.
 */
int request_json(struct request *rq, json_t **out);

/*
 * Queues resp with status after adding the common headers (request id,
 * security headers, CORS); takes resp (destroys the caller's reference).
 */
int respond(struct request *rq, unsigned status, struct MHD_Response *resp);

/* Queues body (stolen) as compact JSON with status. */
int respond_json(struct request *rq, unsigned status, json_t *body);

/* respond_json for a body that never changes: text is static, sent as it is, never copied. */
int respond_json_text(struct request *rq, unsigned status, const char *text);

/* Queues the error body of err with its status; message NULL means rq->errmsg or the generic sentence. */
int respond_error(struct request *rq, int err, const char *message);

/* Queues an error with extra headers (name/value pairs, NULL-terminated); message as for respond_error. */
int respond_error_with(struct request *rq, int err, const char *message, const char *const *headers);

/*
 * Returns a new empty response carrying the path's Allow header and, for a
 * CORS preflight from an allowed origin, the Access-Control-Allow-* headers
 * (an OPTIONS route adds its own headers, then respond()s it). NULL: no memory.
 */
struct MHD_Response *options_response(struct request *rq);

/* Queues an empty response (204, 304) with status. */
int respond_empty(struct request *rq, unsigned status);

/* Queues a JSON error whose status is not an error enum (used by the router for 405). */
int respond_method_not_allowed(struct request *rq, const char *allow);

#endif
