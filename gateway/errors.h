/* errors.h - the one place where an error value becomes an HTTP status and a JSON error body. */
#ifndef SOCKGATE_GATEWAY_ERRORS_H
#define SOCKGATE_GATEWAY_ERRORS_H

#include <jansson.h>

#include "sockgate/error.h"

/*
 * HTTP-only failures that have no place in the wire protocol's enum sg_err;
 * they continue its numbering so one int carries either kind.
 */
enum gw_err {
    GW_ERR_METHOD = SG_ERR__COUNT + 1, /* 405: the path exists, the method does not */
    GW_ERR_LENGTH_REQUIRED,            /* 411: a body without Content-Length or chunked encoding */
    GW_ERR_MEDIA_TYPE,                 /* 415: a Content-Type the route does not take */
    GW_ERR_RANGE,                      /* 416: a Range outside the file */
    GW_ERR_HOST,                       /* 400: a Host name this gateway does not answer to */
    GW_ERR_CROSS_ORIGIN,               /* 403: a write from another origin's page */
    GW_ERR_NOT_IMPLEMENTED,            /* 501: a Transfer-Encoding other than plain chunked */
    GW_ERR_UPGRADE_REQUIRED,           /* 426: a WebSocket route asked without a WebSocket handshake */
    GW_ERR__END
};

/* Maps err (enum sg_err or enum gw_err) to its HTTP status and snake_case code (static). */
void http_error(int err, unsigned *status, const char **code);

/* Returns a new {"error": {"code", "message"}} object; message NULL or "" means the generic sentence. */
json_t *http_error_body(int err, const char *message);

#endif
