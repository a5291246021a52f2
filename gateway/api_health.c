/* api_health.c - GET /healthz (the process runs) and GET /readyz (a real round trip to each backend). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "balancer.h"
#include "server.h"
#include "upcall.h"
#include "sockgate/error.h"

/* A readiness probe never waits longer than this per backend, whatever --timeout-ms says. */
#define PROBE_MAX_MS 2000
#define PROBE_RETRY_MS 200
/* The largest time reply the protocol allows (docs/protocol.md). */
#define PROBE_REPLY_MAX 1100

int api_healthz(struct request *rq)
{
    /* The answer never changes: the liveness probe costs no JSON encoding. */
    return respond_json_text(rq, 200, "{\"status\":\"ok\"}");
}

/* One backend's probe in flight, and what it found. */
struct probe {
    struct readyz *r;
    enum backend_id id;
    struct upcall *call;
    int is_done;
    int rc;
    char err[384];
    int64_t t0_us, latency_us;
};

/* All of /readyz's probes: they run at once on the loop, so the answer takes the slowest one, not their sum. */
struct readyz {
    struct request *rq;
    struct probe p[BACKEND__COUNT];
    int pending;
};

static int64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void probe_end(struct probe *p, int rc, const char *err)
{
    p->is_done = 1;
    p->rc = rc;
    p->latency_us = now_us() - p->t0_us;
    if (rc != SG_OK)
        snprintf(p->err, sizeof p->err, "%s", err && *err ? err : sg_strerror(rc));
}

static void probe_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct probe *p = arg;
    int rc = res->rc;
    (void)c;
    /* The echo must give back what it got; any answer of the others' counts (reply_check vetted it). */
    if (rc == SG_OK && p->id == BACKEND_ECHO && (res->body_len != 4 || strncasecmp(res->body, "ping", 4) != 0)) {
        probe_end(p, upstream_failed(&p->r->rq->gw->backends[BACKEND_ECHO], SG_ERR_PROTO),
                  "answered \"ping\" with something else");
    } else {
        probe_end(p, rc, res->err);
    }
    if (--p->r->pending == 0)
        request_wake(p->r->rq);
}

/*
 * Starts the probe of one backend: the echo's "ping", an empty time datagram
 * (the default format: any reply is a working backend), and to the framed
 * ones an operation every service answers, "ping" (reply_check: the answer
 * must name the service). A probe that cannot even start ends at once.
 */
static void probe_start(struct readyz *r, struct probe *p, struct upstream *up)
{
    int64_t deadline = sg_now_ms() + (up->timeout_ms < PROBE_MAX_MS ? up->timeout_ms : PROBE_MAX_MS);
    char err[384] = "";
    json_t *req = NULL;
    int rc;

    p->r = r;
    p->id = up->id;
    p->t0_us = now_us();
    switch (up->id) {
    case BACKEND_ECHO:
        rc = upcall_raw(up, "ping", 4, deadline, probe_done, p, &p->call, err, sizeof err);
        break;
    case BACKEND_TIME:
        rc = upcall_datagram(up, "", 0, PROBE_REPLY_MAX, PROBE_RETRY_MS, deadline, probe_done, p, &p->call, err,
                             sizeof err);
        break;
    default:
        req = json_pack("{s:s,s:s}", "op", "ping", "id", r->rq->id);
        rc = req ? upcall_frame(up, req, NULL, 0, 1u << 20, 1, deadline, probe_done, p, &p->call, err, sizeof err)
                 : SG_ERR_NOMEM;
        json_decref(req);
        break;
    }
    if (rc != SG_OK)
        probe_end(p, rc, err);
    else
        r->pending++;
}

static void readyz_free(struct request *rq, int is_complete)
{
    struct readyz *r = rq->state;
    (void)is_complete;
    for (int id = 0; id < BACKEND__COUNT; id++)
        upcall_free(r->p[id].call); /* a probe still running when the client left is cancelled */
    free(r);
    rq->state = NULL;
}

/* What confines the embedded exec's commands: each protection on or off, and the start-up log's summary line. */
static json_t *sandbox_json(const struct gw_sandbox_report *r)
{
    return json_pack("{s:s,s:i,s:b,s:s,s:b,s:b,s:s}", "mode", r->mode, "landlock_abi", r->landlock_abi, "files",
                     r->files, "network", r->netns ? "none" : r->net_tcp ? "tcp-denied" : "open", "scoped", r->scoped,
                     "no_new_privs", r->no_new_privs, "summary", r->summary);
}

/* Every probe ended: the verdict, and with the token each backend's state. */
static int readyz_answer(struct request *rq)
{
    struct readyz *r = rq->state;
    json_t *backends = json_object(), *body;
    int is_ready = 1;

    if (!backends)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    for (int id = 0; id < BACKEND__COUNT; id++) {
        struct upstream *up = &rq->gw->backends[id];
        struct probe *p = &r->p[id];
        char addr_text[SG_ADDR_STRLEN];
        struct sg_addr addr;
        json_t *state;
        if (!up->is_configured) {
            json_object_set_new(backends, backend_name(id),
                                json_pack("{s:b,s:b,s:s}", "ok", 0, "configured", 0, "error",
                                          "not built into this gateway and no address given"));
            continue;
        }
        upstream_addr(up, &addr, addr_text, sizeof addr_text);
        state = json_pack("{s:b,s:b,s:s,s:b,s:I}", "ok", p->rc == SG_OK, "configured", 1, "address", addr_text,
                          "embedded", up->is_embedded, "latency_us", (json_int_t)p->latency_us);
        if (state && p->rc != SG_OK)
            json_object_set_new(state, "error", json_string(p->err));
        if (state && id == BACKEND_EXEC && rq->gw->exec_sandbox.is_known)
            json_object_set_new(state, "sandbox", sandbox_json(&rq->gw->exec_sandbox));
        /* Every replica the name resolves to, with its health as the balancer sees it from real calls. */
        if (state && up->bal)
            json_object_set_new(state, "addresses", balancer_report(up->bal));
        json_object_set_new(backends, backend_name(id), state);
        if (p->rc != SG_OK)
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

int api_readyz(struct request *rq)
{
    struct readyz *r = calloc(1, sizeof *r);
    if (!r)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    r->rq = rq;
    rq->state = r;
    rq->state_free = readyz_free;
    for (int id = 0; id < BACKEND__COUNT; id++)
        if (rq->gw->backends[id].is_configured)
            probe_start(r, &r->p[id], &rq->gw->backends[id]);
    if (r->pending == 0) /* nothing to wait for: every probe ended at its start, or none is configured */
        return readyz_answer(rq);
    request_defer(rq, readyz_answer);
    return SG_OK;
}
