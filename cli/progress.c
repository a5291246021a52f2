/* progress.c - the transfer progress bar of put and get: one line fitted to the terminal, then a summary. */
#include "progress.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "sockgate/net.h"

#define REDRAW_MS 100
#define MAX_LINE 512
#define MIN_BAR 10
#define MAX_BAR 40
#define FALLBACK_COLUMNS 80

/* Set by SIGWINCH: the next redraw measures the terminal again. */
static volatile sig_atomic_t resized;

static void on_resize(int sig)
{
    (void)sig;
    resized = 1;
}

/* The terminal's width; a bar one column short of it never wraps (a wrapped line cannot be redrawn with \r). */
static unsigned terminal_columns(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return FALLBACK_COLUMNS;
}

void cli_format_bytes(double n, char *buf, size_t buflen)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    unsigned u = 0;
    while (n >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        n /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, buflen, "%.0f B", n);
    else
        snprintf(buf, buflen, "%.1f %s", n, units[u]);
}

void cli_progress_start(struct cli_progress *p, const char *label, uint64_t total, int quiet)
{
    size_t len = strlen(label);
    struct sigaction sa;
    memset(p, 0, sizeof *p);
    /* Keep the end of a long name: it usually tells files apart better than the start. */
    if (len >= sizeof p->label)
        snprintf(p->label, sizeof p->label, "...%s", label + len - (sizeof p->label - 4));
    else
        snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    p->start_ms = sg_now_ms();
    p->enabled = !quiet && isatty(STDERR_FILENO);
    if (!p->enabled)
        return;
    p->columns = terminal_columns();
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_resize;
    sa.sa_flags = SA_RESTART; /* the transfer's reads and writes go on undisturbed */
    sigemptyset(&sa.sa_mask);
    p->has_old_winch = sigaction(SIGWINCH, &sa, &p->old_winch) == 0;
}

/* Appends text to line (at *len of cap) while it fits in width columns; returns 0 when it did not fit. */
static int append(char *line, size_t *len, size_t cap, unsigned width, const char *text)
{
    size_t n = strlen(text);
    if (*len + n > width || *len + n + 1 > cap)
        return 0;
    memcpy(line + *len, text, n + 1);
    *len += n;
    return 1;
}

static void draw(struct cli_progress *p, int64_t now)
{
    char line[MAX_LINE], bar[MAX_BAR + 3], done[32], total[32], rate[32], part[96], eta[32] = "";
    double secs = (double)(now - p->start_ms) / 1000.0;
    double per_s = secs > 0 ? (double)p->done / secs : 0;
    unsigned pct = p->total ? (unsigned)((double)p->done * 100.0 / (double)p->total) : 100;
    unsigned width, bar_width, fill;
    size_t len = 0, label_room;

    if (resized) {
        resized = 0;
        p->columns = terminal_columns();
    }
    width = p->columns > 1 ? p->columns - 1 : 1;
    if (pct > 100)
        pct = 100;
    cli_format_bytes((double)p->done, done, sizeof done);
    cli_format_bytes((double)p->total, total, sizeof total);
    cli_format_bytes(per_s, rate, sizeof rate);
    if (per_s > 0 && p->done < p->total) {
        unsigned long left = (unsigned long)((double)(p->total - p->done) / per_s);
        snprintf(eta, sizeof eta, " %lu:%02lu left", left / 60, left % 60);
    }
    /* What matters most goes first: the percentage, then the bytes, the bar, the rate, the name, the time left. */
    snprintf(part, sizeof part, " %3u%% %s/%s", pct, done, total);
    line[0] = '\0';
    append(line, &len, sizeof line, width, part + 1);
    /* The bar takes the room left after the rate and a short name, between MIN_BAR and MAX_BAR columns. */
    label_room = strlen(p->label) < 16 ? strlen(p->label) : 16;
    bar_width = width > len + strlen(rate) + 4 + label_room + 3 + MIN_BAR
                    ? (unsigned)(width - len - strlen(rate) - 4 - label_room - 3)
                    : 0;
    if (bar_width > MAX_BAR)
        bar_width = MAX_BAR;
    if (bar_width >= MIN_BAR) {
        fill = pct * bar_width / 100;
        bar[0] = ' ';
        bar[1] = '[';
        for (unsigned i = 0; i < bar_width; i++)
            bar[2 + i] = i < fill ? '#' : (i == fill ? '>' : '.');
        bar[2 + bar_width] = ']';
        bar[3 + bar_width] = '\0';
        append(line, &len, sizeof line, width, bar);
    }
    snprintf(part, sizeof part, " %s/s", rate);
    append(line, &len, sizeof line, width, part);
    if (len + 2 < width) {
        /* The name, cut at the front to the room there is. */
        size_t room = width - len - 1, n = strlen(p->label);
        if (n <= room)
            snprintf(part, sizeof part, " %s", p->label);
        else if (room > 4)
            snprintf(part, sizeof part, " ...%s", p->label + n - (room - 4));
        else
            part[0] = '\0';
        append(line, &len, sizeof line, width, part);
    }
    append(line, &len, sizeof line, width, eta);
    /* \r returns to the line start and \033[K clears what a longer earlier line left. */
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    p->drawn = 1;
    p->drawn_ms = now;
}

void cli_progress_update(struct cli_progress *p, uint64_t done)
{
    int64_t now;
    p->done = done;
    if (!p->enabled)
        return;
    now = sg_now_ms();
    if (p->drawn && now - p->drawn_ms < REDRAW_MS && done < p->total && !resized)
        return;
    draw(p, now);
}

void cli_progress_end(struct cli_progress *p)
{
    if (!p->enabled)
        return;
    if (p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->drawn = 0;
    }
    p->end_ms = sg_now_ms();
    if (p->has_old_winch) {
        sigaction(SIGWINCH, &p->old_winch, NULL);
        p->has_old_winch = 0;
    }
}

void cli_progress_summary(const struct cli_progress *p, const char *verb, const char *name, const char *sha256)
{
    char size[32], rate[32];
    int64_t ms;
    if (!p->enabled)
        return;
    ms = (p->end_ms ? p->end_ms : sg_now_ms()) - p->start_ms;
    cli_format_bytes((double)p->done, size, sizeof size);
    cli_format_bytes(ms > 0 ? (double)p->done * 1000.0 / (double)ms : 0, rate, sizeof rate);
    fprintf(stderr, "%s %s: %s in %.1f s (%s/s), sha256 %s\n", verb, name, size, (double)ms / 1000.0, rate,
            sha256);
    fflush(stderr);
}
