/* server.c - libmicrohttpd set-up and each request's life: routing, auth, CORS, headers, access log. */
#include "server.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "api.h"
#include "chat_stream.h"
#include "errors.h"
#ifdef SG_HAVE_FILE
#include "file/name.h"
#endif
#include "http_strict.h"
#include "metrics.h"
#include "origin.h"
#include "router.h"
#include "session.h"
#include "tls.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"
#include "validate.h"
#include "worker.h"
#include "ws.h"

/*
 * Per-connection memory of libmicrohttpd: headers and the read buffer that
 * upload pieces come from. libmicrohttpd clears the whole pool between
 * keep-alive requests, so its size is paid on every request: at 256 KiB that
 * memset was 84% of the gateway's user time per REST echo call (callgrind,
 * docs/benchmarks.md), while 32 KiB pieces upload as fast.
 */
#define CONN_MEMORY_LIMIT (32u * 1024u)
#define CONN_MEMORY_INCREMENT (16u * 1024u)
/* A client connection with no traffic this long is closed. */
#define CONN_IDLE_TIMEOUT_S 60u

/* The policy for API answers: nothing in them should ever load or run anything. */
#define API_CSP "default-src 'none'; frame-ancestors 'none'"

struct server {
    struct worker **workers; /* one event loop each, with its own libmicrohttpd daemon */
    unsigned n_workers;
    int listen_fd;
};

static uint32_t id_prefix;
static atomic_ullong id_counter;

