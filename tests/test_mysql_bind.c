/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_bind.c - parameters and result rows as MYSQL_BINDs
 * (lib/mysql_bind.c); no server needed. */
#include "testutil.h"

#include "mysql_bind.h"

#include <string.h>

static void parameter_checks(void **state)
{
    vl_mysql_param p[4];
    size_t total, bad;
    const char *why;

    (void)state;
    p[0] = vl_mysql_p_int64(-5);
    p[1] = vl_mysql_p_str("abc");
    p[2] = vl_mysql_p_blob("\0\1", 2);
    p[3] = vl_mysql_p_null();
    assert_int_equal(vl__mysql_check_params(p, 4, &total, &bad, &why), VL_OK);
    assert_int_equal(total, 5);

    p[2].v.str.ptr = NULL;
    assert_int_equal(vl__mysql_check_params(p, 4, &total, &bad, &why), VL_EINVAL);
    assert_int_equal(bad, 2);
    assert_string_equal(why, "has no data");

    p[2] = vl_mysql_p_blob(NULL, 0); /* empty: no data needed */
    p[3].type = 99;
    assert_int_equal(vl__mysql_check_params(p, 4, &total, &bad, &why), VL_EINVAL);
    assert_int_equal(bad, 3);
    assert_string_equal(why, "has a bad type");
}

static void parameters_copied_and_bound(void **state)
{
    char text[] = "hello";
    vl_mysql_param p[7];
    vl_mysql_time t = {0};
    vl__mparams cp;
    vl__mpbind pb;
    MYSQL_BIND *b;
    MYSQL_TIME *times;
    size_t total, bad;
    const char *why;

    (void)state;
    p[0] = vl_mysql_p_int64(-42);
    p[1] = vl_mysql_p_uint64(UINT64_MAX);
    p[2] = vl_mysql_p_double(2.5);
    p[3] = vl_mysql_p_str(text);
    p[4] = vl_mysql_p_blob(NULL, 0);
    t.hour = 838;
    t.minute = 59;
    t.negative = 1;
    p[5] = vl_mysql_p_time(VL_MYSQL_P_TIME, t);
    t.year = 2026;
    t.month = 12;
    t.day = 1;
    t.hour = 0;
    p[6] = vl_mysql_p_time(VL_MYSQL_P_DATE, t);
    assert_int_equal(vl__mysql_check_params(p, 7, &total, &bad, &why), VL_OK);
    assert_int_equal(vl__mparams_copy(&cp, p, 7, total), VL_OK);
    text[0] = 'J'; /* the copy is the op's own */
    assert_ptr_not_equal(cp.params[3].v.str.ptr, text);
    assert_memory_equal(cp.params[3].v.str.ptr, "hello", 5);
    assert_non_null(cp.params[4].v.str.ptr);

    memset(&pb, 0, sizeof(pb));
    assert_int_equal(vl__mpbind_set(&pb, &cp), 1); /* never bound: bind */
    b = pb.bind;
    times = pb.times;
    assert_int_equal(b[0].buffer_type, MYSQL_TYPE_LONGLONG);
    assert_int_equal(*(long long *)b[0].buffer, -42);
    assert_false(b[0].is_unsigned);
    assert_int_equal(b[1].buffer_type, MYSQL_TYPE_LONGLONG);
    assert_true(b[1].is_unsigned);
    assert_int_equal(b[2].buffer_type, MYSQL_TYPE_DOUBLE);
    /* Strings are copied into the binding's own buffer; Connector/C reads
     * their length through the binding's length pointer. */
    assert_int_equal(b[3].buffer_type, MYSQL_TYPE_STRING);
    assert_int_equal(*b[3].length, 5);
    assert_memory_equal(b[3].buffer, "hello", 5);
    assert_ptr_not_equal(b[3].buffer, cp.params[3].v.str.ptr);
    /* An empty blob still has a buffer: one without reads as NULL. */
    assert_int_equal(b[4].buffer_type, MYSQL_TYPE_BLOB);
    assert_int_equal(*b[4].length, 0);
    assert_non_null(b[4].buffer);
    /* TIME: the protocol carries days plus hours below 24. */
    assert_int_equal(b[5].buffer_type, MYSQL_TYPE_TIME);
    assert_int_equal(times[5].day, 34);
    assert_int_equal(times[5].hour, 22);
    assert_int_equal(times[5].minute, 59);
    assert_true(times[5].neg);
    assert_int_equal(times[5].time_type, MYSQL_TIMESTAMP_TIME);
    assert_int_equal(b[6].buffer_type, MYSQL_TYPE_DATE);
    assert_int_equal(times[6].year, 2026);
    assert_int_equal(times[6].time_type, MYSQL_TIMESTAMP_DATE);


    /* Bound: the next values go into the same storage, with no new binding
     * while the types stay and the strings fit. */
    pb.bound = 1;
    cp.params[0].v.i64 = 7;
    cp.params[3].v.str.ptr = "bye";
    cp.params[3].v.str.len = 3;
    assert_int_equal(vl__mpbind_set(&pb, &cp), 0);
    assert_ptr_equal(pb.bind, b);
    assert_int_equal(*(long long *)b[0].buffer, 7);
    assert_int_equal(*b[3].length, 3);
    assert_memory_equal(b[3].buffer, "bye", 3);
    /* A changed type, or a string that outgrows its buffer, binds again. */
    cp.params[0] = vl_mysql_p_null();
    assert_int_equal(vl__mpbind_set(&pb, &cp), 1);
    assert_int_equal(b[0].buffer_type, MYSQL_TYPE_NULL);
    pb.bound = 1;
    cp.params[3].v.str.ptr = "a string longer than the thirty-two bytes first given";
    cp.params[3].v.str.len = strlen(cp.params[3].v.str.ptr);
    assert_int_equal(vl__mpbind_set(&pb, &cp), 1);
    assert_int_equal(*b[3].length, cp.params[3].v.str.len);
    assert_memory_equal(b[3].buffer, cp.params[3].v.str.ptr, cp.params[3].v.str.len);
    assert_int_equal(b[3].buffer_type, MYSQL_TYPE_STRING);

    pb.bound = 1;
    cp.params[0].type = 77; /* not a type volley knows */
    assert_int_equal(vl__mpbind_set(&pb, &cp), VL_EINVAL);
    assert_false(pb.bound);
    vl__mpbind_clear(&pb);
    vl__mparams_clear(&cp);
    assert_int_equal(tu_alloc_live(), 0);
}

