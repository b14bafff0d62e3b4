/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql.c - one MySQL connection against a real mariadbd (started
 * by tests/servers.sh): connecting, text queries and their results, server
 * errors as data, escaping, timeouts, teardown and out-of-memory.
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Fault injection below Connector/C: while armed, the Nth calloc called by
 * mysql_init or mysql_options(v) fails (the handle, its extension, the
 * non-blocking context). Every other caller, and every call while disarmed,
 * goes to the real calloc. Later allocations of Connector/C's connect are
 * left alone: how it copes with those is its own business. */
static void *(*real_calloc)(size_t, size_t);
static int calloc_resolving;
static unsigned char calloc_boot[4096];
static size_t calloc_boot_used;
static long my_calloc_fail_at;
static long my_calloc_seen;

static int called_from_connector_setup(void *ret)
{
    Dl_info info;

    if (dladdr(ret, &info) == 0 || info.dli_fname == NULL || info.dli_sname == NULL ||
        strstr(info.dli_fname, "libmariadb") == NULL)
        return 0;
    return strcmp(info.dli_sname, "mysql_init") == 0 ||
           strncmp(info.dli_sname, "mysql_options", 13) == 0;
}

void *calloc(size_t n, size_t size)
{
    if (real_calloc == NULL) {
        void *sym;
        if (calloc_resolving) {
            /* dlsym may allocate while looking calloc up: serve it from a
             * static pool (never freed). */
            size_t need = (n * size + 15) & ~(size_t)15;
            void *p;
            if (need > sizeof(calloc_boot) - calloc_boot_used)
                return NULL;
            p = calloc_boot + calloc_boot_used;
            calloc_boot_used += need;
            return p;
        }
        calloc_resolving = 1;
        sym = dlsym(RTLD_NEXT, "calloc");
        calloc_resolving = 0;
        memcpy(&real_calloc, &sym, sizeof(sym));
    }
    if (my_calloc_fail_at > 0 && called_from_connector_setup(__builtin_return_address(0)) &&
        ++my_calloc_seen == my_calloc_fail_at)
        return NULL;
    return real_calloc(n, size);
}

static char url_buf[512];

/* The TCP URL of the test server, with extra query parameters. */
static const char *tcp_url(const char *params)
{
    snprintf(url_buf, sizeof(url_buf), "mysql://%s:%s@127.0.0.1:%s/%s%s%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"), params ? "?" : "",
             params ? params : "");
    return url_buf;
}

static vl_mysql *connect_ok(vl_loop *loop, const char *url)
{
    vl_mysql *c = vl_mysql_new(loop, url, NULL);
    vl_future *f;

    assert_non_null(c);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    if (vl_future_status(f) != VL_OK)
        fail_msg("connect: %s", vl_future_error(f));
    vl_future_free(f);
    return c;
}

/* Runs one query and checks it succeeded; the caller frees the future. */
static vl_future *query_ok(vl_loop *loop, vl_mysql *c, const char *sql)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_query(c, sql));

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s: %s", sql, vl_future_error(f));
    assert_non_null(vl_future_mysql_result(f));
    return f;
}

static void exec_ok(vl_loop *loop, vl_mysql *c, const char *sql)
{
    vl_future_free(query_ok(loop, c, sql));
}

