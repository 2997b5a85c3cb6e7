/*
 * json.c: JSON for the client: msgpack objects written as JSON (--json
 * output and exported sessions), and JSON text parsed into msgpack (for
 * import).
 *
 * DESIGN
 *  1. Output is always valid JSON: strings that are not valid UTF-8 have
 *     the bad bytes replaced by U+FFFD, control characters are escaped,
 *     non-finite floats become null, bin becomes a hex string and map keys
 *     that are not strings are written as strings.
 *  2. The parser builds a small tree first, because msgpack needs each
 *     container's length before its elements, then packs it.  Nesting is
 *     capped (JSON_MAX_DEPTH) so recursion stays shallow.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define JSON_MAX_DEPTH	32

static void
json_indent(FILE *fp, bool pretty, int level)
{
	if (!pretty)
		return;
	fputc('\n', fp);
	while (level-- > 0)
		fputs("  ", fp);
}

static void
json_string(FILE *fp, const char *s, size_t len)
{
	const unsigned char	*u;
	char			*fixed = NULL;
	size_t			 i;

	if (!proto_utf8_valid(s, len) &&
	    (fixed = malloc(3 * len + 1)) != NULL) {
		len = proto_utf8_repair(s, len, fixed, 3 * len);
		s = fixed;
	}
	u = (const unsigned char *)s;
	fputc('"', fp);
	for (i = 0; i < len; i++) {
		switch (u[i]) {
		case '"':
			fputs("\\\"", fp);
			break;
		case '\\':
			fputs("\\\\", fp);
			break;
		case '\n':
			fputs("\\n", fp);
			break;
		case '\r':
			fputs("\\r", fp);
			break;
		case '\t':
			fputs("\\t", fp);
			break;
		default:
			if (u[i] < 0x20 || u[i] == 0x7f)
				fprintf(fp, "\\u%04x", u[i]);
			else
				fputc(u[i], fp);
			break;
		}
	}
	fputc('"', fp);
	free(fixed);
}

static void
json_value(FILE *fp, const msgpack_object *o, bool pretty, int level)
{
	uint32_t	i;
	char		num[64];

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		fputs("null", fp);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", fp);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		fprintf(fp, "%" PRIu64, o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		fprintf(fp, "%" PRId64, o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64)) {
			fputs("null", fp);
			break;
		}
		snprintf(num, sizeof num, "%.*g",
		    o->type == MSGPACK_OBJECT_FLOAT32 ? 9 : 17, o->via.f64);
		/* Prefer the shortest form that reads back the same. */
		for (i = 1; i <= 17; i++) {
			char	t[64];

			snprintf(t, sizeof t, "%.*g", (int)i, o->via.f64);
			if (o->type == MSGPACK_OBJECT_FLOAT32 ?
			    (float)strtod(t, NULL) == (float)o->via.f64 :
			    strtod(t, NULL) == o->via.f64) {
				memcpy(num, t, sizeof t);
				break;
			}
		}
		fputs(num, fp);
		if (strpbrk(num, ".en") == NULL)
			fputs(".0", fp);
		break;
	case MSGPACK_OBJECT_STR:
		json_string(fp, o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_BIN:
		fputc('"', fp);
		for (i = 0; i < o->via.bin.size; i++)
			fprintf(fp, "%02x", (unsigned char)o->via.bin.ptr[i]);
		fputc('"', fp);
		break;
	case MSGPACK_OBJECT_ARRAY:
		fputc('[', fp);
		for (i = 0; i < o->via.array.size; i++) {
			if (i > 0)
				fputc(',', fp);
			json_indent(fp, pretty, level + 1);
			json_value(fp, &o->via.array.ptr[i], pretty, level + 1);
		}
		if (o->via.array.size > 0)
			json_indent(fp, pretty, level);
		fputc(']', fp);
		break;
	case MSGPACK_OBJECT_MAP:
		fputc('{', fp);
		for (i = 0; i < o->via.map.size; i++) {
			const msgpack_object	*k = &o->via.map.ptr[i].key;

			if (i > 0)
				fputc(',', fp);
			json_indent(fp, pretty, level + 1);
			if (k->type == MSGPACK_OBJECT_STR)
				json_string(fp, k->via.str.ptr,
				    k->via.str.size);
			else {
				fputc('"', fp);
				json_value(fp, k, false, 0);
				fputc('"', fp);
			}
			fputs(pretty ? ": " : ":", fp);
			json_value(fp, &o->via.map.ptr[i].val, pretty,
			    level + 1);
		}
		if (o->via.map.size > 0)
			json_indent(fp, pretty, level);
		fputc('}', fp);
		break;
	default:
		fputs("null", fp);
		break;
	}
}

void
json_write(FILE *fp, const msgpack_object *o, bool pretty)
{
	json_value(fp, o, pretty, 0);
}

