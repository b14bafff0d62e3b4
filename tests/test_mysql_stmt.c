/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_stmt.c - prepared statements (binary protocol), every
 * column type through both protocols, large values and streaming, against a
 * real mariadbd started by tests/servers.sh.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char url_buf[512];

static const char *tcp_url(void)
{
    snprintf(url_buf, sizeof(url_buf), "mysql://%s:%s@127.0.0.1:%s/%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"));
    return url_buf;
}

static vl_mysql *connect_ok(vl_loop *loop)
{
    vl_mysql *c = vl_mysql_new(loop, tcp_url(), NULL);
    vl_future *f;

    assert_non_null(c);
    f = tu_wait_for(loop, vl_mysql_ready(c));
    if (vl_future_status(f) != VL_OK)
        fail_msg("connect: %s", vl_future_error(f));
    vl_future_free(f);
    return c;
}

static vl_future *query_ok(vl_loop *loop, vl_mysql *c, const char *sql)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_query(c, sql));

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s: %s", sql, vl_future_error(f));
    return f;
}

static void exec_ok(vl_loop *loop, vl_mysql *c, const char *sql)
{
    vl_future_free(query_ok(loop, c, sql));
}

static vl_future *execute_ok(vl_loop *loop, vl_mysql *c, const char *sql, const vl_mysql_param *ps,
                             size_t n)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_execute(c, sql, ps, n));

    if (vl_future_status(f) != VL_OK)
        fail_msg("%s: %s", sql, vl_future_error(f));
    assert_non_null(vl_future_mysql_result(f));
    return f;
}

static const char *const type_table =
    "CREATE TABLE t_types ("
    " id INT PRIMARY KEY,"
    " ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,"
    " mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,"
    " bi BIGINT, biu BIGINT UNSIGNED, de DECIMAL(20,6), fl FLOAT, db DOUBLE,"
    " bt BIT(10), d DATE, tm TIME, dt DATETIME(6), ts TIMESTAMP NULL DEFAULT NULL, y YEAR,"
    " ch CHAR(10), vc VARCHAR(50), bn BINARY(4), vb VARBINARY(20), tx TEXT, bl BLOB,"
    " en ENUM('a','b'), st SET('x','y','z'), js JSON)";

/* Expected text forms of row 1, in column order after id. */
typedef struct expect {
    const char *name;
    int type;
    const char *text;
    size_t len; /* 0: strlen(text) */
} expect;

static const expect row1[] = {
    {"ti", VL_MYSQL_TINY, "-128", 0},
    {"tiu", VL_MYSQL_TINY, "255", 0},
    {"si", VL_MYSQL_SHORT, "-32768", 0},
    {"siu", VL_MYSQL_SHORT, "65535", 0},
    {"mi", VL_MYSQL_INT24, "-8388608", 0},
    {"miu", VL_MYSQL_INT24, "16777215", 0},
    {"i", VL_MYSQL_LONG, "-2147483648", 0},
    {"iu", VL_MYSQL_LONG, "4294967295", 0},
    {"bi", VL_MYSQL_LONGLONG, "-9223372036854775808", 0},
    {"biu", VL_MYSQL_LONGLONG, "18446744073709551615", 0},
    {"de", VL_MYSQL_DECIMAL, "-12345678901234.123456", 0},
    {"fl", VL_MYSQL_FLOAT, "3.25", 0},
    {"db", VL_MYSQL_DOUBLE, "-1.0000000000000002", 0},
    {"bt", VL_MYSQL_BIT, "\x02\xaa", 2},
    {"d", VL_MYSQL_DATE, "2024-02-29", 0},
    {"tm", VL_MYSQL_TIME, "-838:59:59", 0},
    {"dt", VL_MYSQL_DATETIME, "2024-01-02 03:04:05.123456", 0},
    {"ts", VL_MYSQL_TIMESTAMP, "2038-01-19 03:14:07", 0},
    {"y", VL_MYSQL_YEAR, "2024", 0},
    {"ch", VL_MYSQL_CHAR, "abc", 0},
    {"vc", VL_MYSQL_VARCHAR, "h\xc3\xa9llo", 0},
    {"bn", VL_MYSQL_CHAR, "\x00\x01\x02\x00", 4},
    {"vb", VL_MYSQL_VARCHAR, "\x00\xff", 2},
    {"tx", VL_MYSQL_BLOB, "text", 0},
    {"bl", VL_MYSQL_BLOB, "\x00\x01\x02\xff", 4},
    {"en", VL_MYSQL_ENUM, "b", 0},
    {"st", VL_MYSQL_SET, "x,z", 0},
    {"js", VL_MYSQL_BLOB, "{\"k\": [1, 2]}", 0},
};
#define NCOLS (sizeof(row1) / sizeof(row1[0]))

static const char *const insert_row1 =
    "INSERT INTO t_types VALUES (1, -128, 255, -32768, 65535, -8388608, 16777215,"
    " -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,"
    " '-12345678901234.123456', 3.25, -1.0000000000000002, b'1010101010', '2024-02-29',"
    " '-838:59:59', '2024-01-02 03:04:05.123456', '2038-01-19 03:14:07', 2024, 'abc',"
    " 'h\xc3\xa9llo', X'00010200', X'00ff', 'text', X'000102ff', 'b', 'x,z', '{\"k\": [1, 2]}')";

static void check_row1(const vl_mysql_result *r, size_t row)
{
    size_t k;

    assert_int_equal(vl_mysql_result_columns(r), NCOLS + 1);
    for (k = 0; k < NCOLS; k++) {
        size_t len, want = row1[k].len ? row1[k].len : strlen(row1[k].text);
        const char *v = vl_mysql_result_value(r, row, k + 1, &len);
        assert_string_equal(vl_mysql_result_column_name(r, k + 1), row1[k].name);
        if (vl_mysql_result_column_type(r, k + 1) != row1[k].type)
            fail_msg("column %s: type %d, want %d", row1[k].name,
                     vl_mysql_result_column_type(r, k + 1), row1[k].type);
        assert_non_null(v);
        if (len != want || memcmp(v, row1[k].text, want) != 0)
            fail_msg("column %s: got '%.*s' (%zu bytes)", row1[k].name, (int)len, v, len);
    }
    assert_true(vl_mysql_result_column_flags(r, 2) & VL_MYSQL_FLAG_UNSIGNED);
    assert_false(vl_mysql_result_column_flags(r, 1) & VL_MYSQL_FLAG_UNSIGNED);
    assert_true(vl_mysql_result_column_flags(r, 25) & VL_MYSQL_FLAG_BINARY); /* bl */
    assert_false(vl_mysql_result_column_flags(r, 24) & VL_MYSQL_FLAG_BINARY); /* tx */
}

