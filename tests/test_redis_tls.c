/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_tls.c - rediss:// through the public API: connections,
 * pools and fan-out over TLS against the TLS redis-servers of
 * tests/servers.sh, and every way verification or the handshake can fail,
 * each a VL_ECONN with a message that says why. */
#include "testutil.h"

#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* OpenSSL reads the CA file with fopen: count the times it does. */
static int ca_opens;

FILE *fopen(const char *path, const char *mode)
{
    FILE *(*real)(const char *, const char *);
    size_t n = path != NULL ? strlen(path) : 0;

    if (n >= 7 && strcmp(path + n - 7, "/ca.crt") == 0)
        ca_opens++;
    *(void **)&real = dlsym(RTLD_NEXT, "fopen");
    return real(path, mode);
}

/* rediss://HOST:PORT?cacert=DIR/ca.crt<extra> for the server of env `port`. */
static const char *tls_url(const char *host, const char *port_env, const char *extra)
{
    static char url[4][512];
    static int k;
    char *u = url[k++ % 4];

    snprintf(u, 512, "rediss://%s:%s?cacert=%s/ca.crt%s", host, tu_env(port_env),
             tu_env("VL_TEST_TLS_DIR"), extra);
    return u;
}

static vl_redis *tls_new(vl_loop *loop, const char *url)
{
    vl_redis_options o;

    vl_redis_options_init(&o);
    o.reconnect = 0;
    o.connect_timeout_ms = tu_ms(3000);
    o.command_timeout_ms = 0; /* the connect timeout decides, also under valgrind */
    return vl_redis_new(loop, url, &o);
}

static void expect_fail(const char *url, const char *want)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = tls_new(loop, url);
    vl_future *f = vl_redis_command(c, "PING");

    assert_int_equal(tu_await(loop, f), VL_ECONN);
    if (strstr(vl_future_error(f), want) == NULL) {
        fprintf(stderr, "error: %s\nwanted: %s\n", vl_future_error(f), want);
        fail();
    }
    assert_null(strstr(vl_future_error(f), "cacert")); /* the URL's display has no query */
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* Round trips, a value bigger than many TLS records both ways, pipelining,
 * and the client name in CLIENT LIST. */
