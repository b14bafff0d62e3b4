/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_tls.c - lib/tls.c driven directly over non-blocking TCP
 * sockets with poll(), against the harness's TLS redis-servers
 * (tests/servers.sh: redis-tls, redis-mtls, redis-tls-expired,
 * redis-tls-wronghost, certificates in VL_TEST_TLS_DIR) and against peers of
 * our own on loopback: a listener that never answers, one that hangs up in
 * the middle of the handshake, and a forked TLS server that stalls, hangs up
 * or says close_notify once the handshake is done.
 *
 * Every call into lib/tls.c must return at once (the socket is never
 * waited on inside it), leave OpenSSL's error queue empty (so nothing leaks
 * into another connection's message), and every wait here is a bounded
 * poll(). Each test runs under an alarm and ends with nothing of volley's
 * allocations left.
 */
#include "testutil.h"
#include "tls.h"
#include "url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* A hang is a failure, not a wait. */
#define WATCHDOG_S 60
/* The longest any single wait for the network may take. */
#define WAIT_MS ((int)tu_ms(5000))
/* A call into lib/tls.c that took longer than this waited for the socket
 * (which, against a silent or stalled peer, means forever): generous, since
 * a call may do the handshake's public-key work, which valgrind slows down
 * a hundredfold. */
#define CALL_MS tu_ms(2000)
/* What a call that has no cryptography to do (the handshake waiting for a
 * silent server) may take: a few milliseconds, with room for a loaded
 * machine. */
#define QUICK_MS tu_ms(50)

static int setup(void **state)
{
    alarm((unsigned)tu_ms(WATCHDOG_S));
    return tu_setup(state);
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void expect_text(const char *got, const char *want)
{
    if (strstr(got, want) == NULL)
        fail_msg("message '%s' does not contain '%s'", got, want);
}

/* A file of the harness's certificate directory (rotating buffers). */
static const char *tls_path(const char *file)
{
    static char buf[8][512];
    static int slot;
    char *out = buf[slot++ % 8];

    snprintf(out, 512, "%s/%s", tu_env("VL_TEST_TLS_DIR"), file);
    return out;
}

/* A path of this test's own in the harness's directory. */
static void scratch_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s-%ld", tu_env("VL_TEST_DIR"), name, (long)getpid());
}

static int env_port(const char *name)
{
    return atoi(tu_env(name));
}

/* ---- sockets ---- */

/* Waits (bounded) for fd to become ready for `want` (VL__TLS_WANT_*). */
static void wait_ready(int fd, int want)
{
    struct pollfd p = {fd, want == VL__TLS_WANT_WRITE ? POLLOUT : POLLIN, 0};
    int rc;

    assert_true(want == VL__TLS_WANT_READ || want == VL__TLS_WANT_WRITE);
    do
        rc = poll(&p, 1, WAIT_MS);
    while (rc < 0 && errno == EINTR);
    if (rc != 1)
        fail_msg("socket not ready for %s within %d ms",
                 want == VL__TLS_WANT_WRITE ? "writing" : "reading", WAIT_MS);
}

/* A connected non-blocking TCP socket to 127.0.0.1:port; sndbuf > 0 sets
 * SO_SNDBUF first. */
static int tcp_connect(int port, int sndbuf)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = 0;
    socklen_t len = sizeof(err);

    assert_true(fd >= 0);
    if (sndbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        assert_int_equal(errno, EINPROGRESS);
        wait_ready(fd, VL__TLS_WANT_WRITE);
        assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
        if (err != 0)
            fail_msg("connect 127.0.0.1:%d: %s", port, strerror(err));
    }
    return fd;
}

/* A listening socket on 127.0.0.1, port chosen by the kernel. */
static int tcp_listen(int *port, int rcvbuf)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- driving a session ---- */

typedef struct conn {
    int fd;
    vl__tls_ctx *ctx;
    vl__tls *t;
    char why[512];
} conn;

/* The contract every call must keep: it returned at once and left no
 * error behind in OpenSSL's queue. */
static void call_within(uint64_t t0, uint64_t limit_ms, const char *what)
{
    uint64_t took = mono_ms() - t0;

    if (took > limit_ms)
        fail_msg("%s took %llu ms: it waited for the socket", what, (unsigned long long)took);
    if (ERR_peek_error() != 0)
        fail_msg("%s left an error in OpenSSL's queue", what);
}

static void call_checked(uint64_t t0, const char *what)
{
    call_within(t0, CALL_MS, what);
}

static vl__tls_ctx *ctx_ok(const vl__tls_config *cfg)
{
    vl__tls_ctx *ctx = NULL;
    char why[512] = "";
    int rc = vl__tls_ctx_new(&ctx, cfg, why, sizeof(why));

    if (rc != VL_OK)
        fail_msg("vl__tls_ctx_new: %d (%s)", rc, why);
    assert_non_null(ctx);
    assert_int_equal(ERR_peek_error(), 0);
    return ctx;
}

/* The trusted CA of the harness, no client certificate. */
static vl__tls_config cfg_ca(void)
{
    vl__tls_config cfg = {0};

    cfg.cacert = tls_path("ca.crt");
    return cfg;
}