/* A fetched row of four columns (BIGINT UNSIGNED, DOUBLE, VARCHAR, a NULL
 * INT) becomes text cells as the text protocol would send them. */
static void rows_bound_and_stored(void **state)
{
    MYSQL_FIELD f[4];
    vl__mrow row;
    vl_mysql_result *r;
    size_t len;

    (void)state;
    memset(f, 0, sizeof(f));
    f[0].type = MYSQL_TYPE_LONGLONG;
    f[0].flags = UNSIGNED_FLAG;
    f[1].type = MYSQL_TYPE_DOUBLE;
    f[2].type = MYSQL_TYPE_VAR_STRING;
    f[2].length = 10;
    f[3].type = MYSQL_TYPE_LONG;
    assert_int_equal(vl__mrow_bind(&row, f, 4), VL_OK);
    assert_int_equal(row.n, 4);
    assert_int_equal(row.bind[0].buffer_type, MYSQL_TYPE_LONGLONG);
    assert_true(row.bind[0].is_unsigned);
    assert_int_equal(row.bind[1].buffer_type, MYSQL_TYPE_DOUBLE);
    assert_int_equal(row.bind[2].buffer_type, MYSQL_TYPE_BLOB);
    assert_int_equal(row.bind[2].buffer_length, 11); /* declared length + NUL */
    /* A longer value grows the buffer; the binding follows it. */
    assert_int_equal(vl__mrow_grow(&row, 2, 5), VL_OK);
    assert_int_equal(row.bind[2].buffer_length, 11);
    assert_int_equal(vl__mrow_grow(&row, 2, 40), VL_OK);
    assert_int_equal(row.bind[2].buffer_length, 44);
    assert_ptr_equal(row.bind[2].buffer, row.bufs[2]);

    /* What mysql_stmt_fetch would have filled in. */
    row.vals[0].i = (long long)UINT64_MAX;
    row.lens[0] = 8;
    row.vals[1].d = 0.1;
    row.lens[1] = 8;
    memcpy(row.bufs[2], "volley", 6);
    row.lens[2] = 6;
    row.nulls[3] = 1;
    assert_int_equal(vl__mrow_bytes(&row), 22);

    r = vl__mres_new();
    assert_non_null(r);
    assert_int_equal(vl__mres_set_columns(r, 4), VL_OK);
    assert_int_equal(vl__mrow_store(&row, f, r), VL_OK);
    assert_int_equal(vl__mres_finish(r), VL_OK);
    assert_int_equal(vl_mysql_result_rows(r), 1);
    assert_string_equal(vl_mysql_result_value(r, 0, 0, &len), "18446744073709551615");
    assert_string_equal(vl_mysql_result_value(r, 0, 1, &len), "0.1");
    assert_string_equal(vl_mysql_result_value(r, 0, 2, &len), "volley");
    assert_int_equal(len, 6);
    assert_true(vl_mysql_result_is_null(r, 0, 3));
    vl_mysql_result_free(r);
    vl__mrow_clear(&row);
    assert_int_equal(tu_alloc_live(), 0);
}