/* Text and binary protocols give the same cells. */
static void same_cells(const vl_mysql_result *a, const vl_mysql_result *b)
{
    size_t row, col;

    assert_int_equal(vl_mysql_result_rows(a), vl_mysql_result_rows(b));
    assert_int_equal(vl_mysql_result_columns(a), vl_mysql_result_columns(b));
    for (row = 0; row < vl_mysql_result_rows(a); row++)
        for (col = 0; col < vl_mysql_result_columns(a); col++) {
            size_t la, lb;
            const char *va = vl_mysql_result_value(a, row, col, &la);
            const char *vb = vl_mysql_result_value(b, row, col, &lb);
            assert_int_equal(vl_mysql_result_column_type(a, col),
                             vl_mysql_result_column_type(b, col));
            if (va == NULL || vb == NULL) {
                if (va != vb)
                    fail_msg("row %zu col %zu: NULL in one protocol only", row, col);
                continue;
            }
            if (la != lb || memcmp(va, vb, la) != 0)
                fail_msg("row %zu col %s: text '%.*s' binary '%.*s'", row,
                         vl_mysql_result_column_name(a, col), (int)la, va, (int)lb, vb);
        }
}

static void all_types(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *ft, *fb, *f;
    const vl_mysql_result *rt, *rb;
    size_t k, len, row;
    int64_t i64;
    uint64_t u64;
    double d;
    vl_mysql_time t1 = {0, 2024, 2, 29, 0, 0, 0, 0};
    vl_mysql_time t2 = {1, 0, 0, 0, 838, 59, 59, 0};
    vl_mysql_time t3 = {0, 2024, 1, 2, 3, 4, 5, 123456};
    vl_mysql_time t4 = {0, 2038, 1, 19, 3, 14, 7, 0};
    vl_mysql_param ps[30];

    (void)state;
    c = connect_ok(loop);
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_types");
    exec_ok(loop, c, type_table);
    exec_ok(loop, c, insert_row1);
    exec_ok(loop, c, "INSERT INTO t_types (id) VALUES (2)");
    exec_ok(loop, c, "INSERT INTO t_types (id, ch, vc, vb, tx, bl) VALUES (3, '', '', '', '', '')");

    /* Row 4 through typed parameters: it must read back like row 1. */
    ps[0] = vl_mysql_p_int64(4);
    ps[1] = vl_mysql_p_int64(-128);
    ps[2] = vl_mysql_p_uint64(255);
    ps[3] = vl_mysql_p_int64(-32768);
    ps[4] = vl_mysql_p_uint64(65535);
    ps[5] = vl_mysql_p_int64(-8388608);
    ps[6] = vl_mysql_p_uint64(16777215);
    ps[7] = vl_mysql_p_int64(INT32_MIN);
    ps[8] = vl_mysql_p_uint64(UINT32_MAX);
    ps[9] = vl_mysql_p_int64(INT64_MIN);
    ps[10] = vl_mysql_p_uint64(UINT64_MAX);
    ps[11] = vl_mysql_p_str("-12345678901234.123456");
    ps[12] = vl_mysql_p_double(3.25);
    ps[13] = vl_mysql_p_double(-1.0000000000000002);
    ps[14] = vl_mysql_p_int64(682);
    ps[15] = vl_mysql_p_time(VL_MYSQL_P_DATE, t1);
    ps[16] = vl_mysql_p_time(VL_MYSQL_P_TIME, t2);
    ps[17] = vl_mysql_p_time(VL_MYSQL_P_DATETIME, t3);
    ps[18] = vl_mysql_p_time(VL_MYSQL_P_DATETIME, t4);
    ps[19] = vl_mysql_p_int64(2024);
    ps[20] = vl_mysql_p_str("abc");
    ps[21] = vl_mysql_p_str("h\xc3\xa9llo");
    ps[22] = vl_mysql_p_blob("\x00\x01\x02\x00", 4);
    ps[23] = vl_mysql_p_blob("\x00\xff", 2);
    ps[24] = vl_mysql_p_str("text");
    ps[25] = vl_mysql_p_blob("\x00\x01\x02\xff", 4);
    ps[26] = vl_mysql_p_str("b");
    ps[27] = vl_mysql_p_str("x,z");
    ps[28] = vl_mysql_p_str("{\"k\": [1, 2]}");
    f = execute_ok(loop, c,
                   "INSERT INTO t_types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                   " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   ps, 29);
    assert_int_equal(vl_mysql_result_affected_rows(vl_future_mysql_result(f)), 1);
    vl_future_free(f);
    /* A row of NULLs through parameters. */
    ps[0] = vl_mysql_p_int64(5);
    for (k = 1; k < 29; k++)
        ps[k] = vl_mysql_p_null();
    vl_future_free(execute_ok(loop, c,
                              "INSERT INTO t_types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                              " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              ps, 29));

    ft = query_ok(loop, c, "SELECT * FROM t_types ORDER BY id");
    fb = execute_ok(loop, c, "SELECT * FROM t_types WHERE id > ? ORDER BY id",
                    (vl_mysql_param[]){vl_mysql_p_int64(0)}, 1);
    rt = vl_future_mysql_result(ft);
    rb = vl_future_mysql_result(fb);
    assert_int_equal(vl_mysql_result_rows(rt), 5);
    check_row1(rt, 0);
    check_row1(rb, 0);
    check_row1(rt, 3);
    check_row1(rb, 3);
    same_cells(rt, rb);
    for (k = 1; k <= NCOLS; k++) {
        /* Row 2: all NULL; row 5 (NULL parameters) too. */
        assert_true(vl_mysql_result_is_null(rt, 1, k));
        assert_true(vl_mysql_result_is_null(rb, 4, k));
    }
    /* Row 3: empty strings, not NULL. */
    for (k = 20; k <= 25; k++) {
        const char *v = vl_mysql_result_value(rb, 2, k, &len);
        if (k == 22) /* BINARY(4) pads with zero bytes */
            continue;
        assert_non_null(v);
        assert_int_equal(len, 0);
    }
    /* The integer readers answer alike for both protocols, whose cells the
     * binary one makes with the integer kept beside its text: values,
     * refusals (too big, negative for uint64, not an integer) and NULLs. */
    for (row = 0; row < 5; row++) {
        for (k = 0; k <= NCOLS; k++) {
            int64_t a = 0, b = 0;
            uint64_t ua = 0, ub = 0;
            int sa = vl_mysql_result_int64(rt, row, k, &a);
            assert_int_equal(vl_mysql_result_int64(rb, row, k, &b), sa);
            assert_true(a == b);
            sa = vl_mysql_result_uint64(rt, row, k, &ua);
            assert_int_equal(vl_mysql_result_uint64(rb, row, k, &ub), sa);
            assert_true(ua == ub);
        }
    }
    /* Typed accessors read the text forms. */
    assert_int_equal(vl_mysql_result_int64(rb, 0, 9, &i64), VL_OK);
    assert_true(i64 == INT64_MIN);
    assert_int_equal(vl_mysql_result_uint64(rb, 0, 10, &u64), VL_OK);
    assert_true(u64 == UINT64_MAX);
    assert_int_equal(vl_mysql_result_int64(rb, 0, 10, &i64), VL_EINVAL);
    assert_int_equal(vl_mysql_result_uint64(rb, 0, 1, &u64), VL_EINVAL);
    assert_int_equal(vl_mysql_result_double(rt, 0, 12, &d), VL_OK);
    assert_true(d == 3.25);
    assert_int_equal(vl_mysql_result_double(rb, 0, 13, &d), VL_OK);
    assert_true(d == -1.0000000000000002);
    assert_int_equal(vl_mysql_result_double(rb, 1, 13, &d), VL_ESTATE);
    vl_future_free(ft);
    vl_future_free(fb);
    exec_ok(loop, c, "DROP TABLE t_types");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* 16 MiB through a parameter, back through both protocols, intact. */
static void big_blob(void **state)
{
    vl_loop *loop = vl_loop_new();
    size_t n = 16u << 20, i, len;
    unsigned char *blob = malloc(n);
    vl_mysql *c;
    vl_mysql_param p[2];
    vl_future *f;
    const char *v;

    (void)state;
    assert_non_null(blob);
    for (i = 0; i < n; i++)
        blob[i] = (unsigned char)(i * 7 + (i >> 13));
    c = connect_ok(loop);
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_big");
    exec_ok(loop, c, "CREATE TABLE t_big (id INT PRIMARY KEY, b LONGBLOB)");
    p[0] = vl_mysql_p_int64(1);
    p[1] = vl_mysql_p_blob(blob, n);
    vl_future_free(execute_ok(loop, c, "INSERT INTO t_big VALUES (?, ?)", p, 2));
    f = query_ok(loop, c, "SELECT b, LENGTH(b) FROM t_big");
    v = vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, &len);
    assert_int_equal(len, n);
    assert_true(memcmp(v, blob, n) == 0);
    vl_future_free(f);
    f = execute_ok(loop, c, "SELECT b FROM t_big WHERE id = ?", p, 1);
    v = vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, &len);
    assert_int_equal(len, n);
    assert_true(memcmp(v, blob, n) == 0);
    vl_future_free(f);
    exec_ok(loop, c, "DROP TABLE t_big");
    vl_mysql_free(c);
    free(blob);
    tu_loop_finish(loop);
}

