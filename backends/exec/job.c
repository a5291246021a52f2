/* job.c - spawning a command confined and ending it: clone+exec, process groups, pidfd, waitpid on one pid. */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

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

/* Everything the child needs between clone and exec, prepared by the parent; err/stage come back. */
struct child_args {
    const char *path;
    char *const *argv;
    const struct exec_spawn_env *env;
    int in_fd, out_fd, err_fd;
    int err;           /* errno of the step that failed, 0 when the exec happened */
    const char *stage; /* that step */
};

/* Bytes of stack the child runs on, carved from the spawning thread's own (it is suspended meanwhile). */
#define CHILD_STACK_BYTES (32u * 1024u)

/*
 * Puts the limits on the calling process, before it execs: the command never
 * runs a single instruction without them. Best effort per limit (raw
 * prlimit64, async-signal-safe).
 */
static void child_limits(const struct exec_limits *lim)
{
    const struct { int resource; unsigned soft; unsigned extra; } table[] = {
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
        syscall(SYS_prlimit64, 0, table[i].resource, &rl, NULL);
    }
}

/*
 * The child, on the parent's memory (CLONE_VM) while the parent waits
 * (CLONE_VFORK): only async-signal-safe calls, no allocation, no locks.
 * Order matters: the sandbox needs /proc (namespace maps) and the ruleset
 * descriptor, so it comes before closing descriptors and after fchdir (the
 * workdir descriptor was opened before the restriction, so entering it is
 * allowed whatever the rules say); the limits come last.
 */
static int child_main(void *p)
{
    struct child_args *a = p;
    const struct exec_spawn_env *env = a->env;
    struct sigaction dfl;
    sigset_t none;

    /* Every signal arrives blocked (see spawn); handlers of the server must not run on its memory. */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* glibc's own 32 and 33 answer EINVAL: harmless */
    a->stage = "setpgid";
    if (setpgid(0, 0) != 0)
        goto fail;
    a->stage = "dup2";
    if (dup2(a->in_fd >= 0 ? a->in_fd : env->devnull_fd, STDIN_FILENO) < 0 || dup2(a->out_fd, STDOUT_FILENO) < 0 ||
        dup2(a->err_fd, STDERR_FILENO) < 0)
        goto fail;
    a->stage = "fchdir";
    if (fchdir(env->workdir_fd) != 0)
        goto fail;
    if (env->sandbox && (a->err = exec_sandbox_enter(env->sandbox, &a->stage)) != 0)
        goto out;
    /* Our own descriptors are all close-on-exec; this also covers whatever an embedding program leaks. */
    syscall(SYS_close_range, STDERR_FILENO + 1, ~0u, 0);
    /* Last: the sandbox opens files under the server's descriptor numbers, which RLIMIT_NOFILE may be below. */
    child_limits(env->limits);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    a->stage = "exec";
    execve(a->path, a->argv, env->envp);
fail:
    a->err = errno;
out:
    _exit(127);
}

int exec_job_spawn(struct exec_job *j, const char *path, char *const argv[], const struct exec_spawn_env *env,
                   int with_stdin, char *err, size_t errlen)
{
    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    struct child_args a;
    sigset_t all, old;
    int result = SG_ERR_SYS;
    pid_t pid;
    /* The child's stack: part of this thread's (512 KiB, see server.c), unused while clone waits. */
    _Alignas(16) char stack[CHILD_STACK_BYTES];

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
    memset(&a, 0, sizeof a);
    a.path = path;
    a.argv = argv;
    a.env = env;
    a.in_fd = in_p[0];
    a.out_fd = out_p[1];
    a.err_fd = err_p[1];
    /*
     * clone + exec by hand instead of posix_spawn: the sandbox and the limits
     * must be entered between the two, which posix_spawn has no hook for.
     * CLONE_VFORK suspends this thread until the exec (or _exit), so the
     * child may use this thread's memory and report failures in `a`; all
     * signals stay blocked around it so no handler runs on shared memory.
     */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    j->started_ms = sg_now_ms();
    pid = clone(child_main, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
#if defined(__SANITIZE_ADDRESS__)
    /* The child's instrumented frames poisoned this memory's shadow (shared): later frames here would trip on it. */
    ASAN_UNPOISON_MEMORY_REGION(stack, sizeof stack);
#endif
    if (pid < 0) {
        snprintf(err, errlen, "cannot start %s: %s", path, strerror(errno));
        goto out;
    }
    if (a.err != 0) {
        /* It never ran: collect the child (it _exited with 127) and say which step failed. */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (!strcmp(a.stage, "exec")) {
            snprintf(err, errlen, "cannot run %s: %s", path, strerror(a.err));
            result = a.err == ENOENT ? SG_ERR_NOT_FOUND : SG_ERR_SYS;
        } else {
            snprintf(err, errlen, "cannot confine %s: %s: %s", path, a.stage, strerror(a.err));
        }
        goto out;
    }
    j->pid = pid;
    j->pidfd = open_pidfd(pid);
    j->stdin_fd = in_p[1];
    j->stdout_fd = out_p[0];
    j->stderr_fd = err_p[0];
    in_p[1] = out_p[0] = err_p[0] = -1;
    result = SG_OK;
out:
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
