/* server.c - the time service: a UDP loop that answers batches of formats with the current time. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "echo/udp_guard.h"

#define BATCH 32            /* datagrams taken per system call */
#define STOP_POLL_MS 500    /* the longest a stop can go unnoticed if its wake-up is lost */

/* One datagram slot of a batch: the request as received and the reply made for it. */
struct slot {
    /* One byte more than the longest format: a datagram that fills it is over the limit. */
    uint8_t req[TIME_MAX_FORMAT + 1];
    char reply[TIME_REPLY_BUF];
    struct sockaddr_storage from;
};

struct time_server {
    int utc;
    int fd;
    uint16_t port;
    atomic_int stopping;
    time_t cached_sec;          /* the second cached_tm describes; -1 before the first request */
    struct tm cached_tm;
    int64_t last_drop_warn_ms;
    struct slot slots[BATCH];
    struct mmsghdr in[BATCH];
    struct iovec in_iov[BATCH];
    struct mmsghdr out[BATCH];
    struct iovec out_iov[BATCH];
};

void time_config_defaults(struct time_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = TIME_DEFAULT_LISTEN;
}

static void time_destroy(void *p)
{
    struct time_server *srv = p;
    if (!srv)
        return;
    sg_close_listener(&srv->fd);
    free(srv);
}

int time_server_create(const struct time_config *cfg, void **out, char *err, size_t errlen)
{
    struct time_server *srv = NULL;
    struct sg_addr addr;
    struct timeval tv = {.tv_sec = 0, .tv_usec = STOP_POLL_MS * 1000};
    int rc;

    *out = NULL;
    rc = sg_addr_parse(cfg->listen, &addr, err, errlen);
    if (rc != SG_OK)
        return rc;
    srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    srv->utc = cfg->utc;
    srv->cached_sec = -1;
    atomic_init(&srv->stopping, 0);
    rc = sg_listen(&addr, SOCK_DGRAM, &srv->fd, err, errlen);
    if (rc != SG_OK)
        goto out;
    srv->port = sg_local_port(srv->fd);
    /*
     * The loop blocks in recvmmsg: two system calls per batch, as few as a
     * bare blocking echo loop. stop() wakes it with shutdown(); the receive
     * timeout is only a safety net so a stop is seen within STOP_POLL_MS.
     */
    if (sg_set_nonblock(srv->fd, 0) != SG_OK ||
        setsockopt(srv->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
        snprintf(err, errlen, "socket set-up: %s", strerror(errno));
        rc = SG_ERR_SYS;
        goto out;
    }
    if (!cfg->utc)
        tzset(); /* reads TZ once, here, rather than on the first request */
    for (int i = 0; i < BATCH; i++) {
        srv->in_iov[i].iov_base = srv->slots[i].req;
        srv->in_iov[i].iov_len = sizeof srv->slots[i].req;
    }
    rc = SG_OK;
out:
    if (rc != SG_OK) {
        sg_close_listener(&srv->fd);
        free(srv);
    } else {
        *out = srv;
    }
    return rc;
}

/* Returns t broken down, recomputed only when the second changes (t is the current time). */
static const struct tm *now_tm(struct time_server *srv, time_t t)
{
    if (t != srv->cached_sec) {
        if (srv->utc)
            gmtime_r(&t, &srv->cached_tm);
        else
            localtime_r(&t, &srv->cached_tm);
        srv->cached_sec = t;
    }
    return &srv->cached_tm;
}

/* Answers the n datagrams received into the slots; returns how many replies were sent. */
static int answer_batch(struct time_server *srv, int n)
{
    time_t now = time(NULL);
    const struct tm *tm = now_tm(srv, now);
    int m = 0, sent = 0;

    for (int i = 0; i < n; i++) {
        struct slot *s = &srv->slots[i];
        struct mmsghdr *in = &srv->in[i];
        size_t len = in->msg_len;
        int is_error;
        if (!udp_reply_allowed((struct sockaddr *)&s->from, srv->port)) {
            int64_t now_ms = sg_now_ms();
            if (now_ms - srv->last_drop_warn_ms >= 10000) {
                char who[SG_ADDR_STRLEN];
                sg_addr_format((struct sockaddr *)&s->from, in->msg_hdr.msg_namelen, who, sizeof who);
                sg_warn("dropped a UDP datagram from %s (reflection guard; said once per 10 s)", who);
                srv->last_drop_warn_ms = now_ms;
            }
            continue;
        }
        /* A truncated datagram was longer than the slot, which is longer than any valid format. */
        if (in->msg_hdr.msg_flags & MSG_TRUNC)
            len = sizeof s->req;
        srv->out_iov[m].iov_base = s->reply;
        srv->out_iov[m].iov_len = time_reply(s->req, len, tm, (long long)now, s->reply, &is_error);
        memset(&srv->out[m], 0, sizeof srv->out[m]);
        srv->out[m].msg_hdr.msg_name = &s->from;
        srv->out[m].msg_hdr.msg_namelen = in->msg_hdr.msg_namelen;
        srv->out[m].msg_hdr.msg_iov = &srv->out_iov[m];
        srv->out[m].msg_hdr.msg_iovlen = 1;
        m++;
    }
    while (sent < m) {
        int r = sendmmsg(srv->fd, srv->out + sent, (unsigned)(m - sent), MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* best effort: the reply to this sender is lost as UDP may lose it; go on with the rest */
            sg_debug("sendmmsg: %s", strerror(errno));
            r = 1;
        }
        sent += r;
    }
    return m;
}

static int time_run(void *p)
{
    struct time_server *srv = p;
    while (!atomic_load(&srv->stopping)) {
        int n;
        for (int i = 0; i < BATCH; i++) {
            memset(&srv->in[i].msg_hdr, 0, sizeof srv->in[i].msg_hdr);
            srv->in[i].msg_hdr.msg_name = &srv->slots[i].from;
            srv->in[i].msg_hdr.msg_namelen = sizeof srv->slots[i].from;
            srv->in[i].msg_hdr.msg_iov = &srv->in_iov[i];
            srv->in[i].msg_hdr.msg_iovlen = 1;
        }
        /* MSG_WAITFORONE: block for the first datagram, then take only what is already queued. */
        n = recvmmsg(srv->fd, srv->in, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            if (atomic_load(&srv->stopping))
                break;
            /* An ICMP error about an earlier reply concerns that peer only. */
            if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH)
                continue;
            sg_error("recvmmsg: %s", strerror(errno));
            return SG_ERR_SYS;
        }
        /* After stop()'s shutdown a receive may return an empty "datagram" with no sender. */
        if (n == 0 || atomic_load(&srv->stopping))
            break;
        answer_batch(srv, n);
    }
    return SG_OK;
}

static void time_stop(void *p)
{
    struct time_server *srv = p;
    atomic_store(&srv->stopping, 1);
    /*
     * Wakes a recvmmsg() blocked on the socket (Linux wakes receivers even on
     * an unconnected UDP socket, though it reports ENOTCONN). shutdown() is
     * async-signal-safe; the result does not matter because of STOP_POLL_MS.
     */
    (void)shutdown(srv->fd, SHUT_RD);
}

static int time_listen_fd(void *p)
{
    return ((struct time_server *)p)->fd;
}

const struct sg_service_ops time_service_ops = {
    .name = "time",
    .run = time_run,
    .stop = time_stop,
    .destroy = time_destroy,
    .listen_fd = time_listen_fd,
};
