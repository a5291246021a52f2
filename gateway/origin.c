/* origin.c - who may call: the Host a request names (DNS rebinding) and the Origin of a write (cross-site forms). */
#include "origin.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "errors.h"

/*
 * Splits "name[:port]" or "[v6][:port]" into its name (brackets dropped, one
 * trailing dot dropped); returns 0 when the text is not of that shape.
 */
static int host_name(const char *host, char *name, size_t cap, int *is_v6)
{
    const char *end;
    size_t n;

    *is_v6 = host[0] == '[';
    if (*is_v6) {
        end = strchr(host, ']');
        if (!end || (end[1] != '\0' && end[1] != ':'))
            return 0;
        host++;
    } else {
        end = strchr(host, ':');
        if (!end)
            end = host + strlen(host);
    }
    n = (size_t)(end - host);
    if (n > 0 && !*is_v6 && host[n - 1] == '.')
        n--;
    if (n == 0 || n >= cap)
        return 0;
    memcpy(name, host, n);
    name[n] = '\0';
    return 1;
}

/* Returns 1 when name ends with suffix (case-insensitive), which starts with a dot. */
static int has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), s = strlen(suffix);
    return n > s && strcasecmp(name + n - s, suffix) == 0;
}

/* Returns 1 when an --allow-host entry admits name: "*", the name itself, or ".domain" for it and below. */
static int allowed_by_config(const struct gw_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_allow_hosts; i++) {
        const char *a = cfg->allow_hosts[i];
        if (strcmp(a, "*") == 0 || strcasecmp(a, name) == 0)
            return 1;
        if (a[0] == '.' && (strcasecmp(a + 1, name) == 0 || has_suffix(name, a)))
            return 1;
    }
    return 0;
}

int origin_check_host(const struct gw_config *cfg, int has_token, const char *host, char *why, size_t whylen)
{
    unsigned char addr[16];
    char name[256];
    int is_v6;

    /* A token already keeps a rebound page out: it cannot know the token. */
    if (has_token && cfg->n_allow_hosts == 0)
        return SG_OK;
    /* HTTP/1.0 may omit Host; libmicrohttpd refuses HTTP/1.1 without one. Browsers always send it. */
    if (!host)
        return SG_OK;
    if (!host_name(host, name, sizeof name, &is_v6)) {
        snprintf(why, whylen, "the Host header '%.100s' is not a host name or address", host);
        return SG_ERR_INVALID;
    }
    if (allowed_by_config(cfg, name))
        return SG_OK;
    if (cfg->n_allow_hosts == 0) {
        /*
         * A rebinding attack needs a name its author controls in public DNS,
         * so a dotted name. Addresses, single-label names (localhost, a
         * container's service name) and *.localhost (RFC 6761) cannot be one.
         */
        if (inet_pton(is_v6 ? AF_INET6 : AF_INET, name, addr) == 1)
            return SG_OK;
        if (!is_v6 && (!strchr(name, '.') || has_suffix(name, ".localhost")))
            return SG_OK;
    } else if (inet_pton(is_v6 ? AF_INET6 : AF_INET, name, addr) == 1) {
        return SG_OK; /* an address is never a rebound name, whatever the list says */
    }
    snprintf(why, whylen,
             "this gateway does not answer to the host name '%.100s' (a guard against DNS rebinding): "
             "start it with --allow-host %.100s, or with --token",
             name, name);
    return GW_ERR_HOST;
}

/* Returns 1 for the methods a cross-site page may not use to change anything. */
static int is_write(const char *method)
{
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && strcmp(method, "OPTIONS") != 0;
}

int origin_check_write(const char *method, const char *host, const char *origin, const char *cors_allowed, char *why,
                       size_t whylen)
{
    const char *sep;

    if (!origin || !is_write(method) || cors_allowed)
        return SG_OK;
    /* Same origin: the page was served by this gateway under the name the browser used. */
    sep = strstr(origin, "://");
    if (sep && host && strcasecmp(sep + 3, host) == 0 &&
        (strncasecmp(origin, "http://", 7) == 0 || strncasecmp(origin, "https://", 8) == 0))
        return SG_OK;
    if (strcmp(origin, "null") == 0)
        snprintf(why, whylen, "a %s from a page without an origin (a sandboxed frame, a local file) is refused",
                 method);
    else
        snprintf(why, whylen,
                 "a %s from the page of another origin (%.100s) is refused: start the gateway with "
                 "--cors-origin %.100s to allow it",
                 method, origin, origin);
    return GW_ERR_CROSS_ORIGIN;
}
