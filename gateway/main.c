/* main.c - sockgate: flags and environment into a config, embedded backends, the HTTP server, clean stop. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "balancer.h"
#include "embedded.h"
#include "gateway.h"
#include "metrics.h"
#include "router.h"
#include "server.h"
#include "spool.h"
#include "tls.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

static const char usage[] =
    "sockgate [--listen HOST:PORT] [--echo ADDR] [--time ADDR] [--exec ADDR] [--file ADDR] [--chat ADDR]\n"
    "                [--embedded-listen HOST:PORT]\n"
    "                [--echo-listen|--time-listen|--exec-listen|--file-listen|--chat-listen HOST:PORT]\n"
    "                [--file-root DIR] [--allow CMD,...] [--sandbox strict|best-effort|off]\n"
    "                [--sandbox-read DIR]... [--sandbox-write DIR]... [--web-root DIR] [--token TOKEN]\n"
    "                [--cors-origin ORIGIN]... [--allow-host NAME]... [--max-upload SIZE]\n"
    "                [--max-json SIZE] [--threads N] [--max-conns N] [--timeout DURATION] [--grace DURATION]\n"
    "                [--header-timeout DURATION] [--body-timeout DURATION] [--spool-dir DIR]\n"
    "                [--ws-max-message SIZE] [--ws-ping DURATION] [--ws-pong-timeout DURATION]\n"
    "                [--ws-idle-timeout DURATION] [--upload-expiry DURATION]\n"
    "                [--drain DURATION] [--resolve-interval DURATION] [--eject DURATION]\n"
    "                [--tls-cert FILE --tls-key FILE] [--log-format text|json] [--print-routes]";
static const char about[] =
    "The HTTP/JSON gateway in front of the sockgate backends. Every backend whose address is not\n"
    "given runs inside this process, reached over a UNIX socket in a private directory (mode 0700),\n"
    "so `sockgate` alone is the whole system; --BACKEND-listen (or --embedded-listen for all five)\n"
    "opens one to the tutorial's clients. Uploads land in --file-root (default ./files, created when\n"
    "the first backend starts). All flags are checked and the listener bound before anything starts.";

/* The string form of every flag, before it is checked and converted into struct gw_config. */
struct flags {
    const char *listen, *embedded_listen, *addr[BACKEND__COUNT], *emb_listen[BACKEND__COUNT], *file_root, *allow;
    const char *web_root, *token, *spool_dir, *tls_cert, *tls_key;
    const char *max_upload, *max_json, *threads, *max_conns, *timeout, *grace, *drain, *resolve_interval, *eject, *log_format, *print_routes;
    const char *header_timeout, *body_timeout, *upload_expiry;
    const char *ws_max_message, *ws_ping, *ws_pong, *ws_idle;
    struct gw_config *cfg;
};

/* A repeatable flag's list in struct gw_config: its items, how many are used, and how many fit. */
struct list_flag {
    const char **items;
    size_t *n;
    size_t cap;
};

/* Appends a copy of value to the list_flag ctx; -1 when full, empty or out of memory. */
static int append_copy(const char *value, void *ctx)
{
    struct list_flag *list = ctx;
    if (*list->n >= list->cap || !*value)
        return -1;
    /* sg_options_parse frees its copy of a comma list, so keep our own. */
    list->items[*list->n] = strdup(value);
    if (!list->items[*list->n])
        return -1;
    (*list->n)++;
    return 0;
}

/* 0 when path is absent or a directory (must_exist: a directory); else prints why and returns -1. */
static int check_dir_flag(const char *flag, const char *path, int must_exist)
{
    struct stat sb;
    if (!path)
        return 0;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT && !must_exist)
            return 0;
        fprintf(stderr, "sockgate: --%s '%s': %s\n", flag, path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "sockgate: --%s '%s' is not a directory\n", flag, path);
        return -1;
    }
    return 0;
}

