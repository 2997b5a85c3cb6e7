/*
 * mkmodel.c: the random-model generator.  Describes a llama-architecture
 * model to the GGUF writer (keys, vocabulary, tensor table) and produces
 * each tensor's rows on demand while the file is written.
 *
 * DESIGN
 *
 * 1. Determinism: every row of every tensor draws from its own generator,
 *    seeded from (params seed, hash of the tensor name, row number).  The
 *    bytes therefore depend only on the parameters, not on the order or
 *    chunking in which the writer asks for rows, and two tensors never
 *    share a stream.
 * 2. Memory: tensors are added with gguf_writer_add_tensor_cb(), so the
 *    only buffers are one row of floats here and the writer's chunk; a
 *    TinyLlama-shaped model (1.1B parameters) is written in bounded
 *    memory.  The cost is dominated by the Gaussian draws (one log, one
 *    sqrt and one sincos per pair) and by quantization.
 * 3. Distributions: matrices N(0, 1/cols) so activations keep their scale
 *    through a random network; token_embd N(0, 1); norm weights
 *    1 + N(0, 0.1^2).  The output rows of <unk>, <s> and </s> are scaled
 *    by 0.1 so greedy decoding of a random model does not stop at once.
 * 4. Types follow llama-quantize: norms and the MoE router stay F32; with
 *    the _K_M mix, attn_v and ffn_down of the layers llama-quantize's
 *    use_more_bits() picks (the first and last eighth, every third in
 *    between; for 2 layers just the last) and output.weight are Q6_K, and
 *    8-expert models get Q8_0 attn_k/attn_v.
 */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mkmodel.h"

#define MKMODEL_MAX_LAYERS	1024
#define MKMODEL_MAX_EXPERTS	256
#define MKMODEL_MAX_VOCAB	500000
#define MKMODEL_MAX_DIM		65536
#define MKMODEL_N_SPECIAL	259	/* <unk> <s> </s> and 256 bytes */

/* llama.cpp's token types (tokenizer.ggml.token_type). */
enum mkmodel_token_type {
	MKMODEL_TOKEN_NORMAL = 1,
	MKMODEL_TOKEN_UNKNOWN = 2,
	MKMODEL_TOKEN_CONTROL = 3,
	MKMODEL_TOKEN_BYTE = 6,
};

/* llama_ftype values written as general.file_type. */
enum mkmodel_ftype {
	MKMODEL_FTYPE_ALL_F32 = 0,
	MKMODEL_FTYPE_F16 = 1,
	MKMODEL_FTYPE_Q4_0 = 2,
	MKMODEL_FTYPE_Q8_0 = 7,
	MKMODEL_FTYPE_Q4_K_S = 14,
	MKMODEL_FTYPE_Q4_K_M = 15,
	MKMODEL_FTYPE_Q5_K_S = 16,
	MKMODEL_FTYPE_Q5_K_M = 17,
	MKMODEL_FTYPE_Q6_K = 18,
	MKMODEL_FTYPE_BF16 = 32,
};

struct mkmodel_rng {
	uint64_t	s[4];		/* xoshiro256** state */
};

struct mkmodel_tensor;

/* State shared by all fill callbacks of one mkmodel_write() call. */
struct mkmodel_ctx {
	float			*row;		/* (max cols) scratch */
	struct mkmodel_tensor	*tensors;
	size_t			 n_tensors;
	size_t			 cap_tensors;
};

/* What a tensor's rows are made of; the fill callback's argument. */
struct mkmodel_tensor {
	struct mkmodel_ctx	*ctx;
	enum ggml_type		 type;
	uint64_t		 cols;		/* ne[0] */
	uint64_t		 seed;
	float			 mean;
	float			 std;
	uint64_t		 n_small_rows;	/* rows scaled by 0.1 */
};

void
mkmodel_defaults(struct mkmodel_params *p)
{
	memset(p, 0, sizeof *p);
	p->dim = 64;
	p->n_layers = 2;
	p->n_heads = 4;
	p->n_kv_heads = 2;
	p->ffn_dim = 128;
	p->n_vocab = 512;
	p->ctx_len = 2048;
	p->type = GGML_TYPE_F32;
	p->output_type = GGML_TYPE_COUNT;
	p->seed = 1;
	p->name = "mkmodel";
	p->rope_base = 10000.0f;
	p->rms_eps = 1e-5f;
}

static int __attribute__((format(printf, 4, 5)))
mkmodel_fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
	va_list	ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

