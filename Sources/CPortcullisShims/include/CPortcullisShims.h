// Small C helpers for what Swift cannot import or should not see. Each says why it exists.
#ifndef CPORTCULLIS_SHIMS_H
#define CPORTCULLIS_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

// ---- libuv ----------------------------------------------------------------

// Cast helpers (readability: uv_tcp_t/uv_pipe_t are "subclasses" of uv_stream_t/uv_handle_t).
static inline uv_stream_t *pc_stream(void *handle) { return (uv_stream_t *)handle; }
static inline uv_handle_t *pc_handle(void *handle) { return (uv_handle_t *)handle; }

// Socket setup: libuv 1.44 has no SO_REUSEPORT flag for TCP, so listeners are made here and handed to
// uv_tcp_open. Returns the fd, or -errno. `*bound_port` receives the actual port (for port 0).
int pc_listen_socket(const char *ip, int port, int backlog, int reuseport, int *bound_port);
/// A listening Unix stream socket at `path` (non-blocking, close-on-exec). A stale socket file nobody
/// accepts on is replaced; a live one gives -EADDRINUSE. Returns the fd or -errno.
int pc_listen_unix(const char *path, int backlog);
/// malloc_trim(0): return free heap memory of every arena to the kernel.
void pc_malloc_trim(void);

// sockaddr construction without exposing sockaddr_storage layouts to Swift. Returns 0 or -errno.
int pc_sockaddr_make(const char *ip, int port, struct sockaddr_storage *out);
// Formats "ip:port" / "[ip6]:port" into buf. Returns 0 or -1.
int pc_sockaddr_format(const struct sockaddr *addr, char *buf, size_t len);
// Peer address of a connected libuv TCP handle, formatted as above.
int pc_tcp_peer(const uv_tcp_t *handle, char *buf, size_t len);

// ---- Process handover (systemd socket activation, SIGUSR2 re-exec) ----------

// Checks that an inherited fd is a listening TCP (IPv4/IPv6; with allow_unix also AF_UNIX) stream socket, then makes it non-blocking and
// close-on-exec and stores its bound address. Returns 0, or -errno of the failed call, or -ENOTSOCK (not a
// socket), -ESOCKTNOSUPPORT (not SOCK_STREAM), -EAFNOSUPPORT (not IP), -EINVAL (not listening).
int pc_adopt_listening_socket(int fd, int allow_unix, struct sockaddr_storage *bound);
// A copy of fd with FD_CLOEXEC cleared (inheritable) or set, numbered >= 3. Returns the new fd or -errno.
int pc_dup_fd(int fd, int inheritable);
// Sets FD_CLOEXEC. Returns 0 or -errno.
int pc_set_cloexec(int fd);
// A pipe whose both ends are close-on-exec. Returns 0 or -errno.
int pc_pipe_cloexec(int fds[2]);
// sockaddr_un for "/path" or "@abstract" (sd_notify's NOTIFY_SOCKET forms) is awkward from Swift.
// An unbound, non-blocking, close-on-exec AF_UNIX datagram socket: fd or -errno.
int pc_unix_dgram_socket(void);
// Sends one datagram to `address` without blocking (MSG_DONTWAIT | MSG_NOSIGNAL). Returns 0 or -errno.
int pc_unix_dgram_send(int fd, const char *address, const void *message, size_t length);
// posix_spawn with an empty signal mask and default dispositions (SIGPIPE is ignored here and would
// otherwise stay ignored across exec). Only fds without FD_CLOEXEC reach the child. Returns 0 or -errno.
int pc_spawn(const char *path, char *const argv[], char *const envp[], int *pid);
// The process environment (`environ` is a mutable C global Swift 6 will not touch directly).
char *const *pc_environ(void);

#include <pthread.h>
// pthread_setname_np is _GNU_SOURCE-only, invisible to Swift.
int pc_thread_set_name(pthread_t thread, const char *name);

// ---- OpenSSL: macros Swift cannot import ------------------------------------

int pc_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version);     // macro
int pc_ssl_ctx_set_max_proto(SSL_CTX *ctx, int version);     // macro
long pc_ssl_ctx_set_mode(SSL_CTX *ctx, long mode);           // macro
long pc_ssl_ctx_set_session_cache_mode(SSL_CTX *ctx, long m);// macro
int pc_ssl_set_sni(SSL *ssl, const char *name);              // macro
int pc_ssl_ctx_set_groups(SSL_CTX *ctx, const char *groups);  // macro
int pc_ssl_ctx_get0_chain_certs(SSL_CTX *ctx, STACK_OF(X509) **chain);  // macro
int pc_ssl_ctx_build_cert_chain(SSL_CTX *ctx, long flags);   // macro
uint64_t pc_op_no_compression(void);                         // SSL_OP_BIT macro
uint64_t pc_op_no_renegotiation(void);                       // SSL_OP_BIT macro
uint64_t pc_op_cipher_server_preference(void);               // SSL_OP_BIT macro
uint64_t pc_op_no_ticket(void);                              // SSL_OP_BIT macro
void pc_bio_set_mem_eof_return(BIO *bio, int value);         // macro
int pc_ssl_ctx_set_tmp_ecdh_auto(SSL_CTX *ctx);              // no-op on 3.0, kept for clarity

