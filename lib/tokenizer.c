/*
 * tokenizer.c: the SentencePiece BPE tokenizer of Llama and Mistral GGUFs.
 *
 * The vocabulary comes from the tokenizer.ggml.* metadata of a GGUF file
 * (model "llama"): pieces, scores and token types, the special ids and the
 * add_bos/add_eos/add_space_prefix flags.  Everything is copied and checked
 * at load, so the file may be closed afterwards and nothing read later can
 * be out of range.  A loaded tokenizer is never written again: any number
 * of threads may encode and decode with it at once (each call keeps its
 * scratch space to itself, each decoder its own state).
 *
 * DESIGN
 *
 * Encoding (tokenizer_encode) follows SentencePiece's BPE model, which is
 * also what llama.cpp's SPM tokenizer does:
 *
 *   1. Partition.  Special pieces written in the text become their ids and
 *      cut it into raw fragments (tokenizer_partition).  User-defined pieces
 *      are always matched, control and unknown pieces only with
 *      TOKENIZE_SPECIAL.  The order is llama.cpp's: pieces are tried longest
 *      first (then lowest id), each claiming its leftmost non-overlapping
 *      occurrences inside the still unclaimed text.
 *   2. Escape.  Every ' ' of a raw fragment becomes U+2581 and, where the
 *      leading-space convention applies, one U+2581 is put in front.  In
 *      plain text that is only the start of the text (SentencePiece's dummy
 *      prefix, even before a leading user-defined piece); with
 *      TOKENIZE_SPECIAL it is also the start of every fragment that follows
 *      a special token, as llama.cpp does.  TOKENIZE_NO_PREFIX drops only
 *      the prefix at the start of the text.
 *   3. Merge (tokenizer_bpe).  The fragment is split into UTF-8 characters
 *      (each byte of an invalid sequence is a symbol of its own), kept in a
 *      doubly linked list.  Every adjacent pair whose concatenation is a
 *      mergeable piece (normal, user-defined, unused or undefined; never
 *      control, unknown or byte) goes into a max-heap keyed by the piece's
 *      score, ties to the leftmost pair.  The best pair is merged and the
 *      two new neighbour pairs are pushed; heap entries made stale by an
 *      earlier merge are recognised because a symbol only ever grows, so
 *      the two lengths no longer add up to the entry's length.  Each step
 *      is O(log n).  Two things keep the constant small: the list is cut
 *      between any two characters that sit side by side in no piece (no
 *      merge can ever join them, so each segment, typically a word, is
 *      merged alone with a small heap and the result is the same), and
 *      within a segment the queue is split so that long runs cost O(1) per
 *      merge (tokenizer_merge_segment).  About 0.1 s of CPU per megabyte,
 *      of prose or of one character repeated.
 *   4. Emit.  Each final symbol is its piece's id.  A symbol that formed an
 *      unused piece is split back into the two symbols it was made of, as
 *      SentencePiece does (the merge records kept for that are written only
 *      when the vocabulary has unused pieces).  A symbol that is no piece at
 *      all (always a single character) falls back to its bytes' <0xNN>
 *      tokens, or to the unknown token if a byte token is missing.
 *
 * Invariants:
 *   1. Every id handed out is in [0, n_vocab).  Load refuses a vocabulary
 *      that has neither all 256 byte tokens nor an unknown token, so step 4
 *      always has something to emit.
 *   2. Every piece is valid UTF-8 without NUL bytes and at most
 *      TOKENIZER_MAX_PIECE bytes long, so tokenizer_piece() returns a C
 *      string and a decoder push is bounded.
 *   3. When two tokens share a piece, lookups return the lowest id (among
 *      the allowed types); the hash table is filled in id order for that.
 *
 * Decoding maps each id to its text, precomputed at load: U+2581 becomes
 * ' ' in normal pieces, a byte token is its byte, user-defined pieces are
 * copied as they are (they are matched in raw text), control and unknown
 * pieces appear only with DECODE_SPECIAL.  The streaming decoder then lets
 * out only complete, valid UTF-8: a valid but unfinished tail waits in
 * d->pending for the next id, and each maximal invalid subsequence becomes
 * one U+FFFD (the Unicode "maximal subpart" practice), so whatever the ids,
 * the output is valid UTF-8.
 */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

#define TOKENIZER_MAX_VOCAB	(1 << 24)
#define TOKENIZER_MAX_PIECE	65536
/* The escaped text (3 bytes per space, plus a prefix) must fit an int32. */
#define TOKENIZER_MAX_TEXT	((INT32_MAX - 3) / 3)

#define TOKENIZER_N_FIFO	4

#define TOKENIZER_SPACE		"\xe2\x96\x81"	/* U+2581 */
#define TOKENIZER_SPACE_LEN	3
#define TOKENIZER_FFFD		"\xef\xbf\xbd"

#define TOKENIZER_BIT(type)	(1u << (type))
#define TOKENIZER_MERGEABLE	(TOKENIZER_BIT(TOKEN_TYPE_UNDEFINED) | \
				 TOKENIZER_BIT(TOKEN_TYPE_NORMAL) | \
				 TOKENIZER_BIT(TOKEN_TYPE_USER_DEFINED) | \
				 TOKENIZER_BIT(TOKEN_TYPE_UNUSED))
#define TOKENIZER_SPECIAL	(TOKENIZER_BIT(TOKEN_TYPE_CONTROL) | \
				 TOKENIZER_BIT(TOKEN_TYPE_UNKNOWN) | \
				 TOKENIZER_BIT(TOKEN_TYPE_USER_DEFINED))
#define TOKENIZER_ANY		0xffu

struct tokenizer_slot {
	uint32_t	 hash;
	int32_t		 id;		/* -1 for an empty slot */
};

struct tokenizer {
	int32_t		 n_vocab;
	char		*pieces;	/* every piece, each NUL-terminated */
	uint32_t	*piece_off;	/* (n_vocab) offset in pieces */
	uint32_t	*piece_len;	/* (n_vocab) bytes, without the NUL */
	char		*texts;		/* decoded text of every token */
	uint32_t	*text_off;	/* (n_vocab) offset in texts */
	uint32_t	*text_len;	/* (n_vocab) bytes */
	float		*scores;	/* (n_vocab) */
	uint8_t		*types;		/* (n_vocab) enum token_type */

	struct tokenizer_slot *table;	/* (table_mask + 1) pieces by hash */
	uint32_t	 table_mask;
	uint32_t	 max_piece_len;
	uint64_t	*joins;		/* (joins_mask + 1) character pairs
					   found inside mergeable pieces, as
					   tokenizer_join_key(), 0 if empty */
	uint32_t	 joins_mask;

	int32_t		 byte_id[256];	/* the <0xNN> token, or -1 */
	int		 has_all_bytes;
	int		 has_unused;
	int		 has_user_defined;

	/*
	 * Lengths of the special pieces (control, unknown, user-defined) by
	 * first byte: special_lens[special_first[b] .. special_first[b + 1])
	 * holds the distinct lengths, ascending, of those starting with b.
	 */
	uint32_t	 special_first[257];
	uint32_t	*special_lens;

	int32_t		 bos;
	int32_t		 eos;
	int32_t		 unk;
	int		 add_bos;
	int		 add_eos;
	int		 add_space_prefix;
};

