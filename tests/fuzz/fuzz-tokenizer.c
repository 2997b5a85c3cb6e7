/*
 * fuzz-tokenizer.c: libFuzzer target for the tokenizer (lib/tokenizer.c)
 * on arbitrary bytes: tokenizer_encode on any text, and the streaming
 * decoder on any ids, which is what a client's "tokenize", "detokenize"
 * and chat text reach.
 *
 * Built and run by `make fuzz-smoke` (mk/fuzz.am); seeds in
 * tests/corpus/tokenizer/.  With MISTRAL_FUZZ_SEEDS=DIR in the environment
 * the program writes its seeds to DIR and exits instead.
 *
 * Vocabularies: the synthetic one mkmodel writes, and the LLaMA/Mistral
 * SentencePiece vocabulary of the shared fixtures
 * ($MISTRAL_FIXTURES/vocab/ggml-vocab-llama-spm.gguf) when it is present;
 * without it the synthetic one stands in for both.
 *
 * Input: one control byte, then the text (or the ids).
 *	bit 0	TOKENIZE_ADD_BOS
 *	bit 1	TOKENIZE_SPECIAL
 *	bit 2	TOKENIZE_NO_PREFIX
 *	bit 3	use the fixture vocabulary
 *	bit 4	DECODE_SPECIAL
 *	bit 5	decode mode: the rest is little-endian int32 ids
 *
 * Checked beyond the sanitizers (tokenizer.h's promises):
 *   1. Every id is in [0, n_vocab); a short output buffer gives the same
 *      count and the same leading ids as a large one.
 *   2. A push or flush that needs more than cap writes nothing and asks
 *      for the same size again; invalid ids give -EINVAL.
 *   3. The decoder's output is valid UTF-8, whatever the ids, and equals
 *      what tokenizer_decode() gives.
 *   4. Round trip: valid UTF-8 text without U+2581, encoded without
 *      special-token parsing, decodes back to itself.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "mkmodel.h"
#include "tokenizer.h"

#define TOKFUZZ_SHORT	3	/* ids asked for on the first encode */

static struct tokenizer	*tokfuzz_vocab[2];	/* synthetic, fixture */

static void
tokfuzz_die(const char *what)
{
	fprintf(stderr, "fuzz-tokenizer: %s\n", what);
	exit(1);
}

static struct tokenizer *
tokfuzz_load(const char *path)
{
	struct gguf_file	*f;
	struct tokenizer	*t;
	char			 err[512];

	if (gguf_open(path, 0, &f, err, sizeof err) != 0 ||
	    tokenizer_load(f, &t, err, sizeof err) != 0)
		tokfuzz_die(err);
	gguf_close(f);
	return t;
}

