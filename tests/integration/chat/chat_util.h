/* chat_util.h - what the chat integration tests share: the server, framed calls, UDP peers, piped children. */
#ifndef SOCKGATE_TEST_CHAT_UTIL_H
#define SOCKGATE_TEST_CHAT_UTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sockgate/frame.h"

struct sg_proc;

/*
 * Starts sockgate-chat on 127.0.0.1:0 with the extra flags (NULL-terminated,
 * may be NULL); exits the test when it does not start within 10 s.
 */
void ct_start(struct sg_proc *p, const char *const extra[]);

/* Stops the server and checks it exits 0 on SIGTERM. */
void ct_stop(struct sg_proc *p);

/* A framed TCP connection to the chat server. */
struct ct_conn {
    int fd;
    struct sg_frame_reader r;
};

/* Connects c to 127.0.0.1:port; rcvbuf > 0 sets a small receive buffer before connecting (a slow reader). */
void ct_connect(struct ct_conn *c, uint16_t port, int rcvbuf);

/* Closes c. */
void ct_close(struct ct_conn *c);

/* Sends req (stolen) as one header-only frame. */
void ct_send(struct ct_conn *c, json_t *req);

/*
 * Reads the next frame within timeout_ms: returns SG_OK with *h a new
 * reference (and the body, malloc'd and NUL-terminated, in *body when body is
 * not NULL), or SG_ERR_TIMEOUT / SG_ERR_CLOSED / another error.
 */
int ct_read(struct ct_conn *c, int timeout_ms, json_t **h, char **body, size_t *body_len);

/* Sends req (stolen) and returns the response header (new reference); fails the test when none comes in 10 s. */
json_t *ct_call(struct ct_conn *c, json_t *req);

/* Returns stats.key from a stats call on c. */
long long ct_stat(struct ct_conn *c, const char *key);

/* Returns the error code of a response header, or NULL when it is not an error (borrowed). */
const char *ct_error_code(const json_t *h);

/* Returns a UDP socket bound to 127.0.0.1:0 (non-blocking), with its address text in addr (64 bytes). */
int ct_udp(char *addr);

/* Sends len bytes from udp to 127.0.0.1:port. */
void ct_udp_send(int udp, uint16_t port, const void *buf, size_t len);

/* Receives one datagram within timeout_ms into buf (NUL-terminated); returns its length, -1 when none came. */
long ct_udp_recv(int udp, char *buf, size_t cap, int timeout_ms);

/*
 * Sends n datagrams of text from udp, in bursts of 32 each followed by a stats
 * call on ctl (so the server keeps up and UDP loses nothing on loopback),
 * until the server's "received" counter grew by n or 50 * n sends were made.
 * Returns the final "received" counter.
 */
long long ct_flood(int udp, uint16_t port, struct ct_conn *ctl, long n, const char *text);

/* A program run with pipes to its stdin and from its stdout and stderr. */
struct ct_child {
    pid_t pid;
    int in_fd;
    int out_fd;
    int err_fd;
    char out[65536];
    size_t out_len;
    char err[16384];
    size_t err_len;
};

/* Starts argv (a path or a name found in PATH) with extra environment entries env (may be NULL). */
void ct_spawn(struct ct_child *c, const char *const argv[], const char *const env[]);

/* Writes text to the child's stdin. */
void ct_child_write(struct ct_child *c, const char *text);

/* Closes the child's stdin (it reads EOF). */
void ct_child_close_stdin(struct ct_child *c);

/* Collects output until stdout holds needle; returns 1, or 0 after timeout_ms or when the child's output ends. */
int ct_child_wait_out(struct ct_child *c, const char *needle, int timeout_ms);

/* Waits up to timeout_ms for the child to exit (then kills it); collects the rest of its output; returns its status. */
int ct_child_wait(struct ct_child *c, int timeout_ms);

/* Writes the path of a file of this test folder (from SOCKGATE_SOURCE_DIR) into buf. */
const char *ct_source_file(const char *name, char *buf, size_t buflen);

#endif
