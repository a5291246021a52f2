/* harness.h - start the real sockgate programs on port 0 for integration tests. */
#ifndef SOCKGATE_TEST_HARNESS_H
#define SOCKGATE_TEST_HARNESS_H

#include <stdint.h>
#include <sys/types.h>

/* A program started by a test. */
struct sg_proc {
    pid_t pid;
    char log_path[256]; /* its stderr, kept in a file the test may read */
    char addr[128];     /* "HOST:PORT" or "unix:PATH" from its "listening on" line */
    char host[48];
    uint16_t port;
    int is_https;   /* its listening line named https:// */
};

/* Returns the path of a built program: $SOCKGATE_BIN_DIR/prog (static buffer per call site is not kept: copy it). */
const char *sg_test_bin(const char *prog, char *buf, size_t buflen);

/*
 * Kills pid (SIGKILL) and waits for it when the test exits while pid is still
 * an unreaped child: a failed check exits at once, and must not leave a
 * server holding ctest's pipes. sg_proc_start registers what it starts.
 */
void sg_test_kill_at_exit(pid_t pid);

/* Forgets pid (reaped by the caller: the number may soon belong to another process). */
void sg_test_forget(pid_t pid);

/*
 * Starts $SOCKGATE_BIN_DIR/argv[0] with argv (NULL-terminated), its stderr to
 * a log file, and waits up to timeout_ms for "listening on HOST:PORT" (or
 * "listening on unix:PATH": then host is "" and port 0).
 * Returns 0 and fills p (p->pid is killed at exit unless stopped), or -1
 * after printing the log (the process is killed).
 */
int sg_proc_start(struct sg_proc *p, const char *const argv[], int timeout_ms);

/*
 * Sends SIGTERM and waits up to timeout_ms for exit (then SIGKILL). Returns
 * the exit status, 128+signal when killed by a signal, or -1.
 */
int sg_proc_stop(struct sg_proc *p, int timeout_ms);

/* Returns the resident memory of pid in KiB (VmRSS), or -1. */
long sg_proc_rss_kib(pid_t pid);

/* Returns the number of open file descriptors of pid, or -1. */
int sg_proc_fd_count(pid_t pid);

/*
 * Holds a loopback port on which nothing answers: type SOCK_STREAM binds a
 * TCP socket without listening (connections are refused), SOCK_DGRAM a UDP
 * socket connected to itself (a datagram from anyone else draws ICMP port
 * unreachable). While held, no bind to port 0 and no outgoing connection is
 * given the port, so "nothing listens there" stays true, unlike for a port
 * merely closed; SO_REUSEADDR lets a program told to listen there (sg_listen)
 * bind it all the same. port 0 picks one. Returns the port with the socket in
 * *fd (the caller closes it), or 0.
 */
uint16_t sg_test_hold_port(int type, uint16_t port, int *fd);

/* Creates a fresh temporary directory and writes its path into buf. */
int sg_test_tmpdir(char *buf, size_t buflen);

/* Removes a directory tree (best effort: used for clean-up only). */
void sg_test_rmtree(const char *path);

#endif