static long long prepare_count(vl_loop *loop, vl_mysql *c)
{
    vl_future *f = query_ok(loop, c, "SHOW SESSION STATUS LIKE 'Com_stmt_prepare'");
    int64_t v;

    assert_int_equal(vl_mysql_result_int64(vl_future_mysql_result(f), 0, 1, &v), VL_OK);
    vl_future_free(f);
    return (long long)v;
}

/* The same SQL is prepared once per connection, then reused. */
static void statement_cache(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f;
    long long before, after;
    int i;

    (void)state;
    c = connect_ok(loop);
    before = prepare_count(loop, c);
    for (i = 0; i < 5; i++) {
        int64_t v;
        vl_mysql_param p = vl_mysql_p_int64(i);
        f = execute_ok(loop, c, "SELECT ? + 1", &p, 1);
        assert_int_equal(vl_mysql_result_int64(vl_future_mysql_result(f), 0, 0, &v), VL_OK);
        assert_int_equal(v, i + 1);
        vl_future_free(f);
    }
    after = prepare_count(loop, c);
    assert_int_equal(after - before, 1);

    /* Wrong parameter count: VL_EINVAL, the connection carries on. */
    f = tu_wait_for(loop, vl_mysql_execute(c, "SELECT ? + 1", NULL, 0));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    /* A bad statement is a server error with errno and SQLSTATE. */
    f = tu_wait_for(loop, vl_mysql_execute(c, "SELEKT ?", NULL, 0));
    assert_int_equal(vl_future_status(f), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1064);
    assert_string_equal(vl_future_mysql_sqlstate(f), "42000");
    vl_future_free(f);
    /* Execution errors too (duplicate key). */
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_dup");
    exec_ok(loop, c, "CREATE TABLE t_dup (id INT PRIMARY KEY)");
    {
        vl_mysql_param p = vl_mysql_p_int64(1);
        vl_future_free(execute_ok(loop, c, "INSERT INTO t_dup VALUES (?)", &p, 1));
        f = tu_wait_for(loop, vl_mysql_execute(c, "INSERT INTO t_dup VALUES (?)", &p, 1));
        assert_int_equal(vl_future_status(f), VL_ESERVER);
        assert_int_equal(vl_future_mysql_errno(f), 1062);
        assert_string_equal(vl_future_mysql_sqlstate(f), "23000");
        vl_future_free(f);
        f = execute_ok(loop, c, "SELECT COUNT(*) FROM t_dup WHERE id = ?", &p, 1);
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "1");
        vl_future_free(f);
    }
    exec_ok(loop, c, "DROP TABLE t_dup");
    /* Bad parameter types are refused before any I/O. */
    {
        vl_mysql_param p;
        p.type = 99;
        f = tu_wait_for(loop, vl_mysql_execute(c, "SELECT ?", &p, 1));
        assert_int_equal(vl_future_status(f), VL_EINVAL);
        vl_future_free(f);
    }
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* One cached statement executed with parameters whose types and lengths
 * change from one execution to the next (the statement keeps its
 * bindings and binds again only when they change), and after a bulk
 * execution of the same SQL (whose array bindings replace them): every
 * execution sends its own values. CAST keeps the result's columns the same
 * whatever the parameters' types, so the statement stays prepared and the
 * same bindings serve every execution. */
