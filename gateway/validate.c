/* validate.c - the gateway's checks of request bodies and URL text, kept free of HTTP so they can be fuzzed. */
#include "validate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sockgate/error.h"

#ifdef SG_HAVE_EXEC
#include "exec/argv_split.h"
#endif

/* Writes why into err and returns rc. */
static int fail(int rc, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* Says what jansson refused in sockgate's words: no parser flags, the position a person can find. */
static int json_error(const json_error_t *jerr, char *err, size_t errlen)
{
    const char *dup = strstr(jerr->text, "duplicate object key");
    if (strstr(jerr->text, "JSON_ALLOW_NUL") || strstr(jerr->text, "\\u0000"))
        return fail(SG_ERR_INVALID, err, errlen,
                    "the body holds \\u0000 (a NUL character) at line %d, column %d: no field may hold one",
                    jerr->line, jerr->column);
    if (dup)
        return fail(SG_ERR_INVALID, err, errlen, "a field appears twice in the body (line %d, column %d)", jerr->line,
                    jerr->column);
    return fail(SG_ERR_INVALID, err, errlen, "the body is not valid JSON: %s (line %d, column %d)", jerr->text,
                jerr->line, jerr->column);
}

int validate_known_fields(const json_t *in, const char *const *known, char *err, size_t errlen)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)in, key, value)
    {
        size_t i, used;
        (void)value;
        for (i = 0; known[i] && strcmp(known[i], key) != 0; i++)
            ;
        if (known[i])
            continue;
        used = (size_t)snprintf(err, errlen, "unknown field \"%.64s\" (known: ", key);
        for (i = 0; known[i] && used < errlen; i++)
            used += (size_t)snprintf(err + used, errlen - used, "%s%s", i ? ", " : "", known[i]);
        if (used < errlen)
            snprintf(err + used, errlen - used, ")");
        return SG_ERR_INVALID;
    }
    return SG_OK;
}

/* The query parameters each route takes (router.c names); routes not listed take none. */
static const struct {
    const char *route;
    const char *names[2];
} route_queries[] = {
    {"time", {"format", NULL}},
    {"chat_events", {"after", NULL}},
    {"ws_chat", {"after", NULL}},
};

int validate_query_name(const char *route, const char *name)
{
    for (size_t i = 0; i < sizeof route_queries / sizeof route_queries[0]; i++) {
        if (strcmp(route_queries[i].route, route) != 0)
            continue;
        for (size_t k = 0; route_queries[i].names[k]; k++)
            if (strcmp(route_queries[i].names[k], name) == 0)
                return SG_OK;
    }
    return SG_ERR_INVALID;
}

void validate_query_known(const char *route, char *buf, size_t len)
{
    for (size_t i = 0; i < sizeof route_queries / sizeof route_queries[0]; i++)
        if (strcmp(route_queries[i].route, route) == 0) {
            snprintf(buf, len, "known: %s", route_queries[i].names[0]);
            return;
        }
    snprintf(buf, len, "this route takes none");
}

int validate_chat_reply(const json_t *in, const json_t **to, const json_t **text, char *err, size_t errlen)
{
    static const char *const known[] = {"to", "text", NULL};
    int rc = validate_known_fields(in, known, err, errlen);
    if (rc != SG_OK)
        return rc;
    *to = json_object_get(in, "to");
    *text = json_object_get(in, "text");
    if (!json_is_string(*to))
        return fail(SG_ERR_INVALID, err, errlen, "the field \"to\" must be a string, HOST:PORT of a peer that wrote");
    if (!json_is_string(*text))
        return fail(SG_ERR_INVALID, err, errlen, "the field \"text\" must be a string");
    return SG_OK;
}

int validate_json_object(const char *body, size_t len, json_t **out, char *err, size_t errlen)
{
    json_error_t jerr;
    *out = NULL;
    if (len == 0)
        return fail(SG_ERR_INVALID, err, errlen, "the request needs a JSON object as its body");
    *out = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*out)
        return json_error(&jerr, err, errlen);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return fail(SG_ERR_INVALID, err, errlen, "the body must be a JSON object");
    }
    return SG_OK;
}

int validate_echo(const json_t *in, const char **msg, size_t *len, char *err, size_t errlen)
{
    static const char *const known[] = {"message", NULL};
    const json_t *m = json_object_get(in, "message");
    int rc = validate_known_fields(in, known, err, errlen);
    if (rc != SG_OK)
        return rc;
    if (!json_is_string(m))
        return fail(SG_ERR_INVALID, err, errlen, "the field \"message\" must be a string");
    *len = json_string_length(m);
    if (*len > ECHO_MAX_MESSAGE)
        return fail(SG_ERR_TOO_LARGE, err, errlen, "the field \"message\" may have at most %uK bytes",
                    ECHO_MAX_MESSAGE / 1024);
    *msg = json_string_value(m);
    return SG_OK;
}

