/* gateway.h - the gateway's settings and the state every module of the gateway shares. */
#ifndef SOCKGATE_GATEWAY_H
#define SOCKGATE_GATEWAY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sockgate/log.h"
#include "upstream.h"

#define GW_DEFAULT_LISTEN "127.0.0.1:8080"
#define GW_MAX_CORS_ORIGINS 16
#define GW_MAX_ALLOW_HOSTS 16
#define GW_MAX_SANDBOX_DIRS 16

/* Everything the flags and environment set; strings are borrowed from argv or the environment. */
struct gw_config {
    const char *listen;
    int listen_fd;                            /* bound by main() before anything starts; -1: server_start binds */
    const char *backend_addr[BACKEND__COUNT]; /* NULL: run that backend embedded */
    const char *embedded_listen[BACKEND__COUNT]; /* an embedded backend's TCP/UDP address; NULL: a private UNIX socket */
    const char *file_root;                    /* the embedded file backend's directory */
    const char *allow;                        /* the embedded exec backend's allowlist, comma-separated */
    const char *web_root;                     /* serve the page from here instead of the compiled-in copy */
    const char *token;                        /* NULL: no authentication */
    const char *tls_cert, *tls_key;           /* PEM files; NULL: plain HTTP */
    const char *cors_origins[GW_MAX_CORS_ORIGINS];
    size_t n_cors_origins;
    const char *allow_hosts[GW_MAX_ALLOW_HOSTS]; /* Host names answered besides addresses (see origin.h) */
    size_t n_allow_hosts;
    const char *spool_dir;                    /* where multipart and chunked bodies wait */
    uint64_t max_upload;                      /* bytes of one upload (PUT body or multipart total) */
    uint64_t max_json;                        /* bytes of a JSON request body */
    const char *max_upload_text, *max_json_text; /* both limits as the user wrote them, for error messages */
    unsigned threads;                         /* worker threads, each one event loop (worker.c) */
    unsigned max_conns;                       /* client connections served at once */
    unsigned timeout_ms;                      /* deadline of one backend call, or of one I/O step of a stream */
    unsigned header_timeout_ms;               /* a request head must be in within this (0: no limit) */
    unsigned body_timeout_ms;                 /* longest silence inside a request body (0: no limit) */
    unsigned grace_ms;                        /* how long SIGTERM waits for requests in flight */
    uint64_t ws_max_message;                  /* bytes of one WebSocket message from a client (more: close 1009) */
    unsigned ws_ping_ms;                      /* a WebSocket is pinged this often (0: never) */
    unsigned ws_pong_ms;                      /* a ping unanswered this long drops the WebSocket */
    unsigned ws_idle_ms;                      /* a WebSocket without a message either way this long is closed (0: never) */
    unsigned upload_expiry_s;                 /* an unfinished tus upload unchanged this long is removed (embedded file) */
    unsigned drain_ms;                        /* how long SIGTERM keeps serving with /readyz at 503 first */
    unsigned resolve_interval_ms;             /* backend names are looked up again this often (balancer.h) */
    unsigned eject_ms;                        /* first back-off of an ejected backend address */
    enum sg_log_format log_format;
    const char *sandbox;                      /* the embedded exec's --sandbox: strict, best-effort or off */
    const char *sandbox_read[GW_MAX_SANDBOX_DIRS];  /* extra directories its commands may read */
    size_t n_sandbox_read;
    const char *sandbox_write[GW_MAX_SANDBOX_DIRS]; /* extra directories its commands may read and write */
    size_t n_sandbox_write;
};

/* What confines the embedded exec backend's commands, for /readyz (is_known 0: exec is remote or not built). */
struct gw_sandbox_report {
    int is_known;
    char mode[16];
    int landlock_abi;
    int files;        /* Landlock file rules on */
    int netns;        /* own network namespace */
    int net_tcp;      /* Landlock denies TCP */
    int scoped;       /* Landlock scopes signals and abstract sockets */
    int no_new_privs;
    char summary[256];
};

/* The running gateway: one per process, shared read-only by the worker threads once started. */
struct gateway {
    struct gw_config cfg;
    struct upstream backends[BACKEND__COUNT];
    unsigned char token_sha256[32]; /* the token is compared by digest, in constant time */
    int has_token;
    struct gw_sandbox_report exec_sandbox;
    atomic_int is_draining; /* set at SIGTERM: /readyz answers 503 while the routes still serve */
};

#endif
