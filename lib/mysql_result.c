/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_result.c - MySQL results: one allocation arena per chain.
 *
 * A result chain (one link per statement of a multi-statement call) lives in
 * a list of arena chunks owned by its first link, which itself sits at the
 * start of the first chunk. Rows and cells are bump-allocated and never
 * freed one by one: vl_mysql_result_free releases the chunks, and that is
 * all. Rows are linked while they arrive (their count is unknown until the
 * end) and indexed once, by vl__mres_finish.
 */
#include "mysql_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;
    size_t size;
} chunk;

typedef struct vl__mcol {
    const char *name;
    int type;
    unsigned flags;
} vl__mcol;

typedef struct rowlink {
    struct rowlink *next;
    vl__mcell cells[];
} rowlink;

/* Column descriptions shared by every result of one prepared statement:
 * made once, counted (atomically: a result may be freed on another thread
 * than the loop's), never changed. */
struct vl__mcolset {
    long refs;
    size_t n;
    vl__mcol cols[];
};

struct vl_mysql_result {
    uint32_t magic;
    vl_mysql_result *root;
    vl_mysql_result *next;
    vl_mysql_result *last;  /* root: the chain's last link */
    int used;               /* this link holds a statement's outcome */
    int has_rows;
    size_t ncols;
    vl__mcol *cols;         /* in the arena, or in colset */
    vl__mcolset *colset;    /* a reference, released with the result */
    size_t nrows;
    uint64_t int_cols;      /* columns (the first 64) whose cells keep their integer */
    uint64_t uint_cols;     /* ... of an unsigned column */
    vl__mcell **rows;       /* built by vl__mres_finish */
    vl__mcell *one_row;     /* rows' one entry when there is a single row */
    rowlink *rhead, *rtail;
    uint64_t affected;
    uint64_t insert_id;
    unsigned warnings;
    const char *gtid;       /* the commit's GTID, in the arena; NULL when none */
    /* root only: the arena and the error of a failed future */
    chunk *chunks;
    char *cur;
    size_t left;
    size_t next_size;
    unsigned err_no;
    char sqlstate[6];
    const char *err_msg;
};

#define ALIGN 16u
/* Most results are small (a point select, an INSERT's counts), so the first
 * chunk is 1 KiB: within glibc's per-thread cache (blocks up to 1032
 * bytes), which makes its malloc and free a few dozen instructions instead
 * of hundreds. Later chunks start at 4 KiB and double. */
#define FIRST_CHUNK 1024u
#define SECOND_CHUNK 4096u
#define MAX_CHUNK (1u << 20)

