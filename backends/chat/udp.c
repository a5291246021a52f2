/* udp.c - the chat's UDP side: datagrams in (checked, counted, recorded) and replies out. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "chat_int.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/text.h"
#include "echo/udp_guard.h"

#define UDP_BATCH 64 /* datagrams per wake-up, so a flood cannot starve the TCP side */

/* Returns 1 when the text may be recorded: UTF-8 without NUL (U+0000 cannot travel in a frame header). */
static int text_ok(const uint8_t *buf, size_t len)
{
    return memchr(buf, 0, len) == NULL && sg_utf8_valid(buf, len);
}

/* Checks one datagram of real length len (possibly over what was read) and records it. */
static void take_datagram(struct chat_server *srv, const struct sockaddr *src, socklen_t srclen, size_t len)
{
    char addr[SG_ADDR_STRLEN];
    int64_t when = chat_unix_ms();
    uint64_t seq;
    int rc;

    if (!udp_reply_allowed(src, srv->port)) {
        srv->stats.dropped_source++;
        return;
    }
    if (len > CHAT_MAX_TEXT) {
        srv->stats.dropped_too_large++;
        return;
    }
    if (len == 0) {
        srv->stats.dropped_empty++;
        return;
    }
    if (!text_ok(srv->dgram, len)) {
        srv->stats.dropped_invalid_utf8++;
        return;
    }
    sg_addr_format(src, srclen, addr, sizeof addr);
    rc = chat_record(srv, 1, addr, (const char *)srv->dgram, len, when, sg_now_ms(), &seq);
    if (rc != SG_OK) {
        chat_warn_limited(srv, "message from %s not recorded: %s", addr, sg_strerror(rc));
        return;
    }
    /* The peer enters the table only once its message is recorded: reply is for those who wrote. */
    peers_touch(&srv->peers, addr, src, srclen, when);
    srv->stats.received++;
}

void udp_ready(struct chat_server *srv)
{
    for (int i = 0; i < UDP_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof ss;
        /* MSG_TRUNC makes recvfrom return the datagram's real size, so oversize ones are seen as such. */
        ssize_t n = recvfrom(srv->udp_fd, srv->dgram, CHAT_MAX_TEXT + 1, MSG_TRUNC | MSG_DONTWAIT,
                             (struct sockaddr *)&ss, &sslen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            /* ICMP errors from earlier replies surface here (ECONNREFUSED ...): not ours to stop on. */
            chat_warn_limited(srv, "recvfrom: %s", strerror(errno));
            continue;
        }
        take_datagram(srv, (const struct sockaddr *)&ss, sslen, (size_t)n);
    }
}

int udp_send_reply(struct chat_server *srv, const struct chat_peer *peer, const char *text, size_t len)
{
    for (;;) {
        ssize_t n = sendto(srv->udp_fd, text, len, MSG_DONTWAIT, (const struct sockaddr *)&peer->ss, peer->sslen);
        if (n >= 0)
            return SG_OK;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
            return SG_ERR_BUSY;
        return SG_ERR_SYS;
    }
}
