/* sandbox.c - Landlock rules built once per server, namespaces probed once, both entered in every child. */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/landlock.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meta_filter.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

/* Debian 12's headers stop at ABI 2; the later rights are fixed numbers in the kernel's UAPI. */
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#define SB_FS_IOCTL_DEV (1ULL << 15)          /* ABI 5 */
#define SB_NET_BIND_TCP (1ULL << 0)           /* ABI 4 */
#define SB_NET_CONNECT_TCP (1ULL << 1)        /* ABI 4 */
#define SB_SCOPE_ABSTRACT_UNIX (1ULL << 0)    /* ABI 6 */
#define SB_SCOPE_SIGNAL (1ULL << 1)           /* ABI 6 */

/* struct landlock_ruleset_attr as of ABI 6; the size passed tells the kernel how much of it we mean. */
struct sb_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

#define FS_READ (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define FS_READ_EXEC (FS_READ | LANDLOCK_ACCESS_FS_EXECUTE)
/* The rights a rule on a file (not a directory) may carry; the kernel refuses others with EINVAL. */
#define FS_FILE_RIGHTS                                                                                            \
    (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |                  \
     LANDLOCK_ACCESS_FS_TRUNCATE | SB_FS_IOCTL_DEV)

/* How deep a grant is split around a protected path before giving up on that branch. */
#define MAX_SPLIT_DEPTH 12
#define MAX_PROTECT 16

/* The system's directories commands read and execute from (those that exist; /lib* is matched at run time). */
static const char *const system_dirs[] = {"/usr", "/bin", "/sbin", "/etc"};

/* Single files commands commonly need outside those: the null and random devices, uptime's sources. */
static const struct {
    const char *path;
    int writable;
} system_files[] = {
    {"/dev/null", 1}, {"/dev/zero", 0},     {"/dev/full", 1},         {"/dev/random", 0},
    {"/dev/urandom", 0}, {"/proc/uptime", 0}, {"/proc/loadavg", 0}, {"/proc/meminfo", 0},
    {"/proc/cpuinfo", 0}, {"/proc/stat", 0},
};

/* State of one init: the ruleset under construction and the protected paths, canonical. */
struct build {
    struct exec_sandbox *sb;
    uint64_t fs_all;
    char *protect[MAX_PROTECT];
    size_t n_protect;
    char *err;
    size_t errlen;
};

int exec_sandbox_mode_parse(const char *text, enum exec_sandbox_mode *mode)
{
    if (!text || !strcmp(text, "best-effort"))
        *mode = EXEC_SANDBOX_BEST_EFFORT;
    else if (!strcmp(text, "strict"))
        *mode = EXEC_SANDBOX_STRICT;
    else if (!strcmp(text, "off"))
        *mode = EXEC_SANDBOX_OFF;
    else
        return -1;
    return 0;
}

const char *exec_sandbox_mode_name(enum exec_sandbox_mode mode)
{
    return mode == EXEC_SANDBOX_STRICT ? "strict" : mode == EXEC_SANDBOX_OFF ? "off" : "best-effort";
}

/* Returns the Landlock ABI version, or 0 when the kernel has none (or it is disabled, or seccomp hides it). */
static int landlock_abi(void)
{
    long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return v > 0 ? (int)v : 0;
}

/* Every file right the given ABI knows: a right left unhandled would be allowed everywhere. */
static uint64_t fs_rights(int abi)
{
    uint64_t r = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0 to 12 */
    if (abi >= 2)
        r |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3)
        r |= LANDLOCK_ACCESS_FS_TRUNCATE;
    if (abi >= 5)
        r |= SB_FS_IOCTL_DEV;
    return r;
}

