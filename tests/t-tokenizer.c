/*
 * t-tokenizer.c: the SentencePiece BPE tokenizer.
 *
 * Checks it against the 46 vectors llama.cpp ships with its LLaMA vocabulary
 * (which equal SentencePiece's own encode()), then what users rely on:
 * encode/decode round trips, arbitrary bytes never crash and never decode
 * to invalid UTF-8, the streaming decoder agrees with whole decoding and
 * never emits half a character, special tokens only come from text when
 * asked for, a megabyte tokenizes well under a second, and vocabularies
 * written with the GGUF writer load (or are refused cleanly when broken).
 */

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "tokenizer.h"
#include "tap.h"

#define SP "\xe2\x96\x81"	/* U+2581 */
#define BYTE(b) (3 + (b))	/* byte token ids in both vocabularies */

/* Unoptimized (--enable-debug) and sanitizer builds get looser time
 * limits: the limits are about the algorithm, not the compiler flags. */
#if defined(DEBUG) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 5.0
#else
#define SLOW_BUILD 1.0
#endif

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 32);
}

/* An independent strict UTF-8 check: decode code points, check ranges. */
static int
utf8_ok(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t	 i = 0, k, len;
	uint32_t cp, min;

	while (i < n) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			len = 2; cp = s[i] & 0x1f; min = 0x80;
		} else if ((s[i] & 0xf0) == 0xe0) {
			len = 3; cp = s[i] & 0x0f; min = 0x800;
		} else if ((s[i] & 0xf8) == 0xf0) {
			len = 4; cp = s[i] & 0x07; min = 0x10000;
		} else
			return 0;
		if (i + len > n)
			return 0;
		for (k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

static double
now(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE	*fp = fopen(path, "rb");
	char	*buf = NULL;
	long	 n;

	if (fp == NULL)
		return NULL;
	if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 &&
	    fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
	    fread(buf, 1, (size_t)n, fp) == (size_t)n) {
		buf[n] = '\0';
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	return buf;
}

static int
load_path(const char *path, struct tokenizer **t, char *err, size_t errlen)
{
	struct gguf_file *f;
	int	 rc;

	*t = NULL;
	if ((rc = gguf_open(path, 0, &f, err, errlen)) < 0)
		return rc;
	rc = tokenizer_load(f, t, err, errlen);
	gguf_close(f);	/* the tokenizer must not need the file any more */
	return rc;
}

/* Encode into a malloc'd array; *n gets the count (negative on error). */
static int32_t *
encode(const struct tokenizer *t, const char *s, size_t len, int flags,
    int64_t *n)
{
	int32_t	*ids;
	int64_t	 cap = (int64_t)len + 8;

	ids = malloc((size_t)cap * sizeof *ids);
	*n = tokenizer_encode(t, s, len, flags, ids, cap);
	if (*n > cap) {
		tap_diag("encode needed %lld ids for %zu bytes", (long long)*n,
		    len);
		*n = -ERANGE;
	}
	return ids;
}

static int
ids_eq(const int32_t *a, int64_t na, const int32_t *b, int64_t nb)
{
	return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void
ids_str(char *buf, size_t cap, const int32_t *ids, int64_t n)
{
	size_t	 o = 0;
	int64_t	 i;

	buf[0] = '\0';
	for (i = 0; i < n && o + 12 < cap; i++)
		o += (size_t)snprintf(buf + o, cap - o, " %d", ids[i]);
}

/* Every vector of ggml-vocab-llama-spm.gguf.inp/.out. */
static void
test_vectors(const struct tokenizer *t, const char *vocab)
{
	char	 path[4096], got[8192], *inp, *outp, *p, *q, *line, *end;
	size_t	 ni, no, seplen;
	const char *sep = "\n__ggml_vocab_test__\n";
	int32_t	*ids, want[4096];
	int64_t	 n, nw;
	int	 i = 0;

	snprintf(path, sizeof path, "%s.inp", vocab);
	inp = slurp(path, &ni);
	snprintf(path, sizeof path, "%s.out", vocab);
	outp = slurp(path, &no);
	if (inp == NULL || outp == NULL) {
		tap_ok(0, "read the .inp and .out vectors");
		free(inp);
		free(outp);
		return;
	}
	seplen = strlen(sep);
	line = outp;
	for (p = inp; (q = strstr(p, sep)) != NULL; p = q + seplen, i++) {
		if ((end = strchr(line, '\n')) == NULL)
			break;
		*end = '\0';
		nw = 0;
		for (char *s = line, *e; *s != '\0'; s = e) {
			long v = strtol(s, &e, 10);

			if (e == s)
				break;
			if (nw < 4096)
				want[nw++] = (int32_t)v;
		}
		ids = encode(t, p, (size_t)(q - p), 0, &n);
		tap_ok(n >= 0 && ids_eq(ids, n, want, nw),
		    "vector %d (%zu bytes) encodes to its %lld ids", i,
		    (size_t)(q - p), (long long)nw);
		if (!(n >= 0 && ids_eq(ids, n, want, nw))) {
			ids_str(got, sizeof got, ids, n);
			tap_diag("got: %s", got);
			tap_diag("want:%s", line);
		}
		free(ids);
		line = end + 1;
	}
	tap_ok(i == 46, "all 46 vectors read (%d)", i);
	free(inp);
	free(outp);
}

/* Properties of the real LLaMA vocabulary and its special tokens. */
static void
test_llama_vocab(const struct tokenizer *t)
{
	static const int32_t hello_s[] = { 1, 15043, 2 };
	int32_t	*ids, buf[4] = { -7, -7, -7, -7 };
	int64_t	 n;
	char	*s;
	int	 found = 0;

	tap_ok(tokenizer_n_vocab(t) == 32000 && tokenizer_bos(t) == 1 &&
	    tokenizer_eos(t) == 2 && tokenizer_unk(t) == 0 &&
	    tokenizer_add_bos(t) == 1 && tokenizer_add_eos(t) == 0,
	    "LLaMA vocabulary: 32000 tokens, BOS 1, EOS 2, UNK 0, add BOS only");
	tap_ok(tokenizer_find(t, SP "Hello") == 15043 &&
	    strcmp(tokenizer_piece(t, 15043), SP "Hello") == 0 &&
	    tokenizer_find(t, "no such piece") == -1 &&
	    tokenizer_piece(t, 32000) == NULL && tokenizer_piece(t, -1) == NULL,
	    "tokenizer_find and tokenizer_piece agree, refuse unknowns");
	tap_ok(tokenizer_type(t, 0) == TOKEN_TYPE_UNKNOWN &&
	    tokenizer_type(t, 1) == TOKEN_TYPE_CONTROL &&
	    tokenizer_type(t, BYTE(0x0a)) == TOKEN_TYPE_BYTE &&
	    tokenizer_type(t, 15043) == TOKEN_TYPE_NORMAL,
	    "token types are loaded");

	ids = encode(t, "<s>", 3, 0, &n);
	for (int64_t i = 0; i < n; i++)
		found |= ids[i] == 1;
	s = tokenizer_decode(t, ids, n, DECODE_STRIP_LEADING);
	tap_ok(n > 1 && !found && s && strcmp(s, "<s>") == 0,
	    "plain text \"<s>\" is not the BOS token (%lld ids) and decodes "
	    "back", (long long)n);
	free(s);
	free(ids);

	ids = encode(t, "<s>", 3, TOKENIZE_SPECIAL, &n);
	tap_ok(n == 1 && ids[0] == 1, "with TOKENIZE_SPECIAL \"<s>\" is BOS");
	free(ids);
	ids = encode(t, "<s>Hello</s>", 12, TOKENIZE_SPECIAL, &n);
	tap_ok(ids_eq(ids, n, hello_s, 3),
	    "\"<s>Hello</s>\" with TOKENIZE_SPECIAL: 1 15043 2 (text after a "
	    "control token gets the space prefix, as in llama.cpp)");
	s = tokenizer_decode(t, ids, n, DECODE_STRIP_LEADING);
	tap_ok(s && strcmp(s, "Hello") == 0,
	    "control tokens decode to nothing by default (\"%s\")", s);
	free(s);
	s = tokenizer_decode(t, ids, n, DECODE_STRIP_LEADING | DECODE_SPECIAL);
	tap_ok(s && strcmp(s, "<s> Hello</s>") == 0,
	    "and to their pieces with DECODE_SPECIAL (\"%s\")", s);
	free(s);
	free(ids);

	ids = encode(t, "Hello", 5, TOKENIZE_ADD_BOS, &n);
	tap_ok(n == 2 && ids[0] == 1 && ids[1] == 15043,
	    "TOKENIZE_ADD_BOS prepends BOS");
	free(ids);
	ids = encode(t, "Hello", 5, TOKENIZE_NO_PREFIX, &n);
	tap_ok(n == 1 && ids[0] == tokenizer_find(t, "Hello") && ids[0] >= 0,
	    "TOKENIZE_NO_PREFIX gives \"Hello\" without the leading U+2581");
	free(ids);

	tap_ok(tokenizer_encode(t, "", 0, 0, NULL, 0) == 0 &&
	    tokenizer_encode(t, "", 0, TOKENIZE_ADD_BOS, buf, 4) == 1 &&
	    buf[0] == 1, "empty text: no ids, or just BOS");
	n = tokenizer_encode(t, "Hello world", 11, 0, buf, 1);
	tap_ok(n == 2 && buf[0] == 15043 && buf[1] == -7,
	    "a short buffer gets what fits and the count needed");
	tap_ok(tokenizer_encode(t, NULL, 5, 0, buf, 4) == -EINVAL &&
	    tokenizer_encode(t, "x", 1, 0, NULL, 4) == -EINVAL,
	    "bad arguments are refused");
}

/* A random string of valid UTF-8 built from awkward pieces. */
static size_t
random_text(char *buf, size_t cap)
{
	static const char *const units[] = {
		"a", "b", "the", "Hello", "world", "tokenizer", "x", "Q",
		" ", "  ", "   ", "\n", "\n\n", "\t", " \t ", "\r\n",
		"0", "42", "3.14", ",", ".", "!", "?", "'", "\"", "<", ">",
		"<s", "s>", "[INST]", "\xc3\xa9", "\xd0\xb6", "\xe4\xb8\xad",
		"\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9f\x9a\x80",
		"\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "\xc2\xa0",
		"\xe2\x80\x8d", "\xef\xbb\xbf", "\xf4\x8f\xbf\xbf", "\x01",
		"\x7f",
	};
	size_t	 o = 0, k, n = rng() % 40;

	while (n-- > 0) {
		const char *u = units[rng() % (sizeof units / sizeof *units)];

		k = strlen(u);
		if (o + k >= cap)
			break;
		memcpy(buf + o, u, k);
		o += k;
	}
	buf[o] = '\0';
	return o;
}

static void
test_round_trips(const struct tokenizer *t)
{
	char	 text[512], *s;
	int32_t	*ids;
	int64_t	 n;
	size_t	 len;
	int	 i, bad = 0, bad_bos = 0;

	for (i = 0; i < 600; i++) {
		len = random_text(text, sizeof text);
		ids = encode(t, text, len, 0, &n);
		s = n >= 0 ? tokenizer_decode(t, ids, n, DECODE_STRIP_LEADING) :
		    NULL;
		if (s == NULL || strlen(s) != len || memcmp(s, text, len) != 0) {
			if (bad++ == 0)
				tap_diag("round trip failed for \"%s\" -> \"%s\"",
				    text, s ? s : "(null)");
		}
		free(s);
		free(ids);
		ids = encode(t, text, len, TOKENIZE_ADD_BOS, &n);
		s = n >= 0 ? tokenizer_decode(t, ids, n, DECODE_STRIP_LEADING) :
		    NULL;
		if (s == NULL || strcmp(s, text) != 0)
			bad_bos++;
		free(s);
		free(ids);
	}
	tap_ok(bad == 0, "600 random UTF-8 strings round-trip through encode "
	    "and decode (STRIP_LEADING): %d failures", bad);
	tap_ok(bad_bos == 0, "and again with BOS: %d failures", bad_bos);
}

static void
test_random_bytes(const struct tokenizer *t)
{
	unsigned char text[96];
	char	*s;
	int32_t	*ids;
	int64_t	 n, j;
	size_t	 len, k;
	int	 i, bad_ids = 0, bad_utf8 = 0, bad_trip = 0, valid = 0;

	for (i = 0; i < 1000; i++) {
		len = rng() % sizeof text;
		for (k = 0; k < len; k++)
			text[k] = (unsigned char)rng();
		ids = encode(t, (char *)text, len, i % 2 ? TOKENIZE_SPECIAL : 0,
		    &n);
		if (n < 0) {
			bad_ids++;
			free(ids);
			continue;
		}
		for (j = 0; j < n; j++) {
			if (ids[j] < 0 || ids[j] >= tokenizer_n_vocab(t))
				bad_ids++;
		}
		s = tokenizer_decode(t, ids, n, DECODE_STRIP_LEADING);
		if (s == NULL || !utf8_ok(s, strlen(s)))
			bad_utf8++;
		if (utf8_ok((char *)text, len) && memchr(text, 0, len) == NULL &&
		    i % 2 == 0) {
			valid++;
			if (s == NULL || strlen(s) != len ||
			    memcmp(s, text, len) != 0)
				bad_trip++;
		}
		free(s);
		free(ids);
	}
	tap_ok(bad_ids == 0, "1000 strings of random bytes encode to valid ids");
	tap_ok(bad_utf8 == 0, "and always decode to valid UTF-8 (%d bad)",
	    bad_utf8);
	tap_ok(bad_trip == 0, "the %d that happened to be valid UTF-8 "
	    "round-trip", valid);
}

/*
 * Decode ids one at a time; returns the text (malloc'd) and counts pushes
 * whose output was not valid UTF-8 on its own.
 */
static char *
stream_decode(const struct tokenizer *t, const int32_t *ids, int64_t n,
    int flags, int *bad_chunks)
{
	struct tokenizer_decoder d;
	char	 chunk[4096], *out = malloc(sizeof chunk * ((size_t)n + 1));
	size_t	 o = 0;
	int64_t	 i;
	int	 k;

	tokenizer_decoder_init(&d, t, flags);
	for (i = 0; i <= n; i++) {
		k = i < n ? tokenizer_decoder_push(&d, ids[i], chunk, sizeof chunk) :
		    tokenizer_decoder_flush(&d, chunk, sizeof chunk);
		if (k < 0 || (size_t)k > sizeof chunk) {
			(*bad_chunks)++;
			continue;
		}
		if (!utf8_ok(chunk, (size_t)k))
			(*bad_chunks)++;
		memcpy(out + o, chunk, (size_t)k);
		o += (size_t)k;
	}
	out[o] = '\0';
	return out;
}

static void
test_streaming(const struct tokenizer *t)
{
	static const int32_t rocket[] = { BYTE(0xf0), BYTE(0x9f), BYTE(0x9a),
	    BYTE(0x80) };
	static const int32_t broken[] = { BYTE(0xe2), BYTE(0x41), BYTE(0xff),
	    BYTE(0xf0), BYTE(0x9f) };
	struct tokenizer_decoder d;
	int32_t	 ids[64];
	char	 buf[64], *whole, *streamed;
	int	 i, j, n, bad_chunks = 0, mismatch = 0, k0, k1, k2, k3, flags;
	int	 nv = tokenizer_n_vocab(t);

	tokenizer_decoder_init(&d, t, 0);
	k0 = tokenizer_decoder_push(&d, rocket[0], buf, sizeof buf);
	k1 = tokenizer_decoder_push(&d, rocket[1], buf, sizeof buf);
	k2 = tokenizer_decoder_push(&d, rocket[2], buf, sizeof buf);
	k3 = tokenizer_decoder_push(&d, rocket[3], buf, sizeof buf);
	tap_ok(k0 == 0 && k1 == 0 && k2 == 0 && k3 == 4 &&
	    memcmp(buf, "\xf0\x9f\x9a\x80", 4) == 0,
	    "an emoji in four byte tokens comes out whole with the last one");

	tokenizer_decoder_init(&d, t, 0);
	tokenizer_decoder_push(&d, BYTE(0xe4), buf, sizeof buf);
	k0 = tokenizer_decoder_push(&d, BYTE(0xb8), buf, 0);
	k1 = tokenizer_decoder_push(&d, BYTE(0xad), buf, 2);
	k2 = tokenizer_decoder_push(&d, BYTE(0xad), buf, 3);
	tap_ok(k0 == 0 && k1 == 3 && k2 == 3 &&
	    memcmp(buf, "\xe4\xb8\xad", 3) == 0,
	    "a push that does not fit reports the size and changes nothing");

	whole = tokenizer_decode(t, broken, 5, 0);
	tap_ok(whole && strcmp(whole, "\xef\xbf\xbd" "A" "\xef\xbf\xbd"
	    "\xef\xbf\xbd") == 0,
	    "invalid and unfinished byte sequences become U+FFFD");
	free(whole);

	for (i = 0; i < 400; i++) {
		n = 1 + (int)(rng() % 48);
		for (j = 0; j < n; j++) {
			switch (rng() % 4) {
			case 0:		/* a UTF-8 lead or continuation byte */
				ids[j] = BYTE(0x80 + rng() % 0x80);
				break;
			case 1:
				ids[j] = BYTE(rng() % 0x100);
				break;
			default:
				ids[j] = (int32_t)(rng() % (uint32_t)nv);
				break;
			}
		}
		flags = (int)(rng() % 4);
		whole = tokenizer_decode(t, ids, n, flags);
		streamed = stream_decode(t, ids, n, flags, &bad_chunks);
		if (whole == NULL || strcmp(whole, streamed) != 0 ||
		    !utf8_ok(whole, strlen(whole)))
			mismatch++;
		free(whole);
		free(streamed);
	}
	tap_ok(mismatch == 0, "400 random id sequences: one id at a time gives "
	    "the same valid UTF-8 as whole decoding (%d differ)", mismatch);
	tap_ok(bad_chunks == 0, "and no push emitted a partial character (%d)",
	    bad_chunks);
}

/* len bytes of words drawn at random (the last one may be cut). */
static char *
make_text(const char *const *words, size_t n_words, size_t len)
{
	char	*s = malloc(len + 1);
	size_t	 o = 0, k;

	while (o < len) {
		const char *w = words[rng() % n_words];

		k = strlen(w);
		if (k > len - o)
			k = len - o;
		memcpy(s + o, w, k);
		o += k;
	}
	s[len] = '\0';
	return s;
}

/*
 * A megabyte of prose, of spaces and of one letter (the last two are one
 * long merge segment each).  The limit is on the thread's CPU time, so
 * that a busy machine does not fail the test; wall time is reported too.
 */
static void
test_speed(const struct tokenizer *t)
{
	static const char *const prose[] = {
		"The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ",
		"lazy ", "dog", ". ", ", ", "tokenization ", "is ", "fast",
		"\n", "\n\n", "  ", "caf\xc3\xa9 ", "\xe4\xb8\xad\xe6\x96\x87 ",
		"\xf0\x9f\x9a\x80 ", "1234 ", "(parenthesis) ", "don't ",
	};
	static const char *const spaces[] = { " " };
	static const char *const letter[] = { "a" };
	const size_t len = 1 << 20;
	const char *const *sets[] = { prose, spaces, letter };
	const size_t nsets[] = { sizeof prose / sizeof *prose, 1, 1 };
	const char *names[] = { "prose", "spaces", "one letter" };
	char	*text, *s;
	int32_t	*ids;
	int64_t	 n;
	double	 c0, c1, w0, w1, d0, d1;
	int	 i;

	for (i = 0; i < 3; i++) {
		text = make_text(sets[i], nsets[i], len);
		ids = malloc((len + 8) * sizeof *ids);
		w0 = now(CLOCK_MONOTONIC);
		c0 = now(CLOCK_THREAD_CPUTIME_ID);
		n = tokenizer_encode(t, text, len, 0, ids, (int64_t)len + 8);
		c1 = now(CLOCK_THREAD_CPUTIME_ID);
		w1 = now(CLOCK_MONOTONIC);
		d0 = now(CLOCK_THREAD_CPUTIME_ID);
		s = n > 0 ? tokenizer_decode(t, ids, n, DECODE_STRIP_LEADING) :
		    NULL;
		d1 = now(CLOCK_THREAD_CPUTIME_ID);
		tap_diag("1 MiB of %s: %lld tokens, encode %.3f s CPU (%.3f s "
		    "wall), decode %.3f s CPU", names[i], (long long)n, c1 - c0,
		    w1 - w0, d1 - d0);
		tap_ok(n > 0 && c1 - c0 < 1.0 * SLOW_BUILD,
		    "1 MiB of %s tokenizes in under %.0f s (%.3f s)", names[i],
		    1.0 * SLOW_BUILD, c1 - c0);
		tap_ok(s != NULL && strcmp(s, text) == 0,
		    "and decodes back to the same megabyte");
		free(s);
		free(ids);
		free(text);
	}
}

/*
 * Synthetic vocabularies written with the GGUF writer.  Each field of
 * struct vocab can be broken on purpose to check that load refuses it.
 */
struct vocab {
	const char	*model;		/* NULL: key absent */
	int		 n;
	const char	*pieces[300];
	float		 scores[300];
	int32_t		 types[300];
	int		 n_scores;	/* entries written; -1: key absent */
	int		 n_types;
	int		 no_tokens;
	int		 tokens_as_ints;
	int64_t		 bos;		/* -1: key absent */
	int		 no_unk;	/* no unknown_token_id key */
	int		 add_bos;	/* -1: key absent */
};

static char byte_pieces[256][8];

static void
vocab_add(struct vocab *v, const char *piece, float score, int type)
{
	v->pieces[v->n] = piece;
	v->scores[v->n] = score;
	v->types[v->n] = type;
	v->n++;
}

/*
 * 0 <unk>, 1 <s>, 2 </s>, 3..258 bytes, then the pieces the tests use.
 * Without bytes, the normal pieces start at 3.
 */
static void
vocab_init(struct vocab *v, int with_bytes)
{
	int	 b;

	memset(v, 0, sizeof *v);
	v->model = "llama";
	v->bos = 1;
	v->add_bos = 1;
	vocab_add(v, "<unk>", 0, TOKEN_TYPE_UNKNOWN);
	vocab_add(v, "<s>", 0, TOKEN_TYPE_CONTROL);
	vocab_add(v, "</s>", 0, TOKEN_TYPE_CONTROL);
	for (b = 0; with_bytes && b < 256; b++) {
		snprintf(byte_pieces[b], sizeof byte_pieces[b], "<0x%02X>", b);
		vocab_add(v, byte_pieces[b], 0, TOKEN_TYPE_BYTE);
	}
	vocab_add(v, SP, -100, TOKEN_TYPE_NORMAL);		/* +0 */
	vocab_add(v, "a", -100, TOKEN_TYPE_NORMAL);		/* +1 */
	vocab_add(v, "b", -100, TOKEN_TYPE_NORMAL);		/* +2 */
	vocab_add(v, "c", -100, TOKEN_TYPE_NORMAL);		/* +3 */
	vocab_add(v, "ab", -5, TOKEN_TYPE_NORMAL);		/* +4 */
	vocab_add(v, "bc", -3, TOKEN_TYPE_NORMAL);		/* +5 */
	vocab_add(v, "x", -100, TOKEN_TYPE_NORMAL);		/* +6 */
	vocab_add(v, "y", -100, TOKEN_TYPE_NORMAL);		/* +7 */
	vocab_add(v, "xy", -2, TOKEN_TYPE_NORMAL);		/* +8 */
	vocab_add(v, "yx", -2, TOKEN_TYPE_NORMAL);		/* +9 */
	vocab_add(v, "d", -100, TOKEN_TYPE_NORMAL);		/* +10 */
	vocab_add(v, "e", -100, TOKEN_TYPE_NORMAL);		/* +11 */
	vocab_add(v, SP "d", -4, TOKEN_TYPE_NORMAL);		/* +12 */
	vocab_add(v, SP "de", -1, TOKEN_TYPE_UNUSED);		/* +13 */
	vocab_add(v, SP "x", -4, TOKEN_TYPE_NORMAL);		/* +14 */
	vocab_add(v, SP "y", -4, TOKEN_TYPE_NORMAL);		/* +15 */
	vocab_add(v, "<ud>", 0, TOKEN_TYPE_USER_DEFINED);	/* +16 */
	vocab_add(v, "[INST]", 0, TOKEN_TYPE_CONTROL);		/* +17 */
	vocab_add(v, "pq", 0, TOKEN_TYPE_USER_DEFINED);		/* +18 */
	vocab_add(v, "qrs", 0, TOKEN_TYPE_USER_DEFINED);	/* +19 */
	v->n_scores = v->n_types = v->n;
}

static char tmpdir[64];

static int
vocab_write(const struct vocab *v, const char *name, char *path, size_t cap)
{
	struct gguf_writer *w;
	char	 err[256];
	int32_t	 lens[300];
	int	 rc = -ENOMEM, i;

	snprintf(path, cap, "%s/%s.gguf", tmpdir, name);
	if ((w = gguf_writer_create()) == NULL)
		return rc;
	rc = gguf_writer_set_str(w, "general.architecture", "llama");
	if (rc == 0 && v->model != NULL)
		rc = gguf_writer_set_str(w, "tokenizer.ggml.model", v->model);
	if (rc == 0 && !v->no_tokens && !v->tokens_as_ints)
		rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
		    v->pieces, (uint64_t)v->n);
	if (rc == 0 && v->tokens_as_ints) {
		for (i = 0; i < v->n; i++)
			lens[i] = (int32_t)strlen(v->pieces[i]);
		rc = gguf_writer_set_arr_i32(w, "tokenizer.ggml.tokens", lens,
		    (uint64_t)v->n);
	}
	if (rc == 0 && v->n_scores >= 0)
		rc = gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores",
		    v->scores, (uint64_t)v->n_scores);
	if (rc == 0 && v->n_types >= 0)
		rc = gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type",
		    v->types, (uint64_t)v->n_types);
	if (rc == 0 && v->bos >= 0)
		rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
		    (uint32_t)v->bos);
	if (rc == 0)
		rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
	if (rc == 0 && !v->no_unk)
		rc = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id",
		    0);
	if (rc == 0 && v->add_bos >= 0)
		rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token",
		    v->add_bos);
	if (rc == 0)
		rc = gguf_writer_write(w, path, err, sizeof err);
	if (rc < 0)
		tap_diag("writing %s: %d %s", path, rc, err);
	gguf_writer_free(w);
	return rc;
}

