/* harness.c - start and stop real programs for integration tests. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sockgate/net.h"

const char *sg_test_bin(const char *prog, char *buf, size_t buflen)
{
    const char *dir = getenv("SOCKGATE_BIN_DIR");
    /* Load generators are built next door, in build/bench (bench/CMakeLists.txt); programs in build/bin. */
    snprintf(buf, buflen, "%s/../bench/%s", dir ? dir : "build/bin", prog);
    if (access(buf, X_OK) != 0)
        snprintf(buf, buflen, "%s/%s", dir ? dir : "build/bin", prog);
    return buf;
}

/* Children started and not known to be reaped; grown as needed, freed never (the process is ending). */
static pid_t *started;
static size_t nstarted, started_cap;

static void kill_started(void)
{
    for (size_t i = 0; i < nstarted; i++) {
        int status;
        /* Only a child not reaped yet is still ours: its number cannot have been reused. */
        if (started[i] > 0 && waitpid(started[i], &status, WNOHANG) == 0) {
            kill(started[i], SIGKILL);
            waitpid(started[i], &status, 0);
        }
    }
}

void sg_test_kill_at_exit(pid_t pid)
{
    if (started_cap == 0)
        atexit(kill_started);
    for (size_t i = 0; i < nstarted; i++)
        if (started[i] <= 0) {
            started[i] = pid;
            return;
        }
    if (nstarted == started_cap) {
        size_t cap = started_cap ? 2 * started_cap : 32;
        pid_t *grown = realloc(started, cap * sizeof *grown);
        if (!grown) {
            /* best effort: PR_SET_PDEATHSIG in the child still kills it when we exit */
            fprintf(stderr, "out of memory tracking child %d\n", (int)pid);
            return;
        }
        started = grown;
        started_cap = cap;
    }
    started[nstarted++] = pid;
}

void sg_test_forget(pid_t pid)
{
    for (size_t i = 0; i < nstarted; i++)
        if (started[i] == pid)
            started[i] = 0;
}

static void dump_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f)
        return;
    fprintf(stderr, "---- %s ----\n", path);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

/* Finds "listening on HOST:PORT" (or unix:PATH) in the log; returns 1 and fills p when found. */
static int find_listening(struct sg_proc *p)
{
    FILE *f = fopen(p->log_path, "r");
    char line[2048];
    int found = 0;
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *at = strstr(line, "listening on ");
        char *colon;
        if (!at)
            continue;
        at += strlen("listening on ");
        at[strcspn(at, " \t\r\n\"")] = '\0';
        /* An HTTPS listener says so: "listening on https://HOST:PORT". */
        p->is_https = strncmp(at, "https://", 8) == 0;
        if (p->is_https)
            at += 8;
        snprintf(p->addr, sizeof p->addr, "%s", at);
        if (strncmp(at, "unix:", 5) == 0 && at[5]) {
            p->host[0] = '\0';
            p->port = 0;
            found = 1;
            continue;
        }
        colon = strrchr(at, ':');
        if (!colon)
            continue;
        *colon = '\0';
        if (at[0] == '[') {
            at++;
            at[strcspn(at, "]")] = '\0';
        }
        snprintf(p->host, sizeof p->host, "%s", at);
        p->port = (uint16_t)atoi(colon + 1);
        found = p->port != 0;
    }
    fclose(f);
    return found;
}

int sg_proc_start(struct sg_proc *p, const char *const argv[], int timeout_ms)
{
    char bin[512];
    char tmpl[] = "/tmp/sockgate-test-log-XXXXXX";
    int64_t deadline = sg_now_ms() + timeout_ms;
    int fd;

    memset(p, 0, sizeof *p);
    fd = mkstemp(tmpl);
    if (fd < 0)
        return -1;
    snprintf(p->log_path, sizeof p->log_path, "%s", tmpl);
    sg_test_bin(argv[0], bin, sizeof bin);
    p->pid = fork();
    if (p->pid < 0) {
        close(fd);
        return -1;
    }
    if (p->pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* A test that fails and exits must not leave its servers running (and holding ctest's pipes). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(fd);
    while (sg_now_ms() < deadline) {
        int status;
        if (find_listening(p)) {
            sg_test_kill_at_exit(p->pid);
            return 0;
        }
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            fprintf(stderr, "%s exited before listening (status %d)\n", argv[0], status);
            dump_log(p->log_path);
            p->pid = 0;
            return -1;
        }
        usleep(10 * 1000);
    }
    fprintf(stderr, "%s did not print 'listening on' within %d ms\n", argv[0], timeout_ms);
    dump_log(p->log_path);
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
    return -1;
}

int sg_proc_stop(struct sg_proc *p, int timeout_ms)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    int status = 0;
    if (p->pid <= 0)
        return -1;
    sg_test_forget(p->pid); /* reaped below in every case */
    kill(p->pid, SIGTERM);
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        if (r < 0 && errno != EINTR) {
            p->pid = 0;
            return -1;
        }
        if (sg_now_ms() >= deadline) {
            fprintf(stderr, "pid %d ignored SIGTERM for %d ms; killing it\n", (int)p->pid, timeout_ms);
            dump_log(p->log_path);
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            break;
        }
        usleep(10 * 1000);
    }
    p->pid = 0;
    if (WIFEXITED(status)) {
        if (WEXITSTATUS(status) == 0)
            unlink(p->log_path);
        else
            dump_log(p->log_path);
        return WEXITSTATUS(status);
    }
    dump_log(p->log_path);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

long sg_proc_rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

int sg_proc_fd_count(pid_t pid)
{
    char path[64];
    struct dirent *e;
    int n = 0;
    DIR *d;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

uint16_t sg_test_hold_port(int type, uint16_t port, int *fd)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    socklen_t len = sizeof sin;
    int s = socket(AF_INET, type | SOCK_CLOEXEC, 0), one = 1;
    uint16_t held = 0;

    *fd = -1;
    if (s < 0)
        return 0;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&sin, sizeof sin) < 0 || getsockname(s, (struct sockaddr *)&sin, &len) < 0)
        goto out;
    /* Connected to itself, a UDP socket is not the match for any other sender. */
    if (type == SOCK_DGRAM && connect(s, (struct sockaddr *)&sin, sizeof sin) < 0)
        goto out;
    held = ntohs(sin.sin_port);
    *fd = s;
    s = -1;
out:
    if (s >= 0)
        close(s);
    return held;
}

int sg_test_tmpdir(char *buf, size_t buflen)
{
    char tmpl[] = "/tmp/sockgate-test-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    snprintf(buf, buflen, "%s", tmpl);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: clean-up only */
    return 0;
}

void sg_test_rmtree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