/* 0 when text is HOST:PORT; else prints why and returns -1. */
static int check_addr_flag(const char *flag, const char *text)
{
    struct sg_addr addr;
    char why[256];
    if (sg_addr_parse(text, &addr, why, sizeof why) == SG_OK)
        return 0;
    fprintf(stderr, "sockgate: --%s '%s': %s\n", flag, text, why);
    return -1;
}

/* The flag that opens embedded backend id to the tutorial's clients ("echo-listen"). */
static const char *backend_listen_flag(int id)
{
    static const char *const names[BACKEND__COUNT] = {"echo-listen", "time-listen", "exec-listen", "file-listen",
                                                      "chat-listen"};
    return names[id];
}

/*
 * --embedded-listen HOST:PORT: every embedded backend not given its own
 * --BACKEND-listen opens HOST:PORT+i (i in backend order: echo, time, exec,
 * file, chat; port 0 lets the kernel pick each). 0, or -1 after saying why.
 */
static int expand_embedded_listen(const char *text, struct gw_config *cfg)
{
    static char addrs[BACKEND__COUNT][SG_ADDR_STRLEN];
    const char *colon = strrchr(text, ':');
    unsigned long port;
    char *end;
    if (check_addr_flag("embedded-listen", text) != 0)
        return -1;
    port = strtoul(colon + 1, &end, 10);
    if (port != 0 && port + BACKEND__COUNT - 1 > 65535) {
        fprintf(stderr, "sockgate: --embedded-listen '%s' leaves no room for five ports\n", text);
        return -1;
    }
    for (int i = 0; i < BACKEND__COUNT; i++) {
        if (cfg->embedded_listen[i])
            continue;
        snprintf(addrs[i], sizeof addrs[i], "%.*s:%lu", (int)(colon - text), text, port ? port + (unsigned long)i : 0);
        cfg->embedded_listen[i] = addrs[i];
    }
    return 0;
}

/* A duration flag: its checked text, its range, and the field of struct gw_config it sets. */
struct duration_flag {
    const char *name;
    const char *text;
    uint64_t min_ms, max_ms;
    /* The field counts units of this many ms, rounded up, and a bare number means as many (0: ms, no bare numbers). */
    uint64_t unit_ms;
    unsigned *field;
};

/* Checks every duration flag of f and sets its field of cfg; 0, or -1 after printing what is wrong. */
static int parse_durations(const struct flags *f, struct gw_config *cfg)
{
    /* upload-expiry is in whole seconds, as the file backend counts them: a shorter duration waits one. */
    const struct duration_flag table[] = {
        {"timeout", f->timeout, 10, 3600000, 0, &cfg->timeout_ms},
        {"grace", f->grace, 0, 3600000, 0, &cfg->grace_ms},
        {"drain", f->drain, 0, 3600000, 0, &cfg->drain_ms},
        {"resolve-interval", f->resolve_interval, 100, 3600000, 0, &cfg->resolve_interval_ms},
        {"eject", f->eject, 10, 30000, 0, &cfg->eject_ms},
        {"header-timeout", f->header_timeout, 0, 3600000, 0, &cfg->header_timeout_ms},
        {"body-timeout", f->body_timeout, 0, 3600000, 0, &cfg->body_timeout_ms},
        {"ws-ping", f->ws_ping, 0, 3600000, 0, &cfg->ws_ping_ms},
        {"ws-pong-timeout", f->ws_pong, 10, 3600000, 0, &cfg->ws_pong_ms},
        {"ws-idle-timeout", f->ws_idle, 0, 7 * 24 * 3600000u, 0, &cfg->ws_idle_ms},
        {"upload-expiry", f->upload_expiry, 1000, UINT64_C(366) * 86400000, 1000, &cfg->upload_expiry_s},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const struct duration_flag *d = &table[i];
        uint64_t ms, unit = d->unit_ms ? d->unit_ms : 1;
        if (sg_flag_duration("sockgate", d->name, d->text, d->min_ms, d->max_ms, d->unit_ms, &ms))
            return -1;
        *d->field = (unsigned)((ms + unit - 1) / unit);
    }
    return 0;
}

