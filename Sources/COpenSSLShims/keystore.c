// PKCS#12 keystores: the MAC check, the parse and the classification of a failure live together here, because
// telling "wrong password" from "legacy encryption" needs the error queue between two OpenSSL calls.
#include "COpenSSLShims.h"
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>

int pc_pkcs12_load(const unsigned char *der, long length, const char *password,
                   EVP_PKEY **key, X509 **certificate, STACK_OF(X509) **chain) {
    *key = NULL;
    *certificate = NULL;
    *chain = NULL;
    const unsigned char *cursor = der;
    PKCS12 *p12 = d2i_PKCS12(NULL, &cursor, length);
    if (p12 == NULL) return PC_KEYSTORE_NOT_PKCS12;
    // An empty password may have been encoded as no password at all (RFC 7292 leaves it open): try both.
    const char *pass = password;
    if (PKCS12_mac_present(p12)) {
        if (!PKCS12_verify_mac(p12, pass, -1)) {
            if (pass[0] == '\0' && PKCS12_verify_mac(p12, NULL, 0)) {
                pass = NULL;
            } else {
                ERR_clear_error();
                PKCS12_free(p12);
                return PC_KEYSTORE_WRONG_PASSWORD;
            }
        }
    }
    ERR_clear_error();
    int parsed = PKCS12_parse(p12, pass, key, certificate, chain);
    PKCS12_free(p12);
    if (!parsed) {
        // The MAC verified, so the password is right: a cipher OpenSSL 3 does not load by default (RC2-40,
        // 3DES: the legacy provider) is what is left. A fetch failure says so on the queue.
        unsigned long error;
        int legacy = 0;
        while ((error = ERR_get_error()) != 0) {
            int reason = ERR_GET_REASON(error);
            if (reason == EVP_R_UNSUPPORTED_ALGORITHM || reason == ERR_R_UNSUPPORTED
                || reason == EVP_R_UNSUPPORTED_CIPHER || reason == ERR_R_FETCH_FAILED) legacy = 1;
        }
        return legacy ? PC_KEYSTORE_LEGACY_CIPHER : PC_KEYSTORE_UNREADABLE;
    }
    if (*key == NULL) return PC_KEYSTORE_NO_KEY;
    if (*certificate == NULL) return PC_KEYSTORE_NO_CERTIFICATE;
    return PC_KEYSTORE_OK;
}

int pc_ssl_ctx_add1_chain_cert(SSL_CTX *ctx, X509 *certificate) { return (int)SSL_CTX_add1_chain_cert(ctx, certificate); }