/* A symbol of the fragment being merged; see tokenizer_bpe(). */
struct tokenizer_sym {
	int32_t		 prev;		/* index, or -1 */
	int32_t		 next;		/* index, or -1 */
	uint32_t	 start;		/* in the escaped text */
	uint32_t	 len;		/* bytes; 0 once merged into prev */
	int32_t		 id;		/* mergeable piece, or -1 */
	int32_t		 merge;		/* record that made it, or -1 */
};

/* A candidate merge of syms[left] and the symbol after it into piece id. */
struct tokenizer_pair {
	float		 score;
	int32_t		 left;
	int32_t		 id;
	uint32_t	 len;		/* bytes of the merged piece */
};

/* Pairs in heap order, popped from the front. */
struct tokenizer_fifo {
	struct tokenizer_pair *q;
	size_t		 n;
	size_t		 at;		/* next one to pop */
	size_t		 cap;
};

/* How a symbol was made, to split unused pieces back (step 4). */
struct tokenizer_merge {
	int32_t		 left;		/* merge record of each half, or -1 */
	int32_t		 right;
	uint32_t	 split;		/* where the right half starts */
};

/* A part of a symbol still to be emitted while splitting unused pieces. */
struct tokenizer_part {
	uint32_t	 start;
	uint32_t	 len;
	int32_t		 merge;
};

/* A raw text fragment (id -1) or a special token found in the text. */
struct tokenizer_frag {
	uint32_t	 start;
	uint32_t	 len;
	int32_t		 id;
};

/*
 * Scratch space of one tokenizer_encode() call.  The candidate pairs of a
 * segment are kept in three queues, see tokenizer_merge_segment().
 */
struct tokenizer_work {
	const struct tokenizer *tok;
	char		*text;		/* escaped fragment */
	struct tokenizer_sym *syms;
	struct tokenizer_pair *init;	/* the first pairs, sorted */
	struct tokenizer_pair *sort_tmp; /* for sorting them */
	size_t		 init_n;
	size_t		 init_at;	/* next one to pop */
	struct tokenizer_fifo fifo[TOKENIZER_N_FIFO]; /* later pairs that
					   came in order */
	struct tokenizer_pair *heap;	/* later pairs that did not */
	size_t		 heap_n;
	size_t		 heap_cap;
	struct tokenizer_merge *merges;	/* only if tok->has_unused */
	struct tokenizer_part *parts;	/* only if tok->has_unused */
	int32_t		 n_merges;

	int32_t		*out;
	int64_t		 cap;
	int64_t		 n;		/* ids produced, even past cap */
};

static void
tokenizer_error(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
tokenizer_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * Classify the UTF-8 sequence at s, of which n > 0 bytes are available.
 * Returns the length (1 to 4) of a complete, valid character; 0 if the
 * bytes are invalid, with *bad set to the length of the maximal invalid
 * subpart (at least 1); or -1 if all n bytes are a valid beginning of a
 * character that needs more.
 */
static int
tokenizer_utf8_class(const unsigned char *s, size_t n, int *bad)
{
	unsigned char	 c = s[0], lo = 0x80, hi = 0xbf;
	int		 need, k;

	*bad = 1;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0;	/* overlong */
		else if (c == 0xed)
			hi = 0x9f;	/* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;	/* overlong */
		else if (c == 0xf4)
			hi = 0x8f;	/* beyond U+10FFFF */
	} else
		return 0;
	for (k = 1; k < need; k++) {
		if ((size_t)k >= n)
			return -1;
		if (s[k] < lo || s[k] > hi) {
			*bad = k;
			return 0;
		}
		lo = 0x80;
		hi = 0xbf;
	}
	return need;
}

static int
tokenizer_utf8_valid(const char *s, size_t n)
{
	size_t	 i = 0;
	int	 bad, k;

	while (i < n) {
		k = tokenizer_utf8_class((const unsigned char *)s + i, n - i,
		    &bad);
		if (k <= 0)
			return 0;
		i += (size_t)k;
	}
	return 1;
}

/* A multiplicative hash taking 8 bytes at a time: lookups are hot. */
static uint32_t
tokenizer_hash(const char *s, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	if (n > 0) {
		w = 0;
		memcpy(&w, s, n);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
	}
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ull;
	return (uint32_t)(h >> 32);
}

/*
 * The lowest id whose piece is the n bytes at s and whose type is in
 * mask (a set of TOKENIZER_BIT()s), or -1.
 */
static int32_t
tokenizer_lookup(const struct tokenizer *t, const char *s, size_t n,
    unsigned int mask)
{
	uint32_t h, i;
	int32_t	 id;

	if (n > t->max_piece_len)
		return -1;
	h = tokenizer_hash(s, n);
	i = h & t->table_mask;

	while ((id = t->table[i].id) >= 0) {
		if (t->table[i].hash == h && t->piece_len[id] == n &&
		    (mask & TOKENIZER_BIT(t->types[id])) &&
		    memcmp(t->pieces + t->piece_off[id], s, n) == 0)
			return id;
		i = (i + 1) & t->table_mask;
	}
	return -1;
}

/*
 * The code point of the character of c bytes at s, which
 * tokenizer_utf8_class() found valid; a byte of an invalid sequence
 * (c == 0) maps to 0x110000 + its value, outside Unicode.
 */
