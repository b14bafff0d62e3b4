/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_tls_connect.c - MySQL over TLS: the connect that runs on
 * a worker thread (its deadline, a free or a loop free while the worker is
 * blocked, a server without TLS), what each ssl-mode accepts and refuses,
 * statements that stay non-blocking after the handshake (a large result
 * while another connection keeps being served) and a pool over TLS.
 *
 * Against the harness's main mariadbd, which serves TLS with the test CA's
 * certificate (DNS:localhost, IP:127.0.0.1), and mysql-primary, which has no
 * TLS. The stalled and TLS-less peers are plain sockets made here.
 */
#include "testutil.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char url_buf[8][768];
static int url_next;

/* mysql://user:pw@host:port/<test db>?params (params NULL: none); an IPv6
 * host gets its brackets. Rotating static buffers. */
static const char *url_for(const char *host, const char *port, const char *user,
                           const char *pw, const char *params)
{
    char *b = url_buf[url_next++ % 8];
    int ipv6 = strchr(host, ':') != NULL;
    char timeout[64] = "";

    /* The default connect timeout (5 s), stretched like every test time
     * (VL_TEST_TIME_SCALE): a TLS handshake under valgrind is slow. */
    if (params == NULL || strstr(params, "connect_timeout_ms=") == NULL)
        snprintf(timeout, sizeof(timeout), "%sconnect_timeout_ms=%llu",
                 params != NULL && params[0] ? "&" : "", (unsigned long long)tu_ms(5000));
    snprintf(b, sizeof(url_buf[0]), "mysql://%s:%s@%s%s%s:%s/%s?%s%s", user, pw,
             ipv6 ? "[" : "", host, ipv6 ? "]" : "", port, tu_env("VL_TEST_MYSQL_DB"),
             params != NULL ? params : "", timeout);
    return b;
}

/* The test account on the main server over TLS with `params`. */
static const char *tls_url(const char *host, const char *params)
{
    return url_for(host, tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_USER"),
                   tu_env("VL_TEST_MYSQL_PASSWORD"), params);
}

/* "ssl-ca=<the test CA>" followed by `more` ("" for nothing). */
static const char *with_ca(const char *ca_var, const char *more)
{
    static char b[4][512];
    static int n;
    char *p = b[n++ % 4];

    snprintf(p, sizeof(b[0]), "ssl-ca=%s%s", tu_env(ca_var), more);
    return p;
}

/* tu_finish, then the loop's worker threads gone (tu_workers_gone). */
static void finish(vl_loop *loop)
{
    tu_finish(loop);
    tu_workers_gone();
}

static vl_mysql *connect_ok(vl_loop *loop, const char *url)
{
    vl_mysql *c = vl_mysql_new(loop, url, NULL);
    vl_future *f;

    assert_non_null(c);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    if (vl_future_status(f) != VL_OK)
        fail_msg("connect %s: %s", vl_mysql_display(c), vl_future_error(f));
    vl_future_free(f);
    return c;
}

/* The value of session status variable `name` (static buffer). */
static const char *status_of(vl_loop *loop, vl_mysql *c, const char *name)
{
    static char v[128];
    char sql[128];
    vl_future *f;
    const vl_mysql_result *r;
    size_t len;
    const char *s;

    snprintf(sql, sizeof(sql), "SHOW SESSION STATUS LIKE '%s'", name);
    f = tu_wait_for(loop, vl_mysql_query(c, sql));
    if (vl_future_status(f) != VL_OK)
        fail_msg("%s: %s", sql, vl_future_error(f));
    r = vl_future_mysql_result(f);
    assert_int_equal(vl_mysql_result_rows(r), 1);
    s = vl_mysql_result_value(r, 0, 1, &len);
    snprintf(v, sizeof(v), "%.*s", (int)len, s != NULL ? s : "");
    vl_future_free(f);
    return v;
}

/* Connects and proves the session is encrypted, in the server's own view,
 * with `want_version` (NULL: any TLS version). */
static void connects_encrypted(const char *url, const char *want_version)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop, url);

    assert_true(strlen(status_of(loop, c, "Ssl_cipher")) > 0);
    if (want_version != NULL)
        assert_string_equal(status_of(loop, c, "Ssl_version"), want_version);
    else
        assert_true(strncmp(status_of(loop, c, "Ssl_version"), "TLSv1.", 6) == 0);
    vl_mysql_free(c);
    finish(loop);
}

