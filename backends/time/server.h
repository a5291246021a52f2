/* server.h - sockgate-time as a library: a UDP server that answers a strftime format with the time. */
#ifndef SOCKGATE_TIME_SERVER_H
#define SOCKGATE_TIME_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "sockgate/service.h"

#define TIME_DEFAULT_LISTEN "127.0.0.1:9002"
#define TIME_DEFAULT_FORMAT "%Y-%m-%d %X" /* what an empty datagram asks for, as in the tutorial */
#define TIME_MAX_FORMAT 256               /* longest format accepted, in bytes */
#define TIME_MAX_RESULT 1024              /* longest formatted time sent back, in bytes */
#define TIME_REPLY_BUF (TIME_MAX_RESULT + 2) /* room time_reply() needs: result, sentinel, NUL */

/* Settings of one time server; listen is borrowed and must outlive time_server_create(). */
struct time_config {
    const char *listen; /* "HOST:PORT" (UDP); port 0 picks one */
    int utc;            /* 1: UTC; 0: local time with TZ from the environment */
};

/* Fills cfg with the defaults: 127.0.0.1:9002, local time. */
void time_config_defaults(struct time_config *cfg);

/*
 * Binds the UDP socket of cfg->listen. On success returns SG_OK and a new
 * server in *srv, driven through time_service_ops; on failure writes why
 * into err and returns an sg_err value.
 */
int time_server_create(const struct time_config *cfg, void **srv, char *err, size_t errlen);

/* The service operations of a time server made by time_server_create(). */
extern const struct sg_service_ops time_service_ops;

/*
 * Makes the reply to one request datagram req[0..len) for the time tm (which
 * is epoch, seconds since 1970, broken down in UTC or the local zone): the
 * time formatted by strftime with req as the format (TIME_DEFAULT_FORMAT
 * when len is 0; %s gives epoch whatever the zone), or "ERROR: why" when the format is over TIME_MAX_FORMAT
 * bytes, holds a NUL byte, is not valid UTF-8, or the result would be over
 * TIME_MAX_RESULT bytes. req is only ever strftime's format, never printf's.
 * Writes into out (TIME_REPLY_BUF bytes, NUL-terminated) and returns the
 * reply's length without the NUL; *is_error tells the two kinds apart.
 */
size_t time_reply(const uint8_t *req, size_t len, const struct tm *tm, long long epoch,
                  char out[TIME_REPLY_BUF], int *is_error);

#endif
