/*
 * exec_load.c - a load driver for sockgate-exec over the native framed protocol: each
 * connection sends one exec request, reads the whole reply, and sends the next.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"

#define MAX_CONNS 256
#define MAX_ARGS 16
#define REPLY_TIMEOUT_MS 60000

/* Shared by the client threads; the counters are updated atomically. */
struct load {
    struct sg_addr addr;
    json_t *request;   /* the same request every time */
    uint8_t *wire;     /* request encoded once, so the driver spends its time waiting, not encoding */
    size_t wire_len;
    uint64_t count;    /* requests wanted in all */
    int64_t deadline;  /* sg_now_ms() limit, -1: none */
    uint64_t claimed;
    uint64_t done;
    uint64_t failed;
};

/* Reads one reply; returns 0 when it is a result with exit code 0, -1 otherwise (after printing why). */
static int read_reply(struct sg_frame_reader *r)
{
    int ok = 0;
    for (;;) {
        enum sg_frame_event ev;
        const uint8_t *chunk;
        size_t len;
        int rc = sg_frame_reader_next(r, &ev, &chunk, &len, sg_now_ms() + REPLY_TIMEOUT_MS);
        if (rc != SG_OK) {
            fprintf(stderr, "sockgate-exec-load: reading a reply: %s\n", sg_strerror(rc));
            return -1;
        }
        if (ev == SG_FRAME_HEADER) {
            const json_t *h = sg_frame_decoder_header(&r->dec);
            char msg[256];
            int64_t code = -1;
            if (sg_frame_header_error(h, msg, sizeof msg) != SG_OK)
                fprintf(stderr, "sockgate-exec-load: the server said: %s\n", msg);
            else if (sg_header_int(h, "exit_code", INT64_MIN, INT64_MAX, &code) != SG_OK || code != 0)
                fprintf(stderr, "sockgate-exec-load: the command exited with %lld\n", (long long)code);
            else
                ok = 1;
        } else if (ev == SG_FRAME_END) {
            return ok ? 0 : -1;
        }
    }
}

static void *client(void *arg)
{
    struct load *l = arg;
    struct sg_frame_reader *reader = malloc(sizeof *reader);
    char err[256];
    int fd = -1;

    if (!reader || sg_connect(&l->addr, SOCK_STREAM, 5000, &fd, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sockgate-exec-load: connect: %s\n", reader ? err : "out of memory");
        __atomic_fetch_add(&l->failed, 1, __ATOMIC_RELAXED);
        free(reader);
        return NULL;
    }
    sg_frame_reader_init(reader, fd, 0);
    for (;;) {
        if (__atomic_fetch_add(&l->claimed, 1, __ATOMIC_RELAXED) >= l->count)
            break;
        if (l->deadline >= 0 && sg_now_ms() >= l->deadline)
            break;
        if (sg_write_all(fd, l->wire, l->wire_len, sg_now_ms() + REPLY_TIMEOUT_MS) != SG_OK || read_reply(reader) != 0) {
            __atomic_fetch_add(&l->failed, 1, __ATOMIC_RELAXED);
            break;
        }
        __atomic_fetch_add(&l->done, 1, __ATOMIC_RELAXED);
    }
    sg_frame_reader_free(reader);
    free(reader);
    close(fd);
    return NULL;
}

/* Builds {"op":"exec","argv":[words of command]}; returns NULL when command has no word. */
static json_t *build_request(const char *command)
{
    json_t *req = json_pack("{s:s, s:[]}", "op", "exec", "argv"), *argv = json_object_get(req, "argv");
    char *copy = strdup(command), *save = NULL;
    int n = 0;
    for (char *w = copy ? strtok_r(copy, " ", &save) : NULL; w && n < MAX_ARGS; w = strtok_r(NULL, " ", &save), n++)
        json_array_append_new(argv, json_string(w));
    free(copy);
    if (n == 0) {
        json_decref(req);
        return NULL;
    }
    return req;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:9003", *command = "true", *count = "2000", *duration = "0", *conns = "1";
    uint64_t n_count, n_duration, n_conns;
    pthread_t tids[MAX_CONNS];
    struct load l;
    char err[256];
    int64_t start, end;
    double seconds;
    int rc;
    const struct sg_option opts[] = {
        {"addr", "SOCKGATE_BENCH_ADDR", "HOST:PORT", "the sockgate-exec server", &addr, NULL, NULL},
        {"command", "SOCKGATE_BENCH_COMMAND", "CMD", "the command to run, words split on spaces", &command, NULL, NULL},
        {"count", "SOCKGATE_BENCH_COUNT", "N", "requests in all", &count, NULL, NULL},
        {"duration", "SOCKGATE_BENCH_DURATION", "DURATION",
         "stop after this long even if count is not reached (0: no limit)", &duration, NULL, NULL},
        {"duration-ms", "SOCKGATE_BENCH_DURATION_MS", "MS", "milliseconds", &duration, NULL, NULL},
        {"concurrency", "SOCKGATE_BENCH_CONCURRENCY", "N", "connections sending requests side by side", &conns, NULL,
         NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-exec-load",
                          "sockgate-exec-load [--addr HOST:PORT] [--command CMD] [--count N] [--duration DURATION] "
                          "[--concurrency N]",
                          "Runs CMD on a sockgate-exec server over and over through the framed protocol and prints "
                          "the commands per second as one JSON line.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_parse_u64(count, 1, UINT64_C(1) << 40, 1, &n_count) != SG_OK ||
        sg_parse_u64(conns, 1, MAX_CONNS, 0, &n_conns) != SG_OK) {
        fprintf(stderr, "sockgate-exec-load: --count and --concurrency (1..%d) must be positive numbers, "
                        "--duration a duration\n", MAX_CONNS);
        return 2;
    }
    if (sg_flag_duration("sockgate-exec-load", "duration", duration, 0, UINT64_C(1) << 40, 0, &n_duration) != 0)
        return 2;
    memset(&l, 0, sizeof l);
    if (sg_addr_parse(addr, &l.addr, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sockgate-exec-load: --addr: %s\n", err);
        return 2;
    }
    l.request = build_request(command);
    if (!l.request || sg_frame_encode_header(l.request, 0, &l.wire, &l.wire_len) != SG_OK) {
        fprintf(stderr, "sockgate-exec-load: --command needs at least one word\n");
        json_decref(l.request);
        return 2;
    }
    l.count = n_count;
    start = sg_now_ms();
    l.deadline = n_duration ? start + (int64_t)n_duration : -1;
    for (uint64_t i = 0; i < n_conns; i++)
        if (pthread_create(&tids[i], NULL, client, &l) != 0) {
            fprintf(stderr, "sockgate-exec-load: cannot start thread %llu\n", (unsigned long long)i);
            n_conns = i;
            break;
        }
    for (uint64_t i = 0; i < n_conns; i++)
        pthread_join(tids[i], NULL);
    end = sg_now_ms();
    seconds = (double)(end - start) / 1000.0;
    {
        json_t *out = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f}", "tool", "sockgate-exec-load", "command", command,
                                "concurrency", (json_int_t)n_conns, "count", (json_int_t)l.done, "failed",
                                (json_int_t)l.failed, "seconds", seconds, "per_second",
                                seconds > 0 ? (double)l.done / seconds : 0.0);
        if (out) {
            json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
            putchar('\n');
        }
        json_decref(out);
    }
    json_decref(l.request);
    free(l.wire);
    return l.failed ? 1 : 0;
}
