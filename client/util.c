/*
 * util.c: small helpers for the client: reading result maps, sampling
 * parameters from the command line, formatting, files.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

enum {
	PARAM_DOUBLE,
	PARAM_INT,
	PARAM_UINT,
	PARAM_STOP,
};

static const struct {
	const char	*key;
	int		 type;
} util_params[] = {
	{ "temperature", PARAM_DOUBLE },
	{ "top_k", PARAM_INT },
	{ "top_p", PARAM_DOUBLE },
	{ "min_p", PARAM_DOUBLE },
	{ "repeat_penalty", PARAM_DOUBLE },
	{ "repeat_last_n", PARAM_INT },
	{ "seed", PARAM_UINT },
	{ "max_tokens", PARAM_INT },
	{ "stop", PARAM_STOP },
};
#define UTIL_NPARAMS (sizeof util_params / sizeof util_params[0])

const msgpack_object *
obj_get(const msgpack_object *map, const char *key)
{
	return proto_arg(map, key);
}

const char *
obj_str(const msgpack_object *map, const char *key, char *buf, size_t cap)
{
	const char	*s;
	size_t		 len;

	if (cap == 0)
		return buf;
	buf[0] = '\0';
	if (proto_arg_str(map, key, &s, &len) != PROTO_ARG_OK)
		return buf;
	if (len >= cap)
		len = proto_utf8_complete(s, cap - 1);
	memcpy(buf, s, len);
	buf[len] = '\0';
	return buf;
}

int64_t
obj_int(const msgpack_object *map, const char *key, int64_t def)
{
	int64_t	v;
	double	d;

	if (proto_arg_int(map, key, &v) == PROTO_ARG_OK)
		return v;
	if (proto_arg_double(map, key, &d) == PROTO_ARG_OK)
		return (int64_t)d;
	return def;
}

double
obj_double(const msgpack_object *map, const char *key, double def)
{
	double	d;

	if (proto_arg_double(map, key, &d) == PROTO_ARG_OK)
		return d;
	return def;
}

bool
obj_bool(const msgpack_object *map, const char *key, bool def)
{
	bool	b;

	if (proto_arg_bool(map, key, &b) == PROTO_ARG_OK)
		return b;
	return def;
}

/* Turn \n, \t, \\ in a stop string typed on a command line into bytes. */
static char *
util_unescape(const char *s)
{
	char	*out, *o;

	if ((out = malloc(strlen(s) + 1)) == NULL)
		return NULL;
	for (o = out; *s != '\0'; s++) {
		if (*s != '\\' || s[1] == '\0') {
			*o++ = *s;
			continue;
		}
		switch (*++s) {
		case 'n':
			*o++ = '\n';
			break;
		case 't':
			*o++ = '\t';
			break;
		default:
			*o++ = *s;
			break;
		}
	}
	*o = '\0';
	return out;
}

int
params_add(struct params *p, const char *key, const char *value)
{
	struct param	*v, *np;
	char		*end;
	size_t		 i;

	for (i = 0; i < UTIL_NPARAMS; i++) {
		if (strcmp(util_params[i].key, key) == 0)
			break;
	}
	if (i == UTIL_NPARAMS) {
		client_error("unknown parameter '%s' (one of temperature, "
		    "top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, "
		    "max_tokens, stop)", key);
		return -1;
	}
	if ((np = realloc(p->v, (p->n + 1) * sizeof *p->v)) == NULL) {
		client_error("out of memory");
		return -1;
	}
	p->v = np;
	v = &p->v[p->n];
	memset(v, 0, sizeof *v);
	snprintf(v->key, sizeof v->key, "%s", key);
	v->type = util_params[i].type;
	if (*value == '\0' || strcmp(value, "default") == 0) {
		v->clear = true;
		p->n++;
		return 0;
	}
	errno = 0;
	switch (v->type) {
	case PARAM_DOUBLE:
		v->d = strtod(value, &end);
		break;
	case PARAM_INT:
		v->i = strtoll(value, &end, 10);
		break;
	case PARAM_UINT:
		if (*value == '-') {
			end = (char *)value;
			break;
		}
		v->u = strtoull(value, &end, 10);
		break;
	default:
		if ((v->s = util_unescape(value)) == NULL) {
			client_error("out of memory");
			return -1;
		}
		p->n++;
		return 0;
	}
	if (errno != 0 || end == value || *end != '\0') {
		client_error("invalid value for %s: '%s'", key, value);
		return -1;
	}
	p->n++;
	return 0;
}

int
params_add_kv(struct params *p, const char *kv)
{
	char		 key[64];
	const char	*eq = strchr(kv, '=');

	if (eq == NULL || (size_t)(eq - kv) >= sizeof key) {
		client_error("expected KEY=VALUE, not '%s'", kv);
		return -1;
	}
	memcpy(key, kv, (size_t)(eq - kv));
	key[eq - kv] = '\0';
	return params_add(p, key, eq + 1);
}

void
params_free(struct params *p)
{
	size_t	i;

	for (i = 0; i < p->n; i++)
		free(p->v[i].s);
	free(p->v);
	p->v = NULL;
	p->n = 0;
}