static uint32_t
tokenizer_code_point(const unsigned char *s, int c)
{
	switch (c) {
	case 1:
		return s[0];
	case 2:
		return (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
	case 3:
		return (uint32_t)(s[0] & 0x0f) << 12 |
		    (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
	case 4:
		return (uint32_t)(s[0] & 0x07) << 18 |
		    (uint32_t)(s[1] & 0x3f) << 12 |
		    (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
	default:
		return 0x110000u + s[0];
	}
}

/* Two adjacent characters as one key; never 0 since pieces hold no NUL. */
static uint64_t
tokenizer_join_key(uint32_t a, uint32_t b)
{
	return (uint64_t)a << 32 | b;
}

static uint32_t
tokenizer_join_slot(const struct tokenizer *t, uint64_t key)
{
	return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & t->joins_mask;
}

/* Whether characters a and b appear next to each other in some piece. */
static int
tokenizer_joined(const struct tokenizer *t, uint32_t a, uint32_t b)
{
	uint64_t key = tokenizer_join_key(a, b), k;
	uint32_t i = tokenizer_join_slot(t, key);

	while ((k = t->joins[i]) != 0) {
		if (k == key)
			return 1;
		i = (i + 1) & t->joins_mask;
	}
	return 0;
}

/* Parse a byte token's piece "<0xNN>"; returns the byte or -1. */
static int
tokenizer_byte_piece(const char *s, size_t n)
{
	int	 i, v = 0, d;

	if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
		return -1;
	for (i = 3; i < 5; i++) {
		if (s[i] >= '0' && s[i] <= '9')
			d = s[i] - '0';
		else if (s[i] >= 'A' && s[i] <= 'F')
			d = s[i] - 'A' + 10;
		else if (s[i] >= 'a' && s[i] <= 'f')
			d = s[i] - 'a' + 10;
		else
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * Read an optional token id key into *out (left alone when absent).
 * Returns 0, or a negative errno code with a message.
 */
static int
tokenizer_load_id(const struct gguf_file *f, const char *key, int32_t n,
    int32_t *out, char *err, size_t errlen)
{
	uint32_t v;
	int	 rc;

	rc = gguf_get_u32(f, key, &v);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0) {
		tokenizer_error(err, errlen, "%s: not a token id", key);
		return -EINVAL;
	}
	if (v >= (uint32_t)n) {
		tokenizer_error(err, errlen,
		    "%s: id %u is outside the vocabulary of %d tokens", key, v,
		    (int)n);
		return -EINVAL;
	}
	*out = (int32_t)v;
	return 0;
}

/* Read an optional boolean key; *out keeps its default when absent. */
static int
tokenizer_load_flag(const struct gguf_file *f, const char *key, int *out,
    char *err, size_t errlen)
{
	int	 rc, v;

	rc = gguf_get_bool(f, key, &v);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0) {
		tokenizer_error(err, errlen, "%s: not a boolean", key);
		return -EINVAL;
	}
	*out = v != 0;
	return 0;
}

static int
tokenizer_int_type(enum gguf_type type)
{
	switch (type) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_INT16:
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_UINT64:
	case GGUF_TYPE_INT64:
		return 1;
	default:
		return 0;
	}
}

static int
tokenizer_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/*
 * Build the per-first-byte length lists of the special pieces (see struct
 * tokenizer).  Returns 0 or -ENOMEM.
 */
static int
tokenizer_build_specials(struct tokenizer *t)
{
	uint64_t *keys;
	size_t	  n = 0, i, m = 0;
	int32_t	  id;
	unsigned int b;

	for (id = 0; id < t->n_vocab; id++) {
		if ((TOKENIZER_SPECIAL & TOKENIZER_BIT(t->types[id])) &&
		    t->piece_len[id] > 0)
			n++;
	}
	keys = malloc((n ? n : 1) * sizeof *keys);
	t->special_lens = malloc((n ? n : 1) * sizeof *t->special_lens);
	if (keys == NULL || t->special_lens == NULL) {
		free(keys);
		return -ENOMEM;
	}
	n = 0;
	for (id = 0; id < t->n_vocab; id++) {
		if ((TOKENIZER_SPECIAL & TOKENIZER_BIT(t->types[id])) &&
		    t->piece_len[id] > 0) {
			b = (unsigned char)t->pieces[t->piece_off[id]];
			keys[n++] = (uint64_t)b << 32 | t->piece_len[id];
		}
	}
	qsort(keys, n, sizeof *keys, tokenizer_cmp_u64);
	b = 0;
	for (i = 0; i < n; i++) {
		if (i > 0 && keys[i] == keys[i - 1])
			continue;
		while (b <= (unsigned int)(keys[i] >> 32))
			t->special_first[b++] = (uint32_t)m;
		t->special_lens[m++] = (uint32_t)keys[i];
	}
	while (b <= 256)
		t->special_first[b++] = (uint32_t)m;
	free(keys);
	return 0;
}

/*
 * Copy the pieces and their decoded texts, check them, and fill the hash
 * table and the byte map.  Types must be loaded already.
 */
static int
tokenizer_build_pieces(struct tokenizer *t, const struct gguf_kv *kv,
    char *err, size_t errlen)
{
	const struct gguf_str *s;
	uint64_t total = 0, tsize;
	uint32_t off = 0, toff = 0, h, j;
	int32_t	 id;
	size_t	 k;
	int	 b;

	for (id = 0; id < t->n_vocab; id++) {
		s = &kv->strs[id];
		if (s->len > TOKENIZER_MAX_PIECE) {
			tokenizer_error(err, errlen,
			    "tokenizer.ggml.tokens: token %d is %llu bytes long "
			    "(at most %d)", (int)id, (unsigned long long)s->len,
			    TOKENIZER_MAX_PIECE);
			return -EINVAL;
		}
		if (memchr(s->ptr, '\0', s->len) != NULL ||
		    !tokenizer_utf8_valid(s->ptr, s->len)) {
			tokenizer_error(err, errlen,
			    "tokenizer.ggml.tokens: token %d is not valid UTF-8 "
			    "text", (int)id);
			return -EINVAL;
		}
		total += s->len + 1;
	}
	if (total > UINT32_MAX) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.tokens: %llu bytes of pieces is too much",
		    (unsigned long long)total);
		return -EINVAL;
	}
	t->pieces = malloc(total);
	t->texts = malloc(total);
	for (tsize = 1; tsize < 2 * (uint64_t)t->n_vocab; tsize *= 2)
		;
	t->table = malloc(tsize * sizeof *t->table);
	if (t->pieces == NULL || t->texts == NULL || t->table == NULL)
		return -ENOMEM;
	t->table_mask = (uint32_t)(tsize - 1);
	for (j = 0; j <= t->table_mask; j++)
		t->table[j].id = -1;
	for (b = 0; b < 256; b++)
		t->byte_id[b] = -1;

	for (id = 0; id < t->n_vocab; id++) {
		s = &kv->strs[id];
		t->piece_off[id] = off;
		t->piece_len[id] = (uint32_t)s->len;
		if (s->len > t->max_piece_len)
			t->max_piece_len = (uint32_t)s->len;
		memcpy(t->pieces + off, s->ptr, s->len);
		t->pieces[off + s->len] = '\0';

		t->text_off[id] = toff;
		switch (t->types[id]) {
		case TOKEN_TYPE_BYTE:
			b = tokenizer_byte_piece(s->ptr, s->len);
			if (b < 0) {
				tokenizer_error(err, errlen,
				    "tokenizer.ggml.tokens: byte token %d is "
				    "'%s', not <0xNN>", (int)id,
				    t->pieces + off);
				return -EINVAL;
			}
			if (t->byte_id[b] < 0)
				t->byte_id[b] = id;
			t->texts[toff++] = (char)b;
			break;
		case TOKEN_TYPE_UNDEFINED:
		case TOKEN_TYPE_NORMAL:
		case TOKEN_TYPE_UNUSED:
			for (k = 0; k < s->len; k++) {
				if (k + TOKENIZER_SPACE_LEN <= s->len &&
				    memcmp(s->ptr + k, TOKENIZER_SPACE,
				    TOKENIZER_SPACE_LEN) == 0) {
					t->texts[toff++] = ' ';
					k += TOKENIZER_SPACE_LEN - 1;
				} else
					t->texts[toff++] = s->ptr[k];
			}
			break;
		default:	/* control, unknown, user-defined: verbatim */
			memcpy(t->texts + toff, s->ptr, s->len);
			toff += (uint32_t)s->len;
			break;
		}
		t->text_len[id] = toff - t->text_off[id];
		off += (uint32_t)s->len + 1;

		if (s->len > 0) {
			h = tokenizer_hash(s->ptr, s->len);
			for (j = h & t->table_mask; t->table[j].id >= 0;
			    j = (j + 1) & t->table_mask)
				;
			t->table[j] = (struct tokenizer_slot){ h, id };
		}
		if (t->types[id] == TOKEN_TYPE_UNUSED)
			t->has_unused = 1;
		if (t->types[id] == TOKEN_TYPE_USER_DEFINED && s->len > 0)
			t->has_user_defined = 1;
	}
	t->has_all_bytes = 1;
	for (b = 0; b < 256; b++) {
		if (t->byte_id[b] < 0)
			t->has_all_bytes = 0;
	}
	return 0;
}

/* Add key to the join set, which has room for it.  Returns whether new. */
static int
tokenizer_join_add(struct tokenizer *t, uint64_t key)
{
	uint32_t i = tokenizer_join_slot(t, key);

	while (t->joins[i] != 0) {
		if (t->joins[i] == key)
			return 0;
		i = (i + 1) & t->joins_mask;
	}
	t->joins[i] = key;
	return 1;
}

