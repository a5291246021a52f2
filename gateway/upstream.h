/* upstream.h - the backends: their addresses (the balancer), counters and errors. */
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

struct balancer;

/* One backend: its addresses (the balancer), whether it is configured at all, its counters. */
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
    atomic_ullong n_errors;   /* calls that failed for a transport or protocol reason */
    atomic_ullong n_connects; /* fresh connections opened */
};

/* Prepares up as unconfigured; upstream_set_addr() makes it usable. */
void upstream_init(struct upstream *up, enum backend_id id, int type, int timeout_ms);

/* Points up at addr_text ("HOST:PORT"); returns SG_OK or writes why into err. */
int upstream_set_addr(struct upstream *up, const char *addr_text, int is_embedded, char *err, size_t errlen);

/* Copies an address of the backend the balancer would pick now (and its text, when text is not NULL). */
void upstream_addr(struct upstream *up, struct sg_addr *addr, char *text, size_t textlen);

/* Frees what up holds. */
void upstream_free(struct upstream *up);

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
