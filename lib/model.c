/*
 * model.c: loading a GGUF "llama" model (Mistral, Mixtral, Llama) into an
 * immutable struct model.
 *
 * Hyperparameters come from the llama.* keys as llama.cpp writes them; every
 * tensor the architecture needs is looked up, its type checked against what
 * quant.c computes with, and its shape checked against the hyperparameters
 * before anything reads it.  The small norm vectors and the MoE router are
 * converted to owned f32 arrays.  Mixtral experts are accepted in both
 * layouts seen in the wild: merged 3-D blk.N.ffn_{gate,up,down}_exps and
 * older per-expert blk.N.ffn_*.E.
 *
 * DESIGN
 *
 * 1. Weight memory.  Everything the forward pass reads of the weights (the
 *    matrices and the embedding rows) is copied at load out of the file mapping
 *    into one anonymous region that asks for 2 MiB pages, Q8_0, Q4_0, Q4_K,
 *    Q5_K and Q6_K matrices packed for 8-row kernels on the way (quant.h) when
 *    int8 activations are on.  Decode streams every weight once per token: with
 *    4 KiB file pages the walk costs a TLB miss every few rows, and a Mixtral
 *    expert first chosen late faults its pages in one by one in the middle of a
 *    reply.  Measured on the bench machine (Zen 3, 2 threads): TinyLlama Q8_0
 *    decode 15.7 -> 17.6 tok/s from the copy alone, 23-24 packed.  The copy
 *    runs on all CPUs (0.5 s for 1.1 GB from the page cache, 1.5 s for Mistral
 *    7B Q4_0); the copied ranges of the mapping are then dropped from the
 *    process (MADV_DONTNEED: a private file mapping faults back from the page
 *    cache), so memory is counted once, and the region is made read-only.  A
 *    running model then no longer depends on the file: truncating or rewriting
 *    it cannot reach the forward pass (model_weights_mapped()).  Only the
 *    reference path and a packed matrix's float fallback still read the
 *    mapping.  MISTRAL_REPACK=0 keeps every weight in the mapping instead (no
 *    copy at start, pages shared with other processes mapping the file).  So
 *    does a copy that would not fit: bigger than seven eighths of what
 *    /proc/meminfo calls available, or refused by mmap (an address-space
 *    limit).  Anonymous memory cannot be paged back to the file, so a model
 *    that only fits as page cache (Mixtral on a 16 GB machine) must stay mapped
 *    rather than be killed for want of memory; the summary says which happened.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "tokenizer.h"

struct model_loader {
	struct model	*m;
	char		*err;
	size_t		 errlen;
};

static int
model_fail(struct model_loader *l, int rc, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (l->err != NULL && l->errlen > 0) {
		n = snprintf(l->err, l->errlen, "%s: ", l->m->path);
		if (n < 0 || (size_t)n >= l->errlen)
			n = 0;
		va_start(ap, fmt);
		vsnprintf(l->err + n, l->errlen - n, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* A required u32 hyperparameter "llama.<name>". */
static int
model_hp_u32(struct model_loader *l, const char *name, uint32_t *out,
    int required, uint32_t def)
{
	char key[128];
	int rc;

	snprintf(key, sizeof key, "llama.%s", name);
	rc = gguf_get_u32(l->m->gguf, key, out);
	if (rc == -ENOENT && !required) {
		*out = def;
		return 0;
	}
	if (rc == -ENOENT)
		return model_fail(l, -EINVAL, "missing key %s", key);
	if (rc != 0)
		return model_fail(l, -EINVAL, "key %s has the wrong type", key);
	return 0;
}

static int
model_hp_f32(struct model_loader *l, const char *name, float *out, float def)
{
	char key[128];
	int rc;

	snprintf(key, sizeof key, "llama.%s", name);
	rc = gguf_get_f32(l->m->gguf, key, out);
	if (rc == -ENOENT) {
		*out = def;
		return 0;
	}
	if (rc != 0)
		return model_fail(l, -EINVAL, "key %s has the wrong type", key);
	return 0;
}

/*
 * Find a tensor and check its shape: ne0 x ne1 (x ne2 when ne2 > 1).
 * A 1-D tensor is described with ne1 = 1.
 */