static void parameters_change_between_executions(void **state)
{
    static const char long_text[] = "a value longer than the first buffer of a string parameter";
    vl_loop *loop = vl_loop_new();
    vl_mysql_time t = {0};
    vl_mysql_param p[2];
    vl_mysql *c;
    vl_future *f;
    const vl_mysql_result *r;
    long long before;
    size_t len;
    int round;

    (void)state;
    c = connect_ok(loop);
    before = prepare_count(loop, c);
    for (round = 0; round < 2; round++) {
        p[0] = vl_mysql_p_int64(-7 - round);
        p[1] = vl_mysql_p_str("ab");
        f = execute_ok(loop, c, "SELECT CAST(? AS CHAR), CAST(? AS CHAR)", p, 2);
        r = vl_future_mysql_result(f);
        assert_string_equal(vl_mysql_result_value(r, 0, 0, NULL), round ? "-8" : "-7");
        assert_string_equal(vl_mysql_result_value(r, 0, 1, NULL), "ab");
        vl_future_free(f);

        p[0] = vl_mysql_p_str(long_text);
        p[1] = vl_mysql_p_null();
        f = execute_ok(loop, c, "SELECT CAST(? AS CHAR), CAST(? AS CHAR)", p, 2);
        r = vl_future_mysql_result(f);
        assert_string_equal(vl_mysql_result_value(r, 0, 0, NULL), long_text);
        assert_true(vl_mysql_result_is_null(r, 0, 1));
        vl_future_free(f);

        p[0] = vl_mysql_p_double(2.5);
        p[1] = vl_mysql_p_blob(NULL, 0);
        f = execute_ok(loop, c, "SELECT CAST(? AS CHAR), CAST(? AS CHAR)", p, 2);
        r = vl_future_mysql_result(f);
        assert_string_equal(vl_mysql_result_value(r, 0, 0, NULL), "2.5");
        assert_false(vl_mysql_result_is_null(r, 0, 1));
        assert_non_null(vl_mysql_result_value(r, 0, 1, &len));
        assert_int_equal(len, 0);
        vl_future_free(f);

        t.year = 2026;
        t.month = 12;
        t.day = 1;
        t.hour = 10 + round;
        t.minute = 20;
        t.second = 30;
        p[0] = vl_mysql_p_time(VL_MYSQL_P_DATETIME, t);
        p[1] = vl_mysql_p_uint64(UINT64_MAX);
        f = execute_ok(loop, c, "SELECT CAST(? AS CHAR), CAST(? AS CHAR)", p, 2);
        r = vl_future_mysql_result(f);
        assert_string_equal(vl_mysql_result_value(r, 0, 0, NULL),
                            round ? "2026-12-01 11:20:30" : "2026-12-01 10:20:30");
        assert_string_equal(vl_mysql_result_value(r, 0, 1, NULL), "18446744073709551615");
        vl_future_free(f);
    }
    assert_int_equal(prepare_count(loop, c) - before, 1);

    exec_ok(loop, c, "DROP TABLE IF EXISTS t_rebind");
    exec_ok(loop, c, "CREATE TABLE t_rebind (k INT PRIMARY KEY, v VARCHAR(80))");
    p[0] = vl_mysql_p_int64(1);
    p[1] = vl_mysql_p_str("one");
    vl_future_free(execute_ok(loop, c, "INSERT INTO t_rebind VALUES (?, ?)", p, 2));
    {
        vl_mysql_param rows[4] = {vl_mysql_p_int64(2), vl_mysql_p_str("two"),
                                  vl_mysql_p_int64(3), vl_mysql_p_str("three")};
        f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_rebind VALUES (?, ?)",
                                                    rows, 2, 2));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
    }
    p[0] = vl_mysql_p_int64(4);
    p[1] = vl_mysql_p_str("four");
    vl_future_free(execute_ok(loop, c, "INSERT INTO t_rebind VALUES (?, ?)", p, 2));
    f = query_ok(loop, c, "SELECT GROUP_CONCAT(k, v ORDER BY k) FROM t_rebind");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL),
                        "1one,2two,3three,4four");
    vl_future_free(f);
    exec_ok(loop, c, "DROP TABLE t_rebind");
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

typedef struct streamer {
    size_t batches;
    size_t rows;
    size_t max_batch;
    int64_t last;
    int ordered;
    vl_future *cancel_me; /* cancel after the first batch */
    vl_mysql *free_me;    /* free the connection after the first batch */
} streamer;

static void on_batch(vl_mysql_result *b, void *ud)
{
    streamer *s = ud;
    size_t i;

    s->batches++;
    if (vl_mysql_result_rows(b) > s->max_batch)
        s->max_batch = vl_mysql_result_rows(b);
    assert_int_equal(vl_mysql_result_columns(b), 2);
    assert_string_equal(vl_mysql_result_column_name(b, 0), "seq");
    for (i = 0; i < vl_mysql_result_rows(b); i++) {
        int64_t v;
        assert_int_equal(vl_mysql_result_int64(b, i, 0, &v), VL_OK);
        if (v != s->last + 1)
            s->ordered = 0;
        s->last = v;
        s->rows++;
    }
    if (s->cancel_me != NULL) {
        vl_future_cancel(s->cancel_me);
        s->cancel_me = NULL;
    }
    if (s->free_me != NULL) {
        vl_mysql_free(s->free_me);
        s->free_me = NULL;
    }
}

static void streaming(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f, *g;
    streamer s;

    (void)state;
    c = connect_ok(loop);
    memset(&s, 0, sizeof(s));
    s.ordered = 1;
    f = vl_mysql_query_stream(c, "SELECT seq, REPEAT('x', 100) FROM seq_1_to_2500", 1000,
                              on_batch, &s);
    g = vl_mysql_query(c, "SELECT 'next'");
    /* No batch runs inside either call, even with the second started at once. */
    assert_int_equal(s.batches, 0);
    tu_wait_for(loop, f);
    tu_wait_for(loop, g);
    assert_int_equal(vl_future_status(g), VL_OK);
    vl_future_free(g);
    if (vl_future_status(f) != VL_OK)
        fail_msg("stream: %s", vl_future_error(f));
    assert_int_equal(s.batches, 3);
    assert_int_equal(s.rows, 2500);
    assert_int_equal(s.max_batch, 1000);
    assert_true(s.ordered);
    assert_int_equal(vl_mysql_result_affected_rows(vl_future_mysql_result(f)), 2500);
    assert_int_equal(vl_mysql_result_columns(vl_future_mysql_result(f)), 2);
    assert_int_equal(vl_mysql_result_rows(vl_future_mysql_result(f)), 0);
    vl_future_free(f);

    /* Cancel from the first batch: the rest is drained, the connection
     * stays clean and answers the next query correctly. */
    memset(&s, 0, sizeof(s));
    s.ordered = 1;
    f = vl_mysql_query_stream(c, "SELECT seq, REPEAT('y', 1000) FROM seq_1_to_20000", 100,
                              on_batch, &s);
    s.cancel_me = f;
    g = vl_mysql_query(c, "SELECT 'after'");
    tu_wait_for(loop, f);
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    tu_wait_for(loop, g);
    assert_int_equal(vl_future_status(g), VL_OK);
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(g), 0, 0, NULL), "after");
    assert_int_equal(s.batches, 1);
    assert_true(vl_mysql_is_open(c));
    vl_future_free(f);
    vl_future_free(g);

    /* Multi-statement SQL is not streamed. */
    vl_mysql_free(c);
    {
        char url[600];
        snprintf(url, sizeof(url), "%s?multi_statements=1", tcp_url());
        c = vl_mysql_new(loop, url, NULL);
    }
    memset(&s, 0, sizeof(s));
    s.ordered = 1;
    f = tu_wait_for(loop, vl_mysql_query_stream(c, "SELECT seq, 1 FROM seq_1_to_3; SELECT 2", 0,
                                             on_batch, &s));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    f = query_ok(loop, c, "SELECT 5");
    vl_future_free(f);

    /* Freeing the connection from the batch callback. */
    memset(&s, 0, sizeof(s));
    s.ordered = 1;
    s.free_me = c;
    f = tu_wait_for(loop, vl_mysql_query_stream(c, "SELECT seq, 1 FROM seq_1_to_5000", 10, on_batch,
                                             &s));
    assert_int_equal(vl_future_status(f), VL_ECANCELED);
    assert_int_equal(s.batches, 1);
    vl_future_free(f);

    /* Cancelled before any row: the connection is closed. */
    c = connect_ok(loop);
    memset(&s, 0, sizeof(s));
    f = vl_future_timeout(vl_mysql_query_stream(c, "SELECT SLEEP(2), 1", 10, on_batch, &s), 50);
    tu_wait_for(loop, f);
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    assert_int_equal(s.batches, 0);
    assert_false(vl_mysql_is_open(c));
    vl_future_free(f);
    vl_mysql_free(c);
    tu_loop_finish(loop);
}

