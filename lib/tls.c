/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/tls.c - TLS sessions on volley's own sockets, with OpenSSL 3 (see
 * lib/tls.h for the contract).
 *
 * OpenSSL 3 initialises itself on first use (OPENSSL_init_ssl runs
 * implicitly and is thread-safe), so there is no global set-up call here and
 * no global state of ours: the socket BIO's method lives in the context, and
 * a context and its sessions belong to the loop thread that made them, like
 * every volley object (the reference count is not atomic).
 *
 * Every SSL_* call is preceded by ERR_clear_error() and followed by a drain
 * of OpenSSL's (thread-local) error queue, so that what went wrong on one
 * connection never shows up in another connection's message. Nothing the
 * peer does is asserted on: every failure becomes a status and a message.
 */
#include "internal.h"
#include "tls.h"
#include "url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct vl__tls_ctx {
    SSL_CTX *ssl;
    BIO_METHOD *meth; /* the socket BIO (send/recv); outlives every session */
    char *servername; /* NULL: each session's host */
    int insecure;
    int has_cert; /* a (client or server) certificate is configured */
    int server;   /* sessions accept (SSL_accept) */
    int refs;
};

struct vl__tls {
    vl__tls_ctx *ctx; /* one reference */
    SSL *ssl;
    int fd;
    char *host;     /* what the certificate must name; NULL when none */
    int sys_errno;  /* errno of the BIO's last failed send/recv, 0: none */
    int eof;        /* recv returned 0: the peer closed its side */
    int failed;     /* a fatal error: no close_notify, no more I/O */
};

/* ---- the socket BIO ----
 * OpenSSL's own socket BIO writes with write(2), which raises SIGPIPE on a
 * peer that closed; this one uses send(MSG_NOSIGNAL), and keeps the errno
 * of a real failure in the session (OpenSSL itself may make other calls
 * that change errno before the caller sees it). */

static int bio_write(BIO *b, const char *buf, int len)
{
    vl__tls *t = BIO_get_data(b);
    ssize_t n;

    BIO_clear_retry_flags(b);
    do
        n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        BIO_set_retry_write(b);
        return -1;
    }
    t->sys_errno = errno;
    return -1;
}

