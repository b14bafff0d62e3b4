/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_config.c - MySQL options and URLs read into a
 * vl__mysql_config (lib/mysql_options.c); no server needed. */
#include "testutil.h"

#include "mysql_internal.h"

#include <string.h>

/* Parses and returns the status; *msg is freed by tidy(). */
static int parse(vl__mysql_config *cfg, const char *url, const vl_mysql_options *o, char **msg)
{
    return vl__mysql_config_parse(cfg, url, o, msg);
}

static void tidy(vl__mysql_config *cfg, char *msg)
{
    vl__free(msg);
    vl__mysql_config_clear(cfg);
    assert_int_equal(tu_alloc_live(), 0);
}

static void defaults_and_endpoint(void **state)
{
    vl__mysql_config cfg;
    char *msg;

    (void)state;
    assert_int_equal(parse(&cfg, "mysql://bob:s%40cret@db.example:3307/app", NULL, &msg), VL_OK);
    assert_null(msg);
    assert_string_equal(cfg.display, "mysql://db.example:3307/app");
    assert_null(strstr(cfg.display, "cret"));
    assert_string_equal(cfg.host, "db.example");
    assert_int_equal(cfg.port, 3307);
    assert_string_equal(cfg.user, "bob");
    assert_string_equal(cfg.password, "s@cret");
    assert_string_equal(cfg.db, "app");
    assert_null(cfg.socket_path);
    assert_string_equal(cfg.charset, "utf8mb4");
    assert_null(cfg.init_sql);
    assert_int_equal(cfg.connect_timeout_ms, 5000);
    assert_int_equal(cfg.read_timeout_ms, VL_MYSQL_DEFAULT_READ_TIMEOUT_MS);
    assert_int_equal(cfg.max_result_bytes, VL_MYSQL_DEFAULT_MAX_RESULT_BYTES);
    assert_int_equal(cfg.max_row_bytes, VL_MYSQL_DEFAULT_MAX_ROW_BYTES);
    assert_int_equal(cfg.query_timeout_ms, 0);
    assert_int_equal(cfg.multi, 0);
    assert_int_equal(cfg.track_gtid, 0);
    assert_int_equal(cfg.tls, VL__MYSQL_TLS_OFF);
    tidy(&cfg, msg);

    /* The port defaults to 3306, and no path means no database. */
    assert_int_equal(parse(&cfg, "mariadb://h", NULL, &msg), VL_OK);
    assert_int_equal(cfg.port, 3306);
    assert_null(cfg.db);
    assert_null(cfg.user);
    tidy(&cfg, msg);
}

static void parameters_override_options(void **state)
{
    vl__mysql_config cfg;
    vl_mysql_options o;
    char *msg;

    (void)state;
    vl_mysql_options_init(&o);
    o.connect_timeout_ms = 111;
    o.charset = "latin1";
    o.init_sql = "SET @a = 1";
    o.multi_statements = 1;
    assert_int_equal(parse(&cfg, "mysql://h/d", &o, &msg), VL_OK);
    assert_int_equal(cfg.connect_timeout_ms, 111);
    assert_string_equal(cfg.charset, "latin1");
    assert_string_equal(cfg.init_sql, "SET @a = 1");
    assert_int_equal(cfg.multi, 1);
    tidy(&cfg, msg);

    assert_int_equal(parse(&cfg,
                           "mysql://h/d?connect_timeout_ms=7&query_timeout_ms=8&read_timeout_ms=0"
                           "&max_result_bytes=9&max_row_bytes=10&multi_statements=0"
                           "&charset=utf8&init_sql=SET%20@b%3D2&track_gtid=1",
                           &o, &msg),
                     VL_OK);
    assert_int_equal(cfg.connect_timeout_ms, 7);
    assert_int_equal(cfg.query_timeout_ms, 8);
    assert_int_equal(cfg.read_timeout_ms, 0);
    assert_int_equal(cfg.max_result_bytes, 9);
    assert_int_equal(cfg.max_row_bytes, 10);
    assert_int_equal(cfg.multi, 0);
    assert_string_equal(cfg.charset, "utf8");
    assert_string_equal(cfg.init_sql, "SET @b=2");
    assert_int_equal(cfg.track_gtid, 1);
    tidy(&cfg, msg);
}