/*
 * Collect every pair of adjacent characters inside a mergeable piece.  A
 * pair of characters in the text that is not among them can never end up
 * inside one symbol, so tokenizer_bpe() merges the text on either side
 * independently, with small heaps.  The set is kept at most half full and
 * no larger, since it is probed at every character boundary of the text.
 * Returns 0 or -ENOMEM.
 */
static int
tokenizer_build_joins(struct tokenizer *t)
{
	const unsigned char *p;
	uint64_t *old;
	uint32_t i, len, prev = 0, cp, n = 0, size, j;
	int32_t	 id;
	int	 c, bad;

	size = 1024;
	if ((t->joins = calloc(size, sizeof *t->joins)) == NULL)
		return -ENOMEM;
	t->joins_mask = size - 1;
	for (id = 0; id < t->n_vocab; id++) {
		if (!(TOKENIZER_MERGEABLE & TOKENIZER_BIT(t->types[id])))
			continue;
		p = (const unsigned char *)t->pieces + t->piece_off[id];
		len = t->piece_len[id];
		for (i = 0; i < len; i += (uint32_t)c, prev = cp) {
			c = tokenizer_utf8_class(p + i, len - i, &bad);
			cp = tokenizer_code_point(p + i, c);
			if (i == 0)
				continue;
			if (2 * (n + 1) > size) {
				old = t->joins;
				if ((t->joins = calloc(2 * (size_t)size,
				    sizeof *t->joins)) == NULL) {
					t->joins = old;
					return -ENOMEM;
				}
				t->joins_mask = 2 * size - 1;
				for (j = 0; j < size; j++) {
					if (old[j] != 0)
						tokenizer_join_add(t, old[j]);
				}
				free(old);
				size *= 2;
			}
			n += (uint32_t)tokenizer_join_add(t,
			    tokenizer_join_key(prev, cp));
		}
	}
	return 0;
}

int
tokenizer_load(const struct gguf_file *f, struct tokenizer **out, char *err,
    size_t errlen)
{
	struct tokenizer *t = NULL;
	const struct gguf_kv *tokens, *scores = NULL, *types = NULL;
	struct gguf_str model;
	uint64_t n;
	int64_t	 v;
	int32_t	 id, pad;
	float	 sc;
	int	 rc;

	if (out != NULL)
		*out = NULL;
	if (f == NULL || out == NULL) {
		tokenizer_error(err, errlen, "tokenizer_load: no file");
		return -EINVAL;
	}

	rc = gguf_get_str(f, "tokenizer.ggml.model", &model);
	if (rc == -ENOENT) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.model: missing (the file has no tokenizer)");
		return -ENOENT;
	}
	if (rc < 0) {
		tokenizer_error(err, errlen, "tokenizer.ggml.model: not a string");
		return -EINVAL;
	}
	if (!gguf_str_eq(model, "llama")) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.model: '%.*s' is not supported (only "
		    "'llama', the SentencePiece BPE vocabulary)",
		    (int)(model.len > 40 ? 40 : model.len), model.ptr);
		return -ENOTSUP;
	}

	rc = gguf_get_arr(f, "tokenizer.ggml.tokens", &tokens);
	if (rc == -ENOENT) {
		tokenizer_error(err, errlen, "tokenizer.ggml.tokens: missing");
		return -ENOENT;
	}
	if (rc < 0 || tokens->arr_type != GGUF_TYPE_STRING ||
	    tokens->strs == NULL) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.tokens: not an array of strings");
		return -EINVAL;
	}
	n = tokens->arr_n;
	if (n == 0 || n > TOKENIZER_MAX_VOCAB) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.tokens: %llu tokens (expected 1 to %d)",
		    (unsigned long long)n, TOKENIZER_MAX_VOCAB);
		return -EINVAL;
	}

	rc = gguf_get_arr(f, "tokenizer.ggml.scores", &scores);
	if (rc == -ENOENT)
		scores = NULL;
	else if (rc < 0 || (scores->arr_type != GGUF_TYPE_FLOAT32 &&
	    scores->arr_type != GGUF_TYPE_FLOAT64)) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.scores: not an array of floats");
		return -EINVAL;
	} else if (scores->arr_n != n) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.scores: %llu entries for %llu tokens",
		    (unsigned long long)scores->arr_n, (unsigned long long)n);
		return -EINVAL;
	}
	rc = gguf_get_arr(f, "tokenizer.ggml.token_type", &types);
	if (rc == -ENOENT)
		types = NULL;
	else if (rc < 0 || !tokenizer_int_type(types->arr_type)) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.token_type: not an array of integers");
		return -EINVAL;
	} else if (types->arr_n != n) {
		tokenizer_error(err, errlen,
		    "tokenizer.ggml.token_type: %llu entries for %llu tokens",
		    (unsigned long long)types->arr_n, (unsigned long long)n);
		return -EINVAL;
	}

	t = calloc(1, sizeof *t);
	if (t == NULL)
		goto nomem;
	t->n_vocab = (int32_t)n;
	t->piece_off = malloc(n * sizeof *t->piece_off);
	t->piece_len = malloc(n * sizeof *t->piece_len);
	t->text_off = malloc(n * sizeof *t->text_off);
	t->text_len = malloc(n * sizeof *t->text_len);
	t->scores = malloc(n * sizeof *t->scores);
	t->types = malloc(n);
	if (t->piece_off == NULL || t->piece_len == NULL ||
	    t->text_off == NULL || t->text_len == NULL || t->scores == NULL ||
	    t->types == NULL)
		goto nomem;

	for (id = 0; id < t->n_vocab; id++) {
		sc = scores != NULL ? gguf_arr_f32(scores, (uint64_t)id) : 0.0f;
		if (isnan(sc)) {
			tokenizer_error(err, errlen,
			    "tokenizer.ggml.scores: token %d has a NaN score",
			    (int)id);
			rc = -EINVAL;
			goto fail;
		}
		/* -0 is 0: pairs are sorted by the score's bits as well. */
		t->scores[id] = sc == 0.0f ? 0.0f : sc;
		v = types != NULL ? gguf_arr_i64(types, (uint64_t)id) :
		    TOKEN_TYPE_NORMAL;
		if (v < TOKEN_TYPE_UNDEFINED || v > TOKEN_TYPE_BYTE) {
			tokenizer_error(err, errlen,
			    "tokenizer.ggml.token_type: token %d has unknown "
			    "type %lld", (int)id, (long long)v);
			rc = -EINVAL;
			goto fail;
		}
		t->types[id] = (uint8_t)v;
	}
	if ((rc = tokenizer_build_pieces(t, tokens, err, errlen)) < 0)
		goto fail;
	if ((rc = tokenizer_build_specials(t)) < 0 ||
	    (rc = tokenizer_build_joins(t)) < 0)
		goto fail;

	/* Missing ids are "none", except that the unknown id defaults to the
	 * first token of the unknown type. */
	t->bos = t->eos = t->unk = -1;
	for (id = 0; id < t->n_vocab && t->unk < 0; id++) {
		if (t->types[id] == TOKEN_TYPE_UNKNOWN)
			t->unk = id;
	}
	if ((rc = tokenizer_load_id(f, "tokenizer.ggml.bos_token_id",
	    t->n_vocab, &t->bos, err, errlen)) < 0 ||
	    (rc = tokenizer_load_id(f, "tokenizer.ggml.eos_token_id",
	    t->n_vocab, &t->eos, err, errlen)) < 0 ||
	    (rc = tokenizer_load_id(f, "tokenizer.ggml.unknown_token_id",
	    t->n_vocab, &t->unk, err, errlen)) < 0 ||
	    (rc = tokenizer_load_id(f, "tokenizer.ggml.padding_token_id",
	    t->n_vocab, &pad, err, errlen)) < 0)
		goto fail;

	/* SentencePiece's defaults: BOS yes, EOS no, dummy prefix yes. */
	t->add_bos = t->bos >= 0;
	t->add_eos = 0;
	t->add_space_prefix = 1;
	if ((rc = tokenizer_load_flag(f, "tokenizer.ggml.add_bos_token",
	    &t->add_bos, err, errlen)) < 0 ||
	    (rc = tokenizer_load_flag(f, "tokenizer.ggml.add_eos_token",
	    &t->add_eos, err, errlen)) < 0 ||
	    (rc = tokenizer_load_flag(f, "tokenizer.ggml.add_space_prefix",
	    &t->add_space_prefix, err, errlen)) < 0)
		goto fail;
	if (t->add_bos && t->bos < 0) {
		tokenizer_error(err, errlen, "tokenizer.ggml.add_bos_token is "
		    "set but there is no tokenizer.ggml.bos_token_id");
		rc = -EINVAL;
		goto fail;
	}
	if (t->add_eos && t->eos < 0) {
		tokenizer_error(err, errlen, "tokenizer.ggml.add_eos_token is "
		    "set but there is no tokenizer.ggml.eos_token_id");
		rc = -EINVAL;
		goto fail;
	}
	if (!t->has_all_bytes && t->unk < 0) {
		tokenizer_error(err, errlen, "tokenizer.ggml.tokens: neither "
		    "all 256 byte tokens nor an unknown token, so some text "
		    "could not be encoded");
		rc = -EINVAL;
		goto fail;
	}
	*out = t;
	return 0;