/* The connect fails with `status`, MySQL errno `err` and a message that
 * contains `says` and never the password `pw`. */
static void connect_refused(const char *url, int status, unsigned err, const char *says,
                            const char *pw)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = vl_mysql_new(loop, url, NULL);
    vl_future *f = tu_wait_for(loop, vl_mysql_ready(c));

    if (vl_future_status(f) != status || vl_future_mysql_errno(f) != err ||
        strstr(vl_future_error(f), says) == NULL)
        fail_msg("%s: status %d errno %u '%s'; wanted %d, %u, '%s'", vl_mysql_display(c),
                 vl_future_status(f), vl_future_mysql_errno(f), vl_future_error(f), status, err,
                 says);
    assert_null(strstr(vl_future_error(f), pw));
    assert_null(strstr(vl_mysql_error(c), pw));
    vl_future_free(f);
    vl_mysql_free(c);
    finish(loop);
}

/* What each mode accepts. verify-ca and verify-identity differ only in the
 * name: ::ffff:127.0.0.1 reaches the same server under an address its
 * certificate does not name. */
static void modes_that_connect(void **state)
{
    (void)state;
    connects_encrypted(tls_url("127.0.0.1", with_ca("VL_TEST_TLS_CA", "")), NULL);
    /* The name as written: localhost is the certificate's DNS name, and
     * TCP, never the server's unix socket. */
    connects_encrypted(tls_url("localhost", with_ca("VL_TEST_TLS_CA", "")), NULL);
    connects_encrypted(
        tls_url("127.0.0.1", with_ca("VL_TEST_TLS_CA", "&ssl-verify-server-cert=1")), NULL);
    connects_encrypted(tls_url("::ffff:127.0.0.1",
                               with_ca("VL_TEST_TLS_CA", "&ssl-mode=verify-ca")),
                       NULL);
    connects_encrypted(tls_url("::ffff:127.0.0.1", "ssl-mode=required"), NULL);
    connects_encrypted(tls_url("127.0.0.1", "ssl-verify-server-cert=0"), NULL);
    /* required checks nothing, even with a CA that did not sign the
     * certificate. */
    connects_encrypted(tls_url("127.0.0.1", with_ca("VL_TEST_TLS_OTHER_CA", "&ssl-mode=required")),
                       NULL);
    connects_encrypted(tls_url("127.0.0.1", with_ca("VL_TEST_TLS_CA", "&tls-version=TLSv1.2")),
                       "TLSv1.2");
    connects_encrypted(tls_url("127.0.0.1", with_ca("VL_TEST_TLS_CA", "&tls-version=TLSv1.3")),
                       "TLSv1.3");
}

/* A cipher list is applied (a TLS 1.2 one: the server's key is EC). */
static void cipher_and_client_certificate(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    char params[1024];

    (void)state;
    c = connect_ok(loop, tls_url("127.0.0.1",
                                 with_ca("VL_TEST_TLS_CA", "&tls-version=TLSv1.2"
                                                           "&ssl-cipher=ECDHE-ECDSA-AES128-GCM-SHA256")));
    assert_string_equal(status_of(loop, c, "Ssl_cipher"), "ECDHE-ECDSA-AES128-GCM-SHA256");
    vl_mysql_free(c);
    /* An account that REQUIRE X509 logs in with the client certificate. */
    snprintf(params, sizeof(params), "ssl-ca=%s&ssl-cert=%s&ssl-key=%s", tu_env("VL_TEST_TLS_CA"),
             tu_env("VL_TEST_TLS_CLIENT_CERT"), tu_env("VL_TEST_TLS_CLIENT_KEY"));
    c = connect_ok(loop, url_for("127.0.0.1", tu_env("VL_TEST_MYSQL_PORT"),
                                 tu_env("VL_TEST_MYSQL_X509_USER"),
                                 tu_env("VL_TEST_MYSQL_X509_PASSWORD"), params));
    assert_true(strlen(status_of(loop, c, "Ssl_cipher")) > 0);
    vl_mysql_free(c);
    finish(loop);
    /* Without it, refused by the server. */
    connect_refused(url_for("127.0.0.1", tu_env("VL_TEST_MYSQL_PORT"),
                            tu_env("VL_TEST_MYSQL_X509_USER"),
                            tu_env("VL_TEST_MYSQL_X509_PASSWORD"),
                            with_ca("VL_TEST_TLS_CA", "")),
                    VL_ECONN, 1045, "Access denied", tu_env("VL_TEST_MYSQL_X509_PASSWORD"));
}

