/* opts.c - flags, their environment variables, --help and --version for every program. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sockgate/error.h"
#include "sockgate/opts.h"

#define MAX_OPTIONS 64

static void print_help(const char *prog, const char *usage, const char *about,
                       const struct sg_option *opts)
{
    printf("usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (const struct sg_option *o = opts; o->name; o++) {
        char flag[96];
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        printf("  %-28s %s", flag, o->help);
        if (o->value && *o->value && o->metavar)
            printf(" (default %s)", *o->value);
        if (o->env)
            printf(" [env %s]", o->env);
        printf("\n");
    }
    printf("  %-28s %s\n  %-28s %s\n", "--help", "print this help and exit", "--version",
           "print the version and exit");
    (void)prog;
}

/* Stores one value of o: appended values may be comma-separated lists. */
static int store(const char *prog, const struct sg_option *o, const char *value)
{
    if (!o->append) {
        if (o->value)
            *o->value = value;
        return 0;
    }
    char *copy = strdup(value), *save = NULL;
    if (!copy)
        return 2;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (*item && o->append(item, o->ctx) != 0) {
            fprintf(stderr, "%s: invalid value '%s' for --%s\n", prog, item, o->name);
            free(copy);
            return 2;
        }
    }
    /* The append callback copies what it keeps. */
    free(copy);
    return 0;
}

static int env_is_false(const char *v)
{
    return !*v || strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0;
}

int sg_options_parse(const char *prog, const char *usage, const char *about, const struct sg_option *opts,
                     int argc, char **argv, int *first_arg)
{
    char given[MAX_OPTIONS] = {0};
    int i, n = 0;

    while (opts[n].name && n < MAX_OPTIONS)
        n++;
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq, *value = NULL;
        size_t namelen;
        int k;
        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(prog, usage, about, opts);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s %s\n", prog, SG_VERSION);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (arg[0] == '-' && arg[1] != '\0') {
                fprintf(stderr, "%s: unknown option '%s' (see --help)\n", prog, arg);
                return 2;
            }
            break; /* first positional argument */
        }
        arg += 2;
        eq = strchr(arg, '=');
        namelen = eq ? (size_t)(eq - arg) : strlen(arg);
        for (k = 0; k < n; k++)
            if (strlen(opts[k].name) == namelen && strncmp(opts[k].name, arg, namelen) == 0)
                break;
        if (k == n) {
            fprintf(stderr, "%s: unknown option '--%.*s' (see --help)\n", prog, (int)namelen, arg);
            return 2;
        }
        if (!opts[k].metavar) {
            if (eq) {
                fprintf(stderr, "%s: --%s takes no value\n", prog, opts[k].name);
                return 2;
            }
            value = "1";
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "%s: --%s needs a value (%s)\n", prog, opts[k].name, opts[k].metavar);
            return 2;
        }
        if (store(prog, &opts[k], value) != 0)
            return 2;
        given[k] = 1;
    }
    for (int k = 0; k < n; k++) {
        const char *env = opts[k].env ? getenv(opts[k].env) : NULL;
        if (given[k] || !env)
            continue;
        if (!opts[k].metavar) {
            if (!env_is_false(env) && store(prog, &opts[k], "1") != 0)
                return 2;
        } else if (store(prog, &opts[k], env) != 0) {
            return 2;
        }
    }
    if (first_arg) {
        *first_arg = i;
    } else if (i < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, argv[i]);
        return 2;
    }
    return 0;
}

int sg_parse_u64(const char *text, uint64_t min, uint64_t max, int allow_suffix, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;
    if (!text || !*text || *text == '-' || *text == '+' || *text == ' ')
        return SG_ERR_INVALID;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno || end == text)
        return SG_ERR_INVALID;
    if (*end && allow_suffix) {
        switch (*end) {
        case 'K': case 'k': shift = 10; break;
        case 'M': case 'm': shift = 20; break;
        case 'G': case 'g': shift = 30; break;
        case 'T': case 't': shift = 40; break;
        default: return SG_ERR_INVALID;
        }
        end++;
        if (*end == 'i' || *end == 'B')
            end++;
        if (*end == 'B')
            end++;
    }
    if (*end)
        return SG_ERR_INVALID;
    if (shift && v > (UINT64_MAX >> shift))
        return SG_ERR_INVALID;
    v <<= shift;
    if (v < min || v > max)
        return SG_ERR_INVALID;
    *out = v;
    return SG_OK;
}
