/* service.c - running a service: as a program (signals, listening line) or on a thread (embedded). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/service.h"
#include "sockgate/opts.h"

static void *service_thread_main(void *arg)
{
    struct sg_service_thread *t = arg;
    t->result = t->ops->run(t->srv);
    return NULL;
}

int sg_service_thread_start(struct sg_service_thread *t, const struct sg_service_ops *ops, void *srv)
{
    int rc;
    t->ops = ops;
    t->srv = srv;
    t->result = SG_OK;
    t->started = 0;
    rc = pthread_create(&t->thread, NULL, service_thread_main, t);
    if (rc != 0) {
        errno = rc;
        return SG_ERR_SYS;
    }
    t->started = 1;
    return SG_OK;
}

void sg_service_thread_stop(struct sg_service_thread *t)
{
    if (!t->ops || !t->srv)
        return;
    if (t->started) {
        t->ops->stop(t->srv);
        pthread_join(t->thread, NULL);
        t->started = 0;
    }
    t->ops->destroy(t->srv);
    t->srv = NULL;
}

void sg_signals_block(void)
{
    sigset_t set;
    signal(SIGPIPE, SIG_IGN); /* a closed peer is an error to handle, not a reason to die */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Set once before sg_signals_on_stop; read by its thread only. */
static void (*reload_fn)(void *arg);
static void *reload_arg;

void sg_signals_on_reload(void (*on_reload)(void *arg), void *arg)
{
    reload_fn = on_reload;
    reload_arg = arg;
}

struct stop_waiter {
    void (*on_stop)(void *arg);
    void *arg;
};

static void *stop_waiter_main(void *p)
{
    struct stop_waiter w = *(struct stop_waiter *)p;
    sigset_t set;
    int sig = 0;
    free(p);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    for (;;) {
        while (sigwait(&set, &sig) != 0)
            ;
        /* SIGHUP reloads where there is something to reload; elsewhere a hang-up stops, as it would by default. */
        if (sig == SIGHUP && reload_fn) {
            reload_fn(reload_arg);
            continue;
        }
        break;
    }
    sg_info("stopping on %s", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP");
    w.on_stop(w.arg);
    return NULL;
}

int sg_signals_on_stop(void (*on_stop)(void *arg), void *arg)
{
    pthread_t thread;
    struct stop_waiter *w = malloc(sizeof *w);
    int rc;
    if (!w)
        return SG_ERR_NOMEM;
    w->on_stop = on_stop;
    w->arg = arg;
    rc = pthread_create(&thread, NULL, stop_waiter_main, w);
    if (rc != 0) {
        free(w);
        errno = rc;
        return SG_ERR_SYS;
    }
    pthread_detach(thread);
    return SG_OK;
}

struct main_ctx {
    const struct sg_service_ops *ops;
    void *srv;
};

/* How long a stop request waits, still serving, before the service stops (sg_service_set_drain). */
static unsigned drain_ms;

int sg_service_set_drain(const char *prog, const char *text)
{
    uint64_t v;
    if (!text || !*text)
        return 0;
    if (sg_flag_duration(prog, "drain", text, 0, 3600000, 0, &v))
        return -1;
    drain_ms = (unsigned)v;
    return 0;
}

/*
 * Runs on the signal thread: the service goes on serving through the drain
 * (a balancer that resolves this replica drops it meanwhile: in a swarm or a
 * Kubernetes Service, the terminating replica leaves DNS and the endpoints
 * at once), then stops.
 */
static void main_stop(void *arg)
{
    struct main_ctx *m = arg;
    if (drain_ms) {
        struct timespec ts = {.tv_sec = drain_ms / 1000, .tv_nsec = (long)(drain_ms % 1000) * 1000000L};
        sg_info("draining: still serving for %u ms before stopping", drain_ms);
        /* Idle pooled connections of the gateways close now, so they move to other replicas without a failed call. */
        if (m->ops->drain)
            m->ops->drain(m->srv);
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    m->ops->stop(m->srv);
}

int sg_service_main(const struct sg_service_ops *ops, void *srv)
{
    static struct main_ctx ctx; /* lives as long as the waiter thread may use it */
    int rc;
    ctx.ops = ops;
    ctx.srv = srv;
    if (sg_signals_on_stop(main_stop, &ctx) != SG_OK) {
        sg_error("cannot start the signal thread: %s", strerror(errno));
        ops->destroy(srv);
        return 1;
    }
    sg_log_listening(ops->listen_fd(srv));
    rc = ops->run(srv);
    ops->destroy(srv);
    if (rc != SG_OK) {
        sg_error("%s stopped on error: %s", ops->name, sg_strerror(rc));
        return 1;
    }
    return 0;
}
