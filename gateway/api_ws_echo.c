/* api_ws_echo.c - GET /api/v1/ws/echo: a WebSocket bridged to a TCP connection of its own to the echo backend. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <wslay/wslay.h>

#include "api.h"
#include "balancer.h"
#include "server.h"
#include "upcall.h"
#include "upstream.h"
#include "worker.h"
#include "ws.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

/* One read from the backend, sent to the client as one message. */
#define PIECE (16u * 1024u)
/* Client bytes not yet taken by the backend past which the client is not read (a message may overshoot it). */
#define TB_HIGH (64u * 1024u)
#define TB_LOW (16u * 1024u)

/* How messages carry the bytes: websockify's binary and base64 subprotocols, and text for browsers' strings. */
enum echo_mode { MODE_BINARY, MODE_BASE64, MODE_TEXT };

/* The server's order of preference among the subprotocols a client offers. */
static const char *const protocols[] = {"binary", "base64", "text", NULL};

struct echo_bridge {
    struct ws *ws;
    struct wk_watch watch; /* the backend connection */
    struct worker *wk;
    /* Before the 101: the connect, on the loop, with the request deferred until it ends. */
    struct request *rq;
    struct upstream *up;
    const char *protocol;
    struct bal_pick pick;
    struct wk_timer connect_timer;
    int is_connecting, connect_rc;
    char connect_err[384];
    enum echo_mode mode;
    int can_read, can_write, is_watched, is_backend_gone;
    int is_out_watched, saw_hup; /* as in ws.c: EPOLLOUT only while blocked; a FIN was announced */
    int is_ended;                /* on_end ran: waits to be freed after the loop's round */
    uint8_t *tb;              /* client bytes on their way to the backend */
    size_t tb_off, tb_len, tb_cap;
    uint8_t tail[4];          /* text mode: the start of a UTF-8 sequence the next read completes */
    size_t tail_len;
};

