/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/fuzz/fuzz_cli_cmds.c - libFuzzer target for the CLI's command
 * lines (tools/cli_cmds.c): redis-cli's quoting rules, as read from -F FILE
 * or stdin.
 *
 * Each input is one line (all of it, NULs included). Checked for every
 * input:
 * - splitting succeeds, adding one command (or none for a blank line), or
 *   fails with a message and adds nothing;
 * - every argument is NUL-terminated at its length;
 * - a line with no quote and no backslash splits exactly at white space;
 * - no crash, no leak (ASan and LeakSanitizer).
 */
#include "cli.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_cli_cmds: %s\n", what);
        abort();
    }
}

/* The words of a line without quotes or backslashes, split at white space
 * (isspace, as the parser does). */
static size_t plain_words(const char *s, size_t n)
{
    size_t i = 0, words = 0;

    while (i < n) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        if (i < n)
            words++;
        while (i < n && !isspace((unsigned char)s[i]))
            i++;
    }
    return words;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cli_cmds c = {0};
    char err[128] = "";
    const char *s = (const char *)data;
    int rc = cli_cmds_add_line(&c, s, size, err, sizeof(err));
    size_t k;

    check(rc == 0 || rc == -1, "status is neither 0 nor -1");
    check(rc == 0 || (err[0] != '\0' && c.n == 0), "a failure without a message, or with a command");
    check(c.n <= 1, "one line gave several commands");
    if (c.n == 1) {
        check(c.v[0].argc > 0, "a command without arguments");
        for (k = 0; k < (size_t)c.v[0].argc; k++)
            check(c.v[0].argv[k][c.v[0].len[k]] == '\0', "an argument is not NUL-terminated");
    }
    if (memchr(s, '"', size) == NULL && memchr(s, '\'', size) == NULL &&
        memchr(s, '\\', size) == NULL) {
        size_t words = plain_words(s, size);
        check(rc == 0, "a plain line failed");
        check((words == 0 && c.n == 0) || (c.n == 1 && (size_t)c.v[0].argc == words),
              "a plain line split into other words");
    }
    cli_cmds_free(&c);
    return 0;
}
