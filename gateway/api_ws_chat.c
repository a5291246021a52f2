/* api_ws_chat.c - GET /api/v1/ws/chat: the chat as JSON text messages both ways, on one WebSocket. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <wslay/wslay.h>

#include "api.h"
#include "errors.h"
#include "server.h"
#include "validate.h"
#include "worker.h"
#include "ws.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"

/* A chat message header is at most about 6.3 KiB (chat_stream.c); a longer one means a broken service. */
#define MAX_HEADER (16u * 1024u)
/* Subscription bytes read and not decoded yet. */
#define IN_CAP (16u * 1024u)
/* The largest sequence number a JSON reader surely keeps exact, as the chat service takes it. */
#define MAX_SEQ (UINT64_C(1) << 53)
/* A client message is a small JSON command; a larger one is refused with 1009 by the bridge itself. */
#define MAX_COMMAND (8u * 1024u)

/* The subscription of one socket, and what its client sent that waits for an answer. */
struct chat_bridge {
    struct ws *ws;
    struct request *rq;     /* valid for the socket's whole life (ws.c keeps the request until the end) */
    struct wk_watch watch;  /* the subscription connection */
    struct worker *wk;
    int can_read, is_watched, is_ended, is_freed;
    char *first;            /* the "subscribed" event, sent when the socket opens */
    struct sg_frame_decoder dec;
    size_t in_off, in_len;
    uint8_t in[IN_CAP];
};

/* Sends {"event": name, ...fields} (fields stolen) as a text message. */
static void send_event(struct ws *ws, json_t *ev)
{
    char *text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!text) {
        ws_close(ws, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
        return;
    }
    ws_send(ws, 1, text, strlen(text));
    free(text);
}

/* Ends the socket because the subscription ended: 1011, the backend's reason in the close frame. */
static void end_subscription(struct chat_bridge *b, const char *why)
{
    if (b->is_ended)
        return;
    b->is_ended = 1;
    ws_close(b->ws, WSLAY_CODE_INTERNAL_SERVER_ERROR, why);
}

/* Decodes buffered subscription bytes into messages while the client's queue has room. */
static void decode(struct chat_bridge *b)
{
    char msg[200];
    while (!b->is_ended && b->in_off < b->in_len && ws_has_room(b->ws)) {
        const uint8_t *chunk;
        size_t used = 0, chunk_len = 0;
        enum sg_frame_event ev = sg_frame_decode(&b->dec, b->in + b->in_off, b->in_len - b->in_off, &used, &chunk,
                                                 &chunk_len);
        b->in_off += used;
        if (ev == SG_FRAME_ERROR) {
            sg_warn("websocket %s: chat subscription: %s", ws_request_id(b->ws), sg_frame_decoder_error(&b->dec));
            end_subscription(b, "the chat service broke the protocol");
        } else if (ev == SG_FRAME_HEADER) {
            const json_t *h = sg_frame_decoder_header(&b->dec);
            int64_t seq = 0;
            int err = sg_frame_header_error(h, msg, sizeof msg);
            if (err != SG_OK) {
                /* The service cuts a subscriber that fell a whole history behind ("busy: too slow"). */
                char why[120];
                snprintf(why, sizeof why, "chat service: %s: %.80s", sg_err_code(err), msg);
                end_subscription(b, why);
            } else if (sg_header_int(h, "seq", 1, INT64_MAX, &seq) == SG_OK) {
                send_event(b->ws, json_pack("{s:s,s:O}", "event", "message", "data", h));
            }
        }
    }
    if (b->in_off == b->in_len)
        b->in_off = b->in_len = 0;
}

/* Reads the subscription when every byte read before is decoded (so a slow client stops it here). */
static void read_subscription(struct chat_bridge *b)
{
    decode(b);
    while (b->can_read && !b->is_ended && b->in_len == 0 && ws_has_room(b->ws)) {
        ssize_t n = recv(b->watch.fd, b->in, IN_CAP, 0);
        if (n > 0) {
            b->in_len = (size_t)n;
            decode(b);
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            b->can_read = 0;
        } else if (!(n < 0 && errno == EINTR)) {
            end_subscription(b, n == 0 ? "the chat service closed the subscription" : "the chat subscription broke");
        }
    }
}