static int
expect(const struct tokenizer *t, const char *text, int flags,
    const int32_t *want, int64_t nw)
{
	int32_t	*ids;
	int64_t	 n;
	char	 got[512];
	int	 ok;

	ids = encode(t, text, strlen(text), flags, &n);
	ok = n >= 0 && ids_eq(ids, n, want, nw);
	if (!ok) {
		ids_str(got, sizeof got, ids, n);
		tap_diag("\"%s\" gave%s", text, got);
	}
	free(ids);
	return ok;
}

static void
test_synthetic(void)
{
	static struct vocab v;
	struct tokenizer *t;
	char	 path[128], err[256];
	char	*s;
	int	 rc;
	const int N = 259;	/* the first normal piece */

	vocab_init(&v, 1);
	if (vocab_write(&v, "small", path, sizeof path) < 0) {
		tap_ok(0, "write a synthetic vocabulary");
		return;
	}
	rc = load_path(path, &t, err, sizeof err);
	tap_ok(rc == 0, "a synthetic %d-token vocabulary loads (%s)", v.n,
	    rc ? err : "ok");
	if (rc != 0)
		return;
	tap_ok(tokenizer_n_vocab(t) == v.n && tokenizer_unk(t) == 0 &&
	    tokenizer_find(t, "qrs") == N + 19, "its pieces are all there");

	tap_ok(expect(t, "abc", TOKENIZE_NO_PREFIX,
	    (int32_t[]){ N + 1, N + 5 }, 2),
	    "the pair with the higher score merges first: abc = a + bc");
	tap_ok(expect(t, "xyx", TOKENIZE_NO_PREFIX,
	    (int32_t[]){ N + 8, N + 6 }, 2),
	    "equal scores: the leftmost pair merges: xyx = xy + x");
	tap_ok(expect(t, "de", 0, (int32_t[]){ N + 12, N + 11 }, 2),
	    "a merge into an unused piece is split back: " SP "de = " SP
	    "d + e");
	tap_ok(expect(t, "\xc3\xa9\xff", TOKENIZE_NO_PREFIX,
	    (int32_t[]){ BYTE(0xc3), BYTE(0xa9), BYTE(0xff) }, 3),
	    "characters outside the vocabulary and invalid bytes fall back to "
	    "byte tokens");
	tap_ok(expect(t, "x<ud>y", 0, (int32_t[]){ N + 14, N + 16, N + 7 }, 3),
	    "a user-defined piece is matched in plain text, with no prefix "
	    "after it (SentencePiece)");
	tap_ok(expect(t, "<ud>x", 0, (int32_t[]){ N, N + 16, N + 6 }, 3),
	    "the dummy prefix goes before a leading user-defined piece");
	tap_ok(expect(t, "x<ud>y", TOKENIZE_SPECIAL,
	    (int32_t[]){ N + 14, N + 16, N + 15 }, 3),
	    "with TOKENIZE_SPECIAL text after a special piece gets the prefix "
	    "(llama.cpp)");
	tap_ok(expect(t, "[INST]x", TOKENIZE_SPECIAL,
	    (int32_t[]){ N + 17, N + 14 }, 2) &&
	    expect(t, "[INST]x", TOKENIZE_SPECIAL | TOKENIZE_NO_PREFIX,
	    (int32_t[]){ N + 17, N + 14 }, 2),
	    "a control piece in text is its id with TOKENIZE_SPECIAL");
	tap_ok(expect(t, "pqrs", TOKENIZE_NO_PREFIX,
	    (int32_t[]){ BYTE('p'), N + 19 }, 2),
	    "special pieces are claimed longest first, as llama.cpp does");
	s = tokenizer_decode(t, (int32_t[]){ N + 14, N + 16, N + 7 }, 3,
	    DECODE_STRIP_LEADING);
	tap_ok(s && strcmp(s, "x<ud>y") == 0,
	    "user-defined pieces decode verbatim (\"%s\")", s);
	free(s);
	tokenizer_free(t);

	/* No byte tokens: the unknown token stands in. */
	vocab_init(&v, 0);
	vocab_write(&v, "nobytes", path, sizeof path);
	rc = load_path(path, &t, err, sizeof err);
	tap_ok(rc == 0 && expect(t, "a\xc3\xa9", TOKENIZE_NO_PREFIX,
	    (int32_t[]){ 4, 0 }, 2),
	    "without byte tokens an unknown character is the unknown token");
	tokenizer_free(t);

	/* Scores and types are optional (0 and normal), as in llama.cpp. */
	vocab_init(&v, 1);
	v.n_scores = v.n_types = -1;
	vocab_write(&v, "notypes", path, sizeof path);
	rc = load_path(path, &t, err, sizeof err);
	tap_ok(rc == 0 && tokenizer_type(t, 1) == TOKEN_TYPE_NORMAL,
	    "a vocabulary without scores and types loads (%s)",
	    rc ? err : "ok");
	tokenizer_free(t);
}