static uint64_t
mkmodel_splitmix(uint64_t *x)
{
	uint64_t	z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t
mkmodel_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t
mkmodel_rng_next(struct mkmodel_rng *r)
{
	uint64_t	*s = r->s, out, t;

	out = mkmodel_rotl(s[1] * 5, 7) * 9;
	t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = mkmodel_rotl(s[3], 45);
	return out;
}

static void
mkmodel_rng_seed(struct mkmodel_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t	x = seed ^ mkmodel_splitmix(&stream);
	int		i;

	for (i = 0; i < 4; i++)
		r->s[i] = mkmodel_splitmix(&x);
}

/* n Gaussian samples N(mean, std^2) by Box-Muller, one draw per pair. */
static void
mkmodel_gauss(struct mkmodel_rng *r, float *out, uint64_t n, float mean,
    float std)
{
	const float	two_pi = 6.28318530717958647692f;
	uint64_t	i, x;
	float		u1, u2, rad, s, c;

	for (i = 0; i < n; i += 2) {
		x = mkmodel_rng_next(r);
		u1 = (float)((x >> 40) + 1) * 0x1p-24f;		/* (0, 1] */
		u2 = (float)((x >> 16) & 0xffffff) * 0x1p-24f;	/* [0, 1) */
		rad = sqrtf(-2.0f * logf(u1)) * std;
		sincosf(two_pi * u2, &s, &c);
		out[i] = mean + rad * c;
		if (i + 1 < n)
			out[i + 1] = mean + rad * s;
	}
}

/* FNV-1a, to derive a tensor's seed from its name. */
static uint64_t
mkmodel_hash(const char *s)
{
	uint64_t	h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* gguf_writer fill callback: rows [row0, row0 + n) of one tensor. */
static int
mkmodel_fill_cb(void *arg, uint64_t row0, uint64_t n, void *dst)
{
	struct mkmodel_tensor	*t = arg;
	struct mkmodel_rng	 rng;
	float			*row = t->ctx->row;
	uint8_t			*out = dst;
	size_t			 rs = quant_row_size(t->type, t->cols);
	uint64_t		 i, r, j;
	int			 rc;

	for (i = 0; i < n; i++) {
		r = row0 + i;
		mkmodel_rng_seed(&rng, t->seed, r);
		mkmodel_gauss(&rng, row, t->cols, t->mean, t->std);
		if (r < t->n_small_rows) {
			for (j = 0; j < t->cols; j++)
				row[j] *= 0.1f;
		}
		if (t->type == GGML_TYPE_F32)
			memcpy(out + i * rs, row, t->cols * sizeof(float));
		else if ((rc = quant_quantize_row(t->type, row, out + i * rs,
		    t->cols)) != 0)
			return rc;
	}
	return 0;
}

uint32_t
mkmodel_file_type(const struct mkmodel_params *p)
{
	switch (p->type) {
	case GGML_TYPE_F16:
		return MKMODEL_FTYPE_F16;
	case GGML_TYPE_BF16:
		return MKMODEL_FTYPE_BF16;
	case GGML_TYPE_Q4_0:
		return MKMODEL_FTYPE_Q4_0;
	case GGML_TYPE_Q8_0:
		return MKMODEL_FTYPE_Q8_0;
	case GGML_TYPE_Q4_K:
		return p->q4_k_m_mix ? MKMODEL_FTYPE_Q4_K_M :
		    MKMODEL_FTYPE_Q4_K_S;
	case GGML_TYPE_Q5_K:
		return p->q4_k_m_mix ? MKMODEL_FTYPE_Q5_K_M :
		    MKMODEL_FTYPE_Q5_K_S;
	case GGML_TYPE_Q6_K:
		return MKMODEL_FTYPE_Q6_K;
	default:
		return MKMODEL_FTYPE_ALL_F32;
	}
}

/* llama-quantize's choice of layers that get more bits. */
static int
mkmodel_more_bits(uint32_t layer, uint32_t n_layers)
{
	return layer < n_layers / 8 || layer >= 7 * n_layers / 8 ||
	    (layer - n_layers / 8) % 3 == 2;
}

static enum ggml_type
mkmodel_output_type(const struct mkmodel_params *p)
{
	if (p->output_type != GGML_TYPE_COUNT)
		return p->output_type;
	return p->q4_k_m_mix ? GGML_TYPE_Q6_K : p->type;
}

/* Type of a layer's attn_k, attn_v or ffn_down ("k", "v", "down"). */
static enum ggml_type
mkmodel_layer_type(const struct mkmodel_params *p, const char *which,
    uint32_t layer)
{
	if (!p->q4_k_m_mix)
		return p->type;
	if (p->n_experts == 8 && (strcmp(which, "k") == 0 ||
	    strcmp(which, "v") == 0))
		return GGML_TYPE_Q8_0;
	if (strcmp(which, "k") != 0 && mkmodel_more_bits(layer, p->n_layers))
		return GGML_TYPE_Q6_K;
	return p->type;
}

static int
mkmodel_type_ok(enum ggml_type t)
{
	switch (t) {
	case GGML_TYPE_F32:
	case GGML_TYPE_F16:
	case GGML_TYPE_BF16:
	case GGML_TYPE_Q8_0:
	case GGML_TYPE_Q4_0:
	case GGML_TYPE_Q4_K:
	case GGML_TYPE_Q5_K:
	case GGML_TYPE_Q6_K:
		return 1;
	default:
		return 0;
	}
}

/*
 * Check that type t can be produced here and holds rows of cols elements.
 * quant_quantize_row() is tried on one block of zeros so that a type the
 * quantizer cannot (yet) produce fails before anything is written.
 */
static int
mkmodel_check_type(enum ggml_type t, uint64_t cols, const char *path,
    char *err, size_t errlen)
{
	const struct quant_traits	*tr = quant_traits(t);
	float				 zeros[256] = { 0 };
	uint8_t				 block[1024];

	if (!mkmodel_type_ok(t) || tr == NULL)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: type %u cannot be generated (use f32, f16, bf16, "
		    "q8_0, q4_0, q4_K, q5_K or q6_K)", path, (unsigned)t);
	if (tr->block_size == 0 || tr->block_size > 256 ||
	    tr->type_size > sizeof block)
		return mkmodel_fail(-ENOTSUP, err, errlen,
		    "%s: %s has an unexpected block layout", path, tr->name);
	if (cols % tr->block_size != 0)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: row length %llu is not a multiple of %s's block "
		    "size %u", path, (unsigned long long)cols, tr->name,
		    tr->block_size);
	if (t != GGML_TYPE_F32 &&
	    quant_quantize_row(t, zeros, block, tr->block_size) != 0)
		return mkmodel_fail(-ENOTSUP, err, errlen,
		    "%s: quantizing to %s is not available in this build",
		    path, tr->name);
	return 0;
}

static int
mkmodel_check(const struct mkmodel_params *p, const char *path, char *err,
    size_t errlen)
{
	uint32_t	head_dim;
	int		rc;

	if (p->dim == 0 || p->dim > MKMODEL_MAX_DIM || p->ffn_dim == 0 ||
	    p->ffn_dim > 16 * MKMODEL_MAX_DIM)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: dim %u and ffn %u must be 1 to %u and %u", path,
		    p->dim, p->ffn_dim, MKMODEL_MAX_DIM, 16 * MKMODEL_MAX_DIM);
	if (p->n_layers == 0 || p->n_layers > MKMODEL_MAX_LAYERS)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: %u layers, not 1 to %u", path, p->n_layers,
		    MKMODEL_MAX_LAYERS);
	if (p->n_heads == 0 || p->dim % p->n_heads != 0)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: dim %u is not a multiple of the head count %u", path,
		    p->dim, p->n_heads);
	head_dim = p->dim / p->n_heads;
	if (head_dim % 2 != 0)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: head dimension %u is odd (RoPE rotates pairs)", path,
		    head_dim);
	if (p->n_kv_heads == 0 || p->n_heads % p->n_kv_heads != 0)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: head count %u is not a multiple of the kv head "
		    "count %u", path, p->n_heads, p->n_kv_heads);
	if (p->n_experts > MKMODEL_MAX_EXPERTS ||
	    (p->n_experts == 0 && p->n_experts_used != 0) ||
	    (p->n_experts > 0 && (p->n_experts_used == 0 ||
	    p->n_experts_used > p->n_experts)))
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: %u experts with %u used: need 0 and 0, or 1 to %u "
		    "experts with 1 to that many used", path, p->n_experts,
		    p->n_experts_used, MKMODEL_MAX_EXPERTS);
	if (p->vocab_from == NULL && (p->n_vocab < MKMODEL_N_SPECIAL ||
	    p->n_vocab > MKMODEL_MAX_VOCAB))
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: vocabulary of %u tokens, not %u to %u", path,
		    p->n_vocab, MKMODEL_N_SPECIAL, MKMODEL_MAX_VOCAB);
	if (p->ctx_len == 0)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: context length is 0", path);
	if (!(p->rope_base > 0.0f) || !(p->rms_eps > 0.0f))
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: rope base and rms epsilon must be positive", path);
	if (p->q4_k_m_mix && p->type != GGML_TYPE_Q4_K &&
	    p->type != GGML_TYPE_Q5_K)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: the _K_M mix needs type q4_K or q5_K", path);
	if (p->split_experts && p->n_experts == 0)
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: split experts without experts", path);

	/* Every (type, row length) pair the tensors will use. */
	if ((rc = mkmodel_check_type(p->type, p->dim, path, err, errlen)) ||
	    (rc = mkmodel_check_type(p->type, p->ffn_dim, path, err,
	    errlen)) ||
	    (rc = mkmodel_check_type(mkmodel_output_type(p), p->dim, path,
	    err, errlen)))
		return rc;
	if (p->q4_k_m_mix &&
	    ((rc = mkmodel_check_type(GGML_TYPE_Q6_K, p->dim, path, err,
	    errlen)) ||
	    (rc = mkmodel_check_type(GGML_TYPE_Q6_K, p->ffn_dim, path, err,
	    errlen))))
		return rc;
	if (p->q4_k_m_mix && p->n_experts == 8 &&
	    (rc = mkmodel_check_type(GGML_TYPE_Q8_0, p->dim, path, err,
	    errlen)) != 0)
		return rc;
	return 0;
}