int64_t request_deadline(const struct request *rq)
{
    return sg_now_ms() + rq->gw->cfg.timeout_ms;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int request_fail(struct request *rq, int err, const char *fmt, ...)
{
    va_list ap;
    if (rq->err != SG_OK)
        return err;
    rq->err = err;
    va_start(ap, fmt);
    vsnprintf(rq->errmsg, sizeof rq->errmsg, fmt, ap);
    va_end(ap);
    return err;
}

const char *request_header(struct request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *request_query(struct request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* Takes the client's X-Request-Id when it is short and plain, else makes one up. */
static void assign_id(struct request *rq)
{
    const char *given = request_header(rq, "X-Request-Id");
    size_t n = given ? strlen(given) : 0;
    if (n > 0 && n <= REQUEST_ID_MAX && strspn(given, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                      "0123456789-_.:") == n) {
        memcpy(rq->id, given, n + 1);
        return;
    }
    snprintf(rq->id, sizeof rq->id, "%08x%016llx", id_prefix,
             (unsigned long long)atomic_fetch_add_explicit(&id_counter, 1, memory_order_relaxed));
}

/* Returns the request's Content-Length, or -1 when it has none (or one that is not a number). */
static int64_t content_length(struct request *rq)
{
    const char *cl = request_header(rq, "Content-Length");
    uint64_t v;
    if (!cl || sg_parse_u64(cl, 0, INT64_MAX, 0, &v) != SG_OK)
        return -1;
    return (int64_t)v;
}

static struct request *request_new(struct gateway *gw, struct MHD_Connection *conn, const char *url,
                                   const char *method)
{
    const union MHD_ConnectionInfo *info;
    struct request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return NULL;
    rq->gw = gw;
    rq->conn = conn;
    /* An absolute-form target is served like its origin form; its authority stands for Host (RFC 9112 3.2.2). */
    rq->url = http_origin_form(url, rq->authority, sizeof rq->authority);
    if (!rq->url)
        rq->url = url; /* neither form: refused by the caller */
    rq->slot = ROUTE_SLOT_OTHER;
    rq->start_us = now_us();
    snprintf(rq->method, sizeof rq->method, "%s", method);
    assign_id(rq);
    info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (info && info->client_addr) {
        socklen_t len = info->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                 : sizeof(struct sockaddr_in);
        sg_addr_format(info->client_addr, len, rq->remote, sizeof rq->remote);
    }
    rq->content_length = content_length(rq);
    metrics_in_flight(1);
    return rq;
}

/* Returns the configured origin equal to origin (or origin itself under "*"), else NULL. */
static const char *cors_match(const struct gw_config *cfg, const char *origin)
{
    if (!origin || !*origin)
        return NULL;
    for (size_t i = 0; i < cfg->n_cors_origins; i++) {
        if (strcmp(cfg->cors_origins[i], "*") == 0)
            return origin;
        if (strcmp(cfg->cors_origins[i], origin) == 0)
            return cfg->cors_origins[i];
    }
    return NULL;
}

static void add_common_headers(struct request *rq, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", rq->id);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    /* Over HTTPS, browsers are told to come back only over HTTPS for a year. */
    if (tls_is_on())
        MHD_add_response_header(resp, "Strict-Transport-Security", "max-age=31536000");
    if (!MHD_get_response_header(resp, "Content-Security-Policy"))
        MHD_add_response_header(resp, "Content-Security-Policy", API_CSP);
    if (rq->gw->cfg.n_cors_origins > 0)
        MHD_add_response_header(resp, "Vary", "Origin");
    if (rq->cors_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", rq->cors_origin);
        /* tus-js-client in a browser reads the Upload-* and Tus-* headers: unexposed, they read as absent. */
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "X-Request-Id, ETag, Content-Range, Content-Disposition, Content-Length, Location, "
                                "Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Upload-Defer-Length, "
                                "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm");
    }
    /* tus 1.0: every answer under the tus endpoint but OPTIONS's names the protocol version (errors included). */
    if (strncmp(rq->url, UPLOADS_PREFIX, strlen(UPLOADS_PREFIX)) == 0 && strcmp(rq->method, "OPTIONS") != 0)
        MHD_add_response_header(resp, "Tus-Resumable", "1.0.0");
}

int respond(struct request *rq, unsigned status, struct MHD_Response *resp)
{
    enum MHD_Result ok;
    if (rq->has_responded) {
        MHD_destroy_response(resp);
        return SG_OK;
    }
    add_common_headers(rq, resp);
    ok = MHD_queue_response(rq->conn, status, resp);
    MHD_destroy_response(resp);
    if (ok != MHD_YES) {
        sg_warn("request %s: libmicrohttpd refused the %u response", rq->id, status);
        return SG_ERR_INTERNAL;
    }
    rq->status = status;
    rq->has_responded = 1;
    return SG_OK;
}

/* Answers with the JSON text, handed to libmicrohttpd as mode says (a MUST_FREE text is freed on failure too). */
static int respond_json_buffer(struct request *rq, unsigned status, char *text, enum MHD_ResponseMemoryMode mode)
{
    size_t len = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(text);
        return SG_ERR_NOMEM;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    rq->bytes_out += len;
    return respond(rq, status, resp);
}

int respond_json(struct request *rq, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return SG_ERR_NOMEM;
    return respond_json_buffer(rq, status, text, MHD_RESPMEM_MUST_FREE);
}

int respond_json_text(struct request *rq, unsigned status, const char *text)
{
    return respond_json_buffer(rq, status, (char *)text, MHD_RESPMEM_PERSISTENT);
}

int respond_error_with(struct request *rq, int err, const char *message, const char *const *headers)
{
    struct MHD_Response *resp;
    unsigned status;
    const char *code;
    char *text;
    json_t *body = http_error_body(err, message);
    http_error(err, &status, &code);
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return SG_ERR_NOMEM;
    resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return SG_ERR_NOMEM;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    for (; headers && headers[0]; headers += 2)
        MHD_add_response_header(resp, headers[0], headers[1]);
    if (err == SG_ERR_UNAUTHORIZED)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"sockgate\"");
    rq->bytes_out += strlen(text);
    if (!rq->err) {
        rq->err = err; /* for the access log */
        snprintf(rq->errmsg, sizeof rq->errmsg, "%s", message ? message : "");
    }
    return respond(rq, status, resp);
}

int respond_error(struct request *rq, int err, const char *message)
{
    if (!message && rq->err == err)
        message = rq->errmsg;
    return respond_error_with(rq, err, message, NULL);
}

int respond_empty(struct request *rq, unsigned status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return SG_ERR_NOMEM;
    return respond(rq, status, resp);
}

int respond_method_not_allowed(struct request *rq, const char *allow)
{
    char msg[256];
    const char *headers[] = {"Allow", allow, NULL};
    snprintf(msg, sizeof msg, "%s is not allowed on %s; allowed: %s", rq->method, rq->url, allow);
    return respond_error_with(rq, GW_ERR_METHOD, msg, headers);
}

/*
 * Returns 1 when the request carries "Authorization: Bearer <the token>",
 * compared in constant time, or, on a route that takes it, the session cookie.
 */
static int is_authorized(struct request *rq)
{
    const char *auth = request_header(rq, "Authorization");
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (!auth && (rq->route->flags & ROUTE_WEBSOCKET) && ws_protocol_has_token(rq))
        return 1;
    if (!auth && (rq->route->flags & ROUTE_COOKIE_AUTH))
        return session_is_valid(rq);
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    auth += 7;
    while (*auth == ' ')
        auth++;
    /* Comparing digests keeps the time independent of the token's length and content. */
    SHA256((const unsigned char *)auth, strlen(auth), digest);
    return CRYPTO_memcmp(digest, rq->gw->token_sha256, sizeof digest) == 0;
}

int request_is_authorized(struct request *rq)
{
    return !rq->gw->has_token || is_authorized(rq);
}

/* The first query parameter of a request that its route does not take. */
struct unknown_query {
    const char *route;
    char name[65];
};

static enum MHD_Result find_unknown_query(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct unknown_query *u = cls;
    (void)kind;
    (void)value;
    if (validate_query_name(u->route, key) == SG_OK)
        return MHD_YES;
    snprintf(u->name, sizeof u->name, "%s", key);
    return MHD_NO;
}

/* Refuses a query parameter the route does not take (a typo must not be ignored silently); API routes only. */
static int check_query(struct request *rq)
{
    struct unknown_query u = {.route = rq->route->name, .name = ""};
    char known[128];
    if (strncmp(rq->url, "/api/", 5) != 0)
        return SG_OK;
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, find_unknown_query, &u);
    if (!u.name[0])
        return SG_OK;
    validate_query_known(rq->route->name, known, sizeof known);
    return request_fail(rq, SG_ERR_INVALID, "unknown query parameter \"%s\" (%s)", u.name, known);
}

