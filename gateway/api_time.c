/* api_time.c - GET /api/v1/time?format=...: the UDP time backend, with retries inside a deadline. */
#include <string.h>

#include "api.h"
#include "server.h"
#include "upcall.h"
#include "sockgate/error.h"
#include "sockgate/text.h"

/* The protocol's limits and default (docs/protocol.md): what an empty datagram means. */
#define TIME_FORMAT_MAX 256
#define TIME_REPLY_MAX 1100
#define TIME_FORMAT_DEFAULT "%Y-%m-%d %X"
#define ERROR_PREFIX "ERROR: "
/* A datagram or its reply may be lost: ask again this often until the deadline. */
#define TIME_RETRY_MS 200

static void time_free(struct request *rq, int is_complete)
{
    (void)is_complete;
    upcall_free(rq->state);
    rq->state = NULL;
}

static void time_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    (void)c;
    (void)res;
    request_wake(arg);
}

/* The reply is in: the time as JSON, or the backend's refusal of the format. */
static int time_answer(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_TIME];
    const struct upcall_result *res = upcall_result(rq->state);
    const char *format = request_query(rq, "format");
    const char *reply = res->body;
    size_t got = res->body_len;
    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    if (!format)
        format = "";
    if (got != strlen(reply) || !sg_utf8_valid(reply, got))
        return request_fail(rq, upstream_failed(up, SG_ERR_PROTO), "the time backend's reply is not UTF-8 text");
    if (strncmp(reply, ERROR_PREFIX, strlen(ERROR_PREFIX)) == 0)
        return request_fail(rq, SG_ERR_INVALID, "the time backend refused the format: %s",
                            reply + strlen(ERROR_PREFIX));
    return respond_json(rq, 200,
                        json_pack("{s:s,s:s}", "time", reply, "format", *format ? format : TIME_FORMAT_DEFAULT));
}

int api_time(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_TIME];
    const char *format = request_query(rq, "format");
    struct upcall *call = NULL;
    char err[384];
    size_t len;
    int rc;

    if (!format)
        format = "";
    len = strlen(format);
    if (len > TIME_FORMAT_MAX)
        return request_fail(rq, SG_ERR_INVALID, "the format may have at most %d bytes", TIME_FORMAT_MAX);
    if (!sg_utf8_valid(format, len))
        return request_fail(rq, SG_ERR_INVALID, "the format is not valid UTF-8");
    rc = upcall_datagram(up, format, len, TIME_REPLY_MAX, TIME_RETRY_MS, request_deadline(rq), time_done, rq, &call,
                         err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    rq->state = call;
    rq->state_free = time_free;
    request_defer(rq, time_answer);
    return SG_OK;
}
