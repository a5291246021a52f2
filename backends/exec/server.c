/* server.c - the exec service: settings, the accept loop, one thread per connection, shutdown. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exec_internal.h"
#include "reply.h"
#include "workdir.h"
#include "sockgate/accept.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/wake.h"

/* Connection threads need little stack: buffers live on the heap. */
#define CONN_STACK_BYTES (512u * 1024u)

void exec_config_defaults(struct exec_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = EXEC_DEFAULT_LISTEN;
    cfg->timeout_ms = 10000;
    cfg->max_timeout_ms = 60000;
    cfg->kill_grace_ms = 2000;
    cfg->max_output = 16u * 1024u * 1024u;
    cfg->max_input = 16u * 1024u * 1024u;
    cfg->max_conns = 256;
    cfg->idle_timeout_ms = 300000;
    cfg->limits.cpu_seconds = 60;
    cfg->limits.max_files = 256;
    cfg->limits.max_procs = 512;
}

/* A LANG value is passed on only when it looks like a locale name; anything else becomes C.UTF-8. */
static const char *child_lang(void)
{
    const char *lang = getenv("LANG");
    if (!lang || !*lang || strlen(lang) > 64)
        return "C.UTF-8";
    for (const char *p = lang; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '.' || *p == '-' || *p == '@'))
            return "C.UTF-8";
    return lang;
}

