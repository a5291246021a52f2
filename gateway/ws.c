/* ws.c - WebSocket sessions: the handshake, wslay framing on the worker loop, pings, deadlines, bounded queues. */
#include "ws.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "errors.h"
#include "metrics.h"
#include "server.h"
#include "tls.h"
#include "worker.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* A closing handshake the client does not finish within this is cut. */
#define CLOSE_WAIT_MS 5000
/* One read from the client: wslay parses it before asking for more. */
#define READ_PIECE (16u * 1024u)
/* Rounds of reading and writing per wake-up, so one busy socket does not starve the loop's others. */
#define PUMP_ROUNDS 16

/*
 * One WebSocket. Lives on the worker thread whose loop owns the socket, from
 * the upgrade to ws_finish; the request (rq) stays allocated until
 * libmicrohttpd hears of the end (MHD_UPGRADE_ACTION_CLOSE), so its byte
 * counters are kept up to date for the access log and /metrics.
 */
struct ws {
    struct ws *prev, *next; /* this worker's sessions */
    struct wk_watch watch;  /* the socket: the client's own, or libmicrohttpd's end of its TLS relay */
    struct wk_timer timer;  /* the next of: ping, pong deadline, idle deadline, closing deadline */
    struct worker *wk;
    struct request *rq;
    struct MHD_UpgradeResponseHandle *urh;
    wslay_event_context_ptr ctx;
    const struct ws_bridge *bridge;
    void *arg;
    uint8_t *extra;        /* bytes libmicrohttpd had read past the handshake, served first */
    size_t extra_off, extra_len;
    int can_read, can_write; /* the last edge said so and no EAGAIN came since */
    int is_out_watched;    /* EPOLLOUT is asked for: only while a send would block (each ACK is an edge) */
    int saw_hup;           /* the client's FIN was announced: read to the end, never trust a short read */
    int is_held;           /* the bridge stopped reading the client */
    int is_pumping, again; /* pump() runs; something asked for another round meanwhile */
    int is_done;
    int is_draining;       /* our close frame is out and our side shut: reading until the client's FIN */
    struct ws_pending *pending;
    int64_t next_ping, pong_due, idle_due, close_due; /* sg_now_ms clock; 0 when not pending */
    char id[REQUEST_ID_MAX + 1];
};

/* The pending upgrade: created with the 101, taken by the session once the client has it. */
struct ws_pending {
    const struct ws_bridge *bridge;
    void *arg;
    int is_taken;
    int is_awaited; /* counted in tls_closing until the request ends */
};

static _Thread_local struct ws *sessions;
/*
 * Upgraded HTTPS sockets handed back to libmicrohttpd whose request has not
 * ended yet. libmicrohttpd relays them and resumes them from inside MHD_run,
 * which wakes nobody in external mode: while any is pending the loop polls
 * its daemon (ws_daemon_poll_ms).
 */
static _Thread_local long tls_closing;

static void pump(struct ws *ws);

/* ---- the handshake ---- */

/* 1 when the comma-separated list holds token (case-insensitively). */
static int list_has(const char *list, const char *token)
{
    size_t n = strlen(token);
    while (list && *list) {
        size_t len;
        list += strspn(list, " \t,");
        len = strcspn(list, ",");
        while (len > 0 && (list[len - 1] == ' ' || list[len - 1] == '\t'))
            len--;
        if (len == n && strncasecmp(list, token, n) == 0)
            return 1;
        list += strcspn(list, ",");
    }
    return 0;
}

int ws_handshake_check(struct request *rq, const char *const *protocols, const char **chosen)
{
    const char *upgrade = request_header(rq, "Upgrade");
    const char *connection = request_header(rq, "Connection");
    const char *version = request_header(rq, "Sec-WebSocket-Version");
    const char *key = request_header(rq, "Sec-WebSocket-Key");
    const char *offered = request_header(rq, "Sec-WebSocket-Protocol");

    *chosen = NULL;
    if (strcmp(rq->method, "GET") != 0 || !upgrade || !list_has(upgrade, "websocket") || !connection ||
        !list_has(connection, "upgrade"))
        return request_fail(rq, GW_ERR_UPGRADE_REQUIRED,
                            "%s speaks WebSocket only: send GET with Upgrade: websocket and Connection: Upgrade",
                            rq->url);
    if (!version || strcmp(version, "13") != 0)
        return request_fail(rq, GW_ERR_UPGRADE_REQUIRED, "Sec-WebSocket-Version must be 13 (RFC 6455), not '%.20s'",
                            version ? version : "");
    /* The key is 16 random bytes in base64: 24 characters, the last two "==". */
    if (!key || strlen(key) != 24 || strcmp(key + 22, "==") != 0)
        return request_fail(rq, SG_ERR_INVALID, "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters)");
    for (size_t i = 0; offered && protocols[i]; i++)
        if (list_has(offered, protocols[i])) {
            *chosen = protocols[i];
            break;
        }
    return SG_OK;
}

