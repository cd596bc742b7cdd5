// Trust anchors and our own certificate chain, read from PEM files; see COpenSSLShims.h.
#include "COpenSSLShims.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

static int load_ca_file(SSL_CTX *ctx, X509_STORE *store, STACK_OF(X509_NAME) *names, const char *file) {
    BIO *bio = BIO_new_file(file, "r");
    if (bio == NULL) return -1;
    int count = 0;
    X509 *cert;
    while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(store, cert) == 1) {
            count++;
            X509_NAME *name = X509_NAME_dup(X509_get_subject_name(cert));
            if (name != NULL && sk_X509_NAME_push(names, name) <= 0) X509_NAME_free(name);
        }
        X509_free(cert);
    }
    BIO_free(bio);
    // Reaching the end of the PEM data leaves a "no start line" entry: expected, not an error.
    ERR_clear_error();
    (void)ctx;
    return count;
}

int pc_ssl_ctx_load_ca(SSL_CTX *ctx, const char *path, int is_directory) {
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    if (names == NULL) return -1;
    int total = 0;
    if (!is_directory) {
        total = load_ca_file(ctx, store, names, path);
    } else {
        DIR *dir = opendir(path);
        if (dir == NULL) { sk_X509_NAME_pop_free(names, X509_NAME_free); return -1; }
        struct dirent *entry;
        char file[4096];
        while ((entry = readdir(dir)) != NULL) {
            const char *dot = strrchr(entry->d_name, '.');
            if (dot == NULL || (strcmp(dot, ".pem") && strcmp(dot, ".crt") && strcmp(dot, ".cer"))) continue;
            snprintf(file, sizeof file, "%s/%s", path, entry->d_name);
            int n = load_ca_file(ctx, store, names, file);
            if (n > 0) total += n;
        }
        closedir(dir);
    }
    if (total <= 0) { sk_X509_NAME_pop_free(names, X509_NAME_free); return total < 0 ? -1 : 0; }
    SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
    return total;
}

X509 *pc_read_certificate_chain(const char *path, STACK_OF(X509) **chain) {
    *chain = sk_X509_new_null();
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL || *chain == NULL) { BIO_free(bio); return NULL; }
    X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    X509 *next;
    while (leaf != NULL && (next = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_push(*chain, next) <= 0) X509_free(next);
    }
    BIO_free(bio);
    ERR_clear_error();
    return leaf;
}


X509 *pc_ssl_ctx_first_expiring_ca(SSL_CTX *ctx, int64_t *not_after) {
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    if (store == NULL) return NULL;
    STACK_OF(X509_OBJECT) *objects = X509_STORE_get0_objects(store);
    X509 *first = NULL;
    for (int i = 0; i < sk_X509_OBJECT_num(objects); i++) {
        X509 *cert = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i));
        int64_t when = 0;
        if (cert == NULL || pc_asn1_time_to_unix(X509_get0_notAfter(cert), &when) != 0) continue;
        if (first == NULL || when < *not_after) {
            first = cert;
            *not_after = when;
        }
    }
    return first;
}
