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
 *
 * An entry whose value is the same pointer as an earlier entry's is an old
 * spelling of that flag, kept working: a bare number given to it gets the unit
 * its metavar names ("MS": ms, "S" or "SECONDS": s) before it is stored, the
 * flag given last on the command line wins, and --help shows it as the old
 * spelling, without a default.
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

/* The convention every program's --help states (and every parser below follows). */
#define SG_UNITS_HELP                                                                                              \
    "durations take a unit: 500ms, 10s, 2m, 1h; sizes take K, M, G (1024-based: 64K, 1M, 16G)"

/*
 * Parses a duration "N" plus ms, s, m or h into milliseconds within
 * min_ms..max_ms. A bare number means N * bare_unit_ms (the old spelling of
 * flags that took one); with bare_unit_ms 0 only "0" may go without a unit.
 */
int sg_parse_duration_ms(const char *text, uint64_t min_ms, uint64_t max_ms, uint64_t bare_unit_ms, uint64_t *out);

/* Writes ms the way a user would type it: "1h", "10s", "1500ms". */
void sg_format_duration(uint64_t ms, char *buf, size_t len);

/* Writes bytes the way a user would type them: "16G", "1M", "1500". */
void sg_format_size(uint64_t bytes, char *buf, size_t len);

/*
 * The checks a program runs on its flags after sg_options_parse: each returns
 * 0 with *out set, or prints "PROG: --FLAG 'TEXT' must be ..." naming the
 * range in the units the user types and returns -1 (the caller exits 2).
 */
int sg_flag_duration(const char *prog, const char *flag, const char *text, uint64_t min_ms, uint64_t max_ms,
                     uint64_t bare_unit_ms, uint64_t *out);
int sg_flag_size(const char *prog, const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out);
int sg_flag_count(const char *prog, const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out);

/* The version string every program prints. */
#define SG_VERSION "0.1.0"

#endif