/* The parser's tree. */
enum {
	JSON_NULL,
	JSON_TRUE,
	JSON_FALSE,
	JSON_INT,
	JSON_UINT,
	JSON_DOUBLE,
	JSON_STR,
	JSON_ARRAY,
	JSON_OBJECT,	/* kids alternate key, value */
};

struct json_node {
	int			 type;
	int64_t			 i;
	uint64_t		 u;
	double			 d;
	char			*s;
	size_t			 len;
	struct json_node	*kids;
	size_t			 n;
};

struct json_parser {
	const char	*p;
	const char	*end;
	const char	*start;
	char		*err;
	size_t		 cap;
};

static int
json_fail(struct json_parser *jp, const char *what)
{
	size_t		 line = 1;
	const char	*q;

	for (q = jp->start; q < jp->p && q < jp->end; q++)
		line += *q == '\n';
	snprintf(jp->err, jp->cap, "JSON: %s at line %zu", what, line);
	return -1;
}

static void
json_ws(struct json_parser *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' ||
	    *jp->p == '\n' || *jp->p == '\r'))
		jp->p++;
}

static void
json_free_node(struct json_node *n)
{
	size_t	i;

	for (i = 0; i < n->n; i++)
		json_free_node(&n->kids[i]);
	free(n->kids);
	free(n->s);
}

static int
json_hex4(struct json_parser *jp, uint32_t *v)
{
	int	i;

	*v = 0;
	if (jp->end - jp->p < 4)
		return json_fail(jp, "short \\u escape");
	for (i = 0; i < 4; i++) {
		char	c = *jp->p++;

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (uint32_t)(c - 'A' + 10);
		else
			return json_fail(jp, "bad \\u escape");
	}
	return 0;
}

static size_t
json_put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* At the opening quote.  Escapes never lengthen the text, so the output
 * fits in the input's length. */
static int
json_parse_string(struct json_parser *jp, struct json_node *n)
{
	const char	*q;
	char		*o;
	uint32_t	 cp, lo;

	jp->p++;
	for (q = jp->p; q < jp->end && *q != '"'; q++) {
		if (*q == '\\')
			q++;
	}
	if (q >= jp->end)
		return json_fail(jp, "unterminated string");
	if ((n->s = malloc((size_t)(q - jp->p) + 1)) == NULL)
		return json_fail(jp, "out of memory");
	n->type = JSON_STR;
	o = n->s;
	while (*jp->p != '"') {
		unsigned char	c = (unsigned char)*jp->p;

		if (c < 0x20)
			return json_fail(jp, "control character in string");
		if (c != '\\') {
			*o++ = (char)c;
			jp->p++;
			continue;
		}
		jp->p++;
		switch (*jp->p++) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			if (json_hex4(jp, &cp) != 0)
				return -1;
			if (cp >= 0xd800 && cp <= 0xdbff &&
			    jp->end - jp->p >= 6 && jp->p[0] == '\\' &&
			    jp->p[1] == 'u') {
				jp->p += 2;
				if (json_hex4(jp, &lo) != 0)
					return -1;
				if (lo >= 0xdc00 && lo <= 0xdfff)
					cp = 0x10000 + ((cp - 0xd800) << 10) +
					    (lo - 0xdc00);
				else {
					o += json_put_utf8(o, 0xfffd);
					cp = lo;
				}
			}
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			o += json_put_utf8(o, cp);
			break;
		default:
			return json_fail(jp, "bad escape");
		}
	}
	jp->p++;
	n->len = (size_t)(o - n->s);
	*o = '\0';
	if (!proto_utf8_valid(n->s, n->len))
		return json_fail(jp, "invalid UTF-8 in string");
	return 0;
}

static int
json_parse_number(struct json_parser *jp, struct json_node *n)
{
	const char	*q = jp->p;
	char		 buf[64], *end;
	bool		 integer = true;

	if (q < jp->end && *q == '-')
		q++;
	if (q >= jp->end || *q < '0' || *q > '9')
		return json_fail(jp, "unexpected character");
	while (q < jp->end && ((*q >= '0' && *q <= '9') || *q == '.' ||
	    *q == 'e' || *q == 'E' || *q == '+' || *q == '-')) {
		if (*q == '.' || *q == 'e' || *q == 'E')
			integer = false;
		q++;
	}
	if ((size_t)(q - jp->p) >= sizeof buf)
		return json_fail(jp, "number too long");
	memcpy(buf, jp->p, (size_t)(q - jp->p));
	buf[q - jp->p] = '\0';
	errno = 0;
	if (integer && buf[0] == '-') {
		n->type = JSON_INT;
		n->i = strtoll(buf, &end, 10);
	} else if (integer) {
		n->type = JSON_UINT;
		n->u = strtoull(buf, &end, 10);
	}
	if (!integer || errno == ERANGE) {
		errno = 0;
		n->type = JSON_DOUBLE;
		n->d = strtod(buf, &end);
	}
	if (*end != '\0' || errno != 0)
		return json_fail(jp, "bad number");
	jp->p = q;
	return 0;
}

