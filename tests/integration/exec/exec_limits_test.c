/*
 * exec_limits_test.c - what sockgate-exec does to the processes it runs: timeouts that kill
 * a whole tree, the output cap, vanished clients, the process cap, the sandbox of each
 * command, 100 clients at once, and no zombie or descriptor left after any of it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/net.h"
#include "xt_util.h"

/* Allows sleep, sh and setsid: this file's server is the only one that does. */
static struct sg_proc server;
static int baseline_fds;

/*
 * Writes a sleep length that names one process of this run, "N.PID" seconds,
 * so a process left by an earlier, failed run can never pass for one of ours.
 */
static const char *mark(char buf[32], int n)
{
    snprintf(buf, 32, "%d.%d", n, (int)getpid());
    return buf;
}

/* Sends a framed exec with a timeout on a fresh connection and reads the reply. */
static void exec_with_timeout(const char *const argv[], int timeout_ms, struct xt_reply *r)
{
    struct xt_conn c;
    json_t *hdr = json_pack("{s:s, s:[], s:i}", "op", "exec", "argv", "timeout_ms", timeout_ms);
    for (int i = 0; argv[i]; i++)
        json_array_append_new(json_object_get(hdr, "argv"), json_string(argv[i]));
    xt_connect(&c, &server);
    xt_send_frame(&c, hdr, NULL, 0);
    CHECK_INT_EQ(xt_read(&c, r, 60000), SG_OK);
    xt_close(&c);
    json_decref(hdr);
}

/* SIGTERM at the timeout reaches the whole group: the shell and both of its sleeps. */
static void test_timeout_kills_tree(void)
{
    char a[32], b[32], script[128];
    const char *const argv[] = {"sh", "-c", script, NULL};
    struct xt_reply r;
    snprintf(script, sizeof script, "sleep %s & sleep %s; wait", mark(a, 8711), mark(b, 8712));
    exec_with_timeout(argv, 400, &r);
    CHECK(xt_err_code(&r) == NULL);
    CHECK(xt_true(&r, "timed_out"));
    CHECK_INT_EQ(xt_int(&r, "signal"), SIGTERM);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 128 + SIGTERM);
    xt_reply_free(&r);
    CHECK(xt_wait_gone(a, 5000));
    CHECK(xt_wait_gone(b, 5000));
}

/*
 * A tree that ignores SIGTERM gets SIGKILL after the grace period,
 * grandchildren included. The timeout leaves the shell time to reach its
 * trap on a loaded machine: a SIGTERM before it would end the shell itself.
 */
static void test_timeout_escalates_to_sigkill(void)
{
    char a[32], b[32], script[128];
    const char *const argv[] = {"sh", "-c", script, NULL};
    struct xt_reply r;
    snprintf(script, sizeof script, "trap '' TERM; sleep %s & sleep %s; wait", mark(a, 8721), mark(b, 8722));
    exec_with_timeout(argv, 2000, &r);
    CHECK(xt_true(&r, "timed_out"));
    CHECK_INT_EQ(xt_int(&r, "signal"), SIGKILL);
    xt_reply_free(&r);
    CHECK(xt_wait_gone(a, 5000));
    CHECK(xt_wait_gone(b, 5000));
}

/* A command that leaves a background process behind and exits: the leftover dies with the request. */
static void test_leftover_background_process_killed(void)
{
    char a[32], script[128];
    const char *const argv[] = {"sh", "-c", script, NULL};
    struct xt_reply r;
    snprintf(script, sizeof script, "sleep %s & echo started", mark(a, 8731));
    exec_with_timeout(argv, 30000, &r);
    xt_check_stdout(&r, "started\n");
    CHECK(!xt_true(&r, "timed_out"));
    xt_reply_free(&r);
    CHECK(xt_wait_gone(a, 5000));
}

/*
 * A process that leaves the group (setsid) and keeps the output pipe open is
 * out of reach: the reply still comes, once the drain period after the
 * leader's exit is over, with what was written. The leader waits until the
 * background job leads its own session (field 6 of /proc/PID/stat): had it
 * not got that far when the leader exits, the group kill would still reach it.
 */
static void test_escaped_process_does_not_hold_reply(void)
{
    char a[32], script[256];
    const char *const argv[] = {"sh", "-c", script, NULL};
    struct xt_reply r;
    pid_t escaped;
    snprintf(script, sizeof script,
             "setsid sleep %s & until [ \"$(cut -d' ' -f6 /proc/$!/stat)\" = $! ]; do sleep 0.05; done; echo hi",
             mark(a, 8781));
    exec_with_timeout(argv, 30000, &r);
    xt_check_stdout(&r, "hi\n");
    CHECK(!xt_true(&r, "timed_out"));
    xt_reply_free(&r);
    /* The documented limit: it is still running, so the test ends it itself. */
    escaped = xt_find_proc(a);
    CHECK(escaped > 0);
    kill(escaped, SIGKILL);
    CHECK(xt_wait_gone(a, 5000));
}