// STACK_OF accessors (sk_* are macros).
int pc_general_names_count(const GENERAL_NAMES *names);
// Returns the GEN_* type of entry i and its raw bytes (IA5String / OCTET STRING contents); other kinds
// return their type with *data = NULL.
int pc_general_name_at(const GENERAL_NAMES *names, int i, const unsigned char **data, int *len);
void pc_general_names_free(GENERAL_NAMES *names);
int pc_x509_stack_count(const STACK_OF(X509) *stack);
X509 *pc_x509_stack_at(const STACK_OF(X509) *stack, int i);

// Decodes the subjectAltName extension of a certificate. Returns:
//   1 and *out set: present and parsed;  0: absent;  -1: present but malformed (or duplicated).
int pc_x509_subject_alt_names(X509 *cert, GENERAL_NAMES **out);

// Attribute i of a name: short name (or dotted OID) into type_buf, value as UTF-8 (caller frees with
// OPENSSL_free). Returns the value length, or -1.
int pc_x509_name_entry(const X509_NAME *name, int i, char *type_buf, size_t type_len, unsigned char **utf8);

// Certificate times as Unix seconds. Returns 0 or -1.
int pc_asn1_time_to_unix(const ASN1_TIME *t, int64_t *out);

// SHA-256 of the DER SubjectPublicKeyInfo (as used for SPKI pins). Returns 0 or -1.
int pc_x509_spki_sha256(X509 *cert, unsigned char out[32]);

// SSL_get_ex_new_index is a macro.
int pc_ssl_ex_index(void);

// CRLs: loads every CRL in a PEM (one or more) or DER file into the context's store. Returns the number
// loaded, or -1. `*next_update_min` receives the earliest nextUpdate (Unix seconds; 0 if none).
int pc_ssl_ctx_load_crl_file(SSL_CTX *ctx, const char *path, int64_t *next_update_min);
// Turns on CRL checking for the leaf only (scope 0) or the whole chain (scope 1).
void pc_ssl_ctx_enable_crl_check(SSL_CTX *ctx, int whole_chain);

// Verifies `leaf` (with optional untrusted intermediates) against the context's current store, as a client
// certificate. With tolerate_expired_crl, an expired CRL does not fail verification. Returns 1 when valid;
// otherwise 0 with *error and *depth set.
int pc_reverify(SSL_CTX *ctx, X509 *leaf, STACK_OF(X509) *chain, int tolerate_expired_crl, long long now, int *error, int *depth);

// Error text of the most specific queued error (reason string), or NULL.
const char *pc_verify_error_string(long code);

// Loads trusted CA certificates from a PEM file or from every *.pem/*.crt/*.cer file in a directory into the
// context's store, and advertises their subjects in CertificateRequest (so clients such as Java pick the
// right key). Returns the number of CA certificates loaded, or -1 (error queue set).
int pc_ssl_ctx_load_ca(SSL_CTX *ctx, const char *path, int is_directory);

// Reads every certificate in a PEM file: the first is returned, the rest are pushed onto *chain (a new
// stack the caller frees with pc_x509_stack_free). Returns NULL if the file holds no certificate.
X509 *pc_read_certificate_chain(const char *path, STACK_OF(X509) **chain);
void pc_x509_stack_free(STACK_OF(X509) *chain);

// ---- Minting throwaway keys and certificates (demo, tests) -----------------
// EVP_EC_gen / EVP_PKEY_Q_keygen are variadic macros Swift cannot call.
// kind: 0 = ECDSA P-256, 1 = ECDSA P-384, 2 = Ed25519, 3 = RSA-2048.
EVP_PKEY *pc_generate_key(int kind);
// Builds and signs an X.509 v3 certificate. Subject attributes are given as parallel arrays (values with
// explicit lengths, so tests can embed a NUL). `san` and `eku` use OpenSSL's config syntax
// ("DNS:a,URI:b", "clientAuth") and may be NULL. Validity is relative to now, in seconds.
X509 *pc_make_certificate(EVP_PKEY *key, EVP_PKEY *issuer_key, X509 *issuer_cert,
                          const char *const *name_types, const unsigned char *const *name_values,
                          const int *name_lengths, int name_count, const char *san, const char *eku,
                          int is_ca, long not_before_offset, long not_after_offset, long serial);
// PEM text (caller frees with OPENSSL_free). The key is encrypted with AES-256 when a passphrase is given.
char *pc_pem_certificate(X509 *cert);
// A CRL signed by the issuer, revoking the given serials (hex strings). PEM text, caller frees.
char *pc_make_crl_pem(EVP_PKEY *issuer_key, X509 *issuer_cert, const char *const *serials_hex, int count,
                      long last_update_offset, long next_update_offset);
char *pc_pem_private_key(EVP_PKEY *key, const char *passphrase);

#endif
