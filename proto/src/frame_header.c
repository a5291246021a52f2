/* frame_header.c - validating, encoding and reading frame headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sockgate/error.h"
#include "sockgate/frame.h"

/*
 * Rejects nesting deeper than SG_FRAME_MAX_DEPTH before jansson sees the
 * bytes: jansson's own limit is 2048, far more than a header needs.
 */
static int depth_ok(const char *buf, size_t len)
{
    int depth = 0, in_string = 0, escaped = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (escaped)
                escaped = 0;
            else if (c == '\\')
                escaped = 1;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"')
            in_string = 1;
        else if (c == '{' || c == '[') {
            if (++depth > SG_FRAME_MAX_DEPTH)
                return 0;
        } else if (c == '}' || c == ']')
            depth--;
    }
    return 1;
}

/* Reads the body size of a header: total_size, else filesize, else 0. */
static int body_size_of(const json_t *header, uint64_t *out, char *err, size_t errlen)
{
    const char *key = "total_size";
    json_t *v = json_object_get(header, key);
    json_int_t n;
    if (!v) {
        key = "filesize";
        v = json_object_get(header, key);
    }
    if (!v) {
        *out = 0;
        return SG_OK;
    }
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "%s must be a non-negative integer", key);
        return SG_ERR_PROTO;
    }
    n = json_integer_value(v);
    if (n < 0 || (uint64_t)n > SG_FRAME_MAX_BODY) {
        snprintf(err, errlen, "%s out of range 0..2^53: %lld", key, (long long)n);
        return SG_ERR_PROTO;
    }
    *out = (uint64_t)n;
    return SG_OK;
}

int sg_frame_parse_header(const char *buf, size_t len, json_t **out, uint64_t *body_size, char *err,
                          size_t errlen)
{
    json_error_t jerr;
    json_t *header = NULL;
    int rc;

    *out = NULL;
    if (!depth_ok(buf, len)) {
        snprintf(err, errlen, "header nests deeper than %d levels", SG_FRAME_MAX_DEPTH);
        return SG_ERR_PROTO;
    }
    /* jansson checks UTF-8, rejects \u0000 and anything after the value. */
    header = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!header) {
        snprintf(err, errlen, "header is not valid JSON: %s", jerr.text);
        return SG_ERR_PROTO;
    }
    if (!json_is_object(header)) {
        snprintf(err, errlen, "header is not a JSON object");
        json_decref(header);
        return SG_ERR_PROTO;
    }
    rc = body_size_of(header, body_size, err, errlen);
    if (rc != SG_OK) {
        json_decref(header);
        return rc;
    }
    *out = header;
    return SG_OK;
}

enum sg_sniff sg_frame_sniff(const uint8_t *buf, size_t len, size_t max_header)
{
    uint32_t value = 0;
    size_t have = len < 4 ? len : 4;
    if (max_header == 0)
        max_header = SG_FRAME_DEFAULT_MAX_HEADER;
    for (size_t i = 0; i < have; i++)
        value |= (uint32_t)buf[i] << (8 * i);
    if (len < 4) {
        /* The smallest value the missing high bytes could give must still fit. */
        return value <= max_header ? SG_SNIFF_NEED_MORE : SG_SNIFF_RAW;
    }
    if (value < SG_FRAME_MIN_HEADER || value > max_header)
        return SG_SNIFF_RAW;
    if (len == 4)
        return SG_SNIFF_NEED_MORE;
    return buf[4] == '{' ? SG_SNIFF_FRAMED : SG_SNIFF_RAW;
}

int sg_frame_encode_header(const json_t *header, size_t max_header, uint8_t **out, size_t *out_len)
{
    size_t n;
    uint8_t *buf;
    if (max_header == 0)
        max_header = SG_FRAME_DEFAULT_MAX_HEADER;
    *out = NULL;
    *out_len = 0;
    n = json_dumpb(header, NULL, 0, JSON_COMPACT);
    if (n == 0)
        return SG_ERR_INVALID;
    if (n > max_header)
        return SG_ERR_TOO_LARGE;
    buf = malloc(4 + n);
    if (!buf)
        return SG_ERR_NOMEM;
    buf[0] = (uint8_t)n;
    buf[1] = (uint8_t)(n >> 8);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 24);
    if (json_dumpb(header, (char *)buf + 4, n, JSON_COMPACT) != n) {
        free(buf);
        return SG_ERR_INTERNAL;
    }
    *out = buf;
    *out_len = 4 + n;
    return SG_OK;
}

json_t *sg_frame_error_header(int err, const char *message, const char *id)
{
    json_t *h = json_object();
    if (!h)
        return NULL;
    json_object_set_new(h, "error", json_pack("{s:s, s:s}", "code", sg_err_code(err), "message",
                                              message ? message : sg_strerror(err)));
    if (id)
        json_object_set_new(h, "id", json_string(id));
    return h;
}

int sg_frame_header_error(const json_t *header, char *msg, size_t msglen)
{
    json_t *e = json_object_get(header, "error");
    const char *code, *text;
    if (!e)
        return SG_OK;
    code = json_string_value(json_object_get(e, "code"));
    text = json_string_value(json_object_get(e, "message"));
    if (msg && msglen)
        snprintf(msg, msglen, "%s", text ? text : (code ? code : "error"));
    return sg_err_from_code(code);
}

const char *sg_header_str(const json_t *header, const char *key)
{
    return json_string_value(json_object_get(header, key));
}

int sg_header_int(const json_t *header, const char *key, int64_t min, int64_t max, int64_t *out)
{
    json_t *v = json_object_get(header, key);
    json_int_t n;
    if (!v)
        return SG_ERR_NOT_FOUND;
    if (!json_is_integer(v))
        return SG_ERR_INVALID;
    n = json_integer_value(v);
    if (n < min || n > max)
        return SG_ERR_INVALID;
    *out = n;
    return SG_OK;
}