static void select_values(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f;
    const vl_mysql_result *r;
    size_t len;
    const char *v;
    int64_t i;

    (void)state;
    c = connect_ok(loop, tcp_url(NULL));
    assert_true(vl_mysql_is_open(c));
    f = query_ok(loop, c, "SELECT 1 AS one, 'abc' AS s, NULL AS n, '' AS e, X'610062' AS b");
    r = vl_future_mysql_result(f);
    assert_true(vl_mysql_result_has_rows(r));
    assert_int_equal(vl_mysql_result_columns(r), 5);
    assert_int_equal(vl_mysql_result_rows(r), 1);
    assert_string_equal(vl_mysql_result_column_name(r, 0), "one");
    assert_string_equal(vl_mysql_result_column_name(r, 4), "b");
    assert_int_equal(vl_mysql_result_column_index(r, "n"), 2);
    assert_int_equal(vl_mysql_result_column_index(r, "zz"), -1);
    assert_int_equal(vl_mysql_result_int64(r, 0, 0, &i), VL_OK);
    assert_int_equal(i, 1);
    v = vl_mysql_result_value(r, 0, 1, &len);
    assert_int_equal(len, 3);
    assert_string_equal(v, "abc");
    /* NULL and the empty string are different things. */
    assert_null(vl_mysql_result_value(r, 0, 2, &len));
    assert_true(vl_mysql_result_is_null(r, 0, 2));
    assert_int_equal(vl_mysql_result_int64(r, 0, 2, &i), VL_ESTATE);
    v = vl_mysql_result_value(r, 0, 3, &len);
    assert_non_null(v);
    assert_int_equal(len, 0);
    assert_false(vl_mysql_result_is_null(r, 0, 3));
    /* Binary-safe: an embedded NUL keeps its length. */
    v = vl_mysql_result_value(r, 0, 4, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(v, "a\0b", 3);
    assert_true(vl_mysql_result_column_flags(r, 4) & VL_MYSQL_FLAG_BINARY);
    assert_false(vl_mysql_result_column_flags(r, 1) & VL_MYSQL_FLAG_BINARY);
    assert_null(vl_mysql_result_value(r, 1, 0, &len));
    assert_null(vl_mysql_result_next(r));
    vl_future_free(f);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* Both unix-socket URL forms, and a host name resolved off the loop. */
static void socket_and_hostname(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[600];
    vl_mysql *c;
    vl_future *f;

    (void)state;
    snprintf(url, sizeof(url), "mysql://%s:%s@localhost/%s?socket=%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_DB"), tu_env("VL_TEST_MYSQL_SOCK"));
    c = connect_ok(loop, url);
    f = query_ok(loop, c, "SELECT DATABASE()");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL),
                        tu_env("VL_TEST_MYSQL_DB"));
    vl_future_free(f);
    vl_mysql_free(c);

    snprintf(url, sizeof(url), "unix://%s?user=%s&password=%s&db=%s", tu_env("VL_TEST_MYSQL_SOCK"),
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_DB"));
    c = connect_ok(loop, url);
    exec_ok(loop, c, "SELECT 1");
    vl_mysql_free(c);

    snprintf(url, sizeof(url), "mysql://%s:%s@localhost:%s/%s", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env("VL_TEST_MYSQL_PORT"),
             tu_env("VL_TEST_MYSQL_DB"));
    c = connect_ok(loop, url);
    /* The display form names the endpoint and never the password. */
    assert_non_null(strstr(vl_mysql_display(c), "localhost"));
    assert_null(strstr(vl_mysql_display(c), tu_env("VL_TEST_MYSQL_PASSWORD")));
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* A server error is data: errno and SQLSTATE readable, connection usable. */
static void syntax_error(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f;

    (void)state;
    c = connect_ok(loop, tcp_url(NULL));
    f = tu_wait_for(loop, vl_mysql_query(c, "SELEKT 1"));
    assert_int_equal(vl_future_status(f), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1064);
    assert_string_equal(vl_future_mysql_sqlstate(f), "42000");
    assert_non_null(strstr(vl_future_error(f), "SQL syntax"));
    assert_non_null(strstr(vl_future_error(f), "1064"));
    vl_future_free(f);
    f = query_ok(loop, c, "SELECT 2");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "2");
    vl_future_free(f);
    assert_int_equal(vl_future_mysql_errno(NULL), 0);
    assert_string_equal(vl_future_mysql_sqlstate(NULL), "");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* Statements queue FIFO on one connection; gathered futures all complete. */
static void fifo_queue(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = vl_mysql_new(loop, tcp_url(NULL), NULL);
    vl_future *fs[20], *all;
    char sql[64];
    int i;

    (void)state;
    /* Queued before the connection is even up. */
    for (i = 0; i < 20; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d", i);
        fs[i] = vl_mysql_query(c, sql);
        assert_non_null(fs[i]);
    }
    all = tu_wait_for(loop, vl_future_all(loop, fs, 20));
    assert_int_equal(vl_future_status(all), VL_OK);
    for (i = 0; i < 20; i++) {
        int64_t v;
        const vl_mysql_result *r = vl_future_mysql_result(vl_future_child(all, (size_t)i));
        assert_int_equal(vl_mysql_result_int64(r, 0, 0, &v), VL_OK);
        assert_int_equal(v, i);
    }
    vl_future_free(all);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

static void counts_and_multi(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f;
    const vl_mysql_result *r;

    (void)state;
    c = connect_ok(loop, tcp_url("multi_statements=1"));
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_counts");
    exec_ok(loop, c, "CREATE TABLE t_counts (id INT AUTO_INCREMENT PRIMARY KEY, v TINYINT)");
    f = query_ok(loop, c, "INSERT INTO t_counts (v) VALUES (1), (2), (3)");
    r = vl_future_mysql_result(f);
    assert_false(vl_mysql_result_has_rows(r));
    assert_int_equal(vl_mysql_result_affected_rows(r), 3);
    assert_int_equal(vl_mysql_result_insert_id(r), 1);
    vl_future_free(f);
    /* 1000 does not fit a TINYINT: clipped, with a warning (non-strict). */
    f = query_ok(loop, c, "SET STATEMENT sql_mode='' FOR UPDATE t_counts SET v = 1000 WHERE id = 2");
    r = vl_future_mysql_result(f);
    assert_int_equal(vl_mysql_result_affected_rows(r), 1);
    assert_int_equal(vl_mysql_result_warnings(r), 1);
    vl_future_free(f);

    /* Three statements, three results in one chain. */
    f = query_ok(loop, c, "SELECT 1; UPDATE t_counts SET v = 5; SELECT id, v FROM t_counts ORDER BY id");
    r = vl_future_mysql_result(f);
    assert_true(vl_mysql_result_has_rows(r));
    assert_int_equal(vl_mysql_result_rows(r), 1);
    r = vl_mysql_result_next(r);
    assert_non_null(r);
    assert_false(vl_mysql_result_has_rows(r));
    assert_int_equal(vl_mysql_result_affected_rows(r), 3);
    r = vl_mysql_result_next(r);
    assert_non_null(r);
    assert_int_equal(vl_mysql_result_rows(r), 3);
    assert_string_equal(vl_mysql_result_value(r, 2, 1, NULL), "5");
    assert_null(vl_mysql_result_next(r));
    vl_future_free(f);

    /* The second statement fails: the first result stays readable. */
    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 7; SELECT * FROM no_such_table; SELECT 8"));
    assert_int_equal(vl_future_status(f), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1146);
    assert_string_equal(vl_future_mysql_sqlstate(f), "42S02");
    r = vl_future_mysql_result(f);
    assert_non_null(r);
    assert_string_equal(vl_mysql_result_value(r, 0, 0, NULL), "7");
    vl_future_free(f);
    exec_ok(loop, c, "DROP TABLE t_counts");
    vl_mysql_free(c);

    /* Without the opt-in, "a; b" is a syntax error. */
    c = connect_ok(loop, tcp_url(NULL));
    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1; SELECT 2"));
    assert_int_equal(vl_future_status(f), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1064);
    vl_future_free(f);
    exec_ok(loop, c, "SELECT 3");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

static void escaping(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = vl_mysql_new(loop, tcp_url("charset=utf8mb4"), NULL);
    char dst[128], sql[300];
    const char *in = "it's \"quoted\"\\ \xc3\xa9t\xc3\xa9 \xf0\x9f\x8e\x89";
    vl_future *f;
    long n;
    size_t len;
    const char *v;

    (void)state;
    /* The character set is only known once connected. */
    assert_int_equal(vl_mysql_escape(c, dst, sizeof(dst), in, strlen(in)), VL_ESTATE);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_OK);
    vl_future_free(f);
    assert_int_equal(vl_mysql_escape(c, dst, 4, in, strlen(in)), VL_EINVAL);
    n = vl_mysql_escape(c, dst, sizeof(dst), in, strlen(in));
    assert_true(n > (long)strlen(in));
    assert_int_equal((size_t)n, strlen(dst));
    snprintf(sql, sizeof(sql), "SELECT '%s', CHARSET('%s')", dst, dst);
    f = query_ok(loop, c, sql);
    v = vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, &len);
    assert_int_equal(len, strlen(in));
    assert_memory_equal(v, in, len);
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "utf8mb4");
    vl_future_free(f);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* Connect failures: clear, no password, no crash, no leak. */
static void connect_errors(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[600];
    const char *pw = "s3cr3t-Pa55";
    vl_mysql *c;
    vl_future *f, *q;

    (void)state;
    /* Bad credentials. */
    snprintf(url, sizeof(url), "mysql://%s:%s@127.0.0.1:%s/%s", tu_env("VL_TEST_MYSQL_USER"), pw,
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"));
    c = vl_mysql_new(loop, url, NULL);
    f = vl_mysql_ready(c);
    q = vl_mysql_query(c, "SELECT 1");
    tu_wait_for(loop, f);
    tu_wait_for(loop, q);
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_int_equal(vl_future_mysql_errno(f), 1045);
    assert_string_equal(vl_future_mysql_sqlstate(f), "28000");
    assert_null(strstr(vl_future_error(f), pw));
    assert_non_null(strstr(vl_future_error(f), "127.0.0.1"));
    /* What was queued fails the same way. */
    assert_int_equal(vl_future_status(q), VL_ECONN);
    assert_int_equal(vl_future_mysql_errno(q), 1045);
    vl_future_free(f);
    vl_future_free(q);
    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1"));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    vl_future_free(f);
    assert_false(vl_mysql_is_open(c));
    vl_mysql_free(c);

    /* Unknown database. */
    snprintf(url, sizeof(url), "mysql://%s:%s@127.0.0.1:%s/no_such_db", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env("VL_TEST_MYSQL_PORT"));
    c = vl_mysql_new(loop, url, NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_int_equal(vl_future_mysql_errno(f), 1049);
    assert_null(strstr(vl_future_error(f), tu_env("VL_TEST_MYSQL_PASSWORD")));
    vl_future_free(f);
    vl_mysql_free(c);

    /* Refused port (port 1 on loopback has no listener). */
    snprintf(url, sizeof(url), "mysql://u:%s@127.0.0.1:1/db", pw);
    c = vl_mysql_new(loop, url, NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_true(vl_future_mysql_errno(f) == 2002 || vl_future_mysql_errno(f) == 2003);
    assert_null(strstr(vl_future_error(f), pw));
    vl_future_free(f);
    vl_mysql_free(c);

    /* Bad URLs. */
    c = vl_mysql_new(loop, "mysql//nope", NULL);
    assert_non_null(c);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    vl_mysql_free(c);
    c = vl_mysql_new(loop, "mysql://u:p@127.0.0.1:99999/db", NULL);
    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1"));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    vl_mysql_free(c);
    snprintf(url, sizeof(url), "mysql://u:%s@127.0.0.1/db?bogus=1", pw);
    c = vl_mysql_new(loop, url, NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "bogus"));
    assert_null(strstr(vl_future_error(f), pw));
    vl_future_free(f);
    vl_mysql_free(c);

    /* A TLS parameter volley does not know is refused, never ignored
     * (which would connect in clear text), and so is ssl-mode=preferred,
     * which would fall back to it. */
    snprintf(url, sizeof(url), "mysql://u:%s@127.0.0.1/db?ssl=1", pw);
    c = vl_mysql_new(loop, url, NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "unknown URL parameter 'ssl'"));
    assert_null(strstr(vl_future_error(f), pw));
    vl_future_free(f);
    vl_mysql_free(c);
    c = vl_mysql_new(loop, "mysql://u:p@127.0.0.1/db?tls=required", NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    vl_mysql_free(c);
    snprintf(url, sizeof(url), "mysql://u:%s@127.0.0.1/db?ssl-mode=preferred", pw);
    c = vl_mysql_new(loop, url, NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "preferred"));
    assert_null(strstr(vl_future_error(f), pw));
    vl_future_free(f);
    vl_mysql_free(c);

    /* An unknown host name fails through the resolver. */
    c = vl_mysql_new(loop, "mysql://u:p@no-such-host.invalid/db", NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    vl_future_free(f);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* A server-side statement limit keeps the connection; a client-side
 * deadline closes it. */
static void timeouts(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f, *q;

    (void)state;
    c = connect_ok(loop, tcp_url(NULL));
    f = tu_wait_for(loop, vl_mysql_query_timeout(c, "SELECT SLEEP(5)", 100));
    /* SLEEP() interrupted by max_statement_time returns 1 in some versions,
     * or fails with 1969: both leave the connection usable. */
    if (vl_future_status(f) != VL_OK) {
        assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
        assert_int_equal(vl_future_mysql_errno(f), 1969);
    }
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_query_timeout(c, "SELECT COUNT(*) FROM information_schema.columns a, information_schema.columns b, information_schema.columns c", 50));
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    assert_int_equal(vl_future_mysql_errno(f), 1969);
    assert_string_equal(vl_future_mysql_sqlstate(f), "70100");
    vl_future_free(f);
    exec_ok(loop, c, "SELECT 1");
    assert_true(vl_mysql_is_open(c));

    /* The client-side deadline: the connection is closed. */
    f = vl_future_timeout(vl_mysql_query(c, "SELECT SLEEP(5)"), 50);
    q = vl_mysql_query(c, "SELECT 1");
    tu_wait_for(loop, f);
    tu_wait_for(loop, q);
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    assert_int_equal(vl_future_status(q), VL_ECLOSED);
    assert_false(vl_mysql_is_open(c));
    vl_future_free(f);
    vl_future_free(q);
    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1"));
    assert_int_equal(vl_future_status(f), VL_ECLOSED);
    vl_future_free(f);
    vl_mysql_free(c);

    /* Cancelling a statement still in the queue only removes it. */
    c = connect_ok(loop, tcp_url(NULL));
    f = vl_mysql_query(c, "SELECT SLEEP(0.05)");
    q = vl_mysql_query(c, "SELECT 2");
    assert_int_equal(vl_future_cancel(q), 1);
    tu_wait_for(loop, f);
    assert_int_equal(vl_future_status(f), VL_OK);
    assert_int_equal(vl_future_status(q), VL_ECANCELED);
    assert_true(vl_mysql_is_open(c));
    vl_future_free(f);
    vl_future_free(q);
    exec_ok(loop, c, "SELECT 3");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

static void free_cb(vl_future *f, void *ud)
{
    int *calls = ud;

    (void)f;
    calls[0]++;
    calls[1] = vl_future_status(f);
}

/* Freeing a connection completes every pending future with VL_ECANCELED,
 * also from inside a callback. */
static void free_pending(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *a, *b, *r;
    int ca[2] = {0, 0}, cb[2] = {0, 0};

    (void)state;
    c = vl_mysql_new(loop, tcp_url(NULL), NULL);
    /* Freed while still resolving/connecting. */
    a = vl_mysql_query(c, "SELECT 1");
    vl_future_then(a, free_cb, ca);
    vl_mysql_free(c);
    vl_loop_run(loop);
    assert_int_equal(ca[0], 1);
    assert_int_equal(ca[1], VL_ECANCELED);

    c = connect_ok(loop, tcp_url(NULL));
    a = vl_mysql_query(c, "SELECT SLEEP(1)");
    b = vl_mysql_query(c, "SELECT 2");
    vl_future_then(a, free_cb, ca);
    vl_future_then(b, free_cb, cb);
    r = vl_loop_sleep(loop, 20);
    tu_wait_for(loop, r);
    vl_future_free(r);
    ca[0] = 0;
    vl_mysql_free(c);
    vl_loop_run(loop);
    assert_int_equal(ca[0], 1);
    assert_int_equal(ca[1], VL_ECANCELED);
    assert_int_equal(cb[0], 1);
    assert_int_equal(cb[1], VL_ECANCELED);

    /* A connection left open is freed with the loop. */
    c = connect_ok(loop, tcp_url(NULL));
    a = vl_mysql_query(c, "SELECT SLEEP(1)");
    ca[0] = 0;
    vl_future_then(a, free_cb, ca);
    assert_int_equal(vl_loop_alive(loop) > 0, 1);
    vl_loop_free(loop);
    assert_int_equal(ca[0], 1);
    assert_int_equal(ca[1], VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
}

typedef struct freer {
    vl_mysql *c;
    int calls;
} freer;

static void free_conn_cb(vl_future *f, void *ud)
{
    freer *fr = ud;

    (void)f;
    fr->calls++;
    vl_mysql_free(fr->c);
}

static void free_from_callback(void **state)
{
    vl_loop *loop = vl_loop_new();
    freer fr = {0};
    vl_future *a, *b;
    int cb[2] = {0, 0};

    (void)state;
    fr.c = connect_ok(loop, tcp_url(NULL));
    a = vl_mysql_query(fr.c, "SELECT 1");
    b = vl_mysql_query(fr.c, "SELECT SLEEP(1)");
    vl_future_then(a, free_conn_cb, &fr);
    vl_future_then(b, free_cb, cb);
    vl_loop_run(loop);
    assert_int_equal(fr.calls, 1);
    assert_int_equal(cb[0], 1);
    assert_int_equal(cb[1], VL_ECANCELED);
    tu_loop_finish(loop);
}

typedef struct self_freer {
    vl_mysql *c;
    int calls;
    int status;
    int again_calls;
    int again_status;
} self_freer;

static void again_cb(vl_future *f, void *ud)
{
    self_freer *sf = ud;

    sf->again_calls++;
    sf->again_status = vl_future_status(f);
}

/* The usual "done with this connection" callback: it frees the connection,
 * frees it again, and even tries to use it. */
static void free_self_cb(vl_future *f, void *ud)
{
    self_freer *sf = ud;
    vl_future *g;

    sf->calls++;
    sf->status = vl_future_status(f);
    vl_mysql_free(sf->c);
    vl_mysql_free(sf->c); /* a no-op */
    assert_int_equal(vl_mysql_is_open(sf->c), 0);
    g = vl_mysql_query(sf->c, "SELECT 1");
    assert_non_null(g);
    vl_future_then(g, again_cb, sf);
}

/* vl_loop_free with statements pending: the loop frees the connections
 * first, then runs their callbacks, which may still hand the connection to
 * vl_mysql_free (a no-op by then) and see every call on it fail with
 * VL_ECLOSED. */
static void free_self_in_loop_teardown(void **state)
{
    vl_loop *loop = vl_loop_new();
    self_freer open = {0}, connecting = {0};

    (void)state;
    open.c = connect_ok(loop, tcp_url(NULL));
    vl_future_then(vl_mysql_query(open.c, "SELECT SLEEP(1)"), free_self_cb, &open);
    connecting.c = vl_mysql_new(loop, tcp_url(NULL), NULL);
    vl_future_then(vl_mysql_query(connecting.c, "SELECT 1"), free_self_cb, &connecting);
    vl_loop_free(loop);
    assert_int_equal(open.calls, 1);
    assert_int_equal(open.status, VL_ECANCELED);
    assert_int_equal(open.again_calls, 1);
    assert_int_equal(open.again_status, VL_ECLOSED);
    assert_int_equal(connecting.calls, 1);
    assert_int_equal(connecting.status, VL_ECANCELED);
    assert_int_equal(connecting.again_calls, 1);
    assert_int_equal(connecting.again_status, VL_ECLOSED);
    assert_int_equal(tu_alloc_live(), 0);
}

/* A subnormal DOUBLE is a value like any other: it reads back, through
 * vl_mysql_result_double, as itself; only an overflow is out of range. */
static void subnormal_double(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f;
    const vl_mysql_result *r;
    double d = 0;

    (void)state;
    c = connect_ok(loop, tcp_url(NULL));
    f = query_ok(loop, c, "SELECT 5e-324, 2.5e-310, '1e999'");
    r = vl_future_mysql_result(f);
    assert_int_equal(vl_mysql_result_double(r, 0, 0, &d), VL_OK);
    assert_true(d > 0 && d < 1e-323);
    assert_int_equal(vl_mysql_result_double(r, 0, 1, &d), VL_OK);
    assert_true(d > 2.4e-310 && d < 2.6e-310);
    assert_int_equal(vl_mysql_result_double(r, 0, 2, &d), VL_EINVAL);
    vl_future_free(f);
    vl_mysql_free(c);
    tu_finish(loop);
}

/* Out of memory at every allocation of connect + query: a clean error or
 * success, never a crash or a leak. */
static void out_of_memory(void **state)
{
    long n, total;
    int successes = 0;

    (void)state;
    tcp_url(NULL);
    {
        vl_loop *loop = vl_loop_new();
        vl_mysql *c;
        vl_future *f;
        tu_alloc_fail_at(0);
        c = vl_mysql_new(loop, url_buf, NULL);
        f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1, 'x', NULL"));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
        vl_mysql_free(c);
        total = tu_alloc_count();
        tu_loop_finish(loop);
    }
    for (n = 1; n <= total + 2; n++) {
        vl_loop *loop;
        vl_mysql *c;
        vl_future *f;
        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        c = vl_mysql_new(loop, url_buf, NULL);
        if (c != NULL) {
            f = vl_mysql_query(c, "SELECT 1, 'x', NULL");
            if (f != NULL) {
                vl_loop_run_until(loop, f);
                if (vl_future_status(f) == VL_OK)
                    successes++;
                else
                    assert_true(vl_future_status(f) == VL_ENOMEM || vl_future_status(f) == VL_ECONN);
                vl_future_free(f);
            }
            vl_mysql_free(c);
        }
        vl_loop_run(loop);
        tu_alloc_fail_at(0);
        tu_loop_finish(loop);
    }
    assert_true(successes > 0);
}

/* Connector/C running out of memory while a connection is configured (its
 * handle, its options, the non-blocking context without which the connect
 * would dereference NULL): the connection fails with a clean error, never a
 * crash or a leak. */
static void connector_out_of_memory(void **state)
{
    long n;
    int failed = 0, covered = 0;

    (void)state;
    for (n = 1; n <= 64 && !covered; n++) {
        vl_loop *loop = vl_loop_new();
        vl_mysql *c;
        vl_future *f;
        int status;

        snprintf(url_buf, sizeof(url_buf), "unix://%s?user=%s&password=%s&db=%s",
                 tu_env("VL_TEST_MYSQL_SOCK"), tu_env("VL_TEST_MYSQL_USER"),
                 tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env("VL_TEST_MYSQL_DB"));
        my_calloc_seen = 0;
        my_calloc_fail_at = n;
        c = vl_mysql_new(loop, url_buf, NULL); /* a socket: set up inside the call */
        my_calloc_fail_at = 0;
        covered = my_calloc_seen < n; /* no calloc left to fail */
        assert_non_null(c);
        f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1"));
        status = vl_future_status(f);
        if (status != VL_OK) {
            assert_true(status == VL_ENOMEM || status == VL_ECONN);
            failed++;
        }
        vl_future_free(f);
        vl_mysql_free(c);
        tu_loop_finish(loop);
    }
    assert_true(covered);
    assert_true(failed > 0);
}

typedef struct rule_rec {
    int calls;
    int inside;
    int ran_inside;
    int status;
    vl_mysql_result *kept;
} rule_rec;

static void rule_cb(vl_future *f, void *ud)
{
    rule_rec *r = ud;

    r->calls++;
    r->status = vl_future_status(f);
    if (r->inside)
        r->ran_inside = 1;
    if (vl_future_status(f) == VL_OK)
        r->kept = vl_future_take(f); /* rule 3: keep it past the callback */
}

/* The numbered future rules, on MySQL futures. */
static void future_rules(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *bad = vl_mysql_new(loop, "mysql://u:p@127.0.0.1/db?tls=1", NULL);
    vl_mysql *c;
    rule_rec r1 = {0}, r2 = {0}, r3 = {0};
    vl_future *f;

    (void)state;
    /* Rule 1: an error known before any I/O still comes as a future. */
    f = vl_mysql_query(bad, "SELECT 1");
    assert_non_null(f);
    /* Rule 2: already complete, yet the callback waits for the loop. */
    assert_true(vl_future_done(f));
    r1.inside = 1;
    assert_int_equal(vl_future_then(f, rule_cb, &r1), VL_OK);
    r1.inside = 0;
    assert_int_equal(r1.calls, 0);
    /* Rule 3: a second then is refused. */
    assert_int_equal(vl_future_then(f, rule_cb, &r1), VL_EINVAL);
    vl_loop_run(loop);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.ran_inside, 0);
    assert_int_equal(r1.status, VL_EINVAL);
    vl_mysql_free(bad);

    c = connect_ok(loop, tcp_url(NULL));
    r2.inside = 1;
    /* The sleep keeps the next statement queued behind it (a fast reply can
     * otherwise complete a statement inside the call that sent it; the
     * callback still waits for the loop). */
    vl_future_then(vl_mysql_query(c, "SELECT 'kept', SLEEP(0.05)"), rule_cb, &r2);
    r2.inside = 0;
    /* Rule 4: cancelling delivers VL_ECANCELED once; a second cancel of a
     * completed future does nothing. */
    f = vl_mysql_query(c, "SELECT 2");
    vl_future_then(f, rule_cb, &r3);
    assert_int_equal(vl_future_cancel(f), 1);
    vl_loop_run(loop);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.ran_inside, 0);
    assert_non_null(r2.kept);
    assert_string_equal(vl_mysql_result_value(r2.kept, 0, 0, NULL), "kept");
    vl_mysql_result_free(r2.kept);
    assert_int_equal(r3.calls, 1);
    assert_int_equal(r3.status, VL_ECANCELED);
    /* The connection served both in order and is still usable. */
    exec_ok(loop, c, "SELECT 3");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* A server that accepts TCP but never says hello: the connect deadline
 * covers the handshake, not just the TCP connect. */
static void connect_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, fd = tu_silent_listener(&port);
    char url[256];
    vl_mysql *c;
    vl_future *f;

    (void)state;
    snprintf(url, sizeof(url), "mysql://u:pw@127.0.0.1:%d/db?connect_timeout_ms=200", port);
    c = vl_mysql_new(loop, url, NULL);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "timed out"));
    vl_future_free(f);
    vl_mysql_free(c);
    close(fd);
    tu_loop_finish(loop);
}

/* A program built against an older header: options cut after
 * query_timeout_ms; the rest (limits, charset...) take their defaults. */
typedef struct old_mysql_options {
    size_t struct_size;
    uint64_t connect_timeout_ms;
    uint64_t query_timeout_ms;
} old_mysql_options;

static void options_from_an_older_header(void **state)
{
    vl_loop *loop = vl_loop_new();
    old_mysql_options o;
    vl_mysql_options big;
    vl_mysql *c;
    vl_future *f;

    (void)state;
    vl_mysql_options_init_sized((vl_mysql_options *)(void *)&o, sizeof(o));
    assert_int_equal(o.connect_timeout_ms, 5000);
    o.query_timeout_ms = 0;
    c = vl_mysql_new(loop, tcp_url(NULL), (const vl_mysql_options *)(const void *)&o);
    vl_future_free(tu_run_cmd(loop, vl_mysql_ready(c), VL_OK));
    f = tu_run_cmd(loop, vl_mysql_query(c, "SELECT @@character_set_client"), VL_OK);
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "utf8mb4");
    vl_future_free(f);
    vl_mysql_free(c);

    vl_mysql_options_init(&big);
    big.struct_size = sizeof(big) + 8;
    c = vl_mysql_new(loop, tcp_url(NULL), &big);
    f = tu_run_cmd(loop, vl_mysql_ready(c), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "struct_size"));
    assert_non_null(strstr(vl_mysql_error(c), "newer header"));
    vl_future_free(f);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* Messages name the statement's verb and the endpoint, never the password;
 * the connection's last error reads the same. */
