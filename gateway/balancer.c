/* balancer.c - a backend's replicas: resolution on a thread of its own, power of two choices, outlier ejection. */
#include "balancer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"

/* Longest wait between two ejections' doubling: an address dead for good is probed this often. */
#define EJECT_MAX_MS 30000
/* Hang-ups in a row (with no success between) that eject an address. */
#define BROKE_LIMIT 3
/* A probe's connect waits at most this long. */
#define PROBE_CONNECT_MS 1000

enum slot_state { SLOT_FREE, SLOT_HEALTHY, SLOT_EJECTED };

struct slot {
    enum slot_state state;
    int is_present;        /* in the latest resolution; an absent slot takes no new calls */
    uint32_t gen;
    struct sg_addr addr;
    char text[SG_ADDR_STRLEN];
    int64_t ejected_until; /* SLOT_EJECTED: when the resolver thread probes it */
    int backoff_ms;        /* the next ejection's length; doubles per ejection, reset by a success */
    int broke_in_row;
    atomic_int outstanding;
    atomic_ullong calls, failures, ejections;
};

/*
 * The slots are a fixed array, so a worker may keep (slot, gen) in a pooled
 * connection without a reference count: a slot is reused for another
 * address only when nothing is outstanding on it, and then gen changes.
 * lock guards everything but the atomic counters; every critical section is
 * a few comparisons, never a system call (the lookups happen outside it).
 */
struct balancer {
    char label[16];
    char name[256];
    int type;
    int is_fixed; /* unix:PATH or numeric addresses only: nothing to look up again */
    pthread_mutex_t lock;
    struct slot slots[BAL_MAX_ADDRS];
    int64_t next_resolve;
    int want_resolve; /* an address failed: look up again at once */
    unsigned seed;
    struct balancer *next; /* the resolver thread's list */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int is_running, is_stopping;
    struct balancer *list;
    int interval_ms, eject_ms;
} R = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .interval_ms = 5000, .eject_ms = 2000};

void balancer_configure(int resolve_interval_ms, int eject_ms)
{
    R.interval_ms = resolve_interval_ms;
    R.eject_ms = eject_ms;
}

/* ---- resolving ---- */