/* Parses argv and the environment into cfg; returns 0 to run, 1 to exit 0, 2 to exit 2. */
static int parse_flags(int argc, char **argv, struct gw_config *cfg, int *print_routes)
{
    /*
     * One worker per core: no handler blocks its loop any more (the chat's
     * subscribe handshake aside), so more threads than cores only add
     * context switches.
     */
    static char cores[16];
    long n_cores = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(cores, sizeof cores, "%ld", n_cores < 1 ? 1 : n_cores > 256 ? 256 : n_cores);
    struct flags f = {.listen = GW_DEFAULT_LISTEN, .max_upload = "16G",
                      .max_json = "1M", .threads = cores, .max_conns = "16384", .timeout = "10s", .grace = "10s",
                      .drain = "0", .resolve_interval = "5s", .eject = "2s",
                      .header_timeout = "20s", .body_timeout = "30s", .upload_expiry = "24h", .log_format = "text", .cfg = cfg,
                      .ws_max_message = "1M", .ws_ping = "30s", .ws_pong = "10s", .ws_idle = "1h"};
    struct list_flag sandbox_read = {cfg->sandbox_read, &cfg->n_sandbox_read, GW_MAX_SANDBOX_DIRS};
    struct list_flag sandbox_write = {cfg->sandbox_write, &cfg->n_sandbox_write, GW_MAX_SANDBOX_DIRS};
    struct list_flag cors = {cfg->cors_origins, &cfg->n_cors_origins, GW_MAX_CORS_ORIGINS};
    struct list_flag hosts = {cfg->allow_hosts, &cfg->n_allow_hosts, GW_MAX_ALLOW_HOSTS};
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_LISTEN", "HOST:PORT", "HTTP address (port 0 picks a free one)", &f.listen, NULL, NULL},
        {"embedded-listen", "SOCKGATE_EMBEDDED_LISTEN", "HOST:PORT",
         "open every embedded backend to the tutorial's clients at once: echo on PORT, time PORT+1, exec PORT+2, "
         "file PORT+3, chat PORT+4 (no authentication; --BACKEND-listen sets one)",
         &f.embedded_listen, NULL, NULL},
        {"echo", "SOCKGATE_ECHO", "ADDR", "echo backend (TCP HOST:PORT or unix:PATH; a name with several addresses or a comma list is balanced); embedded when not given", &f.addr[BACKEND_ECHO], NULL, NULL},
        {"time", "SOCKGATE_TIME", "ADDR", "time backend (UDP HOST:PORT or unix:PATH; a name with several addresses or a comma list is balanced); embedded when not given", &f.addr[BACKEND_TIME], NULL, NULL},
        {"exec", "SOCKGATE_EXEC", "ADDR", "exec backend (TCP HOST:PORT or unix:PATH; a name with several addresses or a comma list is balanced); embedded when not given", &f.addr[BACKEND_EXEC], NULL, NULL},
        {"file", "SOCKGATE_FILE", "ADDR", "file backend (TCP HOST:PORT or unix:PATH; a name with several addresses or a comma list is balanced); embedded when not given", &f.addr[BACKEND_FILE], NULL, NULL},
        {"chat", "SOCKGATE_CHAT", "ADDR", "chat backend (TCP HOST:PORT or unix:PATH; a name with several addresses or a comma list is balanced); embedded when not given", &f.addr[BACKEND_CHAT], NULL, NULL},
        {"echo-listen", "SOCKGATE_EMBEDDED_ECHO_LISTEN", "HOST:PORT",
         "serve the embedded echo backend on this TCP+UDP address, for the tutorial's clients, instead of a private UNIX socket (no authentication)",
         &f.emb_listen[BACKEND_ECHO], NULL, NULL},
        {"time-listen", "SOCKGATE_EMBEDDED_TIME_LISTEN", "HOST:PORT",
         "serve the embedded time backend on this UDP address instead of a private UNIX socket (no authentication)", &f.emb_listen[BACKEND_TIME], NULL,
         NULL},
        {"exec-listen", "SOCKGATE_EMBEDDED_EXEC_LISTEN", "HOST:PORT",
         "serve the embedded exec backend on this TCP address instead of a private UNIX socket (no authentication: runs commands for anyone who connects)",
         &f.emb_listen[BACKEND_EXEC], NULL, NULL},
        {"file-listen", "SOCKGATE_EMBEDDED_FILE_LISTEN", "HOST:PORT",
         "serve the embedded file backend on this TCP address instead of a private UNIX socket (no authentication)", &f.emb_listen[BACKEND_FILE], NULL,
         NULL},
        {"chat-listen", "SOCKGATE_EMBEDDED_CHAT_LISTEN", "HOST:PORT",
         "serve the embedded chat backend on this UDP+TCP address instead of a private UNIX socket (no authentication)", &f.emb_listen[BACKEND_CHAT],
         NULL, NULL},
        {"file-root", "SOCKGATE_FILE_ROOT", "DIR", "where the embedded file backend keeps uploads (default ./files)",
         &f.file_root, NULL, NULL},
        {"allow", "SOCKGATE_ALLOW", "CMD,...", "commands the embedded exec backend may run", &f.allow, NULL, NULL},
        {"sandbox", "SOCKGATE_SANDBOX", "strict|best-effort|off",
         "how the embedded exec backend confines commands (Landlock, own network namespace); strict refuses to "
         "start without Landlock",
         &cfg->sandbox, NULL, NULL},
        {"sandbox-read", "SOCKGATE_SANDBOX_READ", "DIR", "let the embedded exec's commands read DIR (repeatable)",
         NULL, append_copy, &sandbox_read},
        {"sandbox-write", "SOCKGATE_SANDBOX_WRITE", "DIR",
         "let the embedded exec's commands read and write DIR (repeatable)", NULL, append_copy, &sandbox_write},
        {"web-root", "SOCKGATE_WEB_ROOT", "DIR", "serve the page from DIR instead of the built-in copy",
         &f.web_root, NULL, NULL},
        {"token", "SOCKGATE_TOKEN", "TOKEN",
         "require Authorization: Bearer TOKEN on /api/v1, /readyz and /metrics (/healthz stays open)", &f.token, NULL,
         NULL},
        {"cors-origin", "SOCKGATE_CORS_ORIGIN", "ORIGIN", "allow cross-origin calls from ORIGIN (repeatable, * for any)",
         NULL, append_copy, &cors},
        {"allow-host", "SOCKGATE_ALLOW_HOST", "NAME",
         "answer to Host NAME (repeatable; .domain for it and below, * for any); without it and without a token, "
         "only addresses, single-label names and *.localhost",
         NULL, append_copy, &hosts},
        {"max-upload", "SOCKGATE_MAX_UPLOAD", "SIZE", "largest upload (PUT body or multipart total)",
         &f.max_upload, NULL, NULL},
        {"max-json", "SOCKGATE_MAX_JSON", "SIZE", "largest JSON request body", &f.max_json, NULL, NULL},
        {"threads", "SOCKGATE_THREADS", "N", "HTTP worker threads, each an event loop over its own connections; by default one per online core",
         &f.threads, NULL, NULL},
        {"max-conns", "SOCKGATE_MAX_CONNS", "N", "client connections served at once (more wait in the backlog)",
         &f.max_conns, NULL, NULL},
        {"timeout", "SOCKGATE_TIMEOUT", "DURATION", "deadline of a backend call, or of one step of a stream",
         &f.timeout, NULL, NULL},
        {"timeout-ms", "SOCKGATE_TIMEOUT_MS", "MS", "milliseconds", &f.timeout, NULL, NULL},
        {"header-timeout", "SOCKGATE_HEADER_TIMEOUT", "DURATION",
         "a request's whole head must arrive within this, else the connection is cut (0: no limit)",
         &f.header_timeout, NULL, NULL},
        {"header-timeout-ms", "SOCKGATE_HEADER_TIMEOUT_MS", "MS", "milliseconds", &f.header_timeout, NULL, NULL},
        {"body-timeout", "SOCKGATE_BODY_TIMEOUT", "DURATION",
         "longest silence within a request body before the connection is cut (0: no limit)", &f.body_timeout, NULL,
         NULL},
        {"body-timeout-ms", "SOCKGATE_BODY_TIMEOUT_MS", "MS", "milliseconds", &f.body_timeout, NULL, NULL},
        {"grace", "SOCKGATE_GRACE", "DURATION", "how long SIGTERM waits for requests in flight", &f.grace, NULL, NULL},
        {"grace-ms", "SOCKGATE_GRACE_MS", "MS", "milliseconds", &f.grace, NULL, NULL},
        {"ws-max-message", "SOCKGATE_WS_MAX_MESSAGE", "SIZE",
         "largest WebSocket message a client may send (a larger one closes the socket with 1009)", &f.ws_max_message,
         NULL, NULL},
        {"ws-ping", "SOCKGATE_WS_PING", "DURATION", "ping every WebSocket this often (0: never)", &f.ws_ping, NULL,
         NULL},
        {"ws-pong-timeout", "SOCKGATE_WS_PONG_TIMEOUT", "DURATION",
         "drop a WebSocket whose pong is this late", &f.ws_pong, NULL, NULL},
        {"ws-idle-timeout", "SOCKGATE_WS_IDLE_TIMEOUT", "DURATION",
         "close a WebSocket after this long without a message either way (0: never)", &f.ws_idle, NULL, NULL},
        {"upload-expiry", "SOCKGATE_UPLOAD_EXPIRY", "DURATION",
         "an unfinished resumable (tus) upload unchanged this long is removed and its storage freed (embedded file "
         "backend; a remote one has its own --session-expiry)",
         &f.upload_expiry, NULL, NULL},
        {"drain", "SOCKGATE_DRAIN", "DURATION",
         "on SIGTERM, /readyz answers 503 at once while everything is still served this long (so load balancers "
         "notice), then the grace period starts",
         &f.drain, NULL, NULL},
        {"drain-ms", "SOCKGATE_DRAIN_MS", "MS", "milliseconds", &f.drain, NULL, NULL},
        {"resolve-interval", "SOCKGATE_RESOLVE_INTERVAL", "DURATION",
         "look backend names up again this often (every A and AAAA record is a replica; at once after a failed "
         "connect too)",
         &f.resolve_interval, NULL, NULL},
        {"resolve-interval-ms", "SOCKGATE_RESOLVE_INTERVAL_MS", "MS", "milliseconds", &f.resolve_interval, NULL, NULL},
        {"eject", "SOCKGATE_EJECT", "DURATION",
         "how long a backend address that failed is left out before a probe (doubles per ejection, up to 30s)",
         &f.eject, NULL, NULL},
        {"eject-ms", "SOCKGATE_EJECT_MS", "MS", "milliseconds", &f.eject, NULL, NULL},
        {"spool-dir", "SOCKGATE_SPOOL_DIR", "DIR", "where multipart and chunked uploads wait (default $TMPDIR)",
         &f.spool_dir, NULL, NULL},
        {"tls-cert", "SOCKGATE_TLS_CERT", "FILE", "serve HTTPS with this PEM certificate chain (with --tls-key; "
         "re-read on SIGHUP)", &f.tls_cert, NULL, NULL},
        {"tls-key", "SOCKGATE_TLS_KEY", "FILE", "the PEM private key of --tls-cert", &f.tls_key, NULL, NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format", &f.log_format, NULL, NULL},
        {"print-routes", NULL, NULL, "print every route (METHOD PATH) and exit", &f.print_routes, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };
    uint64_t v;
    int rc = sg_options_parse("sockgate", usage, about, opts, argc, argv, NULL);
    if (rc != 0)
        return rc;
    *print_routes = f.print_routes != NULL;
    cfg->listen = f.listen;
    if (strncmp(cfg->listen, SG_UNIX_PREFIX, strlen(SG_UNIX_PREFIX)) == 0) {
        /* Untested there: client addresses in logs and the Host/Origin guards assume TCP peers. */
        fprintf(stderr, "sockgate: --listen takes HOST:PORT; unix:PATH is for backend addresses only\n");
        return 2;
    }
    cfg->listen_fd = -1;
    for (int i = 0; i < BACKEND__COUNT; i++) {
        cfg->backend_addr[i] = f.addr[i] && *f.addr[i] ? f.addr[i] : NULL;
        cfg->embedded_listen[i] = f.emb_listen[i] && *f.emb_listen[i] ? f.emb_listen[i] : NULL;
    }
    if (f.embedded_listen && *f.embedded_listen && expand_embedded_listen(f.embedded_listen, cfg) != 0)
        return 2;
    cfg->file_root = f.file_root && *f.file_root ? f.file_root : NULL;
    cfg->allow = f.allow;
    cfg->web_root = f.web_root && *f.web_root ? f.web_root : NULL;
    cfg->token = f.token && *f.token ? f.token : NULL;
    cfg->tls_cert = f.tls_cert && *f.tls_cert ? f.tls_cert : NULL;
    cfg->tls_key = f.tls_key && *f.tls_key ? f.tls_key : NULL;
    cfg->spool_dir = f.spool_dir && *f.spool_dir ? f.spool_dir : getenv("TMPDIR");
    if (!cfg->spool_dir || !*cfg->spool_dir)
        cfg->spool_dir = "/tmp";
    if (check_addr_flag("listen", f.listen))
        return 2;
    for (int i = 0; i < BACKEND__COUNT; i++)
        if (f.emb_listen[i] && *f.emb_listen[i] && check_addr_flag(backend_listen_flag(i), f.emb_listen[i]))
            return 2;
    if (sg_flag_size("sockgate", "max-upload", f.max_upload, 0, UINT64_C(1) << 50, &cfg->max_upload) ||
        sg_flag_size("sockgate", "max-json", f.max_json, 2, 256u << 20, &cfg->max_json) ||
        sg_flag_size("sockgate", "ws-max-message", f.ws_max_message, 1, 256u << 20, &cfg->ws_max_message))
        return 2;
    cfg->max_upload_text = f.max_upload;
    cfg->max_json_text = f.max_json;
    if (sg_flag_count("sockgate", "threads", f.threads, 1, 256, &v))
        return 2;
    cfg->threads = (unsigned)v;
    if (sg_flag_count("sockgate", "max-conns", f.max_conns, 1, 1000000, &v))
        return 2;
    cfg->max_conns = (unsigned)v;
    if (parse_durations(&f, cfg) != 0)
        return 2;
    if (!cfg->sandbox)
        cfg->sandbox = "best-effort";
    if (strcmp(cfg->sandbox, "strict") && strcmp(cfg->sandbox, "best-effort") && strcmp(cfg->sandbox, "off")) {
        fprintf(stderr, "sockgate: --sandbox must be strict, best-effort or off, not '%s'\n", cfg->sandbox);
        return 2;
    }
    if (sg_log_format_parse(f.log_format, &cfg->log_format) != SG_OK) {
        fprintf(stderr, "sockgate: --log-format must be text or json, not '%s'\n", f.log_format);
        return 2;
    }
    if (cfg->allow && *cfg->allow && strspn(cfg->allow, ",") == strlen(cfg->allow)) {
        fprintf(stderr, "sockgate: --allow '%s' names no command\n", cfg->allow);
        return 2;
    }
    if (check_dir_flag("web-root", cfg->web_root, 1) || check_dir_flag("spool-dir", cfg->spool_dir, 1) ||
        check_dir_flag("file-root", cfg->file_root, 0))
        return 2;
    return 0;
}

/* Descriptors the gateway needs besides client connections: backend pools, embedded services, spool files. */
#define FD_RESERVE 1024

/*
 * Raises the soft descriptor limit so that max_conns clients fit (the usual
 * soft limit of 1024 would stop accepting long before); when the hard limit
 * is too low, serves fewer connections and says so.
 */
static void fit_descriptor_limit(struct gw_config *cfg)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->max_conns + FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
            return;
    }
    if (rl.rlim_cur < want) {
        unsigned fit = rl.rlim_cur > 2 * FD_RESERVE ? (unsigned)(rl.rlim_cur - FD_RESERVE) : (unsigned)(rl.rlim_cur / 2);
        sg_warn("the descriptor limit is %llu: serving at most %u connections, not %u",
                (unsigned long long)rl.rlim_cur, fit, cfg->max_conns);
        cfg->max_conns = fit;
    }
}