/* Makes the private workdir, or checks and keeps the given one. */
static int setup_workdir(struct exec_server *srv, const char *given, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (given) {
        struct stat st;
        if (!realpath(given, path) || stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "--workdir '%s' is not a directory", given);
            return SG_ERR_INVALID;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        int rc;
        if (!tmp || !*tmp)
            tmp = "/tmp";
        exec_workdir_sweep(tmp);
        rc = exec_workdir_make(tmp, path, sizeof path, &srv->workdir_lock_fd, err, errlen);
        if (rc != SG_OK)
            return rc;
        srv->own_workdir = 1;
    }
    srv->workdir = strdup(path);
    if (!srv->workdir) {
        if (srv->own_workdir)
            rmdir(path);
        srv->own_workdir = 0;
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

/* Resolves cfg's allowlist, or the default list when cfg gives none. */
static int setup_policy(struct exec_server *srv, const struct exec_config *cfg, char *err, size_t errlen)
{
    const char *entries[64];
    char defaults[] = EXEC_DEFAULT_ALLOW, *save = NULL;
    size_t n = 0;
    char names[1024];
    int rc;

    if (cfg->allow && cfg->allow_count > 0) {
        rc = exec_policy_init(&srv->policy, cfg->allow, cfg->allow_count, 0, err, errlen);
    } else {
        for (char *t = strtok_r(defaults, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save))
            entries[n++] = t;
        rc = exec_policy_init(&srv->policy, entries, n, 1, err, errlen);
    }
    if (rc == SG_OK) {
        exec_policy_describe(&srv->policy, names, sizeof names);
        sg_info("allowed commands: %s", names);
    }
    return rc;
}

/* Builds the sandbox around the workdir, with every allowed program readable and executable. */
static int setup_sandbox(struct exec_server *srv, const struct exec_config *cfg, char *err, size_t errlen)
{
    struct exec_sandbox_config sc = cfg->sandbox;
    const char **programs = calloc(srv->policy.count + 1, sizeof *programs);
    int rc;
    if (!programs) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    for (size_t i = 0; i < srv->policy.count; i++)
        programs[i] = srv->policy.items[i].path;
    sc.programs = programs;
    sc.n_programs = srv->policy.count;
    rc = exec_sandbox_init(&srv->sandbox, &sc, srv->workdir, err, errlen);
    free(programs);
    return rc;
}

/* Returns fd moved above 2 (closing the original), fd itself when it already is, or -1. */
static int fd_above_stdio(int fd)
{
    int moved;
    if (fd < 0 || fd > STDERR_FILENO)
        return fd;
    moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    close(fd);
    return moved;
}

static int check_config(const struct exec_config *cfg, char *err, size_t errlen)
{
    if (cfg->timeout_ms == 0 || cfg->max_timeout_ms == 0 || cfg->timeout_ms > cfg->max_timeout_ms) {
        snprintf(err, errlen, "the timeout must be from 1 ms to the maximum timeout (%llu ms)",
                 (unsigned long long)cfg->max_timeout_ms);
        return SG_ERR_INVALID;
    }
    if (cfg->max_timeout_ms > 86400000ull || cfg->kill_grace_ms > 3600000ull) {
        snprintf(err, errlen, "the maximum timeout is one day and the kill grace one hour");
        return SG_ERR_INVALID;
    }
    if (cfg->max_output == 0 || cfg->max_output > (1ull << 32) || cfg->max_conns == 0) {
        snprintf(err, errlen, "the output cap must be from 1 byte to 4 GiB and max connections at least 1");
        return SG_ERR_INVALID;
    }
    return SG_OK;
}

int exec_server_create(const struct exec_config *cfg, void **out, char *err, size_t errlen)
{
    struct exec_server *srv = NULL;
    struct sg_addr addr;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int rc;

    *out = NULL;
    rc = check_config(cfg, err, errlen);
    if (rc != SG_OK)
        return rc;
    srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    srv->listen_fd = srv->stop_fd = srv->drain_fd = srv->slot_fd = srv->workdir_lock_fd = -1;
    srv->spawn.workdir_fd = srv->spawn.devnull_fd = -1;
    srv->sandbox.ruleset_fd = -1;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->idle, NULL);
    srv->timeout_ms = (int64_t)cfg->timeout_ms;
    srv->max_timeout_ms = (int64_t)cfg->max_timeout_ms;
    srv->kill_grace_ms = (int64_t)cfg->kill_grace_ms;
    srv->max_output = (size_t)cfg->max_output;
    srv->max_input = cfg->max_input;
    srv->max_procs = cfg->max_procs ? cfg->max_procs : (unsigned)(2 * (cores > 0 ? cores : 1));
    srv->max_conns = cfg->max_conns;
    srv->idle_timeout_ms = (int64_t)cfg->idle_timeout_ms;
    srv->limits = cfg->limits;
    if ((rc = setup_policy(srv, cfg, err, errlen)) != SG_OK || (rc = setup_workdir(srv, cfg->workdir, err, errlen)) != SG_OK ||
        (rc = setup_sandbox(srv, cfg, err, errlen)) != SG_OK)
        goto out;
    if (asprintf(&srv->envp[0], "PATH=%s", EXEC_CHILD_PATH) < 0 || asprintf(&srv->envp[1], "LANG=%s", child_lang()) < 0) {
        srv->envp[0] = srv->envp[1] = NULL;
        snprintf(err, errlen, "out of memory");
        rc = SG_ERR_NOMEM;
        goto out;
    }
    srv->spawn.envp = srv->envp;
    srv->spawn.limits = &srv->limits;
    srv->spawn.sandbox = &srv->sandbox;
    /* Both are dup2 sources in every child, so they must not sit on 0, 1 or 2 (see job.c). */
    srv->spawn.workdir_fd = fd_above_stdio(open(srv->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    srv->spawn.devnull_fd = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (srv->spawn.workdir_fd < 0 || srv->spawn.devnull_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", srv->spawn.workdir_fd < 0 ? srv->workdir : "/dev/null",
                 strerror(errno));
        rc = SG_ERR_SYS;
        goto out;
    }
    /* Never drained: it stays readable for every connection thread that watches it too. */
    if ((rc = sg_wake_open(&srv->stop_fd, err, errlen)) != SG_OK ||
        (rc = sg_wake_open(&srv->drain_fd, err, errlen)) != SG_OK)
        goto out;
    srv->slot_fd = eventfd(srv->max_procs, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
    if (srv->slot_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        rc = SG_ERR_SYS;
        goto out;
    }
    if ((rc = sg_addr_parse(cfg->listen, &addr, err, errlen)) != SG_OK ||
        (rc = sg_listen(&addr, SOCK_STREAM, &srv->listen_fd, err, errlen)) != SG_OK)
        goto out;
    sg_info("commands run in %s, at most %u at once", srv->workdir, srv->max_procs);
    *out = srv;
out:
    if (rc != SG_OK)
        exec_service_ops.destroy(srv);
    return rc;
}

const struct exec_sandbox *exec_server_sandbox(void *p)
{
    return &((struct exec_server *)p)->sandbox;
}

const char *exec_server_workdir(void *p)
{
    return ((struct exec_server *)p)->workdir;
}

/* Hands a new connection to its own thread, or turns it away when the server is full. */
static void start_conn(struct exec_server *srv, int fd, const struct sockaddr *sa, socklen_t salen)
{
    struct exec_conn *c = NULL;
    pthread_attr_t attr;
    pthread_t thread;
    int rc;

    pthread_mutex_lock(&srv->lock);
    if (srv->live >= srv->max_conns) {
        pthread_mutex_unlock(&srv->lock);
        goto busy;
    }
    srv->live++;
    pthread_mutex_unlock(&srv->lock);
    c = malloc(sizeof *c);
    if (!c)
        goto undo;
    memset(c, 0, offsetof(struct exec_conn, in));
    c->srv = srv;
    c->fd = fd; /* sg_accept set TCP_NODELAY: each reply leaves in one sendmsg, so coalescing only delays it */
    sg_addr_format(sa, salen, c->peer, sizeof c->peer);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, CONN_STACK_BYTES);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&thread, &attr, exec_conn_main, c);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return;
    sg_error("cannot start a connection thread: %s", strerror(rc));
    free(c);
undo:
    pthread_mutex_lock(&srv->lock);
    srv->live--;
    pthread_mutex_unlock(&srv->lock);
busy:
    {
        /* best effort: one small frame into an empty socket buffer, then the door closes */
        static const char msg[] = "too many connections";
        json_t *h = sg_frame_error_header(SG_ERR_BUSY, msg, NULL);
        uint8_t *buf = NULL;
        size_t len = 0;
        if (h && sg_frame_encode_header(h, 0, &buf, &len) == SG_OK && send(fd, buf, len, MSG_NOSIGNAL) < 0)
            sg_debug("busy frame not sent: %s", strerror(errno));
        free(buf);
        json_decref(h);
        close(fd);
    }
}

static int exec_run_loop(void *p)
{
    struct exec_server *srv = p;
    for (;;) {
        struct pollfd fds[2] = {{.fd = srv->listen_fd, .events = POLLIN}, {.fd = srv->stop_fd, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            sg_error("poll: %s", strerror(errno));
            break;
        }
        if (fds[1].revents)
            break;
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd = sg_accept(srv->listen_fd, (struct sockaddr *)&ss, &sl);
            if (fd >= 0) {
                start_conn(srv, fd, (struct sockaddr *)&ss, sl);
                continue;
            }
            if (fd == SG_ACCEPT_PAUSE) {
                /* Out of descriptors: wait, but wake at once for a stop. */
                struct pollfd stop = {.fd = srv->stop_fd, .events = POLLIN};
                poll(&stop, 1, SG_ACCEPT_PAUSE_MS);
            }
            break;
        }
    }
    /* Every connection thread watches stop_fd too: each kills and reaps its command, then leaves. */
    pthread_mutex_lock(&srv->lock);
    while (srv->live > 0)
        pthread_cond_wait(&srv->idle, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    return SG_OK;
}

static void exec_stop(void *p)
{
    sg_wake_signal(((struct exec_server *)p)->drain_fd); /* idle connections waiting on it close too */
    sg_wake_signal(((struct exec_server *)p)->stop_fd);
}

/* Idle connections close now (they wait on drain_fd between requests), busy ones after their answer. */
static void exec_drain(void *p)
{
    atomic_store(&((struct exec_server *)p)->is_draining, 1);
    sg_wake_signal(((struct exec_server *)p)->drain_fd);
}

static void exec_destroy(void *p)
{
    struct exec_server *srv = p;
    if (!srv)
        return;
    sg_close_listener(&srv->listen_fd);
    sg_wake_close(&srv->stop_fd);
    sg_wake_close(&srv->drain_fd);
    if (srv->slot_fd >= 0)
        close(srv->slot_fd);
    if (srv->spawn.workdir_fd >= 0)
        close(srv->spawn.workdir_fd);
    if (srv->spawn.devnull_fd >= 0)
        close(srv->spawn.devnull_fd);
    if (srv->own_workdir && srv->workdir && exec_workdir_remove(srv->workdir) != 0)
        sg_warn("could not remove the workdir %s", srv->workdir);
    /* Unlocked only once removed, so no sweep can race the removal. */
    if (srv->workdir_lock_fd >= 0)
        close(srv->workdir_lock_fd);
    exec_sandbox_free(&srv->sandbox);
    free(srv->workdir);
    free(srv->envp[0]);
    free(srv->envp[1]);
    exec_policy_free(&srv->policy);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->idle);
    free(srv);
}

static int exec_listen_fd(void *p)
{
    return ((struct exec_server *)p)->listen_fd;
}

const struct sg_service_ops exec_service_ops = {
    .name = "exec",
    .run = exec_run_loop,
    .stop = exec_stop,
    .destroy = exec_destroy,
    .listen_fd = exec_listen_fd,
    .drain = exec_drain,
};
