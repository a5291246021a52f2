/* balancer.h - a backend's replicas: every address its name resolves to, their health, and which one takes a call. */
#ifndef SOCKGATE_GATEWAY_BALANCER_H
#define SOCKGATE_GATEWAY_BALANCER_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "sockgate/net.h"

/* Most addresses one backend is spread over; a name resolving to more uses the first ones. */
#define BAL_MAX_ADDRS 32

struct balancer;

/* The address a call was given; slot and gen name it for balancer_done() and the per-worker pools. */
struct bal_pick {
    int slot;
    uint32_t gen; /* changes when the slot is reused for another address */
    struct sg_addr addr;
    char text[SG_ADDR_STRLEN];
};

/* How a call on a picked address ended, for outlier detection. */
enum bal_outcome {
    BAL_OK,           /* answered (an error frame about the request itself included) */
    BAL_NEUTRAL,      /* ended for a reason that says nothing about the address (cancelled, a slow command) */
    BAL_CONNECT_FAIL, /* refused, unreachable, connect timed out: never reached the backend */
    BAL_BROKE,        /* hung up or went silent mid-exchange */
    BAL_PROTO,        /* answered with something that breaks the protocol */
    BAL_DRAINING,     /* answered, saying it drains ("close": true): no failure, but no new calls either */
};

/* The balancers' shared settings (flags --resolve-interval-ms and --eject-ms). */
void balancer_configure(int resolve_interval_ms, int eject_ms);

/*
 * Makes the balancer of a backend named name: "HOST:PORT", several of them
 * separated by commas, or "unix:PATH". Resolves it once now and from then on
 * on the resolver thread; a name that does not resolve yet is logged and
 * looked up again (an orchestrator starts services in any order), a
 * malformed address is an error. type is SOCK_STREAM or SOCK_DGRAM; label
 * ("exec") names it in logs. Returns SG_OK and *out, or why in err.
 */
int balancer_create(const char *label, const char *name, int type, struct balancer **out, char *err,
                    size_t errlen);

/* Stops resolving b and frees it (after every worker is gone). */
void balancer_free(struct balancer *b);

/*
 * Picks the address for one call: of two random healthy addresses the one
 * with fewer calls outstanding, skipping slots set in avoid (bit per slot:
 * the ones this call already failed on). When none is healthy, the one whose
 * ejection ends first ("panic": better a likely failure than a sure one).
 * Counts a call outstanding until balancer_done. SG_OK, or SG_ERR_REFUSED
 * when no address is known at all.
 */
int balancer_pick(struct balancer *b, uint64_t avoid, struct bal_pick *out);

/*
 * Reports how a picked call ended and ends it as outstanding. A connect
 * failure or a protocol break ejects the address at once, three hang-ups in
 * a row eject it too; a connect failure also asks the resolver to look the
 * name up again at once. A draining address is ejected the same way (and the
 * name looked up again: it is leaving) without counting a failure.
 */
void balancer_done(struct balancer *b, const struct bal_pick *p, enum bal_outcome how);

/* Returns 1 when a pooled connection to (slot, gen) may still carry calls: same address, not ejected. */
int balancer_is_current(struct balancer *b, int slot, uint32_t gen);

/* Returns the number of addresses known now (for callers deciding how many other ones to try). */
int balancer_count(struct balancer *b);

/* Returns a JSON array of {address, state, outstanding, calls, failures, ejections} (new reference). */
json_t *balancer_report(struct balancer *b);

/* Writes the per-address counters of b as Prometheus lines labelled backend="label". */
void balancer_metrics(struct balancer *b, FILE *f, const char *metric, int which);

/* Which counter balancer_metrics writes. */
enum { BAL_M_CALLS, BAL_M_FAILURES, BAL_M_EJECTIONS, BAL_M_HEALTHY };

#endif
