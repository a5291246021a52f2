/* common.h - what every sockgate-cli subcommand shares: connecting and failing with one line. */
#ifndef SOCKGATE_CLI_COMMON_H
#define SOCKGATE_CLI_COMMON_H

#include <stdint.h>
#include <stdio.h>

/* Exit status for a usage error, and for a failure of the exchange (refused, timeout, protocol). */
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_FAIL 1

/* Prints "sockgate-cli: MESSAGE" on stderr as one line. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Connects a socket of type (SOCK_STREAM or SOCK_DGRAM) to addr_text
 * ("HOST:PORT") within timeout_ms. Returns the descriptor, or -1 after
 * printing a one-line error.
 */
int cli_connect(const char *addr_text, int type, int timeout_ms);

/* Returns 1 when stdin and stderr are terminals (prompts and progress bars go there). */
int cli_interactive(void);

/*
 * Parses the duration flag --FLAG of command cmd (500ms, 10s; a bare number
 * is milliseconds, the old spelling) into *out_ms within min_ms..max_ms;
 * 0, or CLI_EXIT_USAGE after printing why.
 */
int cli_parse_duration(const char *cmd, const char *flag, const char *text, uint64_t min_ms, uint64_t max_ms,
                       int *out_ms);

#endif
