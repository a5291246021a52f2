/* origin.h - who may call: the Host a request names and the Origin of a write (docs/security.md). */
#ifndef SOCKGATE_GATEWAY_ORIGIN_H
#define SOCKGATE_GATEWAY_ORIGIN_H

#include <stddef.h>

#include "gateway.h"

/*
 * Checks the Host header against DNS rebinding: without a token and without
 * --allow-host, addresses, single-label names and *.localhost pass, a dotted
 * name does not; with --allow-host only addresses and the listed names pass.
 * Returns SG_OK, SG_ERR_INVALID (not a host) or GW_ERR_HOST, with why filled.
 */
int origin_check_host(const struct gw_config *cfg, int has_token, const char *host, char *why, size_t whylen);

/*
 * Checks that a write (any method but GET, HEAD, OPTIONS) carrying an Origin
 * comes from the gateway's own origin (scheme://Host) or one that CORS allows
 * (cors_allowed non-NULL). Returns SG_OK or GW_ERR_CROSS_ORIGIN, with why filled.
 */
int origin_check_write(const char *method, const char *host, const char *origin, const char *cors_allowed, char *why,
                       size_t whylen);

#endif
