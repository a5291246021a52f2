/* upstream.h - connections to the backends: a keep-alive pool per backend, framed calls with deadlines. */
#ifndef SOCKGATE_GATEWAY_UPSTREAM_H
#define SOCKGATE_GATEWAY_UPSTREAM_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sockgate/net.h"

/* The backends the gateway talks to, in the order /readyz and /metrics list them. */
enum backend_id { BACKEND_ECHO, BACKEND_TIME, BACKEND_EXEC, BACKEND_FILE, BACKEND_CHAT, BACKEND__COUNT };

/* Returns "echo", "time", ... for id. */
const char *backend_name(enum backend_id id);

/* One connection to a stream backend, owned by whoever acquired it until released. */
struct upstream_conn {
    struct upstream *up;
    int fd;
    int is_reused;      /* came from the idle pool rather than a fresh connect */
    int64_t idle_since; /* when it went back to the pool (sg_now_ms) */
    uint64_t got;       /* response bytes read since it was acquired */
    uint8_t *rbuf;      /* read-ahead for frame headers (lazily allocated) */
    size_t roff, rlen;
    /*
     * Where the stream is in the current exchange, so that a connection goes
     * back to the pool only at a frame boundary: the request body bytes the
     * last frame header announced and that were not sent yet, and the answer's
     * body bytes not read yet. Writes past body_owed are refused.
     */
    uint64_t body_owed;
    uint64_t answer_left;
    int is_answered;    /* an answer header was read since the last request went out */
    char req_op[16];    /* the op and id of the request awaiting its answer ("" once answered) */
    char req_id[72];
    int slot;           /* the balancer's address it goes to, and that slot's generation (balancer.h) */
    uint32_t gen;
    struct upstream_conn *next;
};

struct balancer;

/* One backend: its addresses (the balancer), whether it is configured at all, and its idle connections. */
struct upstream {
    enum backend_id id;
    int type;          /* SOCK_STREAM or SOCK_DGRAM */
    int is_configured; /* 0: neither embedded nor given by address */
    int is_embedded;
    char name[256];    /* the address as configured ("echo:9001"); constant once set */
    struct balancer *bal;           /* every address name resolves to and their health (balancer.h) */
    struct sg_addr addr;            /* the first address name resolved to at start; guarded by lock */
    char addr_text[SG_ADDR_STRLEN]; /* addr as text; guarded by lock */
    int64_t resolved_ms;            /* when name was last resolved; guarded by lock */
    int timeout_ms;    /* default deadline of one call */
    pthread_mutex_t lock;
    struct upstream_conn *idle; /* a stack: the most recently used connection is reused first */
    unsigned n_idle;
    atomic_ullong n_errors;   /* calls that failed for a transport or protocol reason */
    atomic_ullong n_connects; /* fresh connections opened */
};

/* Prepares up as unconfigured; upstream_set_addr() makes it usable. */
void upstream_init(struct upstream *up, enum backend_id id, int type, int timeout_ms);

/* Points up at addr_text ("HOST:PORT"); returns SG_OK or writes why into err. */
int upstream_set_addr(struct upstream *up, const char *addr_text, int is_embedded, char *err, size_t errlen);

/* Copies an address of the backend the balancer would pick now (and its text, when text is not NULL). */
void upstream_addr(struct upstream *up, struct sg_addr *addr, char *text, size_t textlen);

/*
 * Kept for callers of old: returns 0. The balancer's resolver thread looks
 * the name up every --resolve-interval-ms and at once after a connect fails
 * (balancer.h), so nothing on a worker's loop blocks in getaddrinfo.
 */
int upstream_reresolve(struct upstream *up);

/* Closes every idle connection and frees what up holds. */
void upstream_free(struct upstream *up);

/*
 * Hands out a connection: an idle one that passes the health check (no
 * pending bytes, no hang-up, not idle too long), else a fresh connect within
 * the deadline. *out is owned by the caller until upstream_release().
 */
int upstream_acquire(struct upstream *up, struct upstream_conn **out, int64_t deadline_ms, char *err,
                     size_t errlen);

/*
 * Sends a request header on a pooled connection, replacing a connection the
 * backend had closed while idle by a fresh one (once). On success *out holds
 * the connection the header went out on.
 */