static int bio_read(BIO *b, char *buf, int len)
{
    vl__tls *t = BIO_get_data(b);
    ssize_t n;

    BIO_clear_retry_flags(b);
    do
        n = recv(t->fd, buf, (size_t)len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        return (int)n;
    if (n == 0) {
        t->eof = 1;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        BIO_set_retry_read(b);
        return -1;
    }
    t->sys_errno = errno;
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    vl__tls *t = BIO_get_data(b);

    VL__UNUSED(num);
    VL__UNUSED(ptr);
    switch (cmd) {
    case BIO_CTRL_FLUSH: /* nothing is buffered here: send() went out */
        return 1;
    case BIO_CTRL_EOF:
        return t != NULL && t->eof;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method_new(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "volley socket");

    if (m == NULL)
        return NULL;
    if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* ---- messages ---- */

/* OpenSSL's reason for the oldest error in the queue (the cause; later
 * entries say where it surfaced), then empties the queue. "" when it was
 * empty. */
static const char *drain_reason(char *buf, size_t n)
{
    unsigned long e = ERR_get_error();
    const char *r;

    buf[0] = '\0';
    if (e != 0) {
        r = ERR_reason_error_string(e);
        if (r != NULL)
            snprintf(buf, n, "%s", r);
        else
            ERR_error_string_n(e, buf, n);
    }
    ERR_clear_error();
    return buf;
}

/* A failed context set-up: the message names the file and OpenSSL's reason,
 * never the file's contents. */
static int ctx_fail(char *why, size_t whyn, const char *what, const char *path)
{
    char reason[256];

    drain_reason(reason, sizeof(reason));
    snprintf(why, whyn, "TLS: cannot load %s %s: %s", what, path,
             reason[0] ? reason : "unknown error");
    return VL_EINVAL;
}

/* Appends the names a certificate is for (its subjectAltName DNS names and
 * IP addresses, else its subject CN) to buf as "a, b". */
static void cert_names(X509 *cert, char *buf, size_t n)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    size_t len = 0;
    int i;

    buf[0] = '\0';
    for (i = 0; names != NULL && i < sk_GENERAL_NAME_num(names) && len + 1 < n; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char one[INET6_ADDRSTRLEN + 1];
        const char *s = NULL;
        int w;

        if (g->type == GEN_DNS) {
            s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
        } else if (g->type == GEN_IPADD) {
            int af = ASN1_STRING_length(g->d.iPAddress) == 4 ? AF_INET : AF_INET6;
            if (ASN1_STRING_length(g->d.iPAddress) == 4 ||
                ASN1_STRING_length(g->d.iPAddress) == 16)
                s = inet_ntop(af, ASN1_STRING_get0_data(g->d.iPAddress), one, sizeof(one));
        }
        if (s == NULL)
            continue;
        w = snprintf(buf + len, n - len, "%s%s", len ? ", " : "", s);
        len = w < 0 || (size_t)w >= n - len ? n - 1 : len + (size_t)w;
    }
    GENERAL_NAMES_free(names);
    if (len == 0 &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, (int)n) < 0)
        buf[0] = '\0';
}

/* The certificate the server presented, while its verification fails
 * (OpenSSL keeps it as the session's peer only once it verified). */
static X509 *peer_leaf(const vl__tls *t)
{
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(t->ssl);
    X509 *leaf = SSL_get0_peer_certificate(t->ssl);

    if (leaf == NULL && chain != NULL && sk_X509_num(chain) > 0)
        leaf = sk_X509_value(chain, 0);
    return leaf;
}

static void verify_message(const vl__tls *t, char *why, size_t whyn)
{
    long v = SSL_get_verify_result(t->ssl);
    char names[256] = "";
    X509 *leaf;

    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        leaf = peer_leaf(t);
        if (leaf != NULL)
            cert_names(leaf, names, sizeof(names));
        snprintf(why, whyn,
                 "TLS: certificate verify failed: host name mismatch: the certificate is for "
                 "%s, not %s",
                 names[0] ? names : "another host", t->host != NULL ? t->host : "?");
        return;
    }
    snprintf(why, whyn, "TLS: certificate verify failed: %s", X509_verify_cert_error_string(v));
}

/* Classifies a failed SSL_* call (ret its return value): VL__TLS_WANT_*
 * when it must be repeated once the socket is ready, 0 when the peer closed
 * the connection (close_notify, or EOF where TLS expected more), and -1 on
 * an error, with the message in why ("TLS: <op>: <reason>"). Drains the
 * error queue in every case. */
static int classify(vl__tls *t, int ret, const char *op, char *why, size_t whyn)
{
    int err = SSL_get_error(t->ssl, ret);
    unsigned long e = ERR_peek_error();
    char reason[256];

    switch (err) {
    case SSL_ERROR_WANT_READ:
        ERR_clear_error();
        return VL__TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        return VL__TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return 0;
    case SSL_ERROR_SYSCALL:
        if (t->sys_errno != 0) {
            ERR_clear_error();
            t->failed = 1;
            snprintf(why, whyn, "TLS: %s: %s", op, strerror(t->sys_errno));
            return -1;
        }
        if (e == 0) { /* OpenSSL's "EOF with errno 0" */
            t->failed = 1;
            return 0;
        }
        break;
    case SSL_ERROR_SSL:
        break;
    default:
        ERR_clear_error();
        t->failed = 1;
        snprintf(why, whyn, "TLS: %s: unexpected SSL_get_error %d", op, err);
        return -1;
    }

    t->failed = 1;
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return 0;
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        ERR_clear_error();
        verify_message(t, why, whyn);
        return -1;
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED && !t->ctx->has_cert) {
        ERR_clear_error();
        snprintf(why, whyn,
                 "TLS: %s: the server requires a client certificate and none is configured "
                 "(tlsv13 alert certificate required)",
                 op);
        return -1;
    }
    drain_reason(reason, sizeof(reason));
    snprintf(why, whyn, "TLS: %s: %s", op, reason[0] ? reason : "unknown error");
    return -1;
}

