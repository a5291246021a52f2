/* meta_filter.h - a seccomp filter against metadata changes by path, which Landlock does not mediate. */
#ifndef SOCKGATE_EXEC_META_FILTER_H
#define SOCKGATE_EXEC_META_FILTER_H

#include <linux/filter.h>

/*
 * Points prog at the filter (a static program, built on the first call;
 * call it at start-up, before threads spawn commands): chmod, chown,
 * utimes and extended attributes by path, fchmod and fchown fail with
 * EPERM. Returns 0, or -1 on an architecture it does not know.
 */
int exec_meta_filter(struct sock_fprog *prog);

#endif