/* Returns 1 when path is dir or lies below it (both canonical). */
static int is_within(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return 1;
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/*
 * Canonical form of a path that may not exist yet (a file root the file
 * backend creates later): realpath of its deepest existing ancestor plus the
 * rest. Returns a new string or NULL.
 */
static char *canonical(const char *path)
{
    char full[PATH_MAX], head[PATH_MAX], real[PATH_MAX], *slash;
    char *out = NULL;
    if (!path || !*path)
        return NULL;
    if (realpath(path, real))
        return strdup(real);
    /* "files" means "./files": the loop below needs a directory part to fall back on. */
    if (snprintf(full, sizeof full, "%s%s", strchr(path, '/') ? "" : "./", path) >= (int)sizeof full)
        return NULL;
    memcpy(head, full, sizeof head);
    while ((slash = strrchr(head, '/')) != NULL) {
        const char *rest = full + (slash - head);
        *slash = '\0';
        if (realpath(head[0] ? head : "/", real)) {
            if (asprintf(&out, "%s%s", strcmp(real, "/") ? real : "", rest) < 0)
                out = NULL;
            return out;
        }
    }
    return NULL;
}

/* Adds one rule: rights on path (trimmed to the file rights when it is not a directory). */
static int add_rule(struct build *b, const char *path, uint64_t rights)
{
    struct landlock_path_beneath_attr pb;
    struct stat st;
    int fd = open(path, O_PATH | O_CLOEXEC), rc = 0;
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = -1;
        goto out;
    }
    pb.allowed_access = rights & b->fs_all;
    if (!S_ISDIR(st.st_mode))
        pb.allowed_access &= FS_FILE_RIGHTS;
    pb.parent_fd = fd;
    if (pb.allowed_access && syscall(SYS_landlock_add_rule, b->sb->ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0)
        rc = -1;
out:
    if (rc != 0)
        snprintf(b->err, b->errlen, "cannot grant %s to commands: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

/*
 * Grants rights on path, except on the protected paths below it: Landlock
 * only adds, so a directory holding one is split into its entries, each
 * granted the same way. A protected path equal to path is granted only when
 * the operator named it (explicit). Returns 0 or -1 with b->err filled.
 */
static int grant(struct build *b, const char *path, uint64_t rights, int explicit, int depth)
{
    int holds = 0, rc = 0;
    DIR *d;
    struct dirent *e;

    for (size_t i = 0; i < b->n_protect; i++) {
        if (!strcmp(b->protect[i], path) && !explicit) {
            sg_warn("sandbox: %s is protected, so commands get no access to it", path);
            return 0;
        }
        if (strcmp(b->protect[i], path) && is_within(b->protect[i], path))
            holds = 1;
    }
    if (!holds)
        return add_rule(b, path, rights);
    if (depth >= MAX_SPLIT_DEPTH) {
        sg_warn("sandbox: %s left out: too deep below a grant that holds a protected path", path);
        return 0;
    }
    if (depth == 0)
        sg_warn("sandbox: %s holds a protected path: granting its other entries one by one (entries made later "
                "are not covered)", path);
    d = opendir(path);
    if (!d) {
        sg_warn("sandbox: cannot list %s (%s): left out", path, strerror(errno));
        return 0;
    }
    while (rc == 0 && (e = readdir(d)) != NULL) {
        char child[PATH_MAX], real[PATH_MAX];
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (snprintf(child, sizeof child, "%s/%s", strcmp(path, "/") ? path : "", e->d_name) >= (int)sizeof child ||
            !realpath(child, real))
            continue; /* a dangling link or an over-long name grants nothing */
        rc = grant(b, real, rights, 0, depth + 1);
    }
    closedir(d);
    return rc;
}

/* Grants rights on a path the operator named: canonicalised, explicit. */
static int grant_named(struct build *b, const char *path, uint64_t rights)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        snprintf(b->err, b->errlen, "sandbox grant '%s': %s", path, strerror(errno));
        return -1;
    }
    return grant(b, real, rights, 1, 0);
}

/* Read and execute in the system's directories: /usr /bin /sbin /etc and every /lib* that exists. */
static int grant_system(struct build *b)
{
    DIR *root = opendir("/");
    struct dirent *e;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof system_dirs / sizeof system_dirs[0]; i++) {
        char real[PATH_MAX];
        if (realpath(system_dirs[i], real))
            rc = grant(b, real, FS_READ_EXEC, 0, 0);
    }
    while (rc == 0 && root && (e = readdir(root)) != NULL) {
        char path[NAME_MAX + 2], real[PATH_MAX];
        if (strncmp(e->d_name, "lib", 3) != 0)
            continue;
        snprintf(path, sizeof path, "/%s", e->d_name);
        if (realpath(path, real))
            rc = grant(b, real, FS_READ_EXEC, 0, 0);
    }
    if (root)
        closedir(root);
    for (size_t i = 0; rc == 0 && i < sizeof system_files / sizeof system_files[0]; i++) {
        uint64_t r = LANDLOCK_ACCESS_FS_READ_FILE | SB_FS_IOCTL_DEV;
        if (system_files[i].writable)
            r |= LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE;
        if (access(system_files[i].path, F_OK) == 0)
            rc = grant(b, system_files[i].path, r, 0, 0);
    }
    return rc;
}

