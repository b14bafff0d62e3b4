/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/tls.h - TLS on volley's own non-blocking sockets (OpenSSL 3); not
 * installed.
 *
 * The transport that owns a socket (lib/redis.c, lib/stream.c) connects or
 * accepts it, then hands it to a vl__tls session and from there on reads and writes through it. No
 * call here blocks: each returns at once and says what the socket must
 * become ready for (read or write) before the same call is repeated.
 *
 * A context holds what every connection to one endpoint shares (trusted
 * CAs, client certificate, verification policy); a session is one TLS
 * connection over one socket. Verification is on unless the configuration
 * says insecure: the peer's chain must lead to a trusted CA and its
 * certificate must name the host (DNS name or IP address). The host is
 * also sent as SNI unless it is an IP address.
 *
 * SIGPIPE: the session writes with send(MSG_NOSIGNAL) through a BIO of its
 * own, never with write(), so a peer that closed never raises SIGPIPE.
 *
 * Messages: every `why` starts with "TLS: " and names what failed; it never
 * holds key material. OpenSSL's error queue is emptied by every call, so
 * one connection's failure never shows in another's message.
 *
 * Threads: OpenSSL 3 initialises itself. A context and its sessions belong
 * to the thread (loop) that made them, like every volley object: the
 * reference count is not atomic.
 *
 * Allocation: the context and session structs go through volley's
 * allocator (vl__malloc); OpenSSL's own memory goes through OpenSSL's.
 */
#ifndef VOLLEY_TLS_H
#define VOLLEY_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct vl__tls_config {
    const char *cacert;     /* PEM file of trusted CAs; NULL: the system store */
    const char *capath;     /* directory of hashed CA certificates; NULL: none */
    const char *cert;       /* client certificate (PEM); NULL: none */
    const char *key;        /* its private key (PEM); NULL: in `cert`, or none */
    const char *servername; /* name to verify and send as SNI; NULL: the host */
    int insecure;           /* 1: no peer verification at all (an explicit opt-out) */
    int server;             /* 1: the server side (SSL_accept): cert and key are the
                             * server's own (required); cacert/capath verify clients */
    int verify_client;      /* server: 1 requires a client certificate that leads to
                             * cacert/capath (one of them required) */
} vl__tls_config;

typedef struct vl__tls_ctx vl__tls_ctx;
typedef struct vl__tls vl__tls;

/* What a call that could not finish waits for. */
enum { VL__TLS_WANT_READ = 1, VL__TLS_WANT_WRITE = 2 };

/* Makes a context from `cfg` (its strings are copied or consumed before
 * the call returns). VL_OK and *out; VL_EINVAL with a message in why
 * ("TLS: cannot load CA file /x/ca.pem: no such file", "TLS: client key
 * does not match its certificate"); VL_ENOMEM. Reads files: call it once
 * per endpoint, not per connection. */
int vl__tls_ctx_new(vl__tls_ctx **out, const vl__tls_config *cfg, char *why, size_t whyn);
struct vl__url;
/* The TLS parameters of a URL's query into a context: cacert, capath, cert,
 * key, sni, insecure (0 or 1) for a client; cert, key, cacert, capath,
 * verify_client (0 or 1) for a server. One parser for every TLS URL
 * (tls:// streams; rediss:// reads the same names). A parameter outside
 * that set is refused, so that a typo never turns verification back to
 * its defaults. Returns as vl__tls_ctx_new. */
int vl__tls_ctx_from_url(vl__tls_ctx **out, const struct vl__url *u, int server, char *why,
                         size_t whyn);
/* Contexts are reference counted: every session holds one reference. */
void vl__tls_ctx_ref(vl__tls_ctx *ctx);
void vl__tls_ctx_free(vl__tls_ctx *ctx);

/* A session over the connected non-blocking socket `fd` (which it does not
 * own: the caller closes it after vl__tls_free), verifying `host` (unless
 * the context has a servername). `host` is copied; an IP literal (IPv6 with
 * or without brackets) is matched against the certificate's IP addresses
 * and sent without SNI, anything else is a DNS name. With neither host nor
 * servername (and verification on) the handshake fails. NULL when out of
 * memory. The session holds a reference to ctx. */