static void answer_outcome(struct request *rq, int rc);

struct MHD_Response *options_response(struct request *rq)
{
    char allow[128], param[1024];
    int is_known = 0;
    struct MHD_Response *resp;
    /* No route has the empty method: the matcher lists every method of the path instead. */
    router_match("", rq->url, param, sizeof param, &is_known, allow, sizeof allow);
    resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return NULL;
    MHD_add_response_header(resp, "Allow", allow);
    if (rq->cors_origin && request_header(rq, "Access-Control-Request-Method")) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, X-Request-Id, Range, If-Range, If-None-Match, If-Modified-Since, "
                                "Last-Event-ID, Tus-Resumable, Upload-Length, Upload-Defer-Length, Upload-Metadata, "
                                "Upload-Offset, Upload-Checksum, Upload-Concat, X-HTTP-Method-Override");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    return resp;
}

/*
 * Answers OPTIONS: the methods of the path, and the CORS preflight headers for
 * an allowed origin; a path with an OPTIONS route of its own (tus's discovery)
 * is answered by that route, which adds its headers to options_response().
 */
static void answer_options(struct request *rq)
{
    char allow[128], param[1024];
    int is_known = 0;
    struct MHD_Response *resp;
    const struct route *r = router_match("OPTIONS", rq->url, param, sizeof param, &is_known, allow, sizeof allow);
    if (r) {
        rq->route = r;
        rq->slot = (unsigned)(r - router_routes);
        snprintf(rq->param, sizeof rq->param, "%s", param);
        answer_outcome(rq, r->finish(rq));
        return;
    }
    if (!is_known) {
        respond_error(rq, SG_ERR_NOT_FOUND, "no such path");
        return;
    }
    resp = options_response(rq);
    if (resp)
        respond(rq, 204, resp);
}