nomem:
	rc = -ENOMEM;
fail:
	if (rc == -ENOMEM)
		tokenizer_error(err, errlen, "tokenizer_load: out of memory");
	tokenizer_free(t);
	return rc;
}

void
tokenizer_free(struct tokenizer *t)
{
	if (t == NULL)
		return;
	free(t->pieces);
	free(t->piece_off);
	free(t->piece_len);
	free(t->texts);
	free(t->text_off);
	free(t->text_len);
	free(t->scores);
	free(t->types);
	free(t->table);
	free(t->joins);
	free(t->special_lens);
	free(t);
}

int32_t
tokenizer_n_vocab(const struct tokenizer *t)
{
	return t->n_vocab;
}

int32_t
tokenizer_bos(const struct tokenizer *t)
{
	return t->bos;
}

int32_t
tokenizer_eos(const struct tokenizer *t)
{
	return t->eos;
}

int32_t
tokenizer_unk(const struct tokenizer *t)
{
	return t->unk;
}

int
tokenizer_add_bos(const struct tokenizer *t)
{
	return t->add_bos;
}

int
tokenizer_add_eos(const struct tokenizer *t)
{
	return t->add_eos;
}

const char *
tokenizer_piece(const struct tokenizer *t, int32_t id)
{
	if (id < 0 || id >= t->n_vocab)
		return NULL;
	return t->pieces + t->piece_off[id];
}

enum token_type
tokenizer_type(const struct tokenizer *t, int32_t id)
{
	if (id < 0 || id >= t->n_vocab)
		return TOKEN_TYPE_UNDEFINED;
	return (enum token_type)t->types[id];
}

int32_t
tokenizer_find(const struct tokenizer *t, const char *piece)
{
	if (piece == NULL || *piece == '\0')
		return -1;
	return tokenizer_lookup(t, piece, strlen(piece), TOKENIZER_ANY);
}

/* Append an id to the output; counting goes on past the caller's cap. */
static void
tokenizer_emit(struct tokenizer_work *w, int32_t id)
{
	if (w->n < w->cap)
		w->out[w->n] = id;
	w->n++;
}

/* Emit a symbol that is no piece: its bytes, or the unknown token. */
static void
tokenizer_emit_bytes(struct tokenizer_work *w, uint32_t start, uint32_t len)
{
	const struct tokenizer *t = w->tok;
	uint32_t i;

	for (i = 0; i < len; i++) {
		if (t->byte_id[(unsigned char)w->text[start + i]] < 0) {
			tokenizer_emit(w, t->unk);
			return;
		}
	}
	for (i = 0; i < len; i++)
		tokenizer_emit(w, t->byte_id[(unsigned char)w->text[start + i]]);
}

/*
 * Emit the final symbol s, splitting unused pieces back into the halves
 * they were merged from (iteratively, using w->parts as a stack).
 */
static void
tokenizer_emit_sym(struct tokenizer_work *w, const struct tokenizer_sym *s)
{
	const struct tokenizer *t = w->tok;
	const struct tokenizer_merge *m;
	struct tokenizer_part p;
	int32_t	 id, top = 0;

	if (s->id < 0) {
		tokenizer_emit_bytes(w, s->start, s->len);
		return;
	}
	if (s->merge < 0 || t->types[s->id] != TOKEN_TYPE_UNUSED) {
		tokenizer_emit(w, s->id);
		return;
	}
	w->parts[top++] = (struct tokenizer_part){ s->start, s->len, s->merge };
	while (top > 0) {
		p = w->parts[--top];
		id = tokenizer_lookup(t, w->text + p.start, p.len,
		    TOKENIZER_MERGEABLE);
		if (id < 0) {
			tokenizer_emit_bytes(w, p.start, p.len);
			continue;
		}
		if (p.merge < 0 || t->types[id] != TOKEN_TYPE_UNUSED) {
			tokenizer_emit(w, id);
			continue;
		}
		/* Right half below the left one, so the left comes out first. */
		m = &w->merges[p.merge];
		w->parts[top++] = (struct tokenizer_part){ m->split,
		    p.start + p.len - m->split, m->right };
		w->parts[top++] = (struct tokenizer_part){ p.start,
		    m->split - p.start, m->left };
	}
}

/* A key whose unsigned order is the descending order of the scores. */
static uint32_t
tokenizer_score_key(float score)
{
	uint32_t u;

	memcpy(&u, &score, sizeof u);
	u = (u & 0x80000000u) ? ~u : u | 0x80000000u;
	return ~u;
}

/* Heap order: higher score first, then the leftmost pair. */
static int
tokenizer_pair_before(const struct tokenizer_pair *a,
    const struct tokenizer_pair *b)
{
	if (a->score != b->score)
		return a->score > b->score;
	return a->left < b->left;
}

/*
 * Make the pair of syms[left] and the symbol after it into *p; returns
 * whether together they are a mergeable piece.
 */
static int
tokenizer_make_pair(struct tokenizer_work *w, int32_t left,
    struct tokenizer_pair *p)
{
	const struct tokenizer *t = w->tok;
	int32_t	 id, right;
	uint32_t len;