/* Common English words for the synthetic vocabulary (lowercase a-z). */
static const char *const mkmodel_words[] = {
	"the", "of", "and", "to", "in", "is", "it", "that", "was", "he",
	"for", "on", "are", "as", "with", "his", "they", "at", "be", "this",
	"have", "from", "or", "one", "had", "by", "word", "but", "not",
	"what", "all", "were", "we", "when", "your", "can", "said", "there",
	"use", "an", "each", "which", "she", "do", "how", "their", "if",
	"will", "up", "other", "about", "out", "many", "then", "them",
	"these", "so", "some", "her", "would", "make", "like", "him", "into",
	"time", "has", "look", "two", "more", "write", "go", "see", "number",
	"no", "way", "could", "people", "my", "than", "first", "water",
	"been", "call", "who", "oil", "its", "now", "find", "long", "down",
	"day", "did", "get", "come", "made", "may", "part", "once", "upon",
	"little", "girl", "boy", "dog", "cat", "happy", "big", "small",
	"play", "park", "tree", "sun", "friend", "mom", "dad", "saw", "very",
};

/* The synthetic vocabulary under construction. */
struct mkmodel_vocab {
	char		**tokens;
	float		 *scores;
	int32_t		 *types;
	uint32_t	  n;
	uint32_t	  want;
	uint64_t	 *set;		/* open-addressing hashes + 1, 0 free */
	uint32_t	 *set_idx;
	uint64_t	  set_cap;	/* power of two > 2 * want */
};

