/* session.h - the bearer token as an HttpOnly cookie, for the request a browser cannot add a header to. */
#ifndef SOCKGATE_GATEWAY_SESSION_H
#define SOCKGATE_GATEWAY_SESSION_H

#include "gateway.h"

/* The cookie's name; web/ and the tests use it too. */
#define SESSION_COOKIE "sockgate_token"

struct request;

/* Derives the cookie value from gw's token (nothing to do without one). Call once before serving. */
void session_init(const struct gateway *gw);

/* Returns 1 when rq carries the session cookie of the configured token, compared in constant time. */
int session_is_valid(struct request *rq);

#endif
