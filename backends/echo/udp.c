/* udp.c - the echo service's UDP side: every datagram answered to its sender, with a reflection guard. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "echo_loop.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "udp_guard.h"

/* Datagrams answered per wake-up before TCP clients get their turn. */
#define UDP_BATCH 64

void echo_udp_ready(struct echo_server *srv)
{
    unsigned char *buf = srv->scratch;
    for (int i = 0; i < UDP_BATCH; i++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        /* MSG_TRUNC returns the real size: a datagram larger than the buffer is dropped, not cut. */
        ssize_t n = recvfrom(srv->udp_fd, buf, ECHO_SCRATCH, MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            /* An ICMP error queued for an earlier reply: it concerns that peer only. */
            sg_debug("recvfrom: %s", strerror(errno));
            continue;
        }
        if ((size_t)n > ECHO_SCRATCH)
            continue;
        if (!udp_reply_allowed((struct sockaddr *)&from, srv->port)) {
            char who[SG_ADDR_STRLEN], line[SG_ADDR_STRLEN + 64];
            sg_addr_format((struct sockaddr *)&from, fromlen, who, sizeof who);
            snprintf(line, sizeof line, "dropped a UDP datagram from %s (reflection guard)", who);
            echo_warn_limited(&srv->warn_udp_drop, sg_now_ms(), line);
            continue;
        }
        if (srv->mode == ECHO_MODE_UPPER)
            echo_upper(buf, (size_t)n);
        /* best effort: UDP may lose the reply anyway; a full socket buffer drops it */
        if (sendto(srv->udp_fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&from,
                   fromlen) < 0)
            sg_debug("sendto: %s", strerror(errno));
    }
}