/* A TCP connection to port and a session on it for `host`. */
static void conn_open(conn *c, const vl__tls_config *cfg, int port, const char *host)
{
    memset(c, 0, sizeof(*c));
    c->fd = tcp_connect(port, 0);
    c->ctx = ctx_ok(cfg);
    c->t = vl__tls_new(c->ctx, c->fd, host);
    assert_non_null(c->t);
}

static void conn_close(conn *c)
{
    uint64_t t0 = mono_ms();

    vl__tls_free(c->t);
    call_checked(t0, "vl__tls_free");
    vl__tls_ctx_free(c->ctx);
    close(c->fd);
    c->t = NULL;
    c->ctx = NULL;
    c->fd = -1;
}

/* Drives the handshake to its end with poll(); returns its status. */
static int handshake(conn *c)
{
    uint64_t deadline = mono_ms() + (uint64_t)WAIT_MS;

    for (;;) {
        uint64_t t0 = mono_ms();
        int rc = vl__tls_handshake(c->t, c->why, sizeof(c->why));

        call_checked(t0, "vl__tls_handshake");
        if (rc != VL__TLS_WANT_READ && rc != VL__TLS_WANT_WRITE)
            return rc;
        if (mono_ms() > deadline)
            fail_msg("the handshake did not finish within %d ms", WAIT_MS);
        wait_ready(c->fd, rc);
    }
}

static void handshake_ok(conn *c)
{
    int rc = handshake(c);

    if (rc != VL_OK)
        fail_msg("handshake: %d (%s)", rc, c->why);
}

/* Writes all n bytes, waiting whenever the session says so. */
static void send_all(conn *c, const void *buf, size_t n)
{
    const char *p = buf;

    while (n > 0) {
        int want = -1;
        uint64_t t0 = mono_ms();
        ssize_t w = vl__tls_write(c->t, p, n, &want, c->why, sizeof(c->why));

        call_checked(t0, "vl__tls_write");
        if (w == -2)
            fail_msg("write: %s", c->why);
        if (w == -1) {
            wait_ready(c->fd, want);
            continue;
        }
        assert_true(w > 0 && (size_t)w <= n);
        p += w;
        n -= (size_t)w;
    }
}

/* One read call (n at most `chunk` bytes) after waiting as the previous one
 * said. Returns what vl__tls_read returned. Decrypted bytes the session
 * holds must come out without a wait: a read while vl__tls_decrypted() > 0
 * never returns -1. *saw_pending counts the reads that left bytes pending. */
static ssize_t read_once(conn *c, void *buf, size_t n, int *saw_pending)
{
    for (;;) {
        int want = -1;
        size_t before = vl__tls_decrypted(c->t);
        uint64_t t0 = mono_ms();
        ssize_t r = vl__tls_read(c->t, buf, n, &want, c->why, sizeof(c->why));

        call_checked(t0, "vl__tls_read");
        if (r == -1) {
            if (before > 0)
                fail_msg("read returned -1 with %zu bytes pending", before);
            assert_int_equal(vl__tls_decrypted(c->t), 0); /* a part record may wait */
            wait_ready(c->fd, want);
            continue;
        }
        if (r > 0 && vl__tls_pending(c->t) > 0 && saw_pending != NULL)
            (*saw_pending)++;
        return r;
    }
}

/* Reads exactly n bytes, at most `chunk` per call. */
static void read_exact(conn *c, char *buf, size_t n, size_t chunk, int *saw_pending)
{
    size_t got = 0;

    while (got < n) {
        size_t ask = n - got < chunk ? n - got : chunk;
        ssize_t r = read_once(c, buf + got, ask, saw_pending);

        if (r == 0)
            fail_msg("the server closed after %zu of %zu bytes", got, n);
        if (r < 0)
            fail_msg("read: %s", c->why);
        assert_true((size_t)r <= ask);
        got += (size_t)r;
    }
}

/* Reads one RESP line (up to and including CRLF), a byte per call. */
static void read_line(conn *c, char *buf, size_t cap)
{
    size_t n = 0;

    while (n + 1 < cap) {
        read_exact(c, buf + n, 1, 1, NULL);
        n++;
        if (n >= 2 && buf[n - 2] == '\r' && buf[n - 1] == '\n')
            break;
    }
    buf[n] = '\0';
}

/* PING round trip: the server answers +PONG. */
static void ping(conn *c)
{
    static const char cmd[] = "*1\r\n$4\r\nPING\r\n";
    char line[64];

    send_all(c, cmd, sizeof(cmd) - 1);
    read_line(c, line, sizeof(line));
    assert_string_equal(line, "+PONG\r\n");
}

/* The session ends without the peer having failed: nothing leaked. */
static void finish(conn *c)
{
    conn_close(c);
    assert_int_equal(tu_alloc_live(), 0);
}

/* A whole session: connect, handshake, PING, close. */
static void ping_ok(const vl__tls_config *cfg, const char *port_env, const char *host)
{
    conn c;

    conn_open(&c, cfg, env_port(port_env), host);
    handshake_ok(&c);
    ping(&c);
    finish(&c);
}

/* ---- against the harness's redis-servers ---- */

static void ping_over_tls(void **state)
{
    vl__tls_config cfg = cfg_ca();
    conn c;

    (void)state;
    conn_open(&c, &cfg, env_port("VL_TEST_REDIS_TLS_PORT"), "localhost");
    handshake_ok(&c);
    /* Once done, the handshake stays done. */
    assert_int_equal(vl__tls_handshake(c.t, c.why, sizeof(c.why)), VL_OK);
    ping(&c);
    ping(&c);
    finish(&c);
}

