/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_convert.c - Connector/C's column metadata and binary-protocol
 * values in volley's terms: column types and flags, and the text the text
 * protocol would have sent for a value, so that both protocols fill results
 * alike.
 *
 * Pure functions: no MYSQL handle and no I/O (only Connector/C's type
 * constants and MYSQL_TIME), so tests/fuzz/fuzz_mysql_result.c drives them
 * with arbitrary metadata and values. Everything here may come from a
 * hostile server: no input makes a conversion write past its buffer or read
 * past a value.
 */
#include "mysql_internal.h"

#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vl__mconv_type(int field_type, unsigned field_flags, unsigned charsetnr, unsigned *flags)
{
    *flags = 0;
    if (field_flags & UNSIGNED_FLAG)
        *flags |= VL_MYSQL_FLAG_UNSIGNED;
    if (charsetnr == 63)
        *flags |= VL_MYSQL_FLAG_BINARY;
    if (field_flags & NOT_NULL_FLAG)
        *flags |= VL_MYSQL_FLAG_NOT_NULL;
    if (field_flags & ENUM_FLAG)
        return VL_MYSQL_ENUM;
    if (field_flags & SET_FLAG)
        return VL_MYSQL_SET;
    switch (field_type) {
    case MYSQL_TYPE_NULL: return VL_MYSQL_NULL;
    case MYSQL_TYPE_TINY: return VL_MYSQL_TINY;
    case MYSQL_TYPE_SHORT: return VL_MYSQL_SHORT;
    case MYSQL_TYPE_INT24: return VL_MYSQL_INT24;
    case MYSQL_TYPE_LONG: return VL_MYSQL_LONG;
    case MYSQL_TYPE_LONGLONG: return VL_MYSQL_LONGLONG;
    case MYSQL_TYPE_DECIMAL:
    case MYSQL_TYPE_NEWDECIMAL: return VL_MYSQL_DECIMAL;
    case MYSQL_TYPE_FLOAT: return VL_MYSQL_FLOAT;
    case MYSQL_TYPE_DOUBLE: return VL_MYSQL_DOUBLE;
    case MYSQL_TYPE_BIT: return VL_MYSQL_BIT;
    case MYSQL_TYPE_DATE:
    case MYSQL_TYPE_NEWDATE: return VL_MYSQL_DATE;
    case MYSQL_TYPE_TIME:
    case MYSQL_TYPE_TIME2: return VL_MYSQL_TIME;
    case MYSQL_TYPE_DATETIME:
    case MYSQL_TYPE_DATETIME2: return VL_MYSQL_DATETIME;
    case MYSQL_TYPE_TIMESTAMP:
    case MYSQL_TYPE_TIMESTAMP2: return VL_MYSQL_TIMESTAMP;
    case MYSQL_TYPE_YEAR: return VL_MYSQL_YEAR;
    case MYSQL_TYPE_STRING: return VL_MYSQL_CHAR;
    case MYSQL_TYPE_VARCHAR:
    case MYSQL_TYPE_VAR_STRING: return VL_MYSQL_VARCHAR;
    case MYSQL_TYPE_TINY_BLOB:
    case MYSQL_TYPE_MEDIUM_BLOB:
    case MYSQL_TYPE_LONG_BLOB:
    case MYSQL_TYPE_BLOB:
    case MYSQL_TYPE_JSON: return VL_MYSQL_BLOB;
    case MYSQL_TYPE_ENUM: return VL_MYSQL_ENUM;
    case MYSQL_TYPE_SET: return VL_MYSQL_SET;
    case MYSQL_TYPE_GEOMETRY: return VL_MYSQL_GEOMETRY;
    default: return VL_MYSQL_OTHER;
    }
}

int vl__mconv_bind_kind(int field_type)
{
    switch (field_type) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR: return VL__MBIN_INT;
    case MYSQL_TYPE_FLOAT: return VL__MBIN_FLOAT;
    case MYSQL_TYPE_DOUBLE: return VL__MBIN_DOUBLE;
    case MYSQL_TYPE_DATE:
    case MYSQL_TYPE_NEWDATE:
    case MYSQL_TYPE_TIME:
    case MYSQL_TYPE_DATETIME:
    case MYSQL_TYPE_TIMESTAMP: return VL__MBIN_TIME;
    default: return VL__MBIN_BYTES;
    }
}

