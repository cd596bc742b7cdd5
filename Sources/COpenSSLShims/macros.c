// Trivial wrappers for OpenSSL macros Swift cannot import (SSL_CTX_ctrl wrappers, SSL_OP_* bits, sk_* STACK_OF
// accessors): no logic lives here. See COpenSSLShims.h.
#include "COpenSSLShims.h"

int pc_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
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

int pc_ssl_ex_index(void) {
    return SSL_get_ex_new_index(0, "portcullis-session", NULL, NULL, NULL);
}

int pc_general_names_count(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }
void pc_general_names_free(GENERAL_NAMES *names) { GENERAL_NAMES_free(names); }
int pc_x509_stack_count(const STACK_OF(X509) *stack) { return sk_X509_num(stack); }
X509 *pc_x509_stack_at(const STACK_OF(X509) *stack, int i) { return sk_X509_value(stack, i); }
void pc_x509_stack_free(STACK_OF(X509) *chain) { sk_X509_pop_free(chain, X509_free); }
