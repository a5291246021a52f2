/* static.c - the web page and the OpenAPI document: from --web-root, else compiled into the binary. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "assets.h"
#include "server.h"
#include "sockgate/error.h"

/* The page loads only its own files and talks only to this origin. */
#define PAGE_CSP                                                                                          \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " \
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

#define MAX_ASSET_PATH 512

struct mime {
    const char *ext;
    const char *type;
};

static const struct mime mimes[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".webmanifest", "application/manifest+json"},
    {".woff2", "font/woff2"},
    {".map", "application/json"},
};

static const char *mime_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof mimes / sizeof mimes[0]; i++)
            if (strcmp(dot, mimes[i].ext) == 0)
                return mimes[i].type;
    return "application/octet-stream";
}

/* Accepts "/a/b.js"-like paths only: no "..", no hidden files, no backslashes or control bytes. */
static int is_safe_path(const char *path)
{
    if (path[0] != '/' || strlen(path) >= MAX_ASSET_PATH || strstr(path, "/.") || strchr(path, '\\'))
        return 0;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

static const struct asset *find_asset(const struct asset *table, const char *path)
{
    for (; table->path; table++)
        if (strcmp(table->path, path) == 0)
            return table;
    return NULL;
}

/* Opens root + path as a regular file; returns the descriptor and its size, or -1. */
static int open_under(const char *root, const char *path, uint64_t *size)
{
    char full[MAX_ASSET_PATH * 2];
    struct stat st;
    int fd;
    if ((size_t)snprintf(full, sizeof full, "%s%s", root, path) >= sizeof full)
        return -1;
    fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

static int respond_asset(struct request *rq, struct MHD_Response *resp, const char *path, uint64_t len)
{
    MHD_add_response_header(resp, "Content-Type", mime_of(path));
    MHD_add_response_header(resp, "Content-Security-Policy", PAGE_CSP);
    /* Revalidate every time: a rebuilt or edited page must show at once. */
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    if (strcmp(rq->method, "HEAD") != 0)
        rq->bytes_out += len;
    return respond(rq, 200, resp);
}

int api_static(struct request *rq)
{
    const char *path = strcmp(rq->url, "/") == 0 ? "/index.html" : rq->url;
    const char *root = rq->gw->cfg.web_root;
    struct MHD_Response *resp;
    const struct asset *a;

    if (!is_safe_path(path))
        return request_fail(rq, SG_ERR_NOT_FOUND, "no such page");
    if (root && *root) {
        uint64_t size = 0;
        int fd = open_under(root, path, &size);
        if (fd < 0)
            return request_fail(rq, SG_ERR_NOT_FOUND, "no such page");
        resp = MHD_create_response_from_fd64(size, fd); /* takes fd; sendfile where it can */
        if (!resp) {
            close(fd);
            return request_fail(rq, SG_ERR_NOMEM, "out of memory");
        }
        return respond_asset(rq, resp, path, size);
    }
    a = find_asset(web_assets, path);
    if (!a)
        return request_fail(rq, SG_ERR_NOT_FOUND, "no such page");
    resp = MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    return respond_asset(rq, resp, path, a->len);
}

int api_openapi(struct request *rq)
{
    const struct asset *a = find_asset(openapi_assets, "/openapi.json");
    struct MHD_Response *resp;
    if (!a)
        return request_fail(rq, SG_ERR_NOT_FOUND, "this gateway was built without docs/openapi.json");
    resp = MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    if (strcmp(rq->method, "HEAD") != 0)
        rq->bytes_out += a->len;
    rq->bytes_out += a->len;
    return respond(rq, 200, resp);
}
