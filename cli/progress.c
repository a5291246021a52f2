/* progress.c - the transfer progress bar of put and get: percentage, bytes, rate and time left. */
#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sockgate/net.h"

#define REDRAW_MS 100
#define BAR_WIDTH 24

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
    memset(p, 0, sizeof *p);
    /* Keep the end of a long name: it usually tells files apart better than the start. */
    if (len >= sizeof p->label)
        snprintf(p->label, sizeof p->label, "...%s", label + len - (sizeof p->label - 4));
    else
        snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    p->start_ms = sg_now_ms();
    p->enabled = !quiet && isatty(STDERR_FILENO);
}

static void draw(struct cli_progress *p, int64_t now)
{
    char bar[BAR_WIDTH + 1], done[32], total[32], rate[32], eta[32] = "";
    double secs = (double)(now - p->start_ms) / 1000.0;
    double per_s = secs > 0 ? (double)p->done / secs : 0;
    unsigned pct = p->total ? (unsigned)((double)p->done * 100.0 / (double)p->total) : 100;
    unsigned fill = pct * BAR_WIDTH / 100;
    for (unsigned i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : (i == fill ? '>' : '.');
    bar[BAR_WIDTH] = '\0';
    cli_format_bytes((double)p->done, done, sizeof done);
    cli_format_bytes((double)p->total, total, sizeof total);
    cli_format_bytes(per_s, rate, sizeof rate);
    if (per_s > 0 && p->done < p->total) {
        unsigned long left = (unsigned long)((double)(p->total - p->done) / per_s);
        snprintf(eta, sizeof eta, " %lu:%02lu left", left / 60, left % 60);
    }
    /* \r returns to the line start and \033[K clears what a longer earlier line left. */
    fprintf(stderr, "\r%s [%s] %3u%% %s/%s %s/s%s\033[K", p->label, bar, pct > 100 ? 100 : pct, done, total, rate,
            eta);
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
    if (p->drawn && now - p->drawn_ms < REDRAW_MS && done < p->total)
        return;
    draw(p, now);
}

void cli_progress_end(struct cli_progress *p)
{
    if (!p->enabled || !p->drawn)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->drawn = 0;
}
