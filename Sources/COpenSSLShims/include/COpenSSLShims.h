// OpenSSL shims: only OpenSSL (and libc). Every one is prefixed `pc_` and says in one line why it exists.
#ifndef COPENSSL_SHIMS_H
#define COPENSSL_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

// ---- Macros Swift cannot import: trivial wrappers, no logic (macros.c) ------------------------------------

int pc_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version);      // macro (SSL_CTX_ctrl)
long pc_ssl_ctx_set_mode(SSL_CTX *ctx, long mode);            // macro (SSL_CTX_ctrl)
long pc_ssl_ctx_set_session_cache_mode(SSL_CTX *ctx, long m); // macro (SSL_CTX_ctrl)
int pc_ssl_set_sni(SSL *ssl, const char *name);               // macro (SSL_ctrl)
int pc_ssl_ctx_set_groups(SSL_CTX *ctx, const char *groups);  // macro (SSL_CTX_ctrl)
int pc_ssl_ctx_get0_chain_certs(SSL_CTX *ctx, STACK_OF(X509) **chain);  // macro (SSL_CTX_ctrl)
int pc_ssl_ctx_build_cert_chain(SSL_CTX *ctx, long flags);    // macro (SSL_CTX_ctrl)
uint64_t pc_op_no_compression(void);                          // SSL_OP_BIT macro
uint64_t pc_op_no_renegotiation(void);                        // SSL_OP_BIT macro
uint64_t pc_op_cipher_server_preference(void);                // SSL_OP_BIT macro
uint64_t pc_op_no_ticket(void);                               // SSL_OP_BIT macro
int pc_ssl_ex_index(void);                                    // macro (SSL_get_ex_new_index)

int pc_general_names_count(const GENERAL_NAMES *names);      // STACK_OF accessor (sk_GENERAL_NAME_num)
void pc_general_names_free(GENERAL_NAMES *names);             // macro-generated free (DECLARE_ASN1_FUNCTIONS)
int pc_x509_stack_count(const STACK_OF(X509) *stack);         // STACK_OF accessor (sk_X509_num)
X509 *pc_x509_stack_at(const STACK_OF(X509) *stack, int i);   // STACK_OF accessor (sk_X509_value)
void pc_x509_stack_free(STACK_OF(X509) *chain);               // STACK_OF accessor (sk_X509_pop_free)

// ---- Certificate fields read for identities and pins (certificate_fields.c) --------------------------------

// STACK_OF accessor plus the GENERAL_NAME union: the GEN_* type of entry i and its raw bytes (IA5String /
// OCTET STRING contents); other kinds return their type with *data = NULL.
int pc_general_name_at(const GENERAL_NAMES *names, int i, const unsigned char **data, int *len);
// Fail-closed SAN decoding (a duplicated extension is refused, not resolved) in one place. Returns
//   1 and *out set: present and parsed;  0: absent;  -1: present but malformed (or duplicated).
int pc_x509_subject_alt_names(X509 *cert, GENERAL_NAMES **out);
// Attribute i of a name, needing a NID → short name → dotted OID fallback: short name (or dotted OID) into
// type_buf, value as UTF-8 (caller frees with OPENSSL_free). Returns the value length, or -1.
int pc_x509_name_entry(const X509_NAME *name, int i, char *type_buf, size_t type_len, unsigned char **utf8);
// struct tm + timegm (a certificate time as Unix seconds). Returns 0 or -1.
int pc_asn1_time_to_unix(const ASN1_TIME *t, int64_t *out);
// i2d into an OpenSSL-allocated buffer, digest, free: SHA-256 of the DER SubjectPublicKeyInfo (as used for
// SPKI pins). Returns 0 or -1.
int pc_x509_spki_sha256(X509 *cert, unsigned char out[32]);

// ---- Trust anchors and our own chain (ca_loading.c) ---------------------------------------------------------

// A PEM read loop with STACK_OF(X509_NAME): loads trusted CA certificates from a PEM file or from every
// *.pem/*.crt/*.cer file in a directory into the context's store, and advertises their subjects in
// CertificateRequest (so clients such as Java pick the right key). Returns the number loaded, or -1 (error
// queue set).
int pc_ssl_ctx_load_ca(SSL_CTX *ctx, const char *path, int is_directory);
// X509_STORE_get0_objects is a STACK_OF(X509_OBJECT) (macros): the trusted certificate of the context's store that
// expires first, borrowed (valid while the context lives), with its notAfter in *not_after; NULL if none.
X509 *pc_ssl_ctx_first_expiring_ca(SSL_CTX *ctx, int64_t *not_after);
// A PEM read loop with STACK_OF(X509): the first certificate of the file is returned, the rest are pushed onto
// *chain (a new stack the caller frees with pc_x509_stack_free). Returns NULL if the file holds no certificate.
X509 *pc_read_certificate_chain(const char *path, STACK_OF(X509) **chain);