static int
model_tensor(struct model_loader *l, const char *name, uint64_t ne0,
    uint64_t ne1, uint64_t ne2, int optional, const struct gguf_tensor **out)
{
	const struct gguf_tensor *t;
	const struct quant_traits *tr;

	*out = NULL;
	t = gguf_find_tensor(l->m->gguf, name);
	if (t == NULL) {
		if (optional)
			return 0;
		return model_fail(l, -EINVAL, "missing tensor %s", name);
	}
	tr = quant_traits(t->type);
	if (tr == NULL || !tr->supported)
		return model_fail(l, -ENOTSUP, "tensor %s has type %s, which "
		    "is not supported", name, tr ? tr->name : "unknown");
	if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != ne2 ||
	    t->ne[3] != 1)
		return model_fail(l, -EINVAL, "tensor %s has shape [%" PRIu64
		    ", %" PRIu64 ", %" PRIu64 "], expected [%" PRIu64 ", %"
		    PRIu64 ", %" PRIu64 "]", name, t->ne[0], t->ne[1],
		    t->ne[2], ne0, ne1, ne2);
	*out = t;
	return 0;
}

static void
model_mtensor(struct mtensor *mt, const struct gguf_tensor *t, int64_t slice)
{
	mt->type = t->type;
	mt->cols = (int64_t)t->ne[0];
	mt->rows = (int64_t)t->ne[1];
	mt->row_size = quant_row_size(t->type, mt->cols);
	mt->data = (const uint8_t *)t->data +
	    (size_t)slice * mt->row_size * (size_t)mt->rows;
}

static int
model_matrix(struct model_loader *l, const char *name, uint64_t cols,
    uint64_t rows, int optional, struct mtensor *mt)
{
	const struct gguf_tensor *t;
	int rc;

	if ((rc = model_tensor(l, name, cols, rows, 1, optional, &t)) != 0)
		return rc;
	if (t != NULL)
		model_mtensor(mt, t, 0);
	return 0;
}

/* A vector (norm weights, router rows) converted to owned floats. */
static int
model_vector(struct model_loader *l, const char *name, uint64_t ne0,
    uint64_t ne1, float **out)
{
	const struct gguf_tensor *t;
	int rc;

	*out = NULL;
	if ((rc = model_tensor(l, name, ne0, ne1, 1, 0, &t)) != 0)
		return rc;
	if ((*out = malloc(ne0 * ne1 * sizeof(float))) == NULL)
		return model_fail(l, -ENOMEM, "out of memory");
	quant_dequantize_row(t->type, t->data, *out, (int64_t)(ne0 * ne1));
	return 0;
}

static int
model_experts(struct model_loader *l, int layer, const char *what,
    uint64_t cols, uint64_t rows, struct mtensor **out)
{
	const struct model_hparams *hp = &l->m->hp;
	const struct gguf_tensor *t;
	char name[96];
	uint32_t e;
	int rc;

	if ((*out = calloc(hp->n_experts, sizeof **out)) == NULL)
		return model_fail(l, -ENOMEM, "out of memory");
	snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.weight", layer, what);
	if ((rc = model_tensor(l, name, cols, rows, hp->n_experts, 1, &t)) != 0)
		return rc;
	if (t != NULL) {
		for (e = 0; e < hp->n_experts; e++)
			model_mtensor(&(*out)[e], t, e);
		return 0;
	}
	for (e = 0; e < hp->n_experts; e++) {
		snprintf(name, sizeof name, "blk.%d.ffn_%s.%u.weight", layer,
		    what, e);
		if ((rc = model_matrix(l, name, cols, rows, 1, &(*out)[e])) != 0)
			return rc;
		if ((*out)[e].data == NULL)
			return model_fail(l, -EINVAL, "missing tensor "
			    "blk.%d.ffn_%s_exps.weight (or the per-expert "
			    "blk.%d.ffn_%s.%u.weight)", layer, what, layer,
			    what, e);
	}
	return 0;
}