static void messages_name_verb_and_endpoint(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop, tcp_url(NULL));
    vl_future *f;

    (void)state;
    assert_string_equal(vl_mysql_error(c), "");
    f = tu_run_cmd(loop, vl_mysql_query(c, "  select nosuchcolumn"), VL_ESERVER);
    assert_true(strncmp(vl_future_error(f), "SELECT on mysql://", 18) == 0);
    assert_null(strstr(vl_future_error(f), tu_env("VL_TEST_MYSQL_PASSWORD")));
    assert_int_equal(vl_future_mysql_errno(f), 1054);
    assert_string_equal(vl_future_mysql_sqlstate(f), "42S22");
    assert_string_equal(vl_mysql_error(c), vl_future_error(f));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_future_timeout(vl_mysql_query(c, "DO SLEEP(5)"), 50), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "DO on mysql://"));
    vl_future_free(f);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* The loop-alive rule: once nobody waits for a connect (the caller's
 * deadline fired), the connection's own connect timer does not keep
 * vl_loop_run running; a statement queued on it does. */
static void abandoned_connect_lets_the_loop_return(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, fd = tu_silent_listener(&port);
    char url[256];
    vl_mysql *c;
    vl_future *f;

    (void)state;
    snprintf(url, sizeof(url), "mysql://u:pw@127.0.0.1:%d/db", port);
    c = vl_mysql_new(loop, url, NULL); /* connect_timeout_ms 5000 */
    f = tu_run_cmd(loop, vl_future_timeout(vl_mysql_ready(c), 50), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "connect on mysql://127.0.0.1:"));
    vl_future_free(f);
    assert_int_equal(vl_mysql_is_open(c), 0);
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(vl_loop_run(loop), VL_OK); /* returns: nobody waits */
    assert_int_equal(vl_mysql_is_open(c), 0);
    f = vl_mysql_query(c, "SELECT 1"); /* now somebody waits again */
    assert_true(vl_loop_alive(loop) > 0);
    vl_future_free(f);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_mysql_free(c);
    close(fd);
    tu_loop_finish(loop);
}