/* Writes the decimal digits of v so that they end just before `end`, two
 * at a time, and returns where they start. Binary results carry integers
 * that become text for the one result type; snprintf cost more than the
 * rest of the row. */
static char *fmt_u64_before(char *end, uint64_t v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char *p = end;

    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        p[0] = pairs[2 * r];
        p[1] = pairs[2 * r + 1];
    }
    if (v >= 10) {
        p -= 2;
        p[0] = pairs[2 * v];
        p[1] = pairs[2 * v + 1];
    } else {
        *--p = (char)('0' + v);
    }
    return p;
}

/* The shortest text that reads back to the same value, like the server's. */
static size_t fmt_real(char *buf, size_t cap, double v, int is_float)
{
    int p, max = is_float ? 9 : 17;

    for (p = 1; p <= max; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v)
            break;
    }
    return strlen(buf);
}

/* The length snprintf wrote into a buffer of `cap`: what it would have
 * written when that fits, the truncated length otherwise. */
static size_t fitted(int n, size_t cap)
{
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

static size_t fmt_time(char *buf, size_t cap, const MYSQL_TIME *t, int type, unsigned decimals)
{
    size_t n;
    unsigned long frac = t->second_part;

    if (type == MYSQL_TYPE_DATE || type == MYSQL_TYPE_NEWDATE)
        return fitted(snprintf(buf, cap, "%04u-%02u-%02u", t->year, t->month, t->day), cap);
    if (type == MYSQL_TYPE_TIME)
        /* Hours as the server writes them: the day count times 24 plus the
         * hour, in 64 bits so that no value wraps around. */
        n = fitted(snprintf(buf, cap, "%s%02llu:%02u:%02u", t->neg ? "-" : "",
                            (unsigned long long)t->day * 24 + t->hour, t->minute, t->second),
                   cap);
    else
        n = fitted(snprintf(buf, cap, "%04u-%02u-%02u %02u:%02u:%02u", t->year, t->month,
                            t->day, t->hour, t->minute, t->second),
                   cap);
    if (decimals > 0 && decimals <= 6 && n < cap - 1) {
        unsigned d;
        for (d = decimals; d < 6; d++)
            frac /= 10;
        n += fitted(snprintf(buf + n, cap - n, ".%0*lu", (int)decimals, frac), cap - n);
    }
    return n;
}

const char *vl__mconv_int(char *buf, long long v, int is_unsigned, size_t *len)
{
    /* Written backwards, ending at the buffer's last byte. */
    char *end = buf + VL__MCONV_BUF - 1, *p;
    int neg = !is_unsigned && v < 0;

    p = fmt_u64_before(end, neg ? 0 - (uint64_t)v : (uint64_t)v);
    if (neg)
        *--p = '-';
    *end = '\0';
    *len = (size_t)(end - p);
    return p;
}

int vl__mconv_value(int field_type, unsigned field_flags, unsigned decimals, const vl__mbin *v,
                    char *buf, const char **data, size_t *len)
{
    int kind = vl__mconv_bind_kind(field_type);

    *data = buf;
    switch (kind) {
    case VL__MBIN_INT:
        if (field_type == MYSQL_TYPE_YEAR)
            *len = fitted(snprintf(buf, VL__MCONV_BUF, "%04lld", v->i), VL__MCONV_BUF);
        else
            *data = vl__mconv_int(buf, v->i, (field_flags & UNSIGNED_FLAG) != 0, len);
        break;
    case VL__MBIN_FLOAT:
        *len = fmt_real(buf, VL__MCONV_BUF, v->fl, 1);
        break;
    case VL__MBIN_DOUBLE:
        *len = fmt_real(buf, VL__MCONV_BUF, v->d, 0);
        break;
    case VL__MBIN_TIME:
        *len = fmt_time(buf, VL__MCONV_BUF, v->t, field_type, decimals);
        break;
    default:
        /* A value longer than its buffer was truncated by Connector/C
         * (reported as MYSQL_DATA_TRUNCATED): only the bytes held count. */
        *data = v->bytes;
        *len = v->len < v->cap ? v->len : v->cap;
        break;
    }
    return kind;
}