vl__tls *vl__tls_new(vl__tls_ctx *ctx, int fd, const char *host);

/* Drives the handshake (SSL_connect, or SSL_accept for a server context,
 * whose sessions take host NULL). VL_OK once it is done; VL__TLS_WANT_READ or
 * VL__TLS_WANT_WRITE (positive): call again once the socket is ready for
 * that; VL_ECONN with a clear message in why when it failed
 * ("TLS: certificate verify failed: unable to get local issuer
 * certificate", "TLS: certificate verify failed: self-signed certificate
 * in certificate chain" (a server that sends a root nobody here trusts),
 * "TLS: certificate verify failed: certificate has expired",
 * "TLS: certificate verify failed: host name mismatch: the certificate is
 * for x, not y", "TLS: server closed the connection during the TLS
 * handshake", "TLS: handshake: Connection reset by peer"). VL_ENOMEM when
 * OpenSSL ran out of memory (the session is failed then too). Once
 * done it keeps returning VL_OK; once failed, VL_ECONN. With TLS 1.3 a
 * server that refuses the client (no or a wrong client certificate) says
 * so after the client's side is done: the first read then fails ("the
 * server requires a client certificate and none is configured"). */
int vl__tls_handshake(vl__tls *t, char *why, size_t whyn);

/* Reads up to n bytes (n > 0). Returns the bytes read (> 0); 0 when the
 * peer closed (close_notify, or EOF without it); -1 when nothing could be
 * read now, *want saying what to wait for (a read may need the socket
 * writable, for a key update's answer); -2 on an error, with the message in
 * why. A reader loops until -1 (or vl__tls_pending() is 0) before it waits:
 * one record (up to 16 KiB) is decrypted at a time, and what the caller's
 * buffer did not take stays in the session, not in the socket. TLS 1.2
 * renegotiation is refused. After 0 or -2 the session is done: free it. */
ssize_t vl__tls_read(vl__tls *t, void *buf, size_t n, int *want, char *why, size_t whyn);
/* Writes up to n bytes (n > 0). Returns the bytes written (> 0), which may
 * be fewer than n (SSL_MODE_ENABLE_PARTIAL_WRITE: a call returns once a
 * record, up to 16 KiB, went out; advance and call again); -1 when nothing
 * could be written now, *want saying what to wait for (a write may need the
 * socket readable); -2 on an error, with the message in why ("TLS: write:
 * Broken pipe"), after which the session is done.
 *
 * After -1, the next write must start with the same bytes, at least as
 * many as before (OpenSSL's rule: part of them may already be encrypted
 * and queued). They may come from another address
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER): the caller may compact or grow its
 * output buffer in between, and append to it, as long as the pending bytes
 * stay first and unchanged. The caller must not drop them or write other
 * bytes first; when it wants to abandon the write, it frees the session. */
ssize_t vl__tls_write(vl__tls *t, const void *buf, size_t n, int *want, char *why, size_t whyn);
/* Bytes buffered inside the session (0 when none; records read ahead from
 * the socket but not yet decrypted count as 1): read them before waiting
 * for the socket, which will not become readable for them. What was read
 * ahead may be only part of a record: a read then returns -1 (want read)
 * although this said 1, and the socket does become readable for the rest.
 * vl__tls_decrypted counts only bytes a read returns without a wait. */
size_t vl__tls_pending(const vl__tls *t);
size_t vl__tls_decrypted(const vl__tls *t);

/* Sends close_notify if it can without waiting (only after a completed
 * handshake, and not after a fatal error), and frees the session (not the
 * socket) and its reference to the context. Never blocks. NULL is ignored. */
void vl__tls_free(vl__tls *t);
/* Frees the session without close_notify: for a connection that is reset
 * (the peer is told nothing). NULL is ignored. */
void vl__tls_discard(vl__tls *t);

#endif