/* ---- contexts ---- */

/* No prompt for an encrypted key's passphrase, ever: OpenSSL's default
 * callback would read one from the terminal. The load then fails. */
static int no_password(char *buf, int size, int rwflag, void *ud)
{
    VL__UNUSED(buf);
    VL__UNUSED(size);
    VL__UNUSED(rwflag);
    VL__UNUSED(ud);
    return 0;
}

static int ctx_trust(vl__tls_ctx *c, const vl__tls_config *cfg, char *why, size_t whyn)
{
    struct stat st;

    if (cfg->cacert != NULL) {
        ERR_clear_error();
        if (SSL_CTX_load_verify_file(c->ssl, cfg->cacert) != 1)
            return ctx_fail(why, whyn, "CA file", cfg->cacert);
    }
    if (cfg->capath != NULL) {
        /* OpenSSL looks into the directory only when it needs an issuer;
         * a path that is no directory is reported now instead. */
        int bad = stat(cfg->capath, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;

        if (bad != 0) {
            snprintf(why, whyn, "TLS: cannot use CA directory %s: %s", cfg->capath,
                     strerror(bad));
            return VL_EINVAL;
        }
        ERR_clear_error();
        if (SSL_CTX_load_verify_dir(c->ssl, cfg->capath) != 1)
            return ctx_fail(why, whyn, "CA directory", cfg->capath);
    }
    if (cfg->server && cfg->verify_client && cfg->cacert == NULL && cfg->capath == NULL) {
        snprintf(why, whyn, "TLS: verify_client needs cacert or capath (the clients' CA)");
        return VL_EINVAL;
    }
    if (cfg->cacert == NULL && cfg->capath == NULL && !cfg->insecure && !cfg->server) {
        ERR_clear_error();
        if (SSL_CTX_set_default_verify_paths(c->ssl) != 1)
            return ctx_fail(why, whyn, "the system's trusted CAs", "(default paths)");
    }
    return VL_OK;
}

/* The certificate and key this side presents: a client's optional one, a
 * server's own (required). */
static int ctx_own_cert(vl__tls_ctx *c, const vl__tls_config *cfg, char *why, size_t whyn)
{
    const char *key = cfg->key != NULL ? cfg->key : cfg->cert;
    const char *who = cfg->server ? "server" : "client";
    char what[32];

    if (cfg->cert == NULL) {
        if (cfg->key != NULL) {
            snprintf(why, whyn, "TLS: %s key %s given without its certificate", who, cfg->key);
            return VL_EINVAL;
        }
        if (cfg->server) {
            snprintf(why, whyn, "TLS: a server needs its certificate (cert=) and key (key=)");
            return VL_EINVAL;
        }
        return VL_OK;
    }
    ERR_clear_error();
    snprintf(what, sizeof(what), "%s certificate", who);
    if (SSL_CTX_use_certificate_chain_file(c->ssl, cfg->cert) != 1)
        return ctx_fail(why, whyn, what, cfg->cert);
    snprintf(what, sizeof(what), "%s key", who);
    if (SSL_CTX_use_PrivateKey_file(c->ssl, key, SSL_FILETYPE_PEM) != 1) {
        /* Loading checks the key against the certificate already. */
        if (ERR_GET_LIB(ERR_peek_last_error()) != ERR_LIB_X509 ||
            ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
            return ctx_fail(why, whyn, what, key);
        goto mismatch;
    }
    if (SSL_CTX_check_private_key(c->ssl) != 1) {
    mismatch:
        ERR_clear_error();
        snprintf(why, whyn, "TLS: %s key %s does not match its certificate %s", who, key,
                 cfg->cert);
        return VL_EINVAL;
    }
    c->has_cert = 1;
    return VL_OK;
}

int vl__tls_ctx_new(vl__tls_ctx **out, const vl__tls_config *cfg, char *why, size_t whyn)
{
    static const vl__tls_config none = {0};
    vl__tls_ctx *c;
    int rc;

    *out = NULL;
    if (cfg == NULL)
        cfg = &none;
    c = vl__calloc(1, sizeof(*c));
    if (c == NULL)
        goto nomem;
    c->refs = 1;
    c->insecure = cfg->insecure != 0;
    c->server = cfg->server != 0;
    if (cfg->servername != NULL && (c->servername = vl__strdup(cfg->servername)) == NULL)
        goto nomem;
    ERR_clear_error();
    c->ssl = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
    c->meth = bio_method_new();
    if (c->ssl == NULL || c->meth == NULL)
        goto nomem;
    if (SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION) != 1)
        goto nomem;
    /* Partial writes: SSL_write returns after each record, as write(2)
     * would, instead of holding on to the caller's whole buffer. A moving
     * buffer: the retry after a WANT may pass the same bytes from another
     * address (the caller compacted or grew its buffer). */
    SSL_CTX_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A client never needs TLS 1.2 renegotiation; refusing it removes the
     * case where a read has to write in the middle of the stream. */
    SSL_CTX_set_options(c->ssl, SSL_OP_NO_RENEGOTIATION);
    /* Read ahead: one recv takes whatever the socket holds (many records
     * of a pipelined stream) instead of two recvs per record (its header,
     * then its body). Bytes read ahead are not on the socket any more, so
     * the caller reads until a read returns -1 (vl__tls_pending says
     * whether any are buffered). */
    SSL_CTX_set_read_ahead(c->ssl, 1);
    SSL_CTX_set_default_passwd_cb(c->ssl, no_password);
    if (c->server)
        SSL_CTX_set_verify(c->ssl,
                           cfg->verify_client ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                              : SSL_VERIFY_NONE,
                           NULL);
    else
        SSL_CTX_set_verify(c->ssl, c->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if ((rc = ctx_trust(c, cfg, why, whyn)) != VL_OK ||
        (rc = ctx_own_cert(c, cfg, why, whyn)) != VL_OK) {
        vl__tls_ctx_free(c);
        return rc;
    }
    ERR_clear_error();
    *out = c;
    return VL_OK;

nomem:
    ERR_clear_error();
    vl__tls_ctx_free(c);
    snprintf(why, whyn, "TLS: out of memory making a context");
    return VL_ENOMEM;
}

/* 0 or 1 from a URL parameter, -1 for anything else. */
static int bool_param(const vl__url *u, const char *k)
{
    const char *v = vl__url_param(u, k);

    if (v == NULL || strcmp(v, "0") == 0)
        return 0;
    return strcmp(v, "1") == 0 ? 1 : -1;
}

int vl__tls_ctx_from_url(vl__tls_ctx **out, const vl__url *u, int server, char *why, size_t whyn)
{
    static const char *const client_keys[] = {"cacert", "capath", "cert", "key",
                                              "sni",    "insecure", NULL};
    static const char *const server_keys[] = {"cacert", "capath", "cert", "key",
                                              "verify_client", NULL};
    const char *const *known = server ? server_keys : client_keys;
    vl__tls_config cfg;
    size_t i, k;

    *out = NULL;
    for (i = 0; i < u->nparams; i++) {
        for (k = 0; known[k] != NULL && strcmp(known[k], u->keys[i]) != 0; k++)
            ;
        if (known[k] == NULL) {
            snprintf(why, whyn, "unknown parameter %s%s", u->keys[i],
                     server ? " for a TLS listener" : "");
            return VL_EINVAL;
        }
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.cacert = vl__url_param(u, "cacert");
    cfg.capath = vl__url_param(u, "capath");
    cfg.cert = vl__url_param(u, "cert");
    cfg.key = vl__url_param(u, "key");
    cfg.servername = vl__url_param(u, "sni");
    cfg.server = server;
    cfg.insecure = bool_param(u, "insecure");
    cfg.verify_client = bool_param(u, "verify_client");
    if (cfg.insecure < 0 || cfg.verify_client < 0) {
        snprintf(why, whyn, "%s must be 0 or 1", cfg.insecure < 0 ? "insecure" : "verify_client");
        return VL_EINVAL;
    }
    return vl__tls_ctx_new(out, &cfg, why, whyn);
}

void vl__tls_ctx_ref(vl__tls_ctx *ctx)
{
    ctx->refs++;
}

void vl__tls_ctx_free(vl__tls_ctx *ctx)
{
    if (ctx == NULL || --ctx->refs > 0)
        return;
    SSL_CTX_free(ctx->ssl);
    BIO_meth_free(ctx->meth);
    vl__free(ctx->servername);
    vl__free(ctx);
}

/* ---- sessions ---- */

/* 1 when host is an IPv4 or IPv6 literal ("[::1]" included). The literal
 * without brackets goes to ip. */
static int ip_literal(const char *host, char *ip, size_t n)
{
    unsigned char addr[sizeof(struct in6_addr)];
    size_t len = strlen(host);

    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len >= n)
        return 0;
    memcpy(ip, host, len);
    ip[len] = '\0';
    return inet_pton(AF_INET, ip, addr) == 1 || inet_pton(AF_INET6, ip, addr) == 1;
}

/* What the certificate must name, and SNI for a DNS name. 0 on failure
 * (out of memory). */
static int session_host(vl__tls *t, const char *name)
{
    char ip[INET6_ADDRSTRLEN + 1];

    if (ip_literal(name, ip, sizeof(ip))) {
        t->host = vl__strdup(ip);
        if (t->host == NULL)
            return 0;
        /* SNI carries host names only (RFC 6066, section 3). */
        return t->ctx->insecure ||
               X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), t->host) == 1;
    }
    t->host = vl__strdup(name);
    if (t->host == NULL || SSL_set_tlsext_host_name(t->ssl, t->host) != 1)
        return 0;
    if (t->ctx->insecure)
        return 1;
    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(t->ssl, t->host) == 1;
}

