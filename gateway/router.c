/* router.c - method and path to handler: the route table and its matcher. */
#include "router.h"

#include <string.h>

#include "api.h"

/* Every route the gateway serves; docs/openapi.json must name each (tests/integration/gateway checks). */
const struct route router_routes[] = {
    {"POST", "/api/v1/echo", "echo", ROUTE_AUTH | ROUTE_JSON_BODY, NULL, NULL, api_echo},
    {"GET", "/api/v1/time", "time", ROUTE_AUTH, NULL, NULL, api_time},
    {"POST", "/api/v1/exec", "exec", ROUTE_AUTH | ROUTE_JSON_BODY, NULL, NULL, api_exec},
    {"GET", "/api/v1/exec/allowed", "exec_allowed", ROUTE_AUTH, NULL, NULL, api_exec_allowed},
    {"GET", "/api/v1/files", "files_list", ROUTE_AUTH, NULL, NULL, api_files_list},
    {"POST", "/api/v1/files", "files_post", ROUTE_AUTH | ROUTE_STREAM_BODY, api_files_post_begin,
     api_files_post_body, api_files_post_finish},
    {"GET", "/api/v1/files/{name}", "files_get", ROUTE_AUTH | ROUTE_FILE_NAME, NULL, NULL, api_files_get},
    {"HEAD", "/api/v1/files/{name}", "files_head", ROUTE_AUTH | ROUTE_FILE_NAME, NULL, NULL, api_files_head},
    {"PUT", "/api/v1/files/{name}", "files_put", ROUTE_AUTH | ROUTE_FILE_NAME | ROUTE_STREAM_BODY, api_files_put_begin,
     api_files_put_body, api_files_put_finish},
    {"DELETE", "/api/v1/files/{name}", "files_delete", ROUTE_AUTH | ROUTE_FILE_NAME, NULL, NULL, api_files_delete},
    /* tus 1.0 (api_uploads*.c). Its discovery is an OPTIONS that a CORS preflight may be: no token asked. */
    {"OPTIONS", "/api/v1/uploads/", "uploads_options", 0, NULL, NULL, api_uploads_options},
    {"POST", "/api/v1/uploads/", "uploads_create", ROUTE_AUTH | ROUTE_STREAM_BODY | ROUTE_BODY_OPTIONAL,
     api_uploads_create_begin, api_uploads_write_body, api_uploads_create_finish},
    {"HEAD", "/api/v1/uploads/{id}", "uploads_head", ROUTE_AUTH, NULL, NULL, api_uploads_head},
    {"PATCH", "/api/v1/uploads/{id}", "uploads_patch", ROUTE_AUTH | ROUTE_STREAM_BODY, api_uploads_patch_begin,
     api_uploads_write_body, api_uploads_patch_finish},
    {"DELETE", "/api/v1/uploads/{id}", "uploads_delete", ROUTE_AUTH, NULL, NULL, api_uploads_delete},
    {"GET", "/api/v1/chat/events", "chat_events", ROUTE_AUTH | ROUTE_COOKIE_AUTH, NULL, NULL, api_chat_events},
    {"POST", "/api/v1/chat/reply", "chat_reply", ROUTE_AUTH | ROUTE_JSON_BODY, NULL, NULL, api_chat_reply},
    {"GET", "/api/v1/chat/peers", "chat_peers", ROUTE_AUTH, NULL, NULL, api_chat_peers},
    {"GET", "/api/v1/ws/echo", "ws_echo", ROUTE_AUTH | ROUTE_COOKIE_AUTH | ROUTE_WEBSOCKET, NULL, NULL, api_ws_echo},
    {"GET", "/api/v1/ws/chat", "ws_chat", ROUTE_AUTH | ROUTE_COOKIE_AUTH | ROUTE_WEBSOCKET, NULL, NULL, api_ws_chat},
    {"POST", "/api/v1/session", "session_create", ROUTE_AUTH, NULL, NULL, api_session_create},
    /* Clearing the cookie proves nothing and grants nothing, so it needs no token. */
    {"DELETE", "/api/v1/session", "session_delete", 0, NULL, NULL, api_session_delete},
    {"GET", "/api/v1/openapi.json", "openapi", ROUTE_AUTH, NULL, NULL, api_openapi},
    {"GET", "/healthz", "healthz", 0, NULL, NULL, api_healthz},
    /* Open, but without the token it says only ready or not: the details name backend addresses. */
    {"GET", "/readyz", "readyz", 0, NULL, NULL, api_readyz},
    {"GET", "/metrics", "metrics", ROUTE_AUTH, NULL, NULL, api_metrics},
    {"GET", "/", "index", 0, NULL, NULL, api_static},
};

