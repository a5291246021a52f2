/* reply_check.c - never trust a backend's reply: each answer is matched to its request and its fields checked. */
#include "reply_check.h"

#include <stdio.h>
#include <string.h>

#include "sockgate/error.h"

/* The fields each op's answer must carry, by type: s string, i integer, b boolean, h sha256 hex, t true. */
struct promise {
    const char *op;
    const char *fields; /* "name:s size:i ..." */
};

static const struct promise promises[] = {
    {"ping", "service:s"},
    {"exec", "exit_code:i stdout_size:i stderr_size:i"},
    {"upload", "name:s size:i sha256:h"},
    {"download", "name:s size:i offset:i sha256:h mtime_ms:i"},
    {"stat", "name:s size:i sha256:h mtime_ms:i"},
    {"list", "count:i"},
    {"delete", "name:s deleted:t"},
    {"subscribe", "subscribed:t first_seq:i last_seq:i"},
    {"reply", "sent:t to:s"},
    {"peers", "count:i"},
    /* Upload sessions (tus): a finished one also promises the stored file (checked below). */
    {"session_create", "session:s offset:i finished:b"},
    {"session_append", "session:s offset:i finished:b"},
    {"session_finish", "session:s offset:i finished:b"},
    {"session_stat", "session:s filename:s offset:i expires_ms:i created_ms:i defer_length:b"},
    {"session_abort", "session:s aborted:t"},
};

static int fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    snprintf(err, errlen, fmt, a, b);
    return SG_ERR_PROTO;
}

static int is_sha256_hex(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) != 64)
        return 0;
    return strspn(s, "0123456789abcdef") == 64;
}

/* Returns 1 when v has the type letter t asks for. */
static int has_type(const json_t *v, char t)
{
    switch (t) {
    case 's':
        return json_is_string(v);
    case 'i':
        return json_is_integer(v) && json_integer_value(v) >= 0;
    case 'b':
        return json_is_boolean(v);
    case 't':
        return json_is_true(v);
    case 'h':
        return is_sha256_hex(v);
    default:
        return 0;
    }
}

static int check_fields(const json_t *resp, const char *fields, const char *op, char *err, size_t errlen)
{
    char name[32];
    const char *p = fields;
    while (*p) {
        size_t n = strcspn(p, ":");
        char t = p[n + 1];
        if (n >= sizeof name)
            return SG_ERR_PROTO;
        memcpy(name, p, n);
        name[n] = '\0';
        if (!has_type(json_object_get(resp, name), t))
            return fail(err, errlen, "answered \"%s\" without a valid \"%s\"", op, name);
        p += n + 2;
        while (*p == ' ')
            p++;
    }
    return SG_OK;
}

int reply_check(const char *service, const char *op, const char *id, const json_t *resp, uint64_t body_size,
                char *err, size_t errlen)
{
    const json_t *error = json_object_get(resp, "error");
    const char *got_id = json_string_value(json_object_get(resp, "id"));

    if (id && (!got_id || strcmp(got_id, id) != 0))
        return fail(err, errlen, "answered with %s%s, not this request's id (is it the right service?)",
                    got_id ? "the id of another request: " : "no id", got_id ? "" : "");
    if (error) {
        if (!json_is_string(json_object_get(error, "code")))
            return fail(err, errlen, "sent an error without a code%s%s", "", "");
        return SG_OK;
    }
    if (!op)
        return SG_OK;
    for (size_t i = 0; i < sizeof promises / sizeof promises[0]; i++) {
        if (strcmp(promises[i].op, op) != 0)
            continue;
        if (check_fields(resp, promises[i].fields, op, err, errlen) != SG_OK)
            return SG_ERR_PROTO;
        break;
    }
    if (strcmp(op, "ping") == 0 && service &&
        strcmp(json_string_value(json_object_get(resp, "service")), service) != 0)
        return fail(err, errlen, "is the %s service, not %s", json_string_value(json_object_get(resp, "service")),
                    service);
    if (strncmp(op, "session_", 8) == 0 && json_is_true(json_object_get(resp, "finished")) &&
        check_fields(resp, "name:s size:i sha256:h", op, err, errlen) != SG_OK)
        return SG_ERR_PROTO;
    if (strcmp(op, "exec") == 0 &&
        (uint64_t)json_integer_value(json_object_get(resp, "stdout_size")) +
                (uint64_t)json_integer_value(json_object_get(resp, "stderr_size")) !=
            body_size)
        return fail(err, errlen, "answered \"exec\" with stdout_size + stderr_size unequal to its body%s%s", "",
                    "");
    return SG_OK;
}