vl__tls *vl__tls_new(vl__tls_ctx *ctx, int fd, const char *host)
{
    const char *name = ctx->servername != NULL ? ctx->servername : host;
    vl__tls *t = vl__calloc(1, sizeof(*t));
    BIO *bio;

    if (t == NULL)
        return NULL;
    t->fd = fd;
    vl__tls_ctx_ref(ctx);
    t->ctx = ctx;
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl);
    if (t->ssl == NULL)
        goto fail;
    bio = BIO_new(ctx->meth);
    if (bio == NULL)
        goto fail;
    BIO_set_data(bio, t);
    /* One BIO for both directions: SSL takes its one reference. */
    SSL_set_bio(t->ssl, bio, bio);
    if (ctx->server) {
        SSL_set_accept_state(t->ssl);
        ERR_clear_error();
        return t;
    }
    SSL_set_connect_state(t->ssl);
    if (name != NULL && name[0] != '\0' && !session_host(t, name))
        goto fail;
    ERR_clear_error();
    return t;

fail:
    ERR_clear_error();
    t->failed = 1;
    vl__tls_free(t);
    return NULL;
}

int vl__tls_handshake(vl__tls *t, char *why, size_t whyn)
{
    int ret, rc, oom;

    if (t->failed) {
        snprintf(why, whyn, "TLS: the session already failed");
        return VL_ECONN;
    }
    if (t->host == NULL && !t->ctx->insecure && !t->ctx->server) {
        t->failed = 1;
        snprintf(why, whyn, "TLS: no host name to verify the server's certificate against");
        return VL_ECONN;
    }
    ERR_clear_error();
    t->sys_errno = 0;
    ret = SSL_do_handshake(t->ssl);
    if (ret == 1) {
        ERR_clear_error();
        return VL_OK;
    }
    oom = ERR_GET_REASON(ERR_peek_error()) == ERR_R_MALLOC_FAILURE;
    rc = classify(t, ret, "handshake", why, whyn);
    if (rc > 0)
        return rc;
    if (oom)
        return VL_ENOMEM;
    if (rc == 0) {
        t->failed = 1;
        snprintf(why, whyn, "TLS: %s closed the connection during the TLS handshake",
                 t->ctx->server ? "client" : "server");
    }
    return VL_ECONN;
}