static void unix_sockets(void **state)
{
    vl__mysql_config cfg;
    char *msg;

    (void)state;
    assert_int_equal(parse(&cfg, "unix:///run/my.sock?user=u&password=p&db=d", NULL, &msg),
                     VL_OK);
    assert_string_equal(cfg.socket_path, "/run/my.sock");
    assert_string_equal(cfg.user, "u");
    assert_string_equal(cfg.password, "p");
    assert_string_equal(cfg.db, "d");
    assert_null(strstr(cfg.display, "password=p"));
    tidy(&cfg, msg);

    assert_int_equal(parse(&cfg, "mysql://u@localhost/d?socket=/tmp/m.sock", NULL, &msg), VL_OK);
    assert_string_equal(cfg.socket_path, "/tmp/m.sock");
    assert_string_equal(cfg.host, "localhost");
    tidy(&cfg, msg);
}

/* Each refusal: its status, and a message that says why and never shows
 * the password. */
static void refusals(void **state)
{
    static const struct {
        const char *url;
        int status;
        const char *says;
    } cases[] = {
        {"mysql://u:hunter2@h/d?bogus=1", VL_EINVAL, "unknown URL parameter 'bogus'"},
        {"mysql://u:hunter2@h/d?connect_timeout_ms=-1", VL_EINVAL, "connect_timeout_ms"},
        {"mysql://u:hunter2@h/d?read_timeout_ms=5x", VL_EINVAL, "read_timeout_ms"},
        {"mysql://u:hunter2@h/d?max_row_bytes=", VL_EINVAL, "max_row_bytes"},
        {"mysql://u:hunter2@h/d?track_gtid=yes", VL_EINVAL, "track_gtid"},
        {"mysql://u:hunter2@/d", VL_EINVAL, "no host"},
        {"redis://u:hunter2@h/d", VL_EINVAL, "scheme must be mysql:// or unix://"},
        {"mysql://u:hunter2@h:99999/d", VL_EINVAL, "bad MySQL URL"},
        /* TLS: a parameter that is not volley's is never ignored. */
        {"mysql://u:hunter2@h/d?ssl=1", VL_EINVAL, "unknown URL parameter 'ssl'"},
        {"mysql://u:hunter2@h/d?tls=required", VL_EINVAL, "unknown URL parameter 'tls'"},
        {"mysql://u:hunter2@h/d?ssl_ca=x", VL_EINVAL, "unknown URL parameter 'ssl_ca'"},
        {"mysql://u:hunter2@h/d?ssl-mode=preferred", VL_EINVAL, "preferred is not offered"},
        {"mysql://u:hunter2@h/d?ssl-mode=PREFERRED", VL_EINVAL, "PREFERRED is not offered"},
        {"mysql://u:hunter2@h/d?ssl-mode=on", VL_EINVAL, "ssl-mode must be"},
        {"mysql://u:hunter2@h/d?ssl-verify-server-cert=yes", VL_EINVAL,
         "ssl-verify-server-cert must be 0 or 1"},
        {"mysql://u:hunter2@h/d?ssl-ca=", VL_EINVAL, "ssl-ca is empty"},
        {"mysql://u:hunter2@h/d?ssl-capath=", VL_EINVAL, "ssl-capath is empty"},
        {"mysql://u:hunter2@h/d?ssl-cert=c.pem", VL_EINVAL, "ssl-cert and ssl-key go together"},
        {"mysql://u:hunter2@h/d?ssl-key=k.pem", VL_EINVAL, "ssl-cert and ssl-key go together"},
        {"mysql://u:hunter2@h/d?ssl-mode=disabled&ssl-ca=x", VL_EINVAL, "ssl-mode=disabled"},
        {"mysql://u:hunter2@h/d?ssl-mode=verify-ca", VL_EINVAL, "verify-ca needs ssl-ca"},
        {"mysql://u:hunter2@h/d?ssl-ca=x&socket=/s", VL_EINVAL, "unix socket"},
        {"unix:///s?password=hunter2&ssl-mode=required", VL_EINVAL, "unix socket"},
        {"mysql://u:hunter2@h/d?tls-version=TLSv1.4", VL_EINVAL, "tls-version must list"},
        {"mysql://u:hunter2@h/d?tls-version=TLSv1.2;TLSv1.3", VL_EINVAL, "tls-version"},
        {"mysql://u:hunter2@h/d?tls-version=TLSv1.2,", VL_EINVAL, "tls-version"},
        {"mysql://u:hunter2@a,b/d?ssl-mode=required", VL_EINVAL, "a ',' in the host name"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vl__mysql_config cfg;
        char *msg;
        int rc = parse(&cfg, cases[i].url, NULL, &msg);
        if (rc != cases[i].status || msg == NULL || strstr(msg, cases[i].says) == NULL)
            fail_msg("%s: status %d, message '%s'", cases[i].url, rc, msg ? msg : "(none)");
        assert_null(strstr(msg, "hunter2"));
        assert_non_null(cfg.display);
        assert_null(strstr(cfg.display, "hunter2"));
        tidy(&cfg, msg);
    }
}

/* Each TLS parameter, read into cfg.tls and the ssl_* fields: any ssl-*
 * turns TLS on with verification, which only ssl-mode or
 * ssl-verify-server-cert=0 turn off. */
static void tls_parameters(void **state)
{
    static const struct {
        const char *params;
        int tls;
    } modes[] = {
        {"", VL__MYSQL_TLS_OFF},
        {"ssl-mode=disabled", VL__MYSQL_TLS_OFF},
        {"ssl-mode=DISABLED", VL__MYSQL_TLS_OFF},
        {"ssl-ca=/ca.pem", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-capath=/cas", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-cert=/c.pem&ssl-key=/k.pem", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-cipher=ECDHE-ECDSA-AES128-GCM-SHA256", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"tls-version=TLSv1.3", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-mode=verify-identity", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-mode=verify-ca&ssl-ca=/ca.pem", VL__MYSQL_TLS_VERIFY_CA},
        {"ssl-mode=VERIFY_CA&ssl-capath=/cas", VL__MYSQL_TLS_VERIFY_CA},
        {"ssl-mode=required", VL__MYSQL_TLS_REQUIRED},
        {"ssl-mode=REQUIRED&ssl-ca=/ca.pem", VL__MYSQL_TLS_REQUIRED},
        {"ssl-verify-server-cert=1", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-verify-server-cert=true&ssl-ca=/ca.pem", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-verify-server-cert=0", VL__MYSQL_TLS_REQUIRED},
        {"ssl-verify-server-cert=false&ssl-ca=/ca.pem", VL__MYSQL_TLS_REQUIRED},
        /* ssl-mode has the last word over the older spelling. */
        {"ssl-verify-server-cert=0&ssl-mode=verify-identity", VL__MYSQL_TLS_VERIFY_IDENTITY},
        {"ssl-verify-server-cert=1&ssl-mode=required", VL__MYSQL_TLS_REQUIRED},
    };
    vl__mysql_config cfg;
    char url[256], *msg;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        snprintf(url, sizeof(url), "mysql://u:p@h/d?%s", modes[i].params);
        if (parse(&cfg, url, NULL, &msg) != VL_OK || cfg.tls != modes[i].tls)
            fail_msg("%s: tls %d, message '%s'; wanted %d", url, cfg.tls, msg ? msg : "",
                     modes[i].tls);
        tidy(&cfg, msg);
    }
    assert_int_equal(parse(&cfg,
                           "mysql://u:p@h/d?ssl-ca=%2Fetc%2Fca.pem&ssl-capath=/cas&ssl-cert=/c.pem"
                           "&ssl-key=/k.pem&ssl-cipher=A:B&tls-version=TLSv1.2,TLSv1.3",
                           NULL, &msg),
                     VL_OK);
    assert_string_equal(cfg.ssl_ca, "/etc/ca.pem");
    assert_string_equal(cfg.ssl_capath, "/cas");
    assert_string_equal(cfg.ssl_cert, "/c.pem");
    assert_string_equal(cfg.ssl_key, "/k.pem");
    assert_string_equal(cfg.ssl_cipher, "A:B");
    assert_string_equal(cfg.tls_version, "TLSv1.2,TLSv1.3");
    assert_string_equal(cfg.host, "h");
    /* The display form shows the parameters, never the password. */
    assert_null(strstr(cfg.display, ":p@"));
    tidy(&cfg, msg);
    /* Without TLS nothing is kept. */
    assert_int_equal(parse(&cfg, "mysql://u:p@h/d", NULL, &msg), VL_OK);
    assert_null(cfg.ssl_ca);
    assert_null(cfg.ssl_capath);
    assert_null(cfg.ssl_cert);
    assert_null(cfg.ssl_key);
    assert_null(cfg.ssl_cipher);
    assert_null(cfg.tls_version);
    tidy(&cfg, msg);
}

static void unreadable_input(void **state)
{
    vl__mysql_config cfg;
    vl_mysql_options o;
    char *msg;

    (void)state;
    assert_int_equal(parse(&cfg, NULL, NULL, &msg), VL_EINVAL);
    assert_string_equal(msg, "no URL given");
    assert_string_equal(cfg.display, "mysql://?");
    tidy(&cfg, msg);

    memset(&o, 0, sizeof(o));
    o.struct_size = 3;
    assert_int_equal(parse(&cfg, "mysql://h/d", &o, &msg), VL_EINVAL);
    assert_non_null(strstr(msg, "struct_size"));
    assert_string_equal(cfg.display, "mysql://?");
    tidy(&cfg, msg);
}

/* Every allocation may fail: the result is then VL_ENOMEM and nothing
 * leaks; past the last one the parse succeeds. */
static void out_of_memory(void **state)
{
    static const char *const urls[] = {
        "mysql://u:p@h:1/d?charset=x&init_sql=y&socket=/s",
        "mysql://u:p@h:1/d?ssl-ca=a&ssl-capath=b&ssl-cert=c&ssl-key=d&ssl-cipher=e"
        "&tls-version=TLSv1.3&ssl-mode=verify-ca",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        long n;
        int ok = 0;
        for (n = 1; n < 200 && !ok; n++) {
            vl__mysql_config cfg;
            char *msg;
            int rc;
            tu_alloc_fail_at(n);
            rc = parse(&cfg, urls[i], NULL, &msg);
            tu_alloc_fail_at(0);
            assert_true(rc == VL_OK || rc == VL_ENOMEM);
            ok = rc == VL_OK;
            tidy(&cfg, msg);
        }
        assert_true(ok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_and_endpoint, tu_setup),
        cmocka_unit_test_setup(parameters_override_options, tu_setup),
        cmocka_unit_test_setup(unix_sockets, tu_setup),
        cmocka_unit_test_setup(refusals, tu_setup),
        cmocka_unit_test_setup(tls_parameters, tu_setup),
        cmocka_unit_test_setup(unreadable_input, tu_setup),
        cmocka_unit_test_setup(out_of_memory, tu_setup),
    };

    return tu_run("mysql_config", tests, sizeof(tests) / sizeof(tests[0]));
}
