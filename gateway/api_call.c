/* api_call.c - one framed backend round trip for a request on the worker's loop (api_call.h). */
#include "api_call.h"

#include "server.h"
#include "sockgate/error.h"

static void call_free(struct request *rq, int is_complete)
{
    (void)is_complete;
    upcall_free(rq->state); /* still running when the client left: the connection is closed, not pooled */
    rq->state = NULL;
}

static void call_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    (void)c;
    (void)res;
    request_wake(arg);
}

int api_call_frame(struct request *rq, struct upstream *up, const json_t *hdr, size_t max_body, int is_replayable,
                   int (*resume)(struct request *rq))
{
    struct upcall *call = NULL;
    char err[384] = "";
    int rc = upcall_frame(up, hdr, NULL, 0, max_body, is_replayable, request_deadline(rq), call_done, rq, &call, err,
                          sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    rq->state = call;
    rq->state_free = call_free;
    request_defer(rq, resume);
    return SG_OK;
}

const struct upcall_result *api_call_result(struct request *rq)
{
    return upcall_result(rq->state);
}

void api_call_end(struct request *rq)
{
    if (rq->state_free == call_free)
        call_free(rq, 1);
    rq->state_free = NULL;
}
