/* test_evloop.c - the wake-up descriptor, sg_accept and the stoppable epoll loop with paused accepts. */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/accept.h"
#include "sockgate/error.h"
#include "sockgate/evloop.h"
#include "sockgate/net.h"
#include "sockgate/wake.h"

#define LONG_WAIT_MS 10000 /* only bounds a broken run: a passing one returns far sooner */

static int is_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* Opens a TCP listener on 127.0.0.1:0 and returns it; *port gets its port. */
static int listener(uint16_t *port)
{
    struct sg_addr a;
    char err[256];
    int fd = -1;
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_listen(&a, SOCK_STREAM, &fd, err, sizeof err), SG_OK);
    *port = sg_local_port(fd);
    return fd;
}

/* Connects a client to 127.0.0.1:port and returns it. */
static int client(uint16_t port)
{
    struct sg_addr a;
    char err[256], text[32];
    int fd = -1;
    snprintf(text, sizeof text, "127.0.0.1:%u", port);
    CHECK_INT_EQ(sg_addr_parse(text, &a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_connect(&a, SOCK_STREAM, LONG_WAIT_MS, &fd, err, sizeof err), SG_OK);
    return fd;
}

static void test_wake(void)
{
    char err[256];
    int fd = -1;
    CHECK_INT_EQ(sg_wake_open(&fd, err, sizeof err), SG_OK);
    CHECK(fd >= 0);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    CHECK(!is_readable(fd));
    sg_wake_signal(fd);
    sg_wake_signal(fd);
    CHECK(is_readable(fd)); /* and stays so for every watcher until drained */
    CHECK(is_readable(fd));
    sg_wake_drain(fd);
    CHECK(!is_readable(fd));
    sg_wake_drain(fd); /* draining an idle one is harmless */
    CHECK(!is_readable(fd));
    sg_wake_close(&fd);
    CHECK_INT_EQ(fd, -1);
    sg_wake_close(&fd);
}

static void test_accept(void)
{
    uint16_t port;
    int lfd = listener(&port), cfd, sfd, nodelay = 0;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer, olen = sizeof nodelay;

    CHECK_INT_EQ(sg_accept(lfd, NULL, NULL), SG_ACCEPT_NONE);
    cfd = client(port);
    CHECK(sg_wait_fd(lfd, POLLIN, sg_deadline_after(LONG_WAIT_MS)) == SG_OK);
    sfd = sg_accept(lfd, (struct sockaddr *)&peer, &plen);
    CHECK(sfd >= 0);
    CHECK_INT_EQ(sg_addr_port((struct sockaddr *)&peer), sg_local_port(cfd));
    CHECK(fcntl(sfd, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(sfd, F_GETFD) & FD_CLOEXEC);
    CHECK(getsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &olen) == 0 && nodelay);
    CHECK_INT_EQ(sg_accept(lfd, NULL, NULL), SG_ACCEPT_NONE);
    close(sfd);
    close(cfd);
    close(lfd);
}

static void *stop_later(void *p)
{
    usleep(20000);
    sg_evloop_stop(p);
    return NULL;
}

static void test_loop_events_and_stop(void)
{
    struct sg_evloop l;
    struct epoll_event evs[8];
    char err[256];
    uint16_t port;
    int lfd = listener(&port), cfd, sfd, token_l, token_c, n;
    uint32_t current = EPOLLIN;
    pthread_t t;

    CHECK_INT_EQ(sg_evloop_open(&l, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_evloop_add_listener(&l, lfd, &token_l), 0);
    CHECK_INT_EQ(sg_evloop_wait(&l, evs, 8, 0), 0);
    cfd = client(port);
    n = sg_evloop_wait(&l, evs, 8, LONG_WAIT_MS);
    CHECK_INT_EQ(n, 1);
    CHECK(evs[0].data.ptr == &token_l);
    sfd = sg_evloop_accept(&l, sg_now_ms());
    CHECK(sfd >= 0);
    CHECK_INT_EQ(sg_evloop_accept(&l, sg_now_ms()), -1);

    /* A connection: EPOLLOUT is ready at once; set_events records the mask and skips a repeat. */
    CHECK_INT_EQ(sg_evloop_add(&l, sfd, EPOLLIN, &token_c), 0);
    CHECK_INT_EQ(sg_evloop_set_events(&l, sfd, &current, EPOLLOUT, &token_c), 0);
    CHECK_INT_EQ(current, EPOLLOUT);
    CHECK_INT_EQ(sg_evloop_set_events(&l, sfd, &current, EPOLLOUT, &token_c), 0);
    CHECK_INT_EQ(sg_evloop_set_events(&l, -1, &current, EPOLLIN, &token_c), -1); /* refused: mask kept */
    CHECK_INT_EQ(current, EPOLLOUT);

    /* A stop in the same batch as another event: that event is still handed over, the stop is not. */
    sg_evloop_stop(&l);
    n = sg_evloop_wait(&l, evs, 8, LONG_WAIT_MS);
    CHECK_INT_EQ(n, 1);
    CHECK(evs[0].data.ptr == &token_c);
    CHECK_INT_EQ(l.stopping, 1);

    /* A stop from another thread wakes a wait with no other events (the request was drained). */
    l.stopping = 0;
    CHECK_INT_EQ(sg_evloop_set_events(&l, sfd, &current, EPOLLIN, &token_c), 0);
    CHECK_INT_EQ(pthread_create(&t, NULL, stop_later, &l), 0);
    n = sg_evloop_wait(&l, evs, 8, LONG_WAIT_MS);
    pthread_join(t, NULL);
    CHECK_INT_EQ(n, 0);
    CHECK_INT_EQ(l.stopping, 1);
    CHECK(!is_readable(l.wake_fd));

    sg_evloop_close(&l);
    CHECK_INT_EQ(l.epfd, -1);
    CHECK_INT_EQ(l.wake_fd, -1);
    sg_evloop_close(&l);
    close(sfd);
    close(cfd);
    close(lfd);
}

/* One port for TCP and UDP, both watched: a datagram and a connection each come back with their own token. */
static void test_loop_tcp_udp(void)
{
    struct sg_evloop l;
    struct epoll_event evs[4];
    struct sg_addr a;
    char err[256];
    int tcp_fd = -1, udp_fd = -1, cfd, ufd, n;
    uint16_t port;

    CHECK_INT_EQ(sg_evloop_open(&l, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_addr_parse("127.0.0.1:0", &a, err, sizeof err), SG_OK);
    CHECK_INT_EQ(sg_evloop_listen_tcp_udp(&l, &a, &tcp_fd, &udp_fd, err, sizeof err), SG_OK);
    port = sg_local_port(tcp_fd);
    CHECK(port != 0);
    CHECK_INT_EQ(sg_local_port(udp_fd), port);
    ((struct sockaddr_in *)&a.ss)->sin_port = htons(port);
    CHECK_INT_EQ(sg_connect(&a, SOCK_DGRAM, LONG_WAIT_MS, &ufd, err, sizeof err), SG_OK);
    CHECK_INT_EQ(send(ufd, "x", 1, 0), 1);
    n = sg_evloop_wait(&l, evs, 4, LONG_WAIT_MS);
    CHECK_INT_EQ(n, 1);
    CHECK(evs[0].data.ptr == &udp_fd);
    CHECK_INT_EQ(recv(udp_fd, err, sizeof err, 0), 1);
    cfd = client(port);
    n = sg_evloop_wait(&l, evs, 4, LONG_WAIT_MS);
    CHECK_INT_EQ(n, 1);
    CHECK(evs[0].data.ptr == &tcp_fd);
    close(cfd);
    close(ufd);
    close(tcp_fd);
    close(udp_fd);
    sg_evloop_close(&l);
}

/*
 * Out of descriptors, in a child with a lowered limit: accept pauses, the
 * listener is unwatched, and a later wait watches it again, so the queued
 * connection is taken once descriptors are back.
 */
static void test_loop_pauses_accepts(void)
{
    pid_t pid = fork();
    int status = 0;
    CHECK(pid >= 0);
    if (pid == 0) {
        struct sg_evloop l;
        struct epoll_event evs[4];
        struct rlimit lim, low;
        char err[256];
        uint16_t port;
        int lfd = listener(&port), cfd, token, fd, n;
        int64_t resume_ms;
        CHECK_INT_EQ(sg_evloop_open(&l, err, sizeof err), SG_OK);
        CHECK_INT_EQ(sg_evloop_add_listener(&l, lfd, &token), 0);
        cfd = client(port);
        CHECK_INT_EQ(sg_evloop_wait(&l, evs, 4, LONG_WAIT_MS), 1);
        CHECK_INT_EQ(getrlimit(RLIMIT_NOFILE, &lim), 0);
        low = lim;
        low.rlim_cur = (rlim_t)cfd + 1; /* every descriptor number is taken up to the limit */
        CHECK_INT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
        CHECK_INT_EQ(sg_evloop_accept(&l, sg_now_ms()), -1);
        CHECK(l.accept_resume_ms > 0);
        CHECK_INT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
        /*
         * Paused: the still-queued connection is not reported until the pause
         * ends. Checked only when the wait ended before the pause did, which
         * a loaded machine may not grant (the pause is 100 ms).
         */
        resume_ms = l.accept_resume_ms;
        n = sg_evloop_wait(&l, evs, 4, 0);
        if (sg_now_ms() < resume_ms)
            CHECK_INT_EQ(n, 0);
        else
            fprintf(stderr, "  (the pause was over before it could be checked)\n");
        do
            n = sg_evloop_wait(&l, evs, 4, LONG_WAIT_MS);
        while (n == 0 && l.accept_resume_ms);
        CHECK_INT_EQ(n, 1);
        CHECK(evs[0].data.ptr == &token);
        CHECK_INT_EQ(l.accept_resume_ms, 0);
        fd = sg_evloop_accept(&l, sg_now_ms());
        CHECK(fd >= 0);
        close(fd);
        close(cfd);
        close(lfd);
        sg_evloop_close(&l);
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_INT_EQ(WEXITSTATUS(status), 0);
}

int main(void)
{
    RUN_TEST(test_wake);
    RUN_TEST(test_accept);
    RUN_TEST(test_loop_events_and_stop);
    RUN_TEST(test_loop_tcp_udp);
    RUN_TEST(test_loop_pauses_accepts);
    return TESTS_DONE();
}
