/* server.c - the echo service's life: create, the epoll loop, stop and destroy. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "echo_loop.h"
#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "sockgate/wake.h"

#define MAX_EVENTS 256
#define WARN_INTERVAL_MS 10000

void echo_config_defaults(struct echo_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = ECHO_DEFAULT_LISTEN;
    cfg->mode = ECHO_MODE_UPPER;
    cfg->max_conns = ECHO_DEFAULT_MAX_CONNS;
    cfg->idle_timeout_s = 0;
}

int echo_mode_parse(const char *text, enum echo_mode *mode)
{
    if (strcmp(text, "upper") == 0)
        *mode = ECHO_MODE_UPPER;
    else if (strcmp(text, "plain") == 0)
        *mode = ECHO_MODE_PLAIN;
    else
        return SG_ERR_INVALID;
    return SG_OK;
}

void echo_upper(unsigned char *buf, size_t len)
{
    /* ASCII only, never toupper(): the result must not depend on the locale. */
    for (size_t i = 0; i < len; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] = (unsigned char)(buf[i] - ('a' - 'A'));
}

void echo_warn_limited(struct echo_warn_limit *w, int64_t now, const char *what)
{
    if (w->last_ms && now - w->last_ms < WARN_INTERVAL_MS) {
        w->suppressed++;
        return;
    }
    if (w->suppressed)
        sg_warn("%s (and %llu more times in the last %d s)", what, (unsigned long long)w->suppressed,
                WARN_INTERVAL_MS / 1000);
    else
        sg_warn("%s", what);
    w->last_ms = now;
    w->suppressed = 0;
}

static void echo_destroy(void *p)
{
    struct echo_server *srv = p;
    if (!srv)
        return;
    while (srv->head)
        echo_conn_close(srv, srv->head);
    sg_evloop_close(&srv->loop);
    sg_wake_close(&srv->drain_fd);
    sg_close_listener(&srv->tcp_fd);
    sg_close_listener(&srv->udp_fd);
    free(srv->scratch);
    free(srv);
}

int echo_server_create(const struct echo_config *cfg, void **out, char *err, size_t errlen)
{
    struct echo_server *srv = NULL;
    struct sg_addr addr;
    int rc;

    *out = NULL;
    if (cfg->max_conns < 1) {
        snprintf(err, errlen, "max_conns must be at least 1");
        return SG_ERR_INVALID;
    }
    rc = sg_addr_parse(cfg->listen, &addr, err, errlen);
    if (rc != SG_OK)
        return rc;
    srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    srv->tcp_fd = srv->udp_fd = srv->drain_fd = -1;
    srv->mode = cfg->mode;
    srv->max_conns = cfg->max_conns;
    srv->idle_timeout_ms = (int64_t)cfg->idle_timeout_s * 1000;
    /* First, so that destroy() finds the loop either open or closed whatever fails next. */
    rc = sg_evloop_open(&srv->loop, err, errlen);
    if (rc != SG_OK)
        goto out;
    rc = sg_wake_open(&srv->drain_fd, err, errlen);
    if (rc != SG_OK)
        goto out;
    if (sg_evloop_add(&srv->loop, srv->drain_fd, EPOLLIN, &srv->drain_fd) < 0) {
        snprintf(err, errlen, "epoll_ctl add: %s", strerror(errno));
        rc = SG_ERR_SYS;
        goto out;
    }
    srv->scratch = malloc(ECHO_SCRATCH);
    if (!srv->scratch) {
        snprintf(err, errlen, "out of memory");
        rc = SG_ERR_NOMEM;
        goto out;
    }
    /* Each socket's own address inside srv is the token the loop dispatches on. */
    rc = sg_evloop_listen_tcp_udp(&srv->loop, &addr, &srv->tcp_fd, &srv->udp_fd, err, errlen);
    if (rc == SG_OK)
        srv->port = sg_local_port(srv->udp_fd);
out:
    if (rc != SG_OK)
        echo_destroy(srv);
    else
        *out = srv;
    return rc;
}

static int echo_run(void *p)
{
    struct echo_server *srv = p;
    struct epoll_event evs[MAX_EVENTS];

    while (!srv->loop.stopping) {
        /* Until the next idle expiry, -1 for none; the loop shortens it while accepts are paused. */
        int n = sg_evloop_wait(&srv->loop, evs, MAX_EVENTS, echo_conns_expire(srv, sg_now_ms()));
        int64_t now = sg_now_ms();
        int drain_now = 0;
        if (n < 0)
            return SG_ERR_SYS;
        /*
         * Only the connection being handled is ever closed inside this
         * batch, and epoll reports each descriptor at most once per call,
         * so no later event of the batch can point to a freed connection.
         */
        for (int i = 0; i < n; i++) {
            void *token = evs[i].data.ptr;
            if (token == &srv->tcp_fd) {
                echo_accept_ready(srv, now);
            } else if (token == &srv->drain_fd) {
                sg_wake_drain(srv->drain_fd);
                drain_now = 1; /* after the batch: it closes other connections than the one handled */
            } else if (token == &srv->udp_fd) {
                echo_udp_ready(srv);
            } else {
                echo_conn_ready(srv, token, evs[i].events, now);
            }
        }
        if (drain_now)
            echo_conns_drain(srv);
    }
    return SG_OK;
}

static void echo_stop(void *p)
{
    sg_evloop_stop(&((struct echo_server *)p)->loop);
}

/* Wakes the loop to close its idle connections; the others close once answered (echo_conn_ready). */
static void echo_drain(void *p)
{
    sg_wake_signal(((struct echo_server *)p)->drain_fd);
}

static int echo_listen_fd(void *p)
{
    return ((struct echo_server *)p)->tcp_fd;
}

const struct sg_service_ops echo_service_ops = {
    .name = "echo",
    .run = echo_run,
    .stop = echo_stop,
    .destroy = echo_destroy,
    .listen_fd = echo_listen_fd,
    .drain = echo_drain,
};