static size_t round_up(size_t n)
{
    return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static size_t header_size(void)
{
    return round_up(sizeof(chunk));
}

vl_mysql_result *vl__mres_new_in(vl_loop *loop)
{
    size_t hs = header_size(), rs = round_up(sizeof(vl_mysql_result));
    chunk *ch = loop != NULL ? vl__cache_get(loop, VL__CACHE_MRES) : NULL;
    vl_mysql_result *r;

    if (ch == NULL && (ch = vl__malloc(FIRST_CHUNK)) == NULL)
        return NULL;
    ch->next = NULL;
    ch->size = FIRST_CHUNK;
    r = (vl_mysql_result *)(void *)((char *)ch + hs);
    memset(r, 0, sizeof(*r));
    r->magic = VL__MYSQL_MAGIC_RESULT;
    r->root = r;
    r->last = r;
    r->chunks = ch;
    r->cur = (char *)ch + hs + rs;
    r->left = FIRST_CHUNK - hs - rs;
    r->next_size = SECOND_CHUNK;
    r->sqlstate[0] = '\0';
    return r;
}

vl_mysql_result *vl__mres_new(void)
{
    return vl__mres_new_in(NULL);
}

static void *alloc_chunk(vl_mysql_result *root, size_t need);

/* The arena's bump allocation, inlined where rows and cells are made: a
 * function call per cell cost as much as the allocation itself. */
static inline void *arena_alloc(vl_mysql_result *r, size_t n)
{
    vl_mysql_result *root = r->root;
    size_t need = round_up(n ? n : 1);
    void *p;

    if (__builtin_expect(need <= root->left, 1)) {
        p = root->cur;
        root->cur += need;
        root->left -= need;
        return p;
    }
    return alloc_chunk(root, need);
}

void *vl__mres_alloc(vl_mysql_result *r, size_t n)
{
    return arena_alloc(r, n);
}

/* The allocation that does not fit the current chunk: a new chunk. */
static void *alloc_chunk(vl_mysql_result *root, size_t need)
{
    size_t hs = header_size(), size;
    chunk *ch;
    void *p;

    if (need > SIZE_MAX - hs)
        return NULL;
    if (need > MAX_CHUNK / 4) {
        /* A big value gets a chunk of its own, so the current chunk's free
         * space is kept for the small cells that follow. */
        ch = vl__malloc(hs + need);
        if (ch == NULL)
            return NULL;
        ch->size = hs + need;
        ch->next = root->chunks->next;
        root->chunks->next = ch;
        return (char *)ch + hs;
    }
    size = root->next_size;
    while (size < hs + need)
        size *= 2;
    ch = vl__malloc(size);
    if (ch == NULL)
        return NULL;
    if (root->next_size < MAX_CHUNK)
        root->next_size *= 2;
    ch->size = size;
    /* The first chunk holds the root itself and must stay first. */
    ch->next = root->chunks->next;
    root->chunks->next = ch;
    p = (char *)ch + hs;
    root->cur = (char *)p + need;
    root->left = size - hs - need;
    return p;
}

vl_mysql_result *vl__mres_add(vl_mysql_result *root)
{
    vl_mysql_result *r;

    root = root->root;
    if (!root->last->used) {
        root->last->used = 1;
        return root->last;
    }
    r = arena_alloc(root, sizeof(*r));
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->magic = VL__MYSQL_MAGIC_RESULT;
    r->root = root;
    r->used = 1;
    root->last->next = r;
    root->last = r;
    return r;
}

int vl__mres_set_columns(vl_mysql_result *r, size_t n)
{
    r->has_rows = 1;
    r->ncols = n;
    r->cols = arena_alloc(r, (n ? n : 1) * sizeof(*r->cols));
    if (r->cols == NULL) {
        r->ncols = 0;
        return VL_ENOMEM;
    }
    memset(r->cols, 0, (n ? n : 1) * sizeof(*r->cols));
    return VL_OK;
}

int vl__mres_column(vl_mysql_result *r, size_t i, const char *name, size_t name_len, int type,
                    unsigned flags)
{
    char *s = arena_alloc(r, name_len + 1);

    if (s == NULL)
        return VL_ENOMEM;
    memcpy(s, name, name_len);
    s[name_len] = '\0';
    r->cols[i].name = s;
    r->cols[i].type = type;
    r->cols[i].flags = flags;
    return VL_OK;
}

int vl__mres_copy_columns(vl_mysql_result *dst, const vl_mysql_result *src)
{
    size_t i;

    if (vl__mres_set_columns(dst, src->ncols) != VL_OK)
        return VL_ENOMEM;
    for (i = 0; i < src->ncols; i++)
        if (vl__mres_column(dst, i, src->cols[i].name, strlen(src->cols[i].name),
                            src->cols[i].type, src->cols[i].flags) != VL_OK)
            return VL_ENOMEM;
    return VL_OK;
}

vl__mcell *vl__mres_row(vl_mysql_result *r)
{
    rowlink *l = arena_alloc(r, sizeof(rowlink) + r->ncols * sizeof(vl__mcell));

    if (l == NULL)
        return NULL;
    l->next = NULL;
    memset(l->cells, 0, r->ncols * sizeof(vl__mcell));
    if (r->rtail != NULL)
        r->rtail->next = l;
    else
        r->rhead = l;
    r->rtail = l;
    r->nrows++;
    return l->cells;
}

int vl__mres_cell(vl_mysql_result *r, vl__mcell *cell, const char *data, size_t len)
{
    char *s = arena_alloc(r, len + 1);

    if (s == NULL)
        return VL_ENOMEM;
    if (len > 0)
        memcpy(s, data, len);
    s[len] = '\0';
    cell->data = s;
    cell->len = len;
    return VL_OK;
}

/* A cell made by vl__mres_cell_int has its integer just before its text,
 * in the same arena block: [int64_t][text][NUL]. */
#define INT_HEAD ((size_t)sizeof(int64_t))

int vl__mres_cell_int(vl_mysql_result *r, vl__mcell *cell, size_t col, const char *data,
                      size_t len, int64_t v, int is_unsigned)
{
    char *s;

    if (col >= 64)
        return vl__mres_cell(r, cell, data, len);
    s = arena_alloc(r, INT_HEAD + len + 1);
    if (s == NULL)
        return VL_ENOMEM;
    memcpy(s, &v, INT_HEAD);
    s += INT_HEAD;
    memcpy(s, data, len);
    s[len] = '\0';
    cell->data = s;
    cell->len = len;
    r->int_cols |= (uint64_t)1 << col;
    if (is_unsigned)
        r->uint_cols |= (uint64_t)1 << col;
    return VL_OK;
}

/* The integer a vl__mres_cell_int cell keeps: 1 with it in *v (and whether
 * its column is unsigned in *uns), 0 for any other cell. */
static int kept_int(const vl_mysql_result *r, size_t col, const vl__mcell *c, int64_t *v,
                    int *uns)
{
    if (col >= 64 || !(r->int_cols >> col & 1))
        return 0;
    memcpy(v, c->data - INT_HEAD, INT_HEAD);
    *uns = (int)(r->uint_cols >> col & 1);
    return 1;
}

int vl__mres_finish(vl_mysql_result *r)
{
    rowlink *l;
    size_t i = 0;

    if (r->nrows == 1) { /* the point select's: an index without an allocation */
        r->one_row = r->rhead->cells;
        r->rows = &r->one_row;
        return VL_OK;
    }
    r->rows = arena_alloc(r, (r->nrows ? r->nrows : 1) * sizeof(*r->rows));
    if (r->rows == NULL)
        return VL_ENOMEM;
    for (l = r->rhead; l != NULL; l = l->next)
        r->rows[i++] = l->cells;
    return VL_OK;
}

void vl__mres_counts(vl_mysql_result *r, uint64_t affected, uint64_t insert_id, unsigned warnings)
{
    r->affected = affected;
    r->insert_id = insert_id;
    r->warnings = warnings;
}

int vl__mres_gtid(vl_mysql_result *r, const char *gtid, size_t len)
{
    char *copy = arena_alloc(r, len + 1);

    if (copy == NULL)
        return VL_ENOMEM;
    memcpy(copy, gtid, len);
    copy[len] = '\0';
    r->gtid = copy;
    return VL_OK;
}

void vl__mres_error(vl_mysql_result *r, unsigned err, const char *sqlstate, const char *msg)
{
    vl_mysql_result *root = r->root;
    size_t n = msg != NULL ? strlen(msg) : 0;
    char *m;

    root->err_no = err;
    snprintf(root->sqlstate, sizeof(root->sqlstate), "%s", sqlstate != NULL ? sqlstate : "");
    m = arena_alloc(root, n + 1);
    if (m != NULL) {
        if (n > 0)
            memcpy(m, msg, n);
        m[n] = '\0';
        root->err_msg = m;
    }
}

/* ---- public accessors ---- */

vl__mcolset *vl__mcolset_new(const vl_mysql_result *r)
{
    size_t i, n = r->ncols, names = 0;
    vl__mcolset *cs;
    char *p;

    for (i = 0; i < n; i++)
        names += strlen(r->cols[i].name) + 1;
    cs = vl__malloc(sizeof(*cs) + n * sizeof(vl__mcol) + names);
    if (cs == NULL)
        return NULL;
    cs->refs = 1;
    cs->n = n;
    p = (char *)&cs->cols[n];
    for (i = 0; i < n; i++) {
        size_t len = strlen(r->cols[i].name) + 1;
        memcpy(p, r->cols[i].name, len);
        cs->cols[i] = r->cols[i];
        cs->cols[i].name = p;
        p += len;
    }
    return cs;
}

void vl__mcolset_unref(vl__mcolset *cs)
{
    if (cs != NULL && __atomic_sub_fetch(&cs->refs, 1, __ATOMIC_ACQ_REL) == 0)
        vl__free(cs);
}

void vl__mres_use_columns(vl_mysql_result *r, vl__mcolset *cs)
{
    __atomic_add_fetch(&cs->refs, 1, __ATOMIC_RELAXED);
    r->has_rows = 1;
    r->ncols = cs->n;
    r->cols = cs->cols;
    r->colset = cs;
}

/* Frees the chain; with a loop (alive, on its thread), its first chunk may
 * stay in the loop's cache for the next result. */
static void result_free(vl_mysql_result *r, vl_loop *loop)
{
    chunk *ch, *first;
    vl_mysql_result *l;

    if (r == NULL || r->root != r)
        return;
    for (l = r; l != NULL; l = l->next)
        vl__mcolset_unref(l->colset);
    first = r->chunks; /* holds r itself: read nothing of r past here */
    ch = first->next;
    while (ch != NULL) {
        chunk *n = ch->next;
        vl__free(ch);
        ch = n;
    }
    if (loop == NULL || !vl__cache_put(loop, VL__CACHE_MRES, first))
        vl__free(first);
}

void vl_mysql_result_free(vl_mysql_result *r)
{
    result_free(r, NULL);
}

static vl_mysql_result *value_result(const vl_future *f)
{
    vl_mysql_result *r;

    if (f == NULL || vl__future_vtype(f) != VL__VAL_MYSQL)
        return NULL;
    r = vl_future_value(f);
    if (r == NULL || r->magic != VL__MYSQL_MAGIC_RESULT)
        return NULL;
    return r;
}

const vl_mysql_result *vl_future_mysql_result(const vl_future *f)
{
    return value_result(f);
}

const vl_mysql_result *vl_mysql_result_next(const vl_mysql_result *r)
{
    return r != NULL ? r->next : NULL;
}

int vl_mysql_result_has_rows(const vl_mysql_result *r)
{
    return r != NULL && r->has_rows;
}

size_t vl_mysql_result_columns(const vl_mysql_result *r)
{
    return r != NULL ? r->ncols : 0;
}

size_t vl_mysql_result_rows(const vl_mysql_result *r)
{
    return r != NULL ? r->nrows : 0;
}

const char *vl_mysql_result_column_name(const vl_mysql_result *r, size_t col)
{
    return r != NULL && col < r->ncols ? r->cols[col].name : NULL;
}

int vl_mysql_result_column_type(const vl_mysql_result *r, size_t col)
{
    return r != NULL && col < r->ncols ? r->cols[col].type : -1;
}

unsigned vl_mysql_result_column_flags(const vl_mysql_result *r, size_t col)
{
    return r != NULL && col < r->ncols ? r->cols[col].flags : 0;
}

long vl_mysql_result_column_index(const vl_mysql_result *r, const char *name)
{
    size_t i;

    if (r == NULL || name == NULL)
        return -1;
    for (i = 0; i < r->ncols; i++)
        if (strcmp(r->cols[i].name, name) == 0)
            return (long)i;
    return -1;
}

static const vl__mcell *cell_at(const vl_mysql_result *r, size_t row, size_t col)
{
    if (r == NULL || r->rows == NULL || row >= r->nrows || col >= r->ncols)
        return NULL;
    return &r->rows[row][col];
}

const char *vl_mysql_result_value(const vl_mysql_result *r, size_t row, size_t col, size_t *len)
{
    const vl__mcell *c = cell_at(r, row, col);

    if (len != NULL)
        *len = c != NULL ? c->len : 0;
    return c != NULL ? c->data : NULL;
}

int vl_mysql_result_is_null(const vl_mysql_result *r, size_t row, size_t col)
{
    const vl__mcell *c = cell_at(r, row, col);

    return c == NULL || c->data == NULL;
}

/* Checks the cell before a numeric read: VL_OK, VL_ESTATE or VL_EINVAL. */
static int numeric_cell(const vl_mysql_result *r, size_t row, size_t col, const vl__mcell **out)
{
    const vl__mcell *c = cell_at(r, row, col);

    if (c == NULL)
        return VL_EINVAL;
    if (c->data == NULL)
        return VL_ESTATE;
    if (c->len == 0 || strlen(c->data) != c->len)
        return VL_EINVAL;
    *out = c;
    return VL_OK;
}

/* The common integer cell, an optional '-' then 1 to 18 digits and nothing
 * else, read without strtoll (whose locale, base and white space handling
 * cost more than the read): such a value cannot overflow, and strtoll would
 * read the same. 1 with the value in *out; 0 for any other form, which
 * strtoll then reads (or refuses). */
static int short_decimal(const vl__mcell *c, int allow_minus, int64_t *out)
{
    const char *p = c->data, *end = c->data + c->len;
    int neg = allow_minus && p < end && *p == '-';
    int64_t v = 0;

    p += neg;
    if (p == end || end - p > 18)
        return 0;
    for (; p < end; p++) {
        unsigned d = (unsigned)(unsigned char)*p - '0';
        if (d > 9)
            return 0;
        v = v * 10 + (int64_t)d;
    }
    *out = neg ? -v : v;
    return 1;
}

int vl_mysql_result_int64(const vl_mysql_result *r, size_t row, size_t col, int64_t *out)
{
    const vl__mcell *c = cell_at(r, row, col);
    char *end;
    long long v;
    int64_t quick;
    int rc;

    int uns;

    /* A value too big for int64 is refused by the text path below. */
    if (c != NULL && c->data != NULL &&
        (kept_int(r, col, c, &quick, &uns) ? !uns || quick >= 0 : short_decimal(c, 1, &quick))) {
        if (out != NULL)
            *out = quick;
        return VL_OK;
    }
    rc = numeric_cell(r, row, col, &c);
    if (rc != VL_OK)
        return rc;
    errno = 0;
    v = strtoll(c->data, &end, 10);
    if (errno != 0 || *end != '\0')
        return VL_EINVAL;
    if (out != NULL)
        *out = (int64_t)v;
    return VL_OK;
}

int vl_mysql_result_uint64(const vl_mysql_result *r, size_t row, size_t col, uint64_t *out)
{
    const vl__mcell *c = cell_at(r, row, col);
    char *end;
    unsigned long long v;
    int64_t quick;
    int rc;

    int uns;

    /* A negative value is refused by the text path below. */
    if (c != NULL && c->data != NULL &&
        (kept_int(r, col, c, &quick, &uns) ? uns || quick >= 0 : short_decimal(c, 0, &quick))) {
        if (out != NULL)
            *out = (uint64_t)quick;
        return VL_OK;
    }
    rc = numeric_cell(r, row, col, &c);
    if (rc != VL_OK)
        return rc;
    if (c->data[0] == '-')
        return VL_EINVAL;
    errno = 0;
    v = strtoull(c->data, &end, 10);
    if (errno != 0 || *end != '\0')
        return VL_EINVAL;
    if (out != NULL)
        *out = (uint64_t)v;
    return VL_OK;
}

int vl_mysql_result_double(const vl_mysql_result *r, size_t row, size_t col, double *out)
{
    const vl__mcell *c;
    char *end;
    double v;
    int rc = numeric_cell(r, row, col, &c);

    if (rc != VL_OK)
        return rc;
    errno = 0;
    v = strtod(c->data, &end);
    /* ERANGE also flags a subnormal result, which is a value a DOUBLE
     * column holds (the server sends 5e-324 as is): only an overflow is
     * out of range. */
    if ((errno == ERANGE && isinf(v)) || *end != '\0')
        return VL_EINVAL;
    if (out != NULL)
        *out = v;
    return VL_OK;
}

uint64_t vl_mysql_result_affected_rows(const vl_mysql_result *r)
{
    return r != NULL ? r->affected : 0;
}

uint64_t vl_mysql_result_insert_id(const vl_mysql_result *r)
{
    return r != NULL ? r->insert_id : 0;
}

unsigned vl_mysql_result_warnings(const vl_mysql_result *r)
{
    return r != NULL ? r->warnings : 0;
}

void vl__mres_free_value(void *v)
{
    vl_mysql_result_free(v);
}

void vl__mres_release(vl_loop *loop, void *v)
{
    result_free(v, loop);
}

const char *vl_mysql_result_gtid(const vl_mysql_result *r)
{
    return r != NULL ? r->gtid : NULL;
}

unsigned vl_future_mysql_errno(const vl_future *f)
{
    vl_mysql_result *r = value_result(f);

    return r != NULL ? r->err_no : 0;
}

const char *vl_future_mysql_sqlstate(const vl_future *f)
{
    vl_mysql_result *r = value_result(f);

    return r != NULL ? r->sqlstate : "";
}
