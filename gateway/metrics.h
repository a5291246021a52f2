/* metrics.h - counters and latency histograms, rendered as Prometheus text at GET /metrics. */
#ifndef SOCKGATE_GATEWAY_METRICS_H
#define SOCKGATE_GATEWAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct gateway;

/* Allocates the counters for n_slots routes; SG_OK or SG_ERR_NOMEM. Call once before serving. */
int metrics_init(size_t n_slots);

/* Frees the counters (after the server stopped). */
void metrics_free(void);

/* Counts one finished request of slot: its status, latency and bytes. Lock-free. */
void metrics_observe(size_t slot, unsigned status, int64_t duration_us, uint64_t bytes_in, uint64_t bytes_out);

/* Adds delta (+1 or -1) to the requests in flight. */
void metrics_in_flight(int delta);

/* Returns the requests in flight now. */
long metrics_in_flight_now(void);

/* Adds delta (+1 or -1) to the WebSockets open (+1 also counts one more opened). */
void metrics_ws_open(int delta);

/* Counts one WebSocket data message of bytes payload, from a client (is_out 0) or to one. */
void metrics_ws_message(int is_out, uint64_t bytes);

/* Adds delta (+1 or -1) to the uploads in flight. */
void metrics_uploads(int delta);

/* Connections the gateway cut for being too slow. */
enum metric_timeout { METRIC_HEADER_TIMEOUT, METRIC_BODY_TIMEOUT, METRIC__TIMEOUTS };

/* Counts one connection cut by the request-head deadline or the body-silence deadline. */
void metrics_timeout(enum metric_timeout which);

/* Renders every metric as Prometheus text into a new malloc'd buffer (*len bytes); NULL when out of memory. */
char *metrics_render(struct gateway *gw, size_t *len);

#endif
