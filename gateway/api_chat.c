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

/* The first event of a stream: the subscription's acknowledgement (replay count, missed, reset). */
static char *subscribed_event(json_t *ack)
{
    char *data, *text = NULL;
    size_t n;
    json_object_del(ack, "id");
    data = json_dumps(ack, JSON_COMPACT);
    if (!data)
        return NULL;
    n = strlen(data) + 64;
    text = malloc(n);
    if (text)
        snprintf(text, n, "event: subscribed\ndata: %s\n\n", data);
    free(data);
    return text;
}

int api_chat_subscribe(struct request *rq, struct upstream *up, const json_t *req, int64_t deadline,
                       struct upstream_conn **c, json_t **ack)
{
    char err[384] = "";
    uint64_t body_size = 0;
    int rc = upstream_begin(up, req, c, deadline, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    rc = upstream_read_header(*c, ack, &body_size, deadline, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, upstream_failed(up, rc), "chat backend at %s: %s", up->name, err);
    rc = upstream_answer_error(up, *ack, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    if (body_size != 0 || !json_is_true(json_object_get(*ack, "subscribed")))
        return request_fail(rq, upstream_failed(up, SG_ERR_PROTO),
                            "chat backend at %s: answered subscribe without acknowledging it", up->name);
    return SG_OK;
}

int api_chat_events(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_CHAT];
    struct upstream_conn *c = NULL;
    struct MHD_Response *resp = NULL;
    json_t *req = NULL, *ack = NULL;
    char err[384] = "", *first = NULL;
    int64_t deadline = request_deadline(rq);
    uint64_t after = 0;
    int rc, fd;

    rc = resume_point(rq, &after);
    if (rc != SG_OK)
        goto out;
    if (strcmp(rq->method, "HEAD") == 0) {
        /* The headers alone: no subscription for a body nobody will read. */
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!resp) {
            rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
            goto out;
        }
        add_stream_headers(resp);
        rc = respond(rq, 200, resp);
        goto out;
    }
    if (!chat_streams_have_room()) {
        rc = request_fail(rq, SG_ERR_BUSY, "%d chat event streams are open already, the most this gateway serves",
                          CHAT_STREAMS_MAX);
        goto out;
    }
    req = json_pack("{s:s,s:I,s:s}", "op", "subscribe", "after", (json_int_t)after, "id", rq->id);
    if (!req) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* The acknowledgement is read here, so a down or refusing chat service is an HTTP error, not an empty stream. */
    rc = api_chat_subscribe(rq, up, req, deadline, &c, &ack);
    if (rc != SG_OK)
        goto out;
    first = subscribed_event(ack);
    if (!first) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* The connection becomes the stream's: its socket and the bytes read past the acknowledgement. */
    fd = c->fd;
    c->fd = -1;
    rc = chat_stream_response(rq->conn, fd, c->rbuf ? c->rbuf + c->roff : NULL, c->rlen - c->roff, first,
                              &rq->bytes_out, &resp, err, sizeof err);
    c->roff = c->rlen = 0;
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    add_stream_headers(resp);
    rc = respond(rq, 200, resp);
out:
    upstream_release(c, 0); /* a subscription is never pooled */
    json_decref(req);
    json_decref(ack);
    free(first);
    return rc;
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
