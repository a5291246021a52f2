/* api_call.h - one framed backend round trip for a request on the worker's loop: start it, defer, resume with its result. */
#ifndef SOCKGATE_GATEWAY_API_CALL_H
#define SOCKGATE_GATEWAY_API_CALL_H

#include <jansson.h>
#include <stddef.h>

#include "upcall.h"

struct request;

/*
 * Sends hdr (no body) to up on the loop and defers rq: resume(rq) runs once
 * the answer (at most max_body body bytes), an error or the request's
 * deadline is there, and reads it with api_call_result. The call is rq's
 * state until resume ends it with api_call_end or the request ends (a client
 * that left cancels it: the backend sees the hang-up). is_replayable as in
 * upcall_frame: only for requests that change nothing. Returns SG_OK, or the
 * error already recorded in rq.
 */
int api_call_frame(struct request *rq, struct upstream *up, const json_t *hdr, size_t max_body, int is_replayable,
                   int (*resume)(struct request *rq));

/* Returns the result of rq's call (borrowed, valid until api_call_end or the request's end). */
const struct upcall_result *api_call_result(struct request *rq);

/* Ends rq's call (its connection goes back to the pool when the answer ended cleanly) so rq may start another. */
void api_call_end(struct request *rq);

#endif
