// The CRL verification memo: turns on CRL checking for a context and keeps OpenSSL from re-verifying the same
// CRL's signature in every handshake. See COpenSSLShims.h for the entry point.
#include "COpenSSLShims.h"

#include <pthread.h>

// OpenSSL re-verifies a CRL's signature (hashing the whole CRL: megabytes for 100k entries) in every
// handshake. The store's check_crl hook below runs OpenSSL's own complete check once per (CRL, issuer) and
// afterwards repeats only what can change with time (lastUpdate/nextUpdate). Only plain CRLs are memoized
// (no issuing distribution point, not a delta), whose scope does not depend on the certificate checked.
// The memo lives in the store's ex_data and dies with it (one store per TLS context generation).

#define PC_CRL_MEMO_MAX 64

typedef struct {
    pthread_mutex_t lock;
    int count;
    const X509_CRL *crl[PC_CRL_MEMO_MAX];  /* owned by the store for the memo's whole life */
    X509 *issuer[PC_CRL_MEMO_MAX];          /* up-referenced here, released in memo_free */
} pc_crl_memo;

static int crl_memo_index = -1;
static X509_STORE_CTX_check_crl_fn default_check_crl;
static pthread_once_t crl_memo_once = PTHREAD_ONCE_INIT;

static void crl_memo_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
    (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
    pc_crl_memo *memo = ptr;
    if (memo == NULL) return;
    for (int i = 0; i < memo->count; i++) X509_free(memo->issuer[i]);
    pthread_mutex_destroy(&memo->lock);
    OPENSSL_free(memo);
}

static void crl_memo_setup(void) {
    crl_memo_index = X509_STORE_get_ex_new_index(0, NULL, NULL, NULL, crl_memo_free);
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (store != NULL && ctx != NULL && X509_STORE_CTX_init(ctx, store, NULL, NULL) == 1)
        default_check_crl = X509_STORE_CTX_get_check_crl(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
}

static int crl_is_plain(const X509_CRL *crl) {
    return X509_CRL_get_ext_by_NID(crl, NID_issuing_distribution_point, -1) < 0 &&
           X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) < 0;
}

/* The issuer whose key signs `crl` for the certificate being checked, chosen as OpenSSL's check does. */
static X509 *crl_issuer(X509_STORE_CTX *ctx) {
    X509 *issuer = X509_STORE_CTX_get0_current_issuer(ctx);
    if (issuer != NULL) return issuer;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx), last = sk_X509_num(chain) - 1;
    return depth < last ? sk_X509_value(chain, depth + 1) : sk_X509_value(chain, last);
}

static int memo_contains(pc_crl_memo *memo, const X509_CRL *crl, const X509 *issuer) {
    int found = 0;
    pthread_mutex_lock(&memo->lock);
    for (int i = 0; i < memo->count && !found; i++)
        found = memo->crl[i] == crl && X509_cmp(memo->issuer[i], issuer) == 0;
    pthread_mutex_unlock(&memo->lock);
    return found;
}

static void memo_add(pc_crl_memo *memo, const X509_CRL *crl, X509 *issuer) {
    pthread_mutex_lock(&memo->lock);
    if (memo->count < PC_CRL_MEMO_MAX && X509_up_ref(issuer) == 1) {
        memo->crl[memo->count] = crl;
        memo->issuer[memo->count] = issuer;
        memo->count++;
    }
    pthread_mutex_unlock(&memo->lock);
}

static int crl_fail(X509_STORE_CTX *ctx, int error) {
    X509_STORE_CTX_set_error(ctx, error);
    X509_STORE_CTX_verify_cb cb = X509_STORE_CTX_get_verify_cb(ctx);
    return cb != NULL ? cb(0, ctx) : 0;
}

/* The time-dependent part of OpenSSL's CRL check, with the same error codes. */
static int crl_check_time(X509_STORE_CTX *ctx, X509_CRL *crl) {
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    if (X509_VERIFY_PARAM_get_flags(param) & X509_V_FLAG_NO_CHECK_TIME) return 1;
    time_t at = 0, *ptime = NULL;
    if (X509_VERIFY_PARAM_get_flags(param) & X509_V_FLAG_USE_CHECK_TIME) { at = X509_VERIFY_PARAM_get_time(param); ptime = &at; }
    int i = X509_cmp_time(X509_CRL_get0_lastUpdate(crl), ptime);
    if (i == 0 && !crl_fail(ctx, X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD)) return 0;
    if (i > 0 && !crl_fail(ctx, X509_V_ERR_CRL_NOT_YET_VALID)) return 0;
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    if (next != NULL) {
        i = X509_cmp_time(next, ptime);
        if (i == 0 && !crl_fail(ctx, X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD)) return 0;
        if (i < 0 && !crl_fail(ctx, X509_V_ERR_CRL_HAS_EXPIRED)) return 0;
    }
    return 1;
}

static int memo_check_crl(X509_STORE_CTX *ctx, X509_CRL *crl) {
    pc_crl_memo *memo = X509_STORE_get_ex_data(X509_STORE_CTX_get0_store(ctx), crl_memo_index);
    X509 *issuer = crl_issuer(ctx);
    int memoizable = memo != NULL && issuer != NULL && crl_is_plain(crl);
    if (memoizable && memo_contains(memo, crl, issuer)) return crl_check_time(ctx, crl);
    int before = X509_STORE_CTX_get_error(ctx);
    int ok = default_check_crl(ctx, crl);
    /* Remember only a clean pass: no error was raised (not even one the verify callback tolerated). */
    if (ok == 1 && memoizable && before == X509_V_OK && X509_STORE_CTX_get_error(ctx) == X509_V_OK)
        memo_add(memo, crl, issuer);
    return ok;
}

void pc_ssl_ctx_enable_crl_check(SSL_CTX *ctx, int whole_chain) {
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    unsigned long flags = X509_V_FLAG_CRL_CHECK | (whole_chain ? X509_V_FLAG_CRL_CHECK_ALL : 0);
    X509_STORE_set_flags(store, flags);
    pthread_once(&crl_memo_once, crl_memo_setup);
    if (default_check_crl == NULL || crl_memo_index < 0) return;  /* fall back to OpenSSL's own check */
    pc_crl_memo *memo = OPENSSL_zalloc(sizeof *memo);
    if (memo == NULL) return;
    pthread_mutex_init(&memo->lock, NULL);
    if (X509_STORE_set_ex_data(store, crl_memo_index, memo) != 1) {
        crl_memo_free(NULL, memo, NULL, 0, 0, NULL);
        return;
    }
    X509_STORE_set_check_crl(store, memo_check_crl);
}

