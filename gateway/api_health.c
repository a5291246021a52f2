/* api_health.c - GET /healthz (the process runs) and GET /readyz (a real round trip to each backend). */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "balancer.h"
#include "server.h"
#include "sockgate/error.h"

/* A readiness probe never waits longer than this per backend, whatever --timeout-ms says. */
#define PROBE_MAX_MS 2000
#define PROBE_RETRY_MS 200

int api_healthz(struct request *rq)
{
    return respond_json(rq, 200, json_pack("{s:s}", "status", "ok"));
}

/*
 * Probes a framed backend with an operation it does not have: any
 * well-formed answer, an error frame included, proves it is up and speaks
 * the protocol; silence, a hang-up or garbage does not.
 */
static int probe_framed(struct upstream *up, const char *id, int64_t deadline, char *err, size_t errlen)
{
    json_t *req = json_pack("{s:s,s:s}", "op", "ping", "id", id), *resp = NULL;
    int rc;
    if (!req)
        return SG_ERR_NOMEM;
    /* upstream_call checks the answer is this request's and names this service (reply_check.c). */
    rc = upstream_call(up, req, NULL, 0, &resp, NULL, NULL, 1u << 20, deadline, err, errlen);
    json_decref(req);
    json_decref(resp);
    return rc;
}

static int probe(struct upstream *up, const char *id, char *err, size_t errlen)
{
    int64_t deadline = sg_now_ms() + (up->timeout_ms < PROBE_MAX_MS ? up->timeout_ms : PROBE_MAX_MS);
    char reply[1100];
    size_t got = 0;
    int rc;

    switch (up->id) {
    case BACKEND_ECHO:
        rc = upstream_exchange_raw(up, "ping", reply, 4, 4, deadline, err, errlen);
        if (rc == SG_OK && strncasecmp(reply, "ping", 4) != 0) {
            snprintf(err, errlen, "answered \"ping\" with something else");
            rc = upstream_failed(up, SG_ERR_PROTO);
        }
        return rc;
    case BACKEND_TIME:
        /* An empty datagram asks for the default format: any reply at all is a working backend. */
        return upstream_datagram(up, "", 0, reply, sizeof reply, &got, PROBE_RETRY_MS, deadline, err, errlen);
    default:
        return probe_framed(up, id, deadline, err, errlen);
    }
}

/* What confines the embedded exec's commands: each protection on or off, and the start-up log's summary line. */
static json_t *sandbox_json(const struct gw_sandbox_report *r)
{
    return json_pack("{s:s,s:i,s:b,s:s,s:b,s:b,s:s}", "mode", r->mode, "landlock_abi", r->landlock_abi, "files",
                     r->files, "network", r->netns ? "none" : r->net_tcp ? "tcp-denied" : "open", "scoped", r->scoped,
                     "no_new_privs", r->no_new_privs, "summary", r->summary);
}

int api_readyz(struct request *rq)
{
    json_t *backends = json_object(), *body;
    int is_ready = 1;

    if (!backends)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    for (int id = 0; id < BACKEND__COUNT; id++) {
        struct upstream *up = &rq->gw->backends[id];
        char err[384] = "", addr_text[SG_ADDR_STRLEN];
        struct sg_addr addr;
        struct timespec t0, t1;
        json_t *state;
        int rc;
        if (!up->is_configured) {
            json_object_set_new(backends, backend_name(id),
                                json_pack("{s:b,s:b,s:s}", "ok", 0, "configured", 0, "error",
                                          "not built into this gateway and no address given"));
            continue;
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = probe(up, rq->id, err, sizeof err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        upstream_addr(up, &addr, addr_text, sizeof addr_text);
        state = json_pack("{s:b,s:b,s:s,s:b,s:I}", "ok", rc == SG_OK, "configured", 1, "address", addr_text,
                          "embedded", up->is_embedded, "latency_us",
                          (json_int_t)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000));
        if (state && rc != SG_OK)
            json_object_set_new(state, "error", json_string(err[0] ? err : sg_strerror(rc)));
        /* Every replica the name resolves to, with its health as the balancer sees it from real calls. */
        if (state && up->bal)
            json_object_set_new(state, "addresses", balancer_report(up->bal));
        if (state && id == BACKEND_EXEC && rq->gw->exec_sandbox.is_known)
            json_object_set_new(state, "sandbox", sandbox_json(&rq->gw->exec_sandbox));
        json_object_set_new(backends, backend_name(id), state);
        if (rc != SG_OK)
            is_ready = 0;
    }
    /* Draining (after SIGTERM): still serving, but load balancers must send new clients elsewhere. */
    if (atomic_load(&rq->gw->is_draining))
        is_ready = 0;
    /* Without the token only the verdict: backend addresses and errors are for those who hold it. */
    if (!request_is_authorized(rq)) {
        json_decref(backends);
        body = json_pack("{s:b,s:s}", "ready", is_ready, "details", "send Authorization: Bearer <token> for each backend's state");
    } else {
        body = json_pack("{s:b,s:o}", "ready", is_ready, "backends", backends);
    }
    if (body && atomic_load(&rq->gw->is_draining))
        json_object_set_new(body, "draining", json_true());
    return respond_json(rq, is_ready ? 200 : 503, body);
}