static void
mkmodel_vocab_free(struct mkmodel_vocab *v)
{
	uint32_t	i;

	if (v->tokens != NULL) {
		for (i = 0; i < v->n; i++)
			free(v->tokens[i]);
	}
	free(v->tokens);
	free(v->scores);
	free(v->types);
	free(v->set);
	free(v->set_idx);
}

/*
 * Append piece with the given type unless it is already present or the
 * vocabulary is full.  Returns 0 or -ENOMEM.
 */
static int
mkmodel_vocab_add(struct mkmodel_vocab *v, const char *piece, int32_t type)
{
	uint64_t	h = mkmodel_hash(piece) | 1, i;

	if (v->n == v->want)
		return 0;
	for (i = h & (v->set_cap - 1); v->set[i] != 0;
	    i = (i + 1) & (v->set_cap - 1)) {
		if (v->set[i] == h &&
		    strcmp(v->tokens[v->set_idx[i]], piece) == 0)
			return 0;
	}
	if ((v->tokens[v->n] = strdup(piece)) == NULL)
		return -ENOMEM;
	v->set[i] = h;
	v->set_idx[i] = v->n;
	v->types[v->n] = type;
	/* Specials and bytes score 0; normal pieces decrease from -1. */
	v->scores[v->n] = type == MKMODEL_TOKEN_NORMAL ?
	    -(float)(v->n - MKMODEL_N_SPECIAL + 1) : 0.0f;
	v->n++;
	return 0;
}

