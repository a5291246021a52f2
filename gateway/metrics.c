/* metrics.c - request counters by route and status, latency histograms, backend errors, Prometheus text. */
#include "metrics.h"
#include "balancer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "chat_stream.h"
#include "router.h"
#include "server.h"
#include "sockgate/error.h"

/* The statuses the gateway sends; anything else is counted under "other". */
static const unsigned statuses[] = {101, 200, 201, 204, 206, 304, 400, 401, 403, 404, 405, 409, 411, 412,
                                    413, 415, 416, 423, 426, 460, 499, 500, 501, 502, 503, 504, 507};
#define N_STATUS (sizeof statuses / sizeof statuses[0] + 1)

/* Upper bounds of the latency buckets in microseconds (Prometheus renders them in seconds). */
static const int64_t buckets_us[] = {500,    1000,   2500,    5000,    10000,   25000,    50000,
                                     100000, 250000, 500000, 1000000, 2500000, 10000000, 30000000};
#define N_BUCKET (sizeof buckets_us / sizeof buckets_us[0])

struct slot_metrics {
    atomic_ullong requests[N_STATUS];
    atomic_ullong latency[N_BUCKET + 1]; /* per bucket, not cumulative; the last is +Inf */
    atomic_ullong latency_sum_us;
    atomic_ullong bytes_in, bytes_out;
};

static struct slot_metrics *slots;
static size_t n_slots;
static atomic_long in_flight;
static atomic_long uploads;
static atomic_ullong timeouts[METRIC__TIMEOUTS];
static atomic_long ws_open;
static atomic_ullong ws_sessions, ws_messages[2], ws_bytes[2];

int metrics_init(size_t n)
{
    /* calloc'd zeroes are valid initial values for these lock-free atomics */
    slots = calloc(n, sizeof *slots);
    if (!slots)
        return SG_ERR_NOMEM;
    n_slots = n;
    return SG_OK;
}

void metrics_free(void)
{
    free(slots);
    slots = NULL;
    n_slots = 0;
}

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i < N_STATUS - 1; i++)
        if (statuses[i] == status)
            return i;
    return N_STATUS - 1;
}

