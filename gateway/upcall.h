/* upcall.h - one backend exchange run by the worker's event loop: non-blocking, pooled per worker, with a deadline. */
#ifndef SOCKGATE_GATEWAY_UPCALL_H
#define SOCKGATE_GATEWAY_UPCALL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "balancer.h"
#include "upstream.h"

struct upcall;

/* What an exchange ended with; handed to done(), owned by the upcall until upcall_free. */
struct upcall_result {
    int rc;           /* SG_OK, a transport error, or a backend error frame's error */
    char err[384];    /* why, when rc is not SG_OK */
    json_t *header;   /* framed: the answer's header (also on a backend error frame) */
    char *body;       /* framed: the answer's body, NUL-terminated (NULL when empty); raw: the reply */
    size_t body_len;
    uint64_t body_size; /* upcall_frame_head: the answer's whole body size, as its header announced */
};

/* Runs on the loop's thread when the exchange ended; the upcall stays the caller's until upcall_free. */
typedef void (*upcall_done_fn)(struct upcall *c, const struct upcall_result *res, void *arg);

/*
 * Starts one framed round trip on the calling worker's loop: sends header and
 * body_len bytes of body (copied), reads the answer's header and its body (at
 * most max_body bytes). A pooled connection that fails before any answer byte
 * is replaced once by a fresh one when is_replayable (the request only reads)
 * or when the request never left whole. Returns SG_OK and *out, and done()
 * runs later, never from inside this call; or an error with why in err.
 */
int upcall_frame(struct upstream *up, const json_t *header, const void *body, size_t body_len, size_t max_body,
                 int is_replayable, int64_t deadline_ms, upcall_done_fn done, void *arg, struct upcall **out,
                 char *err, size_t errlen);

/*
 * Starts a raw exchange (the echo protocol): writes len bytes (len > 0) and
 * reads len bytes back. The worker's raw calls to one address share one
 * connection, pipelined (upcall_pipe.c): what a loop round queued leaves at
 * the end of the round (upcall_pipes_flush), never more than 64 KiB ahead of
 * what came back. A call whose connection breaks before any answer byte goes
 * again, as on a pooled connection. Like upcall_frame otherwise.
 */
int upcall_raw(struct upstream *up, const void *req, size_t len, int64_t deadline_ms, upcall_done_fn done,
               void *arg, struct upcall **out, char *err, size_t errlen);

/* Sends what the worker's raw calls queued in this loop round; on the worker's thread, once a round. */
void upcall_pipes_flush(void);

/*
 * Starts one datagram request (the time protocol): sends req, again every
 * retry_ms, until a reply of at most cap bytes comes or the deadline passes.
 */
int upcall_datagram(struct upstream *up, const void *req, size_t len, size_t cap, int retry_ms,
                    int64_t deadline_ms, upcall_done_fn done, void *arg, struct upcall **out, char *err,
                    size_t errlen);

/*
 * Like upcall_frame, but the exchange ends as soon as the answer's header is
 * in (checked the same way, a backend error frame included): its body stays
 * on the connection for the caller to stream (upcall_fd, upcall_on_ready).
 * res->body_size is the body's size; res->body holds the body_len bytes of it
 * (or past it) that came with the header. The connection is pooled at
 * upcall_free only after upcall_body_read_whole.
 */
int upcall_frame_head(struct upstream *up, const json_t *header, int is_replayable, int64_t deadline_ms,
                      upcall_done_fn done, void *arg, struct upcall **out, char *err, size_t errlen);

/* Readiness of an ended call's connection (EPOLLIN, EPOLLRDHUP...), on the loop's thread. */
typedef void (*upcall_ready_fn)(void *arg, uint32_t events);

/* After upcall_frame_head ended: the connection's descriptor (non-blocking; the caller reads, never closes). */
int upcall_fd(const struct upcall *c);

