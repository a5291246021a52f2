/* job.c - spawning a command safely and ending it: process groups, pidfd, prlimit, waitpid on one pid. */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"

void exec_job_close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Makes the server's end of a pipe non-blocking; the child's end keeps its own file description. */
static int set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/*
 * Moves the child's end of a pipe above 2. When an embedding program runs with
 * stdin, stdout or stderr closed, a new pipe can get one of those numbers, and
 * the child's dup2 onto 0, 1, 2 would then overwrite it before using it.
 */
static int above_stdio(int *fd)
{
    int moved;
    if (*fd > STDERR_FILENO)
        return 0;
    moved = fcntl(*fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    if (moved < 0)
        return -1;
    close(*fd);
    *fd = moved;
    return 0;
}

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    /* pidfds are close-on-exec by definition; ENOSYS before Linux 5.3 selects the waitid tick. */
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/*
 * Applies the limits to the running child. posix_spawn cannot set rlimits,
 * so they land a few microseconds after the exec, while the new program is
 * still in its dynamic loader. The window is accepted on purpose: only
 * allowlisted programs run, the group kill, timeout and output cap hold
 * regardless, and the alternative (an extra helper exec per command)
 * would double the cost of every short command. Best effort per limit.
 */
static void apply_limits(pid_t pid, const struct exec_limits *lim)
{
    struct { int resource; unsigned soft; unsigned extra; } table[] = {
        {RLIMIT_CPU, lim->cpu_seconds, 1}, /* SIGXCPU first, SIGKILL a second later */
        {RLIMIT_NOFILE, lim->max_files, 0},
        {RLIMIT_NPROC, lim->max_procs, 0},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        struct rlimit rl;
        if (table[i].soft == 0)
            continue;
        rl.rlim_cur = table[i].soft;
        rl.rlim_max = (rlim_t)table[i].soft + table[i].extra;
        if (prlimit(pid, table[i].resource, &rl, NULL) != 0)
            sg_debug("prlimit %d on pid %d: %s", table[i].resource, (int)pid, strerror(errno));
    }
}

/* Sets what the child starts with: own group, no blocked or ignored signals inherited from the server. */
static int prepare_attr(posix_spawnattr_t *attr)
{
    sigset_t none, all;
    int rc = posix_spawnattr_init(attr);
    if (rc != 0)
        return rc;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if ((rc = posix_spawnattr_setpgroup(attr, 0)) != 0 || (rc = posix_spawnattr_setsigmask(attr, &none)) != 0 ||
        (rc = posix_spawnattr_setsigdefault(attr, &all)) != 0 ||
        (rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF)) != 0)
        posix_spawnattr_destroy(attr);
    return rc;
}

/*
 * Wires the child's descriptors 0, 1, 2 and its cwd; everything else the
 * server holds is closed. Descriptors opened once (not paths) keep the work
 * done between clone and exec, while the spawning thread waits, small.
 */
static int prepare_actions(posix_spawn_file_actions_t *fa, int in_r, int out_w, int err_w,
                           const struct exec_spawn_env *env)
{
    int rc = posix_spawn_file_actions_init(fa);
    if (rc != 0)
        return rc;
    rc = posix_spawn_file_actions_adddup2(fa, in_r >= 0 ? in_r : env->devnull_fd, STDIN_FILENO);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(fa, out_w, STDOUT_FILENO);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(fa, err_w, STDERR_FILENO);
    if (rc == 0)
        rc = posix_spawn_file_actions_addfchdir_np(fa, env->workdir_fd);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Our own descriptors are all close-on-exec; this also covers whatever an embedding program leaks. */
    if (rc == 0)
        rc = posix_spawn_file_actions_addclosefrom_np(fa, STDERR_FILENO + 1);
#endif
    if (rc != 0)
        posix_spawn_file_actions_destroy(fa);
    return rc;
}