/* Returns 1 when Content-Type names JSON (application/json or any +json), ignoring parameters. */
static int is_json_type(const char *ctype)
{
    size_t n;
    if (!ctype)
        return 1; /* no type at all: take the body for what the route expects */
    n = strcspn(ctype, "; \t");
    if (n == strlen("application/json") && strncasecmp(ctype, "application/json", n) == 0)
        return 1;
    return n > 5 && strncasecmp(ctype + n - 5, "+json", 5) == 0;
}

/* Checks what a route with a body needs before any of the body is read: a length, a type, a size. */
static int check_body_headers(struct request *rq)
{
    const char *cl = request_header(rq, "Content-Length");
    const char *te = request_header(rq, "Transfer-Encoding");
    uint64_t len = 0;
    if (cl && sg_parse_u64(cl, 0, UINT64_MAX, 0, &len) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID, "Content-Length '%s' is not a number", cl);
    if (!cl && !te && (rq->route->flags & ROUTE_BODY_OPTIONAL))
        return SG_OK; /* no body at all (tus creation without upload) */
    if (!cl && !(te && strcasestr(te, "chunked")))
        return request_fail(rq, GW_ERR_LENGTH_REQUIRED,
                            "%s %s needs a body with a Content-Length header or chunked transfer encoding",
                            rq->method, rq->url);
    if (rq->route->flags & ROUTE_JSON_BODY) {
        if (!is_json_type(request_header(rq, "Content-Type")))
            return request_fail(rq, GW_ERR_MEDIA_TYPE, "send the body as Content-Type: application/json");
        if (len > rq->gw->cfg.max_json)
            return request_fail(rq, SG_ERR_TOO_LARGE, "a JSON body may have at most %s (--max-json)",
                                rq->gw->cfg.max_json_text);
    }
    return SG_OK;
}

/*
 * Refuses a file name the file service would refuse, before any of the body
 * is read or a backend is asked: a bad name with a 50 MB body costs nothing.
 */
static int check_file_name(struct request *rq)
{
#ifdef SG_HAVE_FILE
    char why[200];
    if (file_name_check(rq->param, strlen(rq->param), why, sizeof why) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID_NAME, "%s", why);
#else
    (void)rq;
#endif
    return SG_OK;
}

/*
 * Returns 1 when a body follows the headers: a non-zero Content-Length or any
 * Transfer-Encoding. One that is not chunked has no length libmicrohttpd can
 * find, so it must be refused before the body (411), not waited for.
 */
static int has_body(struct request *rq)
{
    const char *cl = request_header(rq, "Content-Length");
    const char *te = request_header(rq, "Transfer-Encoding");
    return (cl && strcmp(cl, "0") != 0) || te != NULL;
}

/*
 * Refuses (and answers) a request that names a host this gateway does not
 * answer to, or that writes from another origin's page; returns 1 to go on.
 */
static int is_welcome(struct request *rq)
{
    const char *host = rq->authority[0] ? rq->authority : request_header(rq, "Host");
    char why[384];
    int rc = origin_check_host(&rq->gw->cfg, rq->gw->has_token, host, why, sizeof why);

    if (rc == SG_OK)
        rc = origin_check_write(rq->method, host, request_header(rq, "Origin"), rq->cors_origin, why, sizeof why);
    if (rc == SG_OK)
        return 1;
    respond_error(rq, rc, why);
    return 0;
}

/*
 * A WebSocket is not bound by the same-origin policy: any page may open one,
 * with the user's cookie. So its Origin is checked as a write's is, before
 * the upgrade (a foreign page gets 403, never a socket). Returns 1 to go on.
 */
static int is_welcome_socket(struct request *rq)
{
    const char *host = rq->authority[0] ? rq->authority : request_header(rq, "Host");
    char why[384];
    int rc = origin_check_write("WebSocket", host, request_header(rq, "Origin"), rq->cors_origin, why, sizeof why);
    if (rc == SG_OK)
        return 1;
    respond_error(rq, rc, why);
    return 0;
}

/*
 * Step one: the headers are in, none of the body. Runs at the first call when
 * a body follows (so a refusal spares reading it), else at the last. Answers
 * at once whatever can be decided now.
 */
