/* api_uploads.c - tus 1.0 at /api/v1/uploads/: discovery (OPTIONS), HEAD, termination, and the headers' rules. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "errors.h"
#include "server.h"
#include "uploads.h"
#include "validate.h"
#ifdef SG_HAVE_FILE
#include "file/name.h"
#endif
#include "sockgate/error.h"
#include "sockgate/hash.h"
#include "sockgate/net.h"

/* A session id: 128 random bits in lower-case hex (backends/file/session.c). */
#define SESSION_ID_HEX 32

int uploads_check_version(struct request *rq)
{
    static const char *const headers[] = {"Tus-Version", "1.0.0", NULL};
    const char *v = request_header(rq, "Tus-Resumable");
    char msg[160];
    if (v && strcmp(v, "1.0.0") == 0)
        return SG_OK;
    snprintf(msg, sizeof msg, "%s%.40s%s; this server speaks tus 1.0.0 only (send Tus-Resumable: 1.0.0)",
             v ? "Tus-Resumable " : "no Tus-Resumable header", v ? v : "", v ? " is not supported" : "");
    respond_error_with(rq, SG_ERR_PRECONDITION, msg, headers);
    return SG_ERR_PRECONDITION;
}

int uploads_check_id(struct request *rq)
{
    if (strlen(rq->param) == SESSION_ID_HEX && strspn(rq->param, "0123456789abcdef") == SESSION_ID_HEX)
        return SG_OK;
    return request_fail(rq, SG_ERR_NOT_FOUND, "no upload %.80s here (upload ids are 32 hex digits)", rq->param);
}

/* Value of a base64 character, or -1. */
static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/*
 * Decodes len bytes of standard base64 (padding optional, as tus clients
 * differ) into out (cap bytes). Returns the decoded length, or -1 when the
 * text is not base64 or does not fit.
 */
static long b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    size_t o = 0;
    int bits = 0;
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}

int uploads_checksum(struct request *rq, json_t *hdr)
{
    static const struct {
        const char *name;
        size_t bytes;
    } algs[] = {{"sha1", 20}, {"sha256", 32}, {"md5", 16}};
    const char *v = request_header(rq, "Upload-Checksum");
    unsigned char digest[32];
    char hex[65];
    size_t n;
    long got;

    if (!v)
        return SG_OK;
    n = strcspn(v, " ");
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        if (strlen(algs[i].name) != n || strncmp(v, algs[i].name, n) != 0)
            continue;
        const char *b64 = v[n] == ' ' ? v + n + 1 : v + n;
        got = b64_decode(b64, strlen(b64), digest, sizeof digest);
        if (v[n] != ' ' || got != (long)algs[i].bytes)
            return request_fail(rq, SG_ERR_INVALID, "Upload-Checksum %s needs a base64 digest of %zu bytes",
                                algs[i].name, algs[i].bytes);
        for (size_t k = 0; k < algs[i].bytes; k++)
            snprintf(hex + 2 * k, 3, "%02x", digest[k]);
        return json_object_set_new(hdr, algs[i].name, json_string(hex)) == 0
                   ? SG_OK
                   : request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    return request_fail(rq, SG_ERR_INVALID, "Upload-Checksum algorithm '%.*s' is not one of sha1, sha256, md5",
                        (int)(n > 20 ? 20 : n), v);
}

int uploads_metadata(struct request *rq, const char *metadata, char *name, size_t namelen)
{
    const char *p = metadata;
    int has_name = 0;

    name[0] = '\0';
    if (strlen(metadata) > UPLOADS_MAX_METADATA)
        return request_fail(rq, SG_ERR_INVALID, "Upload-Metadata may have at most %u bytes", UPLOADS_MAX_METADATA);
    while (*p) {
        size_t pair = strcspn(p, ","), klen;
        const char *key, *val;
        while (*p == ' ' && pair > 0) {
            p++;
            pair--;
        }
        key = p;
        klen = strcspn(key, " ,");
        if (klen == 0)
            return request_fail(rq, SG_ERR_INVALID, "Upload-Metadata has an empty key");
        for (const char *q = metadata; q < key;) {
            /* Keys must be unique: which of two a reader takes is anyone's guess. */
            size_t qk = strcspn(q, " ,");
            if (qk == klen && strncmp(q, key, klen) == 0)
                return request_fail(rq, SG_ERR_INVALID, "Upload-Metadata names '%.*s' twice", (int)klen, key);
            q += strcspn(q, ",");
            while (*q == ',' || *q == ' ')
                q++;
        }
        val = key + klen;
        if (*val == ' ')
            val++;
        if (klen == 8 && strncmp(key, "filename", 8) == 0) {
            size_t vlen = (size_t)(p + pair - val);
            long got = b64_decode(val, vlen, (unsigned char *)name, namelen - 1);
            if (got <= 0)
                return request_fail(rq, SG_ERR_INVALID, "Upload-Metadata filename is not a base64 file name");
            name[got] = '\0';
            if (strlen(name) != (size_t)got)
                return request_fail(rq, SG_ERR_INVALID_NAME, "the file name has a NUL byte in it");
            has_name = 1;
        } else if ((size_t)(val - key) < pair) {
            unsigned char scratch[UPLOADS_MAX_METADATA];
            if (b64_decode(val, (size_t)(p + pair - val), scratch, sizeof scratch) < 0)
                return request_fail(rq, SG_ERR_INVALID, "Upload-Metadata value of '%.*s' is not base64", (int)klen,
                                    key);
        }
        p += pair;
        if (*p == ',')
            p++;
    }
    if (!has_name)
        return request_fail(rq, SG_ERR_INVALID,
                            "Upload-Metadata must carry filename (base64): the name the file is stored under");
#ifdef SG_HAVE_FILE
    {
        char why[200];
        if (file_name_check(name, strlen(name), why, sizeof why) != SG_OK)
            return request_fail(rq, SG_ERR_INVALID_NAME, "%s", why);
    }
#endif
    return SG_OK;
}