/* Add every lowercase string of length len, with prefix in front. */
static int
mkmodel_vocab_add_strings(struct mkmodel_vocab *v, const char *prefix,
    int len)
{
	char	buf[32];
	int	idx[8] = { 0 }, plen = (int)strlen(prefix), k, rc;

	memcpy(buf, prefix, plen);
	buf[plen + len] = '\0';
	while (v->n < v->want) {
		for (k = 0; k < len; k++)
			buf[plen + k] = (char)('a' + idx[k]);
		if ((rc = mkmodel_vocab_add(v, buf, MKMODEL_TOKEN_NORMAL)) != 0)
			return rc;
		for (k = len - 1; k >= 0 && ++idx[k] == 26; k--)
			idx[k] = 0;
		if (k < 0)
			break;
	}
	return 0;
}

#define MKMODEL_SPACE "\xe2\x96\x81"	/* U+2581, SentencePiece's space */

/*
 * The synthetic vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then
 * normal pieces in a fixed order: the space piece, printable ASCII
 * characters, space + letter, letter pairs, space + letter pairs, space +
 * common words, then longer letter strings, plain and with the space
 * prefix, until n pieces exist.
 */
static int
mkmodel_vocab_build(struct mkmodel_vocab *v, uint32_t n)
{
	char		buf[48];
	size_t		i;
	int		c, len, rc;

	memset(v, 0, sizeof *v);
	v->want = n;
	for (v->set_cap = 1; v->set_cap <= 2 * (uint64_t)n; v->set_cap *= 2)
		;
	v->tokens = calloc(n, sizeof *v->tokens);
	v->scores = calloc(n, sizeof *v->scores);
	v->types = calloc(n, sizeof *v->types);
	v->set = calloc(v->set_cap, sizeof *v->set);
	v->set_idx = calloc(v->set_cap, sizeof *v->set_idx);
	if (v->tokens == NULL || v->scores == NULL || v->types == NULL ||
	    v->set == NULL || v->set_idx == NULL)
		return -ENOMEM;

	if ((rc = mkmodel_vocab_add(v, "<unk>", MKMODEL_TOKEN_UNKNOWN)) ||
	    (rc = mkmodel_vocab_add(v, "<s>", MKMODEL_TOKEN_CONTROL)) ||
	    (rc = mkmodel_vocab_add(v, "</s>", MKMODEL_TOKEN_CONTROL)))
		return rc;
	for (c = 0; c < 256; c++) {
		snprintf(buf, sizeof buf, "<0x%02X>", c);
		if ((rc = mkmodel_vocab_add(v, buf, MKMODEL_TOKEN_BYTE)) != 0)
			return rc;
	}
	if ((rc = mkmodel_vocab_add(v, MKMODEL_SPACE,
	    MKMODEL_TOKEN_NORMAL)) != 0)
		return rc;
	for (c = 0x21; c < 0x7f; c++) {
		buf[0] = (char)c;
		buf[1] = '\0';
		if ((rc = mkmodel_vocab_add(v, buf,
		    MKMODEL_TOKEN_NORMAL)) != 0)
			return rc;
	}
	if ((rc = mkmodel_vocab_add_strings(v, MKMODEL_SPACE, 1)) != 0 ||
	    (rc = mkmodel_vocab_add_strings(v, "", 2)) != 0 ||
	    (rc = mkmodel_vocab_add_strings(v, MKMODEL_SPACE, 2)) != 0)
		return rc;
	for (i = 0; i < sizeof mkmodel_words / sizeof *mkmodel_words; i++) {
		snprintf(buf, sizeof buf, MKMODEL_SPACE "%s", mkmodel_words[i]);
		if ((rc = mkmodel_vocab_add(v, buf,
		    MKMODEL_TOKEN_NORMAL)) != 0)
			return rc;
	}
	for (len = 3; v->n < v->want && len <= 8; len++) {
		if ((rc = mkmodel_vocab_add_strings(v, "", len)) != 0 ||
		    (rc = mkmodel_vocab_add_strings(v, MKMODEL_SPACE,
		    len)) != 0)
			return rc;
	}
	return v->n == v->want ? 0 : -EINVAL;
}

