/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_hostile.c - MySQL connections against a hostile server
 * (tests/fixtures/mysql_hostile.py) that sends garbage, stalls, asks for
 * local files or floods, while a healthy connection to the harness mariadbd
 * shares the loop.
 *
 * Each case asserts a clear error (status, and a message naming the
 * endpoint), that the hostile connection is closed, that the healthy one
 * kept working throughout, and that nothing leaked or hung (each test runs
 * under an alarm).
 */
#include "fixture.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* No case needs more than a few seconds; a hang is a failure, not a wait. */
#define WATCHDOG_S 60

static int setup(void **state)
{
    alarm(WATCHDOG_S);
    return tu_setup(state);
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    return 0;
}

static char real_buf[512];

static const char *real_url(void)
{
    snprintf(real_buf, sizeof(real_buf), "mysql://%s:%s@127.0.0.1:%s/%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"));
    return real_buf;
}

static char fx_buf[512];

/* The fixture's URL: any user and password get in. */
static const char *fx_url(const tu_fixture *fx, const char *params)
{
    snprintf(fx_buf, sizeof(fx_buf), "mysql://hostile:pw@%s/db%s%s", fx->url, params ? "?" : "",
             params ? params : "");
    return fx_buf;
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

static void check_value(vl_future *f, const char *want)
{
    const vl_mysql_result *r;

    if (vl_future_status(f) != VL_OK)
        fail_msg("healthy connection: %s", vl_future_error(f));
    r = vl_future_mysql_result(f);
    assert_non_null(r);
    assert_int_equal(vl_mysql_result_rows(r), 1);
    assert_string_equal(vl_mysql_result_value(r, 0, 0, NULL), want);
}

typedef struct hostile_case {
    const char *scenario;
    const char *params;    /* URL parameters for the hostile connection */
    int at_connect;        /* the failure comes while connecting */
    int status;            /* the failure expected */
    const char *text;      /* a part of its message */
    int binary;            /* a prepared statement instead of a text query */
} hostile_case;

/* Runs one hostile scenario next to a healthy connection. Returns the
 * hostile future's message in `msg` for extra checks. */
static void run_case(const hostile_case *hc)
{
    tu_fixture fx;
    vl_loop *loop = vl_loop_new();
    vl_mysql *good, *bad;
    vl_future *fb, *fg, *f;
    int status;

    tu_fixture_start(&fx, "mysql_hostile.py", hc->scenario);
    good = connect_ok(loop, real_url());
    bad = vl_mysql_new(loop, fx_url(&fx, hc->params), NULL);
    assert_non_null(bad);
    /* The healthy connection is busy while the hostile one misbehaves. */
    fg = vl_mysql_query(good, "SELECT 'healthy' FROM (SELECT SLEEP(0.2)) AS s");
    assert_non_null(fg);
    fb = hc->at_connect ? vl_mysql_ready(bad)
         : hc->binary   ? vl_mysql_execute(bad, "SELECT ?", (vl_mysql_param[]){vl_mysql_p_int64(1)}, 1)
                        : vl_mysql_query(bad, "SELECT 1");
    tu_wait_for(loop, fb);
    status = vl_future_status(fb);
    if (status != hc->status)
        fail_msg("%s: status %d (%s), wanted %d", hc->scenario, status, vl_future_error(fb),
                 hc->status);
    /* The message names the endpoint and says what went wrong. */
    if (strstr(vl_future_error(fb), fx.url) == NULL || strstr(vl_future_error(fb), hc->text) == NULL)
        fail_msg("%s: message '%s' lacks '%s' or '%s'", hc->scenario, vl_future_error(fb), fx.url,
                 hc->text);
    printf("# %s: %s: %s\n", hc->scenario, vl_strerror(status), vl_future_error(fb));
    vl_future_free(fb);
    /* That connection is closed for good. */
    assert_false(vl_mysql_is_open(bad));
    f = tu_wait_for(loop, vl_mysql_query(bad, "SELECT 2"));
    assert_true(vl_future_status(f) != VL_OK);
    vl_future_free(f);
    /* The healthy one was not disturbed and still serves. */
    tu_wait_for(loop, fg);
    check_value(fg, "healthy");
    vl_future_free(fg);
    f = tu_wait_for(loop, vl_mysql_query(good, "SELECT 'still'"));
    check_value(f, "still");
    vl_future_free(f);
    vl_mysql_free(bad);
    vl_mysql_free(good);
    tu_finish(loop);
    tu_fixture_stop(&fx);
}

/* A LOCAL INFILE request answering a query: the client never offered
 * CLIENT_LOCAL_FILES and sends no byte of any file. */
static void local_infile_refused(void **state)
{
    hostile_case hc = {"infile", NULL, 0, VL_EPROTO, "infile", 0};
    tu_fixture fx;
    vl_loop *loop;
    vl_mysql *c;
    vl_future *f;
    long caps = -1, sent = -1;
    const char *v;

    (void)state;
    run_case(&hc);
    /* Ask a second fixture of the same scenario, on one connection that
     * triggers the request and a second that reads the report. */
    tu_fixture_start(&fx, "mysql_hostile.py", "infile");
    loop = vl_loop_new();
    c = connect_ok(loop, fx_url(&fx, NULL));
    f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 1"));
    assert_int_equal(vl_future_status(f), VL_EPROTO);
    vl_future_free(f);
    vl_mysql_free(c);
    c = connect_ok(loop, fx_url(&fx, NULL));
    f = tu_wait_for(loop, vl_mysql_query(c, "REPORT"));
    assert_int_equal(vl_future_status(f), VL_OK);
    v = vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL);
    assert_non_null(v);
    assert_int_equal(sscanf(v, "%ld %ld", &caps, &sent), 2);
    vl_future_free(f);
    vl_mysql_free(c);
    tu_finish(loop);
    tu_fixture_stop(&fx);
    /* The fixture saw a handshake response and the end of the transfer. */
    assert_true(caps >= 0);
    assert_int_equal(caps & 0x80 /* CLIENT_LOCAL_FILES */, 0);
    assert_int_equal(sent, 0);
}