void
params_pack(const struct params *p, msgpack_packer *pk)
{
	size_t	i, j, nkeys = 0, nstop, first;
	bool	seen;

	/* Several "stop" entries make one array; a later key wins. */
	for (i = 0; i < p->n; i++) {
		seen = false;
		for (j = i + 1; j < p->n; j++)
			seen |= strcmp(p->v[j].key, p->v[i].key) == 0;
		if (!seen)
			nkeys++;
	}
	msgpack_pack_map(pk, nkeys);
	for (i = 0; i < p->n; i++) {
		seen = false;
		for (j = i + 1; j < p->n; j++)
			seen |= strcmp(p->v[j].key, p->v[i].key) == 0;
		if (seen)
			continue;
		proto_pack_cstr(pk, p->v[i].key);
		if (p->v[i].clear) {
			msgpack_pack_nil(pk);
			continue;
		}
		switch (p->v[i].type) {
		case PARAM_DOUBLE:
			msgpack_pack_double(pk, p->v[i].d);
			break;
		case PARAM_INT:
			msgpack_pack_int64(pk, p->v[i].i);
			break;
		case PARAM_UINT:
			msgpack_pack_uint64(pk, p->v[i].u);
			break;
		default:
			/* Every stop string since the last "stop=" clear. */
			first = 0;
			nstop = 0;
			for (j = 0; j <= i; j++) {
				if (strcmp(p->v[j].key, "stop") != 0)
					continue;
				if (p->v[j].clear) {
					first = j + 1;
					nstop = 0;
				} else
					nstop++;
			}
			msgpack_pack_array(pk, nstop);
			for (j = first; j <= i; j++) {
				if (strcmp(p->v[j].key, "stop") == 0)
					proto_pack_cstr(pk, p->v[j].s);
			}
			break;
		}
	}
}

char *
read_all(FILE *fp, size_t max, size_t *len)
{
	char	*buf = NULL, *p;
	size_t	 cap = 0, n = 0, got;

	for (;;) {
		if (n + 4096 + 1 > cap) {
			cap = cap == 0 ? 8192 : cap * 2;
			if ((p = realloc(buf, cap)) == NULL) {
				free(buf);
				errno = ENOMEM;
				return NULL;
			}
			buf = p;
		}
		got = fread(buf + n, 1, cap - n - 1, fp);
		n += got;
		if (n > max) {
			free(buf);
			errno = EFBIG;
			return NULL;
		}
		if (got == 0) {
			if (ferror(fp) && errno == EINTR &&
			    !conn_interrupted()) {
				clearerr(fp);
				continue;
			}
			break;
		}
	}
	if (ferror(fp)) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

const char *
fmt_time(int64_t t, char *buf, size_t cap)
{
	struct tm	tm;
	time_t		tt = (time_t)t;

	if (t <= 0 || localtime_r(&tt, &tm) == NULL) {
		snprintf(buf, cap, "-");
		return buf;
	}
	strftime(buf, cap, "%Y-%m-%d %H:%M", &tm);
	return buf;
}

const char *
fmt_bytes(uint64_t n, char *buf, size_t cap)
{
	static const char	*units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double			 v = (double)n;
	int			 u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%" PRIu64 " B", n);
	else
		snprintf(buf, cap, "%.1f %s", v, units[u]);
	return buf;
}

const char *
c_dim(void)
{
	return client.color ? "\033[2m" : "";
}

const char *
c_bold(void)
{
	return client.color ? "\033[1m" : "";
}

const char *
c_off(void)
{
	return client.color ? "\033[0m" : "";
}

void
put_escaped(FILE *fp, const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++) {
		unsigned char	ch = (unsigned char)s[i];

		if (ch == '\n')
			fputs("\\n", fp);
		else if (ch == '\t')
			fputs("\\t", fp);
		else if (ch == '\\')
			fputs("\\\\", fp);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(fp, "\\x%02x", ch);
		else
			fputc(ch, fp);
	}
}

void
put_text(FILE *fp, const char *s, size_t len)
{
	const unsigned char	*u = (const unsigned char *)s;
	size_t			 i, from = 0;
	bool			 c1;

	if (!client.tty_out) {
		fwrite(s, 1, len, fp);
		return;
	}
	for (i = 0; i < len; i++) {
		c1 = u[i] == 0xc2 && i + 1 < len && u[i + 1] >= 0x80 &&
		    u[i + 1] <= 0x9f;
		if (!c1 && ((u[i] >= 0x20 && u[i] != 0x7f) || u[i] == '\n' ||
		    u[i] == '\t'))
			continue;
		fwrite(s + from, 1, i - from, fp);
		fputs("\xef\xbf\xbd", fp);
		i += c1;
		from = i + 1;
	}
	fwrite(s + from, 1, len - from, fp);
}

int
write_file_atomic(const char *path, const char *data, size_t len)
{
	char	tmp[PATH_MAX];
	ssize_t	n;
	int	fd, e;

	if (snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path) >=
	    (int)sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = mkstemp(tmp)) == -1)
		return -1;
	while (len > 0) {
		n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		data += n;
		len -= (size_t)n;
	}
	if (fchmod(fd, 0644 & ~umask(umask(0))) != 0 || fsync(fd) != 0)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		fd = -1;
		goto fail;
	}
	return 0;

fail:
	e = errno;
	if (fd != -1)
		close(fd);
	unlink(tmp);
	errno = e;
	return -1;
}
