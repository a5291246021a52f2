/* api_echo.c - POST /api/v1/echo: a message through the echo backend's raw TCP protocol. */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "server.h"
#include "sockgate/error.h"
#include "validate.h"

/*
 * The echo protocol holds at most 16 KiB of replies per connection while the
 * client is not reading (docs/protocol.md), so longer messages go in pieces.
 */
#define ECHO_PIECE 16384u

int api_echo(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_ECHO];
    json_t *in = NULL, *out;
    const char *msg = NULL;
    char *reply = NULL, err[384];
    size_t len = 0;
    int rc = request_json(rq, &in);

    if (rc != SG_OK)
        goto out;
    rc = validate_echo(in, &msg, &len, err, sizeof err);
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    reply = malloc(len + 1);
    if (!reply) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* The echo protocol is the tutorial's raw bytes: no frame, so no room for the request id. */
    rc = upstream_exchange_raw(up, msg, reply, len, ECHO_PIECE, request_deadline(rq), err, sizeof err);
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    reply[len] = '\0';
    out = json_pack("{s:s%}", "reply", reply, len);
    if (!out) {
        rc = request_fail(rq, upstream_failed(up, SG_ERR_PROTO), "the echo backend's reply is not UTF-8");
        goto out;
    }
    rc = respond_json(rq, 200, out);
out:
    json_decref(in);
    free(reply);
    return rc;
}
