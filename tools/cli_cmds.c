/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/cli_cmds.c - Redis commands for the volley CLI: from its argv, or
 * one per line from -F FILE or stdin, split by redis-cli's quoting rules so
 * that a file that works with `redis-cli < file` works here too.
 *
 * Uses only the C library.
 */
#include "cli.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A growing byte string for one argument. */
typedef struct word {
    char *s;
    size_t len, cap;
} word;

static int word_put(word *w, char ch)
{
    if (w->len + 2 > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 32;
        char *s = realloc(w->s, cap);
        if (s == NULL)
            return -1;
        w->s = s;
        w->cap = cap;
    }
    w->s[w->len++] = ch;
    w->s[w->len] = '\0';
    return 0;
}

static int hexval(char ch)
{
    return isdigit((unsigned char)ch) ? ch - '0' : tolower((unsigned char)ch) - 'a' + 10;
}

/* The byte a backslash escape inside double quotes stands for, and how many
 * bytes of input (after the backslash) it takes. */
static char dq_escape(const char *p, const char *end, size_t *used)
{
    *used = 1;
    if (p[0] == 'x' && end - p >= 3 && isxdigit((unsigned char)p[1]) &&
        isxdigit((unsigned char)p[2])) {
        *used = 3;
        return (char)(hexval(p[1]) * 16 + hexval(p[2]));
    }
    switch (p[0]) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'b': return '\b';
    case 'a': return '\a';
    default: return p[0];
    }
}

/* Reads one quoted word from *pp (at its opening quote) into w; *pp ends
 * past the closing quote, which must end the word. 0, or -1 on bad input. */
static int quoted(const char **pp, const char *end, word *w)
{
    const char *p = *pp;
    char q = *p++;

    while (p < end && *p != q) {
        char ch = *p;
        size_t used = 1;
        if (ch == '\\' && p + 1 < end) {
            if (q == '"')
                ch = dq_escape(p + 1, end, &used);
            else if (p[1] == '\'')
                ch = '\'';
            else
                used = 0;
            p += used;
        }
        if (word_put(w, ch) != 0)
            return -2;
        p++;
    }
    if (p >= end || (p + 1 < end && !isspace((unsigned char)p[1])))
        return -1; /* unclosed, or "a"b: redis-cli refuses both */
    *pp = p + 1;
    return 0;
}

static int push_cmd(cli_cmds *c, cli_cmd *cmd)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        cli_cmd *v = realloc(c->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = *cmd;
    return 0;
}

static void cmd_free(cli_cmd *cmd)
{
    for (int i = 0; i < cmd->argc; i++)
        free(cmd->argv[i]);
    free(cmd->argv);
    free(cmd->len);
}

/* Appends word w to cmd (taking its buffer). 0, or -1 when out of memory. */
static int cmd_push_word(cli_cmd *cmd, word *w)
{
    char **argv = realloc(cmd->argv, (size_t)(cmd->argc + 1) * sizeof(*argv));
    size_t *len;

    if (argv == NULL)
        return -1;
    cmd->argv = argv;
    len = realloc(cmd->len, (size_t)(cmd->argc + 1) * sizeof(*len));
    if (len == NULL)
        return -1;
    cmd->len = len;
    if (w->s == NULL)
        w->s = calloc(1, 1); /* "" is an empty argument, not none */
    if (w->s == NULL)
        return -1;
    cmd->argv[cmd->argc] = w->s;
    cmd->len[cmd->argc++] = w->len;
    memset(w, 0, sizeof(*w));
    return 0;
}

int cli_cmds_add_line(cli_cmds *c, const char *line, size_t n, char *err, size_t errlen)
{
    const char *p = line, *end = line + n;
    cli_cmd cmd = {0};
    word w = {0};
    int rc = 0;

    while (rc == 0) {
        while (p < end && isspace((unsigned char)*p))
            p++;
        if (p >= end)
            break;
        while (rc == 0 && p < end && !isspace((unsigned char)*p)) {
            if (*p == '"' || *p == '\'')
                rc = quoted(&p, end, &w);
            else
                rc = word_put(&w, *p++) != 0 ? -2 : 0;
        }
        if (rc == 0 && cmd_push_word(&cmd, &w) != 0)
            rc = -2;
    }
    free(w.s);
    if (rc == 0 && cmd.argc > 0 && push_cmd(c, &cmd) != 0)
        rc = -2;
    if (rc != 0 || cmd.argc == 0)
        cmd_free(&cmd);
    if (rc != 0)
        snprintf(err, errlen, "%s", rc == -1 ? "unbalanced quotes" : "out of memory");
    return rc == 0 ? 0 : -1;
}

int cli_cmds_add_file(cli_cmds *c, FILE *f, const char *name, char *err, size_t errlen)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;

    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        char msg[128];
        lineno++;
        if (cli_cmds_add_line(c, line, (size_t)n, msg, sizeof(msg)) != 0) {
            snprintf(err, errlen, "%s:%ld: %s", name, lineno, msg);
            rc = -1;
        }
    }
    free(line);
    return rc;
}

int cli_cmds_add_argv(cli_cmds *c, int argc, char *const *argv)
{
    cli_cmd cmd = {0};

    for (int i = 0; i < argc; i++) {
        word w = {0};
        for (const char *s = argv[i]; *s != '\0'; s++)
            if (word_put(&w, *s) != 0)
                break;
        if ((argv[i][0] != '\0' && w.len != strlen(argv[i])) || cmd_push_word(&cmd, &w) != 0) {
            free(w.s);
            cmd_free(&cmd);
            return -1;
        }
    }
    if (push_cmd(c, &cmd) != 0) {
        cmd_free(&cmd);
        return -1;
    }
    return 0;
}

const char *cli_cmds_refused(const cli_cmds *c)
{
    /* They turn the connection into a stream of pushed messages: a reply
     * never "completes", so a fan-out could only time out on them. */
    static const char *const held[] = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR",
                                       "SYNC", "PSYNC"};

    for (size_t i = 0; i < c->n; i++)
        for (size_t k = 0; k < sizeof(held) / sizeof(held[0]); k++)
            if (strcasecmp(c->v[i].argv[0], held[k]) == 0)
                return held[k];
    return NULL;
}

void cli_cmds_free(cli_cmds *c)
{
    for (size_t i = 0; i < c->n; i++)
        cmd_free(&c->v[i]);
    free(c->v);
    memset(c, 0, sizeof(*c));
}