// ---- Revocation (crl_loading.c, crl_memo.c) -----------------------------------------------------------------

// A PEM-then-DER read loop: loads every CRL in a PEM (one or more) or DER file into the context's store.
// Returns the number loaded, or -1. `*next_update_min` receives the earliest nextUpdate (Unix seconds; 0 if none).
int pc_ssl_ctx_load_crl_file(SSL_CTX *ctx, const char *path, int64_t *next_update_min);
// Turns on CRL checking for the leaf only (whole_chain 0) or the whole chain (1), and installs the CRL
// verification memo (crl_memo.c: a C check_crl hook with store ex_data, which Swift cannot provide).
void pc_ssl_ctx_enable_crl_check(SSL_CTX *ctx, int whole_chain);

// ---- Re-verification (reverify.c) ---------------------------------------------------------------------------

// An X509_STORE_CTX run with a C verify callback: verifies `leaf` (with optional untrusted intermediates)
// against the context's current store, as a client certificate. With tolerate_expired_crl, an expired CRL does
// not fail verification. Returns 1 when valid; otherwise 0 with *error and *depth set. `now` (Unix seconds) is the time the check uses.
int pc_reverify(SSL_CTX *ctx, X509 *leaf, STACK_OF(X509) *chain, int tolerate_expired_crl, long long now, int *error, int *depth);

// ---- Minting throwaway keys, certificates and CRLs for the demo and tests (minting.c) -------------------------

// EVP_EC_gen / EVP_PKEY_Q_keygen are variadic macros Swift cannot call.
// kind: 0 = ECDSA P-256, 1 = ECDSA P-384, 2 = Ed25519, 3 = RSA-2048.
EVP_PKEY *pc_generate_key(int kind);
// X509V3_CTX extension building (a stack struct with macro setup): builds and signs an X.509 v3 certificate.
// Subject attributes are given as parallel arrays (values with explicit lengths, so tests can embed a NUL).
// `san` and `eku` use OpenSSL's config syntax ("DNS:a,URI:b", "clientAuth") and may be NULL. Validity is
// relative to now, in seconds.
X509 *pc_make_certificate(EVP_PKEY *key, EVP_PKEY *issuer_key, X509 *issuer_cert,
                          const char *const *name_types, const unsigned char *const *name_values,
                          const int *name_lengths, int name_count, const char *san, const char *eku,
                          int is_ca, long not_before_offset, long not_after_offset, long serial);
// BIO_get_mem_data is a macro: PEM text of a certificate (caller frees with OPENSSL_free).
char *pc_pem_certificate(X509 *cert);
// BIO_get_mem_data is a macro: PEM text of a private key, encrypted with AES-256 when a passphrase is given
// (caller frees with OPENSSL_free).
char *pc_pem_private_key(EVP_PKEY *key, const char *passphrase);
// BN/ASN1_INTEGER/X509_REVOKED assembly plus BIO_get_mem_data: a CRL signed by the issuer, revoking the given
// serials (hex strings). PEM text, caller frees with OPENSSL_free.
char *pc_make_crl_pem(EVP_PKEY *issuer_key, X509 *issuer_cert, const char *const *serials_hex, int count,
                      long last_update_offset, long next_update_offset);

// ---- PKCS#12 keystores (keystore.c) ---------------------------------------------------------------------------

enum {
    PC_KEYSTORE_OK = 0,
    PC_KEYSTORE_NOT_PKCS12 = 1,       // not DER PKCS#12
    PC_KEYSTORE_WRONG_PASSWORD = 2,   // the MAC does not verify with the password
    PC_KEYSTORE_LEGACY_CIPHER = 3,    // the password is right, the cipher needs OpenSSL's legacy provider
    PC_KEYSTORE_NO_KEY = 4,
    PC_KEYSTORE_NO_CERTIFICATE = 5,
    PC_KEYSTORE_UNREADABLE = 6,       // any other parse failure
};
// MAC check, parse and failure class in one call (the class needs the error queue between the two). Whatever
// the result, the caller frees what is set (non-NULL): EVP_PKEY_free, X509_free, pc_x509_stack_free.
int pc_pkcs12_load(const unsigned char *der, long length, const char *password,
                   EVP_PKEY **key, X509 **certificate, STACK_OF(X509) **chain);
int pc_ssl_ctx_add1_chain_cert(SSL_CTX *ctx, X509 *certificate);   // macro (SSL_CTX_ctrl)

#endif
