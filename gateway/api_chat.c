/* api_chat.c - the chat backend over HTTP: its messages as Server-Sent Events, replies, and the peer list. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_call.h"
#include "chat_stream.h"
#include "server.h"
#include "validate.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/opts.h"

/* The peer list rides in a frame body: 100000 peers (the service's most) of about 100 bytes each fit. */
#define PEERS_MAX_BODY (16u << 20)
/* The largest sequence number a JSON reader surely keeps exact, as the chat service takes it. */
#define MAX_SEQ (UINT64_C(1) << 53)

/*
 * Where a stream starts: Last-Event-ID (what a reconnecting EventSource
 * sends: the last seq it got), else ?after=, else 0, which replays the whole
 * history so a freshly opened page shows the conversation so far.
 */
static int resume_point(struct request *rq, uint64_t *after)
{
    const char *last_id = request_header(rq, "Last-Event-ID");
    const char *query = request_query(rq, "after");
    const char *text = last_id && *last_id ? last_id : query;
    *after = 0;
    if (!text)
        return SG_OK;
    if (sg_parse_u64(text, 0, MAX_SEQ, 0, after) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID, "%s must be a message sequence number (0 to 2^53), not '%.40s'",
                            text == last_id ? "Last-Event-ID" : "after", text);
    return SG_OK;
}

/* Adds the headers an event stream needs: no caching, and no buffering by proxies that honour the hint. */
static void add_stream_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
}

int api_chat_subscribe(struct request *rq, uint64_t after, upcall_stream_frame_fn on_frame, upcall_stream_end_fn on_end,
                       void *arg, struct upcall_stream **out, char *err, size_t errlen)
{
    json_t *req = json_pack("{s:s,s:I,s:s}", "op", "subscribe", "after", (json_int_t)after, "id", rq->id);
    int rc;
    *out = NULL;
    if (!req) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    /* No message has a body; the request's deadline holds until the acknowledgement, then none. */
    rc = upcall_stream_open(&rq->gw->backends[BACKEND_CHAT], req, NULL, 0, 0, request_deadline(rq), on_frame, on_end,
                            arg, out, err, errlen);
    if (rc == SG_OK)
        upcall_stream_expect_pushed(*out, "subscribe");
    json_decref(req);
    return rc;
}

int api_chat_events(struct request *rq)
{
    struct MHD_Response *resp;
    uint64_t after = 0;
    int rc = resume_point(rq, &after);

    if (rc != SG_OK)
        return rc;
    if (strcmp(rq->method, "HEAD") == 0) {
        /* The headers alone: no subscription for a body nobody will read. */
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return request_fail(rq, SG_ERR_NOMEM, "out of memory");
        add_stream_headers(resp);
        return respond(rq, 200, resp);
    }
    return chat_stream_start(rq, after);
}

/* The chat service answered the reply: its {"sent", "to", "bytes", "seq"}, or its refusal. */
static int reply_answer(struct request *rq)
{
    const struct upcall_result *res = api_call_result(rq);
    json_t *resp;
    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    resp = json_deep_copy(res->header);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    json_object_del(resp, "id");
    return respond_json(rq, 200, resp);
}

int api_chat_reply(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_CHAT];
    json_t *in = NULL, *req = NULL, *to, *text;
    char err[384] = "";
    int rc = request_json(rq, &in);

    if (rc != SG_OK)
        goto out;
    rc = validate_chat_reply(in, (const json_t **)&to, (const json_t **)&text, err, sizeof err);
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    /* Length, emptiness and the peer table are the chat service's to judge: one set of rules. */
    req = json_pack("{s:s,s:O,s:O,s:s}", "op", "reply", "to", to, "text", text, "id", rq->id);
    if (!req) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Never sent twice: the first copy may have gone out before its connection died. */
    rc = api_call_frame(rq, up, req, 0, 0, reply_answer);
out:
    json_decref(in);
    json_decref(req);
    return rc;
}

/* The chat service's peer table is in: the list from the frame body, with its stats. */
static int peers_answer(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_CHAT];
    const struct upcall_result *res = api_call_result(rq);
    json_t *list, *stats;
    int rc;
    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    list = json_loadb(res->body ? res->body : "", res->body_len, 0, NULL);
    if (!json_is_array(list)) {
        json_decref(list);
        return request_fail(rq, upstream_failed(up, SG_ERR_PROTO), "chat backend at %s: the peer list is not a JSON array",
                            up->name);
    }
    stats = json_object_get(res->header, "stats");
    rc = respond_json(rq, 200,
                      json_pack("{s:O,s:I,s:O?}", "peers", list, "count", (json_int_t)json_array_size(list),
                                "stats", stats));
    json_decref(list);
    return rc;
}

int api_chat_peers(struct request *rq)
{
    json_t *req = json_pack("{s:s,s:s}", "op", "peers", "id", rq->id);
    int rc;
    if (!req)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    rc = api_call_frame(rq, &rq->gw->backends[BACKEND_CHAT], req, PEERS_MAX_BODY, 1, peers_answer);
    json_decref(req);
    return rc;
}