/* Each broken vocabulary must be refused with a message, not crash. */
static void
test_bad_metadata(void)
{
	static struct vocab v;
	struct tokenizer *t;
	char	 name[16], path[128], err[256];
	int	 rc, i;
	const char *names[] = {
		"scores shorter than tokens", "token types longer than tokens",
		"no tokens", "tokens that are not strings", "model gpt2",
		"no model", "BOS id out of range", "token type 9",
		"byte token <0xZZ>", "add_bos without a BOS id",
		"neither bytes nor unknown", "piece not UTF-8", "NaN score",
	};

	for (i = 0; i < (int)(sizeof names / sizeof *names); i++) {
		vocab_init(&v, 1);
		switch (i) {
		case 0: v.n_scores = v.n - 1; break;
		case 1: v.types[v.n] = 1; v.n_types = v.n + 1; break;
		case 2: v.no_tokens = 1; break;
		case 3: v.tokens_as_ints = 1; break;
		case 4: v.model = "gpt2"; break;
		case 5: v.model = NULL; break;
		case 6: v.bos = v.n; break;
		case 7: v.types[5] = 9; break;
		case 8: v.pieces[3 + 0x41] = "<0xZZ>"; break;
		case 9: v.bos = -1; break;
		case 10:
			vocab_init(&v, 0);
			v.types[0] = TOKEN_TYPE_CONTROL;
			v.no_unk = 1;
			break;
		case 11: v.pieces[v.n - 1] = "bad\xff"; break;
		case 12: v.scores[7] = NAN; break;
		}
		snprintf(name, sizeof name, "bad%d", i);
		if (vocab_write(&v, name, path, sizeof path) < 0) {
			tap_ok(0, "write vocabulary with %s", names[i]);
			continue;
		}
		err[0] = '\0';
		rc = load_path(path, &t, err, sizeof err);
		tap_ok(rc < 0 && t == NULL && err[0] != '\0',
		    "refused: %s (%d: %s)", names[i], rc, err);
		if (i == 4)
			tap_ok(rc == -ENOTSUP, "a non-llama tokenizer is "
			    "-ENOTSUP");
		tokenizer_free(t);
	}
}

