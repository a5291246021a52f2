/* session.c - POST and DELETE /api/v1/session: the token as an HttpOnly cookie for the chat's EventSource. */
#include "session.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "api.h"
#include "server.h"
#include "sockgate/error.h"
#include "sockgate/text.h"

/* What the cookie value is derived from, so it is never the token itself. */
#define SESSION_LABEL "sockgate session cookie v1"
/*
 * Path=/api/v1: the page's own files never carry it. HttpOnly: scripts never
 * see it. SameSite=Strict: no other site's page makes the browser send it.
 * No Secure flag: the gateway speaks plain HTTP (loopback, or behind a TLS
 * proxy that may add it).
 */
#define COOKIE_ATTRS "; Path=/api/v1; HttpOnly; SameSite=Strict"

static char cookie_value[2 * SHA256_DIGEST_LENGTH + 1];
static unsigned char cookie_sha256[SHA256_DIGEST_LENGTH];
static int has_cookie;

void session_init(const struct gateway *gw)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    has_cookie = 0;
    if (!gw->has_token || !gw->cfg.token)
        return;
    /* An HMAC keyed by the token: the same token gives the same cookie across restarts, and no cookie reveals the token. */
    if (!HMAC(EVP_sha256(), gw->cfg.token, (int)strlen(gw->cfg.token), (const unsigned char *)SESSION_LABEL,
              strlen(SESSION_LABEL), mac, &mac_len) ||
        mac_len != SHA256_DIGEST_LENGTH)
        return; /* no cookie then: only the header works, which is the safe side */
    sg_hex_encode(mac, mac_len, cookie_value);
    SHA256((const unsigned char *)cookie_value, strlen(cookie_value), cookie_sha256);
    has_cookie = 1;
}

int session_is_valid(struct request *rq)
{
    const char *value = MHD_lookup_connection_value(rq->conn, MHD_COOKIE_KIND, SESSION_COOKIE);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (!has_cookie || !value)
        return 0;
    /* Digests again, as for the header: the time depends on neither the length nor the content. */
    SHA256((const unsigned char *)value, strlen(value), digest);
    return CRYPTO_memcmp(digest, cookie_sha256, sizeof digest) == 0;
}

/* Answers 204 with a Set-Cookie header of value and extra attributes. */
static int respond_cookie(struct request *rq, const char *value, const char *extra)
{
    char header[256];
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    /* Over HTTPS the cookie is Secure: a browser never sends it over plain HTTP. */
    snprintf(header, sizeof header, "%s=%s%s%s%s", SESSION_COOKIE, value, COOKIE_ATTRS, tls_is_on() ? "; Secure" : "",
             extra);
    MHD_add_response_header(resp, "Set-Cookie", header);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return respond(rq, 204, resp);
}

int api_session_create(struct request *rq)
{
    /* The route needs the bearer token, so reaching here proves it; without a token there is nothing to prove. */
    if (!has_cookie)
        return respond_empty(rq, 204);
    return respond_cookie(rq, cookie_value, "");
}

int api_session_delete(struct request *rq)
{
    return respond_cookie(rq, "", "; Max-Age=0");
}