	if (left < 0 || (right = w->syms[left].next) < 0)
		return 0;
	len = w->syms[left].len + w->syms[right].len;
	id = tokenizer_lookup(t, w->text + w->syms[left].start, len,
	    TOKENIZER_MERGEABLE);
	if (id < 0)
		return 0;
	*p = (struct tokenizer_pair){ t->scores[id], left, id, len };
	return 1;
}

/*
 * Sort the n first pairs of a segment, made in left-to-right order, into
 * heap order.  A stable sort by score is enough for that: an LSD radix
 * sort on the score's bits for long runs, insertion for short words.
 */
static void
tokenizer_sort_pairs(struct tokenizer_work *w)
{
	struct tokenizer_pair *a = w->init, *b = w->sort_tmp, *tmp, x;
	size_t	 n = w->init_n, count[256], i, j, sum;
	uint32_t key;
	int	 shift;

	if (n < 64) {
		for (i = 1; i < n; i++) {
			x = a[i];
			for (j = i; j > 0 && tokenizer_pair_before(&x, &a[j - 1]);
			    j--)
				a[j] = a[j - 1];
			a[j] = x;
		}
		return;
	}
	for (shift = 0; shift < 32; shift += 8) {
		memset(count, 0, sizeof count);
		for (i = 0; i < n; i++)
			count[tokenizer_score_key(a[i].score) >> shift & 0xff]++;
		if (count[tokenizer_score_key(a[0].score) >> shift & 0xff] == n)
			continue;	/* one digit for all: nothing to do */
		for (i = 0, sum = 0; i < 256; i++) {
			j = count[i];
			count[i] = sum;
			sum += j;
		}
		for (i = 0; i < n; i++) {
			key = tokenizer_score_key(a[i].score);
			b[count[key >> shift & 0xff]++] = a[i];
		}
		tmp = a;
		a = b;
		b = tmp;
	}
	if (a != w->init)
		memcpy(w->init, a, n * sizeof *a);
}

/*
 * Queue a pair made during merging: at the end of the first FIFO whose
 * pairs all come before it, else in the heap.  Returns 0 or -ENOMEM.
 */
static int
tokenizer_push_pair(struct tokenizer_work *w, const struct tokenizer_pair *p)
{
	struct tokenizer_fifo *f;
	struct tokenizer_pair *q;
	size_t	 i, parent, cap;

	for (f = w->fifo; f < w->fifo + TOKENIZER_N_FIFO; f++) {
		if (f->at == f->n)
			f->at = f->n = 0;
		if (f->n > 0 && tokenizer_pair_before(p, &f->q[f->n - 1]))
			continue;
		if (f->n == f->cap) {
			cap = f->cap ? 2 * f->cap : 64;
			if ((q = realloc(f->q, cap * sizeof *q)) == NULL)
				return -ENOMEM;
			f->q = q;
			f->cap = cap;
		}
		f->q[f->n++] = *p;
		return 0;
	}
	if (w->heap_n == w->heap_cap) {
		cap = w->heap_cap ? 2 * w->heap_cap : 64;
		if ((q = realloc(w->heap, cap * sizeof *q)) == NULL)
			return -ENOMEM;
		w->heap = q;
		w->heap_cap = cap;
	}
	for (i = w->heap_n++; i > 0; i = parent) {
		parent = (i - 1) / 2;
		if (!tokenizer_pair_before(p, &w->heap[parent]))
			break;
		w->heap[i] = w->heap[parent];
	}
	w->heap[i] = *p;
	return 0;
}

static void
tokenizer_heap_pop(struct tokenizer_work *w)
{
	struct tokenizer_pair last;
	size_t	 i = 0, c, n;

	n = --w->heap_n;
	if (n == 0)
		return;
	last = w->heap[n];
	while ((c = 2 * i + 1) < n) {
		if (c + 1 < n && tokenizer_pair_before(&w->heap[c + 1],
		    &w->heap[c]))
			c++;
		if (!tokenizer_pair_before(&w->heap[c], &last))
			break;
		w->heap[i] = w->heap[c];
		i = c;
	}
	w->heap[i] = last;
}

/* Take the best queued pair into *p; returns 0 when all are empty. */
static int
tokenizer_pop_pair(struct tokenizer_work *w, struct tokenizer_pair *p)
{
	const struct tokenizer_pair *best = NULL;
	size_t	*from = NULL;
	int	 i;

	if (w->init_at < w->init_n) {
		best = &w->init[w->init_at];
		from = &w->init_at;
	}
	for (i = 0; i < TOKENIZER_N_FIFO; i++) {
		if (w->fifo[i].at < w->fifo[i].n && (best == NULL ||
		    tokenizer_pair_before(&w->fifo[i].q[w->fifo[i].at], best))) {
			best = &w->fifo[i].q[w->fifo[i].at];
			from = &w->fifo[i].at;
		}
	}
	if (w->heap_n > 0 && (best == NULL ||
	    tokenizer_pair_before(&w->heap[0], best))) {
		*p = w->heap[0];
		tokenizer_heap_pop(w);
		return 1;
	}
	if (best == NULL)
		return 0;
	*p = *best;
	(*from)++;
	return 1;
}

/*
 * Merge the symbols first..(end of its chain) of one segment and emit
 * them.  Returns 0 or -ENOMEM.
 *
 * The candidate pairs wait in several queues whose union is the priority
 * queue of DESIGN step 3: the pairs of the initial symbols, sorted once;
 * pairs made later, each in the first of a few FIFOs it can end in order;
 * the others in a binary heap.  Popping the best of the fronts gives the
 * order one heap would, because no two live pairs share a key (each
 * symbol is the left of at most one).  But a run such as a megabyte of
 * spaces, where one heap of a million pairs would be sifted a million
 * times with a cache miss at each level, costs O(1) per pair: merging
 * goes left to right there, so new pairs come in order.
 */
static int
tokenizer_merge_segment(struct tokenizer_work *w, int32_t first)
{
	const struct tokenizer *t = w->tok;
	struct tokenizer_sym *l, *r;
	struct tokenizer_pair p;
	int32_t	 k;
	int	 rc, i;

	w->init_n = w->init_at = 0;
	for (i = 0; i < TOKENIZER_N_FIFO; i++)
		w->fifo[i].n = w->fifo[i].at = 0;
	w->heap_n = 0;
	for (k = first; w->syms[k].next >= 0; k = w->syms[k].next) {
		if (tokenizer_make_pair(w, k, &w->init[w->init_n]))
			w->init_n++;
	}
	tokenizer_sort_pairs(w);

	while (tokenizer_pop_pair(w, &p)) {
		l = &w->syms[p.left];
		r = l->len > 0 && l->next >= 0 ? &w->syms[l->next] : NULL;
		/* A symbol only grows, so a changed side shows in the sum. */
		if (r == NULL || l->len + r->len != p.len)
			continue;
		if (t->has_unused) {
			w->merges[w->n_merges] = (struct tokenizer_merge){
			    l->merge, r->merge, r->start };
			l->merge = w->n_merges++;
		}
		l->len += r->len;
		l->id = p.id;
		r->len = 0;
		l->next = r->next;
		if (r->next >= 0)
			w->syms[r->next].prev = p.left;

		if (tokenizer_make_pair(w, l->prev, &p) &&
		    (rc = tokenizer_push_pair(w, &p)) < 0)
			return rc;
		if (tokenizer_make_pair(w, (int32_t)(l - w->syms), &p) &&
		    (rc = tokenizer_push_pair(w, &p)) < 0)
			return rc;
	}
	for (k = first; k >= 0; k = w->syms[k].next)
		tokenizer_emit_sym(w, &w->syms[k]);
	return 0;
}

