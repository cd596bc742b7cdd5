// Re-verification of a certificate outside a handshake, against a context's current store: a live peer after a
// reload (TLSSession.reauthorize), a resumed session's peer under other trust material (admitsResumption), and
// `check`'s assessment of a certificate file (TLSContext.assess). See COpenSSLShims.h.
#include "COpenSSLShims.h"

#include <openssl/err.h>

static int reverify_tolerant_cb(int ok, X509_STORE_CTX *ctx) {
    if (!ok) {
        int err = X509_STORE_CTX_get_error(ctx);
        if (err == X509_V_ERR_CRL_HAS_EXPIRED) return 1;
    }
    return ok;
}

int pc_reverify(SSL_CTX *ctx, X509 *leaf, STACK_OF(X509) *chain, int tolerate_expired_crl, long long now, int *error, int *depth) {
    X509_STORE_CTX *store_ctx = X509_STORE_CTX_new();
    if (store_ctx == NULL) { *error = X509_V_ERR_OUT_OF_MEM; *depth = 0; return 0; }
    int ok = 0;
    if (X509_STORE_CTX_init(store_ctx, SSL_CTX_get_cert_store(ctx), leaf, chain) == 1) {
        X509_STORE_CTX_set_purpose(store_ctx, X509_PURPOSE_SSL_CLIENT);
        X509_STORE_CTX_set_time(store_ctx, 0, (time_t)now);  // the caller's clock, for validity and CRL windows
        if (tolerate_expired_crl) X509_STORE_CTX_set_verify_cb(store_ctx, reverify_tolerant_cb);
        ok = X509_verify_cert(store_ctx) == 1;
        *error = X509_STORE_CTX_get_error(store_ctx);
        *depth = X509_STORE_CTX_get_error_depth(store_ctx);
    } else {
        *error = X509_V_ERR_UNSPECIFIED;
        *depth = 0;
    }
    X509_STORE_CTX_free(store_ctx);
    ERR_clear_error();
    return ok;
}

