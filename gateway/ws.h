/* ws.h - WebSockets on the worker loops: the handshake, wslay's framing, pings, deadlines, bounded queues. */
#ifndef SOCKGATE_GATEWAY_WS_H
#define SOCKGATE_GATEWAY_WS_H

#include <stddef.h>
#include <stdint.h>

struct request;
struct ws;

/*
 * Bytes queued for the client past which a bridge stops reading its backend
 * (ws_has_room turns 0), and below which it is told to read again (on_room).
 */
#define WS_OUT_HIGH (64u * 1024u)
#define WS_OUT_LOW (16u * 1024u)

/* What a route plugs into a WebSocket: called on the worker's thread that owns the socket. */
struct ws_bridge {
    /* The socket is open (the client has the 101): the bridge may start watching its backend. */
    void (*on_start)(struct ws *ws, void *arg);
    /* A whole data message from the client; returns 0, or a close code to end the socket with. */
    uint16_t (*on_message)(struct ws *ws, void *arg, int is_text, const uint8_t *data, size_t len);
    /* What was queued for the client went below WS_OUT_LOW: the bridge may read its backend again. */
    void (*on_room)(struct ws *ws, void *arg);
    /* The socket ends (ws NULL when the upgrade never happened): release the backend; arg is not used after. */
    void (*on_end)(struct ws *ws, void *arg);
};

/*
 * Checks rq's WebSocket handshake (GET, HTTP/1.1, Upgrade, Connection,
 * Sec-WebSocket-Version 13, a Sec-WebSocket-Key) and picks the first of
 * protocols (NULL-terminated, in the server's order of preference) that the
 * client offered, or NULL when it offered none of them. Returns SG_OK, or an
 * error recorded with request_fail (426 when it is no handshake at all).
 */
int ws_handshake_check(struct request *rq, const char *const *protocols, const char **chosen);

/*
 * 1 when the client offered "bearer.TOKEN" in Sec-WebSocket-Protocol with
 * the configured token (a browser cannot set Authorization on a WebSocket).
 */
int ws_protocol_has_token(struct request *rq);

/*
 * Answers rq with 101 Switching Protocols (protocol echoed when not NULL);
 * once the client has the answer, the socket runs on this worker's loop with
 * bridge. From this call on bridge->on_end runs exactly once, whatever
 * happens. SG_OK, or an error (on_end has then run).
 */
int ws_upgrade(struct request *rq, const char *protocol, const struct ws_bridge *bridge, void *arg);

/*
 * ws_send, ws_hold and ws_close only note what to do; ws_flush does it (from
 * a bridge's own event handler, as its last step: it may end the socket, and
 * then on_end has run). Inside on_message and on_room nothing needs flushing.
 */
void ws_flush(struct ws *ws);

/* Queues one message for the client (copied); SG_OK, or SG_ERR_CLOSED once the socket is closing. */
int ws_send(struct ws *ws, int is_text, const void *data, size_t len);

/* 1 while less than WS_OUT_HIGH bytes wait for the client. */
int ws_has_room(const struct ws *ws);

/* Stops (is_held 1) or resumes reading the client: the bridge's own way to the backend is full. */
void ws_hold(struct ws *ws, int is_held);

/* Starts the closing handshake with code and reason (at most 123 bytes); what is queued goes first. */
void ws_close(struct ws *ws, uint16_t code, const char *reason);

/* The bridge's request id (for its backend calls and logs). */
const char *ws_request_id(const struct ws *ws);

/* How often the calling worker's loop must run its daemon while it finishes upgraded HTTPS sockets; -1: no need. */
int ws_daemon_poll_ms(void);

/* Closes every WebSocket of the calling worker with 1001 (the gateway is stopping). */
void ws_close_all_here(void);

/* Drops every WebSocket of the calling worker at once (before its daemon stops). */
void ws_abort_all_here(void);

#endif
