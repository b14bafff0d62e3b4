/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/fuzz/fuzz_mysql_result.c - libFuzzer target for MySQL result
 * conversion: Connector/C's column metadata and binary-protocol values
 * turned into volley's types and text cells (lib/mysql_convert.c), stored
 * in a result arena and read back through the public accessors
 * (lib/mysql_result.c), the way lib/mysql.c fills a prepared statement's
 * result. Everything is fuzzed: field types (known and unknown), flags,
 * character sets, decimals, column names, and every value, including the
 * ones no sane server sends (a TIME of four billion days, a string longer
 * than its buffer).
 *
 * Input: byte 0 the column count (1-8), byte 1 an allocation to fail (0:
 * none), then per column: field type, flags (2 bytes), character set,
 * decimals, name length and name; then rows, per cell a NULL byte and the
 * value's bytes for its binding (8 for integers and doubles, 4 for floats,
 * 15 for times, a length, a held count and the bytes for the rest).
 * Checked for every input:
 * - the result has the columns and rows put in, with their names and the
 *   converted types, and every cell reads back byte for byte, NULL as NULL,
 *   NUL-terminated;
 * - an integer reads back as the same integer (signed or unsigned as the
 *   column says), a finite double or float as the same value, a time is
 *   text shorter than the conversion buffer, a string never longer than
 *   the bytes held;
 * - out-of-range reads give NULL / VL_EINVAL, never a crash;
 * - nothing leaks, and an allocation failure is reported (NULL or
 *   VL_ENOMEM) and leaks nothing either.
 */
#include "mysql_internal.h"

#include "fuzz_alloc.h"

#include <math.h>
#include <mysql.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_COLS 8
#define MAX_ROWS 64

typedef struct input {
    const uint8_t *p;
    size_t left;
} input;

static unsigned take(input *in, size_t n)
{
    unsigned v = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        v <<= 8;
        if (in->left > 0) {
            v |= *in->p++;
            in->left--;
        }
    }
    return v;
}

static void take_bytes(input *in, void *dst, size_t n)
{
    size_t k = n < in->left ? n : in->left;

    memset(dst, 0, n);
    memcpy(dst, in->p, k);
    in->p += k;
    in->left -= k;
}

typedef struct column {
    int field_type;
    unsigned field_flags, charsetnr, decimals;
    char name[17];
    int type;
    unsigned flags;
} column;

/* What a cell must read back as. */
typedef struct expect {
    int null;
    int kind;
    long long i;
    float fl;
    double d;
    size_t cap;
    char text[VL__MCONV_BUF + 256];
    size_t len;
} expect;

static void check_cell(const vl_mysql_result *r, size_t row, size_t col, const column *c,
                       const expect *e)
{
    size_t len = 99;
    const char *v = vl_mysql_result_value(r, row, col, &len);
    int64_t i64;
    uint64_t u64;
    double d;

    if (e->null) {
        if (v != NULL || len != 0 || !vl_mysql_result_is_null(r, row, col))
            abort();
        if (vl_mysql_result_int64(r, row, col, &i64) != VL_ESTATE)
            abort();
        return;
    }
    if (v == NULL || len != e->len || vl_mysql_result_is_null(r, row, col))
        abort();
    if (memcmp(v, e->text, len) != 0 || v[len] != '\0')
        abort();
    switch (e->kind) {
    case VL__MBIN_INT:
        if (c->field_type == MYSQL_TYPE_YEAR || !(c->field_flags & UNSIGNED_FLAG)) {
            if (vl_mysql_result_int64(r, row, col, &i64) != VL_OK || i64 != e->i)
                abort();
        } else if (vl_mysql_result_uint64(r, row, col, &u64) != VL_OK ||
                   u64 != (uint64_t)e->i) {
            abort();
        }
        break;
    case VL__MBIN_DOUBLE:
        if (isfinite(e->d) &&
            (vl_mysql_result_double(r, row, col, &d) != VL_OK || d != e->d))
            abort();
        break;
    case VL__MBIN_FLOAT:
        /* strtof, not the double read: a double rounded to float can differ
         * from the float the text was printed for. */
        if (isfinite(e->fl) &&
            (vl_mysql_result_double(r, row, col, &d) != VL_OK || strtof(v, NULL) != e->fl))
            abort();
        break;
    case VL__MBIN_TIME:
        if (len >= VL__MCONV_BUF || strlen(v) != len)
            abort();
        break;
    default:
        if (len > e->cap)
            abort();
        /* Whatever the bytes, the typed reads answer without crashing. */
        (void)vl_mysql_result_int64(r, row, col, &i64);
        (void)vl_mysql_result_uint64(r, row, col, &u64);
        (void)vl_mysql_result_double(r, row, col, &d);
        break;
    }
}

/* Reads one cell's value from the input and converts it as lib/mysql.c
 * does after mysql_stmt_fetch. */