/* Limits against the real server, through both protocols and a stream: a
 * row or a result over the connection's limit fails that statement with
 * VL_EPROTO naming the limit and closes that connection only. */
static void limits(void **state)
{
    static const char *const big_rows =
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 200)"
        " SELECT n, REPEAT('x', 1000) FROM t";
    static const struct {
        const char *params;
        const char *sql;
        int binary;
        const char *limit;
    } cases[] = {
        {"max_row_bytes=500", "SELECT REPEAT('x', 1000)", 0, "max_row_bytes"},
        {"max_row_bytes=500", "SELECT REPEAT('x', 1000)", 1, "max_row_bytes"},
        /* Beyond the packet limit too: Connector/C refuses the packet. */
        {"max_row_bytes=500", "SELECT REPEAT('x', 200000)", 0, "max_row_bytes"},
        {"max_row_bytes=500", "SELECT REPEAT('x', 200000)", 1, "max_row_bytes"},
        {"max_result_bytes=50000", NULL, 0, "max_result_bytes"},
        {"max_result_bytes=50000", NULL, 1, "max_result_bytes"},
    };
    vl_loop *loop = vl_loop_new();
    vl_mysql *good;
    size_t i;

    (void)state;
    good = connect_ok(loop);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char url[600];
        const char *sql = cases[i].sql != NULL ? cases[i].sql : big_rows;
        vl_mysql *c;
        vl_future *f, *g;

        snprintf(url, sizeof(url), "%s?%s", tcp_url(), cases[i].params);
        c = vl_mysql_new(loop, url, NULL);
        assert_non_null(c);
        g = vl_mysql_query(good, "SELECT 'fine'");
        f = tu_wait_for(loop, cases[i].binary ? vl_mysql_execute(c, sql, NULL, 0)
                                              : vl_mysql_query(c, sql));
        if (vl_future_status(f) != VL_EPROTO || strstr(vl_future_error(f), cases[i].limit) == NULL)
            fail_msg("case %zu: status %d: %s", i, vl_future_status(f), vl_future_error(f));
        vl_future_free(f);
        assert_false(vl_mysql_is_open(c));
        vl_mysql_free(c);
        tu_wait_for(loop, g);
        assert_int_equal(vl_future_status(g), VL_OK);
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(g), 0, 0, NULL), "fine");
        vl_future_free(g);
    }
    /* The same statements within the limits, and with the defaults. */
    {
        char url[600];
        vl_mysql *c;
        vl_future *f;

        snprintf(url, sizeof(url), "%s?max_row_bytes=2000&max_result_bytes=1000000", tcp_url());
        c = vl_mysql_new(loop, url, NULL);
        f = execute_ok(loop, c, big_rows, NULL, 0);
        assert_int_equal(vl_mysql_result_rows(vl_future_mysql_result(f)), 200);
        vl_future_free(f);
        f = query_ok(loop, c, big_rows);
        assert_int_equal(vl_mysql_result_rows(vl_future_mysql_result(f)), 200);
        vl_future_free(f);
        vl_mysql_free(c);
    }
    /* A stream: the result limit bounds each batch, not the whole stream. */
    {
        static const char *const stream_sql = "SELECT seq, REPEAT('x', 1000) FROM seq_1_to_200";
        char url[600];
        size_t batch;

        snprintf(url, sizeof(url), "%s?max_result_bytes=50000", tcp_url());
        for (batch = 10; batch <= 100; batch += 90) {
            vl_mysql *c = vl_mysql_new(loop, url, NULL);
            vl_future *f;
            streamer s;

            memset(&s, 0, sizeof(s));
            s.ordered = 1;
            f = tu_wait_for(loop, vl_mysql_query_stream(c, stream_sql, batch, on_batch, &s));
            if (batch == 10) {
                assert_int_equal(vl_future_status(f), VL_OK);
                assert_int_equal(s.rows, 200);
                assert_true(s.ordered);
            } else {
                assert_int_equal(vl_future_status(f), VL_EPROTO);
                assert_non_null(strstr(vl_future_error(f), "max_result_bytes"));
                assert_false(vl_mysql_is_open(c));
                assert_true(s.rows < 100);
            }
            vl_future_free(f);
            vl_mysql_free(c);
        }
    }
    vl_mysql_free(good);
    tu_finish(loop);
}

/* A statement's status under an allocation failure: VL_OK or VL_ENOMEM,
 * nothing else. */
static void check_oom_status(vl_future *f, long n)
{
    int st = vl_future_status(f);

    if (st != VL_OK && st != VL_ENOMEM)
        fail_msg("allocation %ld failed: status %d (%s), wanted VL_OK or VL_ENOMEM", n, st,
                 vl_future_error(f));
}

/* After an allocation failure the connection still serves, or (only if the
 * failure hit its connect) reports why it cannot. */
static void still_serves(vl_loop *loop, vl_mysql *c, long n)
{
    vl_future *f = tu_wait_for(loop, vl_mysql_query(c, "SELECT 'after'"));

    if (vl_future_status(f) == VL_OK)
        assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "after");
    else if (vl_mysql_is_open(c) || vl_future_status(f) != VL_ENOMEM)
        fail_msg("allocation %ld: the connection then failed with %d (%s)", n,
                 vl_future_status(f), vl_future_error(f));
    vl_future_free(f);
}