/* After upcall_frame_head ended: ready(arg, events) runs on each readiness edge of its connection (edge-triggered). */
void upcall_on_ready(struct upcall *c, upcall_ready_fn ready, void *arg);

/* Says the caller read the answer's body exactly, nothing past it: the connection may go back to the pool. */
void upcall_body_read_whole(struct upcall *c);

/* The caller's body may go on: c's connection can take more (on the loop's thread; it may send or end c). */
typedef void (*upcall_writable_fn)(struct upcall *c, void *arg);

/*
 * Starts a framed exchange whose body_size-byte body the caller sends
 * itself, block by block, without ever blocking the loop (uploads): header
 * must announce the size (total_size). upcall_send and upcall_sendfile take
 * what the connection takes now; writable(c, arg) runs when it can take more.
 * The answer is read as in upcall_frame (its body up to nothing: uploads are
 * answered by a header) and done() runs with it, possibly before the whole
 * body went out (a backend that refuses it answers early and closes). The
 * deadline (as a duration from now) bounds the connect, each wait of a
 * write the backend does not take, and the answer after the body; never
 * the client's pauses between blocks. Never replayed.
 */
int upcall_frame_feed(struct upstream *up, const json_t *header, uint64_t body_size, int64_t deadline_ms,
                      upcall_writable_fn writable, upcall_done_fn done, void *arg, struct upcall **out, char *err,
                      size_t errlen);

/*
 * Sends at most len body bytes of buf now, never more than the header
 * announced. Returns the bytes sent (0: not connected yet or the socket is
 * full: writable() says when to try again), or -1 when c ended (done() ran,
 * or runs, with why).
 */
ssize_t upcall_send(struct upcall *c, const void *buf, size_t len);

/* Like upcall_send, from file fd at *off (sendfile, no copy), advancing *off. */
ssize_t upcall_sendfile(struct upcall *c, int fd, uint64_t *off, size_t len);

/* Returns the body bytes c still owes its backend. */
uint64_t upcall_body_owed(const struct upcall *c);

/* Returns c's result (valid once done() ran, until upcall_free). */
const struct upcall_result *upcall_result(const struct upcall *c);

/* Ends c: cancels it when it is still running (done() never runs), closes or pools its connection, frees it. */
void upcall_free(struct upcall *c);

/* A connect never waits longer than this, whatever the call's deadline. */
#define UPCALL_CONNECT_MAX_MS 3000

/*
 * Starts a non-blocking TCP connect to one of up's addresses (the balancer's
 * pick; one that refuses at once is reported and the next tried): SG_OK with
 * *fd, *pick (report its end with balancer_done) and *is_pending when the
 * connect is still in progress (wait for EPOLLOUT, then check SO_ERROR and
 * upcall_is_self_connected), or why in err ("BACKEND backend at NAME: ...",
 * counted as the backend's failure). For exchanges that keep a connection of
 * their own (upcall_stream.c, the WebSocket echo bridge).
 */
int upcall_connect(struct upstream *up, struct bal_pick *pick, int *fd, int *is_pending, char *err, size_t errlen);

/*
 * Sends buf[*off..len) on the non-blocking socket fd until it is all sent or
 * the socket is full, advancing *off (retries EINTR). Returns 0, or the errno
 * of a send that failed otherwise (the connection broke). For the loop's
 * exchanges, which all write their request this way.
 */
int upcall_send_some(int fd, const uint8_t *buf, size_t len, size_t *off);

/*
 * Once a pending connect's socket is writable (or in error): 0 when it is
 * connected, else the errno why not (ECONNREFUSED for a socket connected to
 * itself, see upcall_is_self_connected).
 */
int upcall_connect_error(int fd);

/* Returns 1 when fd is connected to itself (a loopback port picked as its own source; see sg_connect). */
int upcall_is_self_connected(int fd);

/* Closes the calling worker's idle backend connections (when its loop ends). */
void upcall_pool_drain(void);

#endif
