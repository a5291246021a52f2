/* meta_filter.c - the seccomp filter that closes Landlock's gap: changing a file's metadata by path. */
#include "meta_filter.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>

/* Numbers shared by every architecture since Linux 5.x (the 4xx block); older headers lack them. */
#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif
#ifndef __NR_setxattrat
#define __NR_setxattrat 463
#endif
#ifndef __NR_removexattrat
#define __NR_removexattrat 466
#endif
#ifndef __NR_file_setattr
#define __NR_file_setattr 469
#endif

#if defined(__x86_64__)
#define META_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define META_ARCH AUDIT_ARCH_AARCH64
#endif

/* The calls denied outright (the x86_64-only old names where they exist). */
static const unsigned denied[] = {
    __NR_fchmodat, __NR_fchmodat2, __NR_fchownat, __NR_fchmod, __NR_fchown, __NR_setxattr, __NR_lsetxattr,
    __NR_removexattr, __NR_lremovexattr, __NR_setxattrat, __NR_removexattrat, __NR_file_setattr,
#ifdef __NR_chmod
    __NR_chmod, __NR_chown, __NR_lchown, __NR_futimesat, __NR_utime, __NR_utimes,
#endif
};

/* The program: built once, read by every child. Room for the list plus a dozen fixed instructions. */
static struct sock_filter program[sizeof denied / sizeof denied[0] + 16];

static void emit(size_t *n, unsigned short code, unsigned k, unsigned char jt, unsigned char jf)
{
    program[*n].code = code;
    program[*n].k = k;
    program[*n].jt = jt;
    program[*n].jf = jf;
    (*n)++;
}

/*
 * Landlock mediates opening, creating, removing and renaming, but not
 * chmod, chown, utimes or extended attributes on a path: with those alone
 * a command could change the mode or times of any file it can name (the
 * file backend's root included) without opening it. Denied here by path
 * (and by AT_EMPTY_PATH, which works on O_PATH descriptors Landlock does
 * not mediate either), together with fchmod and fchown (a read-only
 * descriptor suffices for them). utimensat with a NULL path (futimens on a
 * descriptor the command opened, which touch needs) stays allowed.
 */
int exec_meta_filter(struct sock_fprog *prog)
{
#ifdef META_ARCH
    size_t n = 0, list = 0, u, lo, hi, allow, deny;
    const unsigned short ld = BPF_LD | BPF_W | BPF_ABS, jeq = BPF_JMP | BPF_JEQ | BPF_K, ret = BPF_RET | BPF_K;
    emit(&n, ld, offsetof(struct seccomp_data, arch), 0, 0);
    emit(&n, jeq, META_ARCH, 1, 0);
    emit(&n, ret, SECCOMP_RET_ERRNO | EPERM, 0, 0); /* a foreign ABI (i386 on x86_64) would bypass the numbers */
    emit(&n, ld, offsetof(struct seccomp_data, nr), 0, 0);
#if defined(__x86_64__)
    emit(&n, BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1); /* x32 */
    emit(&n, ret, SECCOMP_RET_ERRNO | EPERM, 0, 0);
#endif
    list = n;
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++)
        emit(&n, jeq, denied[i], 0, 0);
    u = n;
    emit(&n, jeq, __NR_utimensat, 0, 0);
    emit(&n, ld, offsetof(struct seccomp_data, args[1]), 0, 0); /* the path pointer, low word... */
    lo = n;
    emit(&n, jeq, 0, 0, 0);
    emit(&n, ld, offsetof(struct seccomp_data, args[1]) + 4, 0, 0); /* ...and high word (little-endian) */
    hi = n;
    emit(&n, jeq, 0, 0, 0);
    allow = n;
    emit(&n, ret, SECCOMP_RET_ALLOW, 0, 0);
    deny = n;
    emit(&n, ret, SECCOMP_RET_ERRNO | EPERM, 0, 0);
    /* Jumps count from the next instruction. */
    for (size_t i = list; i < u; i++)
        program[i].jt = (unsigned char)(deny - i - 1);
    program[u].jf = (unsigned char)(allow - u - 1);
    program[lo].jf = (unsigned char)(deny - lo - 1);
    program[hi].jt = (unsigned char)(allow - hi - 1);
    program[hi].jf = (unsigned char)(deny - hi - 1);
    prog->len = (unsigned short)n;
    prog->filter = program;
    return 0;
#else
    (void)prog;
    return -1;
#endif
}