static void round_trips(void **state)
{
    enum { N = 2000, BIG = 3 * 1024 * 1024 + 17 };
    vl_loop *loop = vl_loop_new();
    vl_redis *c = tls_new(loop, tls_url("localhost", "VL_TEST_REDIS_TLS_PORT", "&name=tls-test"));
    vl_future *fs[N], *f;
    char *big = malloc(BIG), key[32];
    const char *argv[3] = {"SET", "tls:big", NULL};
    size_t lens[3] = {3, 7, BIG}, len;
    const char *s;
    int i;

    (void)state;
    assert_non_null(big);
    for (i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    argv[2] = big;
    vl_future_free(tu_run_cmd(loop, vl_redis_command_argv(c, 3, argv, lens), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "GET tls:big"), VL_OK);
    s = vl_redis_reply_str(vl_future_redis_reply(f), &len);
    assert_int_equal(len, BIG);
    assert_memory_equal(s, big, BIG);
    vl_future_free(f);
    for (i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "tls:k%d", i);
        fs[i] = vl_redis_command(c, "SET %s %d", key, i);
    }
    for (i = 0; i < N; i++) {
        assert_int_equal(tu_await(loop, fs[i]), VL_OK);
        vl_future_free(fs[i]);
    }
    for (i = 0; i < N; i++)
        fs[i] = vl_redis_command(c, "GET tls:k%d", i);
    for (i = 0; i < N; i++) {
        char want[16];
        assert_int_equal(tu_await(loop, fs[i]), VL_OK);
        snprintf(want, sizeof(want), "%d", i);
        tu_check_str(vl_future_redis_reply(fs[i]), want);
        vl_future_free(fs[i]);
    }
    f = tu_run_cmd(loop, vl_redis_command(c, "CLIENT GETNAME"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "tls-test");
    vl_future_free(f);
    free(big);
    vl_redis_free(c);
    tu_finish(loop);
}

/* A pool and a fan-out over rediss://, by IP address this time. */
static void pool_and_fanout(void **state)
{
    enum { N = 500 };
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options po;
    vl_redis_pool *p;
    vl_future *fs[N], *f;
    const char *hosts[3];
    int i;

    (void)state;
    vl_redis_pool_options_init(&po);
    po.max_size = 4;
    p = vl_redis_pool_new(loop, tls_url("127.0.0.1", "VL_TEST_REDIS_TLS_PORT", ""), &po);
    assert_non_null(p);
    for (i = 0; i < N; i++)
        fs[i] = vl_redis_pool_command(p, "INCR tls:pool:%d", (int)getpid());
    for (i = 0; i < N; i++) {
        assert_int_equal(tu_await(loop, fs[i]), VL_OK);
        vl_future_free(fs[i]);
    }
    f = tu_run_cmd(loop, vl_redis_pool_command(p, "GET tls:pool:%d", (int)getpid()), VL_OK);
    {
        char want[16];
        snprintf(want, sizeof(want), "%d", N);
        tu_check_str(vl_future_redis_reply(f), want);
    }
    vl_future_free(f);
    vl_redis_pool_free(p);
    /* Fan-out: the TLS server, the mTLS one with a client certificate, and a
     * plain one side by side. */
    hosts[0] = tls_url("127.0.0.1", "VL_TEST_REDIS_TLS_PORT", "");
    {
        static char m[600];
        snprintf(m, sizeof(m), "%s&cert=%s/client.crt&key=%s/client.key",
                 tls_url("localhost", "VL_TEST_REDIS_MTLS_PORT", ""), tu_env("VL_TEST_TLS_DIR"),
                 tu_env("VL_TEST_TLS_DIR"));
        hosts[1] = m;
    }
    hosts[2] = tu_redis_url(0);
    {
        static const char *const ping[1] = {"PING"};
        f = vl_fanout_redis(loop, hosts, 3, 1, ping, NULL, NULL);
    }
    assert_int_equal(tu_await(loop, f), VL_OK);
    {
        const vl_fanout_result *r = vl_future_fanout(f);
        assert_non_null(r);
        for (i = 0; i < 3; i++) {
            if (vl_fanout_status(r, (size_t)i) != VL_OK)
                fprintf(stderr, "host %d: %s\n", i, vl_fanout_error(r, (size_t)i));
            assert_int_equal(vl_fanout_status(r, (size_t)i), VL_OK);
        }
    }
    vl_future_free(f);
    tu_finish(loop);
}

/* A pool's connections share one TLS context: the CA file is read once,
 * not once per connection. */
static void pool_shares_context(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options po;
    vl_redis_pool *p;
    vl_pool_stats st;
    vl_future *fs[64];
    int i;

    (void)state;
    vl_redis_pool_options_init(&po);
    po.max_size = 8;
    po.min_idle = 8;
    ca_opens = 0;
    p = vl_redis_pool_new(loop, tls_url("localhost", "VL_TEST_REDIS_TLS_PORT", ""), &po);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    for (i = 0; i < 64; i++)
        fs[i] = vl_redis_pool_command(p, "PING");
    for (i = 0; i < 64; i++) {
        assert_int_equal(tu_await(loop, fs[i]), VL_OK);
        vl_future_free(fs[i]);
    }
    vl_pool_stats_init(&st);
    assert_int_equal(vl_redis_pool_stats_get(p, &st), VL_OK);
    assert_int_equal(st.open, 8);
    /* Once when the pool checks its URL, once for the context all eight
     * share (one per connection would make nine). */
    assert_true(ca_opens >= 1 && ca_opens <= 2);
    vl_redis_pool_free(p);
    tu_finish(loop);
}

static void client_certificate(void **state)
{
    char url[700];
    vl_loop *loop = vl_loop_new();
    vl_redis *c;

    (void)state;
    snprintf(url, sizeof(url), "%s&cert=%s/client.crt&key=%s/client.key",
             tls_url("localhost", "VL_TEST_REDIS_MTLS_PORT", ""), tu_env("VL_TEST_TLS_DIR"),
             tu_env("VL_TEST_TLS_DIR"));
    c = tls_new(loop, url);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    vl_redis_free(c);
    tu_finish(loop);
    /* Without one, the server refuses it. */
    expect_fail(tls_url("localhost", "VL_TEST_REDIS_MTLS_PORT", ""), "certificate");
}

static void wrong_ca(void **state)
{
    char url[600];

    (void)state;
    snprintf(url, sizeof(url), "rediss://localhost:%s?cacert=%s/other-ca.crt",
             tu_env("VL_TEST_REDIS_TLS_PORT"), tu_env("VL_TEST_TLS_DIR"));
    expect_fail(url, "TLS: certificate verify failed");
}

static void expired(void **state)
{
    (void)state;
    expect_fail(tls_url("localhost", "VL_TEST_REDIS_TLS_EXPIRED_PORT", ""),
                "certificate has expired");
}

static void host_mismatch(void **state)
{
    vl_loop *loop;
    vl_redis *c;

    (void)state;
    expect_fail(tls_url("localhost", "VL_TEST_REDIS_TLS_WRONGHOST_PORT", ""), "host name mismatch");
    /* insecure=1 is the explicit way past it. */
    loop = vl_loop_new();
    c = tls_new(loop, tls_url("localhost", "VL_TEST_REDIS_TLS_WRONGHOST_PORT", "&insecure=1"));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    vl_redis_free(c);
    tu_finish(loop);
}

/* TLS to a plain Redis port: Redis waits for the end of a line that a
 * ClientHello never has, so the handshake stalls and the connect timeout
 * ends it, saying where it stopped. */
static void plain_server(void **state)
{
    char url[600];

    (void)state;
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%s?cacert=%s/ca.crt",
             tu_env_item("VL_TEST_REDIS_PORTS", 0), tu_env("VL_TEST_TLS_DIR"));
    expect_fail(url, "in the TLS handshake");
}