/* Child side of the namespace step: new user + network namespace, our own ids mapped to themselves. */
static int enter_netns(const struct exec_sandbox *sb, const char **stage)
{
    static const char deny[] = "deny";
    const struct {
        const char *file;
        const char *text;
    } maps[] = {{"/proc/self/setgroups", deny}, {"/proc/self/uid_map", sb->uid_map}, {"/proc/self/gid_map", sb->gid_map}};

    if (syscall(SYS_unshare, CLONE_NEWUSER | CLONE_NEWNET) != 0) {
        *stage = "unshare(CLONE_NEWUSER|CLONE_NEWNET)";
        return errno;
    }
    /* Mapped ids keep file ownership and whoami as they were; only the network is new (and empty). */
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
        size_t len = strlen(maps[i].text);
        int fd = (int)syscall(SYS_openat, AT_FDCWD, maps[i].file, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || syscall(SYS_write, fd, maps[i].text, len) != (long)len) {
            int e = errno;
            if (fd >= 0)
                syscall(SYS_close, fd);
            *stage = maps[i].file;
            return e;
        }
        syscall(SYS_close, fd);
    }
    return 0;
}

int exec_sandbox_enter(const struct exec_sandbox *sb, const char **stage)
{
    int e;
    if (sb->netns && (e = enter_netns(sb, stage)) != 0)
        return e;
    if (sb->no_new_privs && syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        *stage = "prctl(PR_SET_NO_NEW_PRIVS)";
        return errno;
    }
    if (sb->meta && syscall(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sb->meta_prog, 0, 0) != 0) {
        *stage = "seccomp";
        return errno;
    }
    if (sb->ruleset_fd >= 0 && syscall(SYS_landlock_restrict_self, sb->ruleset_fd, 0) != 0) {
        *stage = "landlock_restrict_self";
        return errno;
    }
    return 0;
}

/* Tries the namespace step in a throw-away child: containers and hardened kernels often refuse it. */
static int netns_works(const struct exec_sandbox *sb, char *why, size_t whylen)
{
    int status = 0;
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork: %s", strerror(errno));
        return 0;
    }
    if (pid == 0) {
        const char *stage = NULL;
        int e = enter_netns(sb, &stage);
        _exit(e == 0 ? 0 : 100 + (e & 63));
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 1;
    snprintf(why, whylen, "%s",
             WIFEXITED(status) && WEXITSTATUS(status) >= 100 ? strerror(WEXITSTATUS(status) - 100) : "probe failed");
    return 0;
}

/* Tries no_new_privs and the metadata filter in a throw-away child (a seccomp policy may forbid stacking). */
static int meta_filter_works(struct exec_sandbox *sb)
{
    int status = 0;
    pid_t pid;
    if (exec_meta_filter(&sb->meta_prog) != 0)
        return 0;
    pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0)
        _exit(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
                      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sb->meta_prog, 0, 0) == 0 && chmod("/", 0755) != 0 &&
                      errno == EPERM
                  ? 0
                  : 1);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Builds the Landlock ruleset; leaves sb->fs at 0 (best effort) or fails (strict) when the kernel has none. */
static int build_landlock(struct build *b, const struct exec_sandbox_config *cfg, const char *workdir)
{
    struct exec_sandbox *sb = b->sb;
    struct sb_ruleset_attr attr = {0};
    size_t attr_size = sizeof attr.handled_access_fs;
    char real[PATH_MAX];
    int rc;

    sb->abi = landlock_abi();
    if (sb->abi == 0)
        return 0;
    b->fs_all = fs_rights(sb->abi);
    attr.handled_access_fs = b->fs_all;
    if (sb->abi >= 4) {
        /* Handled with no rule allowing them: no TCP bind or connect at all. */
        attr.handled_access_net = SB_NET_BIND_TCP | SB_NET_CONNECT_TCP;
        attr_size = offsetof(struct sb_ruleset_attr, scoped);
    }
    if (sb->abi >= 6) {
        attr.scoped = SB_SCOPE_ABSTRACT_UNIX | SB_SCOPE_SIGNAL;
        attr_size = sizeof attr;
    }
    sb->ruleset_fd = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
    if (sb->ruleset_fd < 0) {
        snprintf(b->err, b->errlen, "landlock_create_ruleset (ABI %d): %s", sb->abi, strerror(errno));
        return -1;
    }
    if (!realpath(workdir, real)) {
        snprintf(b->err, b->errlen, "workdir %s: %s", workdir, strerror(errno));
        return -1;
    }
    if (grant_system(b) != 0 || grant(b, real, b->fs_all & ~(uint64_t)LANDLOCK_ACCESS_FS_EXECUTE, 0, 0) != 0)
        return -1;
    for (size_t i = 0; i < cfg->n_programs; i++)
        if (add_rule(b, cfg->programs[i], FS_READ_EXEC) != 0)
            return -1;
    for (size_t i = 0; i < cfg->n_read; i++)
        if (grant_named(b, cfg->read[i], FS_READ) != 0)
            return -1;
    for (size_t i = 0; i < cfg->n_write; i++)
        if ((rc = grant_named(b, cfg->write[i], b->fs_all & ~(uint64_t)LANDLOCK_ACCESS_FS_EXECUTE)) != 0)
            return rc;
    sb->fs = 1;
    sb->net_tcp = sb->abi >= 4;
    sb->scoped = sb->abi >= 6;
    return 0;
}