int ws_protocol_has_token(struct request *rq)
{
    const char *list = request_header(rq, "Sec-WebSocket-Protocol");
    unsigned char digest[SHA256_DIGEST_LENGTH];
    while (list && *list) {
        size_t len;
        list += strspn(list, " \t,");
        len = strcspn(list, ", \t");
        if (len > 7 && strncasecmp(list, "bearer.", 7) == 0) {
            /* Compared by digest, in constant time, like the Authorization header (server.c). */
            SHA256((const unsigned char *)list + 7, len - 7, digest);
            if (CRYPTO_memcmp(digest, rq->gw->token_sha256, sizeof digest) == 0)
                return 1;
        }
        list += strcspn(list, ",");
    }
    return 0;
}

/* Writes Sec-WebSocket-Accept for key into out (at least 29 bytes). */
static void accept_value(const char *key, char *out)
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    char text[64];
    int n = snprintf(text, sizeof text, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)text, (size_t)n, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, sizeof digest);
}

/* ---- the session ---- */

/* Arms the session's one timer at the earliest pending deadline. */
static void timer_rearm(struct ws *ws)
{
    int64_t at = 0;
    const int64_t d[] = {ws->next_ping, ws->pong_due, ws->idle_due, ws->close_due};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i] && (!at || d[i] < at))
            at = d[i];
    if (at)
        worker_timer_arm(ws->wk, &ws->timer, at);
    else
        worker_timer_cancel(ws->wk, &ws->timer);
}

/* A data message went either way: the idle deadline starts again. */
static void touch(struct ws *ws)
{
    unsigned idle = ws->rq->gw->cfg.ws_idle_ms;
    if (idle)
        ws->idle_due = sg_now_ms() + idle;
}

/* Frees what an ended session holds; the struct itself after the loop's round (an event may still name it). */
static void release(struct ws *ws)
{
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
    free(ws->extra);
    ws->extra = NULL;
    worker_free_later(ws->wk, ws);
}

/*
 * Ends the session: the bridge releases its backend, libmicrohttpd gets the
 * socket back (it closes it and ends the request), the session is freed.
 */