static void request_begin(struct request *rq)
{
    char allow[128];
    int is_known = 0, rc;

    rq->has_begun = 1;
    rq->cors_origin = cors_match(&rq->gw->cfg, request_header(rq, "Origin"));
    if (!is_welcome(rq))
        return;
    if (strcmp(rq->method, "OPTIONS") == 0) {
        answer_options(rq);
        return;
    }
    rq->route = router_match(rq->method, rq->url, rq->param, sizeof rq->param, &is_known, allow, sizeof allow);
    if (!rq->route) {
        if (is_known) {
            respond_method_not_allowed(rq, allow);
        } else if ((strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0) &&
                   strncmp(rq->url, "/api/", 5) != 0) {
            rq->slot = ROUTE_SLOT_STATIC; /* answered by static.c once the request is complete */
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "no route for %s %.200s", rq->method, rq->url);
            respond_error(rq, SG_ERR_NOT_FOUND, msg);
        }
        return;
    }
    rq->slot = (unsigned)(rq->route - router_routes);
    if ((rq->route->flags & ROUTE_WEBSOCKET) && !is_welcome_socket(rq))
        return;
    if ((rq->route->flags & ROUTE_AUTH) && rq->gw->has_token && !is_authorized(rq)) {
        respond_error(rq, SG_ERR_UNAUTHORIZED,
                      (rq->route->flags & ROUTE_COOKIE_AUTH)
                          ? "send Authorization: Bearer <token>, or the cookie POST /api/v1/session sets"
                          : "send Authorization: Bearer <token>");
        return;
    }
    rc = check_query(rq);
    if (rc == SG_OK && (rq->route->flags & ROUTE_FILE_NAME))
        rc = check_file_name(rq);
    if (rc == SG_OK && (rq->route->flags & (ROUTE_JSON_BODY | ROUTE_STREAM_BODY)))
        rc = check_body_headers(rq);
    if (rc == SG_OK && rq->route->begin)
        rc = rq->route->begin(rq);
    if (rc != SG_OK)
        respond_error(rq, rq->err ? rq->err : rc, NULL);
}

