/* progress.h - a one-line transfer progress bar on stderr, drawn only when stderr is a terminal. */
#ifndef SOCKGATE_CLI_PROGRESS_H
#define SOCKGATE_CLI_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

/* One transfer being shown; all fields are private to progress.c. */
struct cli_progress {
    char label[48];
    uint64_t total;
    uint64_t done;
    int64_t start_ms;
    int64_t drawn_ms;
    int enabled;
    int drawn;
};

/*
 * Starts showing a transfer of total bytes named label (copied, shortened to
 * fit). Nothing is ever drawn unless stderr is a terminal and quiet is 0, so
 * scripts and logs see no control characters.
 */
void cli_progress_start(struct cli_progress *p, const char *label, uint64_t total, int quiet);

/* Records that done bytes have moved; redraws at most ten times a second. */
void cli_progress_update(struct cli_progress *p, uint64_t done);

/* Erases the bar so the next line (an error or a result) starts clean. */
void cli_progress_end(struct cli_progress *p);

/* Writes n bytes as "512 B", "1.5 KiB", "3.2 GiB" into buf. */
void cli_format_bytes(double n, char *buf, size_t buflen);

#endif
