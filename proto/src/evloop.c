/* evloop.c - the epoll set, the stop request and the pausing of accepts shared by the event-loop services. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sockgate/accept.h"
#include "sockgate/error.h"
#include "sockgate/evloop.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "sockgate/wake.h"

int sg_evloop_open(struct sg_evloop *l, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->wake_fd = l->listen_fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0 || sg_wake_open(&l->wake_fd, err, errlen) != SG_OK ||
        sg_evloop_add(l, l->wake_fd, EPOLLIN, &l->wake_fd) < 0) {
        snprintf(err, errlen, "event loop set-up: %s", strerror(errno));
        sg_evloop_close(l);
        return SG_ERR_SYS;
    }
    return SG_OK;
}

void sg_evloop_close(struct sg_evloop *l)
{
    if (l->epfd >= 0)
        close(l->epfd);
    l->epfd = -1;
    sg_wake_close(&l->wake_fd);
}

int sg_evloop_add(struct sg_evloop *l, int fd, uint32_t events, void *token)
{
    struct epoll_event ev = {.events = events, .data.ptr = token};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int sg_evloop_set_events(struct sg_evloop *l, int fd, uint32_t *current, uint32_t events, void *token)
{
    struct epoll_event ev = {.events = events, .data.ptr = token};
    if (*current == events)
        return 0;
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
        sg_error("epoll_ctl: %s", strerror(errno));
        return -1;
    }
    *current = events;
    return 0;
}

int sg_evloop_add_listener(struct sg_evloop *l, int fd, void *token)
{
    l->listen_fd = fd;
    l->listen_token = token;
    return sg_evloop_add(l, fd, EPOLLIN, token);
}

int sg_evloop_listen_tcp_udp(struct sg_evloop *l, const struct sg_addr *addr, int *tcp_fd, int *udp_fd, char *err,
                             size_t errlen)
{
    int rc = sg_listen_tcp_udp(addr, tcp_fd, udp_fd, err, errlen);
    if (rc != SG_OK)
        return rc;
    if (sg_evloop_add_listener(l, *tcp_fd, tcp_fd) < 0 || sg_evloop_add(l, *udp_fd, EPOLLIN, udp_fd) < 0) {
        snprintf(err, errlen, "event loop set-up: %s", strerror(errno));
        return SG_ERR_SYS;
    }
    return SG_OK;
}

/* Turns the listener on or off in epoll (off while accept() is out of descriptors). */
static void set_accepting(struct sg_evloop *l, int on)
{
    struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.ptr = l->listen_token};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->listen_fd, &ev) < 0)
        sg_error("epoll_ctl on the listener: %s", strerror(errno));
}

/* Resumes accepting when its pause is over; returns timeout_ms shortened to the end of the pause. */
static int accept_timeout(struct sg_evloop *l, int timeout_ms)
{
    int64_t left;
    if (!l->accept_resume_ms)
        return timeout_ms;
    left = l->accept_resume_ms - sg_now_ms();
    if (left <= 0) {
        l->accept_resume_ms = 0;
        set_accepting(l, 1);
        return timeout_ms;
    }
    return timeout_ms < 0 || left < timeout_ms ? (int)left : timeout_ms;
}

int sg_evloop_wait(struct sg_evloop *l, struct epoll_event *evs, int max, int timeout_ms)
{
    int n = epoll_wait(l->epfd, evs, max, accept_timeout(l, timeout_ms));
    int kept = 0;
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        sg_error("epoll_wait: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == &l->wake_fd) {
            sg_wake_drain(l->wake_fd); /* a failure is logged; the loop stops anyway */
            l->stopping = 1;
        } else {
            evs[kept++] = evs[i];
        }
    }
    return kept;
}

int sg_evloop_accept(struct sg_evloop *l, int64_t now)
{
    int fd = sg_accept(l->listen_fd, NULL, NULL);
    if (fd == SG_ACCEPT_PAUSE) {
        l->accept_resume_ms = now + SG_ACCEPT_PAUSE_MS;
        set_accepting(l, 0);
    }
    return fd < 0 ? -1 : fd;
}

void sg_evloop_stop(struct sg_evloop *l)
{
    sg_wake_signal(l->wake_fd);
}