/* What each mode refuses, with errno 2026 and the reason. */
static void modes_that_refuse(void **state)
{
    const char *pw = tu_env("VL_TEST_MYSQL_PASSWORD");
    const char *primary = tu_env("VL_TEST_MYSQL_PRIMARY_PORT");
    const char *user = tu_env("VL_TEST_MYSQL_USER");

    (void)state;
    /* A certificate by a CA that was not given. */
    connect_refused(tls_url("127.0.0.1", with_ca("VL_TEST_TLS_OTHER_CA", "")), VL_ECONN, 2026,
                    "certificate", pw);
    connect_refused(tls_url("127.0.0.1", with_ca("VL_TEST_TLS_OTHER_CA", "&ssl-mode=verify-ca")),
                    VL_ECONN, 2026, "certificate", pw);
    /* The system's store does not know the test CA. */
    connect_refused(tls_url("127.0.0.1", "ssl-mode=verify-identity"), VL_ECONN, 2026,
                    "certificate", pw);
    /* A name the certificate does not carry. */
    connect_refused(tls_url("::ffff:127.0.0.1", with_ca("VL_TEST_TLS_CA", "")), VL_ECONN, 2026,
                    "does not name the host '::ffff:127.0.0.1'", pw);
    /* A server without TLS, in every mode. */
    connect_refused(url_for("127.0.0.1", primary, user, pw, with_ca("VL_TEST_TLS_CA", "")),
                    VL_ECONN, 2026, "does not support", pw);
    connect_refused(url_for("127.0.0.1", primary, user, pw,
                            with_ca("VL_TEST_TLS_CA", "&ssl-mode=verify-ca")),
                    VL_ECONN, 2026, "does not support", pw);
    connect_refused(url_for("127.0.0.1", primary, user, pw, "ssl-mode=required"), VL_ECONN, 2026,
                    "does not support", pw);
    /* An account that requires TLS, without it. */
    connect_refused(url_for("127.0.0.1", tu_env("VL_TEST_MYSQL_PORT"),
                            tu_env("VL_TEST_MYSQL_TLS_USER"),
                            tu_env("VL_TEST_MYSQL_TLS_PASSWORD"), NULL),
                    VL_ECONN, 1045, "REQUIRE SSL", tu_env("VL_TEST_MYSQL_TLS_PASSWORD"));
}

/* ---- peers made here ---- */

/* Accepts the one connection the worker made on a tu_silent_listener,
 * waiting at most 5 s. */
static int accept_one(int lfd)
{
    struct pollfd p = {lfd, POLLIN, 0};
    int fd;

    assert_int_equal(poll(&p, 1, (int)tu_ms(5000)), 1);
    fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    return fd;
}

/* Reads until the client closes (at most 5 s); returns the bytes read. */
static long read_to_eof(int fd)
{
    char buf[4096];
    long total = 0;

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;
        assert_int_equal(poll(&p, 1, (int)tu_ms(5000)), 1);
        n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return total;
        assert_true(n > 0);
        total += n;
    }
}

/* 1 while the peer of `fd` has not closed its end. */
static int peer_open(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);

    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static const char *stalled_url(int port, const char *params)
{
    char p[16];

    snprintf(p, sizeof(p), "%d", port);
    return url_for("127.0.0.1", p, "u", "hunter2", params);
}

typedef struct done_rec {
    int calls;
    int status;
} done_rec;

static void done_cb(vl_future *f, void *ud)
{
    done_rec *d = ud;

    d->calls++;
    d->status = vl_future_status(f);
}

/* The loop's deadline fails the connect on time although the worker is
 * still blocked reading a greeting that never comes; the worker's handle is
 * closed once it returns. */
