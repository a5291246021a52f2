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
#include "upcall.h"
#include "upcall_stream.h"
#include "validate.h"
#include "worker.h"
#include "ws.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"

/* The peer list rides in a frame body: 100000 peers (the service's most) of about 100 bytes each fit. */
#define PEERS_MAX_BODY (16u << 20)
/* The largest sequence number a JSON reader surely keeps exact, as the chat service takes it. */
#define MAX_SEQ (UINT64_C(1) << 53)
/* A client message is a small JSON command; a larger one is refused with 1009 by the bridge itself. */
#define MAX_COMMAND (8u * 1024u)

/* A reply or peers command waiting for the chat service. */
struct chat_cmd {
    struct chat_cmd *next;
    struct chat_bridge *b;   /* NULL once the socket ended (the call waits for a reaper) */
    struct upcall *c;
    json_t *ref; /* the client's "ref", echoed in the answer (may be NULL) */
    int is_done; /* answered: freed from the loop (on_flush), not inside the call's own callback */
    char op[8];
};

/* The subscription of one socket, and the commands its client sent that wait for an answer. */
struct chat_bridge {
    struct ws *ws;           /* NULL until the socket is open */
    struct request *rq;      /* valid for the socket's whole life (ws.c keeps the request until the end) */
    struct worker *wk;
    struct upcall_stream *us; /* the subscription; NULL once closed */
    struct wk_timer flush;   /* runs ws_flush from the loop, outside the backend's callbacks */
    struct chat_cmd *cmds;
    const char *protocol;
    int is_subscribed, is_ended, is_paused;
    int end_rc;              /* before the acknowledgement: why the subscription failed (the HTTP error) */
    char end_err[384];
    char why[124];           /* after it: why it ended, for the close frame */
    char *first;             /* the "subscribed" event, sent when the socket opens */
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

/* What a backend callback queued goes out from the loop's next round (ws_flush may end the socket and free b). */
static void flush_soon(struct chat_bridge *b)
{
    if (b->ws)
        worker_timer_arm(b->wk, &b->flush, sg_now_ms());
}

static void cmd_free(struct chat_cmd *cmd);

static void on_flush(struct wk_timer *t)
{
    struct chat_bridge *b = (struct chat_bridge *)((char *)t - offsetof(struct chat_bridge, flush));
    struct chat_cmd *cmd = b->cmds, *next;
    for (; cmd; cmd = next) {
        next = cmd->next;
        if (cmd->is_done)
            cmd_free(cmd);
    }
    if (!b->cmds)
        ws_hold(b->ws, 0); /* every command answered: the client's next ones are read */
    ws_flush(b->ws); /* last: it may end the socket and free b */
}

/* Ends the socket because the subscription ended: 1011, the backend's reason in the close frame. */
static void end_subscription(struct chat_bridge *b)
{
    if (b->ws)
        ws_close(b->ws, WSLAY_CODE_INTERNAL_SERVER_ERROR, b->why);
    flush_soon(b);
}

/* The subscription's frames: the acknowledgement first, then one per message. */
static int on_sub_frame(struct upcall_stream *us, const json_t *h, const uint8_t *body, size_t len, void *arg)
{
    struct chat_bridge *b = arg;
    int64_t seq = 0;
    (void)body;
    (void)len;
    if (!b->is_subscribed) {
        json_t *ack = json_copy((json_t *)h), *first;
        b->is_subscribed = 1;
        upcall_stream_set_deadline(us, 0); /* a subscription lasts as long as its socket */
        json_object_del(ack, "id");
        first = ack ? json_pack("{s:s,s:o}", "event", "subscribed", "data", ack) : NULL;
        b->first = first ? json_dumps(first, JSON_COMPACT) : NULL;
        json_decref(first);
        if (!b->first) {
            b->is_subscribed = 0;
            b->end_rc = SG_ERR_NOMEM;
            snprintf(b->end_err, sizeof b->end_err, "out of memory");
        }
        /* Messages wait in the connection until the socket is open (on_start). */
        b->is_paused = 1;
        upcall_stream_pause(us);
        request_wake(b->rq);
        return !b->first;
    }
    if (sg_header_int(h, "seq", 1, INT64_MAX, &seq) == SG_OK && b->ws) {
        send_event(b->ws, json_pack("{s:s,s:O}", "event", "message", "data", h));
        if (!ws_has_room(b->ws)) {
            /* A slow client: the chat service's buffer takes the rest, then cuts the subscription as too slow. */
            b->is_paused = 1;
            upcall_stream_pause(us);
        }
        flush_soon(b);
    }
    return 0;
}

static void on_sub_end(struct upcall_stream *us, int rc, const char *err, void *arg)
{
    struct chat_bridge *b = arg;
    (void)us;
    if (!b->is_subscribed) {
        if (!b->end_rc) {
            b->end_rc = rc != SG_OK ? rc : SG_ERR_PROTO;
            snprintf(b->end_err, sizeof b->end_err, "%s",
                     rc != SG_OK ? err : "the chat backend ended the subscription before acknowledging it");
        }
        request_wake(b->rq);
        return;
    }
    b->is_ended = 1;
    if (rc == SG_ERR_CLOSED) {
        snprintf(b->why, sizeof b->why, "the chat service closed the subscription");
    } else if (rc == SG_ERR_PROTO) {
        sg_warn("websocket %s: chat subscription: %s", b->rq->id, err);
        snprintf(b->why, sizeof b->why, "the chat service broke the protocol");
    } else {
        /* The service cuts a subscriber that fell a whole history behind ("busy: too slow"). */
        snprintf(b->why, sizeof b->why, "chat service: %s: %.80s", sg_err_code(rc), err);
    }
    end_subscription(b);
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

/* Unlinks and frees cmd (its call ended or is cancelled). */
static void cmd_free(struct chat_cmd *cmd)
{
    if (cmd->b) {
        struct chat_cmd **pp = &cmd->b->cmds;
        while (*pp && *pp != cmd)
            pp = &(*pp)->next;
        if (*pp)
            *pp = cmd->next;
    }
    upcall_free(cmd->c);
    json_decref(cmd->ref);
    free(cmd);
}

/* A command's answer is in: its event (or error) to the client; the client is read again once none waits. */
static void on_cmd_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct chat_cmd *cmd = arg;
    struct chat_bridge *b = cmd->b;
    (void)c;
    cmd->is_done = 1;
    if (!b)
        return; /* the socket ended: the reaper frees it */
    if (res->rc != SG_OK) {
        send_error(b->ws, cmd->ref, res->rc, res->err);
    } else {
        json_t *resp = json_deep_copy(res->header), *ev;
        json_t *list = res->body ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
        json_object_del(resp, "id");
        if (list)
            json_object_set_new(resp, "peers", list);
        ev = resp ? json_pack("{s:s,s:o}", "event", cmd->op, "data", resp) : NULL;
        if (ev && cmd->ref)
            json_object_set(ev, "ref", cmd->ref);
        send_event(b->ws, ev);
    }
    flush_soon(b);
}

/* Runs one command ({"op": "reply", "to", "text"} or {"op": "peers"}) the way its REST route does, on the loop. */
static void run_command(struct chat_bridge *b, const json_t *cmd_json, const json_t *ref)
{
    struct upstream *up = &b->rq->gw->backends[BACKEND_CHAT];
    const char *op = json_string_value(json_object_get(cmd_json, "op"));
    json_t *req = NULL;
    const json_t *to, *text;
    struct chat_cmd *cmd;
    char err[384] = "";
    int rc, is_reply = op && strcmp(op, "reply") == 0;

    if (is_reply) {
        json_t *fields = json_pack("{s:O?,s:O?}", "to", json_object_get(cmd_json, "to"), "text",
                                   json_object_get(cmd_json, "text"));
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
    cmd = req ? calloc(1, sizeof *cmd) : NULL;
    if (!cmd) {
        json_decref(req);
        send_error(b->ws, ref, SG_ERR_NOMEM, "out of memory");
        return;
    }
    cmd->b = b;
    cmd->ref = json_incref((json_t *)ref);
    snprintf(cmd->op, sizeof cmd->op, "%s", is_reply ? "reply" : "peers");
    /* As POST /api/v1/chat/reply and GET /peers make it: a reply is never sent twice, a peer list may be asked again. */
    rc = upcall_frame(up, req, NULL, 0, PEERS_MAX_BODY, !is_reply, request_deadline(b->rq), on_cmd_done, cmd, &cmd->c,
                      err, sizeof err);
    json_decref(req);
    if (rc != SG_OK) {
        send_error(b->ws, ref, rc, err);
        json_decref(cmd->ref);
        free(cmd);
        return;
    }
    cmd->next = b->cmds;
    b->cmds = cmd;
    /* The client's next commands wait in its socket until the chat service answered: one at a time, in order. */
    ws_hold(b->ws, 1);
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
    struct chat_bridge *b = arg;
    (void)ws;
    if (b->is_paused && b->us && !b->is_ended) {
        b->is_paused = 0;
        upcall_stream_resume(b->us); /* from the loop's next round */
    }
}

static void on_start(struct ws *ws, void *arg)
{
    struct chat_bridge *b = arg;
    b->ws = ws;
    ws_send(ws, 1, b->first, strlen(b->first));
    if (b->is_ended)
        end_subscription(b); /* it ended between the acknowledgement and the 101 */
    else
        on_room(ws, b);      /* the messages that waited for the socket */
}

/* Commands still in flight when their socket ended, cancelled after the loop's round. */
struct cmd_reaper {
    struct wk_timer t;
    struct chat_cmd *cmds;
};

static void on_reap(struct wk_timer *t)
{
    struct cmd_reaper *r = (struct cmd_reaper *)((char *)t - offsetof(struct cmd_reaper, t));
    while (r->cmds) {
        struct chat_cmd *cmd = r->cmds;
        r->cmds = cmd->next;
        cmd_free(cmd);
    }
    free(r);
}

/* Frees what b holds: the subscription (the chat service forgets the subscriber at once), the commands in flight. */
static void bridge_free(struct chat_bridge *b)
{
    struct cmd_reaper *r;
    upcall_stream_close(b->us);
    b->us = NULL;
    /*
     * A socket may end in the middle of a round whose batch still holds an
     * event of a command's backend connection, which upcall_free would free
     * under it: the commands are cancelled from a timer due now (timers run
     * after the batch). Once the loop stopped no batch is running.
     */
    if (b->cmds && b->wk && !worker_is_stopping() && (r = calloc(1, sizeof *r)) != NULL) {
        r->t.fire = on_reap;
        r->cmds = b->cmds;
        b->cmds = NULL;
        for (struct chat_cmd *cmd = r->cmds; cmd; cmd = cmd->next)
            cmd->b = NULL;
        worker_timer_arm(b->wk, &r->t, sg_now_ms());
    }
    while (b->cmds)
        cmd_free(b->cmds);
    if (b->wk)
        worker_timer_cancel(b->wk, &b->flush);
    free(b->first);
    free(b);
}

static void on_end(struct ws *ws, void *arg)
{
    (void)ws;
    bridge_free(arg);
}

static const struct ws_bridge chat_bridge = {on_start, on_message, on_room, on_end};

/* The request ended before the socket opened (the client left, or the subscription failed). */
static void bridge_state_free(struct request *rq, int is_complete)
{
    (void)is_complete;
    bridge_free(rq->state);
    rq->state = NULL;
}

/* The chat service acknowledged (the 101, the socket's from here) or failed first (an HTTP error). */
static int answer(struct request *rq)
{
    struct chat_bridge *b = rq->state;
    if (!b->is_subscribed)
        return request_fail(rq, b->end_rc ? b->end_rc : SG_ERR_INTERNAL, "%s", b->end_err);
    rq->state = NULL;
    rq->state_free = NULL;
    return ws_upgrade(rq, b->protocol, &chat_bridge, b); /* on_end frees b, whatever happens */
}

int api_ws_chat(struct request *rq)
{
    static const char *const protocols[] = {"sockgate.chat.v1", NULL};
    struct chat_bridge *b = NULL;
    const char *protocol = NULL, *after_text = request_query(rq, "after");
    char err[384] = "";
    uint64_t after = 0;
    int rc = ws_handshake_check(rq, protocols, &protocol);

    if (rc != SG_OK)
        return rc;
    if (after_text && sg_parse_u64(after_text, 0, MAX_SEQ, 0, &after) != SG_OK)
        return request_fail(rq, SG_ERR_INVALID, "after must be a message sequence number (0 to 2^53), not '%.40s'",
                            after_text);
    b = calloc(1, sizeof *b);
    if (!b)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    b->rq = rq;
    b->wk = worker_self();
    b->protocol = protocol;
    b->flush.fire = on_flush;
    rq->state = b;
    rq->state_free = bridge_state_free;
    /* Subscribed before the 101, so a down or refusing chat service is an HTTP error, not a closed socket. */
    rc = api_chat_subscribe(rq, after, on_sub_frame, on_sub_end, b, &b->us, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    request_defer(rq, answer);
    return SG_OK;
}
