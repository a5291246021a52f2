/* xt_util.h - what the exec integration tests share: a server, native requests, processes in /proc. */
#ifndef SOCKGATE_TEST_XT_UTIL_H
#define SOCKGATE_TEST_XT_UTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "sockgate/frame.h"

/*
 * Starts sockgate-exec on 127.0.0.1:0 with the extra arguments (NULL-terminated),
 * CHECK-failing when it does not come up. Servers still running when the test
 * exits (a failed check) are killed.
 */
void xt_start(struct sg_proc *p, const char *const extra[]);

/* Stops a server with SIGTERM and checks it exits with status 0. */
void xt_stop(struct sg_proc *p);

/* A client connection and the reader that keeps its unread bytes. */
struct xt_conn {
    int fd;
    struct sg_frame_reader *reader;
};

/* One reply frame: its header and its whole body. */
struct xt_reply {
    json_t *hdr;
    uint8_t *body;
    size_t len;
};

/* Connects to the server; CHECK-fails when it cannot. */
void xt_connect(struct xt_conn *c, const struct sg_proc *p);

/* Closes the connection. */
void xt_close(struct xt_conn *c);

/* Sends bytes as they are (a raw command line); CHECK-fails on error. */
void xt_send_raw(struct xt_conn *c, const void *buf, size_t len);

/* Sends one frame (hdr borrowed) with body as the command's stdin; CHECK-fails on error. */
void xt_send_frame(struct xt_conn *c, const json_t *hdr, const void *body, size_t len);

/* Sends {"op":"exec","argv":argv} plus total_size when len > 0, then body. */
void xt_send_exec(struct xt_conn *c, const char *const argv[], const void *body, size_t len);

/*
 * Reads one whole reply within timeout_ms into r (free with xt_reply_free).
 * Returns SG_OK, or the error (SG_ERR_CLOSED when the server closed first).
 */
int xt_read(struct xt_conn *c, struct xt_reply *r, int timeout_ms);

/* Frees what r holds. */
void xt_reply_free(struct xt_reply *r);

/* Runs argv with stdin body on a fresh connection and reads the reply (CHECK-fails when none comes). */
void xt_exec(const struct sg_proc *p, const char *const argv[], const void *body, size_t len, struct xt_reply *r);

/* Returns the integer at key of the reply header, or -9999 when absent. */
long long xt_int(const struct xt_reply *r, const char *key);

/* Returns 1 when key is true in the reply header. */
int xt_true(const struct xt_reply *r, const char *key);

/* Returns error.code of the reply, or NULL for a result. */
const char *xt_err_code(const struct xt_reply *r);

/* Checks the reply is a result whose stdout is exactly expect and whose stderr is empty. */
void xt_check_stdout(const struct xt_reply *r, const char *expect);

/* What xt_run() captured. */
struct xt_run_result {
    int status;   /* exit code, 128+signal when killed, -1 when it could not run */
    char *out;    /* NUL-terminated, malloc'd */
    size_t out_len;
    char *err;
    size_t err_len;
};

/* Runs argv (a path or a name in PATH) with stdin data, kills it after timeout_ms, captures both streams. */
int xt_run(const char *const argv[], const void *in, size_t inlen, int timeout_ms, struct xt_run_result *r);

/* Frees what xt_run() captured. */
void xt_run_free(struct xt_run_result *r);

/* Returns the number of children of parent in zombie state. */
int xt_zombies_of(pid_t parent);

/* Returns the number of children of parent (any state). */
int xt_children_of(pid_t parent);

/*
 * Returns how many children of parent provably existed at one instant: the
 * children found in /proc are checked again from the newest to the oldest,
 * and an older child still there after a newer one was seen overlapped it.
 * A /proc scan alone could count a child that exited and its successor.
 */
int xt_children_at_once(pid_t parent);

/* Returns the pid of a live (not zombie) process with an argument equal to arg, or 0. */
pid_t xt_find_proc(const char *arg);

/* Waits up to timeout_ms for a live process with argument arg; returns its pid or 0. */
pid_t xt_wait_proc(const char *arg, int timeout_ms);

/* Waits up to timeout_ms until no live process has argument arg; returns 1 when none is left. */
int xt_wait_gone(const char *arg, int timeout_ms);

/* Writes the path of a file of this test folder (from SOCKGATE_SOURCE_DIR) into buf. */
const char *xt_source_file(const char *name, char *buf, size_t buflen);

#endif