/* Remove the vocabularies written under tmpdir, then tmpdir. */
static void
cleanup(void)
{
	struct dirent *de;
	DIR	*d;
	char	 path[sizeof tmpdir + sizeof de->d_name + 1];

	if ((d = opendir(tmpdir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", tmpdir, de->d_name);
		unlink(path);
	}
	closedir(d);
	if (rmdir(tmpdir) != 0)
		tap_diag("could not remove %s", tmpdir);
}

int
main(void)
{
	struct tokenizer *t;
	const char *vocab, *dense;
	char	 err[256], *path;
	int	 rc;

	tap_timeout(120);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/t-tokenizer.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		tap_skip_all("mkdtemp failed");

	test_synthetic();
	test_bad_metadata();

	vocab = tap_fixture("vocab/ggml-vocab-llama-spm.gguf");
	if (vocab == NULL) {
		tap_skip("LLaMA vocabulary fixture absent: no vectors, round "
		    "trips or timing");
	} else {
		path = strdup(vocab);
		rc = load_path(path, &t, err, sizeof err);
		tap_ok(rc == 0, "the vocabulary-only GGUF loads (%s)",
		    rc ? err : "ok");
		if (rc == 0) {
			test_vectors(t, path);
			test_llama_vocab(t);
			test_round_trips(t);
			test_random_bytes(t);
			test_streaming(t);
			test_speed(t);
			tokenizer_free(t);
		}
		free(path);
	}

	dense = tap_fixture("dense/dense-f32.gguf");
	if (dense == NULL)
		tap_skip("dense model fixture absent");
	else {
		rc = load_path(dense, &t, err, sizeof err);
		tap_ok(rc == 0 && tokenizer_n_vocab(t) == 512,
		    "the tokenizer of a model file with tensors loads (%s)",
		    rc ? err : "ok");
		tokenizer_free(t);
	}
	cleanup();
	return tap_done();
}
