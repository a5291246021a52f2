/* main.c - sockgate-exec: the tutorial's remote command server, with an allowlist instead of a shell. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

#define MAX_ALLOW 256

/* The --allow values collected so far (each one copied: the parser's buffer is temporary). */
struct allow_list {
    const char *items[MAX_ALLOW];
    size_t count;
};

static int add_allow(const char *value, void *ctx)
{
    struct allow_list *l = ctx;
    char *copy;
    if (l->count == MAX_ALLOW)
        return -1;
    copy = strdup(value);
    if (!copy)
        return -1;
    l->items[l->count++] = copy;
    return 0;
}

#define P "sockgate-exec"

int main(int argc, char **argv)
{
    const char *drain = NULL;
    struct exec_config cfg;
    struct allow_list allow = {.count = 0};
    const char *listen = EXEC_DEFAULT_LISTEN, *timeout = "10s", *max_timeout = "60s", *grace = "2s";
    const char *max_output = "16M", *max_input = "16M", *max_procs = "0", *max_conns = "256";
    const char *idle = "5m", *workdir = NULL, *cpu = "60", *files = "256", *nproc = "512";
    const char *log_format = "text", *sandbox = "best-effort";
    struct allow_list sb_read = {.count = 0}, sb_write = {.count = 0}, sb_protect = {.count = 0};
    uint64_t v[11];
    char err[512];
    void *srv = NULL;
    int rc, status = 2;
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_EXEC_LISTEN", "HOST:PORT|unix:PATH", "TCP address (port 0: any) or UNIX socket to serve", &listen, NULL, NULL},
        {"allow", "SOCKGATE_EXEC_ALLOW", "CMD[,CMD...]",
         "commands that may run: bare names (found in " EXEC_CHILD_PATH ") or absolute paths; repeatable "
         "(default " EXEC_DEFAULT_ALLOW ")",
         NULL, add_allow, &allow},
        {"timeout", "SOCKGATE_EXEC_TIMEOUT", "DURATION", "time a command may run unless the request asks otherwise",
         &timeout, NULL, NULL},
        {"timeout-ms", "SOCKGATE_EXEC_TIMEOUT_MS", "MS", "milliseconds", &timeout, NULL, NULL},
        {"max-timeout", "SOCKGATE_EXEC_MAX_TIMEOUT", "DURATION", "the longest timeout a request may ask for",
         &max_timeout, NULL, NULL},
        {"max-timeout-ms", "SOCKGATE_EXEC_MAX_TIMEOUT_MS", "MS", "milliseconds", &max_timeout, NULL, NULL},
        {"kill-grace", "SOCKGATE_EXEC_KILL_GRACE", "DURATION", "SIGTERM to SIGKILL delay after a timeout", &grace,
         NULL, NULL},
        {"kill-grace-ms", "SOCKGATE_EXEC_KILL_GRACE_MS", "MS", "milliseconds", &grace, NULL, NULL},
        {"max-output", "SOCKGATE_EXEC_MAX_OUTPUT", "SIZE", "stdout and stderr kept per command; more kills it",
         &max_output, NULL, NULL},
        {"max-input", "SOCKGATE_EXEC_MAX_INPUT", "SIZE", "the largest stdin body a request may send", &max_input, NULL, NULL},
        {"max-procs", "SOCKGATE_EXEC_MAX_PROCS", "N", "commands running at once; others wait (0: two per core)",
         &max_procs, NULL, NULL},
        {"max-conns", "SOCKGATE_EXEC_MAX_CONNS", "N", "connections served at once; more get a busy error",
         &max_conns, NULL, NULL},
        {"idle-timeout", "SOCKGATE_EXEC_IDLE_TIMEOUT", "DURATION", "close connections idle this long (0: never)",
         &idle, NULL, NULL},
        {"idle-timeout-ms", "SOCKGATE_EXEC_IDLE_TIMEOUT_MS", "MS", "milliseconds", &idle, NULL, NULL},
        {"workdir", "SOCKGATE_EXEC_WORKDIR", "DIR", "cwd of commands (default: a private directory removed at exit)",
         &workdir, NULL, NULL},
        {"rlimit-cpu", "SOCKGATE_EXEC_RLIMIT_CPU", "DURATION",
         "CPU time limit of a command, whole seconds (0: inherited; a bare number: seconds)", &cpu, NULL, NULL},
        {"rlimit-nofile", "SOCKGATE_EXEC_RLIMIT_NOFILE", "N", "open files limit of a command (0: inherited)", &files, NULL, NULL},
        {"rlimit-nproc", "SOCKGATE_EXEC_RLIMIT_NPROC", "N",
         "process limit of a command, counted over the server's user (0: inherited)", &nproc, NULL, NULL},
        {"sandbox", "SOCKGATE_EXEC_SANDBOX", "strict|best-effort|off",
         "confine commands with Landlock and a private network: best-effort uses what the kernel offers, strict "
         "refuses to start without Landlock, off runs them unconfined",
         &sandbox, NULL, NULL},
        {"sandbox-read", "SOCKGATE_EXEC_SANDBOX_READ", "DIR", "let commands read DIR too (repeatable)", NULL,
         add_allow, &sb_read},
        {"sandbox-write", "SOCKGATE_EXEC_SANDBOX_WRITE", "DIR", "let commands read and write DIR too (repeatable)",
         NULL, add_allow, &sb_write},
        {"sandbox-protect", "SOCKGATE_EXEC_SANDBOX_PROTECT", "PATH",
         "never let commands read PATH (a file backend's root, a token file), even inside a granted directory, "
         "unless a --sandbox-read/--sandbox-write names it exactly (repeatable)",
         NULL, add_allow, &sb_protect},
        {"drain", "SOCKGATE_DRAIN", "DURATION",
         "on SIGTERM keep serving this long before stopping, so balancers that resolve this replica move away first "
         "(default 0)",
         &drain, NULL, NULL},
        {"drain-ms", "SOCKGATE_DRAIN_MS", "MS", "milliseconds", &drain, NULL, NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format on stderr", &log_format, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    sg_signals_block();
    rc = sg_options_parse("sockgate-exec",
                          "sockgate-exec [--listen HOST:PORT] [--allow CMD[,CMD...]]... [--timeout DURATION]\n"
                          "                     [--max-timeout DURATION] [--kill-grace DURATION] [--max-output SIZE]\n"
                          "                     [--max-input SIZE] [--max-procs N] [--max-conns N] "
                          "[--idle-timeout DURATION]\n"
                          "                     [--workdir DIR] [--rlimit-cpu DURATION] [--rlimit-nofile N] "
                          "[--rlimit-nproc N]\n"
                          "                     [--sandbox strict|best-effort|off] [--sandbox-read DIR]... "
                          "[--sandbox-write DIR]...\n"
                          "                     [--sandbox-protect PATH]... [--drain DURATION] [--log-format text|json]",
                          "Runs allowlisted commands for clients of the tutorial's remote command protocol "
                          "(raw command lines or framed requests) without ever starting a shell.",
                          opts, argc, argv, NULL);
    if (rc != 0) {
        status = rc == 1 ? 0 : 2;
        goto out;
    }
    if (sg_service_set_drain("sockgate-exec", drain) != 0) {
        status = 2;
        goto out;
    }
    if (sg_log_setup("sockgate-exec", log_format) != SG_OK)
        goto out;
    if (sg_flag_duration(P, "timeout", timeout, 1, 86400000, 0, &v[0]) ||
        sg_flag_duration(P, "max-timeout", max_timeout, 1, 86400000, 0, &v[1]) ||
        sg_flag_duration(P, "kill-grace", grace, 0, 3600000, 0, &v[2]) ||
        sg_flag_size(P, "max-output", max_output, 1, UINT64_C(1) << 32, &v[3]) ||
        sg_flag_size(P, "max-input", max_input, 0, UINT64_C(1) << 40, &v[4]) ||
        sg_flag_count(P, "max-procs", max_procs, 0, 4096, &v[5]) || sg_flag_count(P, "max-conns", max_conns, 1, 100000, &v[6]) ||
        sg_flag_duration(P, "idle-timeout", idle, 0, UINT64_C(1) << 40, 0, &v[7]) ||
        sg_flag_duration(P, "rlimit-cpu", cpu, 0, (UINT64_C(1) << 30) * 1000, 1000, &v[8]) ||
        sg_flag_count(P, "rlimit-nofile", files, 0, 1u << 30, &v[9]) ||
        sg_flag_count(P, "rlimit-nproc", nproc, 0, 1u << 30, &v[10]))
        goto out;
    exec_config_defaults(&cfg);
    if (exec_sandbox_mode_parse(sandbox, &cfg.sandbox.mode) != 0) {
        fprintf(stderr, "sockgate-exec: --sandbox must be strict, best-effort or off, not '%s'\n", sandbox);
        goto out;
    }
    cfg.sandbox.read = sb_read.items;
    cfg.sandbox.n_read = sb_read.count;
    cfg.sandbox.write = sb_write.items;
    cfg.sandbox.n_write = sb_write.count;
    cfg.sandbox.protect = sb_protect.items;
    cfg.sandbox.n_protect = sb_protect.count;
    cfg.listen = listen;
    cfg.allow = allow.count ? allow.items : NULL;
    cfg.allow_count = allow.count;
    cfg.timeout_ms = v[0];
    cfg.max_timeout_ms = v[1];
    cfg.kill_grace_ms = v[2];
    cfg.max_output = v[3];
    cfg.max_input = v[4];
    cfg.max_procs = (unsigned)v[5];
    cfg.max_conns = (unsigned)v[6];
    cfg.idle_timeout_ms = v[7];
    cfg.workdir = workdir;
    cfg.limits.cpu_seconds = (unsigned)((v[8] + 999) / 1000); /* RLIMIT_CPU counts whole seconds */
    cfg.limits.max_files = (unsigned)v[9];
    cfg.limits.max_procs = (unsigned)v[10];
    rc = exec_server_create(&cfg, &srv, err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "sockgate-exec: %s\n", err);
        status = rc == SG_ERR_INVALID ? 2 : 1; /* a bad --listen or --allow is a usage error; a busy port is not */
        goto out;
    }
    status = sg_service_main(&exec_service_ops, srv);
out:
    for (size_t i = 0; i < allow.count; i++)
        free((char *)allow.items[i]);
    for (size_t i = 0; i < sb_read.count; i++)
        free((char *)sb_read.items[i]);
    for (size_t i = 0; i < sb_write.count; i++)
        free((char *)sb_write.items[i]);
    for (size_t i = 0; i < sb_protect.count; i++)
        free((char *)sb_protect.items[i]);
    return status;
}