static void
tokfuzz_setup(void)
{
	struct mkmodel_params	 p;
	const char		*tmp = getenv("TMPDIR");
	const char		*fix = getenv("MISTRAL_FIXTURES");
	char			 dir[512], path[1024], err[512];

	mkmodel_defaults(&p);
	p.n_layers = 1;
	snprintf(dir, sizeof dir, "%s/fuzz-tokenizer.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		tokfuzz_die("mkdtemp failed");
	snprintf(path, sizeof path, "%s/vocab.gguf", dir);
	if (mkmodel_write(&p, path, err, sizeof err) != 0)
		tokfuzz_die(err);
	tokfuzz_vocab[0] = tokfuzz_load(path);
	unlink(path);
	rmdir(dir);

	tokfuzz_vocab[1] = tokfuzz_vocab[0];
	if (fix == NULL || *fix == '\0')
		fix = "../shared/fixtures";
	snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf", fix);
	if (access(path, R_OK) == 0)
		tokfuzz_vocab[1] = tokfuzz_load(path);
	else
		fprintf(stderr, "fuzz-tokenizer: %s not found, using the "
		    "synthetic vocabulary only\n", path);
}

/* Strict UTF-8 (no overlong forms, surrogates or values past U+10FFFF). */
static int
tokfuzz_utf8_valid(const unsigned char *s, size_t n)
{
	size_t	 i = 0, len, k;
	uint32_t cp;

	while (i < n) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if (s[i] >= 0xc2 && s[i] <= 0xdf) {
			len = 2;
			cp = s[i] & 0x1f;
		} else if (s[i] >= 0xe0 && s[i] <= 0xef) {
			len = 3;
			cp = s[i] & 0x0f;
		} else if (s[i] >= 0xf0 && s[i] <= 0xf4) {
			len = 4;
			cp = s[i] & 0x07;
		} else
			return 0;
		if (n - i < len)
			return 0;
		for (k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return 0;
		i += len;
	}
	return 1;
}

/* Output of a decoder run, grown as needed. */
struct tokfuzz_out {
	char	*buf;
	size_t	 len, cap;
};

static void
tokfuzz_reserve(struct tokfuzz_out *o, size_t n)
{
	char *p;

	if (o->cap - o->len >= n)
		return;
	o->cap = 2 * (o->len + n) + 16;
	if ((p = realloc(o->buf, o->cap)) == NULL)
		tokfuzz_die("out of memory");
	o->buf = p;
}

/*
 * One push of id (or, with flush set, the flush), asked first with no
 * room, then with one byte less than it needs, then with enough: promise
 * 2.  The output is appended to o.
 */
static void
tokfuzz_step(struct tokenizer_decoder *d, int flush, int32_t id,
    struct tokfuzz_out *o)
{
	int	 need, got;
	size_t	 cap;

	tokfuzz_reserve(o, 64);
	need = flush ? tokenizer_decoder_flush(d, o->buf + o->len, 0) :
	    tokenizer_decoder_push(d, id, o->buf + o->len, 0);
	if (!flush && (id < 0 || id >= tokenizer_n_vocab(d->tok))) {
		if (need != -EINVAL)
			abort();
		return;
	}
	if (need < 0)
		abort();
	if (need == 0)
		return;
	tokfuzz_reserve(o, (size_t)need + 1);
	cap = (size_t)need - 1;
	memset(o->buf + o->len, 0xa5, (size_t)need);
	got = flush ? tokenizer_decoder_flush(d, o->buf + o->len, cap) :
	    tokenizer_decoder_push(d, id, o->buf + o->len, cap);
	if (got != need)
		abort();
	for (size_t i = 0; i < (size_t)need; i++)
		if ((unsigned char)o->buf[o->len + i] != 0xa5)
			abort();	/* wrote into a buffer too small */
	got = flush ? tokenizer_decoder_flush(d, o->buf + o->len, need) :
	    tokenizer_decoder_push(d, id, o->buf + o->len, need);
	if (got != need)
		abort();
	o->len += (size_t)need;
}

/* Decode ids with the streaming decoder and check promises 2 and 3. */
static void
tokfuzz_decode(const struct tokenizer *t, const int32_t *ids, int64_t n,
    int flags, struct tokfuzz_out *o)
{
	struct tokenizer_decoder	 d;
	char				*s;
	int64_t				 i;

	tokenizer_decoder_init(&d, t, flags);
	for (i = 0; i < n; i++)
		tokfuzz_step(&d, 0, ids[i], o);
	tokfuzz_step(&d, 1, 0, o);
	if (!tokfuzz_utf8_valid((unsigned char *)o->buf, o->len))
		abort();
	if ((s = tokenizer_decode(t, ids, n, flags)) == NULL)
		return;
	if (memcmp(s, o->buf, o->len) != 0 || s[o->len] != '\0')
		abort();
	free(s);
}

static void
tokfuzz_encode(const struct tokenizer *t, const char *text, size_t len,
    int ctrl)
{
	struct tokfuzz_out	 o = { NULL, 0, 0 };
	int32_t			 few[TOKFUZZ_SHORT], *ids;
	int64_t			 n, n2, i;
	int			 eflags = ctrl & 7, dflags;

	n = tokenizer_encode(t, text, len, eflags, few, TOKFUZZ_SHORT);
	if (n < 0)
		return;		/* -ENOMEM or a text over the size limit */
	if ((ids = malloc((size_t)(n + 1) * sizeof *ids)) == NULL)
		return;
	n2 = tokenizer_encode(t, text, len, eflags, ids, n);
	if (n2 != n || memcmp(few, ids, (size_t)(n < TOKFUZZ_SHORT ? n :
	    TOKFUZZ_SHORT) * sizeof *ids) != 0)
		abort();	/* promise 1: the buffer changed the result */
	for (i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= tokenizer_n_vocab(t))
			abort();	/* promise 1 */

	dflags = ctrl & 16 ? DECODE_SPECIAL : 0;
	if (!(eflags & (TOKENIZE_SPECIAL | TOKENIZE_NO_PREFIX)))
		dflags |= DECODE_STRIP_LEADING;
	tokfuzz_decode(t, ids, n, dflags, &o);

	/* Promise 4. */
	if (!(eflags & TOKENIZE_SPECIAL) && !(dflags & DECODE_SPECIAL) &&
	    tokfuzz_utf8_valid((const unsigned char *)text, len) &&
	    memmem(text, len, "\xe2\x96\x81", 3) == NULL &&
	    (o.len != len || memcmp(o.buf, text, len) != 0)) {
		fprintf(stderr, "fuzz-tokenizer: \"%.*s\" came back as "
		    "\"%.*s\"\n", (int)len, text, (int)o.len, o.buf);
		abort();
	}
	free(o.buf);
	free(ids);
}

/* Seeds: texts of every kind, and a few id sequences. */
static void
tokfuzz_write_seeds(const char *dir)
{
#define TOKFUZZ_TEXT(s)	{ s, sizeof(s) - 1 }
	static const struct {
		const char	*s;
		size_t		 len;
	} texts[] = {
		TOKFUZZ_TEXT("Hello world"),
		TOKFUZZ_TEXT(" Hello world"),
		TOKFUZZ_TEXT("  leading spaces and trailing  "),
		TOKFUZZ_TEXT("The quick brown fox jumps over the lazy dog.\n"
		    "Line two\tand a tab."),
		TOKFUZZ_TEXT("<s>[INST] What is 2+2? [/INST] 4</s>"),
		TOKFUZZ_TEXT("<unk><s></s> <0x41>"),
		TOKFUZZ_TEXT("caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac 100"),
		TOKFUZZ_TEXT("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae"
		    "\xe6\x96\x87"),
		TOKFUZZ_TEXT("\xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd emoji"),
		TOKFUZZ_TEXT("\xe2\x96\x81 already escaped \xe2\x96\x81\xe2\x96\x81"),
		TOKFUZZ_TEXT("bad \xff\xfe bytes \xc3 cut \xe2\x82 off \xf0\x9f\x98"),
		TOKFUZZ_TEXT("overlong \xc0\xaf surrogate \xed\xa0\x80 big "
		    "\xf4\x90\x80\x80"),
		TOKFUZZ_TEXT("nul\0inside"),
		TOKFUZZ_TEXT("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
		TOKFUZZ_TEXT("          "),
		TOKFUZZ_TEXT("1234567890 3.14159 -42 0x1f"),
		TOKFUZZ_TEXT(""),
	};
#undef TOKFUZZ_TEXT
	static const int32_t id_seqs[][8] = {
		{ 1, 300, 301, 302, 2, 0, 259, 400 },
		{ 3 + 0xe2, 3 + 0x82, 3 + 0xac, 3 + 0xc3, 3 + 0xa9, 3 + 0xff,
		    3 + 0xf0, 3 + 0x9f },
		{ -1, 0x7fffffff, 31999, 32000, 512, 1, 2, 29871 },
	};
	char	 path[1024];
	FILE	*f;
	size_t	 i;
	uint8_t	 ctrl;

	for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		ctrl = (uint8_t)(i % 8 | (i & 1) << 3 | (i & 2) << 3);
		snprintf(path, sizeof path, "%s/text-%02zu", dir, i);
		if ((f = fopen(path, "wb")) == NULL ||
		    fwrite(&ctrl, 1, 1, f) != 1 ||
		    fwrite(texts[i].s, 1, texts[i].len, f) != texts[i].len ||
		    fclose(f) != 0)
			tokfuzz_die(path);
	}
	for (i = 0; i < sizeof id_seqs / sizeof id_seqs[0]; i++) {
		ctrl = (uint8_t)(32 | (i & 1) << 3 | (i & 1) << 4);
		snprintf(path, sizeof path, "%s/ids-%02zu", dir, i);
		if ((f = fopen(path, "wb")) == NULL ||
		    fwrite(&ctrl, 1, 1, f) != 1 ||
		    fwrite(id_seqs[i], sizeof id_seqs[i], 1, f) != 1 ||
		    fclose(f) != 0)
			tokfuzz_die(path);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("MISTRAL_FUZZ_SEEDS");

	if (seeds != NULL && *seeds != '\0') {
		tokfuzz_write_seeds(seeds);
		exit(0);
	}
	tokfuzz_setup();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct tokenizer	*t;
	struct tokfuzz_out	 o = { NULL, 0, 0 };
	int32_t			*ids;
	size_t			 n, i;
	int			 ctrl;

	if (size < 1)
		return 0;
	ctrl = data[0];
	t = tokfuzz_vocab[(ctrl >> 3) & 1];
	if (!(ctrl & 32)) {
		tokfuzz_encode(t, (const char *)data + 1, size - 1, ctrl);
		return 0;
	}
	n = (size - 1) / 4;
	if ((ids = malloc((n + 1) * sizeof *ids)) == NULL)
		return 0;
	for (i = 0; i < n; i++)
		ids[i] = (int32_t)((uint32_t)data[1 + 4 * i] |
		    (uint32_t)data[2 + 4 * i] << 8 |
		    (uint32_t)data[3 + 4 * i] << 16 |
		    (uint32_t)data[4 + 4 * i] << 24);
	tokfuzz_decode(t, ids, (int64_t)n, ctrl & 16 ? DECODE_SPECIAL : 0, &o);
	free(o.buf);
	free(ids);
	return 0;
}
