/* embedded.c - starts the built-in backends on loopback threads, so `sockgate` alone is the whole system. */
#include "embedded.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"

#ifdef SG_HAVE_ECHO
#include "echo/server.h"
#endif
#ifdef SG_HAVE_TIME
#include "time/server.h"
#endif
#ifdef SG_HAVE_EXEC
#include "exec/sandbox.h"
#include "exec/server.h"
#endif
#ifdef SG_HAVE_FILE
#include "file/server.h"
#endif
#ifdef SG_HAVE_CHAT
#include "chat/server.h"
#endif

/* The private directory of the embedded backends' UNIX sockets, inside $TMPDIR. */
#define EMBEDDED_DIR_PREFIX "sockgate-gw-"

int embedded_is_built(enum backend_id id)
{
    switch (id) {
#ifdef SG_HAVE_ECHO
    case BACKEND_ECHO:
        return 1;
#endif
#ifdef SG_HAVE_TIME
    case BACKEND_TIME:
        return 1;
#endif
#ifdef SG_HAVE_EXEC
    case BACKEND_EXEC:
        return 1;
#endif
#ifdef SG_HAVE_FILE
    case BACKEND_FILE:
        return 1;
#endif
#ifdef SG_HAVE_CHAT
    case BACKEND_CHAT:
        return 1;
#endif
    default:
        return 0;
    }
}

#ifdef SG_HAVE_EXEC
/* Splits --allow ("ls,cat,/usr/bin/wc") into the array exec_config borrows. */
static int split_allow(struct embedded *e, const char *allow)
{
    size_t n = 1;
    char *save = NULL;
    for (const char *p = allow; *p; p++)
        n += *p == ',';
    e->allow_copy = strdup(allow);
    e->allow = calloc(n, sizeof *e->allow);
    if (!e->allow_copy || !e->allow)
        return SG_ERR_NOMEM;
    for (char *item = strtok_r(e->allow_copy, ",", &save); item; item = strtok_r(NULL, ",", &save))
        if (*item)
            e->allow[e->allow_count++] = item;
    return SG_OK;
}
#endif

#ifdef SG_HAVE_EXEC
/*
 * The embedded exec's sandbox settings: the gateway's flags, and what its
 * commands must never read unless named: the file backend's root, the
 * upload spool, the backends' socket directory and the TLS private key
 * (the token lives only in this process's memory and
 * environment, which a command cannot read: fresh environment, and Landlock
 * keeps /proc/PID of the gateway out of reach).
 */
static void exec_sandbox_settings(const struct gateway *gw, struct embedded *e, struct exec_sandbox_config *sc)
{
    size_t n = 0;
    exec_sandbox_mode_parse(gw->cfg.sandbox, &sc->mode); /* checked by main */
    sc->read = gw->cfg.sandbox_read;
    sc->n_read = gw->cfg.n_sandbox_read;
    sc->write = gw->cfg.sandbox_write;
    sc->n_write = gw->cfg.n_sandbox_write;
#ifdef SG_HAVE_FILE
    e->protect[n++] = gw->cfg.file_root && *gw->cfg.file_root ? gw->cfg.file_root : FILE_DEFAULT_ROOT;
#endif
    if (gw->cfg.spool_dir)
        e->protect[n++] = gw->cfg.spool_dir;
    if (e->dir[0])
        e->protect[n++] = e->dir; /* the backends' sockets */
    if (gw->cfg.tls_key)
        e->protect[n++] = gw->cfg.tls_key; /* the HTTPS private key: the one secret the gateway keeps in a file */
    sc->protect = e->protect;
    sc->n_protect = n;
}

/* Copies what the embedded exec's sandbox turned out to be into gw, for /readyz. */
static void exec_sandbox_report(struct gateway *gw, void *srv)
{
    const struct exec_sandbox *sb = exec_server_sandbox(srv);
    struct gw_sandbox_report *r = &gw->exec_sandbox;
    r->is_known = 1;
    snprintf(r->mode, sizeof r->mode, "%s", exec_sandbox_mode_name(sb->mode));
    r->landlock_abi = sb->abi;
    r->files = sb->fs;
    r->netns = sb->netns;
    r->net_tcp = sb->net_tcp;
    r->scoped = sb->scoped;
    r->no_new_privs = sb->no_new_privs;
    snprintf(r->summary, sizeof r->summary, "%s", sb->summary);
}
#endif