void metrics_observe(size_t slot, unsigned status, int64_t duration_us, uint64_t bytes_in, uint64_t bytes_out)
{
    struct slot_metrics *m;
    size_t b = 0;
    if (!slots || slot >= n_slots)
        return;
    m = &slots[slot];
    while (b < N_BUCKET && duration_us > buckets_us[b])
        b++;
    atomic_fetch_add_explicit(&m->requests[status_index(status)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us, duration_us > 0 ? (unsigned long long)duration_us : 0,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_in, bytes_in, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_out, bytes_out, memory_order_relaxed);
}

void metrics_in_flight(int delta)
{
    atomic_fetch_add_explicit(&in_flight, delta, memory_order_relaxed);
}

long metrics_in_flight_now(void)
{
    return atomic_load_explicit(&in_flight, memory_order_relaxed);
}

void metrics_ws_open(int delta)
{
    atomic_fetch_add_explicit(&ws_open, delta, memory_order_relaxed);
    if (delta > 0)
        atomic_fetch_add_explicit(&ws_sessions, 1, memory_order_relaxed);
}

void metrics_ws_message(int is_out, uint64_t bytes)
{
    atomic_fetch_add_explicit(&ws_messages[is_out != 0], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ws_bytes[is_out != 0], bytes, memory_order_relaxed);
}

void metrics_uploads(int delta)
{
    atomic_fetch_add_explicit(&uploads, delta, memory_order_relaxed);
}

void metrics_timeout(enum metric_timeout which)
{
    atomic_fetch_add_explicit(&timeouts[which], 1, memory_order_relaxed);
}

static unsigned long long load(atomic_ullong *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void render_requests(FILE *f)
{
    fprintf(f, "# HELP sockgate_http_requests_total HTTP requests answered, by route and status.\n"
               "# TYPE sockgate_http_requests_total counter\n");
    for (size_t s = 0; s < n_slots; s++)
        for (size_t i = 0; i < N_STATUS; i++) {
            unsigned long long v = load(&slots[s].requests[i]);
            if (v == 0)
                continue;
            if (i < N_STATUS - 1)
                fprintf(f, "sockgate_http_requests_total{route=\"%s\",status=\"%u\"} %llu\n",
                        router_slot_name(s), statuses[i], v);
            else
                fprintf(f, "sockgate_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                        router_slot_name(s), v);
        }
}

static void render_latency(FILE *f)
{
    fprintf(f, "# HELP sockgate_http_request_duration_seconds Time from request headers to completion, by route.\n"
               "# TYPE sockgate_http_request_duration_seconds histogram\n");
    for (size_t s = 0; s < n_slots; s++) {
        unsigned long long cum = 0;
        const char *name = router_slot_name(s);
        for (size_t b = 0; b <= N_BUCKET; b++) {
            cum += load(&slots[s].latency[b]);
            if (b < N_BUCKET)
                fprintf(f, "sockgate_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", name,
                        (double)buckets_us[b] / 1e6, cum);
            else
                fprintf(f, "sockgate_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                        name, cum);
        }
        fprintf(f, "sockgate_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", name,
                (double)load(&slots[s].latency_sum_us) / 1e6);
        fprintf(f, "sockgate_http_request_duration_seconds_count{route=\"%s\"} %llu\n", name, cum);
    }
}

static void render_bytes(FILE *f)
{
    fprintf(f, "# HELP sockgate_http_bytes_total Body bytes received from and sent to clients, by route.\n"
               "# TYPE sockgate_http_bytes_total counter\n");
    for (size_t s = 0; s < n_slots; s++) {
        fprintf(f, "sockgate_http_bytes_total{route=\"%s\",direction=\"in\"} %llu\n", router_slot_name(s),
                load(&slots[s].bytes_in));
        fprintf(f, "sockgate_http_bytes_total{route=\"%s\",direction=\"out\"} %llu\n", router_slot_name(s),
                load(&slots[s].bytes_out));
    }
}

static void render_backends(FILE *f, struct gateway *gw)
{
    fprintf(f, "# HELP sockgate_backend_errors_total Backend calls that failed: unreachable, too slow, or broken protocol.\n"
               "# TYPE sockgate_backend_errors_total counter\n");
    for (int i = 0; i < BACKEND__COUNT; i++)
        fprintf(f, "sockgate_backend_errors_total{backend=\"%s\"} %llu\n", backend_name(i),
                load(&gw->backends[i].n_errors));
    fprintf(f, "# HELP sockgate_backend_connects_total Fresh connections opened to a backend.\n"
               "# TYPE sockgate_backend_connects_total counter\n");
    for (int i = 0; i < BACKEND__COUNT; i++)
        fprintf(f, "sockgate_backend_connects_total{backend=\"%s\"} %llu\n", backend_name(i),
                load(&gw->backends[i].n_connects));
    {
        static const struct {
            const char *name, *help, *type;
            int which;
        } per_addr[] = {
            {"sockgate_backend_address_calls_total", "Calls given to one address of a backend (a replica).", "counter", BAL_M_CALLS},
            {"sockgate_backend_address_failures_total", "Calls to one address that failed to connect, hung up or broke the protocol.", "counter", BAL_M_FAILURES},
            {"sockgate_backend_address_ejections_total", "Times one address was left out after failures (outlier detection).", "counter", BAL_M_EJECTIONS},
            {"sockgate_backend_address_healthy", "1 when the address takes calls, 0 while ejected or leaving.", "gauge", BAL_M_HEALTHY},
        };
        for (size_t m = 0; m < sizeof per_addr / sizeof per_addr[0]; m++) {
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", per_addr[m].name, per_addr[m].help, per_addr[m].name,
                    per_addr[m].type);
            for (int i = 0; i < BACKEND__COUNT; i++)
                if (gw->backends[i].bal)
                    balancer_metrics(gw->backends[i].bal, f, per_addr[m].name, per_addr[m].which);
        }
    }
    fprintf(f, "# HELP sockgate_backend_configured 1 when the backend is embedded or given by address.\n"
               "# TYPE sockgate_backend_configured gauge\n");
    for (int i = 0; i < BACKEND__COUNT; i++)
        fprintf(f, "sockgate_backend_configured{backend=\"%s\",embedded=\"%d\"} %d\n", backend_name(i),
                gw->backends[i].is_embedded, gw->backends[i].is_configured);
}

char *metrics_render(struct gateway *gw, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        return NULL;
    render_requests(f);
    render_latency(f);
    render_bytes(f);
    render_backends(f, gw);
    fprintf(f, "# HELP sockgate_http_requests_in_flight Requests being served now.\n"
               "# TYPE sockgate_http_requests_in_flight gauge\n"
               "sockgate_http_requests_in_flight %ld\n",
            metrics_in_flight_now());
    fprintf(f, "# HELP sockgate_uploads_in_flight File uploads (PUT or multipart) being received now.\n"
               "# TYPE sockgate_uploads_in_flight gauge\n"
               "sockgate_uploads_in_flight %ld\n",
            atomic_load_explicit(&uploads, memory_order_relaxed));
    fprintf(f, "# HELP sockgate_websockets_open WebSockets (GET /api/v1/ws/...) open now.\n"
               "# TYPE sockgate_websockets_open gauge\n"
               "sockgate_websockets_open %ld\n"
               "# HELP sockgate_websockets_total WebSockets opened since start.\n"
               "# TYPE sockgate_websockets_total counter\n"
               "sockgate_websockets_total %llu\n",
            atomic_load_explicit(&ws_open, memory_order_relaxed),
            (unsigned long long)atomic_load_explicit(&ws_sessions, memory_order_relaxed));
    fprintf(f, "# HELP sockgate_websocket_messages_total WebSocket data messages, in from clients and out to them.\n"
               "# TYPE sockgate_websocket_messages_total counter\n"
               "sockgate_websocket_messages_total{direction=\"in\"} %llu\n"
               "sockgate_websocket_messages_total{direction=\"out\"} %llu\n"
               "# HELP sockgate_websocket_bytes_total Payload bytes of WebSocket data messages, in and out.\n"
               "# TYPE sockgate_websocket_bytes_total counter\n"
               "sockgate_websocket_bytes_total{direction=\"in\"} %llu\n"
               "sockgate_websocket_bytes_total{direction=\"out\"} %llu\n",
            (unsigned long long)atomic_load_explicit(&ws_messages[0], memory_order_relaxed),
            (unsigned long long)atomic_load_explicit(&ws_messages[1], memory_order_relaxed),
            (unsigned long long)atomic_load_explicit(&ws_bytes[0], memory_order_relaxed),
            (unsigned long long)atomic_load_explicit(&ws_bytes[1], memory_order_relaxed));
    fprintf(f, "# HELP sockgate_chat_streams_open Chat event streams (GET /api/v1/chat/events) open now.\n"
               "# TYPE sockgate_chat_streams_open gauge\n"
               "sockgate_chat_streams_open %ld\n",
            chat_streams_open());
    fprintf(f, "# HELP sockgate_http_timeouts_total Client connections cut for a request head that took longer than "
               "--header-timeout-ms (head) or a body silent longer than --body-timeout-ms (body).\n"
               "# TYPE sockgate_http_timeouts_total counter\n"
               "sockgate_http_timeouts_total{phase=\"head\"} %llu\n"
               "sockgate_http_timeouts_total{phase=\"body\"} %llu\n",
            load(&timeouts[METRIC_HEADER_TIMEOUT]), load(&timeouts[METRIC_BODY_TIMEOUT]));
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

int api_metrics(struct request *rq)
{
    size_t len = 0;
    char *text = metrics_render(rq->gw, &len);
    struct MHD_Response *resp;
    if (!text)
        return request_fail(rq, SG_ERR_NOMEM, "cannot render the metrics");
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return request_fail(rq, SG_ERR_NOMEM, "cannot render the metrics");
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (strcmp(rq->method, "HEAD") != 0)
        rq->bytes_out += len; /* the access log's out= and the byte counters count what was sent */
    return respond(rq, 200, resp);
}