static int
model_load_layer(struct model_loader *l, int i)
{
	const struct model_hparams *hp = &l->m->hp;
	struct layer *ly = &l->m->layers[i];
	uint32_t q_dim = hp->n_heads * hp->head_dim;
	uint32_t kv_dim = hp->n_kv_heads * hp->head_dim;
	char name[96];
	int rc;

#define LAYER_NAME(s) (snprintf(name, sizeof name, "blk.%d." s, i), name)
	if ((rc = model_vector(l, LAYER_NAME("attn_norm.weight"), hp->dim, 1,
	    &ly->attn_norm)) != 0 ||
	    (rc = model_vector(l, LAYER_NAME("ffn_norm.weight"), hp->dim, 1,
	    &ly->ffn_norm)) != 0 ||
	    (rc = model_matrix(l, LAYER_NAME("attn_q.weight"), hp->dim, q_dim,
	    0, &ly->wq)) != 0 ||
	    (rc = model_matrix(l, LAYER_NAME("attn_k.weight"), hp->dim, kv_dim,
	    0, &ly->wk)) != 0 ||
	    (rc = model_matrix(l, LAYER_NAME("attn_v.weight"), hp->dim, kv_dim,
	    0, &ly->wv)) != 0 ||
	    (rc = model_matrix(l, LAYER_NAME("attn_output.weight"), q_dim,
	    hp->dim, 0, &ly->wo)) != 0)
		return rc;
	if (hp->n_experts == 0) {
		if ((rc = model_matrix(l, LAYER_NAME("ffn_gate.weight"),
		    hp->dim, hp->ffn_dim, 0, &ly->w_gate)) != 0 ||
		    (rc = model_matrix(l, LAYER_NAME("ffn_up.weight"),
		    hp->dim, hp->ffn_dim, 0, &ly->w_up)) != 0 ||
		    (rc = model_matrix(l, LAYER_NAME("ffn_down.weight"),
		    hp->ffn_dim, hp->dim, 0, &ly->w_down)) != 0)
			return rc;
		return 0;
	}
	if ((rc = model_vector(l, LAYER_NAME("ffn_gate_inp.weight"), hp->dim,
	    hp->n_experts, &ly->router)) != 0)
		return rc;
#undef LAYER_NAME
	if ((rc = model_experts(l, i, "gate", hp->dim, hp->ffn_dim,
	    &ly->e_gate)) != 0 ||
	    (rc = model_experts(l, i, "up", hp->dim, hp->ffn_dim,
	    &ly->e_up)) != 0 ||
	    (rc = model_experts(l, i, "down", hp->ffn_dim, hp->dim,
	    &ly->e_down)) != 0)
		return rc;
	return 0;
}