static void finish(struct ws *ws)
{
    if (ws->is_done)
        return;
    ws->is_done = 1;
    worker_timer_cancel(ws->wk, &ws->timer);
    worker_unwatch(ws->wk, &ws->watch);
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        sessions = ws->next;
    if (ws->next)
        ws->next->prev = ws->prev;
    ws->bridge->on_end(ws, ws->arg);
    metrics_ws_open(-1);
    if (tls_is_on() && !ws->pending->is_awaited) {
        ws->pending->is_awaited = 1;
        tls_closing++;
    }
    /* libmicrohttpd's external mode wakes no loop after a resume: make this one run its daemon again. */
    MHD_upgrade_action(ws->urh, MHD_UPGRADE_ACTION_CLOSE);
    worker_kick(ws->wk);
    if (!ws->is_pumping)
        release(ws);
}

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user_data)
{
    struct ws *ws = user_data;
    ssize_t n;
    (void)flags;
    if (ws->is_held || ws->is_done) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (ws->extra_off < ws->extra_len) {
        size_t k = ws->extra_len - ws->extra_off < len ? ws->extra_len - ws->extra_off : len;
        memcpy(buf, ws->extra + ws->extra_off, k);
        ws->extra_off += k;
        ws->rq->bytes_in += k;
        return (ssize_t)k;
    }
    if (len > READ_PIECE)
        len = READ_PIECE;
    n = recv(ws->watch.fd, buf, len, 0);
    if (n > 0) {
        ws->rq->bytes_in += (uint64_t)n;
        /* A short read emptied the socket: the next one would only say EAGAIN (a system call per message). */
        if ((size_t)n < len && !ws->saw_hup)
            ws->can_read = 0;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (errno != EINTR)
            ws->can_read = 0;
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    /* The client closed the TCP connection (or it broke) without a closing handshake. */
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user_data)
{
    struct ws *ws = user_data;
    ssize_t n;
    (void)flags;
    n = send(ws->watch.fd, data, len, MSG_NOSIGNAL);
    if (n >= 0) {
        ws->rq->bytes_out += (uint64_t)n;
        return n;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        if (errno != EINTR)
            ws->can_write = 0;
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m, void *user_data)
{
    struct ws *ws = user_data;
    uint16_t code;
    (void)ctx;
    if (ws->is_done)
        return;
    if (m->opcode == WSLAY_PONG) {
        ws->pong_due = 0;
        timer_rearm(ws);
        return;
    }
    if (m->opcode != WSLAY_TEXT_FRAME && m->opcode != WSLAY_BINARY_FRAME)
        return; /* ping (wslay answers it) and close (wslay replies) need nothing of ours */
    if (wslay_event_get_close_sent(ws->ctx))
        return; /* closing: what still comes in is not forwarded */
    metrics_ws_message(0, m->msg_length);
    touch(ws);
    timer_rearm(ws);
    code = ws->bridge->on_message(ws, ws->arg, m->opcode == WSLAY_TEXT_FRAME, m->msg, m->msg_length);
    if (code)
        ws_close(ws, code, code == WSLAY_CODE_MESSAGE_TOO_BIG ? "message too big" : NULL);
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = on_recv,
    .send_callback = on_send,
    .on_msg_recv_callback = on_msg,
};

/*
 * Our close frame is out but the client's is not in (we closed first after
 * an error, 1009 say): closing the socket now, with the client's bytes still
 * arriving, would make TCP answer them with a reset that can overtake the
 * close frame (the client then sees 1006). So our side is shut for writing
 * and what comes is read and dropped until the client's FIN or the closing
 * deadline. Returns 1 while draining, 0 when the client is gone.
 */
static int drain(struct ws *ws)
{
    char scratch[16384];
    if (!ws->is_draining) {
        ws->is_draining = 1;
        (void)shutdown(ws->watch.fd, SHUT_WR);
        if (!ws->close_due) {
            ws->close_due = sg_now_ms() + CLOSE_WAIT_MS;
            timer_rearm(ws);
        }
    }
    for (;;) {
        ssize_t n = recv(ws->watch.fd, scratch, sizeof scratch, 0);
        if (n > 0) {
            ws->rq->bytes_in += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ws->can_read = 0;
            return 1;
        }
        return 0;
    }
}

/* Reads and writes what the socket allows and the bridge takes; ends the session when both directions are done. */
static void pump(struct ws *ws)
{
    if (ws->is_pumping) {
        ws->again = 1;
        return;
    }
    ws->is_pumping = 1;
    if (ws->is_draining) {
        if (!drain(ws))
            finish(ws);
        goto out;
    }
    for (int round = 0; round < PUMP_ROUNDS && !ws->is_done; round++) {
        int rv = 0;
        size_t before = wslay_event_get_queued_msg_length(ws->ctx);
        ws->again = 0;
        if ((ws->can_read || ws->extra_off < ws->extra_len) && !ws->is_held && wslay_event_want_read(ws->ctx))
            rv = wslay_event_recv(ws->ctx);
        if (rv == 0 && ws->can_write && wslay_event_want_write(ws->ctx))
            rv = wslay_event_send(ws->ctx);
        if (rv != 0) {
            finish(ws); /* the client went away, or broke the protocol (wslay queued 1002 but cannot send it) */
            break;
        }
        if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx)) {
            if (wslay_event_get_close_received(ws->ctx) || !drain(ws)) {
                finish(ws); /* the closing handshake is complete, or the client is gone */
                break;
            }
            break; /* draining: on_ready reads on */
        }
        if (wslay_event_get_close_sent(ws->ctx) && !ws->close_due) {
            ws->close_due = sg_now_ms() + CLOSE_WAIT_MS;
            timer_rearm(ws);
        }
        if (before >= WS_OUT_LOW && wslay_event_get_queued_msg_length(ws->ctx) < WS_OUT_LOW &&
            !wslay_event_get_close_sent(ws->ctx))
            ws->bridge->on_room(ws, ws->arg);
        if (!ws->again &&
            !((ws->can_read || ws->extra_off < ws->extra_len) && !ws->is_held && wslay_event_want_read(ws->ctx)) &&
            !(ws->can_write && wslay_event_want_write(ws->ctx)))
            break;
    }
out:
    ws->is_pumping = 0;
    if (!ws->is_done) {
        int want_out = !ws->can_write && wslay_event_want_write(ws->ctx);
        if (want_out != ws->is_out_watched &&
            worker_rewatch(ws->wk, &ws->watch, EPOLLIN | EPOLLRDHUP | EPOLLET | (want_out ? EPOLLOUT : 0)) == 0)
            ws->is_out_watched = want_out;
    }
    if (ws->is_done) {
        release(ws);
    } else if (ws->again) {
        /* The round budget ran out with work left: the timer brings the loop back at once (edges are kept). */
        ws->again = 0;
        worker_timer_arm(ws->wk, &ws->timer, sg_now_ms());
    }
}