int exec_sandbox_init(struct exec_sandbox *sb, const struct exec_sandbox_config *cfg, const char *workdir, char *err,
                      size_t errlen)
{
    struct build b = {.sb = sb, .err = err, .errlen = errlen};
    char why[128] = "";
    int rc = SG_ERR_INVALID;

    memset(sb, 0, sizeof *sb);
    sb->ruleset_fd = -1;
    sb->mode = cfg->mode;
    if (cfg->mode == EXEC_SANDBOX_OFF) {
        snprintf(sb->summary, sizeof sb->summary, "off: commands see and reach everything this server can");
        sg_warn("sandbox off: commands can read, write and connect wherever this server can");
        return SG_OK;
    }
    if (cfg->n_protect > MAX_PROTECT) {
        snprintf(err, errlen, "at most %d protected paths", MAX_PROTECT);
        goto out;
    }
    for (size_t i = 0; i < cfg->n_protect; i++) {
        if (!cfg->protect[i] || !*cfg->protect[i])
            continue;
        if ((b.protect[b.n_protect] = canonical(cfg->protect[i])) == NULL) {
            snprintf(err, errlen, "protected path '%s': cannot resolve it", cfg->protect[i]);
            goto out;
        }
        b.n_protect++;
    }
    if (build_landlock(&b, cfg, workdir) != 0)
        goto out;
    if (!sb->fs && cfg->mode == EXEC_SANDBOX_STRICT) {
        snprintf(err, errlen, "--sandbox strict: this kernel offers no Landlock (needs Linux 5.13+ with landlock in "
                              "the lsm= list, and a seccomp profile that allows its system calls)");
        goto out;
    }
    sb->no_new_privs = 1;
    snprintf(sb->uid_map, sizeof sb->uid_map, "%u %u 1\n", (unsigned)geteuid(), (unsigned)geteuid());
    snprintf(sb->gid_map, sizeof sb->gid_map, "%u %u 1\n", (unsigned)getegid(), (unsigned)getegid());
    sb->netns = netns_works(sb, why, sizeof why);
    sb->meta = meta_filter_works(sb);
    snprintf(sb->summary, sizeof sb->summary,
             "%s: files %s, metadata %s, network %s, signals and abstract sockets %s, no_new_privs",
             exec_sandbox_mode_name(sb->mode), sb->fs ? "confined (Landlock)" : "NOT confined",
             sb->meta ? "locked (seccomp)" : "NOT locked",
             sb->netns ? "none (own namespace)" : sb->net_tcp ? "TCP denied (Landlock), UDP open" : "OPEN",
             sb->scoped ? "scoped" : "not scoped");
    sg_info("sandbox %s (Landlock ABI %d)", sb->summary, sb->abi);
    if (!sb->fs)
        sg_warn("sandbox: no Landlock in this kernel: commands can read and write wherever this server can");
    if (!sb->meta)
        sg_warn("sandbox: no seccomp filter: commands can chmod, chown and touch files they can name");
    if (!sb->netns)
        sg_warn("sandbox: no network namespace for commands (%s): %s", why,
                sb->net_tcp ? "TCP is denied by Landlock, UDP is open" : "commands can use the network");
    rc = SG_OK;
out:
    for (size_t i = 0; i < b.n_protect; i++)
        free(b.protect[i]);
    if (rc != SG_OK)
        exec_sandbox_free(sb);
    return rc;
}

void exec_sandbox_free(struct exec_sandbox *sb)
{
    if (sb->ruleset_fd >= 0)
        close(sb->ruleset_fd);
    sb->ruleset_fd = -1;
}
