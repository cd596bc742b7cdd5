// OpenSSL for the reference benchmark that parses PEM without Portcullis (to split parse from extraction).
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
