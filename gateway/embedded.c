/* embedded.c - starts the built-in backends on loopback threads, so `sockgate` alone is the whole system. */
#include "embedded.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#include "exec/server.h"
#endif
#ifdef SG_HAVE_FILE
#include "file/server.h"
#endif
#ifdef SG_HAVE_CHAT
#include "chat/server.h"
#endif

/*
 * Where embedded service id listens: --embedded-listen HOST:PORT puts echo on
 * PORT and the others on the next ports in backend order (so tutorial clients
 * can be pointed at fixed ports); with port 0 the kernel picks each one.
 */
static int embedded_listen_addr(const struct gateway *gw, enum backend_id id, char *buf, size_t len)
{
    const char *text = gw->cfg.embedded_listen ? gw->cfg.embedded_listen : "127.0.0.1:0";
    const char *colon = strrchr(text, ':');
    unsigned long port;
    char *end;
    if (!colon)
        return SG_ERR_INVALID;
    port = strtoul(colon + 1, &end, 10);
    if (*end || port > 65535 || (port != 0 && port + (unsigned long)id > 65535))
        return SG_ERR_INVALID;
    /* main() checked the whole address; only the port moves. */
    if (snprintf(buf, len, "%.*s:%lu", (int)(colon - text), text, port ? port + (unsigned long)id : 0) >= (int)len)
        return SG_ERR_INVALID;
    return SG_OK;
}

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

/* Creates the server of id with its defaults and the gateway's settings; SG_ERR_NOT_FOUND when not built. */
static int create(struct gateway *gw, struct embedded *e, enum backend_id id, const struct sg_service_ops **ops,
                  void **srv, char *err, size_t errlen)
{
    char listen[SG_ADDR_STRLEN];
    (void)e;
    if (embedded_listen_addr(gw, id, listen, sizeof listen) != SG_OK) {
        snprintf(err, errlen, "--embedded-listen %s leaves no port for it", gw->cfg.embedded_listen);
        return SG_ERR_INVALID;
    }
    switch (id) {
#ifdef SG_HAVE_ECHO
    case BACKEND_ECHO: {
        struct echo_config c;
        echo_config_defaults(&c);
        c.listen = listen;
        *ops = &echo_service_ops;
        return echo_server_create(&c, srv, err, errlen);
    }
#endif
#ifdef SG_HAVE_TIME
    case BACKEND_TIME: {
        struct time_config c;
        time_config_defaults(&c);
        c.listen = listen;
        *ops = &time_service_ops;
        return time_server_create(&c, srv, err, errlen);
    }
#endif
#ifdef SG_HAVE_EXEC
    case BACKEND_EXEC: {
        struct exec_config c;
        exec_config_defaults(&c);
        c.listen = listen;
        if (gw->cfg.allow && *gw->cfg.allow) {
            int rc = split_allow(e, gw->cfg.allow);
            if (rc != SG_OK) {
                snprintf(err, errlen, "out of memory");
                return rc;
            }
            c.allow = e->allow;
            c.allow_count = e->allow_count;
        }
        *ops = &exec_service_ops;
        return exec_server_create(&c, srv, err, errlen);
    }
#endif
#ifdef SG_HAVE_FILE
    case BACKEND_FILE: {
        struct file_config c;
        file_config_defaults(&c);
        c.listen = listen;
        if (gw->cfg.file_root && *gw->cfg.file_root)
            c.root = gw->cfg.file_root;
        *ops = &file_service_ops;
        return file_server_create(&c, srv, err, errlen);
    }
#endif
#ifdef SG_HAVE_CHAT
    case BACKEND_CHAT: {
        struct chat_config c;
        chat_config_defaults(&c);
        c.listen = listen;
        *ops = &chat_service_ops;
        return chat_server_create(&c, srv, err, errlen);
    }
#endif
    default:
        return SG_ERR_NOT_FOUND;
    }
}

int embedded_start(struct gateway *gw, struct embedded *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
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
    memset(e, 0, sizeof *e);
}