static void on_ready(struct wk_watch *w, uint32_t events)
{
    struct ws *ws = (struct ws *)((char *)w - offsetof(struct ws, watch));
    if (ws->is_done)
        return; /* ended earlier in this round: only waits to be freed */
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        ws->saw_hup = 1;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        ws->can_read = 1; /* a hang-up or error is found by the next read */
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        ws->can_write = 1;
    pump(ws);
}

static void on_timer(struct wk_timer *t)
{
    struct ws *ws = (struct ws *)((char *)t - offsetof(struct ws, timer));
    int64_t now = sg_now_ms();
    const struct gw_config *cfg = &ws->rq->gw->cfg;

    if ((ws->close_due && now >= ws->close_due) || (ws->pong_due && now >= ws->pong_due)) {
        /* The client does not finish the closing handshake, or does not answer pings: it is gone. */
        finish(ws);
        return;
    }
    if (ws->idle_due && now >= ws->idle_due) {
        ws->idle_due = 0;
        ws_close(ws, WSLAY_CODE_GOING_AWAY, "idle timeout");
    }
    if (ws->next_ping && now >= ws->next_ping) {
        struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
        ws->next_ping = now + cfg->ws_ping_ms;
        if (!ws->pong_due && !wslay_event_get_close_sent(ws->ctx) && wslay_event_queue_msg(ws->ctx, &ping) == 0)
            ws->pong_due = now + cfg->ws_pong_ms;
    }
    timer_rearm(ws);
    pump(ws);
}

/* libmicrohttpd sent the 101: the socket is ours until MHD_UPGRADE_ACTION_CLOSE. */
static void on_upgrade(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    struct ws_pending *p = cls;
    struct request *rq = req_cls;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct ws *ws = calloc(1, sizeof *ws);
    int one = 1, fl;

    p->is_taken = 1;
    if (!ws || !rq || wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0)
        goto fail;
    ws->wk = worker_self();
    ws->rq = rq;
    ws->urh = urh;
    ws->bridge = p->bridge;
    ws->arg = p->arg;
    ws->pending = p;
    snprintf(ws->id, sizeof ws->id, "%s", rq->id);
    ws->watch.fd = sock;
    ws->watch.ready = on_ready;
    ws->timer.fire = on_timer;
    ws->can_read = ws->can_write = 1;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, rq->gw->cfg.ws_max_message);
    if (extra_in_size > 0) {
        ws->extra = malloc(extra_in_size);
        if (!ws->extra)
            goto fail;
        memcpy(ws->extra, extra_in, extra_in_size);
        ws->extra_len = extra_in_size;
    }
    /* libmicrohttpd turns Nagle back on for an upgraded socket; echo round trips want it off. */
    if (info)
        setsockopt(info->connect_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fl = fcntl(sock, F_GETFL);
    if (fl < 0 || fcntl(sock, F_SETFL, fl | O_NONBLOCK) != 0)
        goto fail;
    if (!tls_is_on())
        worker_release_socket(conn); /* plain HTTP: the loop watched this very socket for the connection */
    if (worker_watch(ws->wk, &ws->watch, EPOLLIN | EPOLLRDHUP | EPOLLET) != 0) {
        sg_warn("websocket %s: cannot watch the socket: %s", rq->id, strerror(errno));
        goto fail;
    }
    ws->next = sessions;
    if (sessions)
        sessions->prev = ws;
    sessions = ws;
    metrics_ws_open(1);
    if (rq->gw->cfg.ws_ping_ms)
        ws->next_ping = sg_now_ms() + rq->gw->cfg.ws_ping_ms;
    touch(ws);
    timer_rearm(ws);
    ws->bridge->on_start(ws, ws->arg);
    pump(ws);
    return;
fail:
    sg_warn("websocket %s: cannot start the session (out of memory or descriptors)", rq ? rq->id : "?");
    p->bridge->on_end(NULL, p->arg);
    if (ws) {
        if (ws->ctx)
            wslay_event_context_free(ws->ctx);
        free(ws->extra);
        free(ws);
    }
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    worker_kick(worker_self());
}