static void deadline_while_the_worker_is_blocked(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, lfd = tu_silent_listener(&port), fd;
    uint64_t t0 = vl_loop_now_ms(loop);
    vl_mysql *c = vl_mysql_new(loop, stalled_url(port, "ssl-mode=required&connect_timeout_ms=200"),
                               NULL);
    vl_future *f = tu_wait_for(loop, vl_mysql_ready(c));

    (void)state;
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    assert_true(vl_loop_now_ms(loop) - t0 >= 200); /* never early */
    assert_non_null(strstr(vl_future_error(f), "timed out after 200 ms"));
    assert_null(strstr(vl_future_error(f), "hunter2"));
    vl_future_free(f);
    /* The worker is still in mysql_real_connect (its own wait is 1 s): the
     * connection it made is open. */
    fd = accept_one(lfd);
    assert_true(peer_open(fd));
    /* A statement on the failed connection fails at once with the error. */
    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1"));
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    vl_future_free(f);
    vl_mysql_free(c);
    /* Closing our end lets the worker return; its handle is closed then. */
    close(fd);
    close(lfd);
    finish(loop);
}

/* Freeing the connection while the worker is blocked completes each of its
 * futures once with VL_ECANCELED; the worker's handle goes when it returns. */
static void free_while_the_worker_is_blocked(void **state)
{
    vl_loop *loop = vl_loop_new();
    long live = tu_alloc_live() - (long)vl__cache_count(loop);
    int port, lfd = tu_silent_listener(&port), fd;
    vl_mysql *c = vl_mysql_new(loop, stalled_url(port, "ssl-mode=required"), NULL);
    done_rec ready = {0, 0}, query = {0, 0};

    (void)state;
    vl_future_then(vl_mysql_ready(c), done_cb, &ready);
    vl_future_then(vl_mysql_query(c, "SELECT 1"), done_cb, &query);
    fd = accept_one(lfd);
    tu_sleep_ms(loop, 50);
    assert_int_equal(ready.calls, 0);
    vl_mysql_free(c);
    tu_sleep_ms(loop, 10);
    /* Nothing of the connection is left, although the worker still runs:
     * the job it owns is the C library's. (Freed futures the loop keeps for
     * reuse are the loop's.) */
    assert_int_equal(tu_alloc_live() - (long)vl__cache_count(loop), live);
    assert_int_equal(ready.calls, 1);
    assert_int_equal(ready.status, VL_ECANCELED);
    assert_int_equal(query.calls, 1);
    assert_int_equal(query.status, VL_ECANCELED);
    assert_true(peer_open(fd)); /* the worker still waits */
    close(fd);
    close(lfd);
    finish(loop);
    assert_int_equal(ready.calls, 1);
    assert_int_equal(query.calls, 1);
}

/* The loop-alive rule holds for a TLS connect as for a plain one: while
 * nobody waits for the connection, its connect on the worker does not keep
 * vl_loop_run running; a ready future does, until it completes. */
static void tls_connect_nobody_waits_for(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, lfd = tu_silent_listener(&port), fd;
    char params[96];
    vl_mysql *c;
    vl_future *f;

    (void)state;
    snprintf(params, sizeof(params), "ssl-mode=required&connect_timeout_ms=%llu",
             (unsigned long long)tu_ms(1000));
    c = vl_mysql_new(loop, stalled_url(port, params), NULL);
    fd = accept_one(lfd); /* the worker is connected and waits for a greeting */
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(vl_loop_run(loop), VL_OK); /* returns: nobody waits */
    f = vl_mysql_ready(c);
    assert_true(vl_loop_alive(loop) > 0);
    f = tu_wait_for(loop, f);
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    vl_future_free(f);
    vl_mysql_free(c);
    close(fd);
    close(lfd);
    finish(loop);
}

/* Freeing the loop while the worker is blocked: the futures complete once,
 * the worker closes its handle on its own thread when it returns. */
