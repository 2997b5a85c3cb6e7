/*
 * config.c: settings, from defaults, /etc/mistrald.conf and the command line.
 *
 * Every setting is one entry of config_table: its name is both the key in
 * the file and the long option (--name=value), so the two can never drift
 * apart, and --help and the SIGHUP reload are driven by the same table.
 *
 * The file is "key = value" lines; blank lines and lines whose first
 * non-blank character is '#' are comments.  Values run to the end of the
 * line with surrounding blanks removed (no quoting: a path may contain
 * spaces or '#').  An unknown key or a bad value is an error naming the
 * file and line.  Sizes take a K, M or G suffix (powers of 1024).
 *
 * DESIGN
 * 1. Precedence: built-in defaults, then the file, then the command line.
 *    The command-line pairs are kept (config_argv) so that a SIGHUP reload
 *    re-reads the file and then re-applies them.
 * 2. Defaults that depend on how the daemon runs (config_defaults): as a
 *    system service (uid 0, or systemd's STATE_DIRECTORY/RUNTIME_DIRECTORY
 *    set) the socket is /run/mistrald/mistrald.sock (or under
 *    $RUNTIME_DIRECTORY) and state lives in /var/lib/mistrald (or the first
 *    entry of $STATE_DIRECTORY); for a user, $XDG_RUNTIME_DIR/mistrald/ and
 *    $XDG_STATE_HOME/mistrald (or ~/.local/state/mistrald).
 * 3. Only settings flagged CONFIG_LIVE change on reload; a changed value
 *    of any other setting is logged as needing a restart.
 */
#include <sys/types.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mistrald.h"

enum config_type {
	CONFIG_STR,
	CONFIG_UINT,
	CONFIG_SIZE,
	CONFIG_BOOL,
	CONFIG_LEVEL,
};

#define CONFIG_LIVE	0x1	/* changes on SIGHUP */
#define CONFIG_CMDLINE	0x2	/* command line only, not a file key */

struct config_opt {
	const char	*name;
	int		 short_opt;
	enum config_type type;
	size_t		 offset;
	uint64_t	 min, max;	/* numeric range */
	int		 flags;
	const char	*metavar;
	const char	*help;
};