static int
model_read_hparams(struct model_loader *l)
{
	struct model *m = l->m;
	struct model_hparams *hp = &m->hp;
	struct gguf_str arch;
	int rc;

	if (gguf_get_str(m->gguf, "general.architecture", &arch) != 0)
		return model_fail(l, -EINVAL, "missing general.architecture");
	if (!gguf_str_eq(arch, "llama"))
		return model_fail(l, -ENOTSUP, "architecture '%.*s' is not "
		    "supported (only 'llama': Mistral, Mixtral, Llama)",
		    (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
	if ((rc = model_hp_u32(l, "embedding_length", &hp->dim, 1, 0)) ||
	    (rc = model_hp_u32(l, "block_count", &hp->n_layers, 1, 0)) ||
	    (rc = model_hp_u32(l, "feed_forward_length", &hp->ffn_dim, 1, 0)) ||
	    (rc = model_hp_u32(l, "attention.head_count", &hp->n_heads, 1, 0)) ||
	    (rc = model_hp_u32(l, "attention.head_count_kv", &hp->n_kv_heads,
	    0, 0)) ||
	    (rc = model_hp_u32(l, "context_length", &hp->ctx_len, 0, 4096)) ||
	    (rc = model_hp_u32(l, "expert_count", &hp->n_experts, 0, 0)) ||
	    (rc = model_hp_u32(l, "expert_used_count", &hp->n_experts_used,
	    0, 0)) ||
	    (rc = model_hp_u32(l, "attention.sliding_window", &hp->swa_window,
	    0, 0)) ||
	    (rc = model_hp_f32(l, "rope.freq_base", &hp->rope_base, 10000.0f)) ||
	    (rc = model_hp_f32(l, "attention.layer_norm_rms_epsilon",
	    &hp->rms_eps, 1e-5f)))
		return rc;
	if (hp->n_kv_heads == 0)
		hp->n_kv_heads = hp->n_heads;
	if (hp->dim == 0 || hp->n_layers == 0 || hp->n_heads == 0 ||
	    hp->dim % hp->n_heads != 0 || hp->n_heads % hp->n_kv_heads != 0 ||
	    hp->n_layers > 4096 || hp->dim > 65536 || hp->ffn_dim == 0 ||
	    hp->ffn_dim > 1 << 20)
		return model_fail(l, -EINVAL, "inconsistent hyperparameters "
		    "(embedding %u, layers %u, heads %u/%u, ffn %u)", hp->dim,
		    hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->ffn_dim);
	hp->head_dim = hp->dim / hp->n_heads;
	if (hp->head_dim > 256 || hp->head_dim % 2 != 0)
		return model_fail(l, -ENOTSUP, "head size %u is not supported "
		    "(at most 256, even)", hp->head_dim);
	if ((rc = model_hp_u32(l, "rope.dimension_count", &hp->n_rot, 0,
	    hp->head_dim)))
		return rc;
	if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
		return model_fail(l, -EINVAL, "rope.dimension_count %u does not "
		    "fit head size %u", hp->n_rot, hp->head_dim);
	if (hp->n_experts > 256 || (hp->n_experts > 0 &&
	    (hp->n_experts_used == 0 || hp->n_experts_used > hp->n_experts)))
		return model_fail(l, -EINVAL, "expert counts %u (used %u) are "
		    "inconsistent", hp->n_experts, hp->n_experts_used);
	if (hp->n_experts == 1)
		return model_fail(l, -EINVAL, "expert_count 1 is not a MoE");
	if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f) ||
	    !(hp->rope_base > 1.0f))
		return model_fail(l, -EINVAL, "bad rms epsilon or rope base");
	hp->n_vocab = (uint32_t)tokenizer_n_vocab(m->tok);
	if (hp->swa_window > 0)
		m->swa_source = MODEL_SWA_GGUF;
	return 0;
}

/* Mistral 7B v0.1 was trained with W = 4096, which its GGUFs do not say. */
static void
model_known_window(struct model *m)
{
	char low[256];
	size_t i;

	if (m->hp.swa_window != 0 || m->name == NULL)
		return;
	for (i = 0; m->name[i] != '\0' && i < sizeof low - 1; i++)
		low[i] = (char)tolower((unsigned char)m->name[i]);
	low[i] = '\0';
	if (strstr(low, "mistral") != NULL && strstr(low, "v0.1") != NULL &&
	    strstr(low, "mixtral") == NULL) {
		m->hp.swa_window = 4096;
		m->swa_source = MODEL_SWA_KNOWN;
	}
}

static const char *
model_ftype_name(uint32_t ft)
{
	switch (ft) {
	case 0: return "F32";
	case 1: return "F16";
	case 2: return "Q4_0";
	case 7: return "Q8_0";
	case 10: return "Q2_K";
	case 12: return "Q3_K_M";
	case 14: return "Q4_K_S";
	case 15: return "Q4_K_M";
	case 16: return "Q5_K_S";
	case 17: return "Q5_K_M";
	case 18: return "Q6_K";
	case 32: return "BF16";
	default: return NULL;
	}
}