/* The certificate names IP:127.0.0.1 too: an IP literal is checked as an
 * address (and sent without SNI). */
static void ping_by_ip_address(void **state)
{
    vl__tls_config cfg = cfg_ca();

    (void)state;
    ping_ok(&cfg, "VL_TEST_REDIS_TLS_PORT", "127.0.0.1");
}

/* The configured servername wins over the host the socket went to. */
static void servername_overrides_host(void **state)
{
    vl__tls_config cfg = cfg_ca();

    (void)state;
    cfg.servername = "localhost";
    ping_ok(&cfg, "VL_TEST_REDIS_TLS_PORT", "some.other.name");
}

/* A 1 MiB value each way: partial writes (a record at a time), reads
 * smaller than a record (bytes left pending in the session must come out
 * without waiting for the socket), and the value intact. */
static void big_value(void **state)
{
    enum { BIG = 1 << 20 };
    vl__tls_config cfg = cfg_ca();
    char head[160], key[64], line[64];
    char *value = malloc(BIG), *back = malloc(BIG + 2);
    size_t i, off = 0;
    int partial = 0, saw_pending = 0;
    conn c;

    (void)state;
    assert_non_null(value);
    assert_non_null(back);
    for (i = 0; i < BIG; i++)
        value[i] = (char)('a' + i % 23);
    snprintf(key, sizeof(key), "tls:big:%ld", (long)getpid());
    conn_open(&c, &cfg, env_port("VL_TEST_REDIS_TLS_PORT"), "localhost");
    handshake_ok(&c);

    snprintf(head, sizeof(head), "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%d\r\n", strlen(key), key,
             BIG);
    send_all(&c, head, strlen(head));
    while (off < BIG) {
        int want = -1;
        ssize_t w = vl__tls_write(c.t, value + off, BIG - off, &want, c.why, sizeof(c.why));

        if (w == -2)
            fail_msg("write: %s", c.why);
        if (w == -1) {
            wait_ready(c.fd, want);
            continue;
        }
        if ((size_t)w < BIG - off)
            partial++;
        off += (size_t)w;
    }
    send_all(&c, "\r\n", 2);
    /* SSL_MODE_ENABLE_PARTIAL_WRITE: one call never takes a whole MiB. */
    assert_true(partial > 0);
    read_line(&c, line, sizeof(line));
    assert_string_equal(line, "+OK\r\n");

    snprintf(head, sizeof(head), "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", strlen(key), key);
    send_all(&c, head, strlen(head));
    read_line(&c, line, sizeof(line));
    snprintf(head, sizeof(head), "$%d\r\n", BIG);
    assert_string_equal(line, head);
    read_exact(&c, back, BIG + 2, 1000, &saw_pending);
    assert_memory_equal(back, value, BIG);
    assert_memory_equal(back + BIG, "\r\n", 2);
    /* Records are up to 16 KiB and reads were 1000 bytes. */
    assert_true(saw_pending > 0);

    snprintf(head, sizeof(head), "*2\r\n$3\r\nDEL\r\n$%zu\r\n%s\r\n", strlen(key), key);
    send_all(&c, head, strlen(head));
    read_line(&c, line, sizeof(line));
    assert_string_equal(line, ":1\r\n");
    free(value);
    free(back);
    finish(&c);
}

static void client_certificate(void **state)
{
    vl__tls_config cfg = cfg_ca();

    (void)state;
    cfg.cert = tls_path("client.crt");
    cfg.key = tls_path("client.key");
    ping_ok(&cfg, "VL_TEST_REDIS_MTLS_PORT", "localhost");
}

/* The key may sit in the certificate's file. */
static void client_certificate_and_key_in_one_file(void **state)
{
    vl__tls_config cfg = cfg_ca();
    char both[600];

    (void)state;
    scratch_path(both, sizeof(both), "both.pem");
    assert_int_equal(tu_sh("cat '%s' '%s' >'%s'", tls_path("client.crt"), tls_path("client.key"),
                           both),
                     0);
    cfg.cert = both;
    ping_ok(&cfg, "VL_TEST_REDIS_MTLS_PORT", "localhost");
    unlink(both);
}

/* redis-mtls requires a client certificate. In TLS 1.3 the client's side
 * of the handshake is over before the server has looked at it, so the
 * refusal (an alert) arrives with the first read. */
static void client_certificate_missing(void **state)
{
    vl__tls_config cfg = cfg_ca();
    char buf[64];
    ssize_t r;
    int rc;
    conn c;

    (void)state;
    conn_open(&c, &cfg, env_port("VL_TEST_REDIS_MTLS_PORT"), "localhost");
    rc = handshake(&c);
    if (rc == VL_OK) {
        r = read_once(&c, buf, sizeof(buf), NULL);
        assert_int_equal(r, -2);
    } else {
        assert_int_equal(rc, VL_ECONN);
    }
    expect_text(c.why, "the server requires a client certificate and none is configured");
    /* The session failed: it says so again instead of touching OpenSSL. */
    {
        int want;
        assert_int_equal(vl__tls_write(c.t, "x", 1, &want, c.why, sizeof(c.why)), -2);
        expect_text(c.why, "already failed");
    }
    finish(&c);
}

