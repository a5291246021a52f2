/* opts.h - command-line flags with an environment variable for each, --help and --version. */
#ifndef SOCKGATE_OPTS_H
#define SOCKGATE_OPTS_H

#include <stdint.h>
#include <stddef.h>

/*
 * One flag. The value is taken from --NAME VALUE or --NAME=VALUE, else from
 * the environment variable env, else it keeps the default the caller put in
 * *value. Flags without metavar are booleans and store "1". When append is
 * set the flag may repeat: each value (comma-separated ones too) is passed to
 * append(value, ctx) instead of being stored; env values are passed as well.
 */
struct sg_option {
    const char *name;
    const char *env;
    const char *metavar;
    const char *help;
    const char **value;
    int (*append)(const char *value, void *ctx);
    void *ctx;
};

/*
 * Parses argv against opts (terminated by an entry with name NULL). Returns
 * 0 to go on (with *first_arg the index of the first positional argument, or
 * NULL to refuse positionals), 1 after printing --help or --version (exit 0),
 * or 2 after printing a one-line error (exit 2). usage is the synopsis line
 * and about one sentence on what the program does.
 */
int sg_options_parse(const char *prog, const char *usage, const char *about, const struct sg_option *opts,
                     int argc, char **argv, int *first_arg);

/* Parses a decimal unsigned integer in min..max, with optional K/M/G/T (1024-based) suffix when allow_suffix. */
int sg_parse_u64(const char *text, uint64_t min, uint64_t max, int allow_suffix, uint64_t *out);

/* The version string every program prints. */
#define SG_VERSION "0.1.0"

#endif