/* Points every backend given by address at it; the others wait for embedded_start(). */
static int setup_backends(struct gateway *gw)
{
    balancer_configure((int)gw->cfg.resolve_interval_ms, (int)gw->cfg.eject_ms);
    for (int id = 0; id < BACKEND__COUNT; id++) {
        char err[256];
        upstream_init(&gw->backends[id], id, id == BACKEND_TIME ? SOCK_DGRAM : SOCK_STREAM,
                      (int)gw->cfg.timeout_ms);
        if (!gw->cfg.backend_addr[id])
            continue;
        if (upstream_set_addr(&gw->backends[id], gw->cfg.backend_addr[id], 0, err, sizeof err) != SG_OK) {
            fprintf(stderr, "sockgate: --%s: %s\n", backend_name(id), err);
            return -1;
        }
    }
    return 0;
}

/* Binds --listen before anything else starts, so a bad or busy address creates nothing; 0 or -1 after logging. */
static int bind_listener(struct gw_config *cfg)
{
    struct sg_addr addr;
    char why[256];
    if (sg_addr_parse(cfg->listen, &addr, why, sizeof why) != SG_OK ||
        sg_listen(&addr, SOCK_STREAM, &cfg->listen_fd, why, sizeof why) != SG_OK) {
        sg_error("--listen %s: %s", cfg->listen, why);
        cfg->listen_fd = -1;
        return -1;
    }
    return 0;
}