static void out_of_memory(void **state)
{
    MYSQL_FIELD f[3];
    vl_mysql_param p[2];
    long n;
    int ok = 0;

    (void)state;
    memset(f, 0, sizeof(f));
    f[0].type = MYSQL_TYPE_BLOB;
    f[1].type = MYSQL_TYPE_STRING;
    f[2].type = MYSQL_TYPE_LONG;
    p[0] = vl_mysql_p_str("x");
    p[1] = vl_mysql_p_blob("yz", 2);
    for (n = 1; n < 20 && !ok; n++) {
        vl__mrow row;
        vl__mparams cp;
        int r1, r2;
        tu_alloc_fail_at(n);
        r1 = vl__mrow_bind(&row, f, 3);
        if (r1 == VL_OK)
            vl__mrow_clear(&row);
        r2 = vl__mparams_copy(&cp, p, 2, 3);
        if (r2 == VL_OK)
            vl__mparams_clear(&cp);
        tu_alloc_fail_at(0);
        assert_true(r1 == VL_OK || r1 == VL_ENOMEM);
        assert_true(r2 == VL_OK || r2 == VL_ENOMEM);
        ok = r1 == VL_OK && r2 == VL_OK;
        assert_int_equal(tu_alloc_live(), 0);
    }
    assert_true(ok);
}

/* Bulk rows as column arrays: types checked per column, NULL cells marked,
 * strings as pointer arrays, and round trips cut to the byte budget. */
static void bulk_columns(void **state)
{
    vl_mysql_param p[6];
    vl__mparams cp;
    vl__mbulk b;
    MYSQL_BIND bind[2];
    size_t total, row, col;
    char why[128];

    (void)state;
    p[0] = vl_mysql_p_int64(1);
    p[1] = vl_mysql_p_str("aa");
    p[2] = vl_mysql_p_null();
    p[3] = vl_mysql_p_str("bbbb");
    p[4] = vl_mysql_p_int64(3);
    p[5] = vl_mysql_p_null();
    assert_int_equal(vl__mbulk_check(p, 2, 3, &total, &row, &col, why, sizeof(why)), VL_OK);
    assert_int_equal(total, 6);
    assert_int_equal(vl__mparams_copy(&cp, p, 6, total), VL_OK);
    assert_int_equal(vl__mbulk_build(&b, &cp, 2, 3), VL_OK);
    assert_int_equal(b.types[0], VL_MYSQL_P_INT64);
    assert_int_equal(b.types[1], VL_MYSQL_P_STRING);
    assert_int_equal(b.inds[0][1], STMT_INDICATOR_NULL);
    assert_int_equal(b.inds[1][2], STMT_INDICATOR_NULL);
    assert_int_equal(((long long *)b.vals[0])[2], 3);
    assert_memory_equal(((const char **)b.vals[1])[1], "bbbb", 4);
    assert_int_equal(b.lens[1][1], 4);
    /* Row sizes: 2 + 13 + 11, 2 + 13, 2 + 13: all in a big budget, one
     * row per trip in a tiny one (never zero). */
    assert_int_equal(vl__mbulk_chunk(&b, 0, 1 << 20), 3);
    assert_int_equal(vl__mbulk_chunk(&b, 0, 30), 1);
    assert_int_equal(vl__mbulk_chunk(&b, 1, 30), 2);
    assert_int_equal(vl__mbulk_chunk(&b, 0, 1), 1);
    memset(bind, 0, sizeof(bind));
    vl__mbulk_bind(&b, 1, bind);
    assert_int_equal(bind[0].buffer_type, MYSQL_TYPE_LONGLONG);
    assert_ptr_equal(bind[0].buffer, (long long *)b.vals[0] + 1);
    assert_int_equal(bind[1].buffer_type, MYSQL_TYPE_STRING);
    assert_ptr_equal(bind[1].length, b.lens[1] + 1);
    assert_ptr_equal(bind[1].u.indicator, b.inds[1] + 1);
    vl__mbulk_clear(&b);
    vl__mparams_clear(&cp);

    p[4] = vl_mysql_p_double(3.0);
    assert_int_equal(vl__mbulk_check(p, 2, 3, &total, &row, &col, why, sizeof(why)), VL_EINVAL);
    assert_int_equal(row, 2);
    assert_int_equal(col, 0);
    assert_string_equal(why, "is DOUBLE, but the column is INT64 (row 0)");
    p[4].type = 42;
    assert_int_equal(vl__mbulk_check(p, 2, 3, &total, &row, &col, why, sizeof(why)), VL_EINVAL);
    assert_string_equal(why, "has a bad type");
    assert_int_equal(tu_alloc_live(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(parameter_checks, tu_setup),
        cmocka_unit_test_setup(parameters_copied_and_bound, tu_setup),
        cmocka_unit_test_setup(rows_bound_and_stored, tu_setup),
        cmocka_unit_test_setup(bulk_columns, tu_setup),
        cmocka_unit_test_setup(out_of_memory, tu_setup),
    };

    return tu_run("mysql_bind", tests, sizeof(tests) / sizeof(tests[0]));
}