#define C(f)	offsetof(struct config, f)
static const struct config_opt config_table[] = {
	{ "model", 'm', CONFIG_STR, C(model), 0, 0, 0, "MODEL",
	  "GGUF model file (default: a small random demo model)" },
	{ "socket", 's', CONFIG_STR, C(socket), 0, 0, 0, "SOCKET",
	  "Unix socket path" },
	{ "state-dir", 'd', CONFIG_STR, C(state_dir), 0, 0, 0, "STATE_DIR",
	  "directory for the session database" },
	{ "config", 'c', CONFIG_STR, C(config_file), 0, 0, CONFIG_CMDLINE,
	  "CONFIG", "configuration file" },
	{ "threads", 't', CONFIG_UINT, C(threads), 0, 1024, 0, "THREADS",
	  "compute threads (0: one per available CPU)" },
	{ "foreground", 'f', CONFIG_BOOL, C(foreground), 0, 1,
	  CONFIG_CMDLINE, NULL, "stay in the foreground, log to stderr" },
	{ "log-level", 0, CONFIG_LEVEL, C(log_level), 0, 0, CONFIG_LIVE,
	  "LEVEL", "debug, info or warning (default info)" },
	{ "log-file", 0, CONFIG_STR, C(log_file), 0, 0, CONFIG_LIVE, "PATH",
	  "append the log here (default stderr; STATE_DIR/mistrald.log "
	  "when detached)" },
	{ "socket-group", 0, CONFIG_STR, C(socket_group), 0, 0, 0, "GROUP",
	  "group owning the socket, whose members may connect" },
	{ "admin-group", 0, CONFIG_STR, C(admin_group), 0, 0, CONFIG_LIVE,
	  "GROUP", "members may act on every user's sessions" },
	{ "template", 0, CONFIG_STR, C(template), 0, 0, CONFIG_LIVE, "NAME",
	  "chat template for new sessions (default: from the model)" },
	{ "kv-type", 0, CONFIG_STR, C(kv_type), 0, 0, 0, "TYPE",
	  "KV cache element type: f32, f16 or q8_0 (default f16)" },
	{ "window", 0, CONFIG_UINT, C(window), 0, UINT32_MAX, CONFIG_LIVE, "N",
	  "cap on a session's attention window in tokens (0: model's)" },
	{ "kv-budget", 0, CONFIG_SIZE, C(kv_budget), 1 << 20, UINT64_MAX,
	  CONFIG_LIVE, "SIZE",
	  "memory for resident KV caches (default: a quarter of RAM)" },
	{ "chunk", 0, CONFIG_UINT, C(chunk), 1, 4096, 0, "N",
	  "tokens per batched step (default 64)" },
	{ "max-message", 0, CONFIG_SIZE, C(max_message), 4096, 1u << 30,
	  CONFIG_LIVE, "SIZE", "largest request accepted (default 4M)" },
	{ "max-prompt-tokens", 0, CONFIG_UINT, C(max_prompt_tokens), 1,
	  UINT32_MAX, CONFIG_LIVE, "N",
	  "most new tokens one request may add (default 32768)" },
	{ "max-tokens", 0, CONFIG_UINT, C(max_tokens), 1, UINT32_MAX,
	  CONFIG_LIVE, "N", "most tokens one request may generate "
	  "(default 4096)" },
	{ "max-sessions-per-uid", 0, CONFIG_UINT, C(max_sessions_per_uid), 1,
	  UINT32_MAX, CONFIG_LIVE, "N", "sessions one user may own "
	  "(default 256)" },
	{ "max-requests-per-connection", 0, CONFIG_UINT,
	  C(max_requests_per_connection), 1, UINT32_MAX, CONFIG_LIVE, "N",
	  "requests one connection may have running (default 16)" },
	{ "max-requests-per-uid", 0, CONFIG_UINT, C(max_requests_per_uid), 1,
	  UINT32_MAX, CONFIG_LIVE, "N",
	  "requests one user may have running (default 64)" },
	{ "max-connections", 0, CONFIG_UINT, C(max_connections), 1, 65536,
	  CONFIG_LIVE, "N", "open connections (default 512)" },
	{ "write-buffer", 0, CONFIG_SIZE, C(write_buffer), 4096, 1u << 30,
	  CONFIG_LIVE, "SIZE", "output queued for a client that does not "
	  "read before streaming to it pauses (default 1M)" },
	{ "shutdown-timeout", 0, CONFIG_UINT, C(shutdown_timeout), 1, 3600,
	  CONFIG_LIVE, "SECONDS", "bound on a clean shutdown (default 20)" },
};
#undef C
#define CONFIG_N	(sizeof config_table / sizeof config_table[0])

/* Replace a string setting. */
static void
config_set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

/* Parse "123", "4K", "16M", "2G" (1024-based). */
static int
config_parse_number(const char *v, int sizes, uint64_t *out)
{
	unsigned long long n;
	uint64_t mul = 1;
	char *end;

	if (!isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0)
		return -1;
	if (sizes && *end != '\0' && end[1] == '\0') {
		switch (*end) {
		case 'k': case 'K': mul = 1ull << 10; break;
		case 'm': case 'M': mul = 1ull << 20; break;
		case 'g': case 'G': mul = 1ull << 30; break;
		case 't': case 'T': mul = 1ull << 40; break;
		default: return -1;
		}
		end++;
	}
	if (*end != '\0' || (n != 0 && mul > UINT64_MAX / n))
		return -1;
	*out = (uint64_t)n * mul;
	return 0;
}

/*
 * Apply one setting.  Returns 0, or -1 with a message (without position)
 * in cause, which the caller frees.
 */
static int
config_apply(struct config *c, const struct config_opt *o, const char *v,
    char **cause)
{
	void *field = (char *)c + o->offset;
	uint64_t n;
	int level;

	switch (o->type) {
	case CONFIG_STR:
		config_set_str(field, v);
		return 0;
	case CONFIG_BOOL:
		if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 ||
		    strcmp(v, "1") == 0)
			*(int *)field = 1;
		else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 ||
		    strcmp(v, "0") == 0)
			*(int *)field = 0;
		else
			goto bad;
		return 0;
	case CONFIG_LEVEL:
		if ((level = log_level_parse(v)) == -1)
			goto bad;
		*(int *)field = level;
		return 0;
	case CONFIG_UINT:
	case CONFIG_SIZE:
		if (config_parse_number(v, o->type == CONFIG_SIZE, &n) != 0)
			goto bad;
		if (n < o->min || n > o->max) {
			xasprintf(cause, "%s: %s is out of range (%llu to %llu)",
			    o->name, v, (unsigned long long)o->min,
			    (unsigned long long)o->max);
			return -1;
		}
		if (o->type == CONFIG_SIZE)
			*(uint64_t *)field = n;
		else
			*(uint32_t *)field = (uint32_t)n;
		return 0;
	}
