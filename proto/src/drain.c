/* drain.c - the idle wait of a connection thread that closes the connection when its service starts draining. */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "sockgate/drain.h"
#include "sockgate/net.h"

int sg_drain_has_input(int fd)
{
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    /* EOF and errors count as input: the read that follows reports them. */
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

enum sg_drain_wait sg_drain_wait(int fd, int drain_fd, int64_t deadline_ms)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = drain_fd, .events = POLLIN}};
        int timeout = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - sg_now_ms();
            timeout = left <= 0 ? 0 : left > 60000 ? 60000 : (int)left; /* 0: one look at what is there */
        }
        if (poll(p, drain_fd >= 0 ? 2 : 1, timeout) < 0) {
            if (errno == EINTR)
                continue;
            return SG_DRAIN_ERROR;
        }
        if (p[0].revents)
            return SG_DRAIN_READABLE;
        /* Checked once more after the poll: a request that came in between is answered, not cut. */
        if (p[1].revents)
            return sg_drain_has_input(fd) ? SG_DRAIN_READABLE : SG_DRAIN_CLOSE;
        if (timeout == 0)
            return SG_DRAIN_TIMEOUT;
    }
}