int upstream_begin(struct upstream *up, const json_t *header, struct upstream_conn **out, int64_t deadline_ms,
                   char *err, size_t errlen);

/*
 * After sending to c failed with write_rc: a backend that refuses a body
 * (no space, bad name) answers with an error frame and closes, so reads that
 * answer briefly. Returns its error (message in err) or write_rc with a
 * message saying the connection broke. Counts a transport failure.
 */
int upstream_failed_send(struct upstream_conn *c, int write_rc, char *err, size_t errlen);

/*
 * Gives c back: to the idle pool when is_reusable and the stream is at a
 * frame boundary (the request body was sent exactly as announced, the answer
 * read whole, nothing read past it), else it is closed. c may be NULL.
 */
void upstream_release(struct upstream_conn *c, int is_reusable);

/*
 * Sends len bytes of fd starting at offset off to c (sendfile, no copy in
 * user space). step_ms bounds each wait for the socket, not the whole
 * transfer, so a large file is not cut off by a fixed deadline.
 */
int upstream_sendfile(struct upstream_conn *c, int fd, uint64_t off, uint64_t len, int step_ms);

/* Sends a frame header (with total_size set by the caller when a body follows) and body_len bytes of body. */
int upstream_send_frame(struct upstream_conn *c, const json_t *header, const void *body, size_t body_len,
                        int64_t deadline_ms);

/*
 * Reads one response frame header: *header is a new reference and
 * *body_size its body size. The first answer after a request must answer it
 * (reply_check.c: its id, the fields its op promises). SG_ERR_PROTO for a
 * malformed or foreign header, SG_ERR_CLOSED when the backend hung up,
 * SG_ERR_TIMEOUT at the deadline.
 */
int upstream_read_header(struct upstream_conn *c, json_t **header, uint64_t *body_size, int64_t deadline_ms,
                         char *err, size_t errlen);

/* Reads between 1 and cap body bytes (the caller counts what is left of the body). */
int upstream_read_body(struct upstream_conn *c, void *buf, size_t cap, size_t *got, int64_t deadline_ms);

/* Reads and drops n body bytes (to bring c back to a frame boundary). */
int upstream_skip_body(struct upstream_conn *c, uint64_t n, int64_t deadline_ms);

/*
 * One whole framed round trip: sends header and body, reads the response
 * header (new reference in *resp) and its body into a new malloc'd,
 * NUL-terminated buffer (*resp_body, may be NULL when resp_body is NULL and
 * the body is empty) of at most max_body bytes. A connection from the pool
 * that turns out to be dead before any response byte is replaced once by a
 * fresh one. A backend error frame is returned as its enum value with its
 * message in err, *resp and *resp_body still set.
 */
int upstream_call(struct upstream *up, const json_t *header, const void *body, size_t body_len, json_t **resp,
                  char **resp_body, size_t *resp_len, size_t max_body, int64_t deadline_ms, char *err,
                  size_t errlen);

/*
 * Raw request/reply over a pooled stream connection (the echo protocol): writes
 * len bytes and reads exactly len bytes back into reply, in pieces of at most
 * chunk bytes so the backend's bounded output buffer never stalls.
 */
int upstream_exchange_raw(struct upstream *up, const void *req, void *reply, size_t len, size_t chunk,
                          int64_t deadline_ms, char *err, size_t errlen);

/*
 * One datagram request and its reply (the time protocol): sends req, waits
 * retry_ms for a reply and sends again until the deadline. *got is the reply
 * length (at most cap).
 */
int upstream_datagram(struct upstream *up, const void *req, size_t len, void *reply, size_t cap, size_t *got,
                      int retry_ms, int64_t deadline_ms, char *err, size_t errlen);

/*
 * Returns the error a backend's answer resp carries (sg_frame_header_error,
 * message in err), or SG_OK. An error that says the backend could not serve
 * (busy, no space, timeout, internal) counts as a failed call of up; a refusal
 * of the client's own request (bad name, not found) does not.
 */
int upstream_answer_error(struct upstream *up, const json_t *resp, char *err, size_t errlen);

/* Counts one failed call of up (for /metrics) and returns err unchanged. */
int upstream_failed(struct upstream *up, int err);

#endif
