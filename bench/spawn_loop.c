/*
 * spawn_loop.c - the peer for the exec benchmark: a bare posix_spawn-and-waitpid loop,
 * nothing around it, so sockgate-exec's commands per second have a ceiling to compare with.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "sockgate/error.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"

extern char **environ;

#define MAX_THREADS 256

/* Shared by the spawning threads; the counters are updated atomically. */
struct loop {
    const char *path;
    uint64_t count;    /* spawns wanted in all */
    int64_t deadline;  /* sg_now_ms() limit, -1: none */
    uint64_t claimed;  /* spawns handed out so far */
    uint64_t done;
    uint64_t failed;
};

static void *spawner(void *arg)
{
    struct loop *l = arg;
    char *const argv[] = {(char *)l->path, NULL};
    for (;;) {
        pid_t pid;
        int status, rc;
        if (__atomic_fetch_add(&l->claimed, 1, __ATOMIC_RELAXED) >= l->count)
            break;
        if (l->deadline >= 0 && sg_now_ms() >= l->deadline)
            break;
        rc = posix_spawn(&pid, l->path, NULL, NULL, argv, environ);
        if (rc != 0) {
            fprintf(stderr, "sockgate-spawn-loop: %s: %s\n", l->path, strerror(rc));
            __atomic_fetch_add(&l->failed, 1, __ATOMIC_RELAXED);
            break;
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            __atomic_fetch_add(&l->failed, 1, __ATOMIC_RELAXED);
        else
            __atomic_fetch_add(&l->done, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = "/usr/bin/true", *count = "2000", *duration = "0", *threads = "1";
    uint64_t n_count, n_duration, n_threads;
    pthread_t tids[MAX_THREADS];
    struct loop l;
    int64_t start, end;
    double seconds;
    int rc;
    const struct sg_option opts[] = {
        {"command", "SOCKGATE_BENCH_COMMAND", "PATH", "absolute path of the program to run (no arguments)", &path,
         NULL, NULL},
        {"count", "SOCKGATE_BENCH_COUNT", "N", "spawns in all", &count, NULL, NULL},
        {"duration", "SOCKGATE_BENCH_DURATION", "DURATION",
         "stop after this long even if count is not reached (0: no limit)", &duration, NULL, NULL},
        {"duration-ms", "SOCKGATE_BENCH_DURATION_MS", "MS", "milliseconds", &duration, NULL, NULL},
        {"concurrency", "SOCKGATE_BENCH_CONCURRENCY", "N", "threads spawning and waiting side by side", &threads, NULL,
         NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-spawn-loop",
                          "sockgate-spawn-loop [--command PATH] [--count N] [--duration DURATION] [--concurrency N]",
                          "Spawns PATH with posix_spawn and waits for it, over and over, and prints the rate as "
                          "one JSON line: the ceiling sockgate-exec is measured against.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_parse_u64(count, 1, UINT64_C(1) << 40, 1, &n_count) != SG_OK ||
        sg_parse_u64(threads, 1, MAX_THREADS, 0, &n_threads) != SG_OK || path[0] != '/') {
        fprintf(stderr, "sockgate-spawn-loop: --count and --concurrency (1..%d) must be positive numbers, "
                        "--duration a duration, --command an absolute path\n", MAX_THREADS);
        return 2;
    }
    if (sg_flag_duration("sockgate-spawn-loop", "duration", duration, 0, UINT64_C(1) << 40, 0, &n_duration) != 0)
        return 2;
    memset(&l, 0, sizeof l);
    l.path = path;
    l.count = n_count;
    start = sg_now_ms();
    l.deadline = n_duration ? start + (int64_t)n_duration : -1;
    for (uint64_t i = 0; i < n_threads; i++)
        if (pthread_create(&tids[i], NULL, spawner, &l) != 0) {
            fprintf(stderr, "sockgate-spawn-loop: cannot start thread %llu\n", (unsigned long long)i);
            n_threads = i;
            break;
        }
    for (uint64_t i = 0; i < n_threads; i++)
        pthread_join(tids[i], NULL);
    end = sg_now_ms();
    seconds = (double)(end - start) / 1000.0;
    {
        json_t *out = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f}", "tool", "sockgate-spawn-loop",
                                "command", path, "concurrency", (json_int_t)n_threads, "count",
                                (json_int_t)l.done, "failed", (json_int_t)l.failed, "seconds", seconds,
                                "per_second", seconds > 0 ? (double)l.done / seconds : 0.0);
        if (out) {
            json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
            putchar('\n');
        }
        json_decref(out);
    }
    return l.failed ? 1 : 0;
}
