/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_auth.c - authentication plugins through volley's
 * non-blocking connect, against the harness's main mariadbd: an account
 * IDENTIFIED VIA ed25519 (the server's auth_ed25519, Connector/C's
 * client_ed25519 plugin) logs in, alone, many at once on one loop and
 * through a pool; a wrong password fails with VL_ECONN and errno 1045; and
 * no password, right or wrong, ever shows in a message.
 *
 * caching_sha2_password is MySQL 8's; MariaDB has no server side for it,
 * and Debian has no MySQL server to run, so it is not exercised here.
 */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

/* A wrong password that no message may repeat. */
static const char wrong_pw[] = "no-such-Secret-7f3a";

/* "mysql://USER:PASSWORD@127.0.0.1:PORT/DB" into buf. */
static const char *url_for(char *buf, size_t cap, const char *user, const char *pw)
{
    snprintf(buf, cap, "mysql://%s:%s@127.0.0.1:%s/%s", user, pw, tu_env("VL_TEST_MYSQL_PORT"),
             tu_env("VL_TEST_MYSQL_DB"));
    return buf;
}

static const char *ed_user(void)
{
    return tu_env("VL_TEST_MYSQL_ED25519_USER");
}

static const char *ed_pw(void)
{
    return tu_env("VL_TEST_MYSQL_ED25519_PASSWORD");
}

/* Fails the test if `text` contains either password. */
static void no_password_in(const char *what, const char *text)
{
    assert_non_null(text);
    if (strstr(text, ed_pw()) != NULL || strstr(text, wrong_pw) != NULL ||
        strstr(text, tu_env("VL_TEST_MYSQL_PASSWORD")) != NULL)
        fail_msg("%s contains a password: %s", what, text);
}

/* Asserts that a finished query's single cell is `want`. */
static void check_cell(vl_future *f, const char *want)
{
    const vl_mysql_result *r;
    const char *v;
    size_t len;

    if (vl_future_status(f) != VL_OK)
        fail_msg("query: %s", vl_future_error(f));
    r = vl_future_mysql_result(f);
    assert_non_null(r);
    assert_int_equal(vl_mysql_result_rows(r), 1);
    v = vl_mysql_result_value(r, 0, 0, &len);
    assert_non_null(v);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
}

/* Connects as user:pw and asserts the server's refusal: VL_ECONN, 1045,
 * and no password in any message of the connection. */
static void expect_refused(vl_loop *loop, const char *user, const char *pw)
{
    char url[512];
    vl_mysql *c = vl_mysql_new(loop, url_for(url, sizeof(url), user, pw), NULL);
    vl_future *f;

    assert_non_null(c);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_int_equal(vl_future_mysql_errno(f), 1045);
    no_password_in("vl_future_error", vl_future_error(f));
    no_password_in("vl_mysql_error", vl_mysql_error(c));
    no_password_in("vl_mysql_display", vl_mysql_display(c));
    vl_future_free(f);
    vl_mysql_free(c);
}

/* The ed25519 account logs in through vl_mysql_new + vl_mysql_ready, and
 * the server says the session is that account's. */