/*
 * Tokenize one raw fragment of n bytes (step 2 to 4 of DESIGN), with the
 * leading U+2581 if prefix is set.  w->text and w->syms must hold 3n + 3
 * bytes and n + 1 symbols (w->merges and w->parts n + 1 entries too when
 * the vocabulary has unused pieces).  The symbols are chained into
 * segments, cut between two characters that no piece holds side by side;
 * no merge can cross such a cut, so each segment is merged on its own.
 * Returns 0 or -ENOMEM.
 */
static int
tokenizer_bpe(struct tokenizer_work *w, const char *raw, size_t n, int prefix)
{
	const struct tokenizer *t = w->tok;
	const unsigned char *u = (const unsigned char *)w->text;
	struct tokenizer_sym *s;
	uint32_t len = 0, i, cp, prev_cp = 0;
	int32_t	 n_syms = 0, k, first;
	size_t	 j;
	int	 c, bad, rc;

	if (prefix) {
		memcpy(w->text, TOKENIZER_SPACE, TOKENIZER_SPACE_LEN);
		len = TOKENIZER_SPACE_LEN;
	}
	for (j = 0; j < n; j++) {
		if (raw[j] == ' ') {
			memcpy(w->text + len, TOKENIZER_SPACE,
			    TOKENIZER_SPACE_LEN);
			len += TOKENIZER_SPACE_LEN;
		} else
			w->text[len++] = raw[j];
	}

	for (i = 0; i < len; i += (uint32_t)c, prev_cp = cp) {
		c = tokenizer_utf8_class(u + i, len - i, &bad);
		cp = tokenizer_code_point(u + i, c > 0 ? c : 0);
		if (c <= 0)
			c = 1;
		s = &w->syms[n_syms];
		s->prev = n_syms - 1;
		s->next = -1;
		if (n_syms > 0) {
			if (tokenizer_joined(t, prev_cp, cp))
				w->syms[n_syms - 1].next = n_syms;
			else
				s->prev = -1;
		}
		s->start = i;
		s->len = (uint32_t)c;
		s->id = tokenizer_lookup(t, w->text + i, (size_t)c,
		    TOKENIZER_MERGEABLE);
		s->merge = -1;
		n_syms++;
	}

	w->n_merges = 0;
	for (first = 0; first < n_syms; first = k + 1) {
		for (k = first; w->syms[k].next >= 0; k++)
			;
		if ((rc = tokenizer_merge_segment(w, first)) < 0)
			return rc;
	}
	return 0;
}

static int
tokenizer_cmp_occ(const void *a, const void *b, void *arg)
{
	const struct tokenizer *t = arg;
	const struct tokenizer_frag *x = a, *y = b;

	if (x->id != y->id) {
		if (t->piece_len[x->id] != t->piece_len[y->id])
			return t->piece_len[x->id] > t->piece_len[y->id] ? -1 : 1;
		return x->id < y->id ? -1 : 1;
	}
	return (x->start > y->start) - (x->start < y->start);
}

static int
tokenizer_cmp_start(const void *a, const void *b)
{
	const struct tokenizer_frag *x = a, *y = b;

	return (x->start > y->start) - (x->start < y->start);
}

/*
 * Step 1 of DESIGN: cut text into raw fragments and the special tokens of
 * the types in mask.  On success *out (to be freed) holds the fragments in
 * text order and their count is returned; or -ENOMEM.
 */
static int64_t
tokenizer_partition(const struct tokenizer *t, const char *text, size_t len,
    unsigned int mask, struct tokenizer_frag **out)
{
	struct tokenizer_frag *occ = NULL, *frags = NULL, *tmp;
	unsigned char *claimed = NULL;
	size_t	 n_occ = 0, cap_occ = 0, n_acc = 0, i, j, pos, n = 0;
	uint32_t k, l, last_end = 0;
	int32_t	 id, cur = -1;
	int64_t	 rc = -ENOMEM;

	*out = NULL;
	for (pos = 0; pos < len; pos++) {
		i = (unsigned char)text[pos];
		for (k = t->special_first[i]; k < t->special_first[i + 1]; k++) {
			l = t->special_lens[k];
			if (l > len - pos)
				break;
			id = tokenizer_lookup(t, text + pos, l, mask);
			if (id < 0)
				continue;
			if (n_occ == cap_occ) {
				cap_occ = cap_occ ? 2 * cap_occ : 16;
				tmp = realloc(occ, cap_occ * sizeof *occ);
				if (tmp == NULL)
					goto out;
				occ = tmp;
			}
			occ[n_occ++] = (struct tokenizer_frag){ (uint32_t)pos,
			    l, id };
		}
	}

	/* Claim occurrences in llama.cpp's order: longest piece first, each
	 * piece's leftmost non-overlapping occurrences in unclaimed text. */
	if (n_occ > 0) {
		qsort_r(occ, n_occ, sizeof *occ, tokenizer_cmp_occ, (void *)t);
		if ((claimed = calloc(len, 1)) == NULL)
			goto out;
		for (i = 0; i < n_occ; i++) {
			if (occ[i].id != cur) {
				cur = occ[i].id;
				last_end = 0;
			}
			if (occ[i].start < last_end)
				continue;
			for (j = 0; j < occ[i].len; j++) {
				if (claimed[occ[i].start + j])
					break;
			}
			if (j < occ[i].len)
				continue;
			memset(claimed + occ[i].start, 1, occ[i].len);
			last_end = occ[i].start + occ[i].len;
			occ[n_acc++] = occ[i];
		}
		qsort(occ, n_acc, sizeof *occ, tokenizer_cmp_start);
	}

	if ((frags = malloc((2 * n_acc + 1) * sizeof *frags)) == NULL)
		goto out;
	pos = 0;
	for (i = 0; i < n_acc; i++) {
		if (occ[i].start > pos)
			frags[n++] = (struct tokenizer_frag){ (uint32_t)pos,
			    (uint32_t)(occ[i].start - pos), -1 };
		frags[n++] = occ[i];
		pos = occ[i].start + occ[i].len;
	}
	if (pos < len)
		frags[n++] = (struct tokenizer_frag){ (uint32_t)pos,
		    (uint32_t)(len - pos), -1 };
	*out = frags;
	rc = (int64_t)n;
out:
	free(occ);
	free(claimed);
	return rc;
}