/* What every read and write starts with: 0 to go on, -2 (the message in
 * why) when it must not touch OpenSSL. */
static int io_start(vl__tls *t, size_t n, int *want, const char *op, char *why, size_t whyn)
{
    *want = 0;
    if (t->failed) {
        snprintf(why, whyn, "TLS: %s: the session already failed", op);
        return -2;
    }
    if (n == 0) {
        snprintf(why, whyn, "TLS: %s of 0 bytes", op);
        return -2;
    }
    ERR_clear_error();
    t->sys_errno = 0;
    return 0;
}

/* A read or write that did not succeed: -1 with *want, -2 on an error, or
 * 0 when the peer closed (classify). */
static int io_failed(vl__tls *t, int *want, const char *op, char *why, size_t whyn)
{
    int rc = classify(t, 0, op, why, whyn);

    if (rc > 0) {
        *want = rc;
        return -1;
    }
    return rc == 0 ? 0 : -2;
}

ssize_t vl__tls_read(vl__tls *t, void *buf, size_t n, int *want, char *why, size_t whyn)
{
    size_t got = 0;

    if (io_start(t, n, want, "read", why, whyn) != 0)
        return -2;
    if (SSL_read_ex(t->ssl, buf, n, &got) == 1) {
        ERR_clear_error();
        return (ssize_t)got;
    }
    return io_failed(t, want, "read", why, whyn);
}

