/* ops.c - the chat's framed ops: subscribe, reply, peers and stats (docs/internals/chat.md). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_int.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

#define MAX_AFTER (INT64_C(1) << 53) /* the largest integer a JSON reader surely keeps exact */

/* Adds "id" to a response header when the request had a string id; header is returned as it is. */
static json_t *with_id(json_t *header, const char *id)
{
    if (header && id)
        json_object_set_new(header, "id", json_string(id));
    return header;
}

/* Queues header (stolen) and an optional body on c; returns SG_OK or SG_ERR_NOMEM. */
static int respond(struct conn *c, json_t *header, const void *body, size_t body_len)
{
    int rc = header ? conn_queue_frame(c, header, body, body_len) : SG_ERR_NOMEM;
    json_decref(header);
    return rc;
}

/* Queues an error response for the current request. */
static int refuse(struct conn *c, int err, const char *id, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int refuse(struct conn *c, int err, const char *id, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return respond(c, sg_frame_error_header(err, msg, id), NULL, 0);
}

json_t *ops_stats_json(const struct chat_server *srv)
{
    const struct chat_stats *s = &srv->stats;
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "received",
                     (json_int_t)s->received, "dropped_too_large", (json_int_t)s->dropped_too_large,
                     "dropped_invalid_utf8", (json_int_t)s->dropped_invalid_utf8, "dropped_empty",
                     (json_int_t)s->dropped_empty, "dropped_source", (json_int_t)s->dropped_source, "replies",
                     (json_int_t)s->replies, "history", (json_int_t)srv->history.count, "history_max",
                     (json_int_t)srv->history.cap, "first_seq", (json_int_t)history_first_seq(&srv->history),
                     "last_seq", (json_int_t)srv->history.last_seq, "peers", (json_int_t)srv->peers.count,
                     "subscribers", (json_int_t)srv->nsubs, "subscribers_cut", (json_int_t)s->subscribers_cut);
}

static int op_subscribe(struct chat_server *srv, struct conn *c, const json_t *h, const char *id)
{
    const struct chat_history *hist = &srv->history;
    uint64_t first = history_first_seq(hist), last = hist->last_seq, next, missed = 0, replay = 0;
    int64_t after = 0;
    int reset = 0, rc;

    rc = sg_header_int(h, "after", 0, MAX_AFTER, &after);
    if (rc == SG_ERR_INVALID)
        return refuse(c, SG_ERR_INVALID, id, "after must be an integer from 0 to 2^53");
    if (rc == SG_ERR_NOT_FOUND) {
        next = last + 1; /* live messages only */
    } else {
        if ((uint64_t)after > last) {
            /* Numbers restart with the service, so a position beyond ours comes from an earlier run. */
            reset = 1;
            after = 0;
        }
        next = (uint64_t)after + 1;
        if (first && next < first) {
            missed = first - next;
            next = first;
        }
        replay = next <= last ? last - next + 1 : 0;
    }
    rc = respond(c,
                 with_id(json_pack("{s:b, s:I, s:I, s:I, s:I, s:b}", "subscribed", 1, "first_seq", (json_int_t)first,
                                   "last_seq", (json_int_t)last, "replay", (json_int_t)replay, "missed",
                                   (json_int_t)missed, "reset", reset),
                         id),
                 NULL, 0);
    if (rc != SG_OK)
        return rc;
    conn_make_subscriber(srv, c, next);
    return SG_OK;
}

