/* server.h - sockgate-echo as a library: TCP and UDP echo on one port, one epoll loop. */
#ifndef SOCKGATE_ECHO_SERVER_H
#define SOCKGATE_ECHO_SERVER_H

#include <stddef.h>

#include "sockgate/service.h"

#define ECHO_DEFAULT_LISTEN "127.0.0.1:9001"
#define ECHO_DEFAULT_MAX_CONNS 16384u

/*
 * The most bytes of replies one TCP connection may hold while its client is
 * not reading them; it is also the most read from a client in one go. When a
 * connection holds pending replies it is not read at all (backpressure).
 */
#define ECHO_CHUNK 16384u

/* How the reply is made from the request. */
enum echo_mode {
    ECHO_MODE_UPPER, /* ASCII letters upper-cased: the tutorial's data.upper() */
    ECHO_MODE_PLAIN  /* bytes unchanged: RFC 862 */
};

/* Settings of one echo server; listen is borrowed and must outlive echo_server_create(). */
struct echo_config {
    const char *listen;        /* "HOST:PORT" for TCP and UDP alike; port 0 picks one */
    enum echo_mode mode;
    unsigned max_conns;        /* TCP connections served at once (at least 1) */
    unsigned idle_timeout_s;   /* close a TCP connection without traffic this long; 0: never */
};

/* Fills cfg with the defaults: 127.0.0.1:9001, upper, 16384 connections, no idle timeout. */
void echo_config_defaults(struct echo_config *cfg);

/* Parses "upper" or "plain" into *mode; returns SG_OK or SG_ERR_INVALID. */
int echo_mode_parse(const char *text, enum echo_mode *mode);

/*
 * Binds the TCP listener and the UDP socket of cfg->listen and prepares the
 * event loop. On success returns SG_OK and a new server in *srv, which the
 * caller drives through echo_service_ops (run, stop, destroy). On failure
 * writes why into err and returns an sg_err value.
 */
int echo_server_create(const struct echo_config *cfg, void **srv, char *err, size_t errlen);

/* The service operations of an echo server made by echo_server_create(). */
extern const struct sg_service_ops echo_service_ops;

/* Upper-cases the ASCII letters of buf[0..len) in place; other bytes stay as they are. */
void echo_upper(unsigned char *buf, size_t len);

#endif
