/* job.h - one running command: clone+exec confined, in its own process group, its pipes, its end. */
#ifndef SOCKGATE_EXEC_JOB_H
#define SOCKGATE_EXEC_JOB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sandbox.h"

/* Resource limits put on every command (0 leaves that limit as inherited). */
struct exec_limits {
    unsigned cpu_seconds; /* RLIMIT_CPU: SIGXCPU at this many seconds, SIGKILL one later */
    unsigned max_files;   /* RLIMIT_NOFILE */
    unsigned max_procs;   /* RLIMIT_NPROC: counts every process of the server's user */
};

/*
 * A spawned command. Its descriptors are owned by the job and are all
 * non-blocking on the server's side; the child sees ordinary blocking ones.
 * The job is used by one thread only: the one that spawned it waits for it
 * (waitpid on this pid alone, never waitpid(-1), so code embedding the
 * server keeps its own children).
 */
struct exec_job {
    pid_t pid;      /* also the process group id; 0 once reaped */
    int pidfd;      /* readable when the leader exits; -1 on kernels without pidfd_open */
    int stdin_fd;   /* write end of the command's stdin, -1 when it reads /dev/null or it is closed */
    int stdout_fd;  /* read end of the command's stdout, -1 once closed */
    int stderr_fd;  /* read end of the command's stderr, -1 once closed */
    int status;     /* wait status once reaped */
    int reaped;     /* 1 once waitpid collected the leader */
    int64_t started_ms;
    int64_t ended_ms;
};

/* Descriptors the server opens once and every spawn reuses (borrowed by the job). */
struct exec_spawn_env {
    char *const *envp;   /* "PATH=...", "LANG=...", NULL */
    int workdir_fd;      /* the commands' cwd, entered with fchdir in the child */
    int devnull_fd;      /* /dev/null for commands without a stdin body */
    const struct exec_limits *limits;
    const struct exec_sandbox *sandbox; /* entered in every child; NULL: none */
};

/*
 * Starts path with argv (borrowed) in its own process group with env's
 * environment and cwd, stdin from a pipe when with_stdin (else /dev/null),
 * stdout and stderr to pipes, default signal dispositions, an empty signal
 * mask, no other descriptor of the server inherited, and env's limits and
 * sandbox entered before the exec (a sandbox step that fails means the
 * command does not run). Returns SG_OK, or SG_ERR_SYS /
 * SG_ERR_NOT_FOUND with why in err and nothing left behind.
 */
int exec_job_spawn(struct exec_job *j, const char *path, char *const argv[], const struct exec_spawn_env *env,
                   int with_stdin, char *err, size_t errlen);

/*
 * Sends sig to the job's whole process group. Does nothing once the leader
 * is reaped: until then its pid (the group id) cannot be reused, afterwards
 * it could name someone else's group.
 */
void exec_job_signal(struct exec_job *j, int sig);

/*
 * Returns 1 when the leader has exited (it stays a zombie until
 * exec_job_reap), 0 while it runs. Without a pidfd this asks waitid(WNOWAIT)
 * on the job's pid, so the caller polls with a short tick instead.
 */
int exec_job_has_exited(struct exec_job *j);

/*
 * Kills what is left of the group (SIGKILL, before the group id can be
 * reused) and collects the leader's status with waitpid on its pid. Blocks
 * only until the kernel has torn the leader down. Safe to call twice.
 */
void exec_job_reap(struct exec_job *j);

/* Closes one of the job's descriptors (*fd becomes -1). */
void exec_job_close_fd(int *fd);

/* Reaps the job if needed (killing its group) and closes every descriptor. */
void exec_job_destroy(struct exec_job *j);

#endif