bad:
	xasprintf(cause, "%s: bad value \"%s\"", o->name, v);
	return -1;
}

static const struct config_opt *
config_find(const char *name, size_t len)
{
	for (size_t i = 0; i < CONFIG_N; i++) {
		if (strlen(config_table[i].name) == len &&
		    memcmp(config_table[i].name, name, len) == 0)
			return &config_table[i];
	}
	return NULL;
}

/* Where a user's (or the system's) socket and state go by default. */
static void
config_defaults_paths(struct config *c)
{
	const char *state = getenv("STATE_DIRECTORY");
	const char *run = getenv("RUNTIME_DIRECTORY");
	const char *xdg_run = getenv("XDG_RUNTIME_DIR");
	const char *xdg_state = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	struct passwd *pw;
	size_t len;

	if (getuid() == 0 || (state != NULL && *state != '\0') ||
	    (run != NULL && *run != '\0')) {
		if (state != NULL && *state != '\0') {
			/* systemd passes a colon-separated list. */
			len = strcspn(state, ":");
			c->state_dir = xstrndup(state, len);
		} else
			c->state_dir = xstrdup("/var/lib/mistrald");
		if (run != NULL && *run != '\0') {
			len = strcspn(run, ":");
			xasprintf(&c->socket, "%.*s/mistrald.sock", (int)len,
			    run);
		} else
			c->socket = xstrdup("/run/mistrald/mistrald.sock");
		return;
	}
	if (home == NULL || *home == '\0') {
		pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : "/";
	}
	if (xdg_state != NULL && *xdg_state == '/')
		xasprintf(&c->state_dir, "%s/mistrald", xdg_state);
	else
		xasprintf(&c->state_dir, "%s/.local/state/mistrald", home);
	if (xdg_run != NULL && *xdg_run == '/')
		xasprintf(&c->socket, "%s/mistrald/mistrald.sock", xdg_run);
	else
		xasprintf(&c->socket, "%s/mistrald.sock", c->state_dir);
}

/* Fill c with the built-in defaults. */
void
config_defaults(struct config *c)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	long page = sysconf(_SC_PAGESIZE);

	memset(c, 0, sizeof *c);
	config_defaults_paths(c);
	c->log_level = LOG_LEVEL_INFO;
	c->kv_type = xstrdup("f16");
	c->template = xstrdup("auto");
	if (pages > 0 && page > 0)
		c->kv_budget = (uint64_t)pages * (uint64_t)page / 4;
	if (c->kv_budget < (64u << 20))
		c->kv_budget = 64u << 20;
	c->chunk = 64;
	c->max_message = 4u << 20;
	c->max_prompt_tokens = 32768;
	c->max_tokens = 4096;
	c->max_sessions_per_uid = 256;
	c->max_requests_per_connection = 16;
	c->max_requests_per_uid = 64;
	c->max_connections = 512;
	c->write_buffer = 1u << 20;
	c->shutdown_timeout = 20;
}

void
config_free(struct config *c)
{
	for (size_t i = 0; i < CONFIG_N; i++) {
		if (config_table[i].type == CONFIG_STR) {
			char **p = (char **)((char *)c + config_table[i].offset);

			free(*p);
			*p = NULL;
		}
	}
	for (int i = 0; i < c->n_argv; i++)
		free(c->argv_vals[i]);
	free(c->argv_opts);
	free(c->argv_vals);
	c->argv_opts = NULL;
	c->argv_vals = NULL;
	c->n_argv = 0;
}

/*
 * Parse a configuration file held in buf (len bytes, any bytes), named
 * name in messages.  Returns 0, or -1 with "name:line: what" in cause.
 */
