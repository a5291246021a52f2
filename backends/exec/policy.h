/* policy.h - the allowlist of commands: resolved to absolute paths once, matched by exact name. */
#ifndef SOCKGATE_EXEC_POLICY_H
#define SOCKGATE_EXEC_POLICY_H

#include <stddef.h>

/* The search path for bare names at start-up, and the PATH every command gets. */
#define EXEC_CHILD_PATH "/usr/local/bin:/usr/bin:/bin"

/*
 * Used when no --allow is given: commands that read nothing private and change
 * nothing, whatever their arguments. Not date (date -f FILE prints the file's
 * lines in its errors, date -s sets the clock) nor hostname (hostname NAME
 * renames the host): see docs/security.md.
 */
#define EXEC_DEFAULT_ALLOW "echo,uname,whoami,uptime,seq,ls,pwd,true,false"

/* One allowed command. */
struct exec_allowed {
    char *name; /* the bare name a request may use: "date" */
    char *path; /* the absolute path that runs and that a request may also use: "/usr/bin/date" */
};

/* The allowlist; immutable after exec_policy_init(), so threads share it without locks. */
struct exec_policy {
    struct exec_allowed *items;
    size_t count;
};

/*
 * Builds the allowlist from n entries, each a bare name (looked up in
 * EXEC_CHILD_PATH) or an absolute path to an executable regular file. With
 * skip_missing, entries that do not resolve are left out with a warning (the
 * default list on a slim system); otherwise they fail the whole call. Returns
 * SG_OK, or SG_ERR_INVALID / SG_ERR_NOT_FOUND / SG_ERR_NOMEM with why in err.
 */
int exec_policy_init(struct exec_policy *p, const char *const *entries, size_t n, int skip_missing,
                     char *err, size_t errlen);

/*
 * Returns the allowed command argv0 names, or NULL. A bare argv0 matches an
 * entry's name; one with a slash must equal an entry's path exactly, so
 * "../bin/date", "/bin//date" and "./date" never match.
 */
const struct exec_allowed *exec_policy_match(const struct exec_policy *p, const char *argv0);

/* Writes the allowed names, comma-separated, into buf (for the start-up log line). */
void exec_policy_describe(const struct exec_policy *p, char *buf, size_t buflen);

/* Frees what p holds; p may be initialised again afterwards. */
void exec_policy_free(struct exec_policy *p);

#endif
