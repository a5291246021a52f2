/* accept.c - one accept(2) with the retry and back-off rules shared by every TCP service. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "sockgate/accept.h"
#include "sockgate/log.h"

int sg_accept(int lfd, struct sockaddr *peer, socklen_t *peerlen)
{
    for (;;) {
        int one = 1;
        int fd = accept4(lfd, peer, peer ? peerlen : NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            /* best effort: every service answers in small frames that must not wait for a delayed ACK */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return fd;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return SG_ACCEPT_NONE;
        /* The connection was reset before we took it, or a signal came: the next one may be fine. */
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        /* EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued and the listener readable. */
        sg_warn("accept: %s; pausing accepts for %d ms", strerror(errno), SG_ACCEPT_PAUSE_MS);
        return SG_ACCEPT_PAUSE;
    }
}