/* The request ends: a pending upgrade that never happened still releases the bridge. */
static void pending_free(struct request *rq, int is_complete)
{
    struct ws_pending *p = rq->state;
    (void)is_complete;
    if (p && !p->is_taken)
        p->bridge->on_end(NULL, p->arg);
    if (p && p->is_awaited)
        tls_closing--;
    free(p);
    rq->state = NULL;
}

int ws_upgrade(struct request *rq, const char *protocol, const struct ws_bridge *bridge, void *arg)
{
    const char *key = request_header(rq, "Sec-WebSocket-Key");
    struct ws_pending *p = calloc(1, sizeof *p);
    struct MHD_Response *resp = NULL;
    char accept[40];

    if (!p) {
        bridge->on_end(NULL, arg);
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    p->bridge = bridge;
    p->arg = arg;
    rq->state = p;
    rq->state_free = pending_free;
    resp = MHD_create_response_for_upgrade(on_upgrade, p);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    accept_value(key, accept);
    MHD_add_response_header(resp, "Upgrade", "websocket");
    MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept);
    if (protocol)
        MHD_add_response_header(resp, "Sec-WebSocket-Protocol", protocol);
    return respond(rq, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
}

/* ---- what bridges call ---- */

int ws_send(struct ws *ws, int is_text, const void *data, size_t len)
{
    struct wslay_event_msg m = {is_text ? WSLAY_TEXT_FRAME : WSLAY_BINARY_FRAME, data, len};
    if (ws->is_done || wslay_event_get_close_sent(ws->ctx) || wslay_event_queue_msg(ws->ctx, &m) != 0)
        return SG_ERR_CLOSED;
    metrics_ws_message(1, len);
    touch(ws);
    ws->again = 1;
    return SG_OK;
}

int ws_has_room(const struct ws *ws)
{
    return wslay_event_get_queued_msg_length(ws->ctx) < WS_OUT_HIGH;
}

void ws_hold(struct ws *ws, int is_held)
{
    if (ws->is_held == is_held)
        return;
    ws->is_held = is_held;
    if (!is_held)
        ws->again = 1; /* the edge that announced the waiting bytes is gone: ws_flush reads them */
}

void ws_flush(struct ws *ws)
{
    pump(ws);
}

void ws_close(struct ws *ws, uint16_t code, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    if (ws->is_done || wslay_event_get_close_sent(ws->ctx))
        return;
    if (n > 123)
        n = 123; /* a control frame's payload is at most 125 bytes, two of them the code */
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, n);
    ws->is_held = 0; /* read on, for the client's close frame */
    ws->again = 1;
}

const char *ws_request_id(const struct ws *ws)
{
    return ws->id;
}

int ws_daemon_poll_ms(void)
{
    return tls_closing > 0 ? 20 : -1;
}

void ws_close_all_here(void)
{
    struct ws *ws = sessions, *next;
    for (; ws; ws = next) {
        next = ws->next;
        ws_close(ws, WSLAY_CODE_GOING_AWAY, "the gateway is stopping");
        pump(ws);
    }
}

void ws_abort_all_here(void)
{
    while (sessions)
        finish(sessions);
}
