/* main.c - sockgate-file: the tutorial's FTP upload made into a file service you can trust with real files. */
#include <stdint.h>
#include <stdio.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

/* Parses text as an integer in min..max into *out, or prints why naming flag; returns 0 or 2 (usage error). */
static int number(const char *flag, const char *text, uint64_t min, uint64_t max, int suffix, uint64_t *out)
{
    if (sg_parse_u64(text, min, max, suffix, out) == SG_OK)
        return 0;
    fprintf(stderr, "sockgate-file: --%s must be a number from %llu to %llu%s, not '%s'\n", flag,
            (unsigned long long)min, (unsigned long long)max, suffix ? " (K, M, G, T suffixes allowed)" : "", text);
    return 2;
}

int main(int argc, char **argv)
{
    struct file_config cfg;
    const char *listen = FILE_DEFAULT_LISTEN, *root = FILE_DEFAULT_ROOT, *max_size = "64G", *max_conns = "128";
    const char *io_timeout = "60", *idle_timeout = "300", *log_format = "text";
    uint64_t n;
    char err[512];
    void *srv = NULL;
    int rc;
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_FILE_LISTEN", "HOST:PORT|unix:PATH", "TCP address (port 0: any) or UNIX socket to serve", &listen, NULL, NULL},
        {"root", "SOCKGATE_FILE_ROOT", "DIR", "directory holding the files; created when missing", &root, NULL, NULL},
        {"max-size", "SOCKGATE_FILE_MAX_SIZE", "BYTES", "largest upload accepted (K/M/G/T suffixes)", &max_size, NULL,
         NULL},
        {"max-conns", "SOCKGATE_FILE_MAX_CONNS", "N", "connections served at once (a thread each); more get error busy",
         &max_conns, NULL, NULL},
        {"io-timeout", "SOCKGATE_FILE_IO_TIMEOUT", "S", "drop a request that makes no progress for S seconds (0: never)",
         &io_timeout, NULL, NULL},
        {"idle-timeout", "SOCKGATE_FILE_IDLE_TIMEOUT", "S", "close a connection idle between requests for S seconds (0: never)",
         &idle_timeout, NULL, NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format on stderr", &log_format, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    sg_signals_block();
    rc = sg_options_parse("sockgate-file",
                          "sockgate-file [--listen HOST:PORT] [--root DIR] [--max-size BYTES] [--max-conns N] "
                          "[--io-timeout S] [--idle-timeout S]",
                          "Stores, serves, lists and deletes files in one flat directory over sockgate's framed "
                          "protocol (op upload, download, list, stat, delete). Uploads are verified, fsync'ed and "
                          "renamed into place: nothing partial is ever visible.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_log_setup("sockgate-file", log_format) != SG_OK)
        return 2;
    file_config_defaults(&cfg);
    cfg.listen = listen;
    cfg.root = root;
    if (number("max-size", max_size, 0, SG_FRAME_MAX_BODY, 1, &cfg.max_size) != 0 ||
        number("max-conns", max_conns, 1, 100000, 0, &n) != 0)
        return 2;
    cfg.max_conns = (unsigned)n;
    if (number("io-timeout", io_timeout, 0, 86400, 0, &n) != 0)
        return 2;
    cfg.io_timeout_s = (unsigned)n;
    if (number("idle-timeout", idle_timeout, 0, 86400 * 7, 0, &n) != 0)
        return 2;
    cfg.idle_timeout_s = (unsigned)n;
    rc = file_server_create(&cfg, &srv, err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "sockgate-file: %s\n", err);
        return 1;
    }
    return sg_service_main(&file_service_ops, srv);
}
