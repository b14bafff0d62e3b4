/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/cli_output.c - how the volley CLI lays out a run: one host per
 * line group, hosts grouped by identical output (-g), or the majority's
 * output once and the hosts that differ (--diff), in host order or sorted;
 * then the summary on stderr.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* A host as sorted: its record, its name and its place in the run. */
typedef struct entry {
    const cli_rec *rec;
    const char *name;
    size_t i;
} entry;

static int cmp_pos(const entry *x, const entry *y)
{
    return x->i < y->i ? -1 : x->i > y->i;
}

static int cmp_host(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c != 0 ? c : cmp_pos(x, y);
}

/* ok first, then error, timeout, connect, interrupted. */
static int status_rank(int st)
{
    return st == VL_OK ? 0 : st == VL_ESERVER ? 1 : st == VL_ETIMEDOUT ? 2
         : st == CLI_INTERRUPTED || st == CLI_PENDING ? 4 : 3;
}

static int cmp_status(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int rx = status_rank(x->rec->status), ry = status_rank(y->rec->status);

    return rx != ry ? (rx < ry ? -1 : 1) : cmp_pos(x, y);
}

/* Slowest last, so that the hosts to look at end up next to the summary. */
static int cmp_latency(const void *a, const void *b)
{
    const entry *x = a, *y = b;

    if (x->rec->latency_ms != y->rec->latency_ms)
        return x->rec->latency_ms < y->rec->latency_ms ? -1 : 1;
    return cmp_pos(x, y);
}

static int cmp_text(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int c = strcmp(x->rec->text != NULL ? x->rec->text : "",
                   y->rec->text != NULL ? y->rec->text : "");

    return c != 0 ? c : cmp_pos(x, y);
}

/* The hosts in print order; NULL when out of memory. */
static entry *sorted(const cli_output *o)
{
    entry *e = malloc((o->n ? o->n : 1) * sizeof(*e));

    if (e == NULL)
        return NULL;
    for (size_t i = 0; i < o->n; i++)
        e[i] = (entry){&o->recs[i], o->names[i], i};
    if (o->sort == CLI_SORT_HOST)
        qsort(e, o->n, sizeof(*e), cmp_host);
    else if (o->sort == CLI_SORT_STATUS)
        qsort(e, o->n, sizeof(*e), cmp_status);
    else if (o->sort == CLI_SORT_LATENCY)
        qsort(e, o->n, sizeof(*e), cmp_latency);
    return e;
}

static const char *rec_text(const cli_rec *rec)
{
    return rec->text != NULL ? rec->text : "";
}

void cli_output_host(const cli_output *o, size_t i)
{
    const cli_rec *rec = &o->recs[i];
    const char *p = rec_text(rec), *h = o->names[i];
    char lat[32] = "";

    if (o->json) {
        char *line = cli_rec_json(rec, h);
        if (line != NULL)
            printf("%s\n", line);
        free(line);
        return;
    }
    if (o->latency)
        snprintf(lat, sizeof(lat), "%9.3f ms  ", rec->latency_ms);
    /* Every line carries its host, like pdsh, so output can be grepped. */
    if (*p == '\0')
        printf("%s: %s\n", h, lat);
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        printf("%s: %s%.*s\n", h, lat, (int)len, p);
        p += len + (nl ? 1 : 0);
    }
}

/* Prints one group: its hosts (compressed), their count and latency
 * range, then the output they share. */
static void print_group(const entry *e, size_t k, const char *label)
{
    const char **members = malloc((k ? k : 1) * sizeof(char *));
    double lo = e[0].rec->latency_ms, hi = lo;
    const char *text = rec_text(e[0].rec);
    char *list;

    for (size_t m = 0; m < k; m++) {
        if (members != NULL)
            members[m] = e[m].name;
        lo = e[m].rec->latency_ms < lo ? e[m].rec->latency_ms : lo;
        hi = e[m].rec->latency_ms > hi ? e[m].rec->latency_ms : hi;
    }
    list = members != NULL ? cli_hosts_compress(members, k) : NULL;
    printf("----------------\n%s%s (%zu) %.3f-%.3f ms\n----------------\n%s", label,
           list ? list : "?", k, lo, hi, text);
    if (text[0] == '\0' || text[strlen(text) - 1] != '\n')
        printf("\n");
    free(list);
    free(members);
}