/* A failed handshake: VL_ECONN and a message with `what`. */
static void handshake_fails(const vl__tls_config *cfg, const char *port_env, const char *host,
                            const char *what)
{
    conn c;
    int rc;

    conn_open(&c, cfg, env_port(port_env), host);
    rc = handshake(&c);
    if (rc != VL_ECONN)
        fail_msg("handshake with %s: %d (%s), wanted VL_ECONN", host, rc, c.why);
    expect_text(c.why, what);
    finish(&c);
}

static void wrong_ca(void **state)
{
    vl__tls_config cfg = {0};

    (void)state;
    cfg.cacert = tls_path("other-ca.crt");
    /* redis-server sends its CA along with its certificate (OpenSSL builds
     * the chain from its trusted store): a root nobody here trusts. */
    handshake_fails(&cfg, "VL_TEST_REDIS_TLS_PORT", "localhost",
                    "TLS: certificate verify failed: self-signed certificate in certificate "
                    "chain");
}

/* Without cacert or capath the system's store is used, and the test CA is
 * not in it. */
static void system_store_does_not_know_the_test_ca(void **state)
{
    vl__tls_config cfg = {0};

    (void)state;
    handshake_fails(&cfg, "VL_TEST_REDIS_TLS_PORT", "localhost",
                    "TLS: certificate verify failed: self-signed certificate in certificate "
                    "chain");
}

static void expired_certificate(void **state)
{
    vl__tls_config cfg = cfg_ca();

    (void)state;
    handshake_fails(&cfg, "VL_TEST_REDIS_TLS_EXPIRED_PORT", "localhost",
                    "TLS: certificate verify failed: certificate has expired");
}

static void wrong_host(void **state)
{
    vl__tls_config cfg = cfg_ca();

    (void)state;
    handshake_fails(&cfg, "VL_TEST_REDIS_TLS_WRONGHOST_PORT", "localhost",
                    "host name mismatch: the certificate is for not-this-host.example, not "
                    "localhost");
    handshake_fails(&cfg, "VL_TEST_REDIS_TLS_WRONGHOST_PORT", "127.0.0.1",
                    "host name mismatch: the certificate is for not-this-host.example, not "
                    "127.0.0.1");
    /* The right certificate for another name fails the same way. */
    handshake_fails(&cfg, "VL_TEST_REDIS_TLS_PORT", "db.example.org",
                    "host name mismatch: the certificate is for localhost, 127.0.0.1, not "
                    "db.example.org");
}

/* insecure turns verification off: the wrong host, an expired certificate
 * and an unknown CA are all accepted. */
static void insecure_accepts_anything(void **state)
{
    vl__tls_config cfg = {0};

    (void)state;
    cfg.insecure = 1;
    ping_ok(&cfg, "VL_TEST_REDIS_TLS_WRONGHOST_PORT", "localhost");
    ping_ok(&cfg, "VL_TEST_REDIS_TLS_EXPIRED_PORT", "127.0.0.1");
}

/* A hashed CA directory (openssl rehash) works like a CA file. */
static void ca_directory(void **state)
{
    vl__tls_config cfg = {0};
    char dir[600];

    (void)state;
    scratch_path(dir, sizeof(dir), "capath");
    assert_int_equal(tu_sh("mkdir -p '%s' && cp '%s' '%s/' && openssl rehash '%s'", dir,
                           tls_path("ca.crt"), dir, dir),
                     0);
    cfg.capath = dir;
    ping_ok(&cfg, "VL_TEST_REDIS_TLS_PORT", "localhost");
    assert_int_equal(tu_sh("rm -rf '%s'", dir), 0);
}

/* One connection's failure leaves nothing for the next one to find: the
 * expired server's failure, then a good handshake and PING on another
 * session, and a failing then succeeding pair on the same thread again. */
static void errors_stay_with_their_connection(void **state)
{
    vl__tls_config cfg = cfg_ca();
    conn bad, good;

    (void)state;
    conn_open(&bad, &cfg, env_port("VL_TEST_REDIS_TLS_EXPIRED_PORT"), "localhost");
    conn_open(&good, &cfg, env_port("VL_TEST_REDIS_TLS_PORT"), "localhost");
    assert_int_equal(handshake(&bad), VL_ECONN);
    expect_text(bad.why, "certificate has expired");
    assert_int_equal(ERR_peek_error(), 0);
    snprintf(good.why, sizeof(good.why), "untouched");
    handshake_ok(&good);
    assert_string_equal(good.why, "untouched");
    ping(&good);
    conn_close(&bad);
    finish(&good);
}

/* ---- context errors ---- */

static void ctx_fails(const vl__tls_config *cfg, const char *what1, const char *what2)
{
    vl__tls_ctx *ctx = (vl__tls_ctx *)&ctx;
    char why[512] = "";

    assert_int_equal(vl__tls_ctx_new(&ctx, cfg, why, sizeof(why)), VL_EINVAL);
    assert_null(ctx);
    expect_text(why, what1);
    expect_text(why, what2);
    assert_int_equal(ERR_peek_error(), 0);
    assert_int_equal(tu_alloc_live(), 0);
}