ssize_t vl__tls_write(vl__tls *t, const void *buf, size_t n, int *want, char *why, size_t whyn)
{
    size_t put = 0;
    int rc;

    if (io_start(t, n, want, "write", why, whyn) != 0)
        return -2;
    if (SSL_write_ex(t->ssl, buf, n, &put) == 1) {
        ERR_clear_error();
        return (ssize_t)put;
    }
    rc = io_failed(t, want, "write", why, whyn);
    if (rc == 0) {
        /* Nothing more can be sent once the peer said close_notify. */
        t->failed = 1;
        snprintf(why, whyn, "TLS: write: the %s closed the connection",
                 t->ctx->server ? "client" : "server");
        return -2;
    }
    return rc;
}

size_t vl__tls_pending(const vl__tls *t)
{
    int n = SSL_pending(t->ssl);

    /* SSL_pending counts only the decrypted rest of the current record;
     * records read ahead and not yet decrypted count as one byte. */
    if (n <= 0)
        return SSL_has_pending(t->ssl) ? 1 : 0;
    return (size_t)n;
}

size_t vl__tls_decrypted(const vl__tls *t)
{
    int n = SSL_pending(t->ssl);

    return n > 0 ? (size_t)n : 0;
}

void vl__tls_free(vl__tls *t)
{
    if (t == NULL)
        return;
    if (t->ssl != NULL) {
        /* One attempt, never a wait: the BIO is non-blocking, so a full
         * socket just leaves close_notify unsent. OpenSSL forbids a
         * shutdown after a fatal error, and before the handshake there is
         * nobody to tell. */
        ERR_clear_error();
        if (!t->failed && SSL_is_init_finished(t->ssl))
            (void)SSL_shutdown(t->ssl);
        ERR_clear_error();
        SSL_free(t->ssl);
    }
    vl__free(t->host);
    vl__tls_ctx_free(t->ctx);
    vl__free(t);
}

void vl__tls_discard(vl__tls *t)
{
    if (t == NULL)
        return;
    t->failed = 1;
    vl__tls_free(t);
}
