/* service.h - the table of functions every backend service provides, and how a program runs one. */
#ifndef SOCKGATE_SERVICE_H
#define SOCKGATE_SERVICE_H

#include <pthread.h>

/*
 * A backend (echo, time, exec, file, chat) is created by its own
 * NAME_server_create(config, &srv, err, errlen), which binds its sockets, and
 * is then driven only through these operations, so sockgate-NAME's main() and
 * the gateway's embedded mode run exactly the same code.
 */
struct sg_service_ops {
    const char *name;
    /* Serves on the calling thread until stop is requested; returns SG_OK on a clean stop. */
    int (*run)(void *srv);
    /* Asks run() to return soon. Async-signal-safe and callable from any thread. */
    void (*stop)(void *srv);
    /* Frees srv and closes its sockets; only after run() has returned (or was never called). */
    void (*destroy)(void *srv);
    /* Returns the main listening descriptor (for its address and port). */
    int (*listen_fd)(void *srv);
    /*
     * Starts the drain (optional, NULL for none): idle connections close now,
     * each busy one once its answer is out; new connections are still served
     * (their first request at least). Async-signal-safe, any thread.
     */
    void (*drain)(void *srv);
};

/* A service running on its own thread (the gateway's embedded mode). */
struct sg_service_thread {
    const struct sg_service_ops *ops;
    void *srv;
    pthread_t thread;
    int result;
    int started;
};

/* Starts ops->run(srv) on a new thread; srv is owned by t from now on. */
int sg_service_thread_start(struct sg_service_thread *t, const struct sg_service_ops *ops, void *srv);

/* Stops the service, joins its thread and destroys it. Safe to call on a never-started t. */
void sg_service_thread_stop(struct sg_service_thread *t);

/*
 * The whole life of a service program after its flags are parsed: prints
 * "listening on HOST:PORT", serves until SIGINT or SIGTERM, destroys srv, and
 * returns the exit status (0 after a clean stop). Call sg_signals_block() first
 * thing in main(), before any thread exists.
 */
int sg_service_main(const struct sg_service_ops *ops, void *srv);

/*
 * Sets the drain of sg_service_main from a --drain value (NULL or "": none):
 * on SIGINT/SIGTERM the service starts its drain (ops->drain: idle
 * connections close at once), keeps serving that long, then stops. Returns
 * 0, or -1 after printing why (a usage error: exit 2).
 */
int sg_service_set_drain(const char *prog, const char *text);

/*
 * Blocks SIGINT, SIGTERM and SIGHUP (delivered later to a waiting thread) and
 * ignores SIGPIPE in this thread and all created after.
 */
void sg_signals_block(void);

/*
 * Makes SIGHUP call on_reload(arg) (from the signal thread) instead of
 * stopping the program. Call before sg_signals_on_stop.
 */
void sg_signals_on_reload(void (*on_reload)(void *arg), void *arg);

/*
 * Starts a thread that waits for SIGINT/SIGTERM (and SIGHUP, unless a reload
 * handler takes it) and then calls on_stop(arg) once (from that thread, not a
 * signal handler). Requires sg_signals_block().
 */
int sg_signals_on_stop(void (*on_stop)(void *arg), void *arg);

#endif
