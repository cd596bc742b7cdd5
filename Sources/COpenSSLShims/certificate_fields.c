// Certificate fields read for identities and pins: SAN decoding (fail-closed), subject attributes, times, the
// SPKI digest. See COpenSSLShims.h. The plain STACK_OF accessors are in macros.c.
#include "COpenSSLShims.h"

#include <stdio.h>
#include <time.h>

#include <openssl/evp.h>

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