int exec_job_spawn(struct exec_job *j, const char *path, char *const argv[], const struct exec_spawn_env *env,
                   int with_stdin, char *err, size_t errlen)
{
    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int have_fa = 0, have_attr = 0, rc, result = SG_ERR_SYS;
    pid_t pid;

    memset(j, 0, sizeof *j);
    j->pidfd = j->stdin_fd = j->stdout_fd = j->stderr_fd = -1;
    if ((with_stdin && pipe2(in_p, O_CLOEXEC) != 0) || pipe2(out_p, O_CLOEXEC) != 0 ||
        pipe2(err_p, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "cannot make pipes: %s", strerror(errno));
        goto out;
    }
    if ((with_stdin && (set_nonblock(in_p[1]) != 0 || above_stdio(&in_p[0]) != 0)) || set_nonblock(out_p[0]) != 0 ||
        set_nonblock(err_p[0]) != 0 || above_stdio(&out_p[1]) != 0 || above_stdio(&err_p[1]) != 0) {
        snprintf(err, errlen, "cannot set up pipes: %s", strerror(errno));
        goto out;
    }
    rc = prepare_actions(&fa, in_p[0], out_p[1], err_p[1], env);
    if (rc == 0) {
        have_fa = 1;
        rc = prepare_attr(&attr);
        have_attr = rc == 0;
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot prepare the spawn: %s", strerror(rc));
        goto out;
    }
    j->started_ms = sg_now_ms();
    rc = posix_spawn(&pid, path, &fa, &attr, argv, env->envp);
    if (rc != 0) {
        /* glibc reports exec failures (a binary removed since start-up, a bad workdir) here. */
        snprintf(err, errlen, "cannot run %s: %s", path, strerror(rc));
        result = rc == ENOENT ? SG_ERR_NOT_FOUND : SG_ERR_SYS;
        goto out;
    }
    j->pid = pid;
    j->pidfd = open_pidfd(pid);
    apply_limits(pid, env->limits);
    j->stdin_fd = in_p[1];
    j->stdout_fd = out_p[0];
    j->stderr_fd = err_p[0];
    in_p[1] = out_p[0] = err_p[0] = -1;
    result = SG_OK;
out:
    if (have_fa)
        posix_spawn_file_actions_destroy(&fa);
    if (have_attr)
        posix_spawnattr_destroy(&attr);
    for (int i = 0; i < 2; i++) {
        exec_job_close_fd(&in_p[i]);
        exec_job_close_fd(&out_p[i]);
        exec_job_close_fd(&err_p[i]);
    }
    return result;
}

void exec_job_signal(struct exec_job *j, int sig)
{
    if (j->pid > 0 && !j->reaped)
        kill(-j->pid, sig); /* best effort: ESRCH means the group is already gone */
}

int exec_job_has_exited(struct exec_job *j)
{
    siginfo_t si;
    if (j->reaped)
        return 1;
    /* The pidfd only wakes the caller's poll; waitid without reaping is the one answer for both cases. */
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)j->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno == ECHILD; /* someone else reaped it (SIGCHLD ignored by an embedding program) */
    return si.si_pid == j->pid;
}

void exec_job_reap(struct exec_job *j)
{
    int status = 0;
    pid_t r;
    if (j->pid <= 0 || j->reaped)
        return;
    /* The leader is a zombie or still running: its group id is still ours to signal. */
    kill(-j->pid, SIGKILL);
    do
        r = waitpid(j->pid, &status, 0);
    while (r < 0 && errno == EINTR);
    j->status = r == j->pid ? status : -1; /* -1: collected elsewhere, status unknown */
    j->reaped = 1;
    j->ended_ms = sg_now_ms();
    exec_job_close_fd(&j->pidfd);
}

void exec_job_destroy(struct exec_job *j)
{
    exec_job_reap(j);
    exec_job_close_fd(&j->pidfd);
    exec_job_close_fd(&j->stdin_fd);
    exec_job_close_fd(&j->stdout_fd);
    exec_job_close_fd(&j->stderr_fd);
}
