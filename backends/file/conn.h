/* conn.h - private to backends/file: the server's state, one connection, and the request handlers. */
#ifndef SOCKGATE_FILE_CONN_H
#define SOCKGATE_FILE_CONN_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "server.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"
#include "session.h"
#include "store.h"

/*
 * A request whose body will not be used (it was refused) is read and thrown
 * away when it is at most this big, so the connection stays usable; a bigger
 * one is answered and the connection closed instead.
 */
#define FILE_DRAIN_MAX (UINT64_C(16) << 20)

struct file_conn;

struct file_server {
    struct file_store store;
    struct file_sessions sessions;
    uint64_t max_size;
    unsigned max_conns;
    int64_t io_timeout_ms;   /* -1: none */
    int64_t idle_timeout_ms; /* -1: none */
    int listen_fd;
    int wake_fd;             /* eventfd written by stop() */
    int drain_fd;            /* eventfd: readable forever once the drain started */
    atomic_int is_draining;  /* replies say "close": true, and their connection closes after them */
    pthread_mutex_t lock;    /* guards conns, nconns and every conn's fd and done */
    struct file_conn *conns;
    unsigned nconns;         /* connections whose thread has not finished */
    int has_store;
    int has_sessions;
    int has_lock;
};

/* One client connection, served by its own thread from accept to close. */
struct file_conn {
    struct file_server *srv;
    int fd;                  /* -1 once closed (under srv->lock) */
    int done;                /* the thread finished; waiting to be joined */
    pthread_t thread;
    struct file_conn *next;
    struct sg_frame_reader *rd;
    const json_t *id;        /* the current request's "id" (borrowed), echoed in its response */
    int linger;              /* unread bytes may follow: drain a little before closing */
    unsigned served;         /* requests answered: a drain closes only a connection that had one */
    int is_closing;          /* the last reply said "close": the connection ends after it */
    char peer[SG_ADDR_STRLEN];
};

/* What a handler leaves the connection fit for. */
enum file_outcome { FILE_NEXT = 0, FILE_CLOSE = 1 };

/* Starts the thread serving fd (owned from now on); SG_OK or an sg_err value (fd left to the caller). */
int file_conn_start(struct file_server *srv, int fd);

/*
 * Marks a reply of a draining server with "close": true (docs/protocol.md) and
 * c as closing after it, so the client never sends another request on it.
 */
void file_conn_mark_closing(struct file_conn *c, json_t *header);

/* Sends header (stolen) plus the request's id; FILE_NEXT, or FILE_CLOSE when the client is gone. */
int file_conn_reply(struct file_conn *c, json_t *header);

/* Sends an error response {"error": {code, message}}; the message is printf-formatted. */
int file_conn_reply_error(struct file_conn *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Reads the next event of the current frame, waiting at most the I/O
 * timeout. Returns SG_OK or the reader's error (the connection must close).
 */
int file_conn_next(struct file_conn *c, enum sg_frame_event *ev, const uint8_t **chunk, size_t *len);

/*
 * Throws away the rest of the current frame's body (left bytes): read when
 * at most FILE_DRAIN_MAX, else the connection is marked to close. Returns
 * the outcome.
 */
int file_conn_skip_body(struct file_conn *c, uint64_t left);

/*
 * Reads the request's "filename": on success returns SG_OK with *name
 * borrowed from req; else replies with the error itself and returns it.
 */
int file_conn_request_name(struct file_conn *c, const json_t *req, const char **name);

/*
 * Reads an optional hex digest field (sha256, md5, sha1) of hexlen digits,
 * either case: *out is NULL when absent or null, else borrowed from req.
 * SG_OK, or SG_ERR_INVALID when present but not hexlen hex digits.
 */
int file_conn_request_digest(const json_t *req, const char *key, size_t hexlen, const char **out);

/*
 * Reads the optional condition of an upload or delete (if_none_match: "*",
 * if_match: "*" or a sha256) into *cond, which borrows from req. SG_OK, or
 * SG_ERR_INVALID with why in why.
 */
int file_conn_request_condition(const json_t *req, struct file_condition *cond, char *why, size_t whylen);

/* Logs one finished request as a structured line. */
void file_conn_log(struct file_conn *c, const char *op, const char *name, uint64_t bytes, int rc, int64_t start_ms);

/* The handlers: each consumes its frame to END (or marks the connection to close) and replies once. */
int file_op_upload(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_download(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_stat(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_delete(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_list(struct file_conn *c, const json_t *req, uint64_t body_size);
/* The upload sessions' ops (session_ops.c). */
int file_op_session_create(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_session_append(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_session_stat(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_session_finish(struct file_conn *c, const json_t *req, uint64_t body_size);
int file_op_session_abort(struct file_conn *c, const json_t *req, uint64_t body_size);

#endif