static int
json_parse_value(struct json_parser *jp, struct json_node *n, int depth);

static int
json_parse_container(struct json_parser *jp, struct json_node *n, int depth)
{
	struct json_node	*k;
	char			 close = *jp->p == '[' ? ']' : '}';
	size_t			 cap = 0;

	n->type = close == ']' ? JSON_ARRAY : JSON_OBJECT;
	if (depth >= JSON_MAX_DEPTH)
		return json_fail(jp, "nested too deeply");
	jp->p++;
	json_ws(jp);
	if (jp->p < jp->end && *jp->p == close) {
		jp->p++;
		return 0;
	}
	for (;;) {
		if (n->n + 2 > cap) {
			cap = cap == 0 ? 8 : cap * 2;
			if ((k = realloc(n->kids, cap * sizeof *k)) == NULL)
				return json_fail(jp, "out of memory");
			n->kids = k;
		}
		json_ws(jp);
		if (n->type == JSON_OBJECT) {
			k = &n->kids[n->n];
			memset(k, 0, sizeof *k);
			if (jp->p >= jp->end || *jp->p != '"')
				return json_fail(jp, "expected a key");
			n->n++;
			if (json_parse_string(jp, k) != 0)
				return -1;
			json_ws(jp);
			if (jp->p >= jp->end || *jp->p != ':')
				return json_fail(jp, "expected ':'");
			jp->p++;
		}
		k = &n->kids[n->n];
		memset(k, 0, sizeof *k);
		n->n++;
		if (json_parse_value(jp, k, depth + 1) != 0)
			return -1;
		json_ws(jp);
		if (jp->p < jp->end && *jp->p == ',') {
			jp->p++;
			continue;
		}
		if (jp->p < jp->end && *jp->p == close) {
			jp->p++;
			return 0;
		}
		return json_fail(jp, "expected ',' or a closing bracket");
	}
}

static int
json_parse_value(struct json_parser *jp, struct json_node *n, int depth)
{
	static const struct {
		const char	*word;
		int		 type;
	} words[] = {
		{ "null", JSON_NULL }, { "true", JSON_TRUE },
		{ "false", JSON_FALSE },
	};
	size_t	i, wl;

	json_ws(jp);
	if (jp->p >= jp->end)
		return json_fail(jp, "unexpected end");
	switch (*jp->p) {
	case '{':
	case '[':
		return json_parse_container(jp, n, depth);
	case '"':
		return json_parse_string(jp, n);
	}
	for (i = 0; i < sizeof words / sizeof words[0]; i++) {
		wl = strlen(words[i].word);
		if ((size_t)(jp->end - jp->p) >= wl &&
		    memcmp(jp->p, words[i].word, wl) == 0) {
			n->type = words[i].type;
			jp->p += wl;
			return 0;
		}
	}
	return json_parse_number(jp, n);
}

static void
json_pack_node(const struct json_node *n, msgpack_packer *pk)
{
	size_t	i;

	switch (n->type) {
	case JSON_NULL:
		msgpack_pack_nil(pk);
		break;
	case JSON_TRUE:
		msgpack_pack_true(pk);
		break;
	case JSON_FALSE:
		msgpack_pack_false(pk);
		break;
	case JSON_INT:
		msgpack_pack_int64(pk, n->i);
		break;
	case JSON_UINT:
		msgpack_pack_uint64(pk, n->u);
		break;
	case JSON_DOUBLE:
		msgpack_pack_double(pk, n->d);
		break;
	case JSON_STR:
		proto_pack_str(pk, n->s, n->len);
		break;
	case JSON_ARRAY:
		msgpack_pack_array(pk, n->n);
		for (i = 0; i < n->n; i++)
			json_pack_node(&n->kids[i], pk);
		break;
	default:
		msgpack_pack_map(pk, n->n / 2);
		for (i = 0; i < n->n; i++)
			json_pack_node(&n->kids[i], pk);
		break;
	}
}

int
json_pack(const char *text, size_t len, msgpack_packer *pk, char *err,
    size_t cap)
{
	struct json_parser	jp = { text, text + len, text, err, cap };
	struct json_node	root;
	int			r;

	memset(&root, 0, sizeof root);
	r = json_parse_value(&jp, &root, 0);
	if (r == 0) {
		json_ws(&jp);
		if (jp.p != jp.end)
			r = json_fail(&jp, "trailing data");
	}
	if (r == 0)
		json_pack_node(&root, pk);
	json_free_node(&root);
	return r;
}