/* Groups: sorting by text puts equal outputs together; each group prints
 * where its first host (in print order) stands. O(n log n). */
static void print_groups(const cli_output *o, entry *e, size_t n)
{
    entry *t = malloc((n ? n : 1) * sizeof(*t));
    size_t *rank = malloc((n ? n : 1) * sizeof(*rank));
    size_t i, j, best = 0, bestn = 0;

    if (t == NULL || rank == NULL)
        goto out;
    for (i = 0; i < n; i++) {
        t[i] = e[i];
        t[i].i = i; /* its print position, so groups keep print order */
    }
    qsort(t, n, sizeof(*t), cmp_text);
    for (i = 0; i < n; i++)
        rank[i] = n; /* print position -> the start of its group in t, if it leads */
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && strcmp(rec_text(t[i].rec), rec_text(t[j].rec)) == 0; j++)
            ;
        rank[t[i].i] = i;
        if (j - i > bestn)
            best = i, bestn = j - i;
    }
    if (o->diff && bestn > 0) {
        /* The majority once, then every other host line by line. */
        print_group(t + best, bestn, n > bestn ? "the majority: " : "all: ");
        for (i = 0; i < n; i++)
            if (strcmp(rec_text(e[i].rec), rec_text(t[best].rec)) != 0)
                cli_output_host(o, (size_t)(e[i].rec - o->recs));
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (rank[i] == n)
            continue;
        for (j = rank[i] + 1; j < n && strcmp(rec_text(t[rank[i]].rec), rec_text(t[j].rec)) == 0;
             j++)
            ;
        print_group(t + rank[i], j - rank[i], "");
    }
out:
    free(t);
    free(rank);
}

void cli_output_all(const cli_output *o, const unsigned char *done)
{
    entry *e = sorted(o);
    size_t i, k = 0;

    if (e == NULL) {
        fprintf(stderr, "volley: out of memory\n");
        return;
    }
    for (i = 0; i < o->n; i++)
        if (done == NULL || !done[e[i].i])
            e[k++] = e[i];
    if (o->group || o->diff)
        print_groups(o, e, k);
    else
        for (i = 0; i < k; i++)
            cli_output_host(o, e[i].i);
    fflush(stdout);
    free(e);
}

int cli_output_summary(const cli_output *o)
{
    static const struct {
        const char *name;
        int kind;
    } cats[] = {{"error", 1}, {"timeout", 2}, {"connect", 3}, {"interrupted", 4}};
    size_t n = o->n, i, k, count[5] = {0};
    const char **members = calloc(n ? n : 1, sizeof(char *));

    for (i = 0; i < n; i++)
        count[status_rank(o->recs[i].status)]++;
    fprintf(stderr, "%zu host%s: %zu ok", n, n == 1 ? "" : "s", count[0]);
    for (k = 0; k < sizeof(cats) / sizeof(cats[0]); k++) {
        size_t m = 0;
        char *list;
        if (count[cats[k].kind] == 0)
            continue;
        for (i = 0; i < n && members != NULL; i++)
            if (status_rank(o->recs[i].status) == cats[k].kind)
                members[m++] = o->names[i];
        list = members != NULL ? cli_hosts_compress(members, m) : NULL;
        fprintf(stderr, ", %zu %s (%s)", count[cats[k].kind], cats[k].name, list ? list : "?");
        free(list);
    }
    fprintf(stderr, "\n");
    free(members);
    if (count[4] > 0)
        return CLI_EXIT_INTERRUPTED;
    if (count[2] + count[3] > 0)
        return CLI_EXIT_UNREACHABLE;
    return count[1] > 0 ? CLI_EXIT_SERVER_ERROR : CLI_EXIT_OK;
}