/* Collects a JSON body, never past max_json. */
static int collect_json(struct request *rq, const char *data, size_t len)
{
    size_t max = (size_t)rq->gw->cfg.max_json;
    if (len > max - rq->body_len)
        return request_fail(rq, SG_ERR_TOO_LARGE, "a JSON body may have at most %s (--max-json)",
                            rq->gw->cfg.max_json_text);
    if (rq->body_len + len + 1 > rq->body_cap) {
        size_t cap = rq->body_cap ? rq->body_cap : 1024;
        char *p;
        while (cap < rq->body_len + len + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        p = realloc(rq->body, cap);
        if (!p)
            return request_fail(rq, SG_ERR_NOMEM, "out of memory");
        rq->body = p;
        rq->body_cap = cap;
    }
    memcpy(rq->body + rq->body_len, data, len);
    rq->body_len += len;
    rq->body[rq->body_len] = '\0';
    return SG_OK;
}

int request_json(struct request *rq, json_t **out)
{
    char err[300];
    int rc = validate_json_object(rq->body, rq->body_len, out, err, sizeof err);
    return rc == SG_OK ? SG_OK : request_fail(rq, rc, "%s", err);
}

static void request_body(struct request *rq, const char *data, size_t len)
{
    int rc = SG_OK;
    if (!rq->route)
        return; /* a body on GET of a static asset: ignored */
    if (rq->route->flags & ROUTE_JSON_BODY)
        rc = collect_json(rq, data, len);
    else if (rq->route->body)
        rc = rq->route->body(rq, data, len);
    if (rc != SG_OK && rq->err == SG_OK)
        request_fail(rq, rc, "%s", sg_strerror(rc));
}

/* The last call: the whole body is in. Answers with the first error, or runs the handler. */
static void request_finish(struct request *rq)
{
    int rc;
    if (rq->err != SG_OK) {
        respond_error(rq, rq->err, NULL);
        return;
    }
    rc = rq->route ? rq->route->finish(rq) : api_static(rq);
    answer_outcome(rq, rc);
}

/* After a handler step: its error becomes the answer; no answer and nothing pending is a bug, answered as one. */
static void answer_outcome(struct request *rq, int rc)
{
    if (rc != SG_OK && !rq->has_responded) {
        rq->resume = NULL; /* a handler that failed after deferring must not be resumed into */
        respond_error(rq, rq->err ? rq->err : rc, NULL);
    } else if (!rq->has_responded && !rq->resume)
        respond_error(rq, SG_ERR_INTERNAL, "the handler gave no answer");
}

void request_defer(struct request *rq, int (*resume)(struct request *rq))
{
    rq->resume = resume;
    rq->is_woken = 0;
    worker_suspend(rq->conn);
}

void request_hold_body(struct request *rq, size_t left)
{
    rq->body_left = left;
    if (rq->is_body_held)
        return;
    rq->is_body_held = 1;
    worker_suspend(rq->conn);
}

void request_release_body(struct request *rq)
{
    if (!rq->is_body_held)
        return;
    rq->is_body_held = 0;
    worker_resume(rq->conn);
}

void request_wake(struct request *rq)
{
    if (!rq->resume || rq->is_woken)
        return;
    rq->is_woken = 1;
    worker_resume(rq->conn);
}

/*
 * A deferred request is called again once resumed: with its answer ready the
 * handler queues it now (libmicrohttpd takes an answer only inside this call);
 * resumed without it (the client left) the connection just closes.
 */
static enum MHD_Result answer_deferred(struct request *rq)
{
    int (*resume)(struct request *) = rq->resume;
    if (!rq->is_woken && worker_is_stopping() && !worker_client_gone(rq->conn)) {
        /* The grace period is over and its backend has not answered: say so rather than close. */
        rq->resume = NULL;
        answer_outcome(rq, request_fail(rq, SG_ERR_REFUSED, "the gateway is shutting down"));
        return rq->has_responded ? MHD_YES : MHD_NO;
    }
    if (!rq->is_woken)
        return MHD_NO;
    rq->resume = NULL;
    answer_outcome(rq, resume(rq));
    if (rq->resume)
        return MHD_YES; /* deferred again: a next step */
    return rq->has_responded ? MHD_YES : MHD_NO;
}

/* The per-connection flags libmicrohttpd's callbacks fill in (NULL before the connection is known). */
static struct http_conn_flags *conn_flags(struct MHD_Connection *conn)
{
    return worker_conn_flags(conn);
}

/*
 * Answers a request that breaks the framing or header rules (http_strict.c)
 * and returns 0; returns 1 when it may go on. When the byte stream can no
 * longer be trusted (two lengths, an unknown encoding) the connection is
 * closed after the answer, never read for another request.
 */
static int passes_strict_checks(struct request *rq, const char *version)
{
    static const char *const close_headers[] = {"Connection", "close", NULL};
    struct http_conn_flags *flags = conn_flags(rq->conn);
    char why[300];
    int must_close = 1;
    int rc = rq->url[0] == '/' ? http_strict_check(rq->conn, version, flags, &must_close, why, sizeof why)
                               : (snprintf(why, sizeof why, "the request target must be a path or an absolute URL"),
                                  SG_ERR_INVALID);
    if (flags)
        flags->has_bad_escape = 0; /* the next request on this connection starts clean */
    if (rc == 0)
        return 1;
    rq->has_begun = 1;
    respond_error_with(rq, rc, why, must_close || has_body(rq) ? close_headers : NULL);
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    struct request *rq = *req_cls;
    if (!rq) {
        rq = request_new(cls, conn, url, method);
        if (!rq)
            return MHD_NO;
        *req_cls = rq;
        worker_request_started(conn, rq, has_body(rq));
        if (!passes_strict_checks(rq, version))
            return MHD_YES;
        /*
         * An answer queued now, before the body, makes libmicrohttpd close the
         * connection afterwards: worth it to refuse a body unread, wasteful for
         * a request without one, which begins with its last call instead.
         */
        if (has_body(rq))
            request_begin(rq);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        rq->body_left = 0;
        /* After an early answer or a failure the rest of the body is read and dropped. */
        if (!rq->has_responded && rq->err == SG_OK)
            request_body(rq, upload_data, n);
        if (rq->is_body_held && rq->err == SG_OK && !rq->has_responded && rq->body_left <= n) {
            *upload_data_size = rq->body_left; /* given again after request_release_body */
            n -= rq->body_left;
        } else if (rq->is_body_held) {
            request_release_body(rq); /* failed meanwhile: the rest is read and dropped */
        }
        rq->bytes_in += n;
        return MHD_YES;
    }
    if (rq->resume)
        return answer_deferred(rq);
    if (rq->has_responded)
        return MHD_YES;
    worker_request_body_done(conn);
    if (!rq->has_begun)
        request_begin(rq);
    if (!rq->has_responded)
        request_finish(rq);
    return rq->has_responded || rq->resume ? MHD_YES : MHD_NO;
}

static void access_log(struct request *rq, unsigned status, int is_complete, int64_t duration_us)
{
    struct sg_log_field f[11];
    size_t n = 0;
    f[n++] = SG_LOG_FIELD_STR("id", rq->id);
    f[n++] = SG_LOG_FIELD_STR("method", rq->method);
    f[n++] = SG_LOG_FIELD_STR("path", rq->url);
    f[n++] = SG_LOG_FIELD_STR("route", router_slot_name(rq->slot));
    f[n++] = SG_LOG_FIELD_INT("status", status);
    f[n++] = SG_LOG_FIELD_INT("us", duration_us);
    f[n++] = SG_LOG_FIELD_INT("in", rq->bytes_in);
    f[n++] = SG_LOG_FIELD_INT("out", rq->bytes_out);
    f[n++] = SG_LOG_FIELD_STR("remote", rq->remote);
    if (rq->err != SG_OK) {
        unsigned st;
        const char *code;
        http_error(rq->err, &st, &code);
        f[n++] = SG_LOG_FIELD_STR("error", code);
    }
    if (!is_complete)
        f[n++] = SG_LOG_FIELD_BOOL("aborted", 1);
    /* Logged on every request: fields as an array, with no JSON object built for the text format. */
    sg_log_record(SG_LOG_INFO, "request", f, n);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *rq = *req_cls;
    int is_complete = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    int64_t duration_us;
    unsigned status;
    (void)cls;
    if (!rq)
        return;
    *req_cls = NULL;
    worker_request_ended(conn);
    if (rq->state_free)
        rq->state_free(rq, is_complete);
    duration_us = now_us() - rq->start_us;
    /* No answer at all: the client left first (499, as nginx logs it). */
    status = rq->status ? rq->status : 499;
    access_log(rq, status, is_complete, duration_us);
    metrics_observe(rq->slot, status, duration_us, rq->bytes_in, rq->bytes_out);
    metrics_in_flight(-1);
    free(rq->body);
    free(rq);
}

/*
 * Percent-decodes the path and each query value in place (libmicrohttpd's
 * MHD_OPTION_UNESCAPE_CALLBACK) with validate_unescape: like libmicrohttpd's
 * own decoder, except that %00 can never become a NUL. The handlers see C
 * strings, so a decoded NUL would silently cut a name short:
 * PUT /api/v1/files/a%00.txt stored a file named "a".
 */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    struct http_conn_flags *flags = conn_flags(conn);
    (void)cls;
    return validate_unescape(s, flags ? &flags->has_bad_escape : NULL);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    sg_warn("libmicrohttpd: %s", msg);
}

