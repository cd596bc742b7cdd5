#define _GNU_SOURCE
#include "CPortcullisShims.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>

int pc_sockaddr_make(const char *ip, int port, struct sockaddr_storage *out) {
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    return -EINVAL;
}

int pc_sockaddr_format(const struct sockaddr *addr, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN];
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
        if (!inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip)) return -1;
        snprintf(buf, len, "%s:%u", ip, ntohs(v4->sin_port));
        return 0;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
        if (!inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip)) return -1;
        snprintf(buf, len, "[%s]:%u", ip, ntohs(v6->sin6_port));
        return 0;
    }
    if (addr->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
        snprintf(buf, len, "unix:%.*s", (int)sizeof un->sun_path, un->sun_path);
        return 0;
    }
    return -1;
}

int pc_tcp_peer(const uv_tcp_t *handle, char *buf, size_t len) {
    struct sockaddr_storage ss;
    int size = (int)sizeof ss;
    if (uv_tcp_getpeername(handle, (struct sockaddr *)&ss, &size) != 0) return -1;
    return pc_sockaddr_format((struct sockaddr *)&ss, buf, len);
}

int pc_listen_socket(const char *ip, int port, int backlog, int reuseport, int *bound_port) {
    struct sockaddr_storage ss;
    int rc = pc_sockaddr_make(ip, port, &ss);
    if (rc != 0) return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) goto fail;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) goto fail;
    if (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) goto fail;
    socklen_t sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) goto fail;
    if (listen(fd, backlog) != 0) goto fail;
    if (bound_port) {
        struct sockaddr_storage got;
        socklen_t gl = sizeof got;
        if (getsockname(fd, (struct sockaddr *)&got, &gl) != 0) goto fail;
        *bound_port = got.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&got)->sin_port)
                                               : ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
    }
    return fd;
fail:
    rc = -errno;
    close(fd);
    return rc;
}

void pc_malloc_trim(void) { (void)malloc_trim(0); }

int pc_listen_unix(const char *path, int backlog) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return -EEXIST;
        // A socket file: in use if something accepts on it, stale (left by a crash) otherwise.
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) return -errno;
        int live = connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(probe);
        if (live) return -EADDRINUSE;
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int pc_adopt_listening_socket(int fd, int allow_unix, struct sockaddr_storage *bound) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    if (!S_ISSOCK(st.st_mode)) return -ENOTSOCK;
    int value = 0;
    socklen_t vl = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &vl) != 0) return -errno;
    if (value != SOCK_STREAM) return -ESOCKTNOSUPPORT;
    vl = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &vl) != 0) return -errno;
    if (value != AF_INET && value != AF_INET6 && !(allow_unix && value == AF_UNIX)) return -EAFNOSUPPORT;
    vl = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &vl) != 0) return -errno;
    if (!value) return -EINVAL;
    socklen_t bl = sizeof *bound;
    memset(bound, 0, sizeof *bound);
    if (getsockname(fd, (struct sockaddr *)bound, &bl) != 0) return -errno;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return -errno;
    return pc_set_cloexec(fd);
}

int pc_dup_fd(int fd, int inheritable) {
    int copy = fcntl(fd, inheritable ? F_DUPFD : F_DUPFD_CLOEXEC, 3);
    return copy < 0 ? -errno : copy;
}

int pc_set_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) return -errno;
    return 0;
}

int pc_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }

int pc_unix_dgram_socket(void) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    return fd < 0 ? -errno : fd;
}