/* Builds argv from "argv" (an array of strings) or "command" (a line split with shell quoting, no shell). */
static int make_argv(const json_t *in, json_t **argv, char *err, size_t errlen)
{
    const json_t *arr = json_object_get(in, "argv"), *cmd = json_object_get(in, "command");
    size_t i;
    *argv = NULL;
    if ((arr != NULL) == (cmd != NULL))
        return fail(SG_ERR_INVALID, err, errlen,
                    "give exactly one of the fields \"argv\" (an array of strings) and \"command\" (a command line)");
    if (arr) {
        if (!json_is_array(arr) || json_array_size(arr) == 0)
            return fail(SG_ERR_INVALID, err, errlen, "the field \"argv\" must be a non-empty array of strings");
        for (i = 0; i < json_array_size(arr); i++)
            if (!json_is_string(json_array_get(arr, i)))
                return fail(SG_ERR_INVALID, err, errlen, "the field \"argv\" must hold strings only (item %zu is not one)", i);
        *argv = json_deep_copy(arr);
        return *argv ? SG_OK : fail(SG_ERR_NOMEM, err, errlen, "out of memory");
    }
    if (!json_is_string(cmd))
        return fail(SG_ERR_INVALID, err, errlen, "the field \"command\" must be a string");
#ifdef SG_HAVE_EXEC
    {
        char **words = NULL, why[256] = "";
        size_t n = 0;
        /* The exec service's own splitter: the same rules as a raw command line sent to it directly. */
        int rc = exec_argv_split(json_string_value(cmd), json_string_length(cmd), &words, &n, why, sizeof why);
        if (rc != SG_OK)
            return fail(rc, err, errlen, "the field \"command\" cannot be split: %s", why);
        if (n == 0) {
            free(words);
            return fail(SG_ERR_INVALID, err, errlen, "the field \"command\" must name a command (it is empty)");
        }
        *argv = json_array();
        for (i = 0; *argv && i < n; i++)
            if (json_array_append_new(*argv, json_string(words[i])) != 0) {
                json_decref(*argv);
                *argv = NULL;
            }
        free(words);
        return *argv ? SG_OK : fail(SG_ERR_INVALID, err, errlen, "the field \"command\" splits into words that are not UTF-8");
    }
#else
    return fail(SG_ERR_INVALID, err, errlen, "this gateway was built without the exec service: send the field \"argv\"");
#endif
}

int validate_exec(const json_t *in, struct exec_request *req, char *err, size_t errlen)
{
    static const char *const known[] = {"argv", "command", "timeout_ms", "stdin", NULL};
    const json_t *v;
    int rc;
    req->argv = NULL;
    req->timeout_ms = 0;
    req->stdin_text = "";
    req->stdin_len = 0;
    rc = validate_known_fields(in, known, err, errlen);
    if (rc == SG_OK)
        rc = make_argv(in, &req->argv, err, errlen);
    if (rc != SG_OK)
        return rc;
    v = json_object_get(in, "timeout_ms");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > EXEC_MAX_TIMEOUT_MS))
        rc = fail(SG_ERR_INVALID, err, errlen, "the field \"timeout_ms\" must be an integer from 1 to %d (1h)",
                  EXEC_MAX_TIMEOUT_MS);
    else if (v)
        req->timeout_ms = json_integer_value(v);
    v = json_object_get(in, "stdin");
    if (rc == SG_OK && v && !json_is_string(v))
        rc = fail(SG_ERR_INVALID, err, errlen, "the field \"stdin\" must be a string");
    else if (rc == SG_OK && v) {
        req->stdin_text = json_string_value(v);
        req->stdin_len = json_string_length(v);
    }
    if (rc != SG_OK) {
        json_decref(req->argv);
        req->argv = NULL;
    }
    return rc;
}

const char *validate_name_not_utf8(const char *name)
{
    return strstr(name, "\xc0\x80") ? "the file name holds a NUL byte (%00)" : "the file name is not valid UTF-8";
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t validate_unescape(char *s, int *has_bad_escape)
{
    char *r = s, *w = s;
    int hi, lo;
    while (*r) {
        if (r[0] == '%' && (hex_value(r[1]) < 0 || hex_value(r[2]) < 0) && has_bad_escape)
            *has_bad_escape = 1;
        if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 && (lo = hex_value(r[2])) >= 0) {
            unsigned char b = (unsigned char)(hi << 4 | lo);
            if (b == 0) {
                *w++ = (char)0xc0;
                *w++ = (char)0x80;
            } else {
                *w++ = (char)b;
            }
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}