static void context_errors(void **state)
{
    vl__tls_config cfg = {0};
    char expect[600];

    (void)state;
    cfg.cacert = "/nonexistent/ca.pem";
    ctx_fails(&cfg, "TLS: cannot load CA file /nonexistent/ca.pem: ", "No such file");

    cfg.cacert = tls_path("ca.key"); /* a key, no certificate */
    ctx_fails(&cfg, "TLS: cannot load CA file ", "ca.key: ");

    cfg = cfg_ca();
    cfg.capath = "/nonexistent/certs";
    ctx_fails(&cfg, "TLS: cannot use CA directory /nonexistent/certs: ", "No such file");
    cfg.capath = tls_path("ca.crt");
    ctx_fails(&cfg, "TLS: cannot use CA directory ", "Not a directory");

    cfg = cfg_ca();
    cfg.cert = "/nonexistent/client.crt";
    cfg.key = tls_path("client.key");
    ctx_fails(&cfg, "TLS: cannot load client certificate /nonexistent/client.crt: ", "");

    cfg.cert = tls_path("client.crt");
    cfg.key = "/nonexistent/client.key";
    ctx_fails(&cfg, "TLS: cannot load client key /nonexistent/client.key: ", "");

    /* The certificate's own file holds no key. */
    cfg.key = NULL;
    ctx_fails(&cfg, "TLS: cannot load client key ", "client.crt: ");

    cfg.key = tls_path("server.key");
    snprintf(expect, sizeof(expect), "TLS: client key %s does not match its certificate %s",
             tls_path("server.key"), tls_path("client.crt"));
    ctx_fails(&cfg, expect, "");

    cfg.cert = NULL;
    cfg.key = tls_path("client.key");
    ctx_fails(&cfg, "TLS: client key ", "given without its certificate");
}

/* A server context needs its own certificate and key, a matching pair,
 * and the clients' CA when it verifies them; a good one loads. */
static void server_context_errors(void **state)
{
    vl__tls_config cfg = {0};
    vl__tls_ctx *ctx = NULL;
    char expect[600], why[512] = "";

    (void)state;
    cfg.server = 1;
    ctx_fails(&cfg, "TLS: a server needs its certificate (cert=) and key (key=)", "");
    cfg.cert = "/nonexistent/server.crt";
    ctx_fails(&cfg, "TLS: cannot load server certificate /nonexistent/server.crt: ", "");
    cfg.cert = tls_path("server.crt");
    cfg.key = tls_path("client.key");
    snprintf(expect, sizeof(expect), "TLS: server key %s does not match its certificate %s",
             tls_path("client.key"), tls_path("server.crt"));
    ctx_fails(&cfg, expect, "");
    cfg.key = tls_path("server.key");
    cfg.verify_client = 1;
    ctx_fails(&cfg, "TLS: verify_client needs cacert or capath", "");
    cfg.cacert = tls_path("ca.crt");
    assert_int_equal(vl__tls_ctx_new(&ctx, &cfg, why, sizeof(why)), VL_OK);
    assert_non_null(ctx);
    vl__tls_ctx_free(ctx);
    assert_int_equal(ERR_peek_error(), 0);
    assert_int_equal(tu_alloc_live(), 0);
}

/* vl__tls_ctx_from_url: 0 or 1 only, and no parameter outside each side's
 * set (a client has no verify_client, a server no sni). */