static int op_reply(struct chat_server *srv, struct conn *c, const json_t *h, const char *id, int64_t now)
{
    const char *to = sg_header_str(h, "to");
    json_t *text = json_object_get(h, "text");
    const struct chat_peer *peer;
    const char *s;
    size_t len;
    uint64_t seq = 0;
    json_t *resp;
    int rc;

    if (!to || !json_is_string(text))
        return refuse(c, SG_ERR_INVALID, id, "reply needs \"to\" (HOST:PORT of a peer) and \"text\" strings");
    s = json_string_value(text);
    len = json_string_length(text);
    if (len == 0)
        return refuse(c, SG_ERR_INVALID, id, "text is empty");
    if (len > CHAT_MAX_TEXT)
        return refuse(c, SG_ERR_TOO_LARGE, id, "text is %zu bytes; at most %u fit a chat datagram", len,
                      CHAT_MAX_TEXT);
    if (memchr(s, 0, len))
        return refuse(c, SG_ERR_INVALID, id, "text holds a NUL character");
    /* Only an exact address from the peer table: never parsed, never resolved, never arbitrary. */
    peer = peers_find(&srv->peers, to);
    if (!peer)
        return refuse(c, SG_ERR_NOT_FOUND, id, "%.64s has not written to this chat (or was forgotten)", to);
    rc = udp_send_reply(srv, peer, s, len);
    if (rc == SG_ERR_BUSY)
        return refuse(c, SG_ERR_BUSY, id, "the UDP send buffer is full; try again");
    if (rc != SG_OK)
        return refuse(c, SG_ERR_SYS, id, "sendto %s: %s", peer->addr, strerror(errno));
    srv->stats.replies++;
    rc = chat_record(srv, 0, peer->addr, s, len, chat_unix_ms(), now, &seq);
    if (rc != SG_OK)
        chat_warn_limited(srv, "reply to %s sent but not recorded: %s", peer->addr, sg_strerror(rc));
    resp = json_pack("{s:b, s:s, s:I}", "sent", 1, "to", peer->addr, "bytes", (json_int_t)len);
    if (resp && rc == SG_OK)
        json_object_set_new(resp, "seq", json_integer((json_int_t)seq));
    return respond(c, with_id(resp, id), NULL, 0);
}

static int op_peers(struct chat_server *srv, struct conn *c, const char *id)
{
    json_t *list = peers_to_json(&srv->peers), *resp = NULL;
    char *body = NULL;
    size_t body_len = 0;
    int rc = SG_ERR_NOMEM;

    if (!list)
        goto out;
    /* The list rides in the body so that no number of peers can exceed the header limit. */
    body_len = json_dumpb(list, NULL, 0, JSON_COMPACT);
    body = malloc(body_len ? body_len : 1);
    if (!body || json_dumpb(list, body, body_len, JSON_COMPACT) != body_len)
        goto out;
    resp = json_pack("{s:I, s:I, s:o}", "count", (json_int_t)json_array_size(list), "total_size",
                     (json_int_t)body_len, "stats", ops_stats_json(srv));
    if (!resp)
        goto out;
    rc = respond(c, with_id(resp, id), body, body_len);
    resp = NULL;
out:
    json_decref(resp);
    json_decref(list);
    free(body);
    return rc;
}

int ops_dispatch(struct chat_server *srv, struct conn *c, const json_t *h, int has_body, int64_t now)
{
    const char *id = sg_header_str(h, "id");
    const char *op = sg_header_str(h, "op");

    if (has_body)
        return refuse(c, SG_ERR_INVALID, id, "chat requests carry no body");
    if (!op)
        return refuse(c, SG_ERR_INVALID, id, "missing \"op\" (subscribe, reply, peers, stats or ping)");
    if (strcmp(op, "subscribe") == 0)
        return op_subscribe(srv, c, h, id);
    if (strcmp(op, "reply") == 0)
        return op_reply(srv, c, h, id, now);
    if (strcmp(op, "peers") == 0)
        return op_peers(srv, c, id);
    if (strcmp(op, "ping") == 0) /* proof that this is the chat service (the gateway's /readyz) */
        return respond(c, with_id(json_pack("{s:s}", "service", "chat"), id), NULL, 0);
    if (strcmp(op, "stats") == 0)
        return respond(c, with_id(json_pack("{s:o}", "stats", ops_stats_json(srv)), id), NULL, 0);
    return refuse(c, SG_ERR_INVALID, id, "unknown op '%.64s' (subscribe, reply, peers, stats or ping)", op);
}