int uploads_check_body(struct request *rq)
{
    const char *ctype = request_header(rq, "Content-Type");
    size_t n = ctype ? strcspn(ctype, "; \t") : 0;
    if (!ctype || n != strlen(UPLOADS_BODY_TYPE) || strncasecmp(ctype, UPLOADS_BODY_TYPE, n) != 0)
        return request_fail(rq, GW_ERR_MEDIA_TYPE, "send the bytes as Content-Type: " UPLOADS_BODY_TYPE);
    if (!request_header(rq, "Content-Length"))
        return request_fail(rq, GW_ERR_LENGTH_REQUIRED,
                            "a tus body needs a Content-Length (the file backend is told each append's size first)");
    return SG_OK;
}

void uploads_add_expires(struct MHD_Response *resp, const json_t *answer)
{
    const json_t *v = json_object_get(answer, "expires_ms");
    time_t t;
    struct tm tm;
    char date[64];
    if (!json_is_integer(v))
        return;
    t = (time_t)(json_integer_value(v) / 1000); /* HTTP dates have whole seconds */
    if (!gmtime_r(&t, &tm) || strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
        return;
    MHD_add_response_header(resp, "Upload-Expires", date);
}

void uploads_add_offset(struct MHD_Response *resp, const json_t *answer)
{
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, (int64_t)json_integer_value(json_object_get(answer, "offset")));
    MHD_add_response_header(resp, "Upload-Offset", num);
}

int api_uploads_options(struct request *rq)
{
    char max[32];
    struct MHD_Response *resp = options_response(rq);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    snprintf(max, sizeof max, "%" PRIu64, rq->gw->cfg.max_upload);
    MHD_add_response_header(resp, "Tus-Version", "1.0.0");
    MHD_add_response_header(resp, "Tus-Extension",
                            "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration");
    MHD_add_response_header(resp, "Tus-Max-Size", max);
    MHD_add_response_header(resp, "Tus-Checksum-Algorithm", "sha1,sha256,md5");
    return respond(rq, 204, resp);
}

/* One bodiless session op on rq->param; *answer is new on SG_OK. Errors are recorded in rq. */
static int session_call(struct request *rq, const char *op, json_t **answer)
{
    struct upstream *up = &rq->gw->backends[BACKEND_FILE];
    char err[384] = "";
    json_t *hdr = json_pack("{s:s,s:s,s:s}", "op", op, "session", rq->param, "id", rq->id);
    int rc;
    *answer = NULL;
    if (!hdr)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    rc = upstream_call(up, hdr, NULL, 0, answer, NULL, NULL, 0, request_deadline(rq), err, sizeof err);
    json_decref(hdr);
    if (rc != SG_OK) {
        json_decref(*answer);
        *answer = NULL;
        return request_fail(rq, rc, "%s", err[0] ? err : sg_strerror(rc));
    }
    return SG_OK;
}

int api_uploads_head(struct request *rq)
{
    json_t *answer = NULL;
    struct MHD_Response *resp = NULL;
    const char *metadata;
    char num[32];
    int rc = uploads_check_version(rq);

    if (rc == SG_OK)
        rc = uploads_check_id(rq);
    if (rc == SG_OK)
        rc = session_call(rq, "session_stat", &answer);
    if (rc != SG_OK)
        goto out;
    resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    uploads_add_offset(resp, answer);
    if (json_is_integer(json_object_get(answer, "length"))) {
        snprintf(num, sizeof num, "%" PRId64, (int64_t)json_integer_value(json_object_get(answer, "length")));
        MHD_add_response_header(resp, "Upload-Length", num);
    } else {
        MHD_add_response_header(resp, "Upload-Defer-Length", "1");
    }
    metadata = json_string_value(json_object_get(answer, "metadata"));
    if (metadata && *metadata)
        MHD_add_response_header(resp, "Upload-Metadata", metadata);
    uploads_add_expires(resp, answer);
    /* The offset changes with every PATCH: a cached one would make a client resume at the wrong byte. */
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    rc = respond(rq, 200, resp);
out:
    json_decref(answer);
    return rc;
}

int api_uploads_delete(struct request *rq)
{
    json_t *answer = NULL;
    int rc = uploads_check_version(rq);
    if (rc == SG_OK)
        rc = uploads_check_id(rq);
    if (rc == SG_OK)
        rc = session_call(rq, "session_abort", &answer);
    json_decref(answer);
    return rc == SG_OK ? respond_empty(rq, 204) : rc;
}
