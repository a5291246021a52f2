/* opts.c - flags, their environment variables, --help and --version for every program. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sockgate/error.h"
#include "sockgate/opts.h"

#define MAX_OPTIONS 64

/* Index of the flag entry k is an old spelling of (an earlier entry with the same value pointer), or -1. */
static int renamed_from(const struct sg_option *opts, int k)
{
    if (!opts[k].value || opts[k].append)
        return -1;
    for (int j = 0; j < k; j++)
        if (opts[j].value == opts[k].value)
            return j;
    return -1;
}

static void print_help(const char *prog, const char *usage, const char *about,
                       const struct sg_option *opts)
{
    printf("usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (int k = 0; opts[k].name; k++) {
        const struct sg_option *o = &opts[k];
        int renamed = renamed_from(opts, k);
        char flag[96];
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        if (renamed >= 0)
            printf("  %-28s old spelling of --%s: %s", flag, opts[renamed].name, o->help);
        else
            printf("  %-28s %s", flag, o->help);
        if (renamed < 0 && o->value && *o->value && o->metavar)
            printf(" (default %s)", *o->value);
        if (o->env)
            printf(" [env %s]", o->env);
        printf("\n");
    }
    printf("  %-28s %s\n  %-28s %s\n", "--help", "print this help and exit", "--version",
           "print the version and exit");
    printf("\nEvery flag may also be set by its environment variable; a flag beats its variable.\n"
           "Values: " SG_UNITS_HELP ".\n");
    (void)prog;
}

/*
 * Slots for the values old spellings are rewritten into ("500" -> "500ms"),
 * reused in turn: a program parses its flags once, with fewer old spellings than slots.
 */
static char old_values[8][32];
static unsigned n_old_values;

/* For an old spelling: a bare number gets the unit its metavar names; other text is kept as given. */
static const char *with_old_unit(const struct sg_option *o, const char *value)
{
    const char *unit = NULL;
    size_t len = strlen(value);
    if (strcmp(o->metavar, "MS") == 0)
        unit = "ms";
    else if (strcmp(o->metavar, "S") == 0 || strcmp(o->metavar, "SECONDS") == 0)
        unit = "s";
    char *slot;
    if (!unit || len == 0 || len > 20 || strspn(value, "0123456789") != len)
        return value;
    slot = old_values[n_old_values++ % (sizeof old_values / sizeof old_values[0])];
    snprintf(slot, sizeof old_values[0], "%s%s", value, unit);
    return slot;
}

/* Stores one value of o: appended values may be comma-separated lists. */
static int store(const char *prog, const struct sg_option *opts, int k, const char *value)
{
    const struct sg_option *o = &opts[k];
    if (!o->append) {
        if (o->metavar && renamed_from(opts, k) >= 0)
            value = with_old_unit(o, value);
        if (o->value)
            *o->value = value;
        return 0;
    }
    char *copy = strdup(value), *save = NULL;
    if (!copy)
        return 2;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (*item && o->append(item, o->ctx) != 0) {
            fprintf(stderr, "%s: --%s: '%s' is not a valid %s\n", prog, o->name, item, o->metavar);
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
        if (store(prog, opts, k, value) != 0)
            return 2;
        given[k] = 1;
        /* A flag and its old spelling are one setting: either given keeps both variables out. */
        for (int j = 0; j < n; j++)
            if (renamed_from(opts, j) == k || renamed_from(opts, k) == j)
                given[j] = 1;
    }
    /* Backwards, so that a flag's own variable is stored after (and beats) its old spelling's. */
    for (int k = n - 1; k >= 0; k--) {
        const char *env = opts[k].env ? getenv(opts[k].env) : NULL;
        if (given[k] || !env)
            continue;
        if (!opts[k].metavar) {
            if (!env_is_false(env) && store(prog, opts, k, "1") != 0)
                return 2;
        } else if (store(prog, opts, k, env) != 0) {
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

int sg_parse_duration_ms(const char *text, uint64_t min_ms, uint64_t max_ms, uint64_t bare_unit_ms, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    char *end;
    unsigned long long v;
    uint64_t unit = 0;
    if (!text || *text < '0' || *text > '9')
        return SG_ERR_INVALID;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno)
        return SG_ERR_INVALID;
    if (!*end) {
        unit = v == 0 ? 1 : bare_unit_ms;
    } else {
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcmp(end, units[i].suffix) == 0)
                unit = units[i].ms;
    }
    if (unit == 0 || v > UINT64_MAX / unit)
        return SG_ERR_INVALID;
    v *= unit;
    if (v < min_ms || v > max_ms)
        return SG_ERR_INVALID;
    *out = v;
    return SG_OK;
}

void sg_format_duration(uint64_t ms, char *buf, size_t len)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
}

void sg_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char suffix[] = "KMGT";
    unsigned i = 0;
    uint64_t v = bytes;
    while (v != 0 && v % 1024 == 0 && i < 4) {
        v /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%llu", (unsigned long long)bytes);
    else
        snprintf(buf, len, "%llu%c", (unsigned long long)v, suffix[i - 1]);
}

int sg_flag_duration(const char *prog, const char *flag, const char *text, uint64_t min_ms, uint64_t max_ms,
                     uint64_t bare_unit_ms, uint64_t *out)
{
    char lo[32], hi[32];
    if (sg_parse_duration_ms(text, min_ms, max_ms, bare_unit_ms, out) == SG_OK)
        return 0;
    sg_format_duration(min_ms, lo, sizeof lo);
    sg_format_duration(max_ms, hi, sizeof hi);
    fprintf(stderr, "%s: --%s '%s' must be a duration from %s to %s (with a unit: 500ms, 10s, 2m, 1h)\n", prog,
            flag, text ? text : "", lo, hi);
    return -1;
}

int sg_flag_size(const char *prog, const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char lo[32], hi[32];
    if (sg_parse_u64(text, min, max, 1, out) == SG_OK)
        return 0;
    sg_format_size(min, lo, sizeof lo);
    sg_format_size(max, hi, sizeof hi);
    fprintf(stderr, "%s: --%s '%s' must be a size from %s to %s (bytes, or with K, M, G: 64K, 1M)\n", prog, flag,
            text ? text : "", lo, hi);
    return -1;
}

int sg_flag_count(const char *prog, const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    if (sg_parse_u64(text, min, max, 0, out) == SG_OK)
        return 0;
    fprintf(stderr, "%s: --%s '%s' must be a whole number from %llu to %llu\n", prog, flag, text ? text : "",
            (unsigned long long)min, (unsigned long long)max);
    return -1;
}