/* Output past --max-output (1 MiB here) kills the command and the reply is the first MiB, marked truncated. */
static void test_output_over_cap_truncated(void)
{
    const char *const seq[] = {"seq", "1", "2000000", NULL};
    const char *const exact[] = {"head", "-c", "1048576", "/dev/zero", NULL};
    struct xt_reply r;
    size_t off = 0;
    char num[16];
    xt_exec(&server, seq, NULL, 0, &r);
    CHECK(xt_true(&r, "truncated"));
    CHECK_INT_EQ(xt_int(&r, "total_size"), 1048576);
    CHECK_INT_EQ(r.len, 1048576);
    /* The kept bytes are the start of the real output. */
    for (unsigned i = 1; off + 16 < r.len; i++) {
        int n = snprintf(num, sizeof num, "%u\n", i);
        CHECK(memcmp(r.body + off, num, (size_t)n) == 0);
        off += (size_t)n;
    }
    xt_reply_free(&r);
    /* Exactly the cap is not over it. */
    xt_exec(&server, exact, NULL, 0, &r);
    CHECK(!xt_true(&r, "truncated"));
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    CHECK_INT_EQ(r.len, 1048576);
    xt_reply_free(&r);
}

/* Closes the connection while its command runs: the command must die. */
static void vanish_during(const char *raw_line, const char *const argv[], const char *marker)
{
    struct xt_conn c;
    xt_connect(&c, &server);
    if (raw_line)
        xt_send_raw(&c, raw_line, strlen(raw_line));
    else
        xt_send_exec(&c, argv, NULL, 0);
    CHECK(xt_wait_proc(marker, 5000) > 0);
    xt_close(&c);
    CHECK(xt_wait_gone(marker, 5000));
}

static void test_vanished_client_kills_command(void)
{
    char a[32], b[32], c[32], line[64], script[128];
    const char *const framed[] = {"sleep", mark(a, 8741), NULL};
    const char *const tree[] = {"sh", "-c", script, NULL};
    snprintf(line, sizeof line, "sleep %s", mark(b, 8742));
    snprintf(script, sizeof script, "sleep %s; echo never", mark(c, 8743));
    vanish_during(NULL, framed, a);
    vanish_during(line, NULL, b);
    vanish_during(NULL, tree, c);
}

/* Reads a "Max ..." line of /proc/PID/limits; returns the soft value or -1. */
static long limit_of(pid_t pid, const char *name)
{
    char path[64], line[256];
    long soft = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, strlen(name)) == 0 && sscanf(line + 26, "%ld", &soft) != 1)
            soft = -2;
    fclose(f);
    return soft;
}

/* Reads a "Name:\tvalue" line of /proc/PID/status into buf. */
static void status_field(pid_t pid, const char *name, char *buf, size_t buflen)
{
    char path[64], line[256];
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    buf[0] = '\0';
    f = fopen(path, "r");
    CHECK(f != NULL);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':')
            snprintf(buf, buflen, "%s", line + strlen(name) + 2);
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

/* A running command, seen from /proc: own process group, limits, scrubbed environment, no inherited signal state. */
static void test_command_sandbox_in_proc(void)
{
    char a[32];
    const char *const argv[] = {"sleep", mark(a, 8751), NULL};
    struct xt_conn c;
    char path[64], buf[4096], field[128];
    int64_t deadline;
    pid_t pid;
    FILE *f;
    size_t n;

    xt_connect(&c, &server);
    xt_send_exec(&c, argv, NULL, 0);
    pid = xt_wait_proc(a, 5000);
    CHECK(pid > 0);
    CHECK_INT_EQ(getpgid(pid), pid);
    CHECK(getsid(pid) == getsid(server.pid));
    /* The limits land with prlimit right after the spawn: wait for them, bounded. */
    deadline = sg_now_ms() + 5000;
    while (limit_of(pid, "Max open files") != 64 && sg_now_ms() < deadline)
        usleep(10000);
    CHECK_INT_EQ(limit_of(pid, "Max open files"), 64);
    CHECK_INT_EQ(limit_of(pid, "Max cpu time"), 30);
    CHECK_INT_EQ(limit_of(pid, "Max processes"), 4096);
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    f = fopen(path, "r");
    CHECK(f != NULL);
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    CHECK_STR_EQ(buf, "PATH=/usr/local/bin:/usr/bin:/bin");
    CHECK(strncmp(buf + strlen(buf) + 1, "LANG=", 5) == 0);
    CHECK_INT_EQ(strlen(buf) + 1 + strlen(buf + strlen(buf) + 1) + 1, n);
    /* Nothing the server blocks or ignores (SIGINT, SIGTERM, SIGPIPE) reaches the command. */
    status_field(pid, "SigBlk", field, sizeof field);
    CHECK_STR_EQ(field, "0000000000000000");
    /*
     * glibc's posix_spawn sets its own two internal signals (32 and 33) to
     * SIG_IGN in every child it makes, and the program's glibc takes them
     * back when it needs them: those two bits are not ours to judge.
     */
    status_field(pid, "SigIgn", field, sizeof field);
    CHECK_INT_EQ(strtoull(field, NULL, 16) & ~0x180000000ull, 0);
    /* Only stdin, stdout and stderr are open in the command. */
    CHECK_INT_EQ(sg_proc_fd_count(pid), 3);
    xt_close(&c);
    CHECK(xt_wait_gone(a, 5000));
}

