/* tls.c - certificate generations for HTTPS: loaded from PEM, handed to each handshake, swapped on SIGHUP. */
#include "tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "sockgate/error.h"
#include "sockgate/log.h"

/* The most certificates a chain may hold (leaf and intermediates). */
#define CHAIN_MAX 8

/* One loaded certificate chain and key; immutable once published. */
struct generation {
    gnutls_pcert_st certs[CHAIN_MAX];
    unsigned n_certs;
    gnutls_privkey_t key;
    struct generation *older; /* kept until tls_free: sessions may still refer to it */
};

static _Atomic(struct generation *) current;
static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static char *cert_path, *key_path;

static void generation_free(struct generation *g)
{
    for (unsigned i = 0; i < g->n_certs; i++)
        gnutls_pcert_deinit(&g->certs[i]);
    if (g->key)
        gnutls_privkey_deinit(g->key);
    free(g);
}

/* Checks with GnuTLS itself that the key is the certificate's (GNUTLS_E_CERTIFICATE_KEY_MISMATCH otherwise). */
static int check_pair(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    gnutls_certificate_credentials_t cred;
    int rc;
    if (gnutls_certificate_allocate_credentials(&cred) != GNUTLS_E_SUCCESS) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    rc = gnutls_certificate_set_x509_key_file2(cred, cert_file, key_file, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_certificate_free_credentials(cred);
    if (rc < 0) {
        snprintf(err, errlen, "%s and %s: %s", cert_file, key_file, gnutls_strerror(rc));
        return SG_ERR_INVALID;
    }
    return SG_OK;
}

/* Loads the files into a new generation (*out), or says why not. */
static int generation_load(const char *cert_file, const char *key_file, struct generation **out, char *err,
                           size_t errlen)
{
    struct generation *g = calloc(1, sizeof *g);
    gnutls_datum_t key = {NULL, 0};
    int rc;

    *out = NULL;
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    rc = check_pair(cert_file, key_file, err, errlen);
    if (rc != SG_OK)
        goto fail;
    g->n_certs = CHAIN_MAX;
    rc = gnutls_pcert_list_import_x509_file(g->certs, &g->n_certs, cert_file, GNUTLS_X509_FMT_PEM, NULL, NULL, 0);
    if (rc < 0) {
        g->n_certs = 0;
        snprintf(err, errlen, "%s: %s", cert_file, gnutls_strerror(rc));
        rc = SG_ERR_INVALID;
        goto fail;
    }
    rc = gnutls_load_file(key_file, &key);
    if (rc == GNUTLS_E_SUCCESS && (rc = gnutls_privkey_init(&g->key)) == GNUTLS_E_SUCCESS)
        rc = gnutls_privkey_import_x509_raw(g->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_free(key.data);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", key_file, gnutls_strerror(rc));
        rc = SG_ERR_INVALID;
        goto fail;
    }
    *out = g;
    return SG_OK;
fail:
    generation_free(g);
    return rc;
}

/*
 * libmicrohttpd's MHD_OPTION_HTTPS_CERT_CALLBACK (a GnuTLS
 * gnutls_certificate_retrieve_function2): every handshake gets the
 * generation current at that moment.
 */
static int retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length, gnutls_pcert_st **pcert,
                    unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
    struct generation *g = atomic_load_explicit(&current, memory_order_acquire);
    (void)session;
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    if (!g)
        return -1;
    *pcert = g->certs;
    *pcert_length = g->n_certs;
    *pkey = g->key;
    return 0;
}

int tls_load(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    struct generation *g = NULL;
    int rc;
    if (!cert_file || !key_file) {
        snprintf(err, errlen, "HTTPS needs both --tls-cert and --tls-key");
        return SG_ERR_INVALID;
    }
    rc = generation_load(cert_file, key_file, &g, err, errlen);
    if (rc != SG_OK)
        return rc;
    cert_path = strdup(cert_file);
    key_path = strdup(key_file);
    if (!cert_path || !key_path) {
        generation_free(g);
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    atomic_store_explicit(&current, g, memory_order_release);
    return SG_OK;
}

int tls_reload(char *err, size_t errlen)
{
    struct generation *g = NULL;
    int rc;
    if (!tls_is_on()) {
        snprintf(err, errlen, "HTTPS is off: nothing to reload");
        return SG_ERR_INVALID;
    }
    pthread_mutex_lock(&reload_lock);
    rc = generation_load(cert_path, key_path, &g, err, errlen);
    if (rc == SG_OK) {
        g->older = atomic_load_explicit(&current, memory_order_acquire);
        atomic_store_explicit(&current, g, memory_order_release);
        sg_info("reloaded the certificate %s and key %s: new connections get them", cert_path, key_path);
    }
    pthread_mutex_unlock(&reload_lock);
    return rc;
}

int tls_is_on(void)
{
    return atomic_load_explicit(&current, memory_order_acquire) != NULL;
}

unsigned tls_daemon_options(struct MHD_OptionItem *items)
{
    if (!tls_is_on()) {
        items[0] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
        return 0;
    }
    items[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)retrieve};
    items[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES};
    items[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return MHD_USE_TLS;
}

void tls_free(void)
{
    struct generation *g = atomic_exchange(&current, NULL);
    while (g) {
        struct generation *older = g->older;
        generation_free(g);
        g = older;
    }
    free(cert_path);
    free(key_path);
    cert_path = key_path = NULL;
}
