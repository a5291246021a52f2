/*
 * load.c - sockgate-load: N keep-alive HTTP clients doing a mix of echo, time, exec and file
 * round trips against the gateway for a fixed time, each answer checked. Prints one JSON
 * object of counts and latencies; with --events, one line per finished request for the
 * fault suite's recovery times.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "load.h"
#include "sockgate/error.h"
#include "sockgate/opts.h"

#define MAX_CLIENTS 20000
/* Latencies kept for the percentiles: enough for hours at the rates this machine reaches. */
#define MAX_SAMPLES (16u << 20)

struct kind_stats {
    uint64_t sent, ok;
};

struct stats {
    uint64_t sent, done, ok, bad_body, s502, s503, s504, other_status, transport, cut, hung;
    uint64_t by_status[600];
    struct kind_stats kinds[KIND__COUNT];
    uint32_t *lat_us; /* one per finished request, capped at MAX_SAMPLES */
    size_t n_lat;
    char first_other[256]; /* the first unexpected answer, to say what it was */
};

struct driver {
    struct load_cfg cfg;
    CURLM *multi;
    int epfd;
    int64_t timer_at_us; /* when libcurl wants its timeout call (-1: none) */
    struct client *clients;
    unsigned n_clients;
    unsigned busy;
    long pause_us;
    FILE *events;
    struct stats st;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct driver *d = userp;
    struct epoll_event ev = {0};
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(d->epfd, EPOLL_CTL_DEL, s, NULL); /* best effort: libcurl may have closed it already */
        curl_multi_assign(d->multi, s, NULL);
        return 0;
    }
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    ev.data.fd = s;
    if (!socketp) {
        if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
            epoll_ctl(d->epfd, EPOLL_CTL_MOD, s, &ev);
        curl_multi_assign(d->multi, s, d); /* any non-NULL pointer marks it as registered */
    } else {
        epoll_ctl(d->epfd, EPOLL_CTL_MOD, s, &ev);
    }
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct driver *d = userp;
    (void)multi;
    d->timer_at_us = timeout_ms < 0 ? -1 : now_us() + timeout_ms * 1000;
    return 0;
}

static int start_request(struct driver *d, struct client *c)
{
    c->kind = kind_next(c, &d->cfg);
    if (kind_prepare(c, &d->cfg) != 0)
        return -1;
    c->start_us = now_us();
    c->resume_us = 0;
    if (curl_multi_add_handle(d->multi, c->easy) != CURLM_OK)
        return -1;
    c->is_busy = 1;
    d->busy++;
    d->st.sent++;
    d->st.kinds[c->kind].sent++;
    return 0;
}

/* Counts one finished request; returns 1 when it succeeded. */
static int record(struct driver *d, struct client *c, CURLcode res)
{
    struct stats *st = &d->st;
    int64_t end = now_us(), lat = end - c->start_us;
    long status = 0;
    int ok = 0;

    st->done++;
    if (st->n_lat < MAX_SAMPLES)
        st->lat_us[st->n_lat++] = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
    if (res == CURLE_OPERATION_TIMEDOUT) {
        st->hung++;
    } else if (res == CURLE_PARTIAL_FILE) {
        /* A body cut short of its Content-Length: how a download whose backend died after the
         * headers went out is reported to the client. A clear failure, not a transport fault. */
        st->cut++;
    } else if (res != CURLE_OK) {
        st->transport++;
        if (!st->first_other[0])
            snprintf(st->first_other, sizeof st->first_other, "%s: transport error: %s", kind_name(c->kind),
                     curl_easy_strerror(res));
    } else {
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 0 && status < 600)
            st->by_status[status]++;
        if (status >= 200 && status < 300) {
            ok = kind_check(c, &d->cfg, status);
            if (ok) {
                st->ok++;
                st->kinds[c->kind].ok++;
            } else {
                st->bad_body++;
                if (!st->first_other[0])
                    snprintf(st->first_other, sizeof st->first_other, "%s: %ld with a wrong body: %.180s",
                             kind_name(c->kind), status, c->resp ? c->resp : "");
            }
        } else if (status == 502) {
            st->s502++;
        } else if (status == 503) {
            st->s503++;
        } else if (status == 504) {
            st->s504++;
        } else {
            st->other_status++;
            if (!st->first_other[0])
                snprintf(st->first_other, sizeof st->first_other, "%s: status %ld: %.180s", kind_name(c->kind),
                         status, c->resp ? c->resp : "");
        }
        kind_after(c, status);
    }
    if (d->events)
        fprintf(d->events, "%.3f %s %ld %.3f\n", (double)end / 1e6, kind_name(c->kind), status, (double)lat / 1e3);
    return ok;
}