/* VOLLEY_MYSQL_TRACE=1 prints each state change of a connection to stderr,
 * naming the endpoint by its display form: the states a query and a
 * prepared statement pass through appear in order, the password never. */
static void state_trace(void **state)
{
    char path[] = "/tmp/volley-trace-XXXXXX";
    int fd = mkstemp(path), saved = dup(2);
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_mysql_param p = vl_mysql_p_int64(7);
    char buf[8192];
    ssize_t n;
    const char *want[] = {"IDLE -> CONNECTING", "CONNECTING -> NEXT_OP", "NEXT_OP -> QUERYING",
                          "QUERYING -> READING_RESULT", "READING_RESULT -> FETCHING",
                          "FETCHING -> NEXT_OP", "NEXT_OP -> PREPARING",
                          "PREPARING -> EXECUTING", "EXECUTING -> STORING",
                          "STORING -> STMT_FETCHING", "STMT_FETCHING -> STMT_FREEING",
                          "STMT_FREEING -> NEXT_OP", "NEXT_OP -> IDLE"};
    const char *at;
    size_t i;

    (void)state;
    assert_true(fd >= 0 && saved >= 0);
    setenv("VOLLEY_MYSQL_TRACE", "1", 1);
    assert_int_equal(dup2(fd, 2), 2);
    c = connect_ok(loop, tcp_url(NULL));
    unsetenv("VOLLEY_MYSQL_TRACE");
    vl_future_free(query_ok(loop, c, "SELECT 1"));
    vl_future_free(tu_wait_for(loop, vl_mysql_execute(c, "SELECT ? + 1", &p, 1)));
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    vl_mysql_free(c);
    tu_finish(loop);
    n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_null(strstr(buf, tu_env("VL_TEST_MYSQL_PASSWORD")));
    assert_non_null(strstr(buf, "volley mysql mysql://127.0.0.1:"));
    for (at = buf, i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *hit = strstr(at, want[i]);
        if (hit == NULL)
            fail_msg("trace lacks '%s' after offset %zu:\n%s", want[i], (size_t)(at - buf), buf);
        at = hit + strlen(want[i]);
    }
}

