/*
 * server.h - sockgate-file as a library: uploads (also resumable ones),
 * downloads, list, stat and delete of flat files over framed TCP.
 */
#ifndef SOCKGATE_FILE_SERVER_H
#define SOCKGATE_FILE_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "sockgate/service.h"

#define FILE_DEFAULT_LISTEN "127.0.0.1:9004"
#define FILE_DEFAULT_ROOT "./files"
#define FILE_DEFAULT_MAX_SIZE (UINT64_C(64) << 30) /* 64 GiB */
#define FILE_DEFAULT_MAX_CONNS 128u
#define FILE_DEFAULT_IO_TIMEOUT_S 60u
#define FILE_DEFAULT_IDLE_TIMEOUT_S 300u
#define FILE_DEFAULT_SESSION_EXPIRY_S (24u * 3600u)
#define FILE_DEFAULT_MAX_SESSIONS 1000u

/* Settings of one file server; the strings are borrowed and must outlive file_server_create(). */
struct file_config {
    const char *listen;       /* "HOST:PORT"; port 0 picks one */
    const char *root;         /* the directory served; created when missing */
    uint64_t max_size;        /* largest upload accepted, in bytes */
    unsigned max_conns;       /* connections served at once (one thread each); more get error busy */
    unsigned io_timeout_s;    /* a request that makes no progress this long is dropped (0: never) */
    unsigned idle_timeout_s;  /* a connection with no request this long is closed (0: never) */
    unsigned session_expiry_s; /* an upload session unchanged this long is removed (at least 1) */
    unsigned max_sessions;    /* upload sessions kept at once; creating more gets error busy */
};

/* Fills cfg with the defaults: 127.0.0.1:9004, ./files, 64 GiB, 128 connections, 60 s, 300 s, 24 h, 1000. */
void file_config_defaults(struct file_config *cfg);

/*
 * Opens (creating if needed) and locks the root, removes what a crash left in
 * it, and binds the listener. On success returns SG_OK and a new server in
 * *srv, driven through file_service_ops (run, stop, destroy). On failure
 * writes why into err and returns an sg_err value.
 */
int file_server_create(const struct file_config *cfg, void **srv, char *err, size_t errlen);

/* The service operations of a file server made by file_server_create(). */
extern const struct sg_service_ops file_service_ops;

#endif
