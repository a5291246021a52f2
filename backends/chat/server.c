/* server.c - the chat service's life: create, the epoll loop, recording messages, stop and destroy. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat_int.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

#define MAX_EVENTS 256
#define WARN_INTERVAL_MS 10000
#define UDP_RCVBUF (1 << 20) /* room for bursts while the loop writes to subscribers */

void chat_config_defaults(struct chat_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = CHAT_DEFAULT_LISTEN;
    cfg->history = CHAT_DEFAULT_HISTORY;
    cfg->max_peers = CHAT_DEFAULT_MAX_PEERS;
    cfg->max_conns = CHAT_DEFAULT_MAX_CONNS;
}

int64_t chat_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void chat_warn_limited(struct chat_server *srv, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    int64_t now = sg_now_ms();

    if (srv->warn_ms && now - srv->warn_ms < WARN_INTERVAL_MS)
        return;
    srv->warn_ms = now;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sg_warn("%s (further warnings suppressed for %d s)", line, WARN_INTERVAL_MS / 1000);
}

int chat_record(struct chat_server *srv, int is_in, const char *peer, const char *text, size_t len,
                int64_t time_ms, int64_t now, uint64_t *seq)
{
    uint64_t evicted = 0;
    struct chat_history *h = &srv->history;
    /* "seq" first so a frame reads in the order docs/internals/chat.md shows; history_append fills it. */
    json_t *msg = json_pack("{s:I, s:s, s:s, s:I, s:s%}", "seq", (json_int_t)0, "kind", is_in ? "in" : "out",
                            is_in ? "from" : "to", peer, "time_ms", (json_int_t)time_ms, "text", text, len);
    int rc;

    if (!msg)
        return SG_ERR_NOMEM;
    /* Subscribers still owing the oldest message are dealt with while it can still be sent. */
    if (h->count == h->cap)
        conns_evicting(srv, history_first_seq(h), now);
    rc = history_append(h, msg, seq, &evicted);
    json_decref(msg);
    return rc;
}

static void chat_destroy(void *p)
{
    struct chat_server *srv = p;
    if (!srv)
        return;
    while (srv->conns)
        conn_close(srv, srv->conns);
    sg_evloop_close(&srv->loop);
    sg_close_listener(&srv->tcp_fd);
    sg_close_listener(&srv->udp_fd);
    history_free(&srv->history);
    peers_free(&srv->peers);
    free(srv->scratch);
    free(srv->dgram);
    free(srv);
}

static int check_config(const struct chat_config *cfg, char *err, size_t errlen)
{
    if (cfg->history < 1 || cfg->history > CHAT_MAX_HISTORY) {
        snprintf(err, errlen, "history must be from 1 to %u", CHAT_MAX_HISTORY);
        return SG_ERR_INVALID;
    }
    if (cfg->max_peers < 1 || cfg->max_peers > CHAT_MAX_PEERS) {
        snprintf(err, errlen, "max_peers must be from 1 to %u", CHAT_MAX_PEERS);
        return SG_ERR_INVALID;
    }
    if (cfg->max_conns < 1 || cfg->max_conns > CHAT_MAX_CONNS) {
        snprintf(err, errlen, "max_conns must be from 1 to %u", CHAT_MAX_CONNS);
        return SG_ERR_INVALID;
    }
    return SG_OK;
}

int chat_server_create(const struct chat_config *cfg, void **out, char *err, size_t errlen)
{
    struct chat_server *srv = NULL;
    struct sg_addr addr;
    int rcvbuf = UDP_RCVBUF;
    int rc;

    *out = NULL;
    rc = check_config(cfg, err, errlen);
    if (rc != SG_OK)
        return rc;
    rc = sg_addr_parse(cfg->listen, &addr, err, errlen);
    if (rc != SG_OK)
        return rc;
    srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    srv->tcp_fd = srv->udp_fd = -1;
    srv->max_conns = cfg->max_conns;
    /* First, so that destroy() finds the loop either open or closed whatever fails next. */
    rc = sg_evloop_open(&srv->loop, err, errlen);
    if (rc != SG_OK)
        goto out;
    srv->scratch = malloc(CHAT_SCRATCH);
    srv->dgram = malloc(CHAT_MAX_TEXT + 1);
    if (!srv->scratch || !srv->dgram || history_init(&srv->history, cfg->history) != SG_OK ||
        peers_init(&srv->peers, cfg->max_peers) != SG_OK) {
        snprintf(err, errlen, "out of memory");
        rc = SG_ERR_NOMEM;
        goto out;
    }
    /* Each socket's own address inside srv is the token the loop dispatches on. */
    rc = sg_evloop_listen_tcp_udp(&srv->loop, &addr, &srv->tcp_fd, &srv->udp_fd, err, errlen);
    if (rc != SG_OK)
        goto out;
    /* best effort: the kernel caps it at net.core.rmem_max, which only makes bursts lossier */
    setsockopt(srv->udp_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    srv->port = sg_local_port(srv->udp_fd);
out:
    if (rc != SG_OK)
        chat_destroy(srv);
    else
        *out = srv;
    return rc;
}

static int chat_run(void *p)
{
    struct chat_server *srv = p;
    struct epoll_event evs[MAX_EVENTS];

    while (!srv->loop.stopping) {
        /* Until the next closing deadline, -1 for none; the loop shortens it while accepts are paused. */
        int n = sg_evloop_wait(&srv->loop, evs, MAX_EVENTS, conns_expire(srv, sg_now_ms()));
        int64_t now = sg_now_ms();
        if (n < 0)
            return SG_ERR_SYS;
        /*
         * A connection is freed only while its own event is handled. A
         * subscriber cut as too slow by conns_evicting() (from another
         * event's handler) only gets an error frame queued and a deadline,
         * so later events of the batch never meet freed memory.
         */
        /*
         * Datagrams first: a client that sends datagrams and then a request
         * (stats, peers) sees them counted, whatever order epoll lists them in.
         */
        for (int i = 0; i < n; i++)
            if (evs[i].data.ptr == &srv->udp_fd)
                udp_ready(srv);
        for (int i = 0; i < n; i++) {
            void *token = evs[i].data.ptr;
            if (token == &srv->tcp_fd) {
                conn_accept_ready(srv, now);
            } else if (token == &srv->udp_fd) {
                continue; /* handled above */
            } else {
                conn_ready(srv, token, evs[i].events, now);
            }
        }
        /* One pass per batch: a burst of datagrams goes out to each subscriber in few sends. */
        if (srv->pumped_seq != srv->history.last_seq)
            conns_pump_all(srv);
    }
    return SG_OK;
}

static void chat_stop(void *p)
{
    sg_evloop_stop(&((struct chat_server *)p)->loop);
}

static int chat_listen_fd(void *p)
{
    return ((struct chat_server *)p)->tcp_fd;
}

const struct sg_service_ops chat_service_ops = {
    .name = "chat",
    .run = chat_run,
    .stop = chat_stop,
    .destroy = chat_destroy,
    .listen_fd = chat_listen_fd,
};
