/* server.h - sockgate-exec as a library: allowlisted commands over the framed protocol, no shell. */
#ifndef SOCKGATE_EXEC_SERVER_H
#define SOCKGATE_EXEC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "sockgate/service.h"

#define EXEC_DEFAULT_LISTEN "127.0.0.1:9003"

/*
 * Settings of one exec server. Strings and the allow array are borrowed and
 * only need to outlive exec_server_create(), which copies what it keeps.
 */
struct exec_config {
    const char *listen;         /* "HOST:PORT"; port 0 picks one */
    const char *const *allow;   /* bare names or absolute paths; NULL: EXEC_DEFAULT_ALLOW */
    size_t allow_count;
    uint64_t timeout_ms;        /* per command unless the request asks for less or more */
    uint64_t max_timeout_ms;    /* the most a request may ask for */
    uint64_t kill_grace_ms;     /* SIGTERM to SIGKILL after a timeout */
    uint64_t max_output;        /* stdout + stderr kept per command; more kills it */
    uint64_t max_input;         /* the largest stdin body a request may send */
    unsigned max_procs;         /* commands running at once; 0: two per core */
    unsigned max_conns;         /* connections served at once; more get a "busy" frame */
    uint64_t idle_timeout_ms;   /* close a connection silent between requests this long; 0: never */
    const char *workdir;        /* cwd of commands; NULL: a private directory removed at destroy */
    struct exec_limits limits;  /* rlimits put on every command */
    struct exec_sandbox_config sandbox; /* mode, extra grants, protected paths (programs: filled in by create) */
};

/*
 * Fills cfg with the defaults: 127.0.0.1:9003, the default allowlist, 10 s
 * timeout capped at 60 s, 2 s grace, 16 MiB output and input, two commands
 * per core, 256 connections, 5 min idle, a private workdir, and limits of
 * 60 CPU seconds, 256 open files and 512 processes, sandbox best-effort.
 */
void exec_config_defaults(struct exec_config *cfg);

/*
 * Checks cfg, resolves the allowlist, prepares the workdir and binds the TCP
 * listener. On success returns SG_OK and a new server in *srv, which the
 * caller drives through exec_service_ops. On failure writes why into err,
 * returns an sg_err value and leaves nothing behind.
 */
int exec_server_create(const struct exec_config *cfg, void **srv, char *err, size_t errlen);

/* Returns the sandbox commands run in (borrowed; valid until destroy): what /readyz reports. */
const struct exec_sandbox *exec_server_sandbox(void *srv);

/* Returns the directory commands run in (borrowed; valid until destroy). */
const char *exec_server_workdir(void *srv);

/* The service operations of a server made by exec_server_create(). */
extern const struct sg_service_ops exec_service_ops;

#endif
