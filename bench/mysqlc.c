/* SPDX-License-Identifier: BSD-3-Clause */
/* mysqlc.c - Connector/C prepared statements and result conversion for the
 * sync, threads and raw modes (see mysqlc.h). */
#include <stdio.h>
#include <string.h>

#include "mysqlc.h"

int bench_stmt_init(bench_stmt *s, MYSQL *m)
{
    memset(s, 0, sizeof *s);
    s->st = mysql_stmt_init(m);
    if (s->st == NULL) {
        fprintf(stderr, "volley-bench: mysql_stmt_init: %s\n", mysql_error(m));
        return -1;
    }
    return 0;
}

int bench_stmt_open(bench_stmt *s, MYSQL *m, int op)
{
    const char *sql = op == BENCH_OP_POINT ? BENCH_SQL_POINT : BENCH_SQL_INSERT;
    if (bench_stmt_init(s, m) != 0)
        return -1;
    if (mysql_stmt_prepare(s->st, sql, (unsigned long)strlen(sql)) != 0) {
        fprintf(stderr, "volley-bench: prepare %s: %s\n", sql, mysql_stmt_error(s->st));
        bench_stmt_close(s);
        return -1;
    }
    return 0;
}

void bench_stmt_close(bench_stmt *s)
{
    if (s->st)
        mysql_stmt_close(s->st);
    s->st = NULL;
}

int bench_stmt_bind(bench_stmt *s)
{
    /* Bound per request, as a caller that builds its binds next to the
     * values would; the buffers are the request's own. */
    memset(s->param, 0, sizeof s->param);
    s->param[0].buffer_type = MYSQL_TYPE_LONGLONG;
    s->param[0].buffer = &s->q.id;
    if (s->q.nparams > 1) {
        s->v_len = (unsigned long)s->q.v_len;
        s->param[1].buffer_type = MYSQL_TYPE_STRING;
        s->param[1].buffer = s->q.v;
        s->param[1].buffer_length = s->v_len;
        s->param[1].length = &s->v_len;
    }
    return mysql_stmt_bind_param(s->st, s->param) ? -1 : 0;
}

int bench_stmt_read(bench_stmt *s, bench_mreply *out)
{
    memset(out, 0, sizeof *out);
    out->affected = (uint64_t)mysql_stmt_affected_rows(s->st);
    out->cols = mysql_stmt_field_count(s->st);
    if (out->cols == 0)
        return 0;
    out->rows = (size_t)mysql_stmt_num_rows(s->st);
    /* Only the shapes the bench expects are bound; another shape is left
     * for the check to reject. */
    if (out->cols <= 2 && out->rows > 0) {
        memset(s->col, 0, sizeof s->col);
        s->col[0].buffer_type = MYSQL_TYPE_LONGLONG;
        s->col[0].buffer = &s->id;
        s->col[0].is_null = &s->null[0];
        s->col[0].error = &s->err[0];
        s->col[0].length = &s->len[0];
        s->col[1].buffer_type = MYSQL_TYPE_STRING;
        s->col[1].buffer = s->v;
        s->col[1].buffer_length = sizeof s->v;
        s->col[1].is_null = &s->null[1];
        s->col[1].error = &s->err[1];
        s->col[1].length = &s->len[1];
        if (mysql_stmt_bind_result(s->st, s->col) != 0)
            return -1;
        /* Buffered (after store_result): fetch reads memory, no I/O. */
        int rc = mysql_stmt_fetch(s->st);
        if (rc == 1) {
            mysql_stmt_free_result(s->st);
            return -1;
        }
        if (rc == 0 && !s->null[0] && !s->err[0]) {
            out->has_c0 = 1;
            out->c0 = s->id;
        }
        /* A truncated value (MYSQL_DATA_TRUNCATED) is left out: the check
         * then rejects the reply. */
        if (rc == 0 && out->cols > 1 && !s->null[1] && !s->err[1]) {
            out->c1 = s->v;
            out->c1_len = s->len[1];
        }
    }
    /* A stored result is freed in memory only, no I/O. */
    mysql_stmt_free_result(s->st);
    return 0;
}

void bench_text_reply(MYSQL *m, MYSQL_RES *res, bench_mreply *out)
{
    memset(out, 0, sizeof *out);
    out->affected = (uint64_t)mysql_affected_rows(m);
    if (res == NULL)
        return;
    out->rows = (size_t)mysql_num_rows(res);
    out->cols = mysql_num_fields(res);
    MYSQL_ROW row = mysql_fetch_row(res);
    unsigned long *lens = row ? mysql_fetch_lengths(res) : NULL;
    if (row == NULL || lens == NULL)
        return;
    if (out->cols > 0 && row[0] && bench_mysql_int(row[0], lens[0], &out->c0) == 0)
        out->has_c0 = 1;
    if (out->cols > 1 && row[1]) {
        out->c1 = row[1];
        out->c1_len = lens[1];
    }
}