/* Garbage where the handshake should be: a protocol error at once, not a
 * connect timeout. */
static void garbage_handshake(void **state)
{
    hostile_case hc = {"garbage", "connect_timeout_ms=20000", 1, VL_EPROTO, "handshake", 0};

    (void)state;
    run_case(&hc);
}

static void truncated_handshake(void **state)
{
    hostile_case hc = {"truncated", NULL, 1, VL_ECONN, "connect", 0};

    (void)state;
    run_case(&hc);
}

static void stalled_handshake(void **state)
{
    hostile_case hc = {"stall_handshake", "connect_timeout_ms=300", 1, VL_ETIMEDOUT, "timed out", 0};

    (void)state;
    run_case(&hc);
}

/* A result that stops mid-row: volley's own read timeout ends it. */
static void stalled_row(void **state)
{
    hostile_case hc = {"stall_row", "read_timeout_ms=300", 0, VL_ETIMEDOUT, "read_timeout_ms", 0};

    (void)state;
    run_case(&hc);
}

static void row_too_big(void **state)
{
    hostile_case hc = {"big_row", "max_row_bytes=1000", 0, VL_EPROTO, "max_row_bytes", 0};

    (void)state;
    run_case(&hc);
}

static void result_too_big(void **state)
{
    hostile_case hc = {"big_result", "max_result_bytes=10000", 0, VL_EPROTO, "max_result_bytes", 0};

    (void)state;
    run_case(&hc);
}

/* A row's length prefix far beyond the limit: refused at once, before a
 * byte of it is buffered, not after waiting for 16 MiB that never come. */
static void huge_length_prefix(void **state)
{
    hostile_case hc = {"huge_prefix", "max_row_bytes=1000&read_timeout_ms=30000", 0, VL_EPROTO,
                       "max_row_bytes", 0};

    (void)state;
    run_case(&hc);
}

/* A server that never answers a prepare: the read timeout closes the
 * connection, and the statement being prepared (not yet in the cache) is
 * freed with it. */
static void stalled_prepare(void **state)
{
    hostile_case hc = {"stall_prepare", "read_timeout_ms=300", 0, VL_ETIMEDOUT, "read_timeout_ms",
                       1};

    (void)state;
    run_case(&hc);
}

static void garbage_column_count(void **state)
{
    hostile_case hc = {"garbage_columns", "read_timeout_ms=2000", 0, VL_EPROTO, "malformed", 0};

    (void)state;
    run_case(&hc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(local_infile_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(garbage_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(truncated_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(stalled_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(stalled_row, setup, teardown),
        cmocka_unit_test_setup_teardown(row_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(result_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(huge_length_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(stalled_prepare, setup, teardown),
        cmocka_unit_test_setup_teardown(garbage_column_count, setup, teardown),
    };

    return tu_run("mysql_hostile", tests, sizeof(tests) / sizeof(tests[0]));
}
