/* http_strict.c - the framing and header rules the gateway enforces before routing (RFC 9110, RFC 9112). */
#include "http_strict.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "errors.h"
#include "sockgate/error.h"

/* What one pass over the request's headers found. */
struct header_scan {
    unsigned n_host, n_length, n_encoding;
    const char *length, *encoding;
    int lengths_differ;
    char bad_name[64];  /* a header name that is not an RFC 9110 token */
    char bad_value[64]; /* the name of a header whose value holds a control byte */
    const char *prev_end; /* where the previous header's value ends (value + value_size), NULL before the first */
    int is_mangled;       /* a header is not where an unfolded, NUL-free line would have put it */
};

/* RFC 9110 5.6.2: tchar. A space before the colon ("Host : x") makes a name that is not a token. */
static int is_token_char(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* RFC 9110 5.5: field values hold visible characters, spaces and tabs; NUL, CR, LF and other controls are refused. */
static int is_clean_value(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

static void copy_printable(char *dst, size_t dstlen, const char *src, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w + 1 < dstlen; i++)
        dst[w++] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[w] = '\0';
}

/* Returns 1 when key starts with name (any case) and goes on past it. */
static int is_longer_prefix(const char *key, size_t key_size, const char *name)
{
    size_t n = strlen(name);
    return key_size > n && strncasecmp(key, name, n) == 0;
}

/*
 * libmicrohttpd 0.9.75 hands over header values cut at their first NUL
 * (strlen) and joins an obs-fold continuation onto the header's name in a
 * buffer of its own, so neither shows in the name or value it reports. Both
 * show in where it leaves them: it parses in place, replacing the colon, the
 * CR and the LF of each line by NUL, so an intact header's value starts right
 * after its name's NUL (and some blanks), and ends one (LF) or two (CRLF)
 * NULs before the next header's name. A value with a NUL inside ends earlier;
 * a folded header's name is elsewhere. Only pointers into the same header
 * block are compared, and only the bytes between them are read.
 */
static int is_in_place(struct header_scan *hs, const char *key, size_t key_size, const char *value)
{
    const char *key_end = key + key_size;
    if (hs->prev_end && key != hs->prev_end + 1 && key != hs->prev_end + 2)
        return 0;
    if (hs->prev_end && (hs->prev_end[0] != '\0' || (key == hs->prev_end + 2 && hs->prev_end[1] != '\0')))
        return 0;
    if (value < key_end + 1 || value > key_end + 1 + 1024 || key_end[0] != '\0')
        return 0;
    for (const char *p = key_end + 1; p < value; p++)
        if (*p != ' ' && *p != '\t')
            return 0;
    return 1;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                   const char *value, size_t value_size)
{
    struct header_scan *hs = cls;
    (void)kind;
    if (value && !is_in_place(hs, key, key_size, value))
        hs->is_mangled = 1;
    hs->prev_end = value ? value + value_size : NULL;
    for (size_t i = 0; i < key_size; i++) {
        if (!is_token_char((unsigned char)key[i])) {
            if (!hs->bad_name[0])
                copy_printable(hs->bad_name, sizeof hs->bad_name, key, key_size);
            break;
        }
    }
    if (key_size == 0 && !hs->bad_name[0])
        snprintf(hs->bad_name, sizeof hs->bad_name, "(empty)");
    if (value && !is_clean_value(value, value_size) && !hs->bad_value[0])
        copy_printable(hs->bad_value, sizeof hs->bad_value, key, key_size);
    /*
     * libmicrohttpd 0.9.75 joins an obs-fold continuation ("Transfer-Encoding:"
     * CRLF " chunked") onto the header's name, not its value. A proxy that
     * unfolds sees the framing header; the gateway would not. Any name that
     * starts with a framing or routing header's name but is longer is such a
     * fold (RFC 9112 5.2 lets a server refuse obs-fold with 400).
     */
    if (!hs->bad_name[0] && (is_longer_prefix(key, key_size, "Transfer-Encoding") ||
                             is_longer_prefix(key, key_size, "Content-Length") ||
                             is_longer_prefix(key, key_size, "Host")))
        copy_printable(hs->bad_name, sizeof hs->bad_name, key, key_size);
    if (strcasecmp(key, "Host") == 0) {
        hs->n_host++;
    } else if (strcasecmp(key, "Content-Length") == 0) {
        if (hs->n_length++ == 0)
            hs->length = value;
        else if (!value || !hs->length || strcmp(value, hs->length) != 0)
            hs->lengths_differ = 1;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        if (hs->n_encoding++ == 0)
            hs->encoding = value;
    }
    return MHD_YES;
}

/* Returns 1 when a Transfer-Encoding value is exactly "chunked" (any case, optional surrounding spaces). */
static int is_plain_chunked(const char *te)
{
    size_t n;
    while (*te == ' ' || *te == '\t')
        te++;
    n = strlen(te);
    while (n > 0 && (te[n - 1] == ' ' || te[n - 1] == '\t'))
        n--;
    return n == 7 && strncasecmp(te, "chunked", 7) == 0;
}

int http_strict_check(struct MHD_Connection *conn, const char *version, const struct http_conn_flags *flags,
                      int *must_close, char *err, size_t errlen)
{
    struct header_scan hs;
    int is_http11 = version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0;

    memset(&hs, 0, sizeof hs);
    *must_close = 1;
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_header, &hs);
    /* The last header's line ends in a NUL (its CR or LF), and the empty line after it in another. */
    if (hs.prev_end && (hs.prev_end[0] != '\0' || hs.prev_end[1] != '\0'))
        hs.is_mangled = 1;
    if (hs.is_mangled) {
        snprintf(err, errlen, "a header holds a NUL byte or is folded over several lines (obs-fold)");
        return SG_ERR_INVALID;
    }
    if (hs.bad_name[0]) {
        snprintf(err, errlen,
                 "the header name \"%s\" is not valid (a space before the colon, or a header folded over lines)",
                 hs.bad_name);
        return SG_ERR_INVALID;
    }
    if (hs.bad_value[0]) {
        snprintf(err, errlen, "the value of the header \"%s\" holds a control character", hs.bad_value);
        return SG_ERR_INVALID;
    }
    /*
     * RFC 9112 6.1: a request with both is an attempt at smuggling. Which one
     * a server obeys decides where the body ends; a proxy in front may obey
     * the other. Refused and the connection closed, as nginx does.
     */
    if (hs.n_length > 0 && hs.n_encoding > 0) {
        snprintf(err, errlen, "a request may not carry both Content-Length and Transfer-Encoding");
        return SG_ERR_INVALID;
    }
    if (hs.n_length > 1) {
        snprintf(err, errlen, hs.lengths_differ ? "the request has Content-Length headers that disagree"
                                                : "the request has more than one Content-Length header");
        return SG_ERR_INVALID;
    }
    if (hs.n_encoding > 1) {
        snprintf(err, errlen, "the request has more than one Transfer-Encoding header");
        return SG_ERR_INVALID;
    }
    if (hs.n_encoding == 1 && (!hs.encoding || !is_plain_chunked(hs.encoding))) {
        snprintf(err, errlen, "Transfer-Encoding other than plain \"chunked\" is not supported");
        return GW_ERR_NOT_IMPLEMENTED;
    }
    if (hs.n_encoding == 1 && !is_http11) {
        snprintf(err, errlen, "Transfer-Encoding needs HTTP/1.1");
        return SG_ERR_INVALID;
    }
    if (hs.n_host > 1) {
        snprintf(err, errlen, "the request has more than one Host header");
        return SG_ERR_INVALID;
    }
    *must_close = 0;
    if (is_http11 && hs.n_host == 0) {
        snprintf(err, errlen, "an HTTP/1.1 request needs a Host header");
        return SG_ERR_INVALID;
    }
    if (flags && flags->has_bad_escape) {
        snprintf(err, errlen, "the URL holds a '%%' that is not followed by two hex digits");
        return SG_ERR_INVALID;
    }
    return 0;
}

const char *http_origin_form(const char *url, char *authority, size_t authlen)
{
    const char *rest, *slash;
    size_t n;
    if (url[0] == '/')
        return url;
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    else
        return NULL;
    slash = strchr(rest, '/');
    n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (authority && authlen > 0) {
        if (n < authlen) {
            memcpy(authority, rest, n);
            authority[n] = '\0';
        } else {
            authority[0] = '\0';
        }
    }
    return slash ? slash : "/";
}