const size_t router_n_routes = sizeof router_routes / sizeof router_routes[0];

const char *router_slot_name(size_t slot)
{
    if (slot < router_n_routes)
        return router_routes[slot].name;
    return slot == ROUTE_SLOT_STATIC ? "static" : "other";
}

/*
 * Matches path against pattern; a "{...}" segment takes one non-empty segment
 * into param, or, when it ends the pattern, the whole rest of the path (a
 * decoded %2F included), so that a name that is not a name is answered by the
 * route's name check (400 invalid_name), not as an unknown path. A segment too
 * long for param is cut to fit: every such name is over the limit anyway.
 */
static int path_matches(const char *pattern, const char *path, char *param, size_t paramlen)
{
    param[0] = '\0';
    while (*pattern && *path) {
        if (*pattern == '{') {
            const char *end = strchr(pattern, '}');
            size_t n = end && end[1] == '\0' ? strlen(path) : strcspn(path, "/");
            if (n == 0)
                return 0;
            if (n >= paramlen) {
                memcpy(param, path, paramlen - 1);
                param[paramlen - 1] = '\0';
                path += n;
                pattern = end + 1;
                continue;
            }
            memcpy(param, path, n);
            param[n] = '\0';
            path += n;
            pattern = strchr(pattern, '}');
            if (!pattern)
                return 0;
            pattern++;
            continue;
        }
        if (*pattern != *path)
            return 0;
        pattern++;
        path++;
    }
    return *pattern == '\0' && *path == '\0';
}

/* Appends ", method" (or "method" when first) to allow, unless it is already listed. */
static void allow_add(char *allow, size_t allowlen, const char *method)
{
    size_t used = strlen(allow), n = strlen(method);
    const char *p = allow;
    while ((p = strstr(p, method)) != NULL) {
        if ((p == allow || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return;
        p += n;
    }
    if (used + n + 3 > allowlen)
        return;
    if (used > 0) {
        memcpy(allow + used, ", ", 2);
        used += 2;
    }
    memcpy(allow + used, method, n + 1);
}

const struct route *router_match(const char *method, const char *path, char *param, size_t paramlen,
                                 int *is_path_known, char *allow, size_t allowlen)
{
    const struct route *get_route = NULL;
    char scratch[1024];

    *is_path_known = 0;
    if (allowlen > 0)
        allow[0] = '\0';
    for (size_t i = 0; i < router_n_routes; i++) {
        const struct route *r = &router_routes[i];
        if (!path_matches(r->pattern, path, scratch, sizeof scratch))
            continue;
        *is_path_known = 1;
        if (strcmp(r->method, method) == 0) {
            snprintf(param, paramlen, "%s", scratch);
            return r;
        }
        if (strcmp(r->method, "GET") == 0)
            get_route = r;
    }
    /* HEAD is GET without the body (libmicrohttpd drops it) unless a route says otherwise. */
    if (get_route && strcmp(method, "HEAD") == 0) {
        path_matches(get_route->pattern, path, param, paramlen);
        return get_route;
    }
    if (*is_path_known) {
        for (size_t i = 0; i < router_n_routes; i++) {
            const struct route *r = &router_routes[i];
            if (!path_matches(r->pattern, path, scratch, sizeof scratch))
                continue;
            allow_add(allow, allowlen, r->method);
            if (strcmp(r->method, "GET") == 0)
                allow_add(allow, allowlen, "HEAD");
        }
        allow_add(allow, allowlen, "OPTIONS");
    }
    return NULL;
}

void router_print(FILE *out)
{
    for (size_t i = 0; i < router_n_routes; i++)
        fprintf(out, "%s %s %s\n", router_routes[i].method, router_routes[i].pattern, router_routes[i].name);
}
