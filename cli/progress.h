/* progress.h - a one-line transfer progress bar on stderr, drawn only when stderr is a terminal. */
#ifndef SOCKGATE_CLI_PROGRESS_H
#define SOCKGATE_CLI_PROGRESS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* One transfer being shown; all fields are private to progress.c. */
struct cli_progress {
    char label[48];
    uint64_t total;
    uint64_t done;
    int64_t start_ms;
    int64_t drawn_ms;
    int64_t end_ms;
    unsigned columns; /* the terminal's width, measured again after SIGWINCH */
    int enabled;
    int drawn;
    int has_old_winch;
    struct sigaction old_winch;
};

/*
 * Starts showing a transfer of total bytes named label (copied, shortened to
 * fit), measuring the terminal's width (TIOCGWINSZ) and watching SIGWINCH.
 * Nothing is ever drawn unless stderr is a terminal and quiet is 0, so
 * scripts and logs see no control characters.
 */
void cli_progress_start(struct cli_progress *p, const char *label, uint64_t total, int quiet);

/*
 * Records that done bytes have moved; redraws at most ten times a second, on
 * one line never wider than the terminal (parts are dropped as it narrows).
 */
void cli_progress_update(struct cli_progress *p, uint64_t done);

/* Erases the bar so the next line (an error or a result) starts clean, and stops watching SIGWINCH. */
void cli_progress_end(struct cli_progress *p);

/*
 * After a transfer that succeeded: one line on stderr, "VERB NAME: SIZE in
 * SECONDS s (RATE/s), sha256 HEX", under the same terminal-only rule as the bar.
 */
void cli_progress_summary(const struct cli_progress *p, const char *verb, const char *name, const char *sha256);

/* Writes n bytes as "512 B", "1.5 KiB", "3.2 GiB" into buf. */
void cli_format_bytes(double n, char *buf, size_t buflen);

#endif