static uint64_t
model_fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n-- > 0) {
		h ^= *b++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Hyperparameters, tensor table and three samples of every tensor. */
static void
model_compute_fingerprint(struct model *m)
{
	uint64_t h = 0xcbf29ce484222325ULL, i, n, off[3];
	const struct gguf_tensor *t;
	size_t k, len;

	h = model_fnv(h, &m->hp, sizeof m->hp);
	n = gguf_n_tensors(m->gguf);
	for (i = 0; i < n; i++) {
		t = gguf_tensor_at(m->gguf, i);
		h = model_fnv(h, t->name.ptr, t->name.len);
		h = model_fnv(h, &t->type, sizeof t->type);
		h = model_fnv(h, t->ne, sizeof t->ne);
		len = t->size < 256 ? t->size : 256;
		off[0] = 0;
		off[1] = t->size / 2 - (t->size / 2 < len ? t->size / 2 : 0);
		off[2] = t->size - len;
		for (k = 0; k < 3; k++)
			h = model_fnv(h, (const uint8_t *)t->data + off[k],
			    len);
	}
	m->fingerprint = h;
}

static void
model_count(struct model *m)
{
	uint64_t i, n = gguf_n_tensors(m->gguf), bytes[GGML_TYPE_COUNT] = {0};
	const struct gguf_tensor *t;
	uint32_t ft, best = 0;
	const char *s;

	for (i = 0; i < n; i++) {
		t = gguf_tensor_at(m->gguf, i);
		m->n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
		m->weight_bytes += t->size;
		if (t->type < GGML_TYPE_COUNT && t->ne[1] > 1)
			bytes[t->type] += t->size;
	}
	if (gguf_get_u32(m->gguf, "general.file_type", &ft) == 0 &&
	    (s = model_ftype_name(ft)) != NULL) {
		snprintf(m->file_type, sizeof m->file_type, "%s", s);
		return;
	}
	for (i = 0; i < GGML_TYPE_COUNT; i++)
		if (bytes[i] > bytes[best])
			best = (uint32_t)i;
	s = quant_traits(best) ? quant_traits(best)->name : "unknown";
	snprintf(m->file_type, sizeof m->file_type, "%s", s);
}

/* ---- weight memory (DESIGN 1) --------------------------------------- */

#define MODEL_HUGE_PAGE	((size_t)2 << 20)

/* Whether t is packed: a packable type that takes int8 activations (so
 * not with MISTRAL_ACT_Q8=0, which keeps the float products). */
static int
model_packs(const struct mtensor *t)
{
	return quant_packable(t->type, t->cols) &&
	    quant_act_fmt(t->type, t->cols) != QUANT_ACT_NONE;
}

/* One matrix of weight memory: whether it is packed and the bytes it
 * takes there, a multiple of 64. */
struct model_copy_plan {
	struct mtensor	*t;
	int		 pack;
	size_t		 size;
};

static void
model_plan(struct model *m, struct mtensor *t, struct model_copy_plan *v,
    size_t *k)
{
	int pack = t != &m->tok_embd && model_packs(t);	/* rows: never */
	size_t n = pack ? quant_pack_size(t->type, t->rows, t->cols) :
	    t->row_size * (size_t)t->rows;

	if (t->data != NULL)
		v[(*k)++] = (struct model_copy_plan){ t, pack,
		    (n + 63) & ~(size_t)63 };
}

/* Everything of the weights the forward pass reads from the file: the
 * matrices, the embeddings (their rows), and a tied output once more when
 * it is packed (else it shares the embeddings' copy): *n of them in a
 * calloc()ed array, or NULL. */
static struct model_copy_plan *
model_matrices(struct model *m, size_t *n)
{
	size_t cap = (size_t)m->hp.n_layers * (7 + 3 * (size_t)m->hp.n_experts)
	    + 2, k = 0;
	struct model_copy_plan *v = calloc(cap, sizeof *v);

	if (v == NULL)
		return NULL;
	for (uint32_t i = 0; i < m->hp.n_layers; i++) {
		struct layer *ly = &m->layers[i];

		model_plan(m, &ly->wq, v, &k);
		model_plan(m, &ly->wk, v, &k);
		model_plan(m, &ly->wv, v, &k);
		model_plan(m, &ly->wo, v, &k);
		model_plan(m, &ly->w_gate, v, &k);
		model_plan(m, &ly->w_up, v, &k);
		model_plan(m, &ly->w_down, v, &k);
		for (uint32_t e = 0; e < m->hp.n_experts; e++) {
			model_plan(m, &ly->e_gate[e], v, &k);
			model_plan(m, &ly->e_up[e], v, &k);
			model_plan(m, &ly->e_down[e], v, &k);
		}
	}
	model_plan(m, &m->tok_embd, v, &k);
	if (m->output.data != m->tok_embd.data || model_packs(&m->output))
		model_plan(m, &m->output, v, &k);
	*n = k;
	return v;
}

/* Give back the whole pages of [p, p + len) in the file mapping. */
static void
model_drop_pages(const void *p, size_t len)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
	uintptr_t b = ((uintptr_t)p + len) & ~(pg - 1);

	if (b > a)
		madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Rows per work item of the copy, a multiple of 8 so that items never
 * share a packed group; the start-up copy runs on up to 8 threads. */
#define MODEL_COPY_ROWS		256
#define MODEL_COPY_THREADS	8

struct model_copy_item {
	struct mtensor		*t;
	uint8_t			*dst;	/* t's place in weight memory */
	int64_t			 r0, r1;
	int			 pack;
};

struct model_copy {
	struct model_copy_item	*items;
	size_t			 n;
	atomic_size_t		 next;
};

static void *
model_copy_main(void *arg)
{
	struct model_copy *c = arg;
	size_t i;

	while ((i = atomic_fetch_add(&c->next, 1)) < c->n) {
		const struct model_copy_item *it = &c->items[i];
		const struct mtensor *t = it->t;
		size_t off = (size_t)it->r0 * t->row_size;
		size_t len = (size_t)(it->r1 - it->r0) * t->row_size;
		const uint8_t *src = (const uint8_t *)t->data + off;

		if (it->pack)	/* a packed group may outgrow 8 rows */
			quant_pack(t->type, src, it->r1 - it->r0, t->cols,
			    it->dst + quant_pack_size(t->type, it->r0,
			    t->cols));
		else
			memcpy(it->dst + off, src, len);
		model_drop_pages(src, len);
	}
	return NULL;
}

/* Whether bytes of anonymous memory fit in what the kernel reports as
 * available (free memory plus reclaimable cache), keeping an eighth of it
 * spare; 1 when it cannot tell.  Tests point MISTRAL_TEST_MEMINFO at a
 * file of their own. */
static int
model_memory_allows(size_t bytes)
{
	const char *path = getenv("MISTRAL_TEST_MEMINFO");
	FILE *fp = fopen(path != NULL ? path : "/proc/meminfo", "re");
	char line[128];
	unsigned long long kb = 0;
	int found = 0;

	if (fp == NULL)
		return 1;
	while (!found && fgets(line, sizeof line, fp) != NULL)
		found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
	fclose(fp);
	if (!found)
		return 1;
	return bytes / 1024 <= kb - kb / 8;
}

static void
model_copy_weights(struct model *m)
{
	const char *env = getenv("MISTRAL_REPACK");
	struct model_copy c = { NULL, 0, 0 };
	pthread_t th[MODEL_COPY_THREADS];
	struct model_copy_plan *v;
	size_t n, i, total = 0, off = 0;
	long nt = sysconf(_SC_NPROCESSORS_ONLN), started = 0;
	int tied = m->output.data == m->tok_embd.data;
	uint8_t *base;
	void *map;

	if (env != NULL && strcmp(env, "0") == 0)
		return;
	if ((v = model_matrices(m, &n)) == NULL)
		return;
	for (i = 0; i < n; i++) {
		total += v[i].size;
		c.n += (size_t)((v[i].t->rows + MODEL_COPY_ROWS - 1) /
		    MODEL_COPY_ROWS);
	}
	if (total > 0 && !model_memory_allows(total)) {
		m->no_room = 1;
		free(v);
		return;
	}
	map = total == 0 ? MAP_FAILED : mmap(NULL, total + MODEL_HUGE_PAGE,
	    PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED ||
	    (c.items = calloc(c.n, sizeof *c.items)) == NULL) {
		if (map != MAP_FAILED)
			munmap(map, total + MODEL_HUGE_PAGE);
		m->no_room = total > 0;
		free(v);
		return;
	}
	base = (uint8_t *)(((uintptr_t)map + MODEL_HUGE_PAGE - 1) &
	    ~(uintptr_t)(MODEL_HUGE_PAGE - 1));
	madvise(base, total, MADV_HUGEPAGE);
	c.n = 0;
	for (i = 0; i < n; i++) {
		for (int64_t r = 0; r < v[i].t->rows; r += MODEL_COPY_ROWS)
			c.items[c.n++] = (struct model_copy_item){ v[i].t,
			    base + off, r, r + MODEL_COPY_ROWS < v[i].t->rows ?
			    r + MODEL_COPY_ROWS : v[i].t->rows, v[i].pack };
		off += v[i].size;
	}
	if (nt > MODEL_COPY_THREADS)
		nt = MODEL_COPY_THREADS;
	while (started < nt - 1 && pthread_create(&th[started], NULL,
	    model_copy_main, &c) == 0)
		started++;
	model_copy_main(&c);
	while (started > 0)
		pthread_join(th[--started], NULL);
	/* every thread is done with the old pointers */
	for (i = 0, off = 0; i < n; i++) {
		if (v[i].pack) {
			v[i].t->packed = base + off;
			m->packed = 1;
		} else
			v[i].t->data = base + off;
		off += v[i].size;
	}
	if (tied)
		m->output.data = m->tok_embd.data;
	mprotect(base, total, PROT_READ);
	m->wmem = map;
	m->wmem_len = total + MODEL_HUGE_PAGE;
	free(c.items);
	free(v);
}

int
model_load(const char *path, struct model **out, char *err, size_t errlen)
{
	struct model_loader l = { .err = err, .errlen = errlen };
	struct gguf_str name;
	struct model *m;
	uint32_t i;
	int rc;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	quant_init();
	if ((m = calloc(1, sizeof *m)) == NULL ||
	    (m->path = strdup(path)) == NULL) {
		free(m);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	l.m = m;
	if ((rc = gguf_open(path, 1, &m->gguf, err, errlen)) != 0)
		goto fail;
	if ((rc = tokenizer_load(m->gguf, &m->tok, err, errlen)) != 0)
		goto fail;
	if ((rc = model_read_hparams(&l)) != 0)
		goto fail;
	if (gguf_get_str(m->gguf, "general.name", &name) == 0 && name.len > 0)
		m->name = strndup(name.ptr, name.len < 200 ? name.len : 200);
	else {
		const char *base = strrchr(path, '/');

		m->name = strdup(base ? base + 1 : path);
	}
	if (m->name == NULL) {
		rc = model_fail(&l, -ENOMEM, "out of memory");
		goto fail;
	}
	model_known_window(m);

	if ((rc = model_matrix(&l, "token_embd.weight", m->hp.dim,
	    m->hp.n_vocab, 0, &m->tok_embd)) != 0 ||
	    (rc = model_vector(&l, "output_norm.weight", m->hp.dim, 1,
	    &m->output_norm)) != 0 ||
	    (rc = model_matrix(&l, "output.weight", m->hp.dim, m->hp.n_vocab,
	    1, &m->output)) != 0)
		goto fail;
	if (m->output.data == NULL)
		m->output = m->tok_embd;	/* tied embeddings */
	if ((m->layers = calloc(m->hp.n_layers, sizeof *m->layers)) == NULL) {
		rc = model_fail(&l, -ENOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < m->hp.n_layers; i++)
		if ((rc = model_load_layer(&l, (int)i)) != 0)
			goto fail;
	model_count(m);
	model_compute_fingerprint(m);
	model_copy_weights(m);
	*out = m;
	return 0;
fail:
	model_free(m);
	return rc;
}

void
model_free(struct model *m)
{
	uint32_t i;

	if (m == NULL)
		return;
	if (m->layers != NULL) {
		for (i = 0; i < m->hp.n_layers; i++) {
			struct layer *ly = &m->layers[i];

			free(ly->attn_norm);
			free(ly->ffn_norm);
			free(ly->router);
			free(ly->e_gate);
			free(ly->e_up);
			free(ly->e_down);
		}
		free(m->layers);
	}
	free(m->output_norm);
	if (m->wmem != NULL)
		munmap(m->wmem, m->wmem_len);
	tokenizer_free(m->tok);
	gguf_close(m->gguf);
	free(m->name);
	free(m->path);
	free(m);
}

const struct model_hparams *
model_hparams(const struct model *m)
{
	return &m->hp;
}

const struct tokenizer *
model_tokenizer(const struct model *m)
{
	return m->tok;
}

const struct gguf_file *
model_gguf(const struct model *m)
{
	return m->gguf;
}

enum model_swa_source
model_swa_source(const struct model *m)
{
	return m->swa_source;
}

const char *
model_name(const struct model *m)
{
	return m->name;
}

const char *
model_file_type(const struct model *m)
{
	return m->file_type;
}

const char *
model_path(const struct model *m)
{
	return m->path;
}

uint64_t
model_n_params(const struct model *m)
{
	return m->n_params;
}

uint64_t
model_weight_bytes(const struct model *m)
{
	return m->weight_bytes;
}

int
model_weights_mapped(const struct model *m)
{
	return m->wmem == NULL;
}

uint64_t
model_fingerprint(const struct model *m)
{
	return m->fingerprint;
}

uint32_t
model_window(const struct model *m, uint32_t explicit_w, uint32_t cap,
    int *exact)
{
	uint32_t w, trained;

	trained = m->hp.swa_window ? m->hp.swa_window : m->hp.ctx_len;
	w = explicit_w > 0 ? explicit_w : trained;
	if (cap > 0 && w > cap)
		w = cap;
	if (w == 0)
		w = 1;
	if (exact != NULL)
		*exact = w >= trained;
	return w;
}

static void
model_human_bytes(double b, char *buf, size_t cap)
{
	const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int u = 0;

	while (b >= 1024.0 && u < 4) {
		b /= 1024.0;
		u++;
	}
	snprintf(buf, cap, u == 0 ? "%.0f %s" : "%.1f %s", b, unit[u]);
}

int
model_summary(const struct model *m, uint32_t window, uint32_t n_global,
    size_t kv_bytes, char *buf, size_t cap)
{
	const struct model_hparams *hp = &m->hp;
	char wbytes[32], kvb[32], params[32], experts[64], swa[96];
	int exact;
	uint32_t w = model_window(m, window, 0, &exact);
	double p = (double)m->n_params;

	model_human_bytes((double)m->weight_bytes, wbytes, sizeof wbytes);
	model_human_bytes((double)kv_bytes, kvb, sizeof kvb);
	if (p >= 1e9)
		snprintf(params, sizeof params, "%.2fB", p / 1e9);
	else if (p >= 1e6)
		snprintf(params, sizeof params, "%.2fM", p / 1e6);
	else
		snprintf(params, sizeof params, "%.0fK", p / 1e3);
	if (hp->n_experts > 0)
		snprintf(experts, sizeof experts, "%u, %u used per token",
		    hp->n_experts, hp->n_experts_used);
	else
		snprintf(experts, sizeof experts, "none (dense)");
	switch (m->swa_source) {
	case MODEL_SWA_GGUF:
		snprintf(swa, sizeof swa, "sliding window %u (from the GGUF)",
		    hp->swa_window);
		break;
	case MODEL_SWA_KNOWN:
		snprintf(swa, sizeof swa, "sliding window %u (known "
		    "checkpoint)", hp->swa_window);
		break;
	default:
		snprintf(swa, sizeof swa, "full attention");
		break;
	}
	return snprintf(buf, cap,
	    "model:        %s\n"
	    "file:         %s\n"
	    "architecture: llama, %s parameters, %s\n"
	    "shape:        dim %u, %u layers, %u/%u heads (head %u), ffn %u, "
	    "vocab %u\n"
	    "experts:      %s\n"
	    "context:      %u trained, %s\n"
	    "window:       W = %u, %u global tokens, %s mode\n"
	    "memory:       %s of weights (%s), %s of KV cache per "
	    "session\n"
	    "fingerprint:  %016" PRIx64 "\n",
	    m->name, m->path, params, m->file_type, hp->dim, hp->n_layers,
	    hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->ffn_dim,
	    hp->n_vocab, experts, hp->ctx_len, swa, w, n_global,
	    exact ? "exact" : "evicting", wbytes, m->no_room ? "mapped from "
	    "the file: too little memory for a copy" : m->wmem == NULL ?
	    "mapped from the file" : m->packed ? "copied to memory, "
	    "8-row packed" : "copied to memory",
	    kvb, m->fingerprint);
}
