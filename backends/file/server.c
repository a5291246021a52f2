/*
 * server.c - the file service's life: create, the accept loop, stop and
 * destroy. One thread per connection: a request may block for a long time in
 * fsync or on a slow disk, and a thread keeps that from stalling the others;
 * --max-conns bounds the threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/wake.h"

/* How long the loop sleeps when accept() is out of descriptors, and how often finished threads are joined. */
#define ACCEPT_PAUSE_MS 100
#define REAP_INTERVAL_MS 1000

void file_config_defaults(struct file_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = FILE_DEFAULT_LISTEN;
    cfg->root = FILE_DEFAULT_ROOT;
    cfg->max_size = FILE_DEFAULT_MAX_SIZE;
    cfg->max_conns = FILE_DEFAULT_MAX_CONNS;
    cfg->io_timeout_s = FILE_DEFAULT_IO_TIMEOUT_S;
    cfg->idle_timeout_s = FILE_DEFAULT_IDLE_TIMEOUT_S;
    cfg->session_expiry_s = FILE_DEFAULT_SESSION_EXPIRY_S;
    cfg->max_sessions = FILE_DEFAULT_MAX_SESSIONS;
}

static void file_destroy(void *p)
{
    struct file_server *srv = p;
    if (!srv)
        return;
    /* run() joined every connection thread before returning; only their records are left. */
    while (srv->conns) {
        struct file_conn *c = srv->conns;
        srv->conns = c->next;
        free(c);
    }
    sg_close_listener(&srv->listen_fd);
    sg_wake_close(&srv->wake_fd);
    sg_wake_close(&srv->drain_fd);
    if (srv->has_sessions)
        file_sessions_close(&srv->sessions);
    if (srv->has_store)
        file_store_close(&srv->store);
    if (srv->has_lock)
        pthread_mutex_destroy(&srv->lock);
    free(srv);
}

int file_server_create(const struct file_config *cfg, void **out, char *err, size_t errlen)
{
    struct file_server *srv = NULL;
    struct sg_addr addr;
    int rc;

    *out = NULL;
    if (cfg->max_conns < 1 || !cfg->root || !*cfg->root || cfg->session_expiry_s < 1 || cfg->max_sessions < 1) {
        snprintf(err, errlen, "max_conns, session_expiry_s and max_sessions must be at least 1 and root must be set");
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
    srv->listen_fd = srv->wake_fd = srv->drain_fd = -1;
    srv->max_size = cfg->max_size;
    srv->max_conns = cfg->max_conns;
    srv->io_timeout_ms = cfg->io_timeout_s ? (int64_t)cfg->io_timeout_s * 1000 : -1;
    srv->idle_timeout_ms = cfg->idle_timeout_s ? (int64_t)cfg->idle_timeout_s * 1000 : -1;
    if (pthread_mutex_init(&srv->lock, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex");
        rc = SG_ERR_SYS;
        goto out;
    }
    srv->has_lock = 1;
    /* Bind first: a busy or bad address must not leave a new root directory behind. */
    rc = sg_listen(&addr, SOCK_STREAM, &srv->listen_fd, err, errlen);
    if (rc != SG_OK)
        goto out;
    srv->has_store = 1;
    rc = file_store_open(&srv->store, cfg->root, err, errlen);
    if (rc != SG_OK)
        goto out;
    srv->has_sessions = 1;
    rc = file_sessions_open(&srv->sessions, &srv->store, (int64_t)cfg->session_expiry_s, cfg->max_sessions, err,
                            errlen);
    if (rc != SG_OK)
        goto out;
    rc = sg_wake_open(&srv->wake_fd, err, errlen);
    if (rc == SG_OK)
        rc = sg_wake_open(&srv->drain_fd, err, errlen);
out:
    if (rc != SG_OK)
        file_destroy(srv);
    else
        *out = srv;
    return rc;
}

/* Joins the threads that finished and frees their records. */
static void reap(struct file_server *srv)
{
    struct file_conn **pp = &srv->conns, *done = NULL;
    pthread_mutex_lock(&srv->lock);
    while (*pp) {
        struct file_conn *c = *pp;
        if (c->done) {
            *pp = c->next;
            c->next = done;
            done = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    while (done) {
        struct file_conn *c = done;
        done = c->next;
        pthread_join(c->thread, NULL);
        free(c);
    }
}

/* Tells a client over the limit why it is turned away (best effort, never blocks), then closes it. */
static void turn_away(int fd, const char *why)
{
    json_t *h = sg_frame_error_header(SG_ERR_BUSY, why, NULL);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (h && sg_frame_encode_header(h, 0, &buf, &len) == SG_OK &&
        send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)len)
        shutdown(fd, SHUT_WR);
    free(buf);
    json_decref(h);
    close(fd);
}

/* Accepts what the listener has queued; returns ms to pause accepting (out of descriptors), else 0. */
static int accept_ready(struct file_server *srv)
{
    for (;;) {
        unsigned live;
        int one = 1, fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                sg_warn("accept: %s; pausing accepts for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
                return ACCEPT_PAUSE_MS;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                sg_warn("accept: %s", strerror(errno));
            return 0;
        }
        /* The response header and a sendfile body go out as two writes: Nagle must not hold the second. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_mutex_lock(&srv->lock);
        live = srv->nconns;
        pthread_mutex_unlock(&srv->lock);
        if (live >= srv->max_conns) {
            turn_away(fd, "too many connections; try again later");
            continue;
        }
        if (file_conn_start(srv, fd) != SG_OK) {
            sg_warn("cannot start a connection thread: %s", strerror(errno));
            turn_away(fd, "the server cannot take another connection now");
        }
    }
}

/* Wakes every connection thread (their reads and writes fail) and joins them all. */
static void stop_conns(struct file_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    for (struct file_conn *c = srv->conns; c; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&srv->lock);
    for (struct file_conn *c = srv->conns; c; c = c->next)
        pthread_join(c->thread, NULL);
    while (srv->conns) {
        struct file_conn *c = srv->conns;
        srv->conns = c->next;
        free(c);
    }
}

static int file_run(void *p)
{
    struct file_server *srv = p;
    int pause_ms = 0, rc = SG_OK;

    for (;;) {
        struct pollfd fds[2] = {{.fd = srv->wake_fd, .events = POLLIN}, {.fd = srv->listen_fd, .events = POLLIN}};
        int n = poll(fds, pause_ms ? 1 : 2, pause_ms ? pause_ms : REAP_INTERVAL_MS);
        pause_ms = 0;
        if (n < 0 && errno != EINTR) {
            sg_error("poll: %s", strerror(errno));
            rc = SG_ERR_SYS;
            break;
        }
        if (n > 0 && fds[0].revents)
            break;
        reap(srv);
        if (n > 0 && fds[1].revents)
            pause_ms = accept_ready(srv);
    }
    stop_conns(srv);
    return rc;
}

static void file_stop(void *p)
{
    sg_wake_signal(((struct file_server *)p)->wake_fd);
}

/* Idle connections close now (they wait on drain_fd between requests), busy ones after their answer. */
static void file_drain(void *p)
{
    atomic_store(&((struct file_server *)p)->is_draining, 1);
    sg_wake_signal(((struct file_server *)p)->drain_fd);
}

static int file_listen_fd(void *p)
{
    return ((struct file_server *)p)->listen_fd;
}

const struct sg_service_ops file_service_ops = {
    .name = "file",
    .run = file_run,
    .stop = file_stop,
    .destroy = file_destroy,
    .listen_fd = file_listen_fd,
    .drain = file_drain,
};