/* Logs one block naming every address a user or a tutorial client may want: the page, the API, each backend. */
static void print_addresses(struct gateway *gw, int listen_fd)
{
    static const char *const kind[BACKEND__COUNT] = {
        [BACKEND_ECHO] = "TCP and UDP", [BACKEND_TIME] = "UDP", [BACKEND_EXEC] = "framed TCP",
        [BACKEND_FILE] = "framed TCP", [BACKEND_CHAT] = "UDP chat, framed TCP"};
    char addr[SG_ADDR_STRLEN];
    sg_local_addr(listen_fd, addr, sizeof addr);
    sg_info("page     %s://%s/", tls_is_on() ? "https" : "http", addr);
    sg_info("API      %s://%s/api/v1/ (docs/openapi.json)", tls_is_on() ? "https" : "http", addr);
    for (int id = 0; id < BACKEND__COUNT; id++) {
        const struct upstream *up = &gw->backends[id];
        sg_info("%-8s %s (%s, %s)", backend_name(id), up->is_configured ? up->name : "not available", kind[id],
                gw->cfg.backend_addr[id] ? "remote" : "embedded");
    }
    if (!gw->cfg.backend_addr[BACKEND_FILE] && embedded_is_built(BACKEND_FILE)) {
        const char *root = gw->cfg.file_root ? gw->cfg.file_root : "files";
        char *full = realpath(root, NULL);
        sg_info("uploads  %s (--file-root)", full ? full : root);
        free(full);
    }
}

