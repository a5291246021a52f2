/* worker.h - one event loop per worker thread: its libmicrohttpd daemon, its client sockets, its backend I/O, its timers. */
#ifndef SOCKGATE_GATEWAY_WORKER_H
#define SOCKGATE_GATEWAY_WORKER_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct request;

/* A descriptor the loop watches; ready() runs on the worker's thread with the epoll events. */
struct wk_watch {
    int fd;
    void (*ready)(struct wk_watch *w, uint32_t events);
};

/* A deadline the loop keeps; fire() runs on the worker's thread once it passed. */
struct wk_timer {
    int64_t at;   /* sg_now_ms() clock */
    size_t slot;  /* 1 + its index in the worker's heap; 0 while not armed */
    void (*fire)(struct wk_timer *t);
};

/*
 * Prepares a worker (its epoll set and wake-up descriptor) for a daemon that
 * is started next with worker_on_connection as its connection callback;
 * NULL with why in err.
 */
struct worker *worker_new(char *err, size_t errlen);

/*
 * Runs w's loop on a new thread over daemon (libmicrohttpd in external epoll
 * mode) until worker_stop; SG_OK, or why in err (w is then still the caller's).
 */
int worker_run(struct worker *w, struct MHD_Daemon *daemon, char *err, size_t errlen);

/* Frees a worker that never ran. */
void worker_free(struct worker *w);

/*
 * libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback (cls: the worker):
 * registers each client socket for hang-ups in the worker's own epoll set.
 */
void worker_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);

/*
 * Wakes w's loop so that its daemon runs: after MHD_resume_connection from
 * another thread (libmicrohttpd's external mode wakes nobody). Any thread.
 */
void worker_kick(struct worker *w);

/* Asks w to stop accepting (MHD_quiesce_daemon on its own thread). Any thread. */
void worker_quiesce(struct worker *w);

/* Stops w's daemon on its own thread, joins the thread and frees w. */
void worker_stop(struct worker *w);

/* Returns the worker whose loop runs on the calling thread, or NULL. */
struct worker *worker_self(void);

/* Watches w->fd for events (edge-triggered when EPOLLET is in events); 0 or -1 with errno. */
int worker_watch(struct worker *wk, struct wk_watch *w, uint32_t events);

/* Changes the events of a watched descriptor; 0 or -1 with errno. */
int worker_rewatch(struct worker *wk, struct wk_watch *w, uint32_t events);

/* Stops watching w->fd (call before closing it). */
void worker_unwatch(struct worker *wk, struct wk_watch *w);

/* Arms t to fire at at (re-arms it when armed). */
void worker_timer_arm(struct worker *wk, struct wk_timer *t, int64_t at);

/*
 * Frees p once the loop's current round is over: an object whose wk_watch
 * may still have an event in this round's batch (a socket ended by another
 * descriptor's event) must stay readable until then. Its ready() must see
 * that it ended and do nothing.
 */
void worker_free_later(struct worker *wk, void *p);

/* Disarms t; harmless when it is not armed. */
void worker_timer_cancel(struct worker *wk, struct wk_timer *t);

/* Returns the HTTP flags kept with conn (http_strict.h), or NULL when the connection is not known. */
struct http_conn_flags *worker_conn_flags(struct MHD_Connection *conn);

/*
 * Called by server.c when a request's head is complete (rq is its state) and
 * when it ends (rq NULL): the loop keeps the head and body deadlines from them.
 */
void worker_request_started(struct MHD_Connection *conn, struct request *rq, int has_body);
void worker_request_body_done(struct MHD_Connection *conn);
void worker_request_ended(struct MHD_Connection *conn);

/* Suspends conn until worker_resume (its handler answers later, from the loop); on the worker's thread. */
void worker_suspend(struct MHD_Connection *conn);

/* Resumes a connection suspended with worker_suspend; on the worker's own thread. */
void worker_resume(struct MHD_Connection *conn);

/*
 * After an HTTP Upgrade that hands conn's own socket over (plain HTTP): the
 * loop stops watching it for the connection, so its new owner can watch it.
 * On the worker's own thread.
 */
void worker_release_socket(struct MHD_Connection *conn);

/*
 * Returns 1 when conn's client closed its side or the loop cut the
 * connection: a response that never ends by itself (a stream) should end
 * rather than wait, since nobody reads it.
 */
int worker_client_gone(struct MHD_Connection *conn);

/*
 * Returns 1 on a worker's thread whose loop has stopped (after the shutdown's
 * grace period): a parked connection is being resumed one last time before
 * its daemon stops, and a handler or content callback should end now, saying
 * why if it can (an answer, a last event), rather than park again.
 */
int worker_is_stopping(void);

/* Timeouts (milliseconds) of a request's head and of the silence within its body; 0 turns one off. */
void worker_set_timeouts(unsigned header_ms, unsigned body_ms);

#endif
