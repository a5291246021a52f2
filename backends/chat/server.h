/* server.h - sockgate-chat as a library: the tutorial's UDP chat, with framed TCP ops for the gateway. */
#ifndef SOCKGATE_CHAT_SERVER_H
#define SOCKGATE_CHAT_SERVER_H

#include <stddef.h>

#include "sockgate/service.h"

#define CHAT_DEFAULT_LISTEN "127.0.0.1:9005"
#define CHAT_DEFAULT_HISTORY 1000u
#define CHAT_DEFAULT_MAX_PEERS 1024u
#define CHAT_DEFAULT_MAX_CONNS 1024u

/* Limits of the settings above (main.c refuses values outside them). */
#define CHAT_MAX_HISTORY 100000u
#define CHAT_MAX_PEERS 100000u
#define CHAT_MAX_CONNS 100000u

/*
 * The longest text of one message in bytes, as the tutorial's BUFSIZE: a
 * longer datagram is dropped and counted, a longer reply refused (too_large).
 */
#define CHAT_MAX_TEXT 1024u

/*
 * Settings of one chat server; listen is borrowed and must outlive
 * chat_server_create(). See docs/internals/chat.md for the wire protocol.
 */
struct chat_config {
    const char *listen;  /* "HOST:PORT" for UDP (chat clients) and TCP (framed ops); port 0 picks one */
    unsigned history;    /* messages kept for replay, 1..CHAT_MAX_HISTORY; also each subscriber's most lag */
    unsigned max_peers;  /* peers remembered for reply, 1..CHAT_MAX_PEERS; the least recently seen goes first */
    unsigned max_conns;  /* TCP connections (subscribers and requests) served at once, 1..CHAT_MAX_CONNS */
};

/* Fills cfg with the defaults: 127.0.0.1:9005, history 1000, 1024 peers, 1024 connections. */
void chat_config_defaults(struct chat_config *cfg);

/*
 * Binds the UDP socket and the TCP listener of cfg->listen (one port) and
 * prepares the event loop and the history. On success returns SG_OK and a
 * new server in *srv, which the caller drives through chat_service_ops (run,
 * stop, destroy). On failure writes why into err and returns an sg_err value.
 */
int chat_server_create(const struct chat_config *cfg, void **srv, char *err, size_t errlen);

/* The service operations of a chat server made by chat_server_create(); listen_fd is the TCP listener. */
extern const struct sg_service_ops chat_service_ops;

#endif