static int stop_pipe[2] = {-1, -1};

/* Sleeps ms milliseconds, whatever signals arrive (they are blocked here and taken by the signal thread). */
static void usleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Runs on the signal thread at SIGHUP: a renewed certificate is served to new connections. */
static void on_reload(void *arg)
{
    char err[512];
    (void)arg;
    if (tls_reload(err, sizeof err) != SG_OK)
        sg_warn("SIGHUP: the certificate was not reloaded, the old one stays in use: %s", err);
}

/* Runs on the signal thread: wakes main() up, nothing more. */
static void on_stop(void *arg)
{
    char c = 1;
    (void)arg;
    if (write(stop_pipe[1], &c, 1) < 0)
        sg_warn("cannot wake the main thread: %s", strerror(errno));
}

int main(int argc, char **argv)
{
    static struct gateway gw; /* one per process; static keeps its size off the stack */
    struct embedded emb;
    struct server *srv = NULL;
    char err[512] = "", c;
    int print_routes = 0, rc, status = 1;

    sg_signals_block();
    rc = parse_flags(argc, argv, &gw.cfg, &print_routes);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (print_routes) {
        router_print(stdout);
        return 0;
    }
    sg_log_init("sockgate", gw.cfg.log_format, SG_LOG_INFO);
    fit_descriptor_limit(&gw.cfg);
    /*
     * A fixed mmap threshold: freed blocks of 128 KiB and more (libmicrohttpd's
     * 1 MiB download buffer, upload blocks) go back to the kernel. With glibc's
     * default sliding threshold each worker thread's arena kept one after the
     * first free, and the gateway's RSS climbed from 8 to 19 MiB over a few
     * rounds of large transfers, then stayed there (docs/internals/gateway.md).
     */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    if (gw.cfg.token) {
        SHA256((const unsigned char *)gw.cfg.token, strlen(gw.cfg.token), gw.token_sha256);
        gw.has_token = 1;
    }
    if (setup_backends(&gw) != 0)
        return 2;
    if (gw.cfg.tls_cert || gw.cfg.tls_key) {
        if (tls_load(gw.cfg.tls_cert, gw.cfg.tls_key, err, sizeof err) != SG_OK) {
            fprintf(stderr, "sockgate: --tls-cert/--tls-key: %s\n", err);
            return 2;
        }
        sg_signals_on_reload(on_reload, NULL);
    }
    /* A spool directory that cannot hold a file is a start-up error, not a 500 on the first multipart upload. */
    if (spool_check(gw.cfg.spool_dir, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sockgate: --spool-dir: %s\n", err);
        return 2;
    }
    if (bind_listener(&gw.cfg) != 0)
        return 1;
    if (metrics_init(ROUTE_N_SLOTS) != SG_OK || pipe2(stop_pipe, O_CLOEXEC) != 0) {
        sg_error("out of resources at start-up");
        close(gw.cfg.listen_fd);
        return 1;
    }
    if (embedded_start(&gw, &emb, err, sizeof err) != SG_OK) {
        sg_error("%s", err);
        close(gw.cfg.listen_fd);
        goto out;
    }
    if (server_start(&gw, &srv, err, sizeof err) != SG_OK) {
        sg_error("%s", err);
        embedded_stop(&emb);
        goto out;
    }
    if (sg_signals_on_stop(on_stop, NULL) != SG_OK) {
        sg_error("cannot start the signal thread");
        server_stop(srv, 0);
        embedded_stop(&emb);
        goto out;
    }
    sg_log_listening_scheme(server_listen_fd(srv), tls_is_on() ? "https://" : "");
    print_addresses(&gw, server_listen_fd(srv));
    while (read(stop_pipe[0], &c, 1) < 0 && errno == EINTR)
        ;
    /* Draining: /readyz says 503 from now on while every route still serves, so load balancers move away first. */
    atomic_store(&gw.is_draining, 1);
    if (gw.cfg.drain_ms) {
        sg_info("draining: /readyz answers 503, still serving for %u ms", gw.cfg.drain_ms);
        usleep_ms(gw.cfg.drain_ms);
    }
    server_stop(srv, gw.cfg.grace_ms);
    embedded_stop(&emb);
    status = 0;
    sg_info("stopped");
out:
    for (int id = 0; id < BACKEND__COUNT; id++)
        upstream_free(&gw.backends[id]);
    for (size_t i = 0; i < gw.cfg.n_cors_origins; i++)
        free((char *)gw.cfg.cors_origins[i]);
    for (size_t i = 0; i < gw.cfg.n_allow_hosts; i++)
        free((char *)gw.cfg.allow_hosts[i]);
    for (size_t i = 0; i < gw.cfg.n_sandbox_read; i++)
        free((char *)gw.cfg.sandbox_read[i]);
    for (size_t i = 0; i < gw.cfg.n_sandbox_write; i++)
        free((char *)gw.cfg.sandbox_write[i]);
    metrics_free();
    tls_free();
    return status;
}