/* Creates the server of id with its defaults and the gateway's settings; SG_ERR_NOT_FOUND when not built. */
static int create(struct gateway *gw, struct embedded *e, enum backend_id id, const struct sg_service_ops **ops,
                  void **srv, char *err, size_t errlen)
{
    (void)gw;
    switch (id) {
#ifdef SG_HAVE_ECHO
    case BACKEND_ECHO: {
        struct echo_config c;
        echo_config_defaults(&c);
        c.listen = e->listen[id];
        *ops = &echo_service_ops;
        return echo_server_create(&c, srv, err, errlen);
    }
#endif
#ifdef SG_HAVE_TIME
    case BACKEND_TIME: {
        struct time_config c;
        time_config_defaults(&c);
        c.listen = e->listen[id];
        *ops = &time_service_ops;
        return time_server_create(&c, srv, err, errlen);
    }
#endif
#ifdef SG_HAVE_EXEC
    case BACKEND_EXEC: {
        struct exec_config c;
        int rc;
        exec_config_defaults(&c);
        c.listen = e->listen[id];
        if (gw->cfg.allow && *gw->cfg.allow) {
            rc = split_allow(e, gw->cfg.allow);
            if (rc != SG_OK) {
                snprintf(err, errlen, "out of memory");
                return rc;
            }
            c.allow = e->allow;
            c.allow_count = e->allow_count;
        }
        exec_sandbox_settings(gw, e, &c.sandbox);
        *ops = &exec_service_ops;
        rc = exec_server_create(&c, srv, err, errlen);
        if (rc == SG_OK)
            exec_sandbox_report(gw, *srv);
        return rc;
    }
#endif
#ifdef SG_HAVE_FILE
    case BACKEND_FILE: {
        struct file_config c;
        file_config_defaults(&c);
        c.listen = e->listen[id];
        if (gw->cfg.file_root && *gw->cfg.file_root)
            c.root = gw->cfg.file_root;
        if (gw->cfg.upload_expiry_s > 0)
            c.session_expiry_s = gw->cfg.upload_expiry_s;
        *ops = &file_service_ops;
        return file_server_create(&c, srv, err, errlen);
    }
#endif
#ifdef SG_HAVE_CHAT
    case BACKEND_CHAT: {
        struct chat_config c;
        chat_config_defaults(&c);
        c.listen = e->listen[id];
        *ops = &chat_service_ops;
        return chat_server_create(&c, srv, err, errlen);
    }
#endif
    default:
        return SG_ERR_NOT_FOUND;
    }
}

/*
 * Picks where each embedded backend listens: its --BACKEND-listen address
 * (said loudly: nothing authenticates those ports), else unix:DIR/NAME.sock
 * in a private directory made on first need. Only this process's user can
 * enter a 0700 directory, so the backends are out of other local users'
 * reach, unlike loopback ports, which every local user can connect to.
 */
static int choose_addresses(struct gateway *gw, struct embedded *e, char *err, size_t errlen)
{
    for (int id = 0; id < BACKEND__COUNT; id++) {
        if (gw->cfg.backend_addr[id] || !embedded_is_built(id))
            continue;
        if (gw->cfg.embedded_listen[id]) {
            snprintf(e->listen[id], sizeof e->listen[id], "%s", gw->cfg.embedded_listen[id]);
            sg_warn("the embedded %s backend is open on %s with no authentication: anyone who can reach that address "
                    "uses it directly, whatever --token says",
                    backend_name(id), gw->cfg.embedded_listen[id]);
            continue;
        }
        if (!e->dir[0]) {
            const char *tmp = getenv("TMPDIR");
            if (!tmp || !*tmp)
                tmp = "/tmp";
            if (snprintf(e->dir, sizeof e->dir, "%s/" EMBEDDED_DIR_PREFIX "XXXXXX", tmp) >= (int)sizeof e->dir ||
                !mkdtemp(e->dir)) {
                snprintf(err, errlen, "cannot make a private directory in %s: %s", tmp, strerror(errno));
                e->dir[0] = '\0';
                return SG_ERR_SYS;
            }
        }
        if (snprintf(e->listen[id], sizeof e->listen[id], SG_UNIX_PREFIX "%s/%s.sock", e->dir, backend_name(id)) >=
            (int)sizeof e->listen[id] - (int)sizeof SG_UNIX_DGRAM_SUFFIX) {
            snprintf(err, errlen, "the private directory %s is too long for UNIX socket names", e->dir);
            return SG_ERR_INVALID;
        }
    }
    return SG_OK;
}

int embedded_start(struct gateway *gw, struct embedded *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    if (choose_addresses(gw, e, err, errlen) != SG_OK) {
        embedded_stop(e);
        return SG_ERR_SYS;
    }
    for (int id = 0; id < BACKEND__COUNT; id++) {
        const struct sg_service_ops *ops = NULL;
        char why[256] = "", addr[SG_ADDR_STRLEN];
        void *srv = NULL;
        int rc;
        if (gw->cfg.backend_addr[id])
            continue;
        if (!embedded_is_built(id)) {
            sg_warn("the %s backend is not built into this gateway and --%s was not given: its routes answer 503",
                    backend_name(id), backend_name(id));
            continue;
        }
        rc = create(gw, e, id, &ops, &srv, why, sizeof why);
        if (rc != SG_OK) {
            snprintf(err, errlen, "embedded %s backend: %s", backend_name(id), why);
            embedded_stop(e);
            return rc;
        }
        sg_local_addr(ops->listen_fd(srv), addr, sizeof addr);
        rc = sg_service_thread_start(&e->threads[id], ops, srv); /* owns srv from here, even on failure */
        if (rc != SG_OK) {
            snprintf(err, errlen, "embedded %s backend: cannot start its thread", backend_name(id));
            embedded_stop(e);
            return rc;
        }
        rc = upstream_set_addr(&gw->backends[id], addr, 1, why, sizeof why);
        if (rc != SG_OK) {
            snprintf(err, errlen, "embedded %s backend at %s: %s", backend_name(id), addr, why);
            embedded_stop(e);
            return rc;
        }
        /* Deliberately not "listening on": that line belongs to the gateway alone. */
        sg_info("embedded %s backend serving at %s", backend_name(id), addr);
    }
    return SG_OK;
}

void embedded_stop(struct embedded *e)
{
    for (int id = BACKEND__COUNT - 1; id >= 0; id--)
        sg_service_thread_stop(&e->threads[id]);
    free(e->allow);
    free(e->allow_copy);
    /* Each service removed its own socket files in destroy; the directory is ours. */
    if (e->dir[0] && rmdir(e->dir) != 0)
        sg_warn("could not remove %s: %s", e->dir, strerror(errno));
    memset(e, 0, sizeof *e);
}