static void loop_free_while_the_worker_is_blocked(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, lfd = tu_silent_listener(&port), fd;
    vl_mysql *c = vl_mysql_new(loop, stalled_url(port, "ssl-mode=required"), NULL);
    done_rec ready = {0, 0};

    (void)state;
    vl_future_then(vl_mysql_ready(c), done_cb, &ready);
    fd = accept_one(lfd);
    tu_sleep_ms(loop, 50);
    vl_loop_free(loop);
    assert_int_equal(ready.calls, 1);
    assert_int_equal(ready.status, VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
    /* Half-close: the worker's read ends, and it closes its socket. */
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    assert_int_equal(read_to_eof(fd), 0);
    close(fd);
    close(lfd);
    tu_workers_gone(); /* the worker frees the job right after the close */
}

/* A MySQL greeting that does not offer TLS (CLIENT_SSL), as a server
 * without it sends. */
static void send_greeting_without_tls(int fd)
{
    static const char version[] = "5.5.5-10.11.99-no-tls";
    static const char plugin[] = "mysql_native_password";
    const uint32_t caps = 0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x10000 | 0x20000 |
                          0x40000 | 0x80000;
    unsigned char p[256];
    size_t n = 4;

    p[n++] = 10;
    memcpy(p + n, version, sizeof(version));
    n += sizeof(version);
    memcpy(p + n, "\x07\x00\x00\x00", 4);
    n += 4;
    memcpy(p + n, "abcdefgh\0", 9);
    n += 9;
    p[n++] = (unsigned char)(caps & 0xff);
    p[n++] = (unsigned char)(caps >> 8 & 0xff);
    p[n++] = 0x21;
    p[n++] = 2;
    p[n++] = 0;
    p[n++] = (unsigned char)(caps >> 16 & 0xff);
    p[n++] = (unsigned char)(caps >> 24 & 0xff);
    p[n++] = 21;
    memset(p + n, 0, 10);
    n += 10;
    memcpy(p + n, "ijklmnopqrst\0", 13);
    n += 13;
    memcpy(p + n, plugin, sizeof(plugin));
    n += sizeof(plugin);
    p[0] = (unsigned char)((n - 4) & 0xff);
    p[1] = (unsigned char)((n - 4) >> 8);
    p[2] = 0;
    p[3] = 0;
    assert_int_equal(send(fd, p, n, 0), (ssize_t)n);
}

/* A server that does not offer TLS is refused before the client sends a
 * single byte (no login, no user name, no scramble in clear text), in the
 * modes that do not check the name as well as in the one that does. */
static void no_login_to_a_server_without_tls(void **state)
{
    static const char *const params[] = {"ssl-mode=required", "ssl-verify-server-cert=0",
                                         "ssl-mode=verify-identity"};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        vl_loop *loop = vl_loop_new();
        int port, lfd = tu_silent_listener(&port), fd;
        vl_mysql *c = vl_mysql_new(loop, stalled_url(port, params[i]), NULL);
        vl_future *f = vl_mysql_ready(c);

        fd = accept_one(lfd);
        send_greeting_without_tls(fd);
        assert_int_equal(tu_await(loop, f), VL_ECONN);
        assert_int_equal(vl_future_mysql_errno(f), 2026);
        assert_non_null(strstr(vl_future_error(f), "does not support"));
        vl_future_free(f);
        assert_int_equal(read_to_eof(fd), 0);
        close(fd);
        close(lfd);
        vl_mysql_free(c);
        finish(loop);
    }
}

/* ---- statements over TLS stay non-blocking ---- */

typedef struct pinger {
    vl_loop *loop;
    vl_mysql *c;
    const int *stop;
    long during; /* pings completed while the TLS statement ran */
    int pending;
} pinger;

static void ping_next(pinger *p);

static void ping_cb(vl_future *f, void *ud)
{
    pinger *p = ud;

    assert_int_equal(vl_future_status(f), VL_OK);
    p->pending = 0;
    if (!*p->stop) {
        p->during++;
        ping_next(p);
    }
}

static void ping_next(pinger *p)
{
    p->pending = 1;
    assert_int_equal(vl_future_then(vl_mysql_ping(p->c), ping_cb, p), VL_OK);
}

typedef struct big_rec {
    int done;
    int status;
    size_t rows;
    int all_x;
} big_rec;

static void big_cb(vl_future *f, void *ud)
{
    big_rec *b = ud;
    const vl_mysql_result *r = vl_future_mysql_result(f);
    size_t i, len;

    b->done = 1;
    b->status = vl_future_status(f);
    if (b->status != VL_OK) {
        print_message("big result: %s\n", vl_future_error(f));
        return;
    }
    b->rows = vl_mysql_result_rows(r);
    b->all_x = 1;
    for (i = 0; i < b->rows; i++) {
        const char *v = vl_mysql_result_value(r, i, 1, &len);
        if (v == NULL || len != 1048576 || v[0] != 'x' || v[len - 1] != 'x')
            b->all_x = 0;
    }
}

/* A result of 8 MiB over TLS, produced with pauses on the server: while
 * the TLS connection waits for its rows, the loop keeps serving a plain
 * connection's pings. Were a read over TLS to block (OpenSSL on a blocking
 * socket), none would complete until the result was in. */