int
config_parse_buf(struct config *c, const char *name, const char *buf,
    size_t len, char **cause)
{
	const struct config_opt *o;
	const char *p = buf, *end = buf + len, *eol, *k, *ke, *v, *ve;
	char *value, *why;
	int line = 0;

	while (p < end) {
		line++;
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		k = p;
		p = eol + 1;
		while (k < eol && (*k == ' ' || *k == '\t'))
			k++;
		ve = eol;
		while (ve > k && isspace((unsigned char)ve[-1]))
			ve--;
		if (k == ve || *k == '#')
			continue;
		if (memchr(k, '\0', (size_t)(ve - k)) != NULL) {
			xasprintf(cause, "%s:%d: NUL byte", name, line);
			return -1;
		}
		ke = k;
		while (ke < ve && (isalnum((unsigned char)*ke) || *ke == '-'))
			ke++;
		v = ke;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		if (ke == k || v == ve || *v != '=') {
			xasprintf(cause, "%s:%d: expected \"key = value\"",
			    name, line);
			return -1;
		}
		v++;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		o = config_find(k, (size_t)(ke - k));
		if (o == NULL || (o->flags & CONFIG_CMDLINE)) {
			xasprintf(cause, "%s:%d: unknown key \"%.*s\"", name,
			    line, (int)(ke - k), k);
			return -1;
		}
		value = xstrndup(v, (size_t)(ve - v));
		if (config_apply(c, o, value, &why) != 0) {
			xasprintf(cause, "%s:%d: %s", name, line, why);
			free(why);
			free(value);
			return -1;
		}
		free(value);
	}
	return 0;
}

