/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/volley.c - run Redis commands or an SQL query on many hosts at once.
 *
 *   volley -H 127.0.0.1:[7000-7005] INFO replication
 *   volley -H mysql://app@db1,mysql://app@db2 -e 'SELECT @@version'
 *   volley --cluster -H 127.0.0.1:7000 DBSIZE
 *
 * Hosts run in parallel (up to --concurrency); a host that does not answer
 * within --timeout is reported as a timeout and never holds up the others.
 * Exit status: 0 all ok, 1 a host replied with an error, 2 a host was
 * unreachable or timed out (or --cluster found no cluster at its seeds), 64
 * usage error, 130 interrupted by Ctrl-C. Passwords never reach the output.
 *
 * This file reads the command line and passwords and drives a run;
 * cli_hosts.c reads host lists, cli_cmds.c command lines, cli_run.c runs the
 * fan-outs, cli_render.c renders one host and cli_output.c lays out them all.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define CLI_NAME "volley"

typedef struct cli {
    cli_hosts hosts;
    char **urls;         /* what the library gets */
    char **shown;        /* what we print: as typed, without passwords */
    unsigned char *kind; /* per host: 0 Redis, 1 MySQL */
    cli_rec *recs;
    unsigned char *printed; /* --stream: hosts printed already */
    cli_cmds cmds;       /* Redis commands: argv, -F FILE or stdin */
    const char *cmd_file;
    const char *hosts_file;
    const char *sql;
    const char *user;
    const char *database;
    long concurrency;
    long connect_timeout_ms;
    long timeout_ms;
    int stream;
    int group;
    int diff;
    int latency;
    int sort;
    int json;
    int askpass;
    int tls;             /* --tls: bare host:port means rediss:// */
    const char *cacert, *cert, *key;
    int insecure;
    char password[512];  /* for Redis hosts (--askpass or REDISCLI_AUTH) */
    int have_password;
    char mysql_password[512]; /* for MySQL hosts (--askpass or MYSQL_PWD) */
    int have_mysql_password;
    int cluster;         /* --cluster: the hosts are seeds of a Redis Cluster */
    int primaries;       /* --primaries: its primaries only */
} cli;

/* Set by the SIGINT handler, read by the run's tick. A signal handler can
 * reach nothing else. */
static volatile sig_atomic_t interrupted;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " CLI_NAME " [OPTIONS] -H HOSTS COMMAND [ARG...]\n"
            "       " CLI_NAME " [OPTIONS] -H HOSTS -e SQL\n"
            "       " CLI_NAME " [OPTIONS] -H HOSTS -F FILE      (or commands on stdin)\n"
            "       " CLI_NAME " [OPTIONS] -H REDIS_AND_MYSQL_URLS -e SQL COMMAND [ARG...]\n"
            "       " CLI_NAME " [OPTIONS] --cluster [--primaries] -H SEEDS COMMAND [ARG...]\n"
            "Run Redis commands or an SQL query on many hosts at once.\n"
            "\n"
            "Hosts:\n"
            "  -H, --hosts LIST         comma-separated hosts (repeatable): URLs\n"
            "                           (redis://, mysql://, unix://) or host:port\n"
            "                           (Redis, or MySQL with -e); numeric ranges\n"
            "                           like 127.0.0.1:[7000-7005] or db[01-03]:3306\n"
            "  -f, --hosts-file FILE    one host list per line, '#' comments; - = stdin\n"
            "      --cluster            the hosts are seeds of a Redis Cluster (host:port\n"
            "                           or redis:// URLs; the first one's password is\n"
            "                           the cluster's): run the command on every node\n"
            "                           of it, each named host:port and bounded by\n"
            "                           --timeout\n"
            "      --primaries          with --cluster: on its primaries only\n"
            "Command:\n"
            "  COMMAND [ARG...]         a Redis command, sent as binary-safe argv\n"
            "  -F, --file FILE          Redis commands, one per line, quoted as for\n"
            "                           redis-cli; - = stdin, also read when stdin is\n"
            "                           no terminal and no command is given; sent\n"
            "                           pipelined, 64 per connection\n"
            "  -e, --execute SQL        run SQL on the MySQL/MariaDB hosts; with a Redis\n"
            "                           command too, each URL gets the one of its kind\n"
            "  -u, --user NAME          MySQL user for hosts given as host:port\n"
            "  -D, --database NAME      MySQL database for hosts given as host:port\n"
            "Timing:\n"
            "  -c, --concurrency N      hosts in flight at once (default 64)\n"
            "      --connect-timeout MS per-host connect timeout (default 5000)\n"
            "  -t, --timeout MS         per-host timeout, connect plus reply\n"
            "                           (default 10000); a late host is a 'timeout'\n"
            "Output (in host order unless --stream):\n"
            "      --stream             print each host as soon as it finishes\n"
            "  -g, --group              merge identical outputs under one host list\n"
            "      --diff               the majority's output once, then the hosts\n"
            "                           that differ\n"
            "      --latency            a latency column\n"
            "      --sort KEY           host, status or latency\n"
            "      --json               one JSON object per host per line\n"
            "Passwords (never printed): in the URL (a ',' written as %%2C), or\n"
            "REDISCLI_AUTH (Redis), MYSQL_PWD (MySQL), or --askpass to be prompted\n"
            "without echo. Those last three are safer: a password on the command line\n"
            "stays in the shell's history, and other users can read it with ps until\n"
            "volley blots it out of its arguments at start-up.\n"
            "      --askpass            prompt for a password on the terminal\n"
            "TLS (Redis): rediss:// URLs, or --tls for hosts given as host:port;\n"
            "certificates are verified against the system CAs unless --cacert:\n"
            "      --tls                connect to host:port hosts over TLS\n"
            "      --cacert FILE        trusted CA certificates (PEM)\n"
            "      --cert FILE          client certificate (PEM); --key FILE its key\n"
            "      --insecure           do not verify certificates (prints a warning)\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Ctrl-C prints what has completed and marks the rest interrupted.\n"
            "Exit status: 0 all ok, 1 a host replied with an error, 2 a host was\n"
            "unreachable or timed out (or --cluster found no cluster), 64 usage error,\n"
            "130 interrupted.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, CLI_NAME ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return CLI_EXIT_USAGE;
}

