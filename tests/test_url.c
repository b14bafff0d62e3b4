/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_url.c - endpoint URL parsing (no server needed). */
#include "testutil.h"

#include "internal.h"
#include "url.h"

#include <string.h>

static void full_redis_url(void **state)
{
    vl__url u;
    char err[128];

    (void)state;
    assert_int_equal(vl__url_parse("redis://bob:s%40cret@127.0.0.1:6390/2?x=1&y", &u, err,
                                   sizeof(err)), VL_OK);
    assert_string_equal(u.scheme, "redis");
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "s@cret");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6390);
    assert_string_equal(u.path, "2");
    assert_string_equal(vl__url_param(&u, "x"), "1");
    assert_string_equal(vl__url_param(&u, "y"), "");
    assert_null(vl__url_param(&u, "z"));
    assert_string_equal(u.display, "redis://127.0.0.1:6390/2");
    assert_null(strstr(u.display, "cret"));
    vl__url_clear(&u);
    assert_int_equal(tu_alloc_live(), 0);
}

static void password_only_ipv6_unix(void **state)
{
    vl__url u;
    char err[128];

    (void)state;
    assert_int_equal(vl__url_parse("redis://:pw@[::1]:7000", &u, err, sizeof(err)), VL_OK);
    assert_null(u.user);
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_string_equal(u.display, "redis://[::1]:7000");
    vl__url_clear(&u);
    /* Without a port the brackets stay too, so the display form reads back
     * as the same host (found by tests/fuzz/fuzz_url.c). */
    assert_int_equal(vl__url_parse("redis://[::1]/3", &u, err, sizeof(err)), VL_OK);
    assert_string_equal(u.display, "redis://[::1]/3");
    {
        vl__url back;
        assert_int_equal(vl__url_parse(u.display, &back, err, sizeof(err)), VL_OK);
        assert_string_equal(back.host, "::1");
        assert_int_equal(back.port, 0);
        assert_string_equal(back.path, "3");
        vl__url_clear(&back);
    }
    vl__url_clear(&u);
    assert_int_equal(vl__url_parse("unix:///tmp/r.sock?db=3", &u, err, sizeof(err)), VL_OK);
    assert_string_equal(u.host, "");
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_string_equal(vl__url_param(&u, "db"), "3");
    assert_string_equal(u.display, "unix:///tmp/r.sock");
    vl__url_clear(&u);
    assert_int_equal(vl__url_parse("mysql://u:p@localhost/db?socket=/run/m.sock", &u, err,
                                   sizeof(err)), VL_OK);
    assert_string_equal(u.path, "db");
    assert_string_equal(vl__url_param(&u, "socket"), "/run/m.sock");
    assert_string_equal(u.display, "mysql://localhost/db");
    vl__url_clear(&u);
    assert_int_equal(tu_alloc_live(), 0);
}

/* Unescaped '/', ':' and '@' in a password stay in the password, never in
 * the host, port or path that messages print. */
static void raw_passwords(void **state)
{
    vl__url u;
    char err[128];

    (void)state;
    assert_int_equal(vl__url_parse("mysql://app:4321/xyz@Secret@127.0.0.1/db?init_sql=SET @a=1", &u,
                                   err, sizeof(err)), VL_OK);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "4321/xyz@Secret");
    assert_string_equal(u.host, "127.0.0.1");
    assert_string_equal(u.path, "db");
    assert_string_equal(vl__url_param(&u, "init_sql"), "SET @a=1");
    assert_string_equal(u.display, "mysql://127.0.0.1/db");
    vl__url_clear(&u);
    /* No userinfo: an '@' in the query stays there. */
    assert_int_equal(vl__url_parse("unix:///run/m.sock?user=a@b", &u, err, sizeof(err)), VL_OK);
    assert_null(u.user);
    assert_string_equal(vl__url_param(&u, "user"), "a@b");
    vl__url_clear(&u);
    assert_int_equal(vl__url_parse("mysql://localhost/db?init_sql=SELECT @@version", &u, err,
                                   sizeof(err)), VL_OK);
    assert_null(u.user);
    assert_string_equal(u.host, "localhost");
    vl__url_clear(&u);
    assert_int_equal(tu_alloc_live(), 0);
}

static void malformed_urls(void **state)
{
    static const char *bad[] = {
        "", "127.0.0.1:6379", "://x", "redis://host:0", "redis://host:65536",
        "redis://host:12ab", "redis://host:", "redis://[::1", "redis://h%zz",
        "redis://", "unix://", "redis://:secretpw@host:99999",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vl__url u;
        char err[128];
        int rc = vl__url_parse(bad[i], &u, err, sizeof(err));
        if (rc != VL_EINVAL)
            fail_msg("'%s' parsed (rc %d)", bad[i], rc);
        assert_true(strlen(err) > 0);
        assert_null(strstr(err, "secretpw"));
    }
    assert_int_equal(tu_alloc_live(), 0);
}

static void oom_while_parsing(void **state)
{
    long n;
    int ok = 0;

    (void)state;
    for (n = 1; n < 100 && !ok; n++) {
        vl__url u;
        char err[128];
        int rc;
        tu_alloc_fail_at(n);
        rc = vl__url_parse("redis://a:b@h:1/2?k=v&k2=v2", &u, err, sizeof(err));
        assert_true(rc == VL_OK || rc == VL_ENOMEM);
        if (rc == VL_OK) {
            ok = 1;
            vl__url_clear(&u);
        }
        assert_int_equal(tu_alloc_live(), 0);
    }
    tu_alloc_fail_at(0);
    assert_true(ok);
}

typedef struct res {
    int status;
    char addr[64];
    char msg[256];
} res;

static void resolved(vl_future *f, void *ud)
{
    res *r = ud;

    r->status = vl_future_status(f);
    if (r->status == VL_OK)
        snprintf(r->addr, sizeof(r->addr), "%s", (char *)vl_future_value(f));
    snprintf(r->msg, sizeof(r->msg), "%s", vl_future_error(f));
}

/* Resolution runs off the loop; an unknown name fails with VL_ECONN. */
static void resolve_off_loop(void **state)
{
    vl_loop *loop = vl_loop_new();
    res a = {0}, b = {0}, c = {0};

    (void)state;
    vl_future_then(vl__resolve(loop, "localhost"), resolved, &a);
    vl_future_then(vl__resolve(loop, "127.0.0.7"), resolved, &b);
    vl_future_then(vl__resolve(loop, "no-such-host.invalid"), resolved, &c);
    vl_loop_run(loop);
    assert_int_equal(a.status, VL_OK);
    assert_true(strcmp(a.addr, "127.0.0.1") == 0 || strcmp(a.addr, "::1") == 0);
    assert_int_equal(b.status, VL_OK);
    assert_string_equal(b.addr, "127.0.0.7");
    assert_int_equal(c.status, VL_ECONN);
    assert_non_null(strstr(c.msg, "no-such-host.invalid"));
    tu_loop_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(full_redis_url, tu_setup),
        cmocka_unit_test_setup(password_only_ipv6_unix, tu_setup),
        cmocka_unit_test_setup(raw_passwords, tu_setup),
        cmocka_unit_test_setup(malformed_urls, tu_setup),
        cmocka_unit_test_setup(oom_while_parsing, tu_setup),
        cmocka_unit_test_setup(resolve_off_loop, tu_setup),
    };

    return tu_run("url", tests, sizeof(tests) / sizeof(tests[0]));
}