typedef struct oom_case {
    int stream;  /* vl_mysql_query_stream instead of vl_mysql_execute */
    int fresh;   /* connect under the armed failure too */
} oom_case;

/* One pass: returns 1 when the statement succeeded (and was checked). */
static int oom_pass(const oom_case *oc, long n, long *count)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c;
    vl_future *f;
    vl_mysql_param ps[3];
    streamer s;
    int ok = 0;

    assert_non_null(loop);
    memset(&s, 0, sizeof(s));
    s.ordered = 1;
    ps[0] = vl_mysql_p_str("volley");
    ps[1] = vl_mysql_p_double(2.5);
    ps[2] = vl_mysql_p_time(VL_MYSQL_P_DATETIME, (vl_mysql_time){0, 2024, 2, 29, 23, 59, 58, 5});
    if (oc->fresh) {
        tu_alloc_fail_at(n);
        c = vl_mysql_new(loop, tcp_url(), NULL);
    } else {
        c = connect_ok(loop);
        tu_alloc_fail_at(n);
    }
    if (c == NULL) {
        tu_alloc_fail_at(0);
        tu_loop_finish(loop);
        return 0;
    }
    f = oc->stream ? vl_mysql_query_stream(c, "SELECT seq, REPEAT('y', 50) FROM seq_1_to_3000",
                                           1000, on_batch, &s)
                   : vl_mysql_execute(c, "SELECT seq, ?, ?, ? FROM seq_1_to_50", ps, 3);
    if (f != NULL) {
        vl_loop_run_until(loop, f);
        assert_true(vl_future_done(f));
        check_oom_status(f, n);
        if (vl_future_status(f) == VL_OK) {
            const vl_mysql_result *r = vl_future_mysql_result(f);
            ok = 1;
            if (oc->stream) {
                assert_int_equal(s.rows, 3000);
                assert_true(s.ordered);
                assert_int_equal(vl_mysql_result_affected_rows(r), 3000);
            } else {
                assert_int_equal(vl_mysql_result_rows(r), 50);
                assert_string_equal(vl_mysql_result_value(r, 49, 0, NULL), "50");
                assert_string_equal(vl_mysql_result_value(r, 49, 1, NULL), "volley");
                assert_string_equal(vl_mysql_result_value(r, 0, 2, NULL), "2.5");
                assert_string_equal(vl_mysql_result_value(r, 0, 3, NULL),
                                    "2024-02-29 23:59:58.000005");
            }
        }
        vl_future_free(f);
    }
    if (count != NULL)
        *count = tu_alloc_count();
    tu_alloc_fail_at(0);
    still_serves(loop, c, n);
    vl_mysql_free(c);
    tu_finish(loop);
    return ok;
}

/* Out of memory at every allocation of a prepared statement (prepare,
 * bind, execute, the binary rows' conversion) and of a stream (its
 * batches), on an open connection and on a fresh one: a clean VL_ENOMEM
 * or a correct result, the connection still usable, nothing leaked. */
static void stmt_stream_out_of_memory(void **state)
{
    static const oom_case cases[] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long n, total = 0;
        int ok = 0, failed = 0;

        assert_int_equal(oom_pass(&cases[i], 0, &total), 1);
        for (n = 1; n <= total + 2; n++) {
            if (oom_pass(&cases[i], n, NULL))
                ok++;
            else
                failed++;
        }
        printf("# oom %s%s: %ld allocations, %d passes succeeded, %d failed cleanly\n",
               cases[i].stream ? "stream" : "execute", cases[i].fresh ? " (fresh connection)" : "",
               total, ok, failed);
        /* Past the last allocation it succeeds; before, it fails. */
        assert_true(ok > 0);
        assert_true(failed > 0);
    }
}

/* The results of one prepared statement share its column descriptions:
 * a result taken from its future stays whole after the statement left the
 * cache and the connection is gone. */
static void result_outlives_statement(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop);
    vl_mysql_param p = vl_mysql_p_int64(41);
    vl_mysql_result *kept[3];
    vl_future *f;
    int i;

    (void)state;
    for (i = 0; i < 3; i++) {
        f = execute_ok(loop, c, "SELECT ? + 1 AS answer, 'x' AS letter", &p, 1);
        kept[i] = vl_future_take(f);
        vl_future_free(f);
    }
    exec_ok(loop, c, "SELECT 1"); /* another statement in between */
    vl_mysql_free(c);
    for (i = 0; i < 3; i++) {
        assert_string_equal(vl_mysql_result_column_name(kept[i], 0), "answer");
        assert_string_equal(vl_mysql_result_column_name(kept[i], 1), "letter");
        assert_int_equal(vl_mysql_result_column_index(kept[i], "letter"), 1);
        assert_string_equal(vl_mysql_result_value(kept[i], 0, 0, NULL), "42");
    }
    for (i = 0; i < 3; i++)
        vl_mysql_result_free(kept[i]);
    tu_finish(loop);
}

/* A cached statement follows a schema change: after ALTER TABLE retypes
 * and renames a column, the same SQL reads the new type and name (the
 * server prepares it again; volley binds its columns again). */
static void schema_change_rebinds(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop);
    const vl_mysql_result *r;
    vl_future *f;

    (void)state;
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_retype");
    exec_ok(loop, c, "CREATE TABLE t_retype (a INT, b INT)");
    exec_ok(loop, c, "INSERT INTO t_retype VALUES (1, 2)");
    f = execute_ok(loop, c, "SELECT * FROM t_retype", NULL, 0);
    r = vl_future_mysql_result(f);
    assert_string_equal(vl_mysql_result_column_name(r, 1), "b");
    assert_int_equal(vl_mysql_result_column_type(r, 1), VL_MYSQL_LONG);
    vl_future_free(f);
    exec_ok(loop, c, "ALTER TABLE t_retype CHANGE b bname VARCHAR(40)");
    exec_ok(loop, c, "UPDATE t_retype SET bname = 'hello, a longer value'");
    for (int i = 0; i < 2; i++) {
        f = execute_ok(loop, c, "SELECT * FROM t_retype", NULL, 0);
        r = vl_future_mysql_result(f);
        assert_string_equal(vl_mysql_result_column_name(r, 1), "bname");
        assert_int_equal(vl_mysql_result_column_type(r, 1), VL_MYSQL_VARCHAR);
        assert_string_equal(vl_mysql_result_value(r, 0, 1, NULL), "hello, a longer value");
        vl_future_free(f);
    }
    exec_ok(loop, c, "DROP TABLE t_retype");
    vl_mysql_free(c);
    tu_finish(loop);
}

/* ---- bulk execution ---- */

#define BULK_COLS 9