static void on_subscription(struct wk_watch *w, uint32_t events)
{
    struct chat_bridge *b = (struct chat_bridge *)((char *)w - offsetof(struct chat_bridge, watch));
    (void)events;
    if (b->is_freed)
        return; /* ended earlier in this round: only waits to be freed */
    b->can_read = 1;
    read_subscription(b);
    ws_flush(b->ws); /* last: it may end the socket and free b */
}

/* Sends an error event answering the command ref. */
static void send_error(struct ws *ws, const json_t *ref, int err, const char *message)
{
    json_t *body = http_error_body(err, message), *e = json_object_get(body, "error"), *ev;
    json_incref(e);
    ev = json_pack("{s:s,s:o?}", "event", "error", "error", e);
    json_decref(body);
    if (ev && ref)
        json_object_set(ev, "ref", (json_t *)ref);
    send_event(ws, ev);
}

/* Runs one command ({"op": "reply", "to", "text"} or {"op": "peers"}) the way its REST route does. */
static void run_command(struct chat_bridge *b, const json_t *cmd, const json_t *ref)
{
    struct upstream *up = &b->rq->gw->backends[BACKEND_CHAT];
    const char *op = json_string_value(json_object_get(cmd, "op"));
    json_t *req = NULL, *resp = NULL, *ev;
    const json_t *to, *text;
    char err[384] = "", *body = NULL;
    size_t body_len = 0;
    int rc;

    if (op && strcmp(op, "reply") == 0) {
        json_t *fields = json_pack("{s:O?,s:O?}", "to", json_object_get(cmd, "to"), "text",
                                   json_object_get(cmd, "text"));
        rc = fields ? validate_chat_reply(fields, &to, &text, err, sizeof err) : SG_ERR_NOMEM;
        if (rc == SG_OK)
            req = json_pack("{s:s,s:O,s:O,s:s}", "op", "reply", "to", to, "text", text, "id", ws_request_id(b->ws));
        json_decref(fields);
        if (rc != SG_OK) {
            send_error(b->ws, ref, rc, err);
            return;
        }
    } else if (op && strcmp(op, "peers") == 0) {
        req = json_pack("{s:s,s:s}", "op", "peers", "id", ws_request_id(b->ws));
    } else {
        send_error(b->ws, ref, SG_ERR_INVALID, "a command is {\"op\": \"reply\", \"to\", \"text\"} or {\"op\": \"peers\"}");
        return;
    }
    if (!req) {
        send_error(b->ws, ref, SG_ERR_NOMEM, "out of memory");
        return;
    }
    /* A short framed call on the loop's thread, as POST /api/v1/chat/reply makes it. */
    rc = upstream_call(up, req, NULL, 0, &resp, &body, &body_len, 16u << 20, request_deadline(b->rq), err,
                       sizeof err);
    if (rc != SG_OK) {
        send_error(b->ws, ref, rc, err);
    } else {
        json_t *list = body ? json_loadb(body, body_len, 0, NULL) : NULL;
        json_object_del(resp, "id");
        if (list)
            json_object_set_new(resp, "peers", list);
        ev = json_pack("{s:s,s:O}", "event", op, "data", resp);
        if (ev && ref)
            json_object_set(ev, "ref", (json_t *)ref);
        send_event(b->ws, ev);
    }
    json_decref(req);
    json_decref(resp);
    free(body);
}

static uint16_t on_message(struct ws *ws, void *arg, int is_text, const uint8_t *data, size_t len)
{
    struct chat_bridge *b = arg;
    json_error_t jerr;
    json_t *cmd;
    (void)ws;
    if (!is_text)
        return WSLAY_CODE_UNSUPPORTED_DATA; /* the chat speaks JSON text */
    if (len > MAX_COMMAND)
        return WSLAY_CODE_MESSAGE_TOO_BIG;
    cmd = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(cmd)) {
        char why[300];
        snprintf(why, sizeof why, "a command is a JSON object: %s", cmd ? "not an object" : jerr.text);
        send_error(b->ws, NULL, SG_ERR_INVALID, why);
    } else {
        run_command(b, cmd, json_object_get(cmd, "ref"));
    }
    json_decref(cmd);
    return 0;
}