/* A listener that accepts and never says a word: the handshake stalls, and
 * the connect timeout ends it, while the loop keeps serving a plain
 * connection meanwhile (nothing blocks). */
static int listener(int *port)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void stalled_handshake(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c, *plain;
    vl_future *f, *pings[50];
    char url[600];
    uint64_t t0, took;
    int lfd, port, i;

    (void)state;
    lfd = listener(&port);
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d?cacert=%s/ca.crt", port,
             tu_env("VL_TEST_TLS_DIR"));
    vl_redis_options_init(&o);
    o.reconnect = 0;
    o.connect_timeout_ms = 400;
    c = vl_redis_new(loop, url, &o);
    plain = vl_redis_new(loop, tu_redis_url(0), NULL);
    t0 = vl_loop_now_ms(loop);
    f = vl_redis_command(c, "PING");
    for (i = 0; i < 50; i++)
        pings[i] = vl_redis_command(plain, "PING");
    for (i = 0; i < 50; i++) {
        assert_int_equal(tu_await(loop, pings[i]), VL_OK);
        vl_future_free(pings[i]);
    }
    assert_false(vl_future_done(f)); /* the plain connection did not wait for it */
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    took = vl_loop_now_ms(loop) - t0;
    assert_true(took >= 400);
    assert_true(took < tu_ms(3000));
    assert_non_null(strstr(vl_future_error(f), "timed out after 400 ms"));
    assert_non_null(strstr(vl_future_error(f), "TLS handshake"));
    vl_future_free(f);
    vl_redis_free(c);
    vl_redis_free(plain);
    close(lfd);
    tu_finish(loop);
}

/* Killing the TLS server mid-run: everything in flight fails once, and the
 * connection comes back over TLS once the server is back. */
static void server_restart(void **state)
{
    enum { N = 300 };
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c;
    vl_future *fs[N];
    int i, ok = 0, failed = 0;
    char cmd[600];

    (void)state;
    vl_redis_options_init(&o);
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 100;
    c = vl_redis_new(loop, tls_url("localhost", "VL_TEST_REDIS_TLS_PORT", ""), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    for (i = 0; i < N; i++)
        fs[i] = vl_redis_command(c, "INCR tls:restart");
    snprintf(cmd, sizeof(cmd), "%s restart-redis %s tls >/dev/null", tu_env("VL_TEST_SERVERS"),
             tu_env("VL_TEST_DIR"));
    assert_int_equal(system(cmd), 0);
    for (i = 0; i < N; i++) {
        int st = tu_await(loop, fs[i]);
        assert_true(st == VL_OK || st == VL_ECONN);
        ok += st == VL_OK;
        failed += st == VL_ECONN;
        vl_future_free(fs[i]);
    }
    assert_int_equal(ok + failed, N);
    for (i = 0; i < 200; i++) {
        vl_future *f = vl_redis_command(c, "PING");
        int st = tu_await(loop, f);
        vl_future_free(f);
        if (st == VL_OK)
            break;
        tu_sleep_ms(loop, 25);
    }
    assert_true(i < 200);
    vl_redis_free(c);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(round_trips, tu_setup),
        cmocka_unit_test_setup(pool_and_fanout, tu_setup),
        cmocka_unit_test_setup(pool_shares_context, tu_setup),
        cmocka_unit_test_setup(client_certificate, tu_setup),
        cmocka_unit_test_setup(wrong_ca, tu_setup),
        cmocka_unit_test_setup(expired, tu_setup),
        cmocka_unit_test_setup(host_mismatch, tu_setup),
        cmocka_unit_test_setup(plain_server, tu_setup),
        cmocka_unit_test_setup(stalled_handshake, tu_setup),
        cmocka_unit_test_setup(server_restart, tu_setup),
    };

    return tu_run("redis_tls", tests, sizeof(tests) / sizeof(tests[0]));
}