static void large_result_leaves_the_loop_free(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *tls = connect_ok(loop, tls_url("127.0.0.1", with_ca("VL_TEST_TLS_CA", "")));
    char plain_url[512];
    vl_mysql *plain;
    big_rec big = {0, 0, 0, 0};
    pinger p;

    (void)state;
    snprintf(plain_url, sizeof(plain_url), "mysql://%s:%s@127.0.0.1:%s/%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"));
    plain = connect_ok(loop, plain_url);
    memset(&p, 0, sizeof(p));
    p.loop = loop;
    p.c = plain;
    p.stop = &big.done;
    vl_future_then(vl_mysql_query(tls, "SELECT SLEEP(0.05), REPEAT('x', 1048576) "
                                       "FROM seq_1_to_8"),
                   big_cb, &big);
    ping_next(&p);
    while (!big.done)
        tu_sleep_ms(loop, 5);
    assert_int_equal(big.status, VL_OK);
    assert_int_equal(big.rows, 8);
    assert_true(big.all_x);
    assert_true(p.during >= 1);
    print_message("# pings completed during the TLS result: %ld\n", p.during);
    while (p.pending)
        tu_sleep_ms(loop, 5);
    /* The TLS connection is still clean and usable. */
    vl_future_free(tu_run_cmd(loop, vl_mysql_query(tls, "SELECT 1"), VL_OK));
    vl_mysql_free(tls);
    vl_mysql_free(plain);
    finish(loop);
}

/* ---- a pool over TLS ---- */

typedef struct pool_rec {
    int ok;
    int failed;
    int calls;
} pool_rec;

static void pool_cb(vl_future *f, void *ud)
{
    pool_rec *r = ud;

    r->calls++;
    if (vl_future_status(f) == VL_OK)
        r->ok++;
    else if (r->failed++ == 0)
        print_message("pooled query: %s\n", vl_future_error(f));
}

/* 1,000 statements through a pool whose connections connect through TLS
 * (the account requires it): each completes exactly once. */
static void pool_over_tls(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    pool_rec r = {0, 0, 0};
    vl_pool_stats st;
    vl_future *f;
    int i;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 2;
    o.acquire_timeout_ms = tu_ms(30000);
    p = vl_mysql_pool_new(loop,
                          url_for("localhost", tu_env("VL_TEST_MYSQL_PORT"),
                                  tu_env("VL_TEST_MYSQL_TLS_USER"),
                                  tu_env("VL_TEST_MYSQL_TLS_PASSWORD"),
                                  with_ca("VL_TEST_TLS_CA", "")),
                          &o);
    assert_non_null(p);
    f = tu_wait_for(loop, vl_mysql_pool_ready(p));
    if (vl_future_status(f) != VL_OK)
        fail_msg("pool ready: %s", vl_future_error(f));
    vl_future_free(f);
    for (i = 0; i < 1000; i++)
        assert_int_equal(vl_future_then(vl_mysql_pool_query(p, "SELECT 1"),
                                        pool_cb, &r),
                         VL_OK);
    vl_loop_run(loop);
    assert_int_equal(r.calls, 1000);
    assert_int_equal(r.ok, 1000);
    assert_int_equal(r.failed, 0);
    vl_pool_stats_init(&st);
    assert_int_equal(vl_mysql_pool_stats_get(p, &st), VL_OK);
    assert_true(st.connects >= 2 && st.connects <= 4);
    assert_int_equal(st.connect_failures, 0);
    vl_mysql_pool_free(p);
    finish(loop);
    assert_int_equal(r.calls, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(modes_that_connect, tu_setup),
        cmocka_unit_test_setup(cipher_and_client_certificate, tu_setup),
        cmocka_unit_test_setup(modes_that_refuse, tu_setup),
        cmocka_unit_test_setup(deadline_while_the_worker_is_blocked, tu_setup),
        cmocka_unit_test_setup(free_while_the_worker_is_blocked, tu_setup),
        cmocka_unit_test_setup(tls_connect_nobody_waits_for, tu_setup),
        cmocka_unit_test_setup(loop_free_while_the_worker_is_blocked, tu_setup),
        cmocka_unit_test_setup(no_login_to_a_server_without_tls, tu_setup),
        cmocka_unit_test_setup(large_result_leaves_the_loop_free, tu_setup),
        cmocka_unit_test_setup(pool_over_tls, tu_setup),
    };

    return tu_run("mysql_tls_connect", tests, sizeof(tests) / sizeof(tests[0]));
}