/* Row r of the bulk test table, as parameters (every 7th row has NULLs). */
static void bulk_row(vl_mysql_param *p, long r, char *text, size_t cap)
{
    vl_mysql_time dt = {0}, tm = {0}, dy = {0};
    int null = r % 7 == 3;

    snprintf(text, cap, "row-%ld-\xc3\xa9", r);
    dt.year = 2000 + (unsigned)(r % 30);
    dt.month = 1 + (unsigned)(r % 12);
    dt.day = 1 + (unsigned)(r % 28);
    dt.hour = (unsigned)(r % 24);
    dt.usec = (unsigned)r;
    tm.hour = (unsigned)(r % 800);
    tm.minute = 7;
    tm.negative = r % 2;
    dy.year = 1999;
    dy.month = 12;
    dy.day = 31;
    p[0] = vl_mysql_p_int64(-r * 1000003);
    p[1] = vl_mysql_p_uint64(UINT64_MAX - (uint64_t)r);
    p[2] = vl_mysql_p_double((double)r / 8);
    p[3] = null ? vl_mysql_p_null() : vl_mysql_p_str(text);
    p[4] = vl_mysql_p_blob("\0\xff\1", (size_t)(r % 4));
    p[5] = vl_mysql_p_time(VL_MYSQL_P_DATETIME, dt);
    p[6] = vl_mysql_p_time(VL_MYSQL_P_TIME, tm);
    p[7] = vl_mysql_p_time(VL_MYSQL_P_DATE, dy);
    p[8] = null ? vl_mysql_p_null() : vl_mysql_p_int64(r);
}

static const char *const bulk_insert =
    "INSERT INTO t_bulk (a, b, d, s, bl, dt, tm, dy, n) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/* 1,000 rows of every parameter type in one call: every value reads back as
 * sent (compared with the same rows inserted one by one), NULL cells stay
 * NULL, the counts add up, and the whole bulk was one statement. */
static void bulk_insert_rows(void **state)
{
    enum { N = 1000 };
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop);
    vl_mysql_param *ps = calloc((size_t)N * BULK_COLS, sizeof(*ps));
    char(*texts)[32] = calloc(N, 32);
    const vl_mysql_result *r, *one;
    vl_future *f, *g;
    long i, q0, q1;
    size_t row, col;

    (void)state;
    assert_non_null(ps);
    assert_non_null(texts);
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_bulk");
    exec_ok(loop, c,
            "CREATE TABLE t_bulk (id INT AUTO_INCREMENT PRIMARY KEY, a BIGINT, b BIGINT UNSIGNED,"
            " d DOUBLE, s VARCHAR(64), bl BLOB, dt DATETIME(6), tm TIME, dy DATE, n INT)");
    for (i = 0; i < N; i++)
        bulk_row(ps + i * BULK_COLS, i, texts[i], sizeof(texts[i]));
    f = query_ok(loop, c, "SHOW SESSION STATUS LIKE 'Com_stmt_execute'");
    q0 = atol(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL));
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, bulk_insert, ps, BULK_COLS, N));
    if (vl_future_status(f) != VL_OK)
        fail_msg("bulk: %s", vl_future_error(f));
    r = vl_future_mysql_result(f);
    assert_int_equal(vl_mysql_result_affected_rows(r), N);
    assert_int_equal(vl_mysql_result_insert_id(r), 1);
    vl_future_free(f);
    f = query_ok(loop, c, "SHOW SESSION STATUS LIKE 'Com_stmt_execute'");
    q1 = atol(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL));
    vl_future_free(f);
    assert_int_equal(q1 - q0, 1); /* one execution for 1,000 rows */

    /* The same rows one by one, for comparison, then both sets side by side. */
    exec_ok(loop, c, "CREATE TABLE t_bulk1 LIKE t_bulk");
    for (i = 0; i < N; i++) {
        f = tu_wait_for(loop, vl_mysql_execute(c,
                                               "INSERT INTO t_bulk1 (a, b, d, s, bl, dt, tm, dy, n)"
                                               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                               ps + i * BULK_COLS, BULK_COLS));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
    }
    f = query_ok(loop, c, "SELECT * FROM t_bulk ORDER BY id");
    g = query_ok(loop, c, "SELECT * FROM t_bulk1 ORDER BY id");
    r = vl_future_mysql_result(f);
    one = vl_future_mysql_result(g);
    assert_int_equal(vl_mysql_result_rows(r), N);
    assert_int_equal(vl_mysql_result_rows(one), N);
    for (row = 0; row < N; row++)
        for (col = 0; col < BULK_COLS + 1; col++) {
            size_t la, lb;
            const char *a = vl_mysql_result_value(r, row, col, &la);
            const char *b = vl_mysql_result_value(one, row, col, &lb);
            if ((a == NULL) != (b == NULL) || la != lb || (a && memcmp(a, b, la) != 0))
                fail_msg("row %zu col %zu: bulk '%s', one by one '%s'", row, col,
                         a ? a : "NULL", b ? b : "NULL");
        }
    assert_string_equal(vl_mysql_result_value(r, 11, 4, NULL), "row-11-\xc3\xa9");
    assert_true(vl_mysql_result_is_null(r, 3, 4));
    assert_true(vl_mysql_result_is_null(r, 3, 9));
    vl_future_free(f);
    vl_future_free(g);

    /* The cached statement works for a single row again afterwards. */
    vl_future_free(execute_ok(loop, c, bulk_insert, ps, BULK_COLS));
    f = query_ok(loop, c, "SELECT COUNT(*) FROM t_bulk");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "1001");
    vl_future_free(f);
    exec_ok(loop, c, "DROP TABLE t_bulk, t_bulk1");
    free(ps);
    free(texts);
    vl_mysql_free(c);
    tu_finish(loop);
}

/* Under autocommit a bulk is one statement: a duplicate key in its last row
 * fails the call with the server's error and leaves none of its rows. Bad
 * input fails up front, nothing sent, and the connection carries on. */
