/* udp_request.c - a UDP exchange that survives lost datagrams and ignores stale replies. */
#include "udp_request.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "sockgate/error.h"
#include "sockgate/net.h"

#define DRAIN_MAX 256 /* bounded: a peer flooding us cannot keep us draining forever */

/* Drops the datagrams already waiting on fd (replies to earlier, timed-out requests). */
static void drain(int fd)
{
    char sink[1];
    for (int i = 0; i < DRAIN_MAX; i++)
        if (recv(fd, sink, sizeof sink, MSG_DONTWAIT | MSG_TRUNC) < 0 && errno != EINTR)
            return;
}

static int errno_to_err(void)
{
    return (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) ? SG_ERR_REFUSED
                                                                                     : SG_ERR_SYS;
}

int udp_request(int fd, const void *req, size_t len, void *reply, size_t cap, size_t *got, size_t want_len,
                int timeout_ms, int retries)
{
    int wrong_length = 0;
    *got = 0;
    drain(fd);
    for (int attempt = 0; attempt <= retries; attempt++) {
        int64_t deadline = sg_now_ms() + timeout_ms;
        if (send(fd, req, len, MSG_NOSIGNAL) < 0) {
            if (errno == EINTR) {
                attempt--;
                continue;
            }
            return errno_to_err();
        }
        for (;;) {
            ssize_t n;
            int rc = sg_wait_fd(fd, POLLIN, deadline);
            if (rc == SG_ERR_TIMEOUT)
                break;
            if (rc != SG_OK)
                return rc;
            n = recv(fd, reply, cap, MSG_DONTWAIT | MSG_TRUNC);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    continue;
                return errno_to_err();
            }
            if (want_len != UDP_ANY_LENGTH && (size_t)n != want_len) {
                wrong_length = 1;
                continue;
            }
            *got = (size_t)n < cap ? (size_t)n : cap;
            return SG_OK;
        }
    }
    return wrong_length ? SG_ERR_PROTO : SG_ERR_TIMEOUT;
}
