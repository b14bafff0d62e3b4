/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_tls.c - MySQL over TLS (the "---- TLS ----" contract of
 * volley/mysql.h) against the harness's main mariadbd, which serves
 * tls/server.crt (SAN DNS:localhost, IP:127.0.0.1) signed by tls/ca.crt:
 * verification by chain and by name, the REQUIRE SSL and REQUIRE X509
 * accounts, the modes and the parameters refused, many statements and
 * large results over one TLS connection and a pool, a TLS connect that
 * hangs, and a connection freed while its TLS connect is in progress.
 *
 * A getaddrinfo interposer sits in front of the C library's (the library
 * is linked in statically, Connector/C calls through the same symbol):
 * "wrong.volley.test" resolves to 127.0.0.1, a name the server's
 * certificate does not carry. Every other name goes to the C library.
 */
#include "testutil.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WRONG_HOST "wrong.volley.test"

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

    *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    if (node != NULL && strcmp(node, WRONG_HOST) == 0)
        node = "127.0.0.1";
    return real(node, service, hints, res);
}

/* The password of the account `user` (one of the harness's). */
static const char *password_of(const char *user)
{
    if (strcmp(user, tu_env("VL_TEST_MYSQL_TLS_USER")) == 0)
        return tu_env("VL_TEST_MYSQL_TLS_PASSWORD");
    if (strcmp(user, tu_env("VL_TEST_MYSQL_X509_USER")) == 0)
        return tu_env("VL_TEST_MYSQL_X509_PASSWORD");
    return tu_env("VL_TEST_MYSQL_PASSWORD");
}

/* "mysql://USER:PW@HOST:PORT/DB?PARAMS" into a rotating static buffer. The
 * parameters are a printf format, so that paths can be spliced in. */
static const char *url_of(const char *user, const char *host, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *url_of(const char *user, const char *host, const char *fmt, ...)
{
    static char buf[4][1024];
    static int slot;
    char *out = buf[slot++ % 4];
    char params[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(params, sizeof(params), fmt, ap);
    va_end(ap);
    /* The default connect timeout (5 s), stretched like every test time
     * (VL_TEST_TIME_SCALE): a TLS handshake under valgrind is slow. */
    if (strstr(params, "connect_timeout_ms=") == NULL)
        snprintf(params + strlen(params), sizeof(params) - strlen(params),
                 "%sconnect_timeout_ms=%llu", params[0] ? "&" : "",
                 (unsigned long long)tu_ms(5000));
    snprintf(out, 1024, "mysql://%s:%s@%s:%s/%s%s%s", user, password_of(user), host,
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"), params[0] ? "?" : "",
             params);
    return out;
}

static const char *test_user(void)
{
    return tu_env("VL_TEST_MYSQL_USER");
}

static const char *ca(void)
{
    return tu_env("VL_TEST_TLS_CA");
}

static const char *other_ca(void)
{
    return tu_env("VL_TEST_TLS_OTHER_CA");
}

/* Connects and fails the test unless the connect succeeded. */
static vl_mysql *connect_ok(vl_loop *loop, const char *url)
{
    vl_mysql *c = vl_mysql_new(loop, url, NULL);
    vl_future *f;

    assert_non_null(c);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    if (vl_future_status(f) != VL_OK)
        fail_msg("connect %s: %s (errno %u)", vl_mysql_display(c), vl_future_error(f),
                 vl_future_mysql_errno(f));
    vl_future_free(f);
    assert_true(vl_mysql_is_open(c));
    return c;
}

/* Connects and returns the finished vl_mysql_ready future (the caller's),
 * with the connection in *out. */
static vl_future *connect_result(vl_loop *loop, const char *url, vl_mysql **out)
{
    *out = vl_mysql_new(loop, url, NULL);
    assert_non_null(*out);
    return tu_wait_for(loop, vl_mysql_ready(*out));
}

/* Runs `sql` on c and copies column `col` of its first row into buf ("" for
 * NULL or no row). */
static const char *query_cell(vl_loop *loop, vl_mysql *c, const char *sql, size_t col, char *buf,
                              size_t cap)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_query(c, sql));
    const vl_mysql_result *r;
    const char *v = NULL;
    size_t len = 0;

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s: %s", sql, vl_future_error(f));
    r = vl_future_mysql_result(f);
    if (vl_mysql_result_rows(r) > 0)
        v = vl_mysql_result_value(r, 0, col, &len);
    snprintf(buf, cap, "%.*s", v != NULL ? (int)len : 0, v != NULL ? v : "");
    vl_future_free(f);
    return buf;
}

