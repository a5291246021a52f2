/* router.h - the table of routes: method and path pattern to handler, the one list the OpenAPI test checks. */
#ifndef SOCKGATE_GATEWAY_ROUTER_H
#define SOCKGATE_GATEWAY_ROUTER_H

#include <stddef.h>
#include <stdio.h>

struct request;

enum route_flags {
    ROUTE_AUTH = 1,        /* needs the bearer token when one is configured */
    ROUTE_JSON_BODY = 2,   /* takes a JSON body, collected (bounded) by the server */
    ROUTE_STREAM_BODY = 4, /* takes a body its handler consumes piece by piece */
    ROUTE_COOKIE_AUTH = 8, /* with ROUTE_AUTH: the session cookie will do instead of the header (EventSource) */
    ROUTE_FILE_NAME = 16,  /* {name} is a stored file's name: checked before anything else, body included */
    ROUTE_BODY_OPTIONAL = 32, /* with ROUTE_STREAM_BODY: no Content-Length and no Transfer-Encoding means no body, not 411 */
    ROUTE_WEBSOCKET = 64,  /* a WebSocket: Origin checked as for a write; with ROUTE_AUTH the token may come as
                              the "bearer.TOKEN" subprotocol (ws.h) */
};

/*
 * One route. The handler is called in up to three steps, matching
 * libmicrohttpd's calls: begin once the headers are in (may answer at once),
 * body for each piece of a streamed body, finish once the body is complete
 * (must answer). Each returns SG_OK or an error the server answers with,
 * using the message recorded by request_fail().
 */
struct route {
    const char *method;
    const char *pattern; /* literal segments and at most one "{name}" segment */
    const char *name;    /* the label in /metrics */
    unsigned flags;
    int (*begin)(struct request *rq);
    int (*body)(struct request *rq, const char *data, size_t len);
    int (*finish)(struct request *rq);
};

/* The routes, in the order --print-routes lists them. */
extern const struct route router_routes[];
extern const size_t router_n_routes;

/* Metrics slots past the routes: static assets, and requests that matched no route. */
#define ROUTE_SLOT_STATIC (router_n_routes)
#define ROUTE_SLOT_OTHER (router_n_routes + 1)
#define ROUTE_N_SLOTS (router_n_routes + 2)

/* Returns the name of a metrics slot. */
const char *router_slot_name(size_t slot);

/*
 * Finds the route for method and path. On a match copies the {name}
 * segment into param. Otherwise returns NULL and, when the path exists
 * under other methods, writes them ("GET, HEAD, PUT, DELETE, OPTIONS") into
 * allow and sets *is_path_known; HEAD falls back to the GET route.
 */
const struct route *router_match(const char *method, const char *path, char *param, size_t paramlen,
                                 int *is_path_known, char *allow, size_t allowlen);

/* Writes "METHOD PATTERN NAME" for every route, one a line (NAME is the label in /metrics and the access log). */
void router_print(FILE *out);

#endif
