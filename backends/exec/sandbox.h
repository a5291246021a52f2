/* sandbox.h - what confines a command: Landlock (files, TCP, signals, abstract sockets), no new privileges, no network. */
#ifndef SOCKGATE_EXEC_SANDBOX_H
#define SOCKGATE_EXEC_SANDBOX_H

#include <linux/filter.h>
#include <stddef.h>
#include <sys/types.h>

enum exec_sandbox_mode {
    EXEC_SANDBOX_BEST_EFFORT = 0, /* use what the kernel offers, say what that is */
    EXEC_SANDBOX_STRICT,          /* refuse to start without Landlock's file rules */
    EXEC_SANDBOX_OFF              /* no Landlock, no namespaces, no no_new_privs: commands see what the server sees */
};

/* What the operator asked for. Every pointer is borrowed for the duration of exec_sandbox_init(). */
struct exec_sandbox_config {
    enum exec_sandbox_mode mode;
    const char *const *read;     /* extra directories (or files) commands may read */
    size_t n_read;
    const char *const *write;    /* extra directories (or files) commands may read and write */
    size_t n_write;
    const char *const *protect;  /* never readable unless named exactly in read/write: file root, spool, token file */
    size_t n_protect;
    const char *const *programs; /* the allowlist's resolved paths: each gets read+execute even outside /usr */
    size_t n_programs;
};

/*
 * The sandbox of one exec server: built once at start-up, applied in every
 * child between clone and exec by exec_sandbox_enter(). Read-only after
 * init, so connection threads share it without locks.
 */
struct exec_sandbox {
    enum exec_sandbox_mode mode;
    int abi;                /* Landlock ABI version the kernel offers; 0: none */
    int ruleset_fd;         /* the Landlock ruleset, -1 when not used */
    int fs;                 /* 1: file rules are enforced */
    int net_tcp;            /* 1: Landlock denies TCP bind and connect (ABI 4+) */
    int scoped;             /* 1: no signals to, no abstract UNIX sockets of, processes outside (ABI 6+) */
    int netns;              /* 1: a new user + network namespace per command (only loopback, down) */
    int no_new_privs;       /* 1: PR_SET_NO_NEW_PRIVS in every command */
    int meta;               /* 1: seccomp denies chmod/chown/utimes/xattrs by path (meta_filter.c) */
    struct sock_fprog meta_prog;
    char uid_map[32];       /* "UID UID 1\n" written in the child's new user namespace */
    char gid_map[32];
    char summary[256];      /* one line for the log and /readyz */
};

/* Parses "strict", "best-effort" or "off"; returns 0, or -1 for anything else. */
int exec_sandbox_mode_parse(const char *text, enum exec_sandbox_mode *mode);

/* Returns "strict", "best-effort" or "off". */
const char *exec_sandbox_mode_name(enum exec_sandbox_mode mode);

/*
 * Probes the kernel (Landlock ABI, unprivileged user + network namespaces),
 * builds the ruleset: read and execute in /usr /bin /sbin /lib* /etc (those
 * that exist), read and write in workdir (no execute), plus cfg's grants;
 * never a directory that holds a protected path (such a grant is split into
 * its entries around it, logged). Logs what is on. Returns SG_OK, or an error
 * with why in err (strict mode without Landlock, an unreadable grant).
 */
int exec_sandbox_init(struct exec_sandbox *sb, const struct exec_sandbox_config *cfg, const char *workdir,
                      char *err, size_t errlen);

/*
 * Confines the calling process: new user and network namespaces, no new
 * privileges, the metadata filter, Landlock. Async-signal-safe (raw system calls only), for the
 * child between clone and exec. Returns 0, or an errno with *stage naming
 * the step that failed; the caller must then not exec.
 */
int exec_sandbox_enter(const struct exec_sandbox *sb, const char **stage);

/* Closes what init opened; sb may be zeroed or half-built. */
void exec_sandbox_free(struct exec_sandbox *sb);

#endif
