/* validate.h - the gateway's checks of what a client sends, as pure functions (the fuzz targets call them). */
#ifndef SOCKGATE_GATEWAY_VALIDATE_H
#define SOCKGATE_GATEWAY_VALIDATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The longest echo message taken; the reply has the same length. */
#define ECHO_MAX_MESSAGE (64u * 1024u)
/* The longest timeout_ms an exec request may ask for. */
#define EXEC_MAX_TIMEOUT_MS 3600000

/* What POST /api/v1/exec asks for, once checked. */
struct exec_request {
    json_t *argv;           /* a new reference: a non-empty array of strings */
    int64_t timeout_ms;     /* 0 when the request gave none (the gateway's default applies) */
    const char *stdin_text; /* borrowed from the request object; "" when none */
    size_t stdin_len;
};

/*
 * Parses body[0..len) as one JSON object, refusing duplicate keys (parsers
 * disagree about which wins). Returns SG_OK with a new reference in *out, or
 * SG_ERR_INVALID with why in err.
 */
int validate_json_object(const char *body, size_t len, json_t **out, char *err, size_t errlen);

/*
 * Checks an echo request, {"message": a string of at most ECHO_MAX_MESSAGE
 * bytes}. Returns SG_OK with *msg borrowed from in, SG_ERR_INVALID or
 * SG_ERR_TOO_LARGE with why in err.
 */
int validate_echo(const json_t *in, const char **msg, size_t *len, char *err, size_t errlen);

/*
 * Checks an exec request: exactly one of "argv" (a non-empty array of
 * strings) and "command" (a line split by the exec service's own quoting
 * rules, no shell), optional "timeout_ms" (1..EXEC_MAX_TIMEOUT_MS) and
 * "stdin" (a string). Returns SG_OK with req filled (req->argv is new), or
 * an sg_err value with why in err.
 */
int validate_exec(const json_t *in, struct exec_request *req, char *err, size_t errlen);

/*
 * Checks a chat reply, {"to": "HOST:PORT", "text": a string}; SG_OK with both
 * borrowed from in, or SG_ERR_INVALID with why in err.
 */
int validate_chat_reply(const json_t *in, const json_t **to, const json_t **text, char *err, size_t errlen);

/*
 * SG_OK when in has no field outside the NULL-terminated list known, else
 * SG_ERR_INVALID with "unknown field \"NAME\" (known: ...)" in err: a typo
 * like "timout_ms" must not be ignored silently.
 */
int validate_known_fields(const json_t *in, const char *const *known, char *err, size_t errlen);

/* SG_OK when the route named route (router.c) takes the query parameter name, else SG_ERR_INVALID. */
int validate_query_name(const char *route, const char *name);

/* Writes "known: a, b" (or "this route takes none") for the query parameters of route into buf. */
void validate_query_known(const char *route, char *buf, size_t len);

/* Why a file name that is not valid UTF-8 is refused: a %00 in it (C0 80 here) is named as the NUL it is. */
const char *validate_name_not_utf8(const char *name);

/*
 * Percent-decodes a URL path or query value in place and returns its new
 * length. A '%' not followed by two hex digits stays as it is (as
 * libmicrohttpd's own decoder does); %00 becomes C0 80, an overlong form
 * every UTF-8 check refuses, so a decoded NUL can never cut a C string (a
 * file name) short. *has_bad_escape (when not NULL) is set to 1 when such a
 * malformed escape was seen, so the caller can refuse the request.
 */
size_t validate_unescape(char *s, int *has_bad_escape);

/* The longest Upload-Metadata taken: what the file backend keeps of it (docs/protocol.md). */
#define TUS_MAX_METADATA 16384

/*
 * Decodes len bytes of standard base64 (padding optional, as tus clients
 * differ) into out (cap bytes). Returns the decoded length, or -1 when the
 * text is not base64 or does not fit.
 */
long validate_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/*
 * Reads a tus Upload-Checksum value, "sha1|sha256|md5 <base64 digest>", into
 * alg and the digest in lower-case hex. SG_OK, or SG_ERR_INVALID with why in err.
 */
int validate_tus_checksum(const char *header, char alg[8], char hex[65], char *err, size_t errlen);

/*
 * Checks a tus Upload-Metadata value (comma-separated "key" or "key base64",
 * keys unique, at most TUS_MAX_METADATA bytes) and decodes its required
 * filename into name (namelen bytes, NUL-terminated, no NUL inside). The
 * name is not checked against the file service's rules here. SG_OK, or
 * SG_ERR_INVALID / SG_ERR_INVALID_NAME with why in err.
 */
int validate_tus_metadata(const char *metadata, char *name, size_t namelen, char *err, size_t errlen);

#endif