static void ed25519_login(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[512], who[256];
    vl_mysql *c;
    vl_future *f;

    (void)state;
    c = vl_mysql_new(loop, url_for(url, sizeof(url), ed_user(), ed_pw()), NULL);
    assert_non_null(c);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    if (vl_future_status(f) != VL_OK)
        fail_msg("connect: %s", vl_future_error(f));
    vl_future_free(f);
    assert_true(vl_mysql_is_open(c));
    no_password_in("vl_mysql_display", vl_mysql_display(c));

    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT CURRENT_USER()"));
    snprintf(who, sizeof(who), "%s@127.0.0.1", ed_user());
    check_cell(f, who);
    vl_future_free(f);

    /* A statement's failure on that connection names no password either. */
    f = tu_wait_for(loop, vl_mysql_query(c, "SELEC 1"));
    assert_int_equal(vl_future_status(f), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1064);
    no_password_in("vl_future_error", vl_future_error(f));
    no_password_in("vl_mysql_error", vl_mysql_error(c));
    vl_future_free(f);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* A wrong password: VL_ECONN with the server's 1045 / 28000, for the connect
 * and for what was queued behind it, and neither password in any message. */
static void ed25519_wrong_password(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[512];
    vl_mysql *c;
    vl_future *f, *q;

    (void)state;
    c = vl_mysql_new(loop, url_for(url, sizeof(url), ed_user(), wrong_pw), NULL);
    assert_non_null(c);
    f = vl_mysql_ready(c);
    q = vl_mysql_query(c, "SELECT 1");
    tu_wait_for(loop, f);
    tu_wait_for(loop, q);
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_int_equal(vl_future_mysql_errno(f), 1045);
    assert_string_equal(vl_future_mysql_sqlstate(f), "28000");
    assert_non_null(strstr(vl_future_error(f), "Access denied"));
    no_password_in("vl_future_error", vl_future_error(f));
    no_password_in("vl_mysql_error", vl_mysql_error(c));
    no_password_in("vl_mysql_display", vl_mysql_display(c));
    assert_int_equal(vl_future_status(q), VL_ECONN);
    assert_int_equal(vl_future_mysql_errno(q), 1045);
    no_password_in("the queued statement's error", vl_future_error(q));
    assert_false(vl_mysql_is_open(c));
    vl_future_free(f);
    vl_future_free(q);
    vl_mysql_free(c);

    /* The right password of another plugin's account is no key either: the
     * ed25519 account refuses the test user's (native) password. */
    expect_refused(loop, ed_user(), tu_env("VL_TEST_MYSQL_PASSWORD"));
    tu_loop_finish(loop);
}

/* The same for mysql_native_password, the test user's plugin. */
static void native_wrong_password(void **state)
{
    vl_loop *loop = vl_loop_new();

    (void)state;
    expect_refused(loop, tu_env("VL_TEST_MYSQL_USER"), wrong_pw);
    tu_loop_finish(loop);
}

#define MANY 24

/* MANY ed25519 logins in flight on one loop at once, each answered for its
 * own session: the plugin's exchange runs inside the non-blocking connect,
 * so none waits for another. */
static void ed25519_many_at_once(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[512];
    vl_mysql *c[MANY];
    vl_future *f[MANY];
    int i, done = 0;
    long ids[MANY];

    (void)state;
    url_for(url, sizeof(url), ed_user(), ed_pw());
    for (i = 0; i < MANY; i++) {
        c[i] = vl_mysql_new(loop, url, NULL);
        assert_non_null(c[i]);
        f[i] = vl_mysql_query(c[i], "SELECT CONNECTION_ID()");
        assert_non_null(f[i]);
        assert_int_equal(vl_future_then(vl_mysql_ready(c[i]), tu_count_cb, &done), VL_OK);
    }
    for (i = 0; i < MANY; i++) {
        int64_t id;
        int j;
        tu_wait_for(loop, f[i]);
        if (vl_future_status(f[i]) != VL_OK)
            fail_msg("connection %d: %s", i, vl_future_error(f[i]));
        assert_int_equal(vl_mysql_result_int64(vl_future_mysql_result(f[i]), 0, 0, &id), VL_OK);
        ids[i] = (long)id;
        for (j = 0; j < i; j++)
            assert_true(ids[j] != ids[i]);
        vl_future_free(f[i]);
    }
    /* Each ready future's continuation ran exactly once. */
    vl_loop_run(loop);
    assert_int_equal(done, MANY);
    for (i = 0; i < MANY; i++)
        vl_mysql_free(c[i]);
    tu_loop_finish(loop);
}

/* A pool of ed25519 connections: every connection it opens authenticates,
 * and a pool with a wrong password reports the server's refusal, without
 * the password. */
static void ed25519_pool(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_future *f[40];
    char url[512], who[256];
    int i;

    (void)state;
    vl_mysql_pool_options_init(&o);
    o.max_size = 4;
    o.min_idle = 4;
    p = vl_mysql_pool_new(loop, url_for(url, sizeof(url), ed_user(), ed_pw()), &o);
    assert_non_null(p);
    vl_future_free(tu_run_cmd(loop, vl_mysql_pool_ready(p), VL_OK));
    snprintf(who, sizeof(who), "%s@127.0.0.1", ed_user());
    for (i = 0; i < 40; i++) {
        f[i] = vl_mysql_pool_query(p, "SELECT CURRENT_USER()");
        assert_non_null(f[i]);
    }
    for (i = 0; i < 40; i++) {
        tu_wait_for(loop, f[i]);
        check_cell(f[i], who);
        vl_future_free(f[i]);
    }
    vl_mysql_pool_free(p);

    /* A request waits through the pool's connect backoff, then times out
     * quoting the last connect error. */
    o.acquire_timeout_ms = 300;
    p = vl_mysql_pool_new(loop, url_for(url, sizeof(url), ed_user(), wrong_pw), &o);
    assert_non_null(p);
    f[0] = tu_wait_for(loop, vl_mysql_pool_ready(p));
    assert_int_equal(vl_future_status(f[0]), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f[0]), "Access denied"));
    no_password_in("the pool's readiness error", vl_future_error(f[0]));
    vl_future_free(f[0]);
    f[0] = tu_wait_for(loop, vl_mysql_pool_query(p, "SELECT 1"));
    assert_int_equal(vl_future_status(f[0]), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f[0]), "Access denied"));
    no_password_in("a pooled statement's error", vl_future_error(f[0]));
    vl_future_free(f[0]);
    vl_mysql_pool_free(p);
    tu_loop_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(ed25519_login, tu_setup),
        cmocka_unit_test_setup(ed25519_wrong_password, tu_setup),
        cmocka_unit_test_setup(native_wrong_password, tu_setup),
        cmocka_unit_test_setup(ed25519_many_at_once, tu_setup),
        cmocka_unit_test_setup(ed25519_pool, tu_setup),
    };

    return tu_run("mysql_auth", tests, sizeof(tests) / sizeof(tests[0]));
}
