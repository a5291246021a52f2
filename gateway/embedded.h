/* embedded.h - the backends the gateway runs on its own threads when no address is given for them. */
#ifndef SOCKGATE_GATEWAY_EMBEDDED_H
#define SOCKGATE_GATEWAY_EMBEDDED_H

#include <stddef.h>

#include "gateway.h"
#include "sockgate/net.h"
#include "sockgate/service.h"

/* The services started in-process, and what their configs borrow. */
struct embedded {
    struct sg_service_thread threads[BACKEND__COUNT];
    char *allow_copy;    /* --allow split in place */
    const char **allow;  /* pointers into allow_copy */
    size_t allow_count;
    const char *protect[6]; /* paths the exec sandbox keeps from commands (borrowed from the config) */
    char dir[256];          /* the private directory (0700) of the UNIX sockets; "" when none was made */
    char listen[BACKEND__COUNT][SG_ADDR_STRLEN]; /* where each embedded backend listens */
};

/* Returns 1 when this binary has the service of id compiled in. */
int embedded_is_built(enum backend_id id);

/*
 * For every backend without an address in gw->cfg: starts the built-in
 * service (on its own thread) on a UNIX socket in a private directory
 * (mode 0700, removed by embedded_stop), or on the TCP/UDP address of its
 * --BACKEND-listen flag, and points gw->backends[id] at it. Backends that are neither given nor built stay
 * unconfigured (their routes answer 503). On failure stops what it started.
 */
int embedded_start(struct gateway *gw, struct embedded *e, char *err, size_t errlen);

/* Stops and frees every service embedded_start() started. */
void embedded_stop(struct embedded *e);

#endif
