/* upcall_impl.h - what upcall.c and upcall_pipe.c share: the call's state and the steps that end or move it. */
#ifndef SOCKGATE_GATEWAY_UPCALL_IMPL_H
#define SOCKGATE_GATEWAY_UPCALL_IMPL_H

#include "sockgate/frame.h"
#include "upcall.h"
#include "worker.h"

/* One read from a backend socket, on the loop's stack. */
#define READ_CHUNK 16384u

enum kind { KIND_FRAME, KIND_RAW, KIND_DGRAM };
enum state { ST_CONNECTING, ST_EXCHANGING, ST_DONE };

struct bconn;
struct bpipe;

/* Other addresses one call may move to after failures (beyond a stale pooled connection's replacement). */
#define MAX_MOVES 3

struct upcall {
    struct upstream *up;
    struct worker *wk;
    enum kind kind;
    enum state state;
    struct wk_watch watch; /* datagrams: the call's own socket */
    struct bconn *bc;      /* streams: the connection, from the pool or fresh */
    struct wk_timer deadline, retry;
    int64_t deadline_ms, connect_by;
    int is_watched;
    int is_reused;      /* the connection came from the pool */
    int is_replayable;  /* a failure before any answer byte may be retried on a fresh connection */
    int has_retried;
    int is_reusable;    /* the exchange ended exactly on a frame boundary */
    int is_closing;     /* the answer said "close": the backend (draining) closes the connection after it */
    struct bal_pick pick; /* the address this attempt went to */
    int has_pick;       /* pick is outstanding at the balancer */
    uint64_t avoid;     /* slots this call already failed on */
    int moves;          /* times it moved to another address */
    uint8_t *out;       /* the request as sent: frame header and body, or raw bytes */
    size_t out_len, out_off;
    int retry_ms;       /* datagram: resend interval */
    uint64_t got;       /* answer bytes received */
    size_t max_body, body_cap;
    char req_op[32], req_id[80]; /* framed: what the answer must answer (reply_check) */
    struct sg_frame_decoder dec;
    upcall_done_fn done;
    void *arg;
    struct upcall_result res;
    int is_head_only;       /* upcall_frame_head: end at the answer's header */
    upcall_ready_fn ready;  /* after a head-only call: who reads the body */
    void *ready_arg;
    int is_body_fed;        /* upcall_frame_feed: the caller sends the body */
    uint64_t body_owed;     /* body bytes the header announced and the caller has not sent yet */
    int64_t step_ms;        /* how long one body write may wait for the backend, and the answer after the body */
    upcall_writable_fn writable; /* the caller's body may go on */
    void *writable_arg;
    struct bpipe *pipe;  /* raw: the pipe it is queued on (until its answer is in, or the pipe ends) */
    struct upcall *pipe_prev, *pipe_next;
    int is_orphan;       /* raw: its caller let go while part of it was sent; the pipe reads its answer and frees it */
};


/* Ends the exchange with rc (why in what, counted as a backend failure unless rc is a backend's own error). */
void upcall_finish(struct upcall *c, int rc, const char *what);

/* Ends the exchange with a transport failure rc: counted against the backend, then upcall_finish. */
void upcall_fail(struct upcall *c, int rc, const char *what);

/* Ends the attempt's claim on its address, telling the balancer how it went. */
void upcall_release_pick(struct upcall *c, enum bal_outcome how);

/* What a transport error rc says about the address the attempt went to (for outlier detection). */
enum bal_outcome upcall_outcome_of(const struct upcall *c, int rc);

/* Cancels c's timers and stops watching its own datagram socket. */
void upcall_detach(struct upcall *c);

/* Starts a non-blocking connect to the picked address; SG_OK with *fd (connected or in progress), or why in err. */
int upcall_connect_start(const struct bal_pick *p, int type, int *fd, int *is_pending, char *err, size_t errlen);

/* Frees c's own memory (buffers, decoder, result): after it left every connection and timer. */
void upcall_free_memory(struct upcall *c);

/* ---- upcall_pipe.c: raw calls pipelined on one connection per address per worker ---- */

/* Queues c (a raw call, nothing sent yet) on the pipe of an address the balancer picks; SG_OK or why in err. */
int upcall_pipe_join(struct upcall *c, char *err, size_t errlen);

/* c's deadline passed while it is on a pipe: ends it (and the pipe, when the backend stalled on it). */
void upcall_pipe_deadline(struct upcall *c);

/* The caller let go of c while it is on a pipe: unqueued when none of it went out, else left to the pipe to finish. */
void upcall_pipe_leave(struct upcall *c);

/* Closes every pipe of the calling worker and frees the calls left on them (the loop is ending). */
void upcall_pipes_close_all(void);

#endif
