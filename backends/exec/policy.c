/* policy.c - resolving and matching the allowlist of commands. */
#include "policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"

/* Returns 1 when path names an executable regular file. */
static int is_executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* A name is a plain file name: no slash, no blank, no control byte, not "." or "..". */
static int is_plain_name(const char *name)
{
    if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c == '/' || *c <= ' ' || *c == 0x7f)
            return 0;
    return 1;
}

/* Finds name in EXEC_CHILD_PATH; writes the first executable match into out. */
static int search_path(const char *name, char *out, size_t outlen)
{
    const char *dir = EXEC_CHILD_PATH;
    while (*dir) {
        size_t n = strcspn(dir, ":");
        if (n > 0 && (size_t)snprintf(out, outlen, "%.*s/%s", (int)n, dir, name) < outlen &&
            is_executable_file(out))
            return SG_OK;
        dir += n;
        if (*dir == ':')
            dir++;
    }
    return SG_ERR_NOT_FOUND;
}

/* Resolves one entry into name and absolute path. */
static int resolve(const char *entry, char *name, size_t namelen, char *path, size_t pathlen, char *err,
                   size_t errlen)
{
    if (strchr(entry, '/')) {
        const char *base = strrchr(entry, '/') + 1;
        if (entry[0] != '/' || strstr(entry, "/./") || strstr(entry, "/../") || strstr(entry, "//") ||
            !is_plain_name(base)) {
            snprintf(err, errlen, "--allow '%s': give a bare name or a plain absolute path", entry);
            return SG_ERR_INVALID;
        }
        if (strlen(entry) >= pathlen || !is_executable_file(entry)) {
            snprintf(err, errlen, "--allow '%s': not an executable file", entry);
            return SG_ERR_NOT_FOUND;
        }
        snprintf(path, pathlen, "%s", entry);
        snprintf(name, namelen, "%s", base);
        return SG_OK;
    }
    if (!is_plain_name(entry) || strlen(entry) >= namelen) {
        snprintf(err, errlen, "--allow '%s': not a command name", entry);
        return SG_ERR_INVALID;
    }
    if (search_path(entry, path, pathlen) != SG_OK) {
        snprintf(err, errlen, "--allow '%s': no such command in %s", entry, EXEC_CHILD_PATH);
        return SG_ERR_NOT_FOUND;
    }
    snprintf(name, namelen, "%s", entry);
    return SG_OK;
}

int exec_policy_init(struct exec_policy *p, const char *const *entries, size_t n, int skip_missing,
                     char *err, size_t errlen)
{
    int rc = SG_OK;

    p->count = 0;
    p->items = calloc(n ? n : 1, sizeof *p->items);
    if (!p->items) {
        snprintf(err, errlen, "out of memory for the allowlist");
        return SG_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        char name[256], path[4096], why[512];
        struct exec_allowed *a = &p->items[p->count];
        rc = resolve(entries[i], name, sizeof name, path, sizeof path, why, sizeof why);
        if (rc == SG_ERR_NOT_FOUND && skip_missing) {
            sg_warn("default command left out: %s", why);
            rc = SG_OK;
            continue;
        }
        if (rc != SG_OK) {
            snprintf(err, errlen, "%s", why);
            goto out;
        }
        if (exec_policy_match(p, path))
            continue; /* listed twice: keep the first */
        a->name = strdup(name);
        a->path = strdup(path);
        if (!a->name || !a->path) {
            free(a->name);
            free(a->path);
            snprintf(err, errlen, "out of memory for the allowlist");
            rc = SG_ERR_NOMEM;
            goto out;
        }
        p->count++;
    }
    if (p->count == 0) {
        snprintf(err, errlen, "the allowlist is empty: no command could be resolved");
        rc = SG_ERR_NOT_FOUND;
    }
out:
    if (rc != SG_OK)
        exec_policy_free(p);
    return rc;
}

const struct exec_allowed *exec_policy_match(const struct exec_policy *p, const char *argv0)
{
    int has_slash = strchr(argv0, '/') != NULL;
    for (size_t i = 0; i < p->count; i++) {
        const char *want = has_slash ? p->items[i].path : p->items[i].name;
        if (strcmp(want, argv0) == 0)
            return &p->items[i];
    }
    return NULL;
}

void exec_policy_describe(const struct exec_policy *p, char *buf, size_t buflen)
{
    size_t used = 0;
    if (buflen == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < p->count && used < buflen; i++) {
        int n = snprintf(buf + used, buflen - used, "%s%s", i ? "," : "", p->items[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

void exec_policy_free(struct exec_policy *p)
{
    for (size_t i = 0; p->items && i < p->count; i++) {
        free(p->items[i].name);
        free(p->items[i].path);
    }
    free(p->items);
    p->items = NULL;
    p->count = 0;
}
