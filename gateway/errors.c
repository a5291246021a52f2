/* errors.c - enum sg_err and enum gw_err to HTTP statuses: the gateway's only such table. */
#include "errors.h"

#include <stddef.h>

struct mapping {
    unsigned status;
    const char *code; /* NULL: the wire code of the sg_err value */
};

/*
 * Why these statuses: the client's own mistakes are 4xx; a backend that
 * answered nonsense or hung up mid-answer is 502, one that cannot be
 * reached (or is saturated) is 503, one that is too slow is 504.
 */
static const struct mapping sg_map[SG_ERR__COUNT] = {
    [SG_OK] = {200, NULL},
    [SG_ERR_SYS] = {500, NULL},
    [SG_ERR_NOMEM] = {503, NULL},
    [SG_ERR_INVALID] = {400, NULL},
    [SG_ERR_PROTO] = {502, NULL},
    [SG_ERR_TIMEOUT] = {504, NULL},
    [SG_ERR_CLOSED] = {502, NULL},
    [SG_ERR_REFUSED] = {503, NULL},
    [SG_ERR_TOO_LARGE] = {413, NULL},
    [SG_ERR_NOT_FOUND] = {404, NULL},
    [SG_ERR_NOT_ALLOWED] = {403, NULL},
    [SG_ERR_INVALID_NAME] = {400, NULL},
    [SG_ERR_CHECKSUM] = {400, NULL},
    [SG_ERR_NO_SPACE] = {507, NULL},
    [SG_ERR_BUSY] = {503, NULL},
    [SG_ERR_UNAUTHORIZED] = {401, NULL},
    [SG_ERR_INTERNAL] = {500, NULL},
    [SG_ERR_PRECONDITION] = {412, NULL},
    /* The upload sessions' errors, with tus 1.0's statuses (460 is tus's own "Checksum Mismatch"). */
    [SG_ERR_CONFLICT] = {409, NULL},
    [SG_ERR_LOCKED] = {423, NULL},
    [SG_ERR_CHUNK_CHECKSUM] = {460, NULL},
};

static const struct mapping gw_map[GW_ERR__END - GW_ERR_METHOD] = {
    [GW_ERR_METHOD - GW_ERR_METHOD] = {405, "method_not_allowed"},
    [GW_ERR_LENGTH_REQUIRED - GW_ERR_METHOD] = {411, "length_required"},
    [GW_ERR_MEDIA_TYPE - GW_ERR_METHOD] = {415, "unsupported_media_type"},
    [GW_ERR_RANGE - GW_ERR_METHOD] = {416, "range_not_satisfiable"},
    [GW_ERR_HOST - GW_ERR_METHOD] = {400, "host_not_allowed"},
    [GW_ERR_CROSS_ORIGIN - GW_ERR_METHOD] = {403, "cross_origin_refused"},
    [GW_ERR_NOT_IMPLEMENTED - GW_ERR_METHOD] = {501, "not_implemented"},
    [GW_ERR_UPGRADE_REQUIRED - GW_ERR_METHOD] = {426, "upgrade_required"},
};

static const char *const gw_sentences[GW_ERR__END - GW_ERR_METHOD] = {
    "this method is not allowed on this path",
    "a request body needs a Content-Length header or chunked transfer encoding",
    "this Content-Type is not accepted here",
    "the requested range is outside the file",
    "this gateway does not answer to that host name",
    "a write from another origin's page is refused",
    "this request uses an HTTP feature the gateway does not implement",
    "this path speaks WebSocket only: open it with a WebSocket handshake",
};

void http_error(int err, unsigned *status, const char **code)
{
    if (err >= GW_ERR_METHOD && err < GW_ERR__END) {
        *status = gw_map[err - GW_ERR_METHOD].status;
        *code = gw_map[err - GW_ERR_METHOD].code;
        return;
    }
    if (err <= SG_OK || err >= SG_ERR__COUNT)
        err = SG_ERR_INTERNAL;
    *status = sg_map[err].status;
    *code = sg_map[err].code ? sg_map[err].code : sg_err_code(err);
}

json_t *http_error_body(int err, const char *message)
{
    const char *generic = (err >= GW_ERR_METHOD && err < GW_ERR__END) ? gw_sentences[err - GW_ERR_METHOD]
                                                                        : sg_strerror(err);
    json_t *text = json_string(message && *message ? message : generic);
    unsigned status;
    const char *code;
    http_error(err, &status, &code);
    /* A message quoting client bytes may not be UTF-8: then the generic sentence stands in. */
    if (!text)
        text = json_string(generic);
    return json_pack("{s:{s:s,s:o}}", "error", "code", code, "message", text);
}