/* Handles every finished transfer: counts it and starts (or schedules) the client's next request. */
static int reap(struct driver *d, int64_t end_us)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left)) != NULL) {
        struct client *c = NULL;
        CURLcode res;
        if (m->msg != CURLMSG_DONE)
            continue;
        res = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        curl_multi_remove_handle(d->multi, m->easy_handle);
        c->is_busy = 0;
        d->busy--;
        if (!record(d, c, res) && d->pause_us > 0) {
            c->resume_us = now_us() + d->pause_us; /* a client backs off a little after a failure */
            continue;
        }
        if (now_us() < end_us && start_request(d, c) != 0)
            return -1;
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_ms(const struct stats *st, double p)
{
    size_t i;
    if (st->n_lat == 0)
        return 0;
    i = (size_t)(p * (double)(st->n_lat - 1) + 0.5);
    return st->lat_us[i] / 1000.0;
}

static void print_report(struct driver *d, double seconds)
{
    struct stats *st = &d->st;
    json_t *out, *kinds = json_object(), *statuses = json_object();
    char key[16];
    qsort(st->lat_us, st->n_lat, sizeof *st->lat_us, cmp_u32);
    for (int k = 0; k < KIND__COUNT; k++)
        json_object_set_new(kinds, kind_name((enum kind)k), json_pack("{s:I,s:I}", "sent", (json_int_t)st->kinds[k].sent,
                                                                    "ok", (json_int_t)st->kinds[k].ok));
    for (int s = 0; s < 600; s++)
        if (st->by_status[s]) {
            snprintf(key, sizeof key, "%d", s);
            json_object_set_new(statuses, key, json_integer((json_int_t)st->by_status[s]));
        }
    out = json_pack("{s:i,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:o,s:o,s:s}", "clients",
                    (int)d->n_clients, "seconds", seconds, "sent", (json_int_t)st->sent, "done",
                    (json_int_t)st->done, "ok", (json_int_t)st->ok, "bad_body", (json_int_t)st->bad_body, "s502",
                    (json_int_t)st->s502, "s503", (json_int_t)st->s503, "s504", (json_int_t)st->s504,
                    "other_status", (json_int_t)st->other_status, "transport", (json_int_t)st->transport, "cut",
                    (json_int_t)st->cut, "hung",
                    (json_int_t)st->hung, "p50_ms", percentile_ms(st, 0.50), "p99_ms", percentile_ms(st, 0.99),
                    "max_ms", st->n_lat ? st->lat_us[st->n_lat - 1] / 1000.0 : 0.0, "rate",
                    seconds > 0 ? (double)st->done / seconds : 0.0, "kinds", kinds, "statuses", statuses,
                    "first_problem", st->first_other);
    if (out) {
        char *text = json_dumps(out, JSON_COMPACT);
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(out);
    }
}

/* Runs the clients until end_us, then waits for the requests in flight until drain_us. */
static int run(struct driver *d, int64_t end_us, int64_t drain_us)
{
    struct epoll_event evs[256];
    int running = 0;
    for (unsigned i = 0; i < d->n_clients; i++)
        if (start_request(d, &d->clients[i]) != 0)
            return -1;
    while (d->busy > 0 || now_us() < end_us) {
        int64_t now = now_us(), wait_ms = 10;
        int n;
        if (now >= drain_us)
            break;
        if (d->timer_at_us >= 0 && (d->timer_at_us - now) / 1000 < wait_ms)
            wait_ms = d->timer_at_us > now ? (d->timer_at_us - now) / 1000 : 0;
        n = epoll_wait(d->epfd, evs, 256, (int)wait_ms);
        for (int i = 0; i < n; i++) {
            int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                        (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                        (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(d->multi, evs[i].data.fd, flags, &running);
        }
        if (d->timer_at_us >= 0 && now_us() >= d->timer_at_us) {
            d->timer_at_us = -1;
            curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        if (reap(d, end_us) != 0)
            return -1;
        now = now_us();
        for (unsigned i = 0; i < d->n_clients; i++) {
            struct client *c = &d->clients[i];
            if (!c->is_busy && c->resume_us && now >= c->resume_us && now < end_us && start_request(d, c) != 0)
                return -1;
        }
    }
    d->st.hung += d->busy; /* still unanswered at the drain deadline */
    return 0;
}

static int parse_mix(const char *text, unsigned w[4])
{
    static const char *const names[4] = {"echo", "time", "exec", "file"};
    char *copy = strdup(text), *save = NULL, *tok;
    int rc = 0;
    if (!copy)
        return -1;
    memset(w, 0, 4 * sizeof *w);
    for (tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int found = 0;
        if (!eq)
            rc = -1;
        for (int i = 0; rc == 0 && i < 4; i++)
            if ((size_t)(eq - tok) == strlen(names[i]) && strncmp(tok, names[i], strlen(names[i])) == 0) {
                w[i] = (unsigned)atoi(eq + 1);
                found = 1;
            }
        if (!found)
            rc = -1;
    }
    free(copy);
    return rc == 0 && w[0] + w[1] + w[2] + w[3] > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    static struct driver d;
    const char *url = NULL, *clients = "100", *seconds = "10", *mix = "echo=3,time=2,exec=2,file=3";
    const char *file_size = "4096", *prefix = "load", *token = NULL, *hang_ms = "30000", *events = NULL;
    const char *pause_ms = "20";
    const struct sg_option opts[] = {
        {"url", "SOCKGATE_LOAD_URL", "URL", "the gateway, http://127.0.0.1:PORT", &url, NULL, NULL},
        {"clients", "SOCKGATE_LOAD_CLIENTS", "N", "concurrent keep-alive clients", &clients, NULL, NULL},
        {"seconds", "SOCKGATE_LOAD_SECONDS", "S", "how long new requests are started", &seconds, NULL, NULL},
        {"mix", "SOCKGATE_LOAD_MIX", "K=W,...", "weights of echo, time, exec and file round trips", &mix, NULL, NULL},
        {"file-size", "SOCKGATE_LOAD_FILE_SIZE", "BYTES", "size of each uploaded file", &file_size, NULL, NULL},
        {"prefix", "SOCKGATE_LOAD_PREFIX", "NAME", "file names are NAME-cIDX", &prefix, NULL, NULL},
        {"token", "SOCKGATE_LOAD_TOKEN", "TOKEN", "send Authorization: Bearer TOKEN", &token, NULL, NULL},
        {"hang-ms", "SOCKGATE_LOAD_HANG_MS", "MS", "a request unanswered this long counts as hung", &hang_ms, NULL, NULL},
        {"error-pause-ms", "SOCKGATE_LOAD_ERROR_PAUSE_MS", "MS", "a client waits this long after a failure",
         &pause_ms, NULL, NULL},
        {"events", "SOCKGATE_LOAD_EVENTS", "FILE", "write 'END_S KIND STATUS LATENCY_MS' per request", &events,
         NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };
    uint64_t n_clients, secs, fsize, hang, pause;
    struct rlimit rl;
    int64_t end_us;
    int rc, status = 1;

    rc = sg_options_parse("sockgate-load", "sockgate-load --url URL [--clients N] [--seconds S] [--mix ...]",
                          "Drives the gateway with keep-alive clients doing checked echo, time, exec and file "
                          "round trips, and prints counts and latencies as JSON.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (!url || sg_parse_u64(clients, 1, MAX_CLIENTS, 0, &n_clients) != SG_OK ||
        sg_parse_u64(seconds, 0, 86400, 0, &secs) != SG_OK || sg_parse_u64(file_size, 64, 64u << 20, 1, &fsize) != SG_OK ||
        sg_parse_u64(hang_ms, 100, 3600000, 0, &hang) != SG_OK || sg_parse_u64(pause_ms, 0, 60000, 0, &pause) != SG_OK ||
        parse_mix(mix, d.cfg.weights) != 0) {
        fprintf(stderr, "sockgate-load: --url is required; --clients 1..%d, --file-size 64..64M, --mix like %s\n",
                MAX_CLIENTS, "echo=3,time=2,exec=2,file=3");
        return 2;
    }
    /* Best effort: a thousand clients need more descriptors than the usual soft limit of 1024. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    d.cfg.url = url;
    d.cfg.prefix = prefix;
    d.cfg.token = token && *token ? token : NULL;
    d.cfg.file_size = (size_t)fsize;
    d.cfg.hang_ms = (long)hang;
    d.pause_us = (long)pause * 1000;
    d.n_clients = (unsigned)n_clients;
    d.timer_at_us = -1;
    d.epfd = -1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    d.multi = curl_multi_init();
    d.clients = calloc(d.n_clients, sizeof *d.clients);
    d.st.lat_us = malloc(MAX_SAMPLES * sizeof *d.st.lat_us);
    d.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!d.multi || !d.clients || !d.st.lat_us || d.epfd < 0)
        goto out;
    if (events && !(d.events = fopen(events, "w"))) {
        fprintf(stderr, "sockgate-load: %s: %s\n", events, strerror(errno));
        goto out;
    }
    curl_multi_setopt(d.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(d.multi, CURLMOPT_SOCKETDATA, &d);
    curl_multi_setopt(d.multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(d.multi, CURLMOPT_TIMERDATA, &d);
    curl_multi_setopt(d.multi, CURLMOPT_MAXCONNECTS, (long)d.n_clients + 16);
    for (unsigned i = 0; i < d.n_clients; i++) {
        d.clients[i].idx = i;
        d.clients[i].rng = UINT64_C(0x2545f4914f6cdd1d) ^ ((uint64_t)(i + 1) * UINT64_C(0x9e3779b97f4a7c15));
        d.clients[i].easy = curl_easy_init();
        if (!d.clients[i].easy)
            goto out;
    }
    end_us = now_us() + (int64_t)secs * 1000000;
    if (run(&d, end_us, end_us + (int64_t)hang * 1000 + 2000000) != 0) {
        fprintf(stderr, "sockgate-load: out of memory or libcurl refused a handle\n");
        goto out;
    }
    print_report(&d, (double)secs);
    status = 0;
out:
    if (d.events)
        fclose(d.events);
    for (unsigned i = 0; d.clients && i < d.n_clients; i++) {
        if (d.clients[i].is_busy)
            curl_multi_remove_handle(d.multi, d.clients[i].easy);
        if (d.clients[i].easy)
            curl_easy_cleanup(d.clients[i].easy);
        curl_slist_free_all(d.clients[i].headers);
        free(d.clients[i].req);
        free(d.clients[i].resp);
    }
    if (d.multi)
        curl_multi_cleanup(d.multi);
    if (d.epfd >= 0)
        close(d.epfd);
    free(d.clients);
    free(d.st.lat_us);
    curl_global_cleanup();
    return status;
}
