// Minting throwaway keys, certificates and CRLs for the demo command and the tests; see COpenSSLShims.h.
// Nothing on the proxy's serving path calls these.
#include "COpenSSLShims.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>

EVP_PKEY *pc_generate_key(int kind) {
    switch (kind) {
    case 0: return EVP_EC_gen("P-256");
    case 1: return EVP_EC_gen("P-384");
    case 2: return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    case 3: return EVP_RSA_gen(2048);
    default: return NULL;
    }
}

static int add_extension(X509 *cert, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

X509 *pc_make_certificate(EVP_PKEY *key, EVP_PKEY *issuer_key, X509 *issuer_cert,
                          const char *const *name_types, const unsigned char *const *name_values,
                          const int *name_lengths, int name_count, const char *san, const char *eku,
                          int is_ca, long not_before_offset, long not_after_offset, long serial) {
    X509 *cert = X509_new();
    if (cert == NULL) return NULL;
    X509_NAME *name = X509_get_subject_name(cert);
    if (!X509_set_version(cert, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(cert), serial)) goto fail;
    for (int i = 0; i < name_count; i++) {
        if (!X509_NAME_add_entry_by_txt(name, name_types[i], MBSTRING_UTF8, name_values[i], name_lengths[i], -1, 0))
            goto fail;
    }
    X509 *issuer = issuer_cert != NULL ? issuer_cert : cert;
    if (!X509_set_issuer_name(cert, X509_get_subject_name(issuer))) goto fail;
    if (!X509_gmtime_adj(X509_getm_notBefore(cert), not_before_offset)) goto fail;
    if (!X509_gmtime_adj(X509_getm_notAfter(cert), not_after_offset)) goto fail;
    if (!X509_set_pubkey(cert, key)) goto fail;
    if (!add_extension(cert, issuer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE")) goto fail;
    if (!add_extension(cert, issuer, NID_key_usage,
                       is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment")) goto fail;
    if (!add_extension(cert, issuer, NID_subject_key_identifier, "hash")) goto fail;
    if (issuer_cert != NULL && !add_extension(cert, issuer, NID_authority_key_identifier, "keyid")) goto fail;
    if (san != NULL && !add_extension(cert, issuer, NID_subject_alt_name, san)) goto fail;
    if (eku != NULL && !add_extension(cert, issuer, NID_ext_key_usage, eku)) goto fail;
    EVP_PKEY *signer = issuer_key != NULL ? issuer_key : key;
    const EVP_MD *md = EVP_PKEY_get_id(signer) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
    if (X509_sign(cert, signer, md) <= 0) goto fail;
    return cert;
fail:
    X509_free(cert);
    return NULL;
}

static char *bio_to_string(BIO *bio) {
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    char *out = OPENSSL_malloc((size_t)len + 1);
    if (out != NULL) {
        memcpy(out, data, (size_t)len);
        out[len] = 0;
    }
    BIO_free(bio);
    return out;
}

char *pc_pem_certificate(X509 *cert) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL || !PEM_write_bio_X509(bio, cert)) { BIO_free(bio); return NULL; }
    return bio_to_string(bio);
}

char *pc_pem_private_key(EVP_PKEY *key, const char *passphrase) {
    BIO *bio = BIO_new(BIO_s_mem());
    const EVP_CIPHER *cipher = passphrase != NULL ? EVP_aes_256_cbc() : NULL;
    int ok = PEM_write_bio_PrivateKey(bio, key, cipher, (const unsigned char *)passphrase,
                                      passphrase != NULL ? (int)strlen(passphrase) : 0, NULL, NULL);
    if (!ok) { BIO_free(bio); return NULL; }
    return bio_to_string(bio);
}

char *pc_make_crl_pem(EVP_PKEY *issuer_key, X509 *issuer_cert, const char *const *serials_hex, int count,
                      long last_update_offset, long next_update_offset) {
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *last = X509_gmtime_adj(NULL, last_update_offset);
    ASN1_TIME *next = X509_gmtime_adj(NULL, next_update_offset);
    ASN1_TIME *revoked_at = X509_gmtime_adj(NULL, last_update_offset);
    char *out = NULL;
    if (crl == NULL || last == NULL || next == NULL || revoked_at == NULL) goto done;
    if (!X509_CRL_set_version(crl, 1) || !X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer_cert)) ||
        !X509_CRL_set1_lastUpdate(crl, last) || !X509_CRL_set1_nextUpdate(crl, next))
        goto done;
    for (int i = 0; i < count; i++) {
        BIGNUM *bn = NULL;
        X509_REVOKED *revoked = X509_REVOKED_new();
        if (revoked == NULL || !BN_hex2bn(&bn, serials_hex[i])) { X509_REVOKED_free(revoked); BN_free(bn); goto done; }
        ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
        BN_free(bn);
        int ok = serial != NULL && X509_REVOKED_set_serialNumber(revoked, serial) &&
                 X509_REVOKED_set_revocationDate(revoked, revoked_at) && X509_CRL_add0_revoked(crl, revoked);
        ASN1_INTEGER_free(serial);
        if (!ok) { X509_REVOKED_free(revoked); goto done; }
    }
    X509_CRL_sort(crl);
    if (!X509_CRL_sign(crl, issuer_key, EVP_PKEY_get_id(issuer_key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256())) goto done;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL && PEM_write_bio_X509_CRL(bio, crl)) out = bio_to_string(bio); else BIO_free(bio);
done:
    X509_CRL_free(crl);
    ASN1_TIME_free(last);
    ASN1_TIME_free(next);
    ASN1_TIME_free(revoked_at);
    return out;
}

