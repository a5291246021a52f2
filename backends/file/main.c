/* main.c - sockgate-file: the tutorial's FTP upload made into a file service you can trust with real files. */
#include <stdint.h>
#include <stdio.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

int main(int argc, char **argv)
{
    const char *drain = NULL;
    struct file_config cfg;
    const char *listen = FILE_DEFAULT_LISTEN, *root = FILE_DEFAULT_ROOT, *max_size = "64G", *max_conns = "128";
    const char *io_timeout = "60s", *idle_timeout = "5m", *log_format = "text";
    const char *session_expiry = "24h", *max_sessions = "1000";
    uint64_t n;
    char err[512];
    void *srv = NULL;
    int rc;
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_FILE_LISTEN", "HOST:PORT|unix:PATH", "TCP address (port 0: any) or UNIX socket to serve", &listen, NULL, NULL},
        {"root", "SOCKGATE_FILE_ROOT", "DIR", "directory holding the files; created when missing", &root, NULL, NULL},
        {"max-size", "SOCKGATE_FILE_MAX_SIZE", "SIZE", "largest upload accepted", &max_size, NULL,
         NULL},
        {"max-conns", "SOCKGATE_FILE_MAX_CONNS", "N", "connections served at once (a thread each); more get error busy",
         &max_conns, NULL, NULL},
        {"io-timeout", "SOCKGATE_FILE_IO_TIMEOUT", "DURATION",
         "drop a request that makes no progress this long (0: never; a bare number: seconds)",
         &io_timeout, NULL, NULL},
        {"idle-timeout", "SOCKGATE_FILE_IDLE_TIMEOUT", "DURATION",
         "close a connection idle between requests this long (0: never; a bare number: seconds)",
         &idle_timeout, NULL, NULL},
        {"session-expiry", "SOCKGATE_FILE_SESSION_EXPIRY", "DURATION",
         "an unfinished upload session untouched this long is removed with its bytes (a bare number: seconds)",
         &session_expiry, NULL, NULL},
        {"max-sessions", "SOCKGATE_FILE_MAX_SESSIONS", "N", "unfinished upload sessions kept at once; more get busy",
         &max_sessions, NULL, NULL},
        {"drain", "SOCKGATE_DRAIN", "DURATION",
         "on SIGTERM keep serving this long before stopping, so balancers that resolve this replica move away first "
         "(default 0)",
         &drain, NULL, NULL},
        {"drain-ms", "SOCKGATE_DRAIN_MS", "MS", "milliseconds", &drain, NULL, NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format on stderr", &log_format, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    sg_signals_block();
    rc = sg_options_parse("sockgate-file",
                          "sockgate-file [--listen HOST:PORT] [--root DIR] [--max-size SIZE] [--max-conns N]\n"
                          "                     [--io-timeout DURATION] [--idle-timeout DURATION] "
                          "[--session-expiry DURATION]\n"
                          "                     [--max-sessions N] [--drain DURATION] [--log-format text|json]",
                          "Stores, serves, lists and deletes files in one flat directory over sockgate's framed "
                          "protocol (op upload, download, list, stat, delete, and resumable upload sessions). "
                          "Uploads are verified, fsync'ed and renamed into place: nothing partial is ever visible.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_service_set_drain("sockgate-file", drain) != 0)
        return 2;
    if (sg_log_setup("sockgate-file", log_format) != SG_OK)
        return 2;
    file_config_defaults(&cfg);
    cfg.listen = listen;
    cfg.root = root;
    if (sg_flag_size("sockgate-file", "max-size", max_size, 0, SG_FRAME_MAX_BODY, &cfg.max_size) != 0 ||
        sg_flag_count("sockgate-file", "max-conns", max_conns, 1, 100000, &n) != 0)
        return 2;
    cfg.max_conns = (unsigned)n;
    /* The server counts whole seconds: a shorter duration waits one. */
    if (sg_flag_duration("sockgate-file", "io-timeout", io_timeout, 0, 86400000, 1000, &n) != 0)
        return 2;
    cfg.io_timeout_s = (unsigned)((n + 999) / 1000);
    if (sg_flag_duration("sockgate-file", "idle-timeout", idle_timeout, 0, UINT64_C(86400000) * 7, 1000, &n) != 0)
        return 2;
    cfg.idle_timeout_s = (unsigned)((n + 999) / 1000);
    if (sg_flag_duration("sockgate-file", "session-expiry", session_expiry, 1000, UINT64_C(366) * 86400000, 1000,
                         &n) != 0)
        return 2;
    cfg.session_expiry_s = (unsigned)((n + 999) / 1000);
    if (sg_flag_count("sockgate-file", "max-sessions", max_sessions, 1, 1000000, &n) != 0)
        return 2;
    cfg.max_sessions = (unsigned)n;
    rc = file_server_create(&cfg, &srv, err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "sockgate-file: %s\n", err);
        return rc == SG_ERR_INVALID ? 2 : 1; /* a bad --listen is a usage error; a busy port is not */
    }
    return sg_service_main(&file_service_ops, srv);
}