static void on_room(struct ws *ws, void *arg)
{
    (void)ws;
    read_subscription(arg);
}

static void on_start(struct ws *ws, void *arg)
{
    struct chat_bridge *b = arg;
    b->ws = ws;
    b->wk = worker_self();
    b->watch.ready = on_subscription;
    b->can_read = 1;
    ws_send(ws, 1, b->first, strlen(b->first));
    if (worker_watch(b->wk, &b->watch, EPOLLIN | EPOLLRDHUP | EPOLLET) != 0) {
        end_subscription(b, "the gateway cannot watch the chat subscription");
        return;
    }
    b->is_watched = 1;
    read_subscription(b); /* the bytes read past the acknowledgement first */
}

static void on_end(struct ws *ws, void *arg)
{
    struct chat_bridge *b = arg;
    (void)ws;
    if (b->is_watched)
        worker_unwatch(b->wk, &b->watch);
    close(b->watch.fd); /* the chat service forgets the subscriber at once */
    sg_frame_decoder_free(&b->dec);
    free(b->first);
    b->first = NULL;
    b->is_freed = 1;
    if (b->wk)
        worker_free_later(b->wk, b); /* this round may still hold an event of its watch */
    else
        free(b);
}

static const struct ws_bridge chat_bridge = {on_start, on_message, on_room, on_end};

int api_ws_chat(struct request *rq)
{
    static const char *const protocols[] = {"sockgate.chat.v1", NULL};
    struct upstream *up = &rq->gw->backends[BACKEND_CHAT];
    struct upstream_conn *c = NULL;
    struct chat_bridge *b = NULL;
    json_t *req = NULL, *ack = NULL, *first = NULL;
    const char *protocol = NULL, *after_text = request_query(rq, "after");
    uint64_t after = 0;
    int64_t deadline = request_deadline(rq);
    int rc = ws_handshake_check(rq, protocols, &protocol), fl;

    if (rc != SG_OK)
        return rc;
    if (after_text && sg_parse_u64(after_text, 0, MAX_SEQ, 0, &after) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID, "after must be a message sequence number (0 to 2^53), not '%.40s'",
                            after_text);
    b = calloc(1, sizeof *b);
    req = json_pack("{s:s,s:I,s:s}", "op", "subscribe", "after", (json_int_t)after, "id", rq->id);
    if (!b || !req) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    b->rq = rq;
    b->watch.fd = -1;
    sg_frame_decoder_init(&b->dec, MAX_HEADER);
    /* Subscribed before the 101, so a down or refusing chat service is an HTTP error, not a closed socket. */
    rc = api_chat_subscribe(rq, up, req, deadline, &c, &ack);
    if (rc != SG_OK)
        goto out;
    json_object_del(ack, "id");
    first = json_pack("{s:s,s:O}", "event", "subscribed", "data", ack);
    b->first = first ? json_dumps(first, JSON_COMPACT) : NULL;
    if (!b->first || c->rlen - c->roff > IN_CAP) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* The connection becomes the socket's: its descriptor and the bytes read past the acknowledgement. */
    memcpy(b->in, c->rbuf ? c->rbuf + c->roff : b->in, c->rlen - c->roff);
    b->in_len = c->rlen - c->roff;
    c->roff = c->rlen = 0;
    b->watch.fd = c->fd;
    c->fd = -1;
    fl = fcntl(b->watch.fd, F_GETFL);
    if (fl < 0 || fcntl(b->watch.fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        rc = request_fail(rq, SG_ERR_SYS, "chat subscription: %s", strerror(errno));
        goto out;
    }
    rc = ws_upgrade(rq, protocol, &chat_bridge, b);
    b = NULL; /* the socket's from here, on_end included */
out:
    upstream_release(c, 0); /* a subscription is never pooled */
    json_decref(req);
    json_decref(ack);
    json_decref(first);
    if (b) {
        if (b->watch.fd >= 0)
            close(b->watch.fd);
        sg_frame_decoder_free(&b->dec);
        free(b->first);
        free(b);
    }
    return rc;
}
