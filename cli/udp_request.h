/* udp_request.h - one request/reply over a connected UDP socket, with a timeout and retries. */
#ifndef SOCKGATE_CLI_UDP_REQUEST_H
#define SOCKGATE_CLI_UDP_REQUEST_H

#include <stddef.h>

/* Any reply length is accepted. */
#define UDP_ANY_LENGTH ((size_t)-1)

/*
 * Sends req[0..len) on the connected UDP socket fd and waits up to
 * timeout_ms for a reply, sending again up to retries more times when none
 * comes (UDP loses datagrams). Datagrams already queued before the send are
 * dropped first, so a late reply to an earlier request is not taken for this
 * one; a reply whose length is not want_len (unless UDP_ANY_LENGTH) is
 * ignored too. The reply lands in reply (cap bytes; longer ones are cut) and
 * its length in *got. Returns SG_OK, SG_ERR_TIMEOUT, SG_ERR_REFUSED (ICMP
 * port unreachable), SG_ERR_PROTO (only replies of the wrong length came) or
 * SG_ERR_SYS (errno set).
 */
int udp_request(int fd, const void *req, size_t len, void *reply, size_t cap, size_t *got, size_t want_len,
                int timeout_ms, int retries);

#endif