/* Starts one libmicrohttpd daemon in external epoll mode, to be driven by wk's loop. */
static struct MHD_Daemon *daemon_start(struct gateway *gw, struct worker *wk, int fd, unsigned conn_limit)
{
    /*
     * External epoll mode: no thread of libmicrohttpd's own; the worker's
     * loop waits on the daemon's epoll descriptor next to its own descriptors
     * and timers and calls MHD_run. Its edge-triggered registration of client
     * sockets misses a FIN that rides on a client's last bytes; the worker
     * watches every client socket for EPOLLRDHUP itself and makes the daemon
     * see the hang-up (worker.c, docs/internals/gateway.md "Clients that abort
     * an upload"). No inter-thread channel: the loop runs the daemon after
     * every round, so a resume from its own thread needs no wake-up (every
     * resume is, since the chat streams run on the loop too); the channel
     * would cost an eventfd write and read per deferred request.
     */
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem tls_options[4];
    flags |= tls_daemon_options(tls_options); /* HTTPS when a certificate is configured (tls.c) */
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, gw, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_CONNECTION_LIMIT, conn_limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, CONN_IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
                            MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)CONN_MEMORY_INCREMENT,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, gw,
                            MHD_OPTION_NOTIFY_CONNECTION, worker_on_connection, wk,
                            MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                            MHD_OPTION_ARRAY, tls_options, MHD_OPTION_END);
}

