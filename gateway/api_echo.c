/* api_echo.c - POST /api/v1/echo: a message through the echo backend's raw TCP protocol. */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "server.h"
#include "upcall.h"
#include "sockgate/error.h"
#include "validate.h"

static void echo_free(struct request *rq, int is_complete)
{
    (void)is_complete;
    upcall_free(rq->state);
    rq->state = NULL;
}

static void echo_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct request *rq = arg;
    (void)c;
    (void)res;
    request_wake(rq);
}

/* The reply is in (the upcall holds it): answer it as JSON. */
static int echo_answer(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_ECHO];
    const struct upcall_result *res = upcall_result(rq->state);
    json_t *out;
    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    out = json_pack("{s:s%}", "reply", res->body, res->body_len);
    if (!out)
        return request_fail(rq, upstream_failed(up, SG_ERR_PROTO), "the echo backend's reply is not UTF-8");
    return respond_json(rq, 200, out);
}

int api_echo(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_ECHO];
    json_t *in = NULL;
    const char *msg = NULL;
    struct upcall *call = NULL;
    char err[384];
    size_t len = 0;
    int rc = request_json(rq, &in);

    if (rc != SG_OK)
        goto out;
    rc = validate_echo(in, &msg, &len, err, sizeof err);
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    if (len == 0) { /* nothing to send, nothing comes back */
        rc = respond_json(rq, 200, json_pack("{s:s}", "reply", ""));
        goto out;
    }
    /* The echo protocol is the tutorial's raw bytes: no frame, so no room for the request id. */
    rc = upcall_raw(up, msg, len, request_deadline(rq), echo_done, rq, &call, err, sizeof err);
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    rq->state = call;
    rq->state_free = echo_free;
    request_defer(rq, echo_answer);
out:
    json_decref(in);
    return rc;
}
