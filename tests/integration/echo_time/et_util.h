/* et_util.h - what the echo and time integration tests share: sockets to a port, running programs. */
#ifndef SOCKGATE_TEST_ET_UTIL_H
#define SOCKGATE_TEST_ET_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Output of a program run by et_run(): its exit status and what it printed (NUL-terminated). */
struct et_run_result {
    int status;       /* exit code, 128+signal when killed, -1 when it could not run */
    char out[65536];
    size_t out_len;
    char err[8192];
};

struct sg_proc;

/*
 * Starts a program with sg_proc_start (10 s to print its "listening on"
 * line; exits the test when it does not). The program is killed when the
 * test exits without stopping it, so a failed check leaves nothing running.
 */
void et_start(struct sg_proc *p, const char *const argv[]);

/* Connects a TCP socket (non-blocking) to 127.0.0.1:port; CHECK-fails when it cannot. */
int et_tcp_connect(uint16_t port);

/* Connects a UDP socket (non-blocking) to 127.0.0.1:port; CHECK-fails when it cannot. */
int et_udp_connect(uint16_t port);

/* Sends msg on a TCP socket and checks the reply is exactly expect (same length), within 10 s. */
void et_expect_reply(int fd, const char *msg, const char *expect);

/*
 * Sends one datagram and waits up to 2 s for the reply (sending again twice
 * more when none comes); returns the reply length, -1 when none came.
 */
long et_udp_ask(int fd, const void *msg, size_t len, void *reply, size_t cap);

/* Returns 1 when the peer closes fd (EOF or reset) within timeout_ms, 0 when it stays open. */
int et_wait_closed(int fd, int timeout_ms);

/*
 * Runs argv (argv[0] a path, or a name found in PATH) with stdin_text as
 * its standard input (NULL: empty) and the extra environment entries env
 * ("NAME=VALUE", NULL-terminated, may be NULL), capturing stdout and stderr.
 * Kills it after timeout_ms. Fills r and returns r->status.
 */
int et_run(const char *const argv[], const char *stdin_text, const char *const env[], int timeout_ms,
           struct et_run_result *r);

/* Writes the path of a file of this test folder (from SOCKGATE_SOURCE_DIR) into buf. */
const char *et_source_file(const char *name, char *buf, size_t buflen);

/* Raises the soft descriptor limit to at least want (up to the hard limit); returns the new limit. */
long et_raise_fd_limit(long want);

#endif
