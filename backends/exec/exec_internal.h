/* exec_internal.h - what the exec service's own files share: the server, a connection, a request. */
#ifndef SOCKGATE_EXEC_INTERNAL_H
#define SOCKGATE_EXEC_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "policy.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"

/* Bytes read from a client at once; also the longest raw command line. */
#define EXEC_CONN_BUF (64u * 1024u)

/* How long a raw request that could still be the start of a frame waits for its next bytes. */
#define EXEC_SNIFF_WAIT_MS 50

/* How long a header, a body, or a response may take to cross the connection once begun. */
#define EXEC_IO_TIMEOUT_MS 30000

/* After the command's leader exits, how long its pipes may stay open (held by a process that left the group). */
#define EXEC_DRAIN_MS 2000

/*
 * The server. Everything but the counters under lock is set at create and
 * read-only afterwards, so connection threads read it freely.
 */
struct exec_server {
    struct exec_policy policy;
    char *envp[3];             /* "PATH=...", "LANG=...", NULL */
    struct exec_spawn_env spawn; /* envp, workdir and /dev/null descriptors, limits: what each spawn reuses */
    char *workdir;
    int own_workdir;           /* 1: made by us, removed at destroy */
    int workdir_lock_fd;       /* holds the flock that marks our own workdir as alive (workdir.c) */
    int64_t timeout_ms;
    int64_t max_timeout_ms;
    int64_t kill_grace_ms;
    size_t max_output;
    uint64_t max_input;
    unsigned max_procs;
    unsigned max_conns;
    int64_t idle_timeout_ms;
    struct exec_limits limits;
    struct exec_sandbox sandbox; /* built once; entered by every child */
    int listen_fd;
    int stop_fd;               /* eventfd: readable forever once stop() was called */
    int drain_fd;              /* eventfd: readable forever once the drain (or the stop) started */
    atomic_int is_draining;    /* replies say "close": true, and their connection closes after them */
    int slot_fd;               /* eventfd semaphore holding the free command slots */
    pthread_mutex_t lock;
    pthread_cond_t idle;       /* signalled when live drops */
    unsigned live;             /* connection threads running */
};

/* One client connection, owned by its thread. */
struct exec_conn {
    struct exec_server *srv;
    int fd;
    char peer[SG_ADDR_STRLEN];
    unsigned served;           /* requests answered: a drain closes only a connection that had one */
    int is_closing;            /* the last reply said "close": the connection ends after it */
    struct sg_frame_decoder dec;
    size_t in_off;             /* bytes of in[] already used */
    size_t in_len;             /* bytes of in[] received */
    uint8_t in[EXEC_CONN_BUF];
};

/* A request once parsed, framed or raw. */
struct exec_request {
    json_t *id;                /* new reference or NULL; echoed in the response */
    char **argv;               /* NULL-terminated, one allocation */
    size_t argc;
    int64_t timeout_ms;
    uint64_t body_size;        /* stdin bytes that follow in the frame */
    int framed;                /* 1: a frame whose body (maybe empty) must be read to its end */
    int is_stream;             /* 1: output goes out in frames as it is read ("stream": true), no cap */
};

/* A growable output buffer; the cap is shared by stdout and stderr. */
struct exec_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* What a run produced. */
struct exec_result {
    struct exec_buf out;
    struct exec_buf err;
    int status;                /* wait status, -1 when unknown */
    int64_t duration_ms;
    int timed_out;
    int truncated;
    int spawn_err;             /* SG_OK, or why the command could not start */
    char spawn_msg[256];
};

/* How a run ended, for the connection. */
enum exec_run_end {
    EXEC_RUN_DONE,             /* send the result */
    EXEC_RUN_CLIENT_GONE,      /* the client disconnected: the command was killed */
    EXEC_RUN_BROKEN,           /* the client broke the frame or stalled: close the connection */
    EXEC_RUN_STOPPED           /* the server is stopping: the command was killed */
};

/* Thread entry of one connection: serves requests until the client leaves or the server stops. */
void *exec_conn_main(void *arg);

/*
 * Reads more bytes from the client into c->in without waiting. Returns the
 * count, 0 on EOF, -1 when none are ready (EAGAIN), -2 on an error and -3
 * when c->in is full of bytes nobody consumed yet.
 */
ssize_t exec_conn_recv(struct exec_conn *c);

/*
 * Runs cmd with rq->argv, streaming the request's stdin body from the
 * connection, collecting stdout and stderr up to the output cap, enforcing
 * the timeout and watching the client and the server's stop. The command is
 * always reaped before it returns. res must be zeroed by the caller and is
 * freed with exec_result_free().
 */
enum exec_run_end exec_run(struct exec_conn *c, const struct exec_allowed *cmd, const struct exec_request *rq,
                           struct exec_result *res);

/* Frees the buffers of res. */
void exec_result_free(struct exec_result *res);

/* Releases one used command slot (the counterpart of a successful slot acquire). */
void exec_slot_release(struct exec_server *srv);

#endif
