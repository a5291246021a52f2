/* accept.h - taking one connection off a listener, with the errors every server treats alike. */
#ifndef SOCKGATE_ACCEPT_H
#define SOCKGATE_ACCEPT_H

#include <sys/socket.h>

/* How long a server stops accepting once the process is out of descriptors or memory. */
#define SG_ACCEPT_PAUSE_MS 100

/* sg_accept's results other than a descriptor. */
#define SG_ACCEPT_NONE (-1)  /* the queue is empty */
#define SG_ACCEPT_PAUSE (-2) /* out of descriptors or memory: stop accepting for SG_ACCEPT_PAUSE_MS */

/*
 * Accepts one connection from the non-blocking listener lfd as a non-blocking,
 * close-on-exec socket with TCP_NODELAY, storing the peer's address in peer
 * and *peerlen when peer is not NULL. Returns the descriptor (the caller owns
 * it), SG_ACCEPT_NONE or SG_ACCEPT_PAUSE (already logged). Errors that
 * concern one aborted connection are skipped; any other error pauses, since
 * the listener stays readable and retrying at once would spin on it.
 */
int sg_accept(int lfd, struct sockaddr *peer, socklen_t *peerlen);

#endif