static void bulk_all_or_nothing(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop);
    vl_mysql_param ps[6];
    vl_future *f;

    (void)state;
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_bulk2");
    exec_ok(loop, c, "CREATE TABLE t_bulk2 (id INT PRIMARY KEY, v VARCHAR(8)) ENGINE=InnoDB");
    ps[0] = vl_mysql_p_int64(1);
    ps[1] = vl_mysql_p_str("a");
    ps[2] = vl_mysql_p_int64(2);
    ps[3] = vl_mysql_p_str("b");
    ps[4] = vl_mysql_p_int64(1); /* duplicate */
    ps[5] = vl_mysql_p_str("c");
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_bulk2 VALUES (?, ?)", ps, 2, 3));
    assert_int_equal(vl_future_status(f), VL_ESERVER);
    assert_int_equal(vl_future_mysql_errno(f), 1062);
    vl_future_free(f);
    f = query_ok(loop, c, "SELECT COUNT(*) FROM t_bulk2");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "0");
    vl_future_free(f);

    /* A column whose types differ between rows. */
    ps[4] = vl_mysql_p_str("3");
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_bulk2 VALUES (?, ?)", ps, 2, 3));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "bulk row 2 column 0 is STRING, but the column is INT64"));
    vl_future_free(f);
    /* No rows, no columns, the wrong number of markers. */
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_bulk2 VALUES (?, ?)", ps, 2, 0));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_bulk2 VALUES (?, ?)", ps, 0, 2));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    vl_future_free(f);
    {
        vl_mysql_param ints[6];
        int k;
        for (k = 0; k < 6; k++)
            ints[k] = vl_mysql_p_int64(k);
        f = tu_wait_for(loop,
                        vl_mysql_execute_bulk(c, "INSERT INTO t_bulk2 VALUES (?, ?)", ints, 3, 2));
    }
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "2 parameter markers, 3 given"));
    vl_future_free(f);
    ps[4] = vl_mysql_p_int64(3);
    /* And a good one after all that. */
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_bulk2 VALUES (?, ?)", ps, 2, 3));
    assert_int_equal(vl_future_status(f), VL_OK);
    assert_int_equal(vl_mysql_result_affected_rows(vl_future_mysql_result(f)), 3);
    vl_future_free(f);
    exec_ok(loop, c, "DROP TABLE t_bulk2");
    vl_mysql_free(c);
    tu_finish(loop);
}

/* INSERT ... RETURNING in bulk: the rows come back in the result when
 * they fit one round trip; a bulk that would need more is refused before
 * anything is sent (its returned rows could not all be read). */
static void bulk_returning(void **state)
{
    enum { SMALL = 10, BIG = 12000, LEN = 500 };
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop);
    vl_mysql_param *ps = calloc((size_t)BIG * 2, sizeof(*ps));
    char *text = malloc(LEN);
    const vl_mysql_result *r;
    vl_future *f;
    int i;

    (void)state;
    assert_non_null(ps);
    assert_non_null(text);
    memset(text, 'y', LEN);
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_ret");
    exec_ok(loop, c, "CREATE TABLE t_ret (id INT PRIMARY KEY, v VARCHAR(600))");
    for (i = 0; i < BIG; i++) {
        ps[2 * i] = vl_mysql_p_int64(i);
        ps[2 * i + 1] = vl_mysql_p_blob(text, LEN);
    }
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_ret VALUES (?, ?) RETURNING id",
                                                ps, 2, SMALL));
    if (vl_future_status(f) != VL_OK)
        fail_msg("bulk: %s", vl_future_error(f));
    r = vl_future_mysql_result(f);
    assert_int_equal(vl_mysql_result_rows(r), SMALL);
    assert_string_equal(vl_mysql_result_value(r, SMALL - 1, 0, NULL), "9");
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_ret VALUES (?, ?) RETURNING id",
                                                ps + 2 * SMALL, 2, BIG - SMALL));
    assert_int_equal(vl_future_status(f), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "RETURNING"));
    vl_future_free(f);
    f = query_ok(loop, c, "SELECT COUNT(*) FROM t_ret");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "10");
    vl_future_free(f);
    exec_ok(loop, c, "DROP TABLE t_ret");
    free(ps);
    free(text);
    vl_mysql_free(c);
    tu_finish(loop);
}

/* 12 MB of rows: more than one round trip's budget, so the call runs
 * several executions; every row arrives once. */
static void bulk_many_round_trips(void **state)
{
    enum { N = 24000, LEN = 500 };
    vl_loop *loop = vl_loop_new();
    vl_mysql *c = connect_ok(loop);
    vl_mysql_param *ps = calloc((size_t)N * 2, sizeof(*ps));
    char *text = malloc(LEN);
    vl_future *f;
    long i, q0, q1;

    (void)state;
    assert_non_null(ps);
    assert_non_null(text);
    memset(text, 'x', LEN);
    exec_ok(loop, c, "DROP TABLE IF EXISTS t_bulk3");
    exec_ok(loop, c, "CREATE TABLE t_bulk3 (id INT PRIMARY KEY, v VARCHAR(600))");
    for (i = 0; i < N; i++) {
        ps[2 * i] = vl_mysql_p_int64(i);
        ps[2 * i + 1] = vl_mysql_p_blob(text, LEN);
    }
    f = query_ok(loop, c, "SHOW SESSION STATUS LIKE 'Com_stmt_execute'");
    q0 = atol(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL));
    vl_future_free(f);
    f = tu_wait_for(loop, vl_mysql_execute_bulk(c, "INSERT INTO t_bulk3 VALUES (?, ?)", ps, 2, N));
    if (vl_future_status(f) != VL_OK)
        fail_msg("bulk: %s", vl_future_error(f));
    assert_int_equal(vl_mysql_result_affected_rows(vl_future_mysql_result(f)), N);
    vl_future_free(f);
    f = query_ok(loop, c, "SHOW SESSION STATUS LIKE 'Com_stmt_execute'");
    q1 = atol(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL));
    vl_future_free(f);
    assert_int_equal(q1 - q0, 3); /* 12.6 MB of rows in round trips of 4 MiB */
    f = query_ok(loop, c, "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id), SUM(LENGTH(v)) FROM t_bulk3");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 0, NULL), "24000");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 1, NULL), "24000");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 2, NULL), "0");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 3, NULL), "23999");
    assert_string_equal(vl_mysql_result_value(vl_future_mysql_result(f), 0, 4, NULL), "12000000");
    vl_future_free(f);
    exec_ok(loop, c, "DROP TABLE t_bulk3");
    free(ps);
    free(text);
    vl_mysql_free(c);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(all_types, tu_setup),
        cmocka_unit_test_setup(big_blob, tu_setup),
        cmocka_unit_test_setup(statement_cache, tu_setup),
        cmocka_unit_test_setup(parameters_change_between_executions, tu_setup),
        cmocka_unit_test_setup(streaming, tu_setup),
        cmocka_unit_test_setup(limits, tu_setup),
        cmocka_unit_test_setup(stmt_stream_out_of_memory, tu_setup),
        cmocka_unit_test_setup(result_outlives_statement, tu_setup),
        cmocka_unit_test_setup(schema_change_rebinds, tu_setup),
        cmocka_unit_test_setup(bulk_returning, tu_setup),
        cmocka_unit_test_setup(bulk_insert_rows, tu_setup),
        cmocka_unit_test_setup(bulk_all_or_nothing, tu_setup),
        cmocka_unit_test_setup(bulk_many_round_trips, tu_setup),
    };

    return tu_run("mysql_stmt", tests, sizeof(tests) / sizeof(tests[0]));
}
