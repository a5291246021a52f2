/* http_strict.h - what a careful HTTP server refuses before routing: the framing and header rules of RFC 9110/9112. */
#ifndef SOCKGATE_GATEWAY_HTTP_STRICT_H
#define SOCKGATE_GATEWAY_HTTP_STRICT_H

#include <microhttpd.h>
#include <stddef.h>

/*
 * libmicrohttpd 0.9.75 parses the request line and headers, but leaves to its
 * user several decisions that decide where one request ends and the next
 * begins (request smuggling) or which host a request is for (DNS rebinding).
 * These checks make them as nginx does; docs/security.md lists each one.
 */

/* Per-connection flags that libmicrohttpd's callbacks set before the first access handler call. */
struct http_conn_flags {
    int has_bad_escape; /* a '%' in the path or query not followed by two hex digits */
};

/*
 * Checks the headers of the request on conn (HTTP version version). Returns
 * 0 when the request may go on; else the error value (enum sg_err or gw_err)
 * to answer with, why in err, and *must_close set when the byte stream can no
 * longer be trusted to hold another request.
 */
int http_strict_check(struct MHD_Connection *conn, const char *version, const struct http_conn_flags *flags,
                      int *must_close, char *err, size_t errlen);

/*
 * Returns the origin-form path of url: url itself when it starts with '/', the
 * part after the authority of an absolute-form target ("http://h/p" gives "/p",
 * "http://h" gives "/"), and NULL for any other form. When url is in absolute
 * form and authority is not NULL, the authority is copied there (at most
 * authlen bytes, NUL-terminated; "" when it does not fit).
 */
const char *http_origin_form(const char *url, char *authority, size_t authlen);

#endif