/* Splits "HOST:PORT" / "[V6]:PORT" / ":PORT" into host and port; 0 or -1. */
static int split_host_port(const char *text, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    size_t hl;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':')
            return -1;
        hl = (size_t)(end - text - 1);
        if (hl >= hostlen)
            return -1;
        memcpy(host, text + 1, hl);
        host[hl] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - text);
        if (hl >= hostlen)
            return -1;
        memcpy(host, text, hl);
        host[hl] = '\0';
        if (hl == 0)
            snprintf(host, hostlen, "127.0.0.1");
    }
    if (!colon[1] || strlen(colon + 1) >= portlen || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return -1;
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

/* Returns 1 when host is an address literal (nothing to look up). */
static int is_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Appends a, unless already there; returns the new count. */
static int add_unique(struct sg_addr *out, int n, const struct sockaddr *sa, socklen_t len)
{
    if (n >= BAL_MAX_ADDRS || len > sizeof out[0].ss)
        return n;
    for (int i = 0; i < n; i++)
        if (out[i].len == len && memcmp(&out[i].ss, sa, len) == 0)
            return n;
    memset(&out[n], 0, sizeof out[n]);
    memcpy(&out[n].ss, sa, len);
    out[n].len = len;
    return n + 1;
}

/*
 * Looks every element of name up (all A and AAAA records of each); blocks,
 * so never on a worker's loop. Returns the number of addresses (0 with why
 * in err when none resolved).
 */
static int resolve_all(const char *name, int type, struct sg_addr *out, int *is_malformed, char *err, size_t errlen)
{
    char copy[256], *save = NULL, *item;
    int n = 0;
    *is_malformed = 0;
    snprintf(copy, sizeof copy, "%s", name);
    err[0] = '\0';
    for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char host[256], port[8];
        struct addrinfo hints = {0}, *res = NULL, *ai;
        int rc;
        if (strncmp(item, SG_UNIX_PREFIX, strlen(SG_UNIX_PREFIX)) == 0) {
            struct sg_addr a;
            if (sg_addr_parse(item, &a, err, errlen) == SG_OK)
                n = add_unique(out, n, (const struct sockaddr *)&a.ss, a.len);
            else
                *is_malformed = 1;
            continue;
        }
        if (split_host_port(item, host, sizeof host, port, sizeof port) != 0) {
            snprintf(err, errlen, "'%s' is not HOST:PORT or unix:PATH", item);
            *is_malformed = 1;
            continue;
        }
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = type;
        rc = getaddrinfo(host, port, &hints, &res);
        if (rc != 0) {
            snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
            continue;
        }
        for (ai = res; ai; ai = ai->ai_next)
            n = add_unique(out, n, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(res);
    }
    if (n == 0 && !err[0])
        snprintf(err, errlen, "no address");
    return n;
}

/* Makes b's slots the addresses in fresh: known ones keep their state and counters, gone ones take no new calls. */
static void apply(struct balancer *b, const struct sg_addr *fresh, int n)
{
    pthread_mutex_lock(&b->lock);
    for (int s = 0; s < BAL_MAX_ADDRS; s++)
        b->slots[s].is_present = 0;
    for (int i = 0; i < n; i++) {
        int s, free_slot = -1;
        for (s = 0; s < BAL_MAX_ADDRS; s++) {
            struct slot *sl = &b->slots[s];
            if (sl->state != SLOT_FREE && sl->addr.len == fresh[i].len &&
                memcmp(&sl->addr.ss, &fresh[i].ss, fresh[i].len) == 0)
                break;
            if (free_slot < 0 && sl->state == SLOT_FREE)
                free_slot = s;
        }
        if (s < BAL_MAX_ADDRS) {
            b->slots[s].is_present = 1;
            continue;
        }
        if (free_slot < 0) { /* reuse a gone slot nothing is outstanding on */
            for (s = 0; s < BAL_MAX_ADDRS; s++)
                if (!b->slots[s].is_present && b->slots[s].state != SLOT_FREE &&
                    atomic_load(&b->slots[s].outstanding) == 0)
                    break;
            if (s == BAL_MAX_ADDRS)
                continue;
            free_slot = s;
        }
        {
            struct slot *sl = &b->slots[free_slot];
            uint32_t gen = sl->gen + 1;
            sl->state = SLOT_HEALTHY;
            sl->is_present = 1;
            sl->gen = gen;
            sl->addr = fresh[i];
            sg_addr_format((const struct sockaddr *)&fresh[i].ss, fresh[i].len, sl->text, sizeof sl->text);
            sl->ejected_until = 0;
            sl->backoff_ms = R.eject_ms;
            sl->broke_in_row = 0;
            atomic_store(&sl->outstanding, 0);
            atomic_store(&sl->calls, 0);
            atomic_store(&sl->failures, 0);
            atomic_store(&sl->ejections, 0);
            if (b->next_resolve) /* not the start-up lookup: the start-up log names the backend already */
                sg_info("%s backend %s: address %s added", b->label, b->name, sl->text);
        }
    }
    /* A slot gone from the name with nothing outstanding is forgotten (its pooled connections see gen change). */
    for (int s = 0; s < BAL_MAX_ADDRS; s++) {
        struct slot *sl = &b->slots[s];
        if (sl->state != SLOT_FREE && !sl->is_present && atomic_load(&sl->outstanding) == 0) {
            sg_info("%s backend %s: address %s removed", b->label, b->name, sl->text);
            sl->state = SLOT_FREE;
            sl->gen++;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

/* Looks b's name up now; keeps the old addresses when the lookup fails (a DNS hiccup is not an outage). */
static void resolve_now(struct balancer *b)
{
    struct sg_addr fresh[BAL_MAX_ADDRS];
    char err[300];
    int is_malformed;
    int n = resolve_all(b->name, b->type, fresh, &is_malformed, err, sizeof err);
    if (n == 0) {
        sg_warn("%s backend %s: %s (keeping the addresses known)", b->label, b->name, err);
        return;
    }
    apply(b, fresh, n);
}

/* Readmits an ejected address when a connect to it succeeds (a stream backend), else ejects it for longer. */
static void probe_slot(struct balancer *b, int s)
{
    struct sg_addr addr;
    char text[SG_ADDR_STRLEN], why[200];
    uint32_t gen;
    int fd = -1, ok;
    pthread_mutex_lock(&b->lock);
    addr = b->slots[s].addr;
    gen = b->slots[s].gen;
    snprintf(text, sizeof text, "%s", b->slots[s].text);
    pthread_mutex_unlock(&b->lock);
    /* A datagram address cannot be probed by a connect: its back-off ending readmits it, and its next call tells. */
    ok = b->type != SOCK_STREAM || sg_connect(&addr, SOCK_STREAM, PROBE_CONNECT_MS, &fd, why, sizeof why) == SG_OK;
    if (fd >= 0)
        close(fd);
    pthread_mutex_lock(&b->lock);
    if (b->slots[s].gen == gen && b->slots[s].state == SLOT_EJECTED) {
        struct slot *sl = &b->slots[s];
        if (ok) {
            sl->state = SLOT_HEALTHY;
            sl->broke_in_row = 0;
            sg_info("%s backend %s: address %s readmitted after a probe", b->label, b->name, text);
        } else {
            sl->backoff_ms = sl->backoff_ms * 2 > EJECT_MAX_MS ? EJECT_MAX_MS : sl->backoff_ms * 2;
            sl->ejected_until = sg_now_ms() + sl->backoff_ms;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

/* One pass over every balancer: due lookups and due probes. Returns when the next thing is due. */
static int64_t resolver_pass(void)
{
    int64_t now = sg_now_ms(), next = now + R.interval_ms;
    struct balancer *b;
    pthread_mutex_lock(&R.lock);
    b = R.list;
    pthread_mutex_unlock(&R.lock);
    /* The list only grows before the workers start and shrinks after the thread stopped: walking it is safe. */
    for (; b; b = b->next) {
        int due_probe[BAL_MAX_ADDRS], n_due = 0, want;
        pthread_mutex_lock(&b->lock);
        want = !b->is_fixed && (b->want_resolve || now >= b->next_resolve);
        if (want) {
            b->want_resolve = 0;
            b->next_resolve = now + R.interval_ms;
        }
        for (int s = 0; s < BAL_MAX_ADDRS; s++) {
            if (b->slots[s].state == SLOT_EJECTED && b->slots[s].ejected_until <= now)
                due_probe[n_due++] = s;
            else if (b->slots[s].state == SLOT_EJECTED && b->slots[s].ejected_until < next)
                next = b->slots[s].ejected_until;
        }
        if (!b->is_fixed && b->next_resolve < next)
            next = b->next_resolve;
        pthread_mutex_unlock(&b->lock);
        if (want)
            resolve_now(b);
        for (int i = 0; i < n_due; i++)
            probe_slot(b, due_probe[i]);
        if (n_due)
            next = now + 1; /* a failed probe set a new back-off: look again soon */
    }
    return next;
}

static void *resolver_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&R.lock);
    while (!R.is_stopping) {
        int64_t next, wait_ms;
        int urgent = 0;
        pthread_mutex_unlock(&R.lock);
        next = resolver_pass();
        pthread_mutex_lock(&R.lock);
        for (struct balancer *b = R.list; b; b = b->next)
            urgent |= b->want_resolve; /* read without b->lock: a stale 0 only costs one more short wait */
        wait_ms = urgent ? 0 : next - sg_now_ms();
        if (wait_ms > 0 && !R.is_stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&R.wake, &R.lock, &ts);
        }
    }
    pthread_mutex_unlock(&R.lock);
    return NULL;
}

/* ---- the balancer ---- */

int balancer_create(const char *label, const char *name, int type, struct balancer **out, char *err,
                    size_t errlen)
{
    struct sg_addr fresh[BAL_MAX_ADDRS];
    struct balancer *b;
    char copy[256], *save = NULL, *item;
    int n, is_malformed, rc = SG_OK;
    *out = NULL;
    if (strlen(name) >= sizeof b->name) {
        snprintf(err, errlen, "address too long");
        return SG_ERR_INVALID;
    }
    n = resolve_all(name, type, fresh, &is_malformed, err, errlen);
    if (is_malformed)
        return SG_ERR_INVALID;
    b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    snprintf(b->label, sizeof b->label, "%s", label);
    snprintf(b->name, sizeof b->name, "%s", name);
    b->type = type;
    b->seed = (unsigned)sg_now_ms() ^ (unsigned)(uintptr_t)b;
    b->is_fixed = 1;
    snprintf(copy, sizeof copy, "%s", name);
    for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char host[256], port[8];
        if (strncmp(item, SG_UNIX_PREFIX, strlen(SG_UNIX_PREFIX)) != 0 &&
            split_host_port(item, host, sizeof host, port, sizeof port) == 0 && !is_literal(host))
            b->is_fixed = 0;
    }
    pthread_mutex_init(&b->lock, NULL);
    /*
     * A name nobody answers for yet is not fatal: an orchestrator starts
     * services in any order, and a swarm dnsrr name has no record until its
     * first task runs. Calls fail (503) and /readyz says not ready until it
     * resolves; the resolver thread keeps looking.
     */
    if (n == 0)
        sg_warn("%s backend %s: %s; looking again every %d ms", label, name, err, R.interval_ms);
    apply(b, fresh, n);
    b->next_resolve = sg_now_ms() + R.interval_ms;
    pthread_mutex_lock(&R.lock);
    b->next = R.list;
    R.list = b;
    if (!R.is_running) {
        R.is_stopping = 0;
        if (pthread_create(&R.thread, NULL, resolver_main, NULL) == 0) {
            R.is_running = 1;
        } else {
            R.list = b->next;
            snprintf(err, errlen, "cannot start the resolver thread: %s", strerror(errno));
            rc = SG_ERR_SYS;
        }
    }
    pthread_cond_signal(&R.wake);
    pthread_mutex_unlock(&R.lock);
    if (rc != SG_OK) {
        pthread_mutex_destroy(&b->lock);
        free(b);
        return rc;
    }
    *out = b;
    return SG_OK;
}

void balancer_free(struct balancer *b)
{
    struct balancer **p;
    int is_last;
    if (!b)
        return;
    /* The thread walks the list unlocked: stop it first, restart it if other balancers remain. */
    pthread_mutex_lock(&R.lock);
    is_last = R.is_running;
    R.is_stopping = 1;
    pthread_cond_signal(&R.wake);
    pthread_mutex_unlock(&R.lock);
    if (is_last)
        pthread_join(R.thread, NULL);
    pthread_mutex_lock(&R.lock);
    R.is_running = 0;
    for (p = &R.list; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    if (R.list) {
        R.is_stopping = 0;
        if (pthread_create(&R.thread, NULL, resolver_main, NULL) == 0)
            R.is_running = 1;
    }
    pthread_mutex_unlock(&R.lock);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* Returns a slot index for a call, or -1; b->lock held. */
static int choose(struct balancer *b, uint64_t avoid)
{
    int cand[BAL_MAX_ADDRS], n = 0, best = -1;
    int64_t soonest = INT64_MAX;
    for (int s = 0; s < BAL_MAX_ADDRS; s++)
        if (b->slots[s].state == SLOT_HEALTHY && b->slots[s].is_present && !(avoid & (UINT64_C(1) << s)))
            cand[n++] = s;
    if (n == 1)
        return cand[0];
    if (n >= 2) {
        int i = (int)(rand_r(&b->seed) % (unsigned)n), j = (int)(rand_r(&b->seed) % (unsigned)(n - 1));
        int x, y;
        if (j >= i)
            j++;
        x = cand[i];
        y = cand[j];
        return atomic_load_explicit(&b->slots[y].outstanding, memory_order_relaxed) <
                       atomic_load_explicit(&b->slots[x].outstanding, memory_order_relaxed)
                   ? y
                   : x;
    }
    /* Nothing healthy left to try: the ejected address due back first, then any address at all not avoided. */
    for (int s = 0; s < BAL_MAX_ADDRS; s++)
        if (b->slots[s].state == SLOT_EJECTED && b->slots[s].is_present && !(avoid & (UINT64_C(1) << s)) &&
            b->slots[s].ejected_until < soonest) {
            soonest = b->slots[s].ejected_until;
            best = s;
        }
    return best;
}

int balancer_pick(struct balancer *b, uint64_t avoid, struct bal_pick *out)
{
    int s;
    pthread_mutex_lock(&b->lock);
    s = choose(b, avoid);
    if (s >= 0) {
        struct slot *sl = &b->slots[s];
        out->slot = s;
        out->gen = sl->gen;
        out->addr = sl->addr;
        snprintf(out->text, sizeof out->text, "%s", sl->text);
        atomic_fetch_add_explicit(&sl->outstanding, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&sl->calls, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&b->lock);
    return s >= 0 ? SG_OK : SG_ERR_REFUSED;
}

/* Ejects slot s for its back-off; b->lock held. */
static void eject(struct balancer *b, struct slot *sl, const char *why)
{
    if (sl->state == SLOT_EJECTED)
        return;
    sl->state = SLOT_EJECTED;
    sl->ejected_until = sg_now_ms() + sl->backoff_ms;
    atomic_fetch_add_explicit(&sl->ejections, 1, memory_order_relaxed);
    sg_warn("%s backend %s: address %s ejected for %d ms (%s)", b->label, b->name, sl->text, sl->backoff_ms, why);
    sl->backoff_ms = sl->backoff_ms * 2 > EJECT_MAX_MS ? EJECT_MAX_MS : sl->backoff_ms * 2;
}

void balancer_done(struct balancer *b, const struct bal_pick *p, enum bal_outcome how)
{
    int kick = 0;
    pthread_mutex_lock(&b->lock);
    if (p->slot >= 0 && p->slot < BAL_MAX_ADDRS && b->slots[p->slot].gen == p->gen) {
        struct slot *sl = &b->slots[p->slot];
        atomic_fetch_sub_explicit(&sl->outstanding, 1, memory_order_relaxed);
        switch (how) {
        case BAL_OK:
            sl->broke_in_row = 0;
            if (sl->state == SLOT_HEALTHY)
                sl->backoff_ms = R.eject_ms; /* healthy again: the next ejection starts short */
            break;
        case BAL_NEUTRAL:
            break;
        case BAL_DRAINING:
            /* It answered, but it is going: calls started now could meet its end of drain (a reset backlog). */
            sl->broke_in_row = 0;
            eject(b, sl, "draining");
            b->want_resolve = kick = !b->is_fixed;
            break;
        case BAL_CONNECT_FAIL:
            atomic_fetch_add_explicit(&sl->failures, 1, memory_order_relaxed);
            eject(b, sl, "connect failed");
            b->want_resolve = kick = !b->is_fixed;
            break;
        case BAL_PROTO:
            atomic_fetch_add_explicit(&sl->failures, 1, memory_order_relaxed);
            eject(b, sl, "broke the protocol");
            break;
        case BAL_BROKE:
            atomic_fetch_add_explicit(&sl->failures, 1, memory_order_relaxed);
            if (++sl->broke_in_row >= BROKE_LIMIT)
                eject(b, sl, "hung up on calls in a row");
            break;
        }
    }
    pthread_mutex_unlock(&b->lock);
    if (kick) {
        pthread_mutex_lock(&R.lock);
        pthread_cond_signal(&R.wake);
        pthread_mutex_unlock(&R.lock);
    }
}

int balancer_is_current(struct balancer *b, int slot, uint32_t gen)
{
    int ok;
    if (slot < 0 || slot >= BAL_MAX_ADDRS)
        return 0;
    pthread_mutex_lock(&b->lock);
    ok = b->slots[slot].gen == gen && b->slots[slot].state == SLOT_HEALTHY && b->slots[slot].is_present;
    pthread_mutex_unlock(&b->lock);
    return ok;
}

int balancer_count(struct balancer *b)
{
    int n = 0;
    pthread_mutex_lock(&b->lock);
    for (int s = 0; s < BAL_MAX_ADDRS; s++)
        n += b->slots[s].state != SLOT_FREE && b->slots[s].is_present;
    pthread_mutex_unlock(&b->lock);
    return n;
}

json_t *balancer_report(struct balancer *b)
{
    json_t *arr = json_array();
    int64_t now = sg_now_ms();
    if (!arr)
        return NULL;
    pthread_mutex_lock(&b->lock);
    for (int s = 0; s < BAL_MAX_ADDRS; s++) {
        struct slot *sl = &b->slots[s];
        json_t *o;
        if (sl->state == SLOT_FREE)
            continue;
        o = json_pack("{s:s,s:s,s:i,s:I,s:I,s:I}", "address", sl->text, "state",
                      !sl->is_present ? "leaving" : sl->state == SLOT_HEALTHY ? "healthy" : "ejected", "outstanding",
                      atomic_load(&sl->outstanding), "calls", (json_int_t)atomic_load(&sl->calls), "failures",
                      (json_int_t)atomic_load(&sl->failures), "ejections", (json_int_t)atomic_load(&sl->ejections));
        if (o && sl->state == SLOT_EJECTED)
            json_object_set_new(o, "probe_in_ms", json_integer(sl->ejected_until > now ? sl->ejected_until - now : 0));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&b->lock);
    return arr;
}

void balancer_metrics(struct balancer *b, FILE *f, const char *metric, int which)
{
    pthread_mutex_lock(&b->lock);
    for (int s = 0; s < BAL_MAX_ADDRS; s++) {
        struct slot *sl = &b->slots[s];
        unsigned long long v;
        if (sl->state == SLOT_FREE)
            continue;
        switch (which) {
        case BAL_M_CALLS: v = atomic_load(&sl->calls); break;
        case BAL_M_FAILURES: v = atomic_load(&sl->failures); break;
        case BAL_M_EJECTIONS: v = atomic_load(&sl->ejections); break;
        default: v = sl->state == SLOT_HEALTHY && sl->is_present; break;
        }
        fprintf(f, "%s{backend=\"%s\",address=\"%s\"} %llu\n", metric, b->label, sl->text, v);
    }
    pthread_mutex_unlock(&b->lock);
}