int64_t
tokenizer_encode(const struct tokenizer *t, const char *text, size_t len,
    int flags, int32_t *out, int64_t cap)
{
	struct tokenizer_work w;
	struct tokenizer_frag *frags = NULL, whole;
	const struct tokenizer_frag *fr;
	unsigned int mask;
	int64_t	 n_frags, i, rc;
	size_t	 max_raw = 0;
	int	 special = (flags & TOKENIZE_SPECIAL) != 0, prefix;

	if (t == NULL || (text == NULL && len > 0) || cap < 0 ||
	    (out == NULL && cap > 0))
		return -EINVAL;
	if (len > TOKENIZER_MAX_TEXT)
		return -E2BIG;
	if ((flags & TOKENIZE_ADD_BOS) && t->bos < 0)
		return -ENOENT;

	memset(&w, 0, sizeof w);
	w.tok = t;
	w.out = out;
	w.cap = cap;
	if (flags & TOKENIZE_ADD_BOS)
		tokenizer_emit(&w, t->bos);
	if (len == 0)
		return w.n;

	mask = special ? TOKENIZER_SPECIAL :
	    TOKENIZER_BIT(TOKEN_TYPE_USER_DEFINED);
	if (special || t->has_user_defined) {
		n_frags = tokenizer_partition(t, text, len, mask, &frags);
		if (n_frags < 0)
			return n_frags;
		fr = frags;
	} else {
		whole = (struct tokenizer_frag){ 0, (uint32_t)len, -1 };
		n_frags = 1;
		fr = &whole;
	}
	for (i = 0; i < n_frags; i++) {
		if (fr[i].id < 0 && fr[i].len > max_raw)
			max_raw = fr[i].len;
	}

	rc = -ENOMEM;
	w.text = malloc(3 * max_raw + TOKENIZER_SPACE_LEN);
	w.syms = malloc((max_raw + 1) * sizeof *w.syms);
	w.init = malloc((max_raw + 1) * sizeof *w.init);
	w.sort_tmp = malloc((max_raw + 1) * sizeof *w.sort_tmp);
	if (w.text == NULL || w.syms == NULL || w.init == NULL ||
	    w.sort_tmp == NULL)
		goto out;
	if (t->has_unused) {
		w.merges = malloc((max_raw + 1) * sizeof *w.merges);
		w.parts = malloc((max_raw + 1) * sizeof *w.parts);
		if (w.merges == NULL || w.parts == NULL)
			goto out;
	}

	prefix = t->add_space_prefix && !(flags & TOKENIZE_NO_PREFIX);
	for (i = 0; i < n_frags; i++, fr++) {
		if (fr->id < 0) {
			if ((rc = tokenizer_bpe(&w, text + fr->start, fr->len,
			    prefix)) < 0)
				goto out;
			prefix = 0;
			continue;
		}
		/* SentencePiece puts its dummy prefix even before a leading
		 * user-defined piece; llama.cpp's special parsing does not,
		 * but starts the text after every special token afresh. */
		if (!special && prefix &&
		    (rc = tokenizer_bpe(&w, "", 0, prefix)) < 0)
			goto out;
		tokenizer_emit(&w, fr->id);
		prefix = special && t->add_space_prefix;
	}
	rc = w.n;
out:
	free(frags);
	free(w.text);
	free(w.syms);
	free(w.init);
	free(w.sort_tmp);
	for (i = 0; i < TOKENIZER_N_FIFO; i++)
		free(w.fifo[i].q);
	free(w.heap);
	free(w.merges);
	free(w.parts);
	return rc;
}

void
tokenizer_decoder_init(struct tokenizer_decoder *d, const struct tokenizer *t,
    int flags)
{
	memset(d, 0, sizeof *d);
	d->tok = t;
	d->flags = flags;
	d->at_start = 1;
}

/*
 * Turn the held-back bytes pend[0..np) followed by p[0..n) into valid
 * UTF-8 at out (if not NULL; see the DESIGN note on decoding) and return
 * its length.  Trailing bytes that begin a character but do not finish it
 * (at most 3) are copied to kept (if not NULL) and their count stored in
 * *n_kept, unless final is set, which turns them into U+FFFD too.
 */
static size_t
tokenizer_sanitize(const unsigned char *pend, int np, const unsigned char *p,
    size_t n, int final, char *out, unsigned char *kept, int *n_kept)
{
	unsigned char c[4];
	size_t	 total = (size_t)np + n, i = 0, o = 0, k, avail;
	int	 len, bad;

	*n_kept = 0;
	while (i < total) {
		avail = total - i < 4 ? total - i : 4;
		for (k = 0; k < avail; k++)
			c[k] = i + k < (size_t)np ? pend[i + k] :
			    p[i + k - (size_t)np];
		len = tokenizer_utf8_class(c, avail, &bad);
		if (len < 0 && !final) {
			/* Fewer than 4 bytes are left: all of them wait. */
			if (kept != NULL)
				memcpy(kept, c, avail);
			*n_kept = (int)avail;
			break;
		}
		if (len <= 0) {
			if (out != NULL)
				memcpy(out + o, TOKENIZER_FFFD, 3);
			o += 3;
			i += len < 0 ? avail : (size_t)bad;
			continue;
		}
		if (out != NULL)
			memcpy(out + o, c, (size_t)len);
		o += (size_t)len;
		i += (size_t)len;
	}
	return o;
}

int
tokenizer_decoder_push(struct tokenizer_decoder *d, int32_t id, char *buf,
    size_t cap)
{
	const struct tokenizer *t = d->tok;
	const unsigned char *p;
	unsigned char kept[4];
	size_t	 n, need;
	int	 n_kept;

	if (t == NULL || id < 0 || id >= t->n_vocab || (buf == NULL && cap > 0))
		return -EINVAL;
	n = t->text_len[id];
	if ((t->types[id] == TOKEN_TYPE_CONTROL ||
	    t->types[id] == TOKEN_TYPE_UNKNOWN) && !(d->flags & DECODE_SPECIAL))
		n = 0;
	if (n == 0)
		return 0;
	p = (const unsigned char *)t->texts + t->text_off[id];
	if (d->at_start && (d->flags & DECODE_STRIP_LEADING) && p[0] == ' ') {
		p++;
		n--;
	}

	need = tokenizer_sanitize(d->pending, d->n_pending, p, n, 0, NULL,
	    NULL, &n_kept);
	if (need > cap)
		return (int)need;
	tokenizer_sanitize(d->pending, d->n_pending, p, n, 0, buf, kept,
	    &n_kept);
	memcpy(d->pending, kept, (size_t)n_kept);
	d->n_pending = n_kept;
	d->at_start = 0;
	return (int)need;
}

int
tokenizer_decoder_flush(struct tokenizer_decoder *d, char *buf, size_t cap)
{
	size_t	 need;
	int	 keep;

	if (buf == NULL && cap > 0)
		return -EINVAL;
	need = tokenizer_sanitize(d->pending, d->n_pending, NULL, 0, 1, NULL,
	    NULL, &keep);
	if (need > cap)
		return (int)need;
	tokenizer_sanitize(d->pending, d->n_pending, NULL, 0, 1, buf, NULL,
	    &keep);
	d->n_pending = 0;
	return (int)need;
}

char *
tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int64_t n,
    int flags)
{
	struct tokenizer_decoder d;
	char	*s, *tmp;
	size_t	 len = 0, cap = 256;
	int64_t	 i;
	int	 k;

	if ((s = malloc(cap)) == NULL)
		return NULL;
	tokenizer_decoder_init(&d, t, flags);
	for (i = 0; i <= n; i++) {
		for (;;) {
			/* Invalid ids decode to nothing. */
			if (i < n && (ids[i] < 0 || ids[i] >= t->n_vocab))
				break;
			k = i < n ? tokenizer_decoder_push(&d, ids[i],
			    s + len, cap - len - 1) :
			    tokenizer_decoder_flush(&d, s + len, cap - len - 1);
			if (k >= 0 && (size_t)k <= cap - len - 1) {
				len += (size_t)k;
				break;
			}
			if (k < 0)
				break;
			cap = 2 * (len + (size_t)k + 1);
			if ((tmp = realloc(s, cap)) == NULL) {
				free(s);
				return NULL;
			}
			s = tmp;
		}
	}
	s[len] = '\0';
	return s;
}
