// CRL files into a context's store; see COpenSSLShims.h. Checking them is crl_memo.c.
#include "COpenSSLShims.h"

#include <openssl/err.h>
#include <openssl/pem.h>

int pc_ssl_ctx_load_crl_file(SSL_CTX *ctx, const char *path, int64_t *next_update_min) {
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    BIO *bio = BIO_new_file(path, "rb");
    if (bio == NULL) return -1;
    int count = 0;
    *next_update_min = 0;
    X509_CRL *crl;
    while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        int64_t next = 0;
        if (pc_asn1_time_to_unix(X509_CRL_get0_nextUpdate(crl), &next) == 0 &&
            (*next_update_min == 0 || next < *next_update_min))
            *next_update_min = next;
        if (X509_STORE_add_crl(store, crl) == 1) count++;
        X509_CRL_free(crl);
    }
    if (count == 0) {
        // Not PEM: try one DER CRL.
        ERR_clear_error();
        (void)BIO_reset(bio);
        crl = d2i_X509_CRL_bio(bio, NULL);
        if (crl != NULL) {
            int64_t next = 0;
            if (pc_asn1_time_to_unix(X509_CRL_get0_nextUpdate(crl), &next) == 0) *next_update_min = next;
            if (X509_STORE_add_crl(store, crl) == 1) count++;
            X509_CRL_free(crl);
        }
    }
    BIO_free(bio);
    if (count > 0) ERR_clear_error();
    return count > 0 ? count : -1;
}

