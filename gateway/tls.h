/* tls.h - HTTPS: the certificate and key the listener serves, loaded from PEM files and swapped on SIGHUP. */
#ifndef SOCKGATE_GATEWAY_TLS_H
#define SOCKGATE_GATEWAY_TLS_H

#include <microhttpd.h>
#include <stddef.h>

/*
 * libmicrohttpd in Debian is built with GnuTLS, so TLS is its
 * MHD_USE_TLS mode. The certificate is not given to libmicrohttpd as fixed
 * PEM text but through its certificate callback, which hands GnuTLS the
 * current generation for each new handshake: SIGHUP loads a new generation
 * and new connections get it, while connections already set up keep theirs.
 * A generation is never freed before the process ends (GnuTLS may still
 * refer to it from a session set up earlier); a renewal every few weeks
 * costs a few KiB.
 */

/* The MHD protocol and cipher priorities: TLS 1.2 and 1.3 only, AEAD ciphers with forward secrecy. */
#define TLS_PRIORITIES                                                                                            \
    "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:"    \
    "-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-MAC-ALL:+AEAD:%SERVER_PRECEDENCE"

/*
 * Loads the certificate chain cert_file and the private key key_file (PEM)
 * as the first generation, checking that they belong together. Returns SG_OK,
 * or an sg_err value with why in err. Call once, before the server starts.
 */
int tls_load(const char *cert_file, const char *key_file, char *err, size_t errlen);

/*
 * Reads the same files again and, when they load and match, makes them the
 * generation new handshakes get. On failure the old one stays in use and err
 * says why. Safe from any thread while the server runs.
 */
int tls_reload(char *err, size_t errlen);

/* Returns 1 once tls_load succeeded (the listener speaks HTTPS). */
int tls_is_on(void);

/*
 * Fills items (room for at least 3) with the MHD options that make a daemon
 * serve the current generation (MHD_OPTION_HTTPS_CERT_CALLBACK, priorities),
 * ending with MHD_OPTION_END; returns the MHD flag to add (MHD_USE_TLS), or 0
 * when TLS is off (items then holds only MHD_OPTION_END).
 */
unsigned tls_daemon_options(struct MHD_OptionItem *items);

/* Frees every generation (at exit, after the server stopped). */
void tls_free(void);

#endif