/* Write the tokenizer keys: synthetic, or copied from p->vocab_from. */
static int
mkmodel_vocab_keys(const struct mkmodel_params *p, struct gguf_writer *w,
    uint32_t *n_vocab, const char *path, char *err, size_t errlen)
{
	struct mkmodel_vocab	 v;
	struct gguf_file	*f;
	const struct gguf_kv	*kv;
	uint64_t		 i;
	int			 rc;

	if (p->vocab_from == NULL) {
		if ((rc = mkmodel_vocab_build(&v, p->n_vocab)) != 0 ||
		    (rc = gguf_writer_set_str(w, "tokenizer.ggml.model",
		    "llama")) != 0 ||
		    (rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
		    (const char *const *)v.tokens, v.n)) != 0 ||
		    (rc = gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores",
		    v.scores, v.n)) != 0 ||
		    (rc = gguf_writer_set_arr_i32(w,
		    "tokenizer.ggml.token_type", v.types, v.n)) != 0 ||
		    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
		    1)) != 0 ||
		    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id",
		    2)) != 0 ||
		    (rc = gguf_writer_set_u32(w,
		    "tokenizer.ggml.unknown_token_id", 0)) != 0 ||
		    (rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token",
		    1)) != 0 ||
		    (rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token",
		    0)) != 0) {
			mkmodel_vocab_free(&v);
			return mkmodel_fail(rc, err, errlen,
			    "%s: building the vocabulary: %s", path,
			    strerror(-rc));
		}
		*n_vocab = v.n;
		mkmodel_vocab_free(&v);
		return 0;
	}

	if ((rc = gguf_open(p->vocab_from, 0, &f, err, errlen)) != 0)
		return rc;
	if ((rc = gguf_get_arr(f, "tokenizer.ggml.tokens", &kv)) != 0 ||
	    kv->arr_type != GGUF_TYPE_STRING || kv->arr_n == 0 ||
	    kv->arr_n > MKMODEL_MAX_VOCAB) {
		gguf_close(f);
		return mkmodel_fail(-EINVAL, err, errlen,
		    "%s: no usable tokenizer.ggml.tokens array",
		    p->vocab_from);
	}
	*n_vocab = (uint32_t)kv->arr_n;
	for (i = 0; i < gguf_n_kv(f); i++) {
		kv = gguf_kv_at(f, i);
		if (kv->key.len < 10 || memcmp(kv->key.ptr, "tokenizer.", 10))
			continue;
		if ((rc = gguf_writer_set_kv(w, kv)) != 0) {
			gguf_close(f);
			return mkmodel_fail(rc, err, errlen,
			    "%s: copying its tokenizer: %s", p->vocab_from,
			    strerror(-rc));
		}
	}
	gguf_close(f);
	return 0;
}

/* Add one generated tensor to the writer. */
static int
mkmodel_add(struct mkmodel_ctx *ctx, struct gguf_writer *w, uint64_t seed,
    enum ggml_type type, float mean, float std, uint64_t n_small_rows,
    uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint64_t ne2,
    const char *fmt, ...)
{
	struct mkmodel_tensor	*t;
	uint64_t		 ne[3] = { ne0, ne1, ne2 };
	char			 name[64];
	va_list			 ap;
	int			 n;

	va_start(ap, fmt);
	n = vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof name ||
	    ctx->n_tensors == ctx->cap_tensors)
		return -EINVAL;
	t = &ctx->tensors[ctx->n_tensors++];
	t->ctx = ctx;
	t->type = type;
	t->cols = ne0;
	t->seed = seed ^ mkmodel_hash(name);
	t->mean = mean;
	t->std = std;
	t->n_small_rows = n_small_rows;
	return gguf_writer_add_tensor_cb(w, name, type, n_dims, ne,
	    mkmodel_fill_cb, t);
}

/* Add the tensors of layer l. */
static int
mkmodel_add_layer(const struct mkmodel_params *p, struct mkmodel_ctx *ctx,
    struct gguf_writer *w, uint32_t l)
{
	uint64_t	dim = p->dim, ffn = p->ffn_dim;
	uint64_t	hd = p->dim / p->n_heads, kv = hd * p->n_kv_heads;
	uint64_t	s = p->seed;
	float		sd = 1.0f / sqrtf((float)dim);
	float		sf = 1.0f / sqrtf((float)ffn);
	enum ggml_type	td = mkmodel_layer_type(p, "down", l);
	uint32_t	e;
	int		rc;