/* Read and parse a file; a missing file is an error only if required. */
static int
config_parse_file(struct config *c, const char *path, int required,
    char **cause)
{
	FILE *f;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	int rc;

	if ((f = fopen(path, "re")) == NULL) {
		if (errno == ENOENT && !required)
			return 0;
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (cap - len < 4096) {
			if (cap > (1u << 20)) {
				xasprintf(cause, "%s: too large", path);
				fclose(f);
				free(buf);
				return -1;
			}
			cap = cap == 0 ? 8192 : cap * 2;
			buf = xrealloc(buf, cap);
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	rc = config_parse_buf(c, path, buf, len, cause);
	free(buf);
	return rc;
}

/* The file a configuration is read from, and whether it must exist. */
static const char *
config_file_path(const struct config *c, int *required)
{
	*required = c->config_file != NULL;
	return c->config_file != NULL ? c->config_file : MISTRALD_CONFIG_FILE;
}

void
config_usage(FILE *f)
{
	char opt[64];

	fprintf(f, "usage: mistrald [-f] [-c CONFIG] [-d STATE_DIR] "
	    "[-m MODEL] [-s SOCKET] [-t THREADS]\n"
	    "                [--KEY=VALUE ...]\n"
	    "       mistrald --help | --version\n\n"
	    "Every setting of mistrald.conf(5) is also a long option:\n");
	for (size_t i = 0; i < CONFIG_N; i++) {
		const struct config_opt *o = &config_table[i];

		if (o->metavar != NULL)
			snprintf(opt, sizeof opt, "%s%c%s--%s=%s",
			    o->short_opt ? "-" : "",
			    o->short_opt ? o->short_opt : ' ',
			    o->short_opt ? ", " : "  ", o->name, o->metavar);
		else
			snprintf(opt, sizeof opt, "%s%c%s--%s",
			    o->short_opt ? "-" : "",
			    o->short_opt ? o->short_opt : ' ',
			    o->short_opt ? ", " : "  ", o->name);
		fprintf(f, "  %-36s %s\n", opt, o->help);
	}
	fprintf(f, "  %-36s %s\n", "    --help", "show this help and exit");
	fprintf(f, "  %-36s %s\n", "    --version", "show the version and exit");
}

/*
 * Parse the command line into c (defaults + file + options).  Exits for
 * --help and --version.  Returns 0, or -1 with a message in cause.
 */
int
config_load(struct config *c, int argc, char **argv, char **cause)
{
	struct option longopts[CONFIG_N + 3];
	char shortopts[2 * CONFIG_N + 2], *sp = shortopts;
	const struct config_opt *o;
	const char *path;
	int ch, idx, required;

	*sp++ = ':';
	for (size_t i = 0; i < CONFIG_N; i++) {
		o = &config_table[i];
		longopts[i].name = o->name;
		longopts[i].has_arg = o->metavar != NULL ? required_argument :
		    no_argument;
		longopts[i].flag = NULL;
		longopts[i].val = 256 + (int)i;
		if (o->short_opt) {
			*sp++ = (char)o->short_opt;
			if (o->metavar != NULL)
				*sp++ = ':';
		}
	}
	*sp = '\0';
	longopts[CONFIG_N] = (struct option){ "help", no_argument, NULL, 'h' };
	longopts[CONFIG_N + 1] = (struct option){ "version", no_argument, NULL,
	    'V' };
	longopts[CONFIG_N + 2] = (struct option){ NULL, 0, NULL, 0 };

	config_defaults(c);
	c->argv_opts = xcalloc((size_t)argc + 1, sizeof *c->argv_opts);
	c->argv_vals = xcalloc((size_t)argc + 1, sizeof *c->argv_vals);
	opterr = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
		if (ch == 'h') {
			config_usage(stdout);
			exit(0);
		}
		if (ch == 'V') {
			printf("mistrald %s (protocol %d.%d)\n", PACKAGE_VERSION,
			    PROTO_VERSION_MAJOR, PROTO_VERSION_MINOR);
			exit(0);
		}
		if (ch == '?' || ch == ':') {
			if (optopt != 0 && optopt < 256)
				xasprintf(cause, "%s -%c", ch == ':' ?
				    "missing value for" : "unknown option",
				    optopt);
			else
				xasprintf(cause, "%s %s", ch == ':' ?
				    "missing value for" : "unknown option",
				    argv[optind - 1]);
			return -1;
		}
		o = NULL;
		if (ch >= 256)
			o = &config_table[ch - 256];
		else {
			for (size_t i = 0; i < CONFIG_N; i++)
				if (config_table[i].short_opt == ch)
					o = &config_table[i];
		}
		if (o == NULL) {
			xasprintf(cause, "unknown option");
			return -1;
		}
		c->argv_opts[c->n_argv] = (int)(o - config_table);
		c->argv_vals[c->n_argv] = xstrdup(o->metavar != NULL ? optarg :
		    "yes");
		c->n_argv++;
		if (o->offset == offsetof(struct config, config_file))
			config_set_str(&c->config_file, optarg);
	}
	if (optind != argc) {
		xasprintf(cause, "unexpected argument \"%s\"", argv[optind]);
		return -1;
	}
	path = config_file_path(c, &required);
	if (config_parse_file(c, path, required, cause) != 0)
		return -1;
	for (int i = 0; i < c->n_argv; i++) {
		o = &config_table[c->argv_opts[i]];
		if (config_apply(c, o, c->argv_vals[i], cause) != 0)
			return -1;
	}
	return 0;
}

/*
 * SIGHUP: re-read the file, re-apply the command line, and take the
 * settings that may change live.  On error the running settings are kept
 * and -1 is returned with a message in cause.
 */
int
config_reload(struct config *c, char **cause)
{
	struct config n;
	const struct config_opt *o;
	const char *path;
	int required;

	config_defaults(&n);
	n.config_file = c->config_file != NULL ? xstrdup(c->config_file) :
	    NULL;
	path = config_file_path(&n, &required);
	if (config_parse_file(&n, path, required, cause) != 0)
		goto fail;
	for (int i = 0; i < c->n_argv; i++) {
		o = &config_table[c->argv_opts[i]];
		if (config_apply(&n, o, c->argv_vals[i], cause) != 0)
			goto fail;
	}
	for (size_t i = 0; i < CONFIG_N; i++) {
		void *dst, *src;
		size_t sz;

		o = &config_table[i];
		if (o->flags & CONFIG_CMDLINE)
			continue;
		dst = (char *)c + o->offset;
		src = (char *)&n + o->offset;
		if (o->type == CONFIG_STR) {
			char **d = dst, **s = src;

			if ((*d == NULL) == (*s == NULL) &&
			    (*d == NULL || strcmp(*d, *s) == 0))
				continue;
			if (!(o->flags & CONFIG_LIVE)) {
				log_warnx("config_reload: %s changed; it takes "
				    "effect at the next start", o->name);
				continue;
			}
			free(*d);
			*d = *s;
			*s = NULL;
			continue;
		}
		sz = o->type == CONFIG_SIZE ? sizeof(uint64_t) :
		    o->type == CONFIG_UINT ? sizeof(uint32_t) : sizeof(int);
		if (memcmp(dst, src, sz) == 0)
			continue;
		if (!(o->flags & CONFIG_LIVE)) {
			log_warnx("config_reload: %s changed; it takes effect "
			    "at the next start", o->name);
			continue;
		}
		memcpy(dst, src, sz);
	}
	config_free(&n);
	return 0;
fail:
	config_free(&n);
	return -1;
}
