/*
 * fuzz_gateway_request.c - the gateway's request checks (gateway/validate.c) on arbitrary bytes.
 * The first byte picks what the rest is: 0 an echo body, 1 an exec body, 2 the {name} segment
 * of /api/v1/files/{name} as it comes off the wire, 3 the time route's ?format= value.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "exec/argv_split.h"
#include "file/name.h"
#include "sockgate/error.h"
#include "sockgate/text.h"
#include "validate.h"

/* The router's {name} segment: non-empty, no '/', shorter than its 256-byte buffer. */
#define NAME_PARAM_MAX 255
#define TIME_FORMAT_MAX 256

static void check_string(const json_t *s)
{
    const char *v = json_string_value(s);
    /* jansson refuses \u0000 unless told otherwise, so no string may hide a NUL from C code. */
    if (!v || strlen(v) != json_string_length(s) || !sg_utf8_valid(v, json_string_length(s)))
        abort();
}

static void fuzz_echo(const char *data, size_t size)
{
    char err[300] = "";
    json_t *in = NULL;
    const char *msg = NULL;
    size_t len = 0;
    if (validate_json_object(data, size, &in, err, sizeof err) != SG_OK) {
        if (in || !err[0])
            abort();
        return;
    }
    if (validate_echo(in, &msg, &len, err, sizeof err) == SG_OK) {
        if (!msg || len > ECHO_MAX_MESSAGE)
            abort();
        check_string(json_object_get(in, "message"));
    } else if (!err[0]) {
        abort();
    }
    json_decref(in);
}

/* When the request gave "command", argv must be exactly what the exec service's splitter makes of it. */
static void check_command(const json_t *in, const json_t *argv)
{
    const json_t *cmd = json_object_get(in, "command");
    char **words = NULL, why[256];
    size_t n = 0;
    if (!cmd)
        return;
    if (exec_argv_split(json_string_value(cmd), json_string_length(cmd), &words, &n, why, sizeof why) != SG_OK ||
        n != json_array_size(argv))
        abort();
    for (size_t i = 0; i < n; i++)
        if (strcmp(words[i], json_string_value(json_array_get(argv, i))) != 0)
            abort();
    free(words);
}

static void fuzz_exec(const char *data, size_t size)
{
    char err[300] = "";
    json_t *in = NULL;
    struct exec_request req;
    if (validate_json_object(data, size, &in, err, sizeof err) != SG_OK)
        return;
    if (validate_exec(in, &req, err, sizeof err) == SG_OK) {
        if (!json_is_array(req.argv) || json_array_size(req.argv) == 0 || req.timeout_ms < 0 ||
            req.timeout_ms > EXEC_MAX_TIMEOUT_MS || !req.stdin_text || strlen(req.stdin_text) != req.stdin_len)
            abort();
        for (size_t i = 0; i < json_array_size(req.argv); i++)
            check_string(json_array_get(req.argv, i));
        check_command(in, req.argv);
        json_decref(req.argv);
    } else if (req.argv || !err[0]) {
        abort();
    }
    json_decref(in);
}

/* Returns 1 when s holds a percent-encoded NUL ("%00" in any case). */
static int has_encoded_nul(const char *s)
{
    for (; (s = strchr(s, '%')) != NULL; s++)
        if (s[1] == '0' && s[2] == '0')
            return 1;
    return 0;
}

static void fuzz_name(const char *data, size_t size)
{
    char *buf = malloc(size + 1), why[256];
    size_t len;
    int had_nul;
    if (!buf)
        return;
    memcpy(buf, data, size);
    buf[size] = '\0'; /* the URL is a C string by the time libmicrohttpd hands it over */
    had_nul = has_encoded_nul(buf);
    len = validate_unescape(buf, NULL);
    if (len != strlen(buf) || len > size)
        abort();
    /* What the router and the file service would make of it. */
    if (len > 0 && len <= NAME_PARAM_MAX && !strchr(buf, '/') && sg_utf8_valid(buf, len) &&
        file_name_check(buf, len, why, sizeof why) == SG_OK) {
        if (had_nul || buf[0] == '.' || strchr(buf, '\\'))
            abort();
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
                abort();
    }
    free(buf);
}

static void fuzz_time_format(const char *data, size_t size)
{
    char *buf = malloc(size + 1);
    size_t len;
    int had_nul;
    if (!buf)
        return;
    memcpy(buf, data, size);
    buf[size] = '\0';
    had_nul = has_encoded_nul(buf);
    len = validate_unescape(buf, NULL);
    /* A format the time route accepts (short, UTF-8) never had a NUL that would cut it short. */
    if (len != strlen(buf) || (had_nul && len <= TIME_FORMAT_MAX && sg_utf8_valid(buf, len)))
        abort();
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] & 3) {
    case 0:
        fuzz_echo((const char *)data + 1, size - 1);
        break;
    case 1:
        fuzz_exec((const char *)data + 1, size - 1);
        break;
    case 2:
        fuzz_name((const char *)data + 1, size - 1);
        break;
    default:
        fuzz_time_format((const char *)data + 1, size - 1);
        break;
    }
    return 0;
}