static int parse_num(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int read_password(cli *c)
{
    FILE *tty = fopen("/dev/tty", "r+");
    struct termios old, quiet;
    size_t n;

    if (tty == NULL) {
        fprintf(stderr, CLI_NAME ": --askpass needs a terminal\n");
        return -1;
    }
    fputs("Password: ", tty);
    fflush(tty);
    if (tcgetattr(fileno(tty), &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    }
    if (fgets(c->password, sizeof(c->password), tty) == NULL)
        c->password[0] = '\0';
    tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputs("\n", tty);
    fclose(tty);
    n = strlen(c->password);
    while (n > 0 && (c->password[n - 1] == '\n' || c->password[n - 1] == '\r'))
        c->password[--n] = '\0';
    c->have_password = 1;
    return 0;
}

/* Percent-encodes `s` for the userinfo or path part of a URL. */
static void url_encode(char *dst, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;

    for (; *s != '\0' && j + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            dst[j++] = (char)ch;
        } else {
            dst[j++] = '%';
            dst[j++] = hex[ch >> 4];
            dst[j++] = hex[ch & 15];
        }
    }
    dst[j] = '\0';
}

/* 1 when the query `q` ("?a=1&b=2", or NULL) has the parameter `eq` ("b="). */
static int has_param(const char *q, const char *eq)
{
    size_t n = strlen(eq);

    while (q != NULL) {
        if (strncmp(q + 1, eq, n) == 0)
            return 1;
        q = strchr(q + 1, '&');
    }
    return 0;
}

/* Adds the TLS options to a rediss:// URL that does not set them itself.
 * 0, or -1 when the URL would not fit. */
static int tls_params(cli *c, char *buf, size_t cap)
{
    const char *names[4] = {"cacert", "cert", "key", "insecure"};
    const char *vals[4];
    size_t k, n;

    vals[0] = c->cacert;
    vals[1] = c->cert;
    vals[2] = c->key;
    vals[3] = c->insecure ? "1" : NULL;
    for (k = 0; k < 4; k++) {
        char want[16], enc[3 * 1024];
        const char *q = strchr(buf, '?');
        if (vals[k] == NULL)
            continue;
        snprintf(want, sizeof(want), "%s=", names[k]);
        if (has_param(q, want))
            continue; /* the URL says it already */
        url_encode(enc, sizeof(enc), vals[k]);
        n = strlen(buf);
        if ((size_t)snprintf(buf + n, cap - n, "%c%s%s", q != NULL ? '&' : '?', want, enc) >=
            cap - n)
            return -1;
    }
    return 0;
}
/* The kind of host h: 0 Redis, 1 MySQL, -1 unknown scheme, -2 a bare
 * host (or unix://) that could be either in a run of both. */
static int host_kind(const cli *c, const char *h)
{
    const char *sep = strstr(h, "://");
    int has_cmd = c->cmds.n > 0 || c->cmd_file != NULL;
    size_t slen;

    if (sep == NULL || (sep - h == 4 && strncmp(h, "unix", 4) == 0)) {
        if (c->sql == NULL)
            return 0;
        return has_cmd ? -2 : 1;
    }
    slen = (size_t)(sep - h);
    if ((slen == 5 && strncmp(h, "mysql", 5) == 0) || (slen == 7 && strncmp(h, "mariadb", 7) == 0))
        return 1;
    if ((slen == 5 && strncmp(h, "redis", 5) == 0) || (slen == 6 && strncmp(h, "rediss", 6) == 0))
        return 0;
    return -1;
}

/* The library's URL for a host typed as h of the given kind. 0, or -1 when
 * it does not fit. */
static int host_url(cli *c, const char *h, int kind, char *buf, size_t cap)
{
    if (strstr(h, "://") != NULL) {
        snprintf(buf, cap, "%s", h);
    } else if (kind == 1) {
        char user[256] = "", db[256] = "";
        if (c->user != NULL)
            url_encode(user, sizeof(user), c->user);
        if (c->database != NULL)
            url_encode(db, sizeof(db), c->database);
        snprintf(buf, cap, "mysql://%s%s%s%s%s", user, user[0] ? "@" : "", h, db[0] ? "/" : "",
                 db);
    } else {
        snprintf(buf, cap, "%s://%s", c->tls ? "rediss" : "redis", h);
    }
    if (strlen(buf) + 1 >= cap)
        return -1;
    return strncmp(buf, "rediss://", 9) == 0 ? tls_params(c, buf, cap) : 0;
}

/* Turns each typed host into a URL and a printable name, and sorts it into
 * Redis or MySQL. Returns 0, -1 when out of memory, or an exit status once
 * the message is printed. */
static int build_urls(cli *c)
{
    size_t i, n = c->hosts.n;

    c->urls = calloc(n ? n : 1, sizeof(char *));
    c->shown = calloc(n ? n : 1, sizeof(char *));
    c->kind = calloc(n ? n : 1, 1);
    if (c->urls == NULL || c->shown == NULL || c->kind == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        const char *h = c->hosts.v[i], *sep = strstr(h, "://");
        int kind = host_kind(c, h);
        char buf[4096];

        if (kind == -1) {
            fprintf(stderr, CLI_NAME ": unknown URL scheme in host '%.*s://...'\n",
                    (int)(sep - h), h);
            return CLI_EXIT_USAGE;
        }
        if (kind == -2) {
            fprintf(stderr, CLI_NAME ": with both -e SQL and a Redis command, give each host "
                            "as a redis:// or mysql:// URL (see --help)\n");
            return CLI_EXIT_USAGE;
        }
        if (host_url(c, h, kind, buf, sizeof(buf)) != 0) {
            fprintf(stderr, CLI_NAME ": host %zu is too long\n", i + 1);
            return CLI_EXIT_USAGE;
        }
        c->kind[i] = (unsigned char)kind;
        c->urls[i] = strdup(buf);
        c->shown[i] = cli_hosts_display(h);
        memset(buf, 0, sizeof(buf));
        if (c->urls[i] == NULL || c->shown[i] == NULL)
            return -1;
    }
    return 0;
}

/* 1 when some host is of the kind. */
static int has_kind(const cli *c, int kind)
{
    for (size_t i = 0; i < c->hosts.n; i++)
        if (c->kind[i] == kind)
            return 1;
    return 0;
}

/* Reads the Redis commands from -F FILE, or stdin when it is no terminal
 * and holds no host list. Returns 0, or an exit status once the message is
 * printed. */
static int read_commands(cli *c)
{
    const char *name = c->cmd_file;
    char err[512];
    FILE *f;
    int rc;

    if (c->cmds.n > 0 && c->cmd_file != NULL)
        return usage_error("%s", "give the Redis commands as arguments or with -F, not both");
    if (c->cmds.n > 0)
        return 0;
    if (name == NULL) {
        if (isatty(STDIN_FILENO) || (c->hosts_file != NULL && strcmp(c->hosts_file, "-") == 0))
            return usage_error("%s", "no command: give a Redis command, -F FILE or -e SQL");
        name = "-";
    }
    f = strcmp(name, "-") == 0 ? stdin : fopen(name, "r");
    if (f == NULL) {
        fprintf(stderr, CLI_NAME ": cannot open '%s': %s\n", name, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    rc = cli_cmds_add_file(&c->cmds, f, strcmp(name, "-") == 0 ? "stdin" : name, err,
                           sizeof(err));
    if (f != stdin)
        fclose(f);
    if (rc != 0)
        return usage_error("%s", err);
    if (c->cmds.n == 0)
        return usage_error("%s", "no command: the command input is empty");
    return 0;
}

/* Checks what only the hosts' kinds tell, and reads the commands. Returns
 * 0, or an exit status once the message is printed. */
static int check_kinds(cli *c)
{
    const char *held;
    int rc;

    if (c->sql != NULL && !has_kind(c, 1))
        return usage_error("%s", "-e runs SQL, but no host is a MySQL host");
    if (!has_kind(c, 0)) {
        if (c->cmds.n > 0 || c->cmd_file != NULL)
            return usage_error("%s", "a Redis command, but no host is a Redis host");
        return 0;
    }
    if (c->sql == NULL && has_kind(c, 1))
        return usage_error("%s", "MySQL hosts need -e SQL");
    rc = read_commands(c);
    if (rc != 0)
        return rc;
    held = cli_cmds_refused(&c->cmds);
    if (held != NULL)
        return usage_error("%s holds its connection for pushed messages, which a fan-out "
                           "cannot show: use redis-cli for it", held);
    return 0;
}

static void cli_free(cli *c)
{
    size_t i;

    for (i = 0; i < c->hosts.n; i++) {
        if (c->urls != NULL && c->urls[i] != NULL) {
            memset(c->urls[i], 0, strlen(c->urls[i]));
            free(c->urls[i]);
        }
        if (c->shown != NULL)
            free(c->shown[i]);
        if (c->recs != NULL)
            cli_rec_free(&c->recs[i]);
    }
    free(c->urls);
    free(c->shown);
    free(c->kind);
    free(c->recs);
    free(c->printed);
    cli_hosts_free(&c->hosts);
    cli_cmds_free(&c->cmds);
    memset(c->password, 0, sizeof(c->password));
    memset(c->mysql_password, 0, sizeof(c->mysql_password));
}
/* What the options alone rule out. Returns -1 to go on, or the exit status
 * once the message is printed (c is freed then). */
static int check_args(cli *c)
{
    const char *bad = NULL;

    if (c->hosts.n == 0)
        bad = "no hosts: give -H LIST or -f FILE";
    else if (c->sql != NULL && c->sql[0] == '\0')
        bad = "empty SQL";
    else if ((c->group || c->diff) && c->json)
        bad = "--group and --diff print text: they do not mix with --json";
    else if (c->group && c->diff)
        bad = "--group and --diff are two views: give one";
    else if (c->stream && (c->group || c->diff || c->sort))
        bad = "--stream prints each host as it finishes: -g, --diff and --sort need "
              "them all";
    else if (c->primaries && !c->cluster)
        bad = "--primaries needs --cluster";
    else if (c->cluster && c->sql != NULL)
        bad = "--cluster runs a Redis command, not -e SQL";
    else if (c->cluster && c->stream)
        bad = "--stream does not apply to --cluster: its nodes are printed once all have "
              "answered";
    else if (c->cluster && c->cmds.n == 0)
        bad = "no command: give a Redis command to run on the cluster";
    if (bad == NULL)
        return -1;
    cli_free(c);
    return usage_error("%s", bad);
}

enum {
    OPT_CONNECT_TIMEOUT = 1000, OPT_STREAM, OPT_JSON, OPT_ASKPASS, OPT_TLS, OPT_CACERT,
    OPT_CERT, OPT_KEY, OPT_INSECURE, OPT_CLUSTER, OPT_PRIMARIES, OPT_LATENCY, OPT_SORT, OPT_DIFF
};

static const struct option longopts[] = {
    {"hosts", required_argument, NULL, 'H'},
    {"hosts-file", required_argument, NULL, 'f'},
    {"file", required_argument, NULL, 'F'},
    {"execute", required_argument, NULL, 'e'},
    {"user", required_argument, NULL, 'u'},
    {"database", required_argument, NULL, 'D'},
    {"concurrency", required_argument, NULL, 'c'},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"timeout", required_argument, NULL, 't'},
    {"stream", no_argument, NULL, OPT_STREAM},
    {"group", no_argument, NULL, 'g'},
    {"diff", no_argument, NULL, OPT_DIFF},
    {"latency", no_argument, NULL, OPT_LATENCY},
    {"sort", required_argument, NULL, OPT_SORT},
    {"json", no_argument, NULL, OPT_JSON},
    {"askpass", no_argument, NULL, OPT_ASKPASS},
    {"tls", no_argument, NULL, OPT_TLS},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"cluster", no_argument, NULL, OPT_CLUSTER},
    {"primaries", no_argument, NULL, OPT_PRIMARIES},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The field an option that only switches something on sets, or NULL. */
static int *flag_of(cli *c, int opt)
{
    switch (opt) {
    case OPT_STREAM: return &c->stream;
    case 'g': return &c->group;
    case OPT_DIFF: return &c->diff;
    case OPT_LATENCY: return &c->latency;
    case OPT_JSON: return &c->json;
    case OPT_ASKPASS: return &c->askpass;
    case OPT_TLS: return &c->tls;
    case OPT_INSECURE: return &c->insecure;
    case OPT_CLUSTER: return &c->cluster;
    case OPT_PRIMARIES: return &c->primaries;
    default: return NULL;
    }
}

/* The field an option whose value is kept as given sets, or NULL. */
static const char **string_of(cli *c, int opt)
{
    switch (opt) {
    case 'F': return &c->cmd_file;
    case 'e': return &c->sql;
    case 'u': return &c->user;
    case 'D': return &c->database;
    case OPT_CACERT: return &c->cacert;
    case OPT_CERT: return &c->cert;
    case OPT_KEY: return &c->key;
    default: return NULL;
    }
}

/* An option with a value to check or a host list. Returns -1 to go on, or
 * the exit status once the message is printed. */
static int parse_value(cli *c, int opt, char *arg)
{
    char err[512];
    int rc;

    switch (opt) {
    case 'H':
        rc = cli_hosts_add_list(&c->hosts, arg, err, sizeof(err));
        /* The list is copied now: blot its passwords out of argv, where
         * ps and /proc/PID/cmdline show them to every local user. The
         * environment and --askpass never expose them like this. */
        cli_hosts_scrub(arg);
        return rc != 0 ? usage_error("%s", err) : -1;
    case 'f':
        c->hosts_file = arg;
        if (cli_hosts_add_file(&c->hosts, arg, err, sizeof(err)) != 0)
            return usage_error("%s", err);
        return -1;
    case 'c':
        if (parse_num(arg, 1, 100000, &c->concurrency) != 0)
            return usage_error("bad --concurrency '%s' (1-100000)", arg);
        return -1;
    case OPT_CONNECT_TIMEOUT:
        if (parse_num(arg, 1, 86400000, &c->connect_timeout_ms) != 0)
            return usage_error("bad --connect-timeout '%s' (ms)", arg);
        return -1;
    case 't':
        if (parse_num(arg, 1, 86400000, &c->timeout_ms) != 0)
            return usage_error("bad --timeout '%s' (ms)", arg);
        return -1;
    case OPT_SORT:
        c->sort = strcmp(arg, "host") == 0      ? CLI_SORT_HOST
                  : strcmp(arg, "status") == 0  ? CLI_SORT_STATUS
                  : strcmp(arg, "latency") == 0 ? CLI_SORT_LATENCY
                                                : -1;
        return c->sort < 0 ? usage_error("bad --sort '%s' (host, status or latency)", arg) : -1;
    default:
        return CLI_EXIT_USAGE; /* not reached: parse_opt knows every option */
    }
}

/* One option. Returns -1 to go on, or the exit status once the message is
 * printed. */
static int parse_opt(cli *c, int opt, char **argv)
{
    int *flag = flag_of(c, opt);
    const char **str = string_of(c, opt);
    char err[512];

    if (flag != NULL || str != NULL) {
        if (flag != NULL)
            *flag = 1;
        else
            *str = optarg;
        return -1;
    }
    switch (opt) {
    case 'V':
        printf(CLI_NAME " %s (libvolley %s)\n", VL_VERSION_STRING, vl_version());
        return CLI_EXIT_OK;
    case 'h':
        usage(stdout);
        return CLI_EXIT_OK;
    case ':':
    case '?':
        if (optopt != 0 && optopt < 1000)
            snprintf(err, sizeof(err), "-%c", optopt);
        else /* "--name=value": the value could be a secret. */
            snprintf(err, sizeof(err), "%.*s", (int)strcspn(argv[optind - 1], "="),
                     argv[optind - 1]);
        return usage_error(opt == ':' || (optopt && strchr("HfFeuDct", optopt))
                               ? "option '%s' needs a value"
                               : "unknown option '%s'",
                           err);
    default:
        return parse_value(c, opt, optarg);
    }
}

/* Reads the command line into c. Returns -1 to go on, or the exit status
 * once the message is printed (c is freed then). */
static int parse_args(cli *c, int argc, char **argv)
{
    int opt, rc;

    memset(c, 0, sizeof(*c));
    c->concurrency = 64;
    c->connect_timeout_ms = 5000;
    c->timeout_ms = 10000;
    opterr = 0;
    /* '+': stop at the first non-option, so command arguments like "-1" or
     * "--foo" pass through to Redis unchanged. */
    while ((opt = getopt_long(argc, argv, "+H:f:F:e:u:D:c:t:gVh", longopts, NULL)) != -1) {
        rc = parse_opt(c, opt, argv);
        if (rc >= 0)
            return cli_free(c), rc;
    }
    if (optind < argc && cli_cmds_add_argv(&c->cmds, argc - optind, argv + optind) != 0)
        return cli_free(c), usage_error("%s", "out of memory");
    return check_args(c);
}
static cli_output output_of(const cli *c, const cli_rec *recs, const char *const *names,
                            size_t n)
{
    cli_output o;

    memset(&o, 0, sizeof(o));
    o.recs = recs;
    o.names = names;
    o.n = n;
    o.json = c->json;
    o.group = c->group;
    o.diff = c->diff;
    o.sort = c->sort;
    /* The grouped views show a latency range in each group's header. */
    o.latency = c->latency;
    return o;
}

/* --cluster: the nodes' results, printed as records named host:port.
 * Returns the exit status. */
static int print_fanout(cli *c, const vl_fanout_result *r)
{
    size_t n = vl_fanout_count(r), i;
    cli_rec *recs = calloc(n ? n : 1, sizeof(*recs));
    const char **names = calloc(n ? n : 1, sizeof(char *));
    cli_output o;
    int code = CLI_EXIT_UNREACHABLE;

    if (recs != NULL && names != NULL) {
        for (i = 0; i < n; i++) {
            recs[i].status = CLI_PENDING;
            cli_rec_add(&recs[i], r, i, 0);
            names[i] = vl_fanout_host(r, i);
        }
        o = output_of(c, recs, names, n);
        cli_output_all(&o, NULL);
        code = cli_output_summary(&o);
    } else {
        fprintf(stderr, CLI_NAME ": out of memory\n");
    }
    for (i = 0; recs != NULL && i < n; i++)
        cli_rec_free(&recs[i]);
    free(recs);
    free(names);
    return code;
}

/* Appends `s` to buf (cap bytes); -1 when it does not fit. */
static int append(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(buf);

    return (size_t)snprintf(buf + n, cap - n, "%s", s) >= cap - n ? -1 : 0;
}

/* Where the host part of a seed is: past "scheme://" and the last '@'
 * before any query (a password may hold '@' or '/'), up to the path or
 * query. */
static const char *seed_host(const char *h, size_t *len)
{
    const char *sep = strstr(h, "://");
    const char *p = sep != NULL ? sep + 3 : h, *q = p + strcspn(p, "?"), *at = NULL, *s;

    for (s = p; s < q; s++)
        if (*s == '@')
            at = s;
    p = at != NULL ? at + 1 : p;
    *len = strcspn(p, "/?");
    return p;
}

/* The URL of the cluster from the seeds (-H): redis:// or rediss:// URLs
 * (or their +cluster forms) or host:port seeds, joined into one
 * redis+cluster:// URL (rediss+cluster:// for rediss:// or --tls). The
 * first seed's user, password, path and parameters are the cluster's; of
 * the others only the host:port counts (a range such as
 * redis://:pw@h:[7000-7002] expands into seeds that all carry them). The
 * password of REDISCLI_AUTH or --askpass goes in when the URL has none.
 * `seeds` gets the host:port list, which may be printed. Returns 0, or an
 * exit status once the message is printed. */
static int cluster_url(cli *c, char *buf, size_t cap, char *seeds, size_t seedcap)
{
    static const struct {
        const char *typed, *cluster;
    } schemes[] = {{"redis", "redis+cluster"},
                   {"rediss", "rediss+cluster"},
                   {"redis+cluster", "redis+cluster"},
                   {"rediss+cluster", "rediss+cluster"}};
    const char *first = c->hosts.v[0], *host, *post = "";
    char userinfo[1024] = "", enc[3 * sizeof(c->password) + 1];
    const char *scheme = c->tls ? "rediss+cluster" : "redis+cluster";
    size_t i, k, len;
    int rc = CLI_EXIT_USAGE;

    buf[0] = seeds[0] = '\0';
    for (i = 0; i < c->hosts.n; i++) {
        const char *h = c->hosts.v[i], *sep = strstr(h, "://");

        if (sep == NULL)
            continue;
        for (k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++)
            if (strlen(schemes[k].typed) == (size_t)(sep - h) &&
                strncmp(h, schemes[k].typed, (size_t)(sep - h)) == 0)
                break;
        if (k == sizeof(schemes) / sizeof(schemes[0])) {
            fprintf(stderr, CLI_NAME ": --cluster needs redis:// or rediss:// seeds, not "
                            "'%.*s://...'\n", (int)(sep - h), h);
            return CLI_EXIT_USAGE;
        }
        if (i == 0)
            scheme = schemes[k].cluster;
    }
    host = seed_host(first, &len);
    {
        const char *p = strstr(first, "://") != NULL ? strstr(first, "://") + 3 : first;

        if (host > p) /* "user:password@" */
            snprintf(userinfo, sizeof(userinfo), "%.*s", (int)(host - p), p);
        post = host + len;
    }
    if (c->have_password && strchr(userinfo, ':') == NULL) {
        /* [user]@ becomes [user]:password@. */
        size_t u = strlen(userinfo);

        if (u > 0)
            userinfo[--u] = '\0';
        url_encode(enc, sizeof(enc), c->password);
        if ((size_t)snprintf(userinfo + u, sizeof(userinfo) - u, ":%s@", enc) >=
            sizeof(userinfo) - u)
            goto out;
    }
    if ((size_t)snprintf(buf, cap, "%s://%s", scheme, userinfo) >= cap)
        goto out;
    for (i = 0; i < c->hosts.n; i++) {
        char one[512];

        host = seed_host(c->hosts.v[i], &len);
        if (len == 0 || len >= sizeof(one)) {
            fprintf(stderr, CLI_NAME ": seed %zu has no host:port\n", i + 1);
            goto out;
        }
        snprintf(one, sizeof(one), "%s%.*s", i > 0 ? "," : "", (int)len, host);
        if (append(buf, cap, one) != 0 || append(seeds, seedcap, one) != 0)
            goto too_long;
    }
    if (append(buf, cap, post) != 0)
        goto too_long;
    if (strncmp(buf, "rediss+cluster://", 17) == 0 && tls_params(c, buf, cap) != 0)
        goto too_long;
    rc = 0;
    goto out;
too_long:
    fprintf(stderr, CLI_NAME ": the cluster's seeds are too long\n");
out:
    memset(userinfo, 0, sizeof(userinfo));
    memset(enc, 0, sizeof(enc));
    if (rc != 0)
        memset(buf, 0, cap);
    return rc;
}

/* After a discovery that found no cluster: asks each seed for INFO cluster,
 * to tell a seed that is no cluster node (cluster_enabled:0) from one that
 * is unreachable. Prints a line for each such seed; returns how many. */
static size_t say_not_cluster_nodes(cli *c, vl_loop *loop)
{
    const char *argv[2] = {"INFO", "cluster"};
    vl_fanout_options fo;
    const vl_fanout_result *r;
    vl_future *f;
    size_t i, n = 0;

    /* Seeds given as +cluster URLs are no plain Redis hosts to ask. */
    for (i = 0; i < c->hosts.n; i++)
        if (strstr(c->hosts.v[i], "+cluster://") != NULL)
            return 0;
    if (build_urls(c) != 0)
        return 0;
    vl_fanout_options_init(&fo);
    fo.connect_timeout_ms = (uint64_t)c->connect_timeout_ms;
    fo.timeout_ms = (uint64_t)c->timeout_ms;
    fo.password = c->have_password ? c->password : NULL;
    f = vl_fanout_redis(loop, (const char *const *)c->urls, c->hosts.n, 2, argv, NULL, &fo);
    if (f != NULL && vl_loop_run_until(loop, f) == VL_OK) {
        r = vl_future_fanout(f);
        for (i = 0; i < vl_fanout_count(r); i++) {
            const char *info = vl_fanout_status(r, i) == VL_OK
                                   ? vl_redis_reply_str(vl_fanout_redis_reply(r, i), NULL)
                                   : NULL;

            if (info != NULL && strstr(info, "cluster_enabled:0") != NULL) {
                fprintf(stderr, CLI_NAME ": %s is not a Redis Cluster node (its INFO says "
                                "cluster_enabled:0)\n", c->shown[i]);
                n++;
            }
        }
    }
    vl_future_free(f);
    return n;
}

/* --cluster: discovers the cluster from its seeds (within --connect-timeout
 * plus --timeout), then runs the command on every node of its map, or every
 * primary, through the library's cluster fan-out: each node bounded by
 * --timeout, one line per node named host:port. */
static int run_cluster(cli *c, vl_loop *loop)
{
    char url[8192], seeds[1024];
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    vl_future *f;
    int rc, code;

    code = cluster_url(c, url, sizeof(url), seeds, sizeof(seeds));
    if (code != 0)
        return code;
    vl_redis_cluster_options_init(&o);
    o.connect_timeout_ms = (uint64_t)c->connect_timeout_ms;
    o.command_timeout_ms = (uint64_t)c->timeout_ms;
    o.acquire_timeout_ms = (uint64_t)c->timeout_ms;
    o.refresh_timeout_ms = (uint64_t)(c->connect_timeout_ms + c->timeout_ms);
    o.refresh_interval_ms = 0; /* one run: the map found at the start is the one used */
    cl = vl_redis_cluster_new(loop, url, &o);
    memset(url, 0, sizeof(url));
    if (cl == NULL) {
        fprintf(stderr, CLI_NAME ": out of memory\n");
        return CLI_EXIT_UNREACHABLE;
    }
    f = vl_future_timeout(vl_redis_cluster_ready(cl),
                          (uint64_t)(c->connect_timeout_ms + c->timeout_ms));
    rc = f != NULL ? vl_loop_run_until(loop, f) : VL_ENOMEM;
    if (rc != VL_OK && vl_redis_cluster_nodes(cl) == 0) {
        /* No map: a bad URL is a usage error; unreachable seeds, and seeds
         * that are no cluster nodes, leave no cluster to run on. */
        fprintf(stderr, CLI_NAME ": no Redis Cluster found at %s: %s\n", seeds,
                f != NULL ? vl_future_error(f) : "out of memory");
        code = rc == VL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_UNREACHABLE;
        vl_future_free(f);
        vl_redis_cluster_free(cl);
        if (code == CLI_EXIT_UNREACHABLE)
            say_not_cluster_nodes(c, loop);
        return code;
    }
    if (rc != VL_OK) /* a map, but not every primary is up: those fail alone below */
        fprintf(stderr, CLI_NAME ": warning: the cluster is not all up: %s\n",
                vl_future_error(f));
    vl_future_free(f);
    f = vl_redis_cluster_each(cl, c->primaries ? VL_REDIS_CLUSTER_PRIMARIES
                                               : VL_REDIS_CLUSTER_NODES,
                              c->cmds.v[0].argc, (const char **)c->cmds.v[0].argv,
                              c->cmds.v[0].len);
    rc = f != NULL ? vl_loop_run_until(loop, f) : VL_ENOMEM;
    if (rc != VL_OK) {
        fprintf(stderr, CLI_NAME ": %s\n", f != NULL ? vl_future_error(f) : "out of memory");
        code = rc == VL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_UNREACHABLE;
    } else {
        code = print_fanout(c, vl_future_fanout(f));
    }
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    return code;
}
/* Says on stderr when some TLS host will not verify its server. */
static void warn_insecure(const cli *c)
{
    for (size_t h = 0; h < c->hosts.n; h++) {
        const char *q = strchr(c->urls[h], '?');
        if (strncmp(c->urls[h], "rediss://", 9) == 0 && has_param(q, "insecure=1")) {
            fprintf(stderr, CLI_NAME ": warning: TLS certificates are not verified (insecure): "
                            "anyone on the path can read and change the traffic\n");
            return;
        }
    }
}

/* The first Ctrl-C stops the run and prints what it has; a second one, for
 * a volley stuck in printing, leaves at once. */
static void on_sigint(int sig)
{
    (void)sig;
    if (interrupted)
        _exit(CLI_EXIT_INTERRUPTED);
    interrupted = 1;
}

/* 1 when a Redis host refused a password it does not need: redis-cli warns
 * and goes on without it, and so do we. */
static int needs_no_password(const cli *c, const cli_rec *rec, int kind)
{
    return c->have_password && kind == 0 && rec->status == VL_ECONN && rec->error != NULL &&
           strstr(rec->error, "without any password configured") != NULL;
}

/* One run of some of c's hosts: job host j is c's host idx[j]. */
typedef struct cli_some {
    cli *c;
    const size_t *idx;
    cli_rec *recs;
} cli_some;

static void on_final(size_t j, void *ud)
{
    cli_some *s = ud;
    cli *c = s->c;
    size_t i = s->idx[j];
    cli_output o;

    if (!c->stream || needs_no_password(c, &s->recs[j], c->kind[i]))
        return;
    o = output_of(c, &s->recs[j], (const char *const *)&c->shown[i], 1);
    cli_output_host(&o, 0);
    fflush(stdout);
    c->printed[i] = 1;
}

/* Runs hosts idx[0, n) of c, with the passwords or without, into c->recs.
 * Returns the cli_run status. */
static int run_some(cli *c, vl_loop *loop, const size_t *idx, size_t n, int with_password)
{
    const char **urls = calloc(n ? n : 1, sizeof(char *));
    unsigned char *kind = calloc(n ? n : 1, 1);
    cli_rec *recs = calloc(n ? n : 1, sizeof(*recs));
    cli_some some = {c, idx, recs};
    cli_job job;
    size_t j;
    int rc = VL_ENOMEM;

    memset(&job, 0, sizeof(job));
    if (urls == NULL || kind == NULL || recs == NULL)
        goto out;
    for (j = 0; j < n; j++) {
        urls[j] = c->urls[idx[j]];
        kind[j] = c->kind[idx[j]];
        recs[j].status = CLI_PENDING;
    }
    job.loop = loop;
    job.urls = urls;
    job.kind = kind;
    job.n = n;
    job.cmds = &c->cmds;
    job.sql = c->sql;
    vl_fanout_options_init(&job.fo);
    job.fo.connect_timeout_ms = (uint64_t)c->connect_timeout_ms;
    job.fo.timeout_ms = (uint64_t)c->timeout_ms;
    job.fo.concurrency = (size_t)c->concurrency;
    job.password[0] = with_password && c->have_password ? c->password : NULL;
    job.password[1] = with_password && c->have_mysql_password ? c->mysql_password : NULL;
    job.recs = recs;
    job.on_final = on_final;
    job.ud = &some;
    job.interrupt = &interrupted;
    /* --stream shows progress itself, on the lines it prints. */
    job.progress = isatty(STDERR_FILENO) && !c->stream;
    rc = cli_run(&job);
    if (rc != VL_OK && rc != VL_ECANCELED)
        fprintf(stderr, CLI_NAME ": %s\n", job.fatal[0] ? job.fatal : vl_strerror(rc));
    for (j = 0; j < n; j++) {
        cli_rec_free(&c->recs[idx[j]]);
        c->recs[idx[j]] = recs[j];
        if (rc == VL_ECANCELED)
            cli_rec_interrupt(&c->recs[idx[j]]);
    }
out:
    free(urls);
    free(kind);
    free(recs);
    return rc;
}

/* Runs again, without the password, the Redis hosts that said they have
 * none, as redis-cli does after its warning. */
static int retry_without_password(cli *c, vl_loop *loop)
{
    size_t n = c->hosts.n, k = 0, i;
    size_t *idx = malloc((n ? n : 1) * sizeof(*idx));
    const char **names = malloc((n ? n : 1) * sizeof(char *));
    char *list;
    int rc = VL_OK;

    if (idx == NULL || names == NULL) {
        free(idx);
        free(names);
        return VL_ENOMEM;
    }
    for (i = 0; i < n; i++)
        if (needs_no_password(c, &c->recs[i], c->kind[i])) {
            names[k] = c->shown[i];
            idx[k++] = i;
        }
    if (k > 0) {
        list = cli_hosts_compress(names, k);
        fprintf(stderr, CLI_NAME ": warning: %s need%s no password (the server has none "
                        "set): running without it\n", list != NULL ? list : "some hosts",
                k == 1 ? "s" : "");
        free(list);
        rc = run_some(c, loop, idx, k, 0);
    }
    free(idx);
    free(names);
    return rc;
}

/* Runs every host; prints them (unless --stream did) and the summary.
 * Returns the exit status. */
static int run_hosts(cli *c, vl_loop *loop)
{
    size_t n = c->hosts.n, i;
    size_t *idx = malloc((n ? n : 1) * sizeof(*idx));
    cli_output o;
    int rc;

    c->recs = calloc(n ? n : 1, sizeof(*c->recs));
    c->printed = calloc(n ? n : 1, 1);
    if (idx == NULL || c->recs == NULL || c->printed == NULL) {
        free(idx);
        fprintf(stderr, CLI_NAME ": out of memory\n");
        return CLI_EXIT_UNREACHABLE;
    }
    for (i = 0; i < n; i++)
        idx[i] = i;
    rc = run_some(c, loop, idx, n, 1);
    free(idx);
    if (rc == VL_OK)
        rc = retry_without_password(c, loop);
    if (rc != VL_OK && rc != VL_ECANCELED)
        return rc == VL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_UNREACHABLE;
    o = output_of(c, c->recs, (const char *const *)c->shown, n);
    cli_output_all(&o, c->printed);
    return cli_output_summary(&o);
}

/* The passwords that URLs without one get: --askpass for every host, else
 * REDISCLI_AUTH for Redis and MYSQL_PWD for MySQL. */
static int get_passwords(cli *c)
{
    const char *env;

    if (c->askpass) {
        if (read_password(c) != 0)
            return -1;
        memcpy(c->mysql_password, c->password, sizeof(c->password));
        c->have_mysql_password = 1;
        return 0;
    }
    env = getenv("REDISCLI_AUTH");
    if (env != NULL && env[0] != '\0') {
        snprintf(c->password, sizeof(c->password), "%s", env);
        c->have_password = 1;
    }
    env = getenv("MYSQL_PWD");
    if (env != NULL && env[0] != '\0') {
        snprintf(c->mysql_password, sizeof(c->mysql_password), "%s", env);
        c->have_mysql_password = 1;
    }
    return 0;
}

/* Drops repeated hosts, saying so. 0, or -1 when out of memory. */
static int dedup(cli *c)
{
    size_t dropped = cli_hosts_dedup(&c->hosts);

    if (dropped == (size_t)-1)
        return -1;
    if (dropped > 0)
        fprintf(stderr, CLI_NAME ": %zu repeated host%s dropped: each host runs once\n",
                dropped, dropped == 1 ? "" : "s");
    return 0;
}

static int run_main(cli *c)
{
    struct sigaction sa;
    vl_loop *loop;
    int rc;

    if (get_passwords(c) != 0)
        return CLI_EXIT_USAGE;
    /* Only now: a Ctrl-C at the password prompt ends volley as it always
     * did, with the terminal's echo restored by the shell. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    if (c->cluster && c->insecure)
        fprintf(stderr, CLI_NAME ": warning: TLS certificates are not verified (insecure): "
                        "anyone on the path can read and change the traffic\n");
    else if (!c->cluster)
        warn_insecure(c);
    loop = vl_loop_new();
    if (loop == NULL) {
        fprintf(stderr, CLI_NAME ": cannot make an event loop\n");
        return CLI_EXIT_UNREACHABLE;
    }
    rc = c->cluster ? run_cluster(c, loop) : run_hosts(c, loop);
    vl_loop_free(loop);
    return rc;
}

int main(int argc, char **argv)
{
    cli c;
    int rc;

    rc = parse_args(&c, argc, argv);
    if (rc >= 0)
        return rc;
    if (!c.cluster) {
        rc = dedup(&c) != 0 ? -1 : build_urls(&c);
        if (rc == 0)
            rc = check_kinds(&c);
        if (rc != 0) {
            if (rc < 0)
                fprintf(stderr, CLI_NAME ": out of memory\n");
            cli_free(&c);
            return rc < 0 ? CLI_EXIT_UNREACHABLE : rc;
        }
    }
    rc = run_main(&c);
    cli_free(&c);
    return rc;
}