/* Stops every worker that runs (each stops its own daemon) and frees s's workers. */
static void stop_workers(struct server *s)
{
    for (unsigned i = 0; i < s->n_workers; i++)
        worker_stop(s->workers[i]);
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
}

int server_start(struct gateway *gw, struct server **out, char *err, size_t errlen)
{
    struct sg_addr addr;
    struct server *s;
    unsigned n = gw->cfg.threads, conn_limit;
    int fd = -1, rc;

    *out = NULL;
    if (getrandom(&id_prefix, sizeof id_prefix, 0) != (ssize_t)sizeof id_prefix)
        id_prefix = (uint32_t)time(NULL) ^ (uint32_t)getpid(); /* uniqueness only, not secrecy */
    /* main() binds first, so a bad --listen fails before any backend starts or directory is made. */
    fd = gw->cfg.listen_fd;
    if (fd < 0) {
        rc = sg_addr_parse(gw->cfg.listen, &addr, err, errlen);
        if (rc == SG_OK)
            rc = sg_listen(&addr, SOCK_STREAM, &fd, err, errlen);
        if (rc != SG_OK)
            return rc;
    }
    gw->cfg.listen_fd = -1; /* the server owns it from here */
    session_init(gw);
    worker_set_timeouts(gw->cfg.header_timeout_ms, gw->cfg.body_timeout_ms);
    s = calloc(1, sizeof *s);
    if (s)
        s->workers = calloc(n, sizeof *s->workers);
    if (!s || !s->workers) {
        close(fd);
        free(s);
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    s->listen_fd = fd;
    /* Each daemon takes its share of the connection limit, as libmicrohttpd's own thread pool divides it. */
    conn_limit = gw->cfg.max_conns / n > 0 ? gw->cfg.max_conns / n : 1;
    for (unsigned i = 0; i < n; i++) {
        struct worker *wk = worker_new(err, errlen);
        struct MHD_Daemon *d = wk ? daemon_start(gw, wk, fd, conn_limit) : NULL;
        if (wk && !d)
            snprintf(err, errlen, "libmicrohttpd could not start on %s", gw->cfg.listen);
        if (!d || worker_run(wk, d, err, errlen) != SG_OK) {
            if (d) {
                MHD_quiesce_daemon(d); /* the listener is shared: stopping must not close it */
                MHD_stop_daemon(d);
            }
            worker_free(wk);
            stop_workers(s);
            close(fd);
            free(s);
            return SG_ERR_SYS;
        }
        s->workers[s->n_workers++] = wk;
    }
    *out = s;
    return SG_OK;
}

int server_listen_fd(struct server *s)
{
    return s->listen_fd;
}

void server_stop(struct server *s, unsigned grace_ms)
{
    int64_t deadline = sg_now_ms() + grace_ms;
    long left;
    if (!s)
        return;
    for (unsigned i = 0; i < s->n_workers; i++)
        worker_quiesce(s->workers[i]); /* no new connections from here on */
    /* Event streams and WebSockets never finish by themselves: each worker ends its own as it quiesces. */
    while ((left = metrics_in_flight_now()) > 0 && sg_now_ms() < deadline)
        usleep(20 * 1000);
    if (left > 0)
        sg_warn("%ld requests still in flight after the %u ms grace period: closing them", left, grace_ms);
    stop_workers(s);
    close(s->listen_fd); /* only now: a worker may have used it until its daemon stopped */
    free(s);
}