	if ((rc = mkmodel_add(ctx, w, s, GGML_TYPE_F32, 1.0f, 0.1f, 0, 1,
	    dim, 1, 1, "blk.%u.attn_norm.weight", l)) ||
	    (rc = mkmodel_add(ctx, w, s, p->type, 0.0f, sd, 0, 2, dim,
	    hd * p->n_heads, 1, "blk.%u.attn_q.weight", l)) ||
	    (rc = mkmodel_add(ctx, w, s, mkmodel_layer_type(p, "k", l), 0.0f,
	    sd, 0, 2, dim, kv, 1, "blk.%u.attn_k.weight", l)) ||
	    (rc = mkmodel_add(ctx, w, s, mkmodel_layer_type(p, "v", l), 0.0f,
	    sd, 0, 2, dim, kv, 1, "blk.%u.attn_v.weight", l)) ||
	    (rc = mkmodel_add(ctx, w, s, p->type, 0.0f,
	    1.0f / sqrtf((float)(hd * p->n_heads)), 0, 2, hd * p->n_heads,
	    dim, 1, "blk.%u.attn_output.weight", l)) ||
	    (rc = mkmodel_add(ctx, w, s, GGML_TYPE_F32, 1.0f, 0.1f, 0, 1,
	    dim, 1, 1, "blk.%u.ffn_norm.weight", l)))
		return rc;

	if (p->n_experts == 0) {
		if ((rc = mkmodel_add(ctx, w, s, p->type, 0.0f, sd, 0, 2, dim,
		    ffn, 1, "blk.%u.ffn_gate.weight", l)) ||
		    (rc = mkmodel_add(ctx, w, s, p->type, 0.0f, sd, 0, 2, dim,
		    ffn, 1, "blk.%u.ffn_up.weight", l)) ||
		    (rc = mkmodel_add(ctx, w, s, td, 0.0f, sf, 0, 2, ffn, dim,
		    1, "blk.%u.ffn_down.weight", l)))
			return rc;
		return 0;
	}

	if ((rc = mkmodel_add(ctx, w, s, GGML_TYPE_F32, 0.0f, sd, 0, 2, dim,
	    p->n_experts, 1, "blk.%u.ffn_gate_inp.weight", l)) != 0)
		return rc;
	if (!p->split_experts) {
		if ((rc = mkmodel_add(ctx, w, s, p->type, 0.0f, sd, 0, 3, dim,
		    ffn, p->n_experts, "blk.%u.ffn_gate_exps.weight", l)) ||
		    (rc = mkmodel_add(ctx, w, s, p->type, 0.0f, sd, 0, 3, dim,
		    ffn, p->n_experts, "blk.%u.ffn_up_exps.weight", l)) ||
		    (rc = mkmodel_add(ctx, w, s, td, 0.0f, sf, 0, 3, ffn, dim,
		    p->n_experts, "blk.%u.ffn_down_exps.weight", l)))
			return rc;
		return 0;
	}
	for (e = 0; e < p->n_experts; e++) {
		if ((rc = mkmodel_add(ctx, w, s, p->type, 0.0f, sd, 0, 2, dim,
		    ffn, 1, "blk.%u.ffn_gate.%u.weight", l, e)) ||
		    (rc = mkmodel_add(ctx, w, s, p->type, 0.0f, sd, 0, 2, dim,
		    ffn, 1, "blk.%u.ffn_up.%u.weight", l, e)) ||
		    (rc = mkmodel_add(ctx, w, s, td, 0.0f, sf, 0, 2, ffn, dim,
		    1, "blk.%u.ffn_down.%u.weight", l, e)))
			return rc;
	}
	return 0;
}