int pc_unix_dgram_send(int fd, const char *address, const void *message, size_t length) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(address);
    if (n == 0 || n >= sizeof sa.sun_path) return -ENAMETOOLONG;
    memcpy(sa.sun_path, address, n);
    if (address[0] == '@') sa.sun_path[0] = '\0';  // abstract namespace: no trailing NUL counts
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (address[0] == '@' ? 0 : 1));
    ssize_t rc;
    do {
        rc = sendto(fd, message, length, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa, sl);
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

int pc_spawn(const char *path, char *const argv[], char *const envp[], int *pid) {
    posix_spawnattr_t attr;
    int rc = posix_spawnattr_init(&attr);
    if (rc != 0) return -rc;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t child = 0;
    rc = posix_spawn(&child, path, NULL, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return -rc;
    *pid = (int)child;
    return 0;
}

char *const *pc_environ(void) { return environ; }

int pc_thread_set_name(pthread_t thread, const char *name) { return pthread_setname_np(thread, name); }

int pc_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
int pc_ssl_ctx_set_max_proto(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_max_proto_version(ctx, version); }
long pc_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
long pc_ssl_ctx_set_session_cache_mode(SSL_CTX *ctx, long m) { return SSL_CTX_set_session_cache_mode(ctx, m); }
int pc_ssl_set_sni(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }
int pc_ssl_ctx_set_groups(SSL_CTX *ctx, const char *groups) { return (int)SSL_CTX_set1_groups_list(ctx, groups); }
int pc_ssl_ctx_get0_chain_certs(SSL_CTX *ctx, STACK_OF(X509) **chain) { return (int)SSL_CTX_get0_chain_certs(ctx, chain); }
int pc_ssl_ctx_build_cert_chain(SSL_CTX *ctx, long flags) { return (int)SSL_CTX_build_cert_chain(ctx, flags); }
uint64_t pc_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
uint64_t pc_op_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }
uint64_t pc_op_cipher_server_preference(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
uint64_t pc_op_no_ticket(void) { return SSL_OP_NO_TICKET; }
void pc_bio_set_mem_eof_return(BIO *bio, int value) { BIO_set_mem_eof_return(bio, value); }
int pc_ssl_ctx_set_tmp_ecdh_auto(SSL_CTX *ctx) { (void)ctx; return 1; }

int pc_general_names_count(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }

int pc_general_name_at(const GENERAL_NAMES *names, int i, const unsigned char **data, int *len) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
    *data = NULL;
    *len = 0;
    if (gn == NULL) return -1;
    const ASN1_STRING *s = NULL;
    switch (gn->type) {
    case GEN_DNS: s = gn->d.dNSName; break;
    case GEN_URI: s = gn->d.uniformResourceIdentifier; break;
    case GEN_EMAIL: s = gn->d.rfc822Name; break;
    case GEN_IPADD: s = gn->d.iPAddress; break;
    default: break;
    }
    if (s != NULL) {
        *data = ASN1_STRING_get0_data(s);
        *len = ASN1_STRING_length(s);
    }
    return gn->type;
}

void pc_general_names_free(GENERAL_NAMES *names) { GENERAL_NAMES_free(names); }
int pc_x509_stack_count(const STACK_OF(X509) *stack) { return sk_X509_num(stack); }
X509 *pc_x509_stack_at(const STACK_OF(X509) *stack, int i) { return sk_X509_value(stack, i); }

int pc_x509_subject_alt_names(X509 *cert, GENERAL_NAMES **out) {
    *out = NULL;
    int index = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
    if (index < 0) return 0;
    // Two SAN extensions are ambiguous: refuse rather than pick one.
    if (X509_get_ext_by_NID(cert, NID_subject_alt_name, index) >= 0) return -1;
    int crit = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (names == NULL) return -1;
    *out = names;
    return 1;
}

int pc_x509_name_entry(const X509_NAME *name, int i, char *type_buf, size_t type_len, unsigned char **utf8) {
    const X509_NAME_ENTRY *entry = X509_NAME_get_entry(name, i);
    if (entry == NULL) return -1;
    const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(entry);
    int nid = OBJ_obj2nid(obj);
    const char *sn = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
    if (sn != NULL) {
        snprintf(type_buf, type_len, "%s", sn);
    } else if (OBJ_obj2txt(type_buf, (int)type_len, obj, 1) <= 0) {
        return -1;
    }
    return ASN1_STRING_to_UTF8(utf8, X509_NAME_ENTRY_get_data(entry));
}

int pc_asn1_time_to_unix(const ASN1_TIME *t, int64_t *out) {
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) return -1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

int pc_x509_spki_sha256(X509 *cert, unsigned char out[32]) {
    unsigned char *der = NULL;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len <= 0) return -1;
    unsigned int mdlen = 0;
    int ok = EVP_Digest(der, (size_t)len, out, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    return ok == 1 && mdlen == 32 ? 0 : -1;
}

int pc_ssl_ex_index(void) {
    return SSL_get_ex_new_index(0, "portcullis-session", NULL, NULL, NULL);
}

// ---- CRLs and re-verification -----------------------------------------------------------------------------

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

// ---- CRL verification memo ---------------------------------------------------------------------------
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

const char *pc_verify_error_string(long code) { return X509_verify_cert_error_string(code); }

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

#include <dirent.h>

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

void pc_x509_stack_free(STACK_OF(X509) *chain) { sk_X509_pop_free(chain, X509_free); }