/* Returns how many leading bytes of buf end on a whole UTF-8 sequence (an incomplete last one waits). */
static size_t utf8_whole(const uint8_t *buf, size_t n)
{
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && (buf[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return n;
    {
        uint8_t lead = buf[i - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (need > 1 && back + 1 < need)
            return i - 1; /* the lead byte and its continuations wait for the rest */
    }
    return n;
}

/* Sends what the client sent to the backend, as far as it takes it now. */
static void write_backend(struct echo_bridge *b)
{
    while (b->can_write && b->tb_off < b->tb_len) {
        ssize_t n = send(b->watch.fd, b->tb + b->tb_off, b->tb_len - b->tb_off, MSG_NOSIGNAL);
        if (n > 0) {
            b->tb_off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            b->can_write = 0;
        } else if (!(n < 0 && errno == EINTR)) {
            b->is_backend_gone = 1;
            ws_close(b->ws, WSLAY_CODE_INTERNAL_SERVER_ERROR, "the echo backend connection broke");
            return;
        }
    }
    if (b->tb_off == b->tb_len)
        b->tb_off = b->tb_len = 0;
    ws_hold(b->ws, b->tb_len - b->tb_off > TB_HIGH);
    {
        int want_out = !b->can_write && b->tb_off < b->tb_len;
        if (b->is_watched && want_out != b->is_out_watched &&
            worker_rewatch(b->wk, &b->watch, EPOLLIN | EPOLLRDHUP | EPOLLET | (want_out ? EPOLLOUT : 0)) == 0)
            b->is_out_watched = want_out;
    }
}

/* Turns one read from the backend into a message for the client. */
static void forward(struct echo_bridge *b, const uint8_t *data, size_t n)
{
    if (b->mode == MODE_BASE64) {
        unsigned char out[4 * ((PIECE + 4 + 2) / 3) + 1];
        int len = EVP_EncodeBlock(out, data, (int)n);
        ws_send(b->ws, 1, out, (size_t)len);
    } else if (b->mode == MODE_TEXT) {
        uint8_t buf[PIECE + sizeof b->tail];
        size_t all, whole;
        memcpy(buf, b->tail, b->tail_len);
        memcpy(buf + b->tail_len, data, n);
        all = b->tail_len + n;
        whole = utf8_whole(buf, all);
        b->tail_len = all - whole;
        memcpy(b->tail, buf + whole, b->tail_len);
        if (whole > 0)
            ws_send(b->ws, 1, buf, whole);
    } else {
        ws_send(b->ws, 0, data, n);
    }
}

/* Reads the backend while the client's queue has room (a slow client stops this, never buffers without bound). */
static void read_backend(struct echo_bridge *b)
{
    uint8_t buf[PIECE];
    while (b->can_read && !b->is_backend_gone && ws_has_room(b->ws)) {
        ssize_t n = recv(b->watch.fd, buf, sizeof buf, 0);
        if (n > 0) {
            if ((size_t)n < sizeof buf && !b->saw_hup)
                b->can_read = 0; /* emptied: spare the EAGAIN read */
            forward(b, buf, (size_t)n);
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            b->can_read = 0;
        } else if (!(n < 0 && errno == EINTR)) {
            b->is_backend_gone = 1;
            ws_close(b->ws, WSLAY_CODE_INTERNAL_SERVER_ERROR,
                     n == 0 ? "the echo backend closed the connection" : "the echo backend connection broke");
        }
    }
}

static void on_backend(struct wk_watch *w, uint32_t events)
{
    struct echo_bridge *b = (struct echo_bridge *)((char *)w - offsetof(struct echo_bridge, watch));
    if (b->is_ended)
        return;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        b->saw_hup = 1;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        b->can_read = 1;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        b->can_write = 1;
    write_backend(b);
    read_backend(b);
    ws_flush(b->ws); /* last: it may end the socket and free b */
}

/* Appends a client message's bytes (base64 decoded in that mode) for the backend; 0 or a close code. */
static uint16_t on_message(struct ws *ws, void *arg, int is_text, const uint8_t *data, size_t len)
{
    struct echo_bridge *b = arg;
    size_t need = b->mode == MODE_BASE64 ? len / 4 * 3 + 3 : len;
    (void)ws;
    if (b->is_backend_gone)
        return 0;
    if (b->mode == MODE_BASE64 && (!is_text || len % 4 != 0))
        return WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA; /* websockify's base64 is text, padded */
    if (b->tb_off > 0) {
        memmove(b->tb, b->tb + b->tb_off, b->tb_len - b->tb_off);
        b->tb_len -= b->tb_off;
        b->tb_off = 0;
    }
    if (need > b->tb_cap - b->tb_len) {
        /* At most TB_HIGH waiting plus one message (--ws-max-message) plus what wslay had read ahead. */
        size_t cap = b->tb_len + need;
        uint8_t *p = realloc(b->tb, cap);
        if (!p)
            return WSLAY_CODE_INTERNAL_SERVER_ERROR;
        b->tb = p;
        b->tb_cap = cap;
    }
    if (b->mode == MODE_BASE64) {
        int n = len ? EVP_DecodeBlock(b->tb + b->tb_len, data, (int)len) : 0;
        if (n < 0)
            return WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA;
        /* EVP_DecodeBlock counts the padding as zero bytes. */
        if (len >= 1 && data[len - 1] == '=')
            n--;
        if (len >= 2 && data[len - 2] == '=')
            n--;
        b->tb_len += (size_t)n;
    } else {
        memcpy(b->tb + b->tb_len, data, len);
        b->tb_len += len;
    }
    write_backend(b);
    /* Memory given back once a burst is through: a socket that sent one large message keeps no large buffer. */
    if (b->tb_len == 0 && b->tb_cap > TB_HIGH) {
        free(b->tb);
        b->tb = NULL;
        b->tb_cap = 0;
    }
    return 0;
}

static void on_room(struct ws *ws, void *arg)
{
    (void)ws;
    read_backend(arg);
}

static void on_start(struct ws *ws, void *arg)
{
    struct echo_bridge *b = arg;
    b->ws = ws;
    b->wk = worker_self();
    b->watch.ready = on_backend;
    b->can_read = b->can_write = 1;
    if (worker_watch(b->wk, &b->watch, EPOLLIN | EPOLLRDHUP | EPOLLET) != 0) {
        sg_warn("websocket %s: cannot watch the echo connection: %s", ws_request_id(ws), strerror(errno));
        b->is_backend_gone = 1;
        ws_close(ws, WSLAY_CODE_INTERNAL_SERVER_ERROR, "the gateway cannot watch the echo connection");
        return;
    }
    b->is_watched = 1;
}

static void on_end(struct ws *ws, void *arg)
{
    struct echo_bridge *b = arg;
    (void)ws;
    if (b->is_watched)
        worker_unwatch(b->wk, &b->watch);
    close(b->watch.fd);
    free(b->tb);
    b->tb = NULL;
    b->is_ended = 1;
    if (b->wk)
        worker_free_later(b->wk, b); /* this round may still hold an event of its watch */
    else
        free(b); /* never watched */
}

static const struct ws_bridge echo_bridge = {on_start, on_message, on_room, on_end};

/* Ends the connect: reports it to the balancer and wakes the request, whose answer() goes on. */
static void connect_end(struct echo_bridge *b, int rc, const char *why)
{
    worker_timer_cancel(b->wk, &b->connect_timer);
    worker_unwatch(b->wk, &b->watch); /* on_start watches it again, for the bridge */
    b->is_connecting = 0;
    balancer_done(b->up->bal, &b->pick, rc == SG_OK ? BAL_OK : BAL_CONNECT_FAIL);
    b->connect_rc = rc;
    if (rc != SG_OK) {
        snprintf(b->connect_err, sizeof b->connect_err, "%s backend at %.100s (%.60s): %.200s", backend_name(b->up->id),
                 b->up->name, b->pick.text, why);
        upstream_failed(b->up, rc);
    }
    request_wake(b->rq);
}

static void on_connected(struct wk_watch *w, uint32_t events)
{
    struct echo_bridge *b = (struct echo_bridge *)((char *)w - offsetof(struct echo_bridge, watch));
    int soerr;
    if (!b->is_connecting || !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        return;
    soerr = upcall_connect_error(w->fd);
    connect_end(b, soerr ? SG_ERR_REFUSED : SG_OK, soerr ? strerror(soerr) : NULL);
}

static void on_connect_timeout(struct wk_timer *t)
{
    struct echo_bridge *b = (struct echo_bridge *)((char *)t - offsetof(struct echo_bridge, connect_timer));
    if (b->is_connecting)
        connect_end(b, SG_ERR_TIMEOUT, "connect timed out");
}

/* The request ended before the socket opened (the client left, or the connect failed). */
static void bridge_state_free(struct request *rq, int is_complete)
{
    struct echo_bridge *b = rq->state;
    (void)is_complete;
    rq->state = NULL;
    if (b->is_connecting) {
        worker_timer_cancel(b->wk, &b->connect_timer);
        worker_unwatch(b->wk, &b->watch);
        balancer_done(b->up->bal, &b->pick, BAL_NEUTRAL);
    }
    if (b->watch.fd >= 0)
        close(b->watch.fd);
    worker_free_later(b->wk, b); /* this round may still hold an event of its watch */
}

/* The connect ended: the 101 and the bridge, or an HTTP error the client can read. */
static int answer(struct request *rq)
{
    struct echo_bridge *b = rq->state;
    if (b->connect_rc != SG_OK)
        return request_fail(rq, b->connect_rc, "%s", b->connect_err); /* bridge_state_free closes and frees */
    rq->state = NULL;
    rq->state_free = NULL;
    return ws_upgrade(rq, b->protocol, &echo_bridge, b); /* on_end frees b, whatever happens */
}

int api_ws_echo(struct request *rq)
{
    struct echo_bridge *b = NULL;
    const char *protocol = NULL;
    char err[384] = "";
    int rc = ws_handshake_check(rq, protocols, &protocol), is_pending = 0;
    int64_t connect_by;

    if (rc != SG_OK)
        return rc;
    b = calloc(1, sizeof *b);
    if (!b)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    b->rq = rq;
    b->wk = worker_self();
    b->up = &rq->gw->backends[BACKEND_ECHO];
    b->protocol = protocol;
    b->watch.fd = -1;
    b->mode = !protocol || strcmp(protocol, "binary") == 0 ? MODE_BINARY
              : strcmp(protocol, "base64") == 0            ? MODE_BASE64
                                                           : MODE_TEXT;
    rq->state = b;
    rq->state_free = bridge_state_free;
    /*
     * Connected before the 101, so a down echo backend is an HTTP error the
     * client can read; on the loop, so a backend that drops SYNs holds this
     * request only, never the worker.
     */
    rc = upcall_connect(b->up, &b->pick, &b->watch.fd, &is_pending, err, sizeof err);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    if (!is_pending) {
        balancer_done(b->up->bal, &b->pick, BAL_OK);
        return answer(rq);
    }
    b->is_connecting = 1;
    b->watch.ready = on_connected;
    b->connect_timer.fire = on_connect_timeout;
    if (worker_watch(b->wk, &b->watch, EPOLLOUT | EPOLLET) != 0) {
        b->is_connecting = 0;
        balancer_done(b->up->bal, &b->pick, BAL_NEUTRAL);
        return request_fail(rq, SG_ERR_SYS, "cannot watch the echo connection: %s", strerror(errno));
    }
    connect_by = sg_now_ms() + UPCALL_CONNECT_MAX_MS;
    worker_timer_arm(b->wk, &b->connect_timer,
                     connect_by < request_deadline(rq) ? connect_by : request_deadline(rq));
    request_defer(rq, answer);
    return SG_OK;
}