/* The session's cipher as the server sees it: "" for a plain session. */
static const char *cipher_of(vl_loop *loop, vl_mysql *c, char *buf, size_t cap)
{
    return query_cell(loop, c, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", 1, buf, cap);
}

static void assert_encrypted(vl_loop *loop, vl_mysql *c)
{
    char cipher[128];

    if (cipher_of(loop, c, cipher, sizeof(cipher))[0] == '\0')
        fail_msg("%s: the session is not encrypted (Ssl_cipher is empty)", vl_mysql_display(c));
}

/* Connects, asserts the session is encrypted, and frees the connection. */
static void connects_encrypted(vl_loop *loop, const char *url)
{
    vl_mysql *c = connect_ok(loop, url);

    assert_encrypted(loop, c);
    vl_mysql_free(c);
}

/* Asserts a connect failed with `status` and, if errno_want is not 0, that
 * MySQL errno; and that the message contains `needle` if not NULL and no
 * password. Frees the future and the connection. */
static void assert_connect_fails(vl_loop *loop, const char *url, int status, unsigned errno_want,
                                 const char *needle)
{
    vl_mysql *c;
    vl_future *f = connect_result(loop, url, &c);
    const char *msg = vl_future_error(f);

    if (vl_future_status(f) != status)
        fail_msg("connect %s: status %d (%s), wanted %d", vl_mysql_display(c), vl_future_status(f),
                 msg, status);
    if (errno_want != 0 && vl_future_mysql_errno(f) != errno_want)
        fail_msg("connect %s: errno %u (%s), wanted %u", vl_mysql_display(c),
                 vl_future_mysql_errno(f), msg, errno_want);
    if (needle != NULL && strstr(msg, needle) == NULL)
        fail_msg("connect %s: the message does not say \"%s\": %s", vl_mysql_display(c), needle,
                 msg);
    assert_null(strstr(msg, password_of(test_user())));
    assert_null(strstr(msg, tu_env("VL_TEST_MYSQL_TLS_PASSWORD")));
    assert_false(vl_mysql_is_open(c));
    vl_future_free(f);
    vl_mysql_free(c);
}

/* Without ssl-* parameters a connection stays plain, although the server
 * offers TLS. */
static void plain_stays_plain(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    char cipher[128];

    (void)state;
    c = connect_ok(loop, url_of(test_user(), "127.0.0.1", "%s", ""));
    assert_string_equal(cipher_of(loop, c, cipher, sizeof(cipher)), "");
    vl_mysql_free(c);
    c = connect_ok(loop, url_of(test_user(), "127.0.0.1", "ssl-mode=disabled"));
    assert_string_equal(cipher_of(loop, c, cipher, sizeof(cipher)), "");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* ssl-ca alone means verify-identity: the chain and the name (the IP
 * address and DNS name the certificate carries) are checked, and the
 * session is encrypted. */
static void verify_identity(void **state)
{
    vl_loop *loop = vl_loop_new();

    (void)state;
    connects_encrypted(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s", ca()));
    connects_encrypted(
        loop, url_of(test_user(), "localhost", "ssl-mode=verify-identity&ssl-ca=%s", ca()));
    connects_encrypted(
        loop, url_of(test_user(), "127.0.0.1", "ssl-verify-server-cert=1&ssl-ca=%s", ca()));
    tu_loop_finish(loop);
}

/* ssl-capath: a directory of hashed CA certificates (openssl rehash). The
 * directories live in the harness's directory, which the runner removes. */
static void verify_with_capath(void **state)
{
    vl_loop *loop = vl_loop_new();
    char good[512], bad[512];

    (void)state;
    snprintf(good, sizeof(good), "%s/capath-ca", tu_env("VL_TEST_DIR"));
    snprintf(bad, sizeof(bad), "%s/capath-other-ca", tu_env("VL_TEST_DIR"));
    assert_int_equal(tu_sh("mkdir -p '%s' '%s' && cp '%s' '%s/ca.pem' && cp '%s' '%s/ca.pem' && "
                           "openssl rehash '%s' '%s'",
                           good, bad, ca(), good, other_ca(), bad, good, bad),
                     0);
    connects_encrypted(loop, url_of(test_user(), "127.0.0.1", "ssl-capath=%s", good));
    assert_connect_fails(loop, url_of(test_user(), "127.0.0.1", "ssl-capath=%s", bad), VL_ECONN,
                         2026, NULL);
    tu_loop_finish(loop);
}

/* The REQUIRE SSL account logs in over TLS, and is refused without. */
static void require_ssl_account(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *user = tu_env("VL_TEST_MYSQL_TLS_USER");
    char want[256], who[256];
    vl_mysql *c;

    (void)state;
    c = connect_ok(loop, url_of(user, "127.0.0.1", "ssl-ca=%s", ca()));
    snprintf(want, sizeof(want), "%s@127.0.0.1", user);
    assert_string_equal(query_cell(loop, c, "SELECT CURRENT_USER()", 0, who, sizeof(who)), want);
    assert_encrypted(loop, c);
    vl_mysql_free(c);
    assert_connect_fails(loop, url_of(user, "127.0.0.1", "%s", ""), VL_ECONN, 1045, NULL);
    assert_connect_fails(loop, url_of(user, "127.0.0.1", "ssl-mode=disabled"), VL_ECONN, 1045,
                         NULL);
    tu_loop_finish(loop);
}

/* The REQUIRE X509 account logs in with the client certificate signed by
 * the CA, and is refused with TLS but no certificate. */
static void x509_account(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *user = tu_env("VL_TEST_MYSQL_X509_USER");
    char want[256], who[256];
    vl_mysql *c;

    (void)state;
    c = connect_ok(loop,
                   url_of(user, "127.0.0.1", "ssl-ca=%s&ssl-cert=%s&ssl-key=%s", ca(),
                          tu_env("VL_TEST_TLS_CLIENT_CERT"), tu_env("VL_TEST_TLS_CLIENT_KEY")));
    snprintf(want, sizeof(want), "%s@127.0.0.1", user);
    assert_string_equal(query_cell(loop, c, "SELECT CURRENT_USER()", 0, who, sizeof(who)), want);
    assert_encrypted(loop, c);
    vl_mysql_free(c);
    assert_connect_fails(loop, url_of(user, "127.0.0.1", "ssl-ca=%s", ca()), VL_ECONN, 1045, NULL);
    tu_loop_finish(loop);
}

/* A server certificate that does not chain to the trusted CA: VL_ECONN,
 * errno 2026, and OpenSSL's reason in the message; the same with the older
 * spelling, and with verify-ca. */
static void wrong_ca(void **state)
{
    vl_loop *loop = vl_loop_new();

    (void)state;
    assert_connect_fails(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s", other_ca()), VL_ECONN,
                         2026, "certificate");
    assert_connect_fails(
        loop, url_of(test_user(), "127.0.0.1", "ssl-mode=verify-ca&ssl-ca=%s", other_ca()),
        VL_ECONN, 2026, "certificate");
    assert_connect_fails(
        loop, url_of(test_user(), "127.0.0.1", "ssl-verify-server-cert=1&ssl-ca=%s", other_ca()),
        VL_ECONN, 2026, "certificate");
    tu_loop_finish(loop);
}

/* A host name the certificate does not name fails verify-identity, though
 * the chain is good; verify-ca, which checks the chain only, connects. */
static void wrong_host_name(void **state)
{
    vl_loop *loop = vl_loop_new();

    (void)state;
    assert_connect_fails(loop, url_of(test_user(), WRONG_HOST, "ssl-ca=%s", ca()), VL_ECONN, 2026,
                         "certificate");
    assert_connect_fails(
        loop, url_of(test_user(), WRONG_HOST, "ssl-mode=verify-identity&ssl-ca=%s", ca()), VL_ECONN,
        2026, "certificate");
    connects_encrypted(loop, url_of(test_user(), WRONG_HOST, "ssl-mode=verify-ca&ssl-ca=%s", ca()));
    tu_loop_finish(loop);
}

/* ssl-mode=required encrypts without verifying: the wrong CA and a wrong
 * name connect. So does ssl-verify-server-cert=0. */
static void required_is_not_verified(void **state)
{
    vl_loop *loop = vl_loop_new();

    (void)state;
    connects_encrypted(loop,
                       url_of(test_user(), "127.0.0.1", "ssl-mode=required&ssl-ca=%s", other_ca()));
    connects_encrypted(loop, url_of(test_user(), WRONG_HOST, "ssl-mode=required"));
    connects_encrypted(
        loop, url_of(test_user(), "127.0.0.1", "ssl-verify-server-cert=0&ssl-ca=%s", other_ca()));
    tu_loop_finish(loop);
}

/* tls-version picks the protocol version the session runs. */
static void tls_version(void **state)
{
    vl_loop *loop = vl_loop_new();
    char v[64];
    vl_mysql *c;

    (void)state;
    c = connect_ok(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s&tls-version=TLSv1.2", ca()));
    assert_string_equal(
        query_cell(loop, c, "SHOW SESSION STATUS LIKE 'Ssl_version'", 1, v, sizeof(v)), "TLSv1.2");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* ssl-mode=preferred (a silent fallback to clear text) and unknown ssl-* or
 * tls-* parameters are refused with VL_EINVAL, and so is a mode nobody
 * knows; each message names the parameter. Nothing is even attempted: a
 * listener that the refused URLs point at never sees a connection. */
static void refused_parameters(void **state)
{
    static const char *const params[] = {"ssl-mode=preferred&ssl-ca=%s", "ssl-mode=preferred",
                                         "ssl-foo=1&ssl-ca=%s", "tls-foo=1",
                                         "ssl-mode=sometimes&ssl-ca=%s"};
    static const char *const named[] = {"ssl-mode", "ssl-mode", "ssl-foo", "tls-foo", "ssl-mode"};
    vl_loop *loop = vl_loop_new();
    int port, fd = tu_silent_listener(&port), i;
    char url[1024], fmt[256];

    (void)state;
    for (i = 0; i < (int)(sizeof(params) / sizeof(params[0])); i++) {
        snprintf(fmt, sizeof(fmt), "mysql://%s:%s@127.0.0.1:%d/%s?%s", test_user(),
                 password_of(test_user()), port, tu_env("VL_TEST_MYSQL_DB"), params[i]);
        snprintf(url, sizeof(url), fmt, ca());
        assert_connect_fails(loop, url, VL_EINVAL, 0, named[i]);
    }
    /* The listener's queue is empty: accept would block. */
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(accept(fd, NULL, NULL), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    close(fd);
    tu_loop_finish(loop);
}

/* ---- many statements over TLS ---- */

#define NSTMT 2000

/* One expected answer and how often its callback ran. */
typedef struct slot {
    int want;
    int calls;
    int status;
    int order; /* the how-many-th callback this was */
    int *seen; /* the shared callback counter */
} slot;

static void slot_cb(vl_future *f, void *ud)
{
    slot *s = ud;
    int64_t v = -1;

    s->calls++;
    s->order = (*s->seen)++;
    s->status = vl_future_status(f);
    if (s->status == VL_OK &&
        (vl_mysql_result_int64(vl_future_mysql_result(f), 0, 0, &v) != VL_OK || v != s->want))
        s->status = VL_EPROTO; /* the wrong answer: reported below */
}

/* Queues NSTMT "SELECT n" through `query` (a connection or a pool) and
 * checks that each completed exactly once, with its own n; in order when
 * `fifo`. */
static void many_selects(vl_loop *loop, vl_future *(*query)(void *, const char *), void *h,
                         int fifo)
{
    slot *s = calloc(NSTMT, sizeof(*s));
    int i, seen = 0;

    assert_non_null(s);
    for (i = 0; i < NSTMT; i++) {
        char sql[64];
        vl_future *f;
        snprintf(sql, sizeof(sql), "SELECT %d", i * 7 + 1);
        s[i].want = i * 7 + 1;
        s[i].seen = &seen;
        f = query(h, sql);
        assert_non_null(f);
        assert_int_equal(vl_future_then(f, slot_cb, &s[i]), VL_OK);
    }
    vl_loop_run(loop);
    assert_int_equal(seen, NSTMT);
    for (i = 0; i < NSTMT; i++) {
        if (s[i].calls != 1 || s[i].status != VL_OK)
            fail_msg("statement %d: %d callbacks, status %d", i, s[i].calls, s[i].status);
        if (fifo)
            assert_int_equal(s[i].order, i);
    }
    free(s);
}

static vl_future *conn_query(void *h, const char *sql)
{
    return vl_mysql_query(h, sql);
}

static vl_future *pool_query(void *h, const char *sql)
{
    return vl_mysql_pool_query(h, sql);
}

/* A result of `rows` rows of `width` bytes each, over TLS: every byte is
 * the one the server computed, so the TLS records that spanned many reads
 * were put back together right. */
static void check_wide_result(vl_loop *loop, vl_mysql *c, int rows, int width)
{
    char sql[160];
    vl_future *f;
    const vl_mysql_result *r;
    int i;

    snprintf(sql, sizeof(sql),
             "SELECT seq, REPEAT(CHAR(65 + seq %% 26), %d) FROM seq_1_to_%d ORDER BY seq", width,
             rows);
    f = tu_wait_for(loop, vl_mysql_query(c, sql));
    if (vl_future_status(f) != VL_OK)
        fail_msg("%s: %s", sql, vl_future_error(f));
    r = vl_future_mysql_result(f);
    assert_int_equal(vl_mysql_result_rows(r), rows);
    for (i = 0; i < rows; i++) {
        size_t len;
        const char *v = vl_mysql_result_value(r, (size_t)i, 1, &len);
        char want = (char)(65 + (i + 1) % 26);
        size_t k;
        assert_non_null(v);
        assert_int_equal(len, width);
        for (k = 0; k < len; k++)
            if (v[k] != want)
                fail_msg("row %d byte %zu is %d, not %d", i, k, v[k], want);
    }
    vl_future_free(f);
}

/* NSTMT statements queued on one TLS connection complete once each, in
 * order; then a 5 MB result of 5,000 rows and an 8 MiB single cell. */
static void many_statements_one_connection(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;

    (void)state;
    c = connect_ok(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s", ca()));
    assert_encrypted(loop, c);
    many_selects(loop, conn_query, c, 1);
    check_wide_result(loop, c, 5000, 1000);
    check_wide_result(loop, c, 1, 8 << 20);
    assert_encrypted(loop, c);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* The same through a pool of TLS connections: every statement once, every
 * pooled connection encrypted. */
static void many_statements_pool(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_future *f[8];
    int i;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 4;
    p = vl_mysql_pool_new(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s", ca()), &o);
    assert_non_null(p);
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_OK));
    many_selects(loop, pool_query, p, 0);
    /* Eight at once keep all four connections busy: each says it is
     * encrypted. */
    for (i = 0; i < 8; i++)
        f[i] = vl_mysql_pool_query(p, "SELECT VARIABLE_VALUE FROM information_schema"
                                      ".SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'");
    for (i = 0; i < 8; i++) {
        size_t len = 0;
        const char *v;
        tu_wait_for(loop, f[i]);
        if (vl_future_status(f[i]) != VL_OK)
            fail_msg("Ssl_cipher: %s", vl_future_error(f[i]));
        v = vl_mysql_result_value(vl_future_mysql_result(f[i]), 0, 0, &len);
        assert_non_null(v);
        assert_true(len > 0);
        vl_future_free(f[i]);
    }
    vl_mysql_pool_free(p);
    tu_loop_finish(loop);
}

/* ---- a TLS connect that hangs ---- */

/* A TLS connect to a port that accepts TCP and then says nothing fails with
 * VL_ETIMEDOUT, not before its deadline; meanwhile another TLS connection
 * on the same loop connects and runs its statements. */
static void hung_tls_connect_times_out(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, fd = tu_silent_listener(&port);
    uint64_t deadline = tu_ms(1500), t0;
    char url[1024];
    vl_mysql *hung, *c;
    vl_future *fh, *f;
    int i;

    (void)state;
    snprintf(url, sizeof(url), "mysql://%s:%s@127.0.0.1:%d/%s?ssl-ca=%s&connect_timeout_ms=%llu",
             test_user(), password_of(test_user()), port, tu_env("VL_TEST_MYSQL_DB"), ca(),
             (unsigned long long)deadline);
    t0 = vl_loop_now_ms(loop);
    hung = vl_mysql_new(loop, url, NULL);
    assert_non_null(hung);
    fh = vl_mysql_ready(hung);
    assert_non_null(fh);

    c = connect_ok(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s", ca()));
    for (i = 0; i < 20; i++) {
        f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1"));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
    }
    assert_encrypted(loop, c);
    /* All that happened while the hung connect was still waiting. */
    assert_false(vl_future_done(fh));

    tu_wait_for(loop, fh);
    assert_int_equal(vl_future_status(fh), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(fh), "timed out"));
    assert_true(vl_loop_now_ms(loop) - t0 >= deadline);
    assert_false(vl_mysql_is_open(hung));
    vl_future_free(fh);
    vl_mysql_free(hung);
    vl_mysql_free(c);
    close(fd);
    tu_loop_finish(loop);
    tu_workers_gone(); /* the hung connect's worker returns once fd is closed */
}

/* ---- freeing a connection while its TLS connect runs ---- */

typedef struct outcome {
    int calls;
    int status;
} outcome;

static void outcome_cb(vl_future *f, void *ud)
{
    outcome *o = ud;

    o->calls++;
    o->status = vl_future_status(f);
}

/* Frees `c` after `wait_ms` of loop time and checks that its ready future
 * and a queued statement completed with VL_ECANCELED, once each. Closes
 * `fd` (if not -1) right after the free: closing the silent listener
 * resets the connection a worker may still be blocked on, so that nothing
 * waits for the connect's deadline. */
static void free_while_connecting(vl_loop *loop, vl_mysql *c, uint64_t wait_ms, int fd)
{
    outcome ready = {0, 0}, stmt = {0, 0};

    assert_int_equal(vl_future_then(vl_mysql_ready(c), outcome_cb, &ready), VL_OK);
    assert_int_equal(vl_future_then(vl_mysql_query(c, "SELECT 1"), outcome_cb, &stmt), VL_OK);
    if (wait_ms > 0)
        tu_sleep_ms(loop, wait_ms);
    assert_int_equal(ready.calls, 0);
    vl_mysql_free(c);
    if (fd >= 0)
        close(fd);
    vl_loop_run(loop);
    assert_int_equal(ready.calls, 1);
    assert_int_equal(ready.status, VL_ECANCELED);
    assert_int_equal(stmt.calls, 1);
    assert_int_equal(stmt.status, VL_ECANCELED);
}

/* Freed while the TLS connect waits for a server that never answers, and
 * freed at once, while the connect to the real server is under way: the
 * futures are cancelled, and nothing leaks (tu_loop_finish, and ASan at
 * exit). */
static void free_during_tls_connect(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, fd = tu_silent_listener(&port);
    char url[1024];
    vl_mysql *c;

    (void)state;
    snprintf(url, sizeof(url), "mysql://%s:%s@127.0.0.1:%d/%s?ssl-ca=%s&connect_timeout_ms=%llu",
             test_user(), password_of(test_user()), port, tu_env("VL_TEST_MYSQL_DB"), ca(),
             (unsigned long long)tu_ms(10000));
    c = vl_mysql_new(loop, url, NULL);
    assert_non_null(c);
    free_while_connecting(loop, c, 100, fd);

    c = vl_mysql_new(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s", ca()), NULL);
    assert_non_null(c);
    free_while_connecting(loop, c, 0, -1);

    /* The loop is still fit for a TLS connection afterwards. */
    connects_encrypted(loop, url_of(test_user(), "127.0.0.1", "ssl-ca=%s", ca()));
    tu_loop_finish(loop);
    tu_workers_gone();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(plain_stays_plain, tu_setup),
        cmocka_unit_test_setup(verify_identity, tu_setup),
        cmocka_unit_test_setup(verify_with_capath, tu_setup),
        cmocka_unit_test_setup(require_ssl_account, tu_setup),
        cmocka_unit_test_setup(x509_account, tu_setup),
        cmocka_unit_test_setup(wrong_ca, tu_setup),
        cmocka_unit_test_setup(wrong_host_name, tu_setup),
        cmocka_unit_test_setup(required_is_not_verified, tu_setup),
        cmocka_unit_test_setup(tls_version, tu_setup),
        cmocka_unit_test_setup(refused_parameters, tu_setup),
        cmocka_unit_test_setup(many_statements_one_connection, tu_setup),
        cmocka_unit_test_setup(many_statements_pool, tu_setup),
        cmocka_unit_test_setup(hung_tls_connect_times_out, tu_setup),
        cmocka_unit_test_setup(free_during_tls_connect, tu_setup),
    };

    return tu_run("mysql_tls", tests, sizeof(tests) / sizeof(tests[0]));
}