/* With --max-procs 2, no more than two commands ever run at once; the others wait and then run. */
static int finished_clients;

static void *slow_client(void *arg)
{
    const char *const argv[] = {"sh", "-c", "sleep 0.2; echo done", NULL};
    struct xt_reply r;
    (void)arg;
    xt_exec(&server, argv, NULL, 0, &r);
    xt_check_stdout(&r, "done\n");
    xt_reply_free(&r);
    __atomic_add_fetch(&finished_clients, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_max_procs_queue(void)
{
    pthread_t t[6];
    int64_t deadline = sg_now_ms() + 30000;
    int max_seen = 0;
    for (int i = 0; i < 6; i++)
        CHECK(pthread_create(&t[i], NULL, slow_client, NULL) == 0);
    /* Each command is a child of the server until it is reaped, and its slot is freed only after that. */
    while (__atomic_load_n(&finished_clients, __ATOMIC_SEQ_CST) < 6 && sg_now_ms() < deadline) {
        int now = xt_children_at_once(server.pid);
        if (now > max_seen)
            max_seen = now;
        usleep(2000);
    }
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    fprintf(stderr, "  at most %d commands seen running at once\n", max_seen);
    CHECK_INT_EQ(finished_clients, 6);
    CHECK(max_seen >= 1);
    CHECK(max_seen <= 2);
}

/* 100 clients at once, each with its own connection: every one gets its own answer. */
static void *numbered_client(void *arg)
{
    long i = (long)arg;
    char num[32], want[40];
    const char *const argv[] = {"echo", "client", num, NULL};
    struct xt_reply r;
    snprintf(num, sizeof num, "%ld", i);
    snprintf(want, sizeof want, "client %ld\n", i);
    xt_exec(&server, argv, NULL, 0, &r);
    xt_check_stdout(&r, want);
    xt_reply_free(&r);
    return NULL;
}

static void test_hundred_concurrent_requests(void)
{
    pthread_t t[100];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (long i = 0; i < 100; i++)
        CHECK(pthread_create(&t[i], &attr, numbered_client, (void *)i) == 0);
    for (int i = 0; i < 100; i++)
        pthread_join(t[i], NULL);
    pthread_attr_destroy(&attr);
}

/* After everything above: no zombie, no child at all, and the server holds as many descriptors as at start. */
static void test_nothing_left_behind(void)
{
    int64_t deadline = sg_now_ms() + 10000;
    int fds;
    CHECK_INT_EQ(xt_zombies_of(server.pid), 0);
    CHECK_INT_EQ(xt_children_of(server.pid), 0);
    /* Connection threads close their sockets as they leave; give them a bounded moment. */
    while ((fds = sg_proc_fd_count(server.pid)) != baseline_fds && sg_now_ms() < deadline)
        usleep(20000);
    CHECK_INT_EQ(fds, baseline_fds);
}

/* SIGTERM to the server while a command runs: the command dies and the server exits 0. */
static void test_stop_kills_running_command(void)
{
    char a[32];
    const char *const argv[] = {"sleep", mark(a, 8771), NULL};
    struct xt_conn c;
    xt_connect(&c, &server);
    xt_send_exec(&c, argv, NULL, 0);
    CHECK(xt_wait_proc(a, 5000) > 0);
    xt_stop(&server);
    CHECK(xt_wait_gone(a, 5000));
    xt_close(&c);
}

int main(void)
{
    const char *const args[] = {"--allow", "sleep,sh,setsid,seq,echo,head,cat", "--max-output", "1M", "--kill-grace-ms",
                                "500", "--max-procs", "2", "--rlimit-nofile", "64", "--rlimit-cpu", "30",
                                "--rlimit-nproc", "4096",
                                /* test_escaped_process_does_not_hold_reply's script reads /proc/$!/stat */
                                "--sandbox-read", "/proc", NULL};
    signal(SIGPIPE, SIG_IGN);
    xt_start(&server, args);
    baseline_fds = sg_proc_fd_count(server.pid);
    CHECK(baseline_fds > 0);
    RUN_TEST(test_timeout_kills_tree);
    RUN_TEST(test_timeout_escalates_to_sigkill);
    RUN_TEST(test_leftover_background_process_killed);
    RUN_TEST(test_escaped_process_does_not_hold_reply);
    RUN_TEST(test_output_over_cap_truncated);
    RUN_TEST(test_vanished_client_kills_command);
    RUN_TEST(test_command_sandbox_in_proc);
    RUN_TEST(test_max_procs_queue);
    RUN_TEST(test_hundred_concurrent_requests);
    RUN_TEST(test_nothing_left_behind);
    RUN_TEST(test_stop_kills_running_command); /* stops the server: keep it last */
    return TESTS_DONE();
}