/* The URL of the binlogging primary (GTIDs need a binary log). */
static const char *primary_url(const char *params)
{
    snprintf(url_buf, sizeof(url_buf), "mysql://%s:%s@127.0.0.1:%s/%s%s%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PRIMARY_PORT"), tu_env("VL_TEST_MYSQL_DB"),
             params ? "?" : "", params ? params : "");
    return url_buf;
}

/* Runs `sql` and returns a copy of the GTID its result reports ("" for
 * none). */
static void gtid_of(vl_loop *loop, vl_future *f, char *out, size_t cap)
{
    const char *g;

    f = tu_wait_for(loop, f);
    if (vl_future_status(f) != VL_OK)
        fail_msg("statement: %s", vl_future_error(f));
    g = vl_mysql_result_gtid(vl_future_mysql_result(f));
    snprintf(out, cap, "%s", g != NULL ? g : "");
    vl_future_free(f);
}

/* A commit's GTID comes back on its result (session tracking), the same as
 * @@last_gtid says; reads, uncommitted writes and untracked connections
 * report none. */
static void gtid_of_writes(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop, primary_url("track_gtid=1"));
    vl_mysql *plain;
    vl_mysql_pool *p;
    vl_mysql_param v = vl_mysql_p_int64(5);
    char g1[64], g2[64], g3[64], g4[64], none[64];
    vl_future *f;

    (void)state;
    exec_ok(loop, c, "CREATE TABLE IF NOT EXISTS gtid_t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)");
    gtid_of(loop, vl_mysql_query(c, "INSERT INTO gtid_t (v) VALUES (1)"), g1, sizeof(g1));
    assert_true(g1[0] != '\0');
    assert_non_null(strchr(g1, '-'));
    f = query_ok(loop, c, "SELECT @@last_gtid");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), g1);
    vl_future_free(f);
    gtid_of(loop, vl_mysql_query(c, "SELECT COUNT(*) FROM gtid_t"), none, sizeof(none));
    assert_string_equal(none, "");
    exec_ok(loop, c, "BEGIN");
    gtid_of(loop, vl_mysql_query(c, "INSERT INTO gtid_t (v) VALUES (2)"), none, sizeof(none));
    assert_string_equal(none, ""); /* not committed yet */
    gtid_of(loop, vl_mysql_query(c, "COMMIT"), g2, sizeof(g2));
    assert_true(g2[0] != '\0');
    assert_string_not_equal(g1, g2);
    gtid_of(loop, vl_mysql_execute(c, "INSERT INTO gtid_t (v) VALUES (?)", &v, 1), g3,
            sizeof(g3));
    assert_true(g3[0] != '\0');
    assert_string_not_equal(g2, g3);

    /* Without track_gtid nothing is reported. */
    plain = connect_ok(loop, primary_url(NULL));
    gtid_of(loop, vl_mysql_query(plain, "INSERT INTO gtid_t (v) VALUES (3)"), none, sizeof(none));
    assert_string_equal(none, "");
    vl_mysql_free(plain);

    /* Pooled connections track it. */
    p = vl_mysql_pool_new(loop, primary_url(NULL), NULL);
    assert_non_null(p);
    gtid_of(loop, vl_mysql_pool_execute(p, "INSERT INTO gtid_t (v) VALUES (?)", &v, 1), g4,
            sizeof(g4));
    assert_true(g4[0] != '\0');
    assert_string_not_equal(g3, g4);
    vl_mysql_pool_free(p);

    exec_ok(loop, c, "DROP TABLE gtid_t");
    vl_mysql_free(c);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(select_values, tu_setup),
        cmocka_unit_test_setup(state_trace, tu_setup),
        cmocka_unit_test_setup(gtid_of_writes, tu_setup),
        cmocka_unit_test_setup(subnormal_double, tu_setup),
        cmocka_unit_test_setup(socket_and_hostname, tu_setup),
        cmocka_unit_test_setup(syntax_error, tu_setup),
        cmocka_unit_test_setup(fifo_queue, tu_setup),
        cmocka_unit_test_setup(counts_and_multi, tu_setup),
        cmocka_unit_test_setup(escaping, tu_setup),
        cmocka_unit_test_setup(connect_errors, tu_setup),
        cmocka_unit_test_setup(timeouts, tu_setup),
        cmocka_unit_test_setup(free_pending, tu_setup),
        cmocka_unit_test_setup(free_from_callback, tu_setup),
        cmocka_unit_test_setup(free_self_in_loop_teardown, tu_setup),
        cmocka_unit_test_setup(future_rules, tu_setup),
        cmocka_unit_test_setup(connect_timeout, tu_setup),
        cmocka_unit_test_setup(out_of_memory, tu_setup),
        cmocka_unit_test_setup(connector_out_of_memory, tu_setup),
        cmocka_unit_test_setup(options_from_an_older_header, tu_setup),
        cmocka_unit_test_setup(messages_name_verb_and_endpoint, tu_setup),
        cmocka_unit_test_setup(abandoned_connect_lets_the_loop_return, tu_setup),
    };

    return tu_run("mysql", tests, sizeof(tests) / sizeof(tests[0]));
}