/* The llama.* and general.* keys. */
static int
mkmodel_hparam_keys(const struct mkmodel_params *p, struct gguf_writer *w)
{
	int	rc;

	if ((rc = gguf_writer_set_str(w, "general.architecture", "llama")) ||
	    (rc = gguf_writer_set_str(w, "general.name",
	    p->name != NULL ? p->name : "mkmodel")) ||
	    (rc = gguf_writer_set_u32(w, "llama.context_length",
	    p->ctx_len)) ||
	    (rc = gguf_writer_set_u32(w, "llama.embedding_length", p->dim)) ||
	    (rc = gguf_writer_set_u32(w, "llama.block_count", p->n_layers)) ||
	    (rc = gguf_writer_set_u32(w, "llama.feed_forward_length",
	    p->ffn_dim)) ||
	    (rc = gguf_writer_set_u32(w, "llama.attention.head_count",
	    p->n_heads)) ||
	    (rc = gguf_writer_set_u32(w, "llama.attention.head_count_kv",
	    p->n_kv_heads)) ||
	    (rc = gguf_writer_set_u32(w, "llama.rope.dimension_count",
	    p->dim / p->n_heads)) ||
	    (rc = gguf_writer_set_f32(w, "llama.rope.freq_base",
	    p->rope_base)) ||
	    (rc = gguf_writer_set_f32(w,
	    "llama.attention.layer_norm_rms_epsilon", p->rms_eps)))
		return rc;
	if (p->n_experts > 0 &&
	    ((rc = gguf_writer_set_u32(w, "llama.expert_count",
	    p->n_experts)) ||
	    (rc = gguf_writer_set_u32(w, "llama.expert_used_count",
	    p->n_experts_used))))
		return rc;
	if (p->sliding_window > 0 &&
	    (rc = gguf_writer_set_u32(w, "llama.attention.sliding_window",
	    p->sliding_window)) != 0)
		return rc;
	return 0;
}

int
mkmodel_write(const struct mkmodel_params *p, const char *path, char *err,
    size_t errlen)
{
	struct mkmodel_ctx	 ctx = { 0 };
	struct gguf_writer	*w = NULL;
	enum ggml_type		 to = mkmodel_output_type(p);
	uint32_t		 n_vocab = 0, l, maxcols;
	int			 rc, quantized;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((rc = mkmodel_check(p, path, err, errlen)) != 0)
		return rc;

	maxcols = p->dim > p->ffn_dim ? p->dim : p->ffn_dim;
	ctx.cap_tensors = 3 + (size_t)p->n_layers *
	    (7 + 3 * (size_t)(p->n_experts > 0 ? p->n_experts : 1));
	ctx.tensors = calloc(ctx.cap_tensors, sizeof *ctx.tensors);
	ctx.row = malloc(((size_t)maxcols + 1) * sizeof *ctx.row);
	if (ctx.tensors == NULL || ctx.row == NULL ||
	    (w = gguf_writer_create()) == NULL) {
		rc = mkmodel_fail(-ENOMEM, err, errlen, "%s: out of memory",
		    path);
		goto out;
	}

	if ((rc = mkmodel_hparam_keys(p, w)) != 0) {
		rc = mkmodel_fail(rc, err, errlen, "%s: metadata: %s", path,
		    strerror(-rc));
		goto out;
	}
	if ((rc = mkmodel_vocab_keys(p, w, &n_vocab, path, err,
	    errlen)) != 0)
		goto out;
	quantized = p->type != GGML_TYPE_F32 && p->type != GGML_TYPE_F16 &&
	    p->type != GGML_TYPE_BF16;
	if ((rc = gguf_writer_set_u32(w, "llama.vocab_size", n_vocab)) ||
	    (quantized && (rc = gguf_writer_set_u32(w,
	    "general.quantization_version", 2))) ||
	    (rc = gguf_writer_set_u32(w, "general.file_type",
	    mkmodel_file_type(p)))) {
		rc = mkmodel_fail(rc, err, errlen, "%s: metadata: %s", path,
		    strerror(-rc));
		goto out;
	}

	/* token_embd doubles as the classifier when tied: scale its rows. */
	rc = mkmodel_add(&ctx, w, p->seed, p->type, 0.0f, 1.0f,
	    p->tied_output ? 3 : 0, 2, p->dim, n_vocab, 1,
	    "token_embd.weight");
	for (l = 0; rc == 0 && l < p->n_layers; l++)
		rc = mkmodel_add_layer(p, &ctx, w, l);
	if (rc == 0)
		rc = mkmodel_add(&ctx, w, p->seed, GGML_TYPE_F32, 1.0f, 0.1f, 0,
		    1, p->dim, 1, 1, "output_norm.weight");
	if (rc == 0 && !p->tied_output)
		rc = mkmodel_add(&ctx, w, p->seed, to, 0.0f,
		    1.0f / sqrtf((float)p->dim), 3, 2, p->dim, n_vocab, 1,
		    "output.weight");
	if (rc != 0) {
		rc = mkmodel_fail(rc, err, errlen, "%s: tensor table: %s",
		    path, strerror(-rc));
		goto out;
	}
	rc = gguf_writer_write(w, path, err, errlen);

out:
	gguf_writer_free(w);
	free(ctx.tensors);
	free(ctx.row);
	return rc;
}