static void context_from_url(void **state)
{
    static const struct {
        const char *url;
        int server, status;
        const char *why;
    } cases[] = {
        {"tls://127.0.0.1:1?insecure=1", 0, VL_OK, ""},
        {"tls://127.0.0.1:1?insecure=yes", 0, VL_EINVAL, "insecure must be 0 or 1"},
        {"tls://127.0.0.1:1?cacer=x", 0, VL_EINVAL, "unknown parameter cacer"},
        {"tls://127.0.0.1:1?verify_client=1", 0, VL_EINVAL, "unknown parameter verify_client"},
        {"tls://127.0.0.1:1?sni=x", 1, VL_EINVAL, "unknown parameter sni for a TLS listener"},
        {"tls://127.0.0.1:1?verify_client=2", 1, VL_EINVAL, "verify_client must be 0 or 1"},
        {"tls://127.0.0.1:1", 1, VL_EINVAL, "a server needs its certificate"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vl__tls_ctx *ctx = NULL;
        char why[512] = "", err[256];
        vl__url u;

        assert_int_equal(vl__url_parse(cases[i].url, &u, err, sizeof(err)), VL_OK);
        if (vl__tls_ctx_from_url(&ctx, &u, cases[i].server, why, sizeof(why)) !=
            cases[i].status)
            fail_msg("%s: %s", cases[i].url, why);
        expect_text(why, cases[i].why);
        assert_true((ctx != NULL) == (cases[i].status == VL_OK));
        vl__tls_ctx_free(ctx);
        vl__url_clear(&u);
    }
    assert_int_equal(ERR_peek_error(), 0);
    assert_int_equal(tu_alloc_live(), 0);
}

/* A key encrypted with a passphrase fails to load; nothing prompts (stdin
 * is a terminal or not, OpenSSL's default callback would read it). */
static void encrypted_key_never_prompts(void **state)
{
    vl__tls_config cfg = cfg_ca();
    char key[600];

    (void)state;
    scratch_path(key, sizeof(key), "encrypted.key");
    assert_int_equal(tu_sh("openssl pkey -in '%s' -aes256 -passout pass:secret -out '%s'",
                           tls_path("client.key"), key),
                     0);
    cfg.cert = tls_path("client.crt");
    cfg.key = key;
    ctx_fails(&cfg, "TLS: cannot load client key ", key);
    unlink(key);
}

/* Out of memory at each of volley's allocations: VL_ENOMEM or NULL, and
 * nothing leaked. */
static void out_of_memory(void **state)
{
    vl__tls_config cfg = cfg_ca();
    vl__tls_ctx *ctx;
    vl__tls *t;
    char why[512];
    long n;
    int rc;

    (void)state;
    cfg.servername = "localhost";
    for (n = 1;; n++) {
        tu_alloc_fail_at(n);
        rc = vl__tls_ctx_new(&ctx, &cfg, why, sizeof(why));
        tu_alloc_fail_at(0);
        if (rc == VL_OK)
            break;
        assert_int_equal(rc, VL_ENOMEM);
        assert_null(ctx);
        assert_int_equal(tu_alloc_live(), 0);
    }
    assert_true(n > 1);
    for (n = 1;; n++) {
        tu_alloc_fail_at(n);
        t = vl__tls_new(ctx, -1, "localhost");
        tu_alloc_fail_at(0);
        if (t != NULL)
            break;
        assert_int_equal(ERR_peek_error(), 0);
    }
    assert_true(n > 1);
    vl__tls_free(t);
    vl__tls_ctx_free(ctx);
    assert_int_equal(tu_alloc_live(), 0);
}

/* A context lives as long as its last session: the caller may drop its
 * own reference right after making sessions. */
static void context_reference_counted(void **state)
{
    vl__tls_config cfg = cfg_ca();
    conn c;

    (void)state;
    conn_open(&c, &cfg, env_port("VL_TEST_REDIS_TLS_PORT"), "localhost");
    vl__tls_ctx_ref(c.ctx);
    vl__tls_ctx_free(c.ctx);
    vl__tls_ctx_free(c.ctx); /* the session's reference is the last */
    c.ctx = NULL;
    handshake_ok(&c);
    ping(&c);
    finish(&c);
}

/* ---- peers of our own ---- */

/* A listener that accepts and never says anything: the handshake waits for
 * reading, call after call, and no call waits itself. */
static void silent_server(void **state)
{
    vl__tls_config cfg = cfg_ca();
    int port, lfd = tcp_listen(&port, 0), sfd, i;
    struct pollfd p;
    conn c;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.fd = tcp_connect(port, 0);
    sfd = accept(lfd, NULL, NULL);
    assert_true(sfd >= 0);
    c.ctx = ctx_ok(&cfg);
    c.t = vl__tls_new(c.ctx, c.fd, "localhost");
    assert_non_null(c.t);
    for (i = 0; i < 20; i++) {
        uint64_t t0 = mono_ms();

        assert_int_equal(vl__tls_handshake(c.t, c.why, sizeof(c.why)), VL__TLS_WANT_READ);
        /* The first call makes the key share and sends the ClientHello;
         * the others only find nothing to read. */
        call_within(t0, i == 0 ? CALL_MS : QUICK_MS, "vl__tls_handshake");
        p.fd = c.fd;
        p.events = POLLIN;
        p.revents = 0;
        assert_int_equal(poll(&p, 1, 10), 0);
    }
    close(sfd);
    close(lfd);
    finish(&c);
}

/* Reads the ClientHello record (a TLS handshake record, type 22) whole. */
static void read_client_hello(int sfd)
{
    unsigned char h[5], body[4096];
    size_t len;

    assert_int_equal(recv(sfd, h, sizeof(h), MSG_WAITALL), 5);
    assert_int_equal(h[0], 22);
    len = (size_t)h[3] << 8 | h[4];
    assert_true(len <= sizeof(body));
    assert_int_equal(recv(sfd, body, len, MSG_WAITALL), (ssize_t)len);
}

/* A peer that reads the ClientHello and hangs up: VL_ECONN, and the
 * message says what happened and when. With a plain close (FIN) the
 * server closed; with a reset the socket's error says so. */
static void close_during_handshake(void **state)
{
    static const struct linger reset = {1, 0};
    vl__tls_config cfg = cfg_ca();
    int port, lfd = tcp_listen(&port, 0), sfd, i;
    conn c;

    (void)state;
    for (i = 0; i < 2; i++) {
        memset(&c, 0, sizeof(c));
        c.fd = tcp_connect(port, 0);
        sfd = accept(lfd, NULL, NULL);
        assert_true(sfd >= 0);
        c.ctx = ctx_ok(&cfg);
        c.t = vl__tls_new(c.ctx, c.fd, "localhost");
        assert_non_null(c.t);
        assert_int_equal(vl__tls_handshake(c.t, c.why, sizeof(c.why)), VL__TLS_WANT_READ);
        read_client_hello(sfd);
        if (i == 1)
            assert_int_equal(setsockopt(sfd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0);
        close(sfd);
        assert_int_equal(handshake(&c), VL_ECONN);
        assert_string_equal(c.why, i == 0 ? "TLS: server closed the connection during the "
                                            "TLS handshake"
                                          : "TLS: handshake: Connection reset by peer");
        finish(&c);
    }
    close(lfd);
}

/* A forked TLS server (the harness's server certificate) for one
 * connection. What it does once the handshake is done: */
enum {
    PEER_STALL,  /* reads nothing until told to, then checks PATTERN_N bytes */
    PEER_CLOSE,  /* hangs up without close_notify */
    PEER_NOTIFY, /* sends close_notify, then hangs up */
};
#define PATTERN_N (8u << 20)
/* The most one write is asked to take. */
#define CHUNK (256u << 10)

static unsigned char pattern_at(size_t i)
{
    return (unsigned char)(i % 251);
}

typedef struct peer {
    pid_t pid;
    int port;
    int go; /* PEER_STALL: a byte written here lets it read */
} peer;

static void peer_serve(int lfd, int go, int mode)
{
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    unsigned char buf[65536];
    size_t i, got = 0, n;
    int fd, ok = 1;
    SSL *ssl;
    char c;

    alarm(WATCHDOG_S);
    signal(SIGPIPE, SIG_IGN);
    if (sctx == NULL || SSL_CTX_use_certificate_chain_file(sctx, tls_path("server.crt")) != 1 ||
        SSL_CTX_use_PrivateKey_file(sctx, tls_path("server.key"), SSL_FILETYPE_PEM) != 1)
        _exit(2);
    fd = accept(lfd, NULL, NULL);
    if (fd < 0 || (ssl = SSL_new(sctx)) == NULL || SSL_set_fd(ssl, fd) != 1 ||
        SSL_accept(ssl) != 1)
        _exit(3);
    if (mode == PEER_CLOSE) {
        close(fd);
        _exit(0);
    }
    if (mode == PEER_NOTIFY) {
        SSL_shutdown(ssl);
        close(fd);
        _exit(0);
    }
    if (read(go, &c, 1) != 1)
        _exit(4);
    while (got < PATTERN_N) {
        if (SSL_read_ex(ssl, buf, sizeof(buf), &n) != 1)
            _exit(5);
        for (i = 0; i < n; i++)
            ok &= buf[i] == pattern_at(got + i);
        got += n;
    }
    if (SSL_write_ex(ssl, ok ? "OK\n" : "BAD", 3, &n) != 1)
        _exit(6);
    SSL_shutdown(ssl);
    /* Let the client read the verdict before the socket goes. */
    while (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1)
        ;
    _exit(0);
}

static void peer_start(peer *p, int mode)
{
    /* Small buffers at the server, so that a stalled reader soon fills
     * them. */
    int lfd = tcp_listen(&p->port, mode == PEER_STALL ? 4096 : 0);
    int go[2];

    assert_int_equal(pipe(go), 0);
    fflush(NULL);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        close(go[1]);
        peer_serve(lfd, go[0], mode);
    }
    close(go[0]);
    close(lfd);
    p->go = go[1];
}

/* Reaps the peer: its exit status (it is killed first unless `wait`). */
static int peer_stop(peer *p, int wait)
{
    int status = 0;

    if (!wait)
        kill(p->pid, SIGKILL);
    assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
    close(p->go);
    return status;
}

static void peer_connect(conn *c, const peer *p, int sndbuf)
{
    vl__tls_config cfg = cfg_ca();

    memset(c, 0, sizeof(*c));
    c->fd = tcp_connect(p->port, sndbuf);
    c->ctx = ctx_ok(&cfg);
    c->t = vl__tls_new(c->ctx, c->fd, "localhost");
    assert_non_null(c->t);
    handshake_ok(c);
}

/* A reader that stalls: writes end in -1 and WANT_WRITE, and the retry
 * rule holds: the same bytes, from another address (the caller moved its
 * buffer) and followed by more, go out exactly once when the peer reads. */
static void stalled_reader_and_write_retry(void **state)
{
    unsigned char *data = malloc(PATTERN_N), *moved;
    size_t off = 0, i, stalled_n = 0, retry_n;
    char verdict[4];
    int want = 0, stalled = 0;
    ssize_t w;
    peer p;
    conn c;

    (void)state;
    assert_non_null(data);
    for (i = 0; i < PATTERN_N; i++)
        data[i] = pattern_at(i);
    peer_start(&p, PEER_STALL);
    peer_connect(&c, &p, 4096);
    while (!stalled && off < PATTERN_N) {
        uint64_t t0 = mono_ms();

        stalled_n = PATTERN_N - off < CHUNK ? PATTERN_N - off : CHUNK;
        w = vl__tls_write(c.t, data + off, stalled_n, &want, c.why, sizeof(c.why));
        call_checked(t0, "vl__tls_write");
        if (w == -2)
            fail_msg("write: %s", c.why);
        if (w == -1) {
            assert_int_equal(want, VL__TLS_WANT_WRITE);
            stalled = 1;
        } else {
            off += (size_t)w;
        }
    }
    assert_true(stalled);
    /* Still stalled: the same answer. */
    w = vl__tls_write(c.t, data + off, stalled_n, &want, c.why, sizeof(c.why));
    assert_int_equal(w, -1);
    assert_int_equal(want, VL__TLS_WANT_WRITE);

    /* The caller's buffer moves (here: a copy elsewhere) while the same
     * bytes wait to be repeated. */
    retry_n = PATTERN_N - off < stalled_n + CHUNK ? PATTERN_N - off : stalled_n + CHUNK;
    moved = malloc(retry_n);
    assert_non_null(moved);
    memcpy(moved, data + off, retry_n);
    memset(data + off, 0, 16); /* the old place is no longer what is read */
    assert_int_equal(write(p.go, "g", 1), 1);
    for (;;) {
        w = vl__tls_write(c.t, moved, retry_n, &want, c.why, sizeof(c.why));
        if (w == -2)
            fail_msg("write after the stall: %s", c.why);
        if (w > 0)
            break;
        wait_ready(c.fd, want);
    }
    memcpy(data + off, moved, 16);
    free(moved);
    off += (size_t)w;
    send_all(&c, data + off, PATTERN_N - off);
    read_exact(&c, verdict, 3, sizeof(verdict), NULL);
    verdict[3] = '\0';
    assert_string_equal(verdict, "OK\n");
    finish(&c);
    free(data);
    assert_int_equal(peer_stop(&p, 1), 0);
}

/* The peer hangs up after the handshake, with close_notify or without:
 * either way a read says 0 (closed), and freeing afterwards is quiet. */
static void peer_closes_after_handshake(void **state)
{
    int modes[2] = {PEER_NOTIFY, PEER_CLOSE}, i;
    char buf[64];

    (void)state;
    for (i = 0; i < 2; i++) {
        peer p;
        conn c;

        peer_start(&p, modes[i]);
        peer_connect(&c, &p, 0);
        assert_int_equal(read_once(&c, buf, sizeof(buf), NULL), 0);
        finish(&c);
        assert_int_equal(peer_stop(&p, 1), 0);
    }
}

/* The real server's way: QUIT, +OK, and then the read says 0. */
static void server_quits(void **state)
{
    static const char quit[] = "*1\r\n$4\r\nQUIT\r\n";
    vl__tls_config cfg = cfg_ca();
    char line[64];
    conn c;

    (void)state;
    conn_open(&c, &cfg, env_port("VL_TEST_REDIS_TLS_PORT"), "localhost");
    handshake_ok(&c);
    send_all(&c, quit, sizeof(quit) - 1);
    read_line(&c, line, sizeof(line));
    assert_string_equal(line, "+OK\r\n");
    assert_int_equal(read_once(&c, line, sizeof(line), NULL), 0);
    finish(&c);
}

/* In a child with SIGPIPE at its default (which kills), writes to a peer
 * that hung up: they fail with EPIPE's message, and the child lives to
 * exit normally. */
static void no_sigpipe(void **state)
{
    int status = 0;
    pid_t pid;
    peer p;

    (void)state;
    peer_start(&p, PEER_CLOSE);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct pollfd pf;
        char why[512] = "";
        int i, want;
        ssize_t w = 0;
        conn c;

        signal(SIGPIPE, SIG_DFL);
        peer_connect(&c, &p, 0);
        /* Wait for the peer's FIN, so that the write after the one that
         * draws its RST meets EPIPE. */
        pf.fd = c.fd;
        pf.events = POLLRDHUP;
        pf.revents = 0;
        if (poll(&pf, 1, WAIT_MS) != 1)
            _exit(10);
        for (i = 0; i < 100 && w != -2; i++) {
            w = vl__tls_write(c.t, "*1\r\n$4\r\nPING\r\n", 14, &want, why, sizeof(why));
            if (w != -2)
                usleep(10000);
        }
        if (w != -2) {
            printf("# writes to a closed peer kept succeeding\n");
            _exit(11);
        }
        if (strstr(why, "Broken pipe") == NULL) {
            printf("# write failed with '%s', not EPIPE\n", why);
            _exit(12);
        }
        vl__tls_free(c.t);
        vl__tls_ctx_free(c.ctx);
        close(c.fd);
        _exit(tu_alloc_live() == 0 ? 0 : 13);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("the writer died of signal %d", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    peer_stop(&p, 0);
    assert_int_equal(tu_alloc_live(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(ping_over_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(ping_by_ip_address, setup, teardown),
        cmocka_unit_test_setup_teardown(servername_overrides_host, setup, teardown),
        cmocka_unit_test_setup_teardown(big_value, setup, teardown),
        cmocka_unit_test_setup_teardown(client_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(client_certificate_and_key_in_one_file, setup, teardown),
        cmocka_unit_test_setup_teardown(client_certificate_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(system_store_does_not_know_the_test_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(expired_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_host, setup, teardown),
        cmocka_unit_test_setup_teardown(insecure_accepts_anything, setup, teardown),
        cmocka_unit_test_setup_teardown(ca_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(errors_stay_with_their_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(context_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(server_context_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(context_from_url, setup, teardown),
        cmocka_unit_test_setup_teardown(encrypted_key_never_prompts, setup, teardown),
        cmocka_unit_test_setup_teardown(out_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(context_reference_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(silent_server, setup, teardown),
        cmocka_unit_test_setup_teardown(close_during_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(stalled_reader_and_write_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(peer_closes_after_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(server_quits, setup, teardown),
        cmocka_unit_test_setup_teardown(no_sigpipe, setup, teardown),
    };

    return tu_run("tls", tests, sizeof(tests) / sizeof(tests[0]));
}
