/* upstream.c - the backends as the gateway knows them: addresses (the balancer), counters, errors. */
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/frame.h"
#include "balancer.h"

static const char *const names[BACKEND__COUNT] = {"echo", "time", "exec", "file", "chat"};

const char *backend_name(enum backend_id id)
{
    return (unsigned)id < BACKEND__COUNT ? names[id] : "unknown";
}

void upstream_init(struct upstream *up, enum backend_id id, int type, int timeout_ms)
{
    memset(up, 0, sizeof *up);
    up->id = id;
    up->type = type;
    up->timeout_ms = timeout_ms;
    pthread_mutex_init(&up->lock, NULL);
    atomic_init(&up->n_errors, 0);
    atomic_init(&up->n_connects, 0);
}

int upstream_set_addr(struct upstream *up, const char *addr_text, int is_embedded, char *err, size_t errlen)
{
    struct bal_pick first;
    int rc = balancer_create(backend_name(up->id), addr_text, up->type, &up->bal, err, errlen);
    if (rc != SG_OK)
        return rc;
    if (balancer_pick(up->bal, 0, &first) == SG_OK) { /* kept for upstream_addr's callers of old */
        up->addr = first.addr;
        balancer_done(up->bal, &first, BAL_NEUTRAL);
    }
    snprintf(up->name, sizeof up->name, "%s", addr_text);
    sg_addr_format((const struct sockaddr *)&up->addr.ss, up->addr.len, up->addr_text, sizeof up->addr_text);
    up->resolved_ms = sg_now_ms();
    up->is_configured = 1;
    up->is_embedded = is_embedded;
    return SG_OK;
}

void upstream_addr(struct upstream *up, struct sg_addr *addr, char *text, size_t textlen)
{
    struct bal_pick p;
    if (up->bal && balancer_pick(up->bal, 0, &p) == SG_OK) {
        balancer_done(up->bal, &p, BAL_NEUTRAL);
        *addr = p.addr;
        if (text)
            snprintf(text, textlen, "%s", p.text);
        return;
    }
    pthread_mutex_lock(&up->lock);
    *addr = up->addr;
    if (text)
        snprintf(text, textlen, "%s", up->addr_text);
    pthread_mutex_unlock(&up->lock);
}

void upstream_free(struct upstream *up)
{
    balancer_free(up->bal);
    up->bal = NULL;
    pthread_mutex_destroy(&up->lock);
}

int upstream_failed(struct upstream *up, int err)
{
    atomic_fetch_add_explicit(&up->n_errors, 1, memory_order_relaxed);
    return err;
}

int upstream_answer_error(struct upstream *up, const json_t *resp, char *err, size_t errlen)
{
    int rc = sg_frame_header_error(resp, err, errlen);
    switch (rc) {
    case SG_ERR_SYS:
    case SG_ERR_NOMEM:
    case SG_ERR_TIMEOUT:
    case SG_ERR_BUSY:
    case SG_ERR_NO_SPACE:
    case SG_ERR_INTERNAL:
    case SG_ERR_REFUSED:
    case SG_ERR_PROTO:
        return upstream_failed(up, rc); /* the backend could not serve: a failure of the backend */
    default:
        return rc; /* SG_OK, or the client's own mistake the backend refused (bad name, not found) */
    }
}