static void convert(input *in, const column *c, expect *e, char *scratch)
{
    vl__mbin v;
    MYSQL_TIME t;
    char bytes[256];
    const char *out;
    size_t n;

    memset(&v, 0, sizeof(v));
    memset(&t, 0, sizeof(t));
    e->kind = vl__mconv_bind_kind(c->field_type);
    switch (e->kind) {
    case VL__MBIN_INT:
        take_bytes(in, &v.i, sizeof(v.i));
        e->i = v.i;
        break;
    case VL__MBIN_FLOAT:
        take_bytes(in, &v.fl, sizeof(v.fl));
        e->fl = v.fl;
        break;
    case VL__MBIN_DOUBLE:
        take_bytes(in, &v.d, sizeof(v.d));
        e->d = v.d;
        break;
    case VL__MBIN_TIME:
        t.year = take(in, 4);
        t.month = take(in, 1);
        t.day = take(in, 4);
        t.hour = take(in, 1);
        t.minute = take(in, 1);
        t.second = take(in, 1);
        t.second_part = take(in, 2);
        t.neg = (my_bool)(take(in, 1) & 1);
        v.t = &t;
        break;
    default:
        v.len = take(in, 1);
        v.cap = take(in, 1);
        if (v.cap > v.len)
            v.cap = v.len; /* a buffer holds at most the value */
        take_bytes(in, bytes, v.cap);
        v.bytes = bytes;
        break;
    }
    e->cap = v.cap;
    vl__mconv_value(c->field_type, c->field_flags, c->decimals, &v, scratch, &out, &n);
    if (n > sizeof(e->text))
        abort();
    if (out == scratch && (n >= VL__MCONV_BUF || scratch[n] != '\0'))
        abort();
    memcpy(e->text, out, n);
    e->len = n;
}

/* Builds the result; returns it, or NULL when an allocation failed (every
 * failure must be reported, none may be ignored). */
static vl_mysql_result *build(input *in, column *cols, size_t ncols, expect (*exp)[MAX_COLS],
                              size_t *nrows)
{
    vl_mysql_result *root = vl__mres_new(), *set;
    size_t i;
    char scratch[VL__MCONV_BUF];

    *nrows = 0;
    if (root == NULL)
        return NULL;
    set = vl__mres_add(root);
    if (set == NULL || vl__mres_set_columns(set, ncols) != VL_OK)
        goto fail;
    for (i = 0; i < ncols; i++)
        if (vl__mres_column(set, i, cols[i].name, strlen(cols[i].name), cols[i].type,
                            cols[i].flags) != VL_OK)
            goto fail;
    while (in->left > 0 && *nrows < MAX_ROWS) {
        vl__mcell *cells = vl__mres_row(set);
        if (cells == NULL)
            goto fail;
        for (i = 0; i < ncols; i++) {
            expect *e = &exp[*nrows][i];
            memset(e, 0, sizeof(*e));
            e->null = take(in, 1) & 1;
            if (e->null)
                continue;
            convert(in, &cols[i], e, scratch);
            if (vl__mres_cell(set, &cells[i], e->text, e->len) != VL_OK)
                goto fail;
        }
        (*nrows)++;
    }
    if (vl__mres_finish(set) != VL_OK)
        goto fail;
    vl__mres_counts(set, *nrows, 0, 0);
    return root;
fail:
    vl_mysql_result_free(root);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static expect exp[MAX_ROWS][MAX_COLS];
    column cols[MAX_COLS];
    input in = {data, size};
    size_t ncols, nrows, i, j;
    long fail_at;
    vl_mysql_result *r;

    ncols = 1 + take(&in, 1) % MAX_COLS;
    fail_at = (long)take(&in, 1);
    for (i = 0; i < ncols; i++) {
        size_t nlen;
        column *c = &cols[i];
        c->field_type = (int)take(&in, 1);
        c->field_flags = take(&in, 2);
        c->charsetnr = take(&in, 1);
        c->decimals = take(&in, 1);
        nlen = take(&in, 1) % 17;
        take_bytes(&in, c->name, nlen);
        c->name[nlen] = '\0';
        for (j = 0; j < nlen; j++)
            if (c->name[j] == '\0')
                c->name[j] = '_'; /* names come NUL-terminated from Connector/C */
        c->type = vl__mconv_type(c->field_type, c->field_flags, c->charsetnr, &c->flags);
        if (c->type < VL_MYSQL_NULL || c->type > VL_MYSQL_OTHER ||
            (c->flags & ~(VL_MYSQL_FLAG_UNSIGNED | VL_MYSQL_FLAG_BINARY | VL_MYSQL_FLAG_NOT_NULL)))
            abort();
    }
    fz_alloc_reset(fail_at);
    r = build(&in, cols, ncols, exp, &nrows);
    if (r == NULL) {
        /* Only an allocation failure may stop the build. */
        if (fail_at == 0 || fz_calls < fail_at || fz_live != 0)
            abort();
        fz_alloc_reset(0);
        return 0;
    }
    if (vl_mysql_result_columns(r) != ncols || vl_mysql_result_rows(r) != nrows ||
        !vl_mysql_result_has_rows(r) || vl_mysql_result_affected_rows(r) != nrows ||
        vl_mysql_result_next(r) != NULL)
        abort();
    for (i = 0; i < ncols; i++) {
        long first = -1;
        for (j = 0; j < ncols && first < 0; j++)
            if (strcmp(cols[j].name, cols[i].name) == 0)
                first = (long)j;
        if (strcmp(vl_mysql_result_column_name(r, i), cols[i].name) != 0 ||
            vl_mysql_result_column_type(r, i) != cols[i].type ||
            vl_mysql_result_column_flags(r, i) != cols[i].flags ||
            vl_mysql_result_column_index(r, cols[i].name) != first)
            abort();
    }
    if (vl_mysql_result_column_name(r, ncols) != NULL || vl_mysql_result_column_type(r, ncols) != -1)
        abort();
    for (i = 0; i < nrows; i++)
        for (j = 0; j < ncols; j++)
            check_cell(r, i, j, &cols[j], &exp[i][j]);
    if (vl_mysql_result_value(r, nrows, 0, NULL) != NULL ||
        vl_mysql_result_value(r, 0, ncols, NULL) != NULL ||
        vl_mysql_result_int64(r, nrows, 0, NULL) != VL_EINVAL)
        abort();
    vl_mysql_result_free(r);
    if (fz_live != 0)
        abort();
    fz_alloc_reset(0);
    return 0;
}
