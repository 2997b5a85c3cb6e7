/*
 * forward.c: the batched forward pass over one or many sequences.
 *
 * One fwd_run() takes a batch that mixes several sequences' tokens (decode
 * tokens of many chats, prefill chunks of others) and runs every matrix
 * product over all of the batch's tokens at once; attention runs per
 * sequence over its own rolling window; MoE layers group the batch's tokens
 * by expert so each expert's weights are read once per step.
 *
 * DESIGN
 *
 * 1. A batch is cut into runs: maximal stretches of consecutive tokens of
 *    one sequence.  A sequence may own only one run per batch; the run's
 *    tokens take positions kv->pos, kv->pos + 1, ... in order.
 * 2. Everything that can fail (token ids, runs, scratch sizes) is checked
 *    before any cache is touched, so a refused batch changes nothing.
 * 3. Attention for a query at position t of a run starting at p0 reads:
 *    the stored global slots (positions base .. min(base+G, p0) - 1), the
 *    ring positions max(base+G, t-W+1) .. p0-1 (all still in the ring, see
 *    kvcache.c), and the run's own keys p0 .. t that are inside the window
 *    or global.  Only after every query of the layer has been answered are
 *    the run's keys and values written into the cache, so a chunk may be
 *    longer than W.
 * 4. The run's own keys and values are rounded through the cache's element
 *    type before attention uses them, so a token sees exactly the values a
 *    later token will read back from the cache: results do not depend on
 *    how a sequence is cut into chunks or batched with others.
 * 5. RoPE angles are computed in double from the absolute position, so
 *    positions in the millions keep full float accuracy.
 * 6. Batch invariance.  Every step of a token's computation depends only
 *    on that token's own inputs: products with int8 activations sum each
 *    output in a fixed order (quant-internal.h, DESIGN 6), attention runs
 *    per query over exactly the keys it sees with kernels whose results
 *    do not depend on how the work is split (DESIGN 7 there), and the
 *    rest (norms, RoPE, SwiGLU, residuals, routing) is per token.  With
 *    quantized weights a token's logits are therefore the same bits in
 *    any batch and any chunking; F32/F16/BF16 weights take float products
 *    whose BLAS regime follows the batch size, so they agree within
 *    rounding (tests/t-swa checks both).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pool.h"

struct fwd_seqrun {
	struct kvcache	*kv;
	int32_t		 t0;	/* first token of the run in the piece */
	int32_t		 n;
	int64_t		 p0;	/* position of the first token */
};

/* A block of consecutive queries of one run, attended to together. */
#define FWD_QBLOCK 32

struct fwd_qblock {
	int32_t		 run;
	int32_t		 i0;		/* first token in the piece */
	int32_t		 n;
};

struct fwd_thread {
	float		*scores;	/* (heads per kv head, keys) */
	size_t		 keys_cap;
	void		*mm;		/* quant_matmul scratch */
	size_t		 mm_cap;
};

struct fwd {
	const struct model	*m;
	struct pool		*pool;
	int			 max_tokens;
	int			 n_threads;
	double			*inv_freq;	/* (n_rot / 2) */

	float		*x;		/* (T, dim) residual stream */
	float		*xb;		/* (T, dim) normed input */
	float		*xb2;		/* (T, dim) */
	float		*q;		/* (T, n_heads * head_dim) */
	float		*k;		/* (T, kv_dim) */
	float		*v;		/* (T, kv_dim) */
	uint8_t		*kq;		/* (T, row_bytes of the widest cache
					   type): K rows as stored */
	uint8_t		*vq;
	float		*att;		/* (T, n_heads * head_dim) */
	float		*hb;		/* (T, ffn) */
	float		*hb2;		/* (T, ffn) */
	float		*rope;		/* (T, n_rot / 2, 2): cos, sin */
	int64_t		*tpos;		/* (T) */
	int32_t		*trun;		/* (T) run of each token */
	struct fwd_seqrun *runs;	/* (T) */
	int32_t		 n_runs;
	struct fwd_qblock *qblocks;	/* (T) */
	int32_t		 n_qblocks;

	/* MoE */
	float		*rlogits;	/* (T, n_experts) */
	int32_t		*sel;		/* (T, n_used) expert ids */
	float		*selw;		/* (T, n_used) weights */
	int32_t		*ecount;	/* (n_experts) */
	int32_t		*estart;	/* (n_experts + 1) */
	int32_t		*etok;		/* (T * n_used) tokens by expert */
	float		*ew;		/* (T * n_used) */
	float		*xe;		/* (T, dim) gathered inputs */
	float		*ye;		/* (T, dim) */

	uint8_t		*want;		/* (T) */
	struct fwd_thread *th;		/* n_threads */

	/* int8 activations, one buffer per format (quant.h) */
	uint8_t		*act[3];	/* (T, widest input); Q8_0 is the
					   larger format, so it sizes both */
	int64_t		 act_cols;
};

/* ---- parallel helpers ---------------------------------------------- */

/*
 * Matrix products, possibly several sharing one input (Q, K and V; gate
 * and up), as one pool job: the rows of all the matrices are cut into
 * items of whole 8-row groups, a few per thread, so that a thread the
 * kernel has preempted holds up at most one item.  Items are whole groups
 * of 8 rows, so a packed matrix (quant.h) is never cut inside a group.
 */
#define FWD_MM_MAX 3

struct fwd_mm_job {
	struct fwd		*f;
	int			 n_mats;
	const struct mtensor	*w[FWD_MM_MAX];
	float			*y[FWD_MM_MAX];
	long			 first[FWD_MM_MAX + 1];	/* first item of each */
	long			 per[FWD_MM_MAX];	/* rows per item */
	const struct quant_act	*act[FWD_MM_MAX];	/* or NULL */
	const float		*x;
	int64_t			 n;
};

static void
fwd_matmul_cb(void *arg, long item, int ith)
{
	struct fwd_mm_job *j = arg;
	struct fwd_thread *th = &j->f->th[ith];
	const struct mtensor *w;
	int64_t r0, r1;
	size_t need;
	int m = 0;

	while (item >= j->first[m + 1])
		m++;
	w = j->w[m];
	r0 = (item - j->first[m]) * j->per[m];
	r1 = r0 + j->per[m] < w->rows ? r0 + j->per[m] : w->rows;
	if (j->act[m] != NULL && w->packed != NULL) {
		quant_matmul_packed(w->type, w->packed, w->rows, w->cols,
		    j->act[m], j->y[m], w->rows, r0, r1);
		return;
	}
	if (j->act[m] != NULL) {
		quant_matmul_act(w->type, w->data, w->rows, w->cols, j->act[m],
		    j->y[m], w->rows, r0, r1);
		return;
	}
	need = quant_matmul_scratch(w->type, w->cols, r1 - r0);
	if (need > th->mm_cap) {
		void *p = realloc(th->mm, need);

		if (p != NULL) {
			th->mm = p;
			th->mm_cap = need;
		}
	}
	quant_matmul(w->type, w->data, w->rows, w->cols, j->x, j->n, j->y[m],
	    w->rows, r0, r1, th->mm_cap >= need ? th->mm : NULL);
}

#define FWD_ACT_ITEM 4	/* inputs per item of the quantizing job */

struct fwd_act_job {
	const struct quant_act	*a;
	const float		*x;
	int64_t			 n;
};

static void
fwd_act_cb(void *arg, long item, int ith)
{
	struct fwd_act_job *j = arg;
	int64_t i0 = item * FWD_ACT_ITEM, i1 = i0 + FWD_ACT_ITEM;

	quant_act_fill(j->a, j->x, i0, i1 < j->n ? i1 : j->n);
}

/*
 * y[i] (n, w[i]->rows) = x (n, cols) . w[i]^T for each of n_mats.  Inputs
 * that go to int8 are quantized once here, per format, for all the
 * matrices and threads (a batch of more than one input in parallel).
 */
static void
fwd_matmul_n(struct fwd *f, int n_mats, const struct mtensor *const *w,
    const float *x, int64_t n, float *const *y)
{
	struct quant_act act[3];
	struct fwd_mm_job j;
	long items, target = 4L * f->n_threads;
	int i, fmt, have = 0;

	for (i = 0; i < n_mats; i++) {
		fmt = quant_act_fmt(w[i]->type, w[i]->cols);
		j.act[i] = NULL;
		if (fmt == QUANT_ACT_NONE || w[i]->cols > f->act_cols)
			continue;
		if (!(have & 1 << fmt)) {
			struct fwd_act_job aj = { &act[fmt], x, n };

			quant_act_bind(&act[fmt], f->act[fmt], fmt, w[i]->cols,
			    n);
			if (n > 1)
				pool_run(f->pool, fwd_act_cb, &aj, (long)((n +
				    FWD_ACT_ITEM - 1) / FWD_ACT_ITEM));
			else
				quant_act_fill(&act[fmt], x, 0, n);
			have |= 1 << fmt;
		}
		j.act[i] = &act[fmt];
	}
	j.f = f;
	j.n_mats = n_mats;
	j.x = x;
	j.n = n;
	j.first[0] = 0;
	for (i = 0; i < n_mats; i++) {
		int64_t rows = w[i]->rows;

		items = rows / 16 < target ? rows / 16 : target;
		if (items < 1)
			items = 1;
		j.per[i] = ((rows + items - 1) / items + 7) & ~7L;
		j.w[i] = w[i];
		j.y[i] = y[i];
		j.first[i + 1] = j.first[i] + (rows + j.per[i] - 1) / j.per[i];
	}
	pool_run(f->pool, fwd_matmul_cb, &j, j.first[n_mats]);
}

static void
fwd_matmul(struct fwd *f, const struct mtensor *w, const float *x, int64_t n,
    float *y)
{
	fwd_matmul_n(f, 1, &w, x, n, &y);
}

static void
fwd_rmsnorm(float *out, const float *x, const float *w, int64_t dim,
    float eps)
{
	double ss = 0.0;
	float scale;
	int64_t i;

	for (i = 0; i < dim; i++)
		ss += (double)x[i] * x[i];
	scale = (float)(1.0 / sqrt(ss / (double)dim + eps));
	for (i = 0; i < dim; i++)
		out[i] = x[i] * scale * w[i];
}

#define FWD_SWIGLU_ITEM 4096	/* elements per item */

struct fwd_swiglu_job {
	float	*a;		/* gate, becomes silu(gate) * up */
	const float *b;		/* up */
	long	 n;
};

static void
fwd_swiglu_cb(void *arg, long item, int ith)
{
	struct fwd_swiglu_job *j = arg;
	long lo = item * FWD_SWIGLU_ITEM, hi = lo + FWD_SWIGLU_ITEM, i;

	if (hi > j->n)
		hi = j->n;
	for (i = lo; i < hi; i++) {
		float g = j->a[i];

		j->a[i] = g / (1.0f + expf(-g)) * j->b[i];
	}
}

static void
fwd_swiglu(struct fwd *f, float *gate, const float *up, long n)
{
	struct fwd_swiglu_job j = { gate, up, n };

	pool_run(f->pool, fwd_swiglu_cb, &j,
	    (n + FWD_SWIGLU_ITEM - 1) / FWD_SWIGLU_ITEM);
}

/* ---- RoPE ----------------------------------------------------------- */

static void
fwd_rope_tables(struct fwd *f, int32_t n)
{
	uint32_t half = f->m->hp.n_rot / 2, i;
	int32_t t;

	for (t = 0; t < n; t++) {
		float *cs = f->rope + (size_t)t * half * 2;

		for (i = 0; i < half; i++) {
			double theta = (double)f->tpos[t] * f->inv_freq[i];

			theta = fmod(theta, 2.0 * M_PI);
			cs[2 * i] = (float)cos(theta);
			cs[2 * i + 1] = (float)sin(theta);
		}
	}
}

/* Rotate the adjacent pairs (2i, 2i+1) of each head (llama.cpp's "normal"
 * RoPE, as used by llama-architecture GGUFs). */
static void
fwd_rope_apply(const struct fwd *f, float *vecs, int n_heads, int32_t t)
{
	const struct model_hparams *hp = &f->m->hp;
	const float *cs = f->rope + (size_t)t * (hp->n_rot / 2) * 2;
	uint32_t i;
	int h;

	for (h = 0; h < n_heads; h++) {
		float *v = vecs + (size_t)h * hp->head_dim;

		for (i = 0; i < hp->n_rot / 2; i++) {
			float c = cs[2 * i], s = cs[2 * i + 1];
			float a = v[2 * i], b = v[2 * i + 1];

			v[2 * i] = a * c - b * s;
			v[2 * i + 1] = a * s + b * c;
		}
	}
}

/* ---- attention ------------------------------------------------------ */

struct fwd_att_job {
	struct fwd	*f;
	uint32_t	 layer;
};

/*
 * Where a query's keys and values are: up to FWD_SEG_MAX stretches of
 * rows in ascending position order, each in the cache (read in place, in
 * its element type) or in the run's own rounded rows (f32).
 */
#define FWD_SEG_MAX 6

struct fwd_seg {
	const uint8_t	*k, *v;
	size_t		 stride;	/* bytes from one row to the next */
	int		 kt;		/* QUANT_KV_* */
	int64_t		 n;
};

static int
fwd_seg_type(enum kv_type t)
{
	return t == KV_TYPE_F16 ? QUANT_KV_F16 : t == KV_TYPE_Q8_0 ?
	    QUANT_KV_Q8_0 : QUANT_KV_F32;
}

/* Append positions [a, b) of run r, kv head h, as stretches of rows that
 * are contiguous in the cache or in the run's own rows. */
static int
fwd_seg_range(const struct fwd *f, const struct fwd_seqrun *r, uint32_t layer,
    uint32_t h, int64_t a, int64_t b, struct fwd_seg *seg, int ns)
{
	const struct kvcache *kv = r->kv;
	uint32_t hd = f->m->hp.head_dim;
	int64_t gend = kv->base + kv->p.n_global, end;
	size_t hoff;

	while (a < b && ns < FWD_SEG_MAX) {
		if (a >= r->p0) {
			size_t row = (size_t)(r->t0 + (a - r->p0)) * kv->kv_dim +
			    (size_t)h * hd;

			seg[ns++] = (struct fwd_seg){ (const uint8_t *)(f->k +
			    row), (const uint8_t *)(f->v + row), kv->kv_dim *
			    sizeof(float), QUANT_KV_F32, b - a };
			break;
		}
		end = b < r->p0 ? b : r->p0;
		if (a < gend)
			end = end < gend ? end : gend;
		else if (end > a + (int64_t)kv->p.window - a %
		    (int64_t)kv->p.window)
			end = a + (int64_t)kv->p.window - a %
			    (int64_t)kv->p.window;	/* the ring wraps */
		hoff = quant_row_size(kv_type_ggml(kv->p.type),
		    (int64_t)h * hd);
		seg[ns++] = (struct fwd_seg){ kvcache_k_row(kv, layer,
		    kvcache_slot_of(kv, a)) + hoff, kvcache_v_row(kv, layer,
		    kvcache_slot_of(kv, a)) + hoff, kv->row_bytes,
		    fwd_seg_type(kv->p.type), end - a };
		a = end;
	}
	return ns;
}

/*
 * Attention for a block of consecutive queries of one run and the query
 * heads that share kv head h.  Each query, with all the heads sharing h
 * at once, attends to exactly the keys it sees, in position order: the
 * globals at or before it, then the keys of its window [t-W+1, t], read
 * in place from the cache and the run's own rows.  Scores, softmax and
 * the weighted sum of values run over that list with the kernels of
 * quant.h, so a query's result is the same bits whether it is decoded
 * alone, batched with other sequences or prefilled in a chunk of any
 * size (DESIGN 6).
 */
static void
fwd_att_block(struct fwd *f, uint32_t layer, const struct fwd_qblock *b,
    uint32_t h, struct fwd_thread *th)
{
	const struct model_hparams *hp = &f->m->hp;
	const struct fwd_seqrun *r = &f->runs[b->run];
	const struct kvcache *kv = r->kv;
	uint32_t rep = hp->n_heads / hp->n_kv_heads, hd = hp->head_dim, g;
	const float scale = 1.0f / sqrtf((float)hd);
	int64_t gend = kv->base + kv->p.n_global;
	int32_t qi;

	for (qi = 0; qi < b->n; qi++) {
		int64_t t = f->tpos[b->i0 + qi], wlo, nv = 0, off;
		size_t qoff = (size_t)(b->i0 + qi) * hp->n_heads * hd +
		    (size_t)h * rep * hd;
		const float *q = f->q + qoff;
		float *out = f->att + qoff, *sc = th->scores;
		struct fwd_seg seg[FWD_SEG_MAX];
		int ns, i;

		wlo = t - (int64_t)kv->p.window + 1;
		ns = fwd_seg_range(f, r, layer, h, kv->base, gend < t + 1 ?
		    gend : t + 1, seg, 0);
		ns = fwd_seg_range(f, r, layer, h, wlo > gend ? wlo : gend,
		    t + 1, seg, ns);
		for (i = 0; i < ns; i++)
			nv += seg[i].n;
		for (i = 0, off = 0; i < ns; off += seg[i++].n)
			vec_att_scores(q, (int)rep, seg[i].k, seg[i].stride,
			    seg[i].kt, seg[i].n, (int)hd, sc + off, nv);
		for (g = 0; g < rep; g++)
			vec_softmax(sc + (size_t)g * nv, nv, scale);
		memset(out, 0, (size_t)rep * hd * sizeof *out);
		for (i = 0, off = 0; i < ns; off += seg[i++].n)
			vec_att_pv(sc + off, (int)rep, nv, seg[i].v,
			    seg[i].stride, seg[i].kt, seg[i].n, (int)hd, out);
	}
}

/* One item: one block of queries and the query heads sharing kv head
 * (item % nkv). */
static void
fwd_att_cb(void *arg, long item, int ith)
{
	struct fwd_att_job *j = arg;
	long nkv = (long)j->f->m->hp.n_kv_heads;

	fwd_att_block(j->f, j->layer, &j->f->qblocks[item / nkv],
	    (uint32_t)(item % nkv), &j->f->th[ith]);
}

/* Store the run's K/V (already rounded into kq/vq) into the caches. */
static void
fwd_store_kv(struct fwd *f, uint32_t layer)
{
	int32_t r, i;

	for (r = 0; r < f->n_runs; r++) {
		const struct fwd_seqrun *sr = &f->runs[r];
		struct kvcache *kv = sr->kv;
		int64_t last = sr->p0 + sr->n - 1;
		int64_t gend = kv->base + kv->p.n_global;

		for (i = 0; i < sr->n; i++) {
			int64_t p = sr->p0 + i;
			size_t slot;

			if (p >= gend && p <= last - (int64_t)kv->p.window)
				continue;	/* overwritten within this run */
			slot = kvcache_slot_of(kv, p);
			memcpy(kvcache_k_row(kv, layer, slot),
			    f->kq + (size_t)(sr->t0 + i) * kv->row_bytes,
			    kv->row_bytes);
			memcpy(kvcache_v_row(kv, layer, slot),
			    f->vq + (size_t)(sr->t0 + i) * kv->row_bytes,
			    kv->row_bytes);
		}
	}
}

/* Round each token's K and V through its cache's element type. */
static void
fwd_round_kv(struct fwd *f, int32_t n)
{
	int32_t t;

	for (t = 0; t < n; t++) {
		const struct kvcache *kv = f->runs[f->trun[t]].kv;
		enum ggml_type gt = kv_type_ggml(kv->p.type);
		uint8_t *kq = f->kq + (size_t)t * kv->row_bytes;
		uint8_t *vq = f->vq + (size_t)t * kv->row_bytes;
		float *k = f->k + (size_t)t * kv->kv_dim;
		float *v = f->v + (size_t)t * kv->kv_dim;

		quant_quantize_row(gt, k, kq, kv->kv_dim);
		quant_quantize_row(gt, v, vq, kv->kv_dim);
		quant_dequantize_row(gt, kq, k, kv->kv_dim);
		quant_dequantize_row(gt, vq, v, kv->kv_dim);
	}
}

/* ---- feed-forward --------------------------------------------------- */

static void
fwd_ffn_dense(struct fwd *f, const struct layer *ly, int32_t n)
{
	const struct model_hparams *hp = &f->m->hp;
	int64_t i;

	const struct mtensor *w[2] = { &ly->w_gate, &ly->w_up };
	float *y[2] = { f->hb, f->hb2 };

	fwd_matmul_n(f, 2, w, f->xb, n, y);
	fwd_swiglu(f, f->hb, f->hb2, (long)n * hp->ffn_dim);
	fwd_matmul(f, &ly->w_down, f->hb, n, f->xb2);
	for (i = 0; i < (int64_t)n * hp->dim; i++)
		f->x[i] += f->xb2[i];
}

/* Mixtral routing: softmax over the router logits, top k, weights
 * renormalised over the chosen k. */
static void
fwd_route(struct fwd *f, const struct layer *ly, int32_t n)
{
	const struct model_hparams *hp = &f->m->hp;
	uint32_t E = hp->n_experts, K = hp->n_experts_used, e, k, kk;
	int32_t t;

	for (t = 0; t < n; t++) {
		float *lg = f->rlogits + (size_t)t * E, mx = -INFINITY, sum;
		int32_t *sel = f->sel + (size_t)t * K;
		float *w = f->selw + (size_t)t * K;

		for (e = 0; e < E; e++) {
			lg[e] = vec_dot_f32(ly->router + (size_t)e * hp->dim,
			    f->xb + (size_t)t * hp->dim, hp->dim);
			if (lg[e] > mx)
				mx = lg[e];
		}
		for (k = 0; k < K; k++) {
			int32_t best = -1;

			for (e = 0; e < E; e++) {
				for (kk = 0; kk < k; kk++)
					if (sel[kk] == (int32_t)e)
						break;
				if (kk < k)
					continue;
				if (best < 0 || lg[e] > lg[best])
					best = (int32_t)e;
			}
			sel[k] = best;
		}
		sum = 0.0f;
		for (k = 0; k < K; k++) {
			w[k] = expf(lg[sel[k]] - mx);
			sum += w[k];
		}
		for (k = 0; k < K; k++)
			w[k] /= sum;
	}
}

static void
fwd_ffn_moe(struct fwd *f, const struct layer *ly, int32_t n)
{
	const struct model_hparams *hp = &f->m->hp;
	uint32_t E = hp->n_experts, K = hp->n_experts_used, e, k;
	int32_t t, i, c;

	fwd_route(f, ly, n);
	memset(f->ecount, 0, E * sizeof *f->ecount);
	for (t = 0; t < n; t++)
		for (k = 0; k < K; k++)
			f->ecount[f->sel[(size_t)t * K + k]]++;
	f->estart[0] = 0;
	for (e = 0; e < E; e++)
		f->estart[e + 1] = f->estart[e] + f->ecount[e];
	memset(f->ecount, 0, E * sizeof *f->ecount);
	for (t = 0; t < n; t++)
		for (k = 0; k < K; k++) {
			e = (uint32_t)f->sel[(size_t)t * K + k];
			i = f->estart[e] + f->ecount[e]++;
			f->etok[i] = t;
			f->ew[i] = f->selw[(size_t)t * K + k];
		}
	/* each expert once, over all the tokens that chose it */
	for (e = 0; e < E; e++) {
		c = f->ecount[e];
		if (c == 0)
			continue;
		for (i = 0; i < c; i++)
			memcpy(f->xe + (size_t)i * hp->dim, f->xb +
			    (size_t)f->etok[f->estart[e] + i] * hp->dim,
			    hp->dim * sizeof(float));
		const struct mtensor *w[2] = { &ly->e_gate[e], &ly->e_up[e] };
		float *y[2] = { f->hb, f->hb2 };

		fwd_matmul_n(f, 2, w, f->xe, c, y);
		fwd_swiglu(f, f->hb, f->hb2, (long)c * hp->ffn_dim);
		fwd_matmul(f, &ly->e_down[e], f->hb, c, f->ye);
		for (i = 0; i < c; i++)
			vec_axpy_f32(f->x + (size_t)f->etok[f->estart[e] + i] *
			    hp->dim, f->ew[f->estart[e] + i], f->ye +
			    (size_t)i * hp->dim, hp->dim);
	}
}

/* ---- the pass -------------------------------------------------------- */

static void
fwd_layer(struct fwd *f, uint32_t l, int32_t n)
{
	const struct model_hparams *hp = &f->m->hp;
	const struct layer *ly = &f->m->layers[l];
	struct fwd_att_job aj;
	int32_t t;
	int64_t i;

	for (t = 0; t < n; t++)
		fwd_rmsnorm(f->xb + (size_t)t * hp->dim,
		    f->x + (size_t)t * hp->dim, ly->attn_norm, hp->dim,
		    hp->rms_eps);
	{
		const struct mtensor *w[3] = { &ly->wq, &ly->wk, &ly->wv };
		float *y[3] = { f->q, f->k, f->v };

		fwd_matmul_n(f, 3, w, f->xb, n, y);
	}
	for (t = 0; t < n; t++) {
		fwd_rope_apply(f, f->q + (size_t)t * hp->n_heads * hp->head_dim,
		    (int)hp->n_heads, t);
		fwd_rope_apply(f, f->k + (size_t)t * hp->n_kv_heads *
		    hp->head_dim, (int)hp->n_kv_heads, t);
	}
	fwd_round_kv(f, n);

	aj.f = f;
	aj.layer = l;
	pool_run(f->pool, fwd_att_cb, &aj, (long)f->n_qblocks *
	    hp->n_kv_heads);
	fwd_store_kv(f, l);

	fwd_matmul(f, &ly->wo, f->att, n, f->xb2);
	for (i = 0; i < (int64_t)n * hp->dim; i++)
		f->x[i] += f->xb2[i];

	for (t = 0; t < n; t++)
		fwd_rmsnorm(f->xb + (size_t)t * hp->dim,
		    f->x + (size_t)t * hp->dim, ly->ffn_norm, hp->dim,
		    hp->rms_eps);
	if (hp->n_experts == 0)
		fwd_ffn_dense(f, ly, n);
	else
		fwd_ffn_moe(f, ly, n);
}

/* Grow every thread's attention scores to hold `keys` keys. */
static int
fwd_reserve_keys(struct fwd *f, size_t keys)
{
	size_t rep = f->m->hp.n_heads / f->m->hp.n_kv_heads;
	int i;

	for (i = 0; i < f->n_threads; i++) {
		struct fwd_thread *th = &f->th[i];
		float *a;

		if (th->keys_cap >= keys)
			continue;
		if ((a = realloc(th->scores, keys * rep * sizeof *a)) == NULL)
			return -ENOMEM;
		th->scores = a;
		th->keys_cap = keys;
	}
	return 0;
}

/*
 * Cut tokens [0, n) of a piece into runs and check them; fills f->runs,
 * f->trun and f->tpos.  Changes no cache.
 */
static int
fwd_plan(struct fwd *f, const int32_t *tokens, struct kvcache *const *seqs,
    int32_t n)
{
	const struct model_hparams *hp = &f->m->hp;
	size_t need = 0, keys;
	int32_t i, r, q;

	f->n_runs = 0;
	for (i = 0; i < n; i++) {
		if (tokens[i] < 0 || (uint32_t)tokens[i] >= hp->n_vocab ||
		    seqs[i] == NULL || seqs[i]->model != f->m)
			return -EINVAL;
		if (i == 0 || seqs[i] != seqs[i - 1]) {
			for (q = 0; q < f->n_runs; q++)
				if (f->runs[q].kv == seqs[i])
					return -EINVAL;
			r = f->n_runs++;
			f->runs[r].kv = seqs[i];
			f->runs[r].t0 = i;
			f->runs[r].n = 0;
			f->runs[r].p0 = seqs[i]->pos;
		}
		r = f->n_runs - 1;
		f->trun[i] = r;
		f->tpos[i] = f->runs[r].p0 + f->runs[r].n++;
	}
	f->n_qblocks = 0;
	for (r = 0; r < f->n_runs; r++) {
		const struct kv_params *p = &f->runs[r].kv->p;

		keys = (size_t)p->window + p->n_global + FWD_QBLOCK;
		if (keys > need)
			need = keys;
		for (i = 0; i < f->runs[r].n; i += FWD_QBLOCK) {
			struct fwd_qblock *b = &f->qblocks[f->n_qblocks++];

			b->run = r;
			b->i0 = f->runs[r].t0 + i;
			b->n = f->runs[r].n - i < FWD_QBLOCK ?
			    f->runs[r].n - i : FWD_QBLOCK;
		}
	}
	return fwd_reserve_keys(f, need);
}

static int
fwd_piece(struct fwd *f, const int32_t *tokens, struct kvcache *const *seqs,
    const uint8_t *want, int32_t n, int planned, float *logits)
{
	const struct model_hparams *hp = &f->m->hp;
	int32_t t, r, rows;
	uint32_t l;
	int rc;

	if (!planned && (rc = fwd_plan(f, tokens, seqs, n)) != 0)
		return rc;
	fwd_rope_tables(f, n);
	for (t = 0; t < n; t++)
		mtensor_row(&f->m->tok_embd, tokens[t], f->x +
		    (size_t)t * hp->dim);
	for (l = 0; l < hp->n_layers; l++)
		fwd_layer(f, l, n);
	for (r = 0; r < f->n_runs; r++)
		f->runs[r].kv->pos += f->runs[r].n;

	rows = 0;
	for (t = 0; t < n; t++) {
		if (!want[t])
			continue;
		fwd_rmsnorm(f->xb + (size_t)rows * hp->dim,
		    f->x + (size_t)t * hp->dim, f->m->output_norm, hp->dim,
		    hp->rms_eps);
		rows++;
	}
	if (rows > 0 && logits != NULL)
		fwd_matmul(f, &f->m->output, f->xb, rows, logits);
	return rows;
}

int
fwd_run(struct fwd *f, const struct fwd_batch *b, float *logits)
{
	int32_t off, n, i, total = 0;
	const uint8_t *want;
	uint8_t *own = NULL;
	int rc;

	if (b->n <= 0)
		return b->n == 0 ? 0 : -EINVAL;
	want = b->want;
	if (want == NULL) {
		/* the last token of each sequence's run; f->want serves the
		 * usual batch, only an oversized one allocates */
		if (b->n <= f->max_tokens)
			own = f->want;
		else if ((own = malloc(b->n)) == NULL)
			return -ENOMEM;
		for (i = 0; i < b->n; i++)
			own[i] = i + 1 == b->n || b->seqs[i + 1] != b->seqs[i];
		want = own;
	}
	/* Check the whole batch before the first piece touches a cache; a
	 * batch of one piece keeps its plan for the pass itself. */
	for (off = 0; off < b->n; off += n) {
		n = b->n - off < f->max_tokens ? b->n - off : f->max_tokens;
		if ((rc = fwd_plan(f, b->tokens + off, b->seqs + off, n)) != 0)
			goto out;
	}
	for (off = 0; off < b->n; off += n) {
		n = b->n - off < f->max_tokens ? b->n - off : f->max_tokens;
		rc = fwd_piece(f, b->tokens + off, b->seqs + off, want + off, n,
		    b->n <= f->max_tokens, logits ? logits + (size_t)total *
		    f->m->hp.n_vocab : NULL);
		if (rc < 0)
			goto out;
		total += rc;
	}
	rc = total;
out:
	if (own != f->want)
		free(own);
	return rc;
}

int
fwd_prefill(struct fwd *f, struct kvcache *kv, const int32_t *tokens,
    int64_t n, int chunk, int all, float *logits)
{
	struct kvcache **seqs = NULL;
	uint8_t *want = NULL;
	struct fwd_batch b;
	int64_t off, i;
	int32_t c;
	int rc = 0;

	if (chunk <= 0 || chunk > f->max_tokens)
		chunk = f->max_tokens;
	if ((seqs = malloc(chunk * sizeof *seqs)) == NULL ||
	    (want = malloc(chunk)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < chunk; i++)
		seqs[i] = kv;
	for (off = 0; off < n; off += c) {
		c = (int32_t)(n - off < chunk ? n - off : chunk);
		for (i = 0; i < c; i++)
			want[i] = all || off + i == n - 1;
		b.n = c;
		b.tokens = tokens + off;
		b.seqs = seqs;
		b.want = want;
		rc = fwd_run(f, &b, logits == NULL ? NULL : all ? logits +
		    (size_t)off * f->m->hp.n_vocab : logits);
		if (rc < 0)
			goto out;
	}
	rc = 0;
out:
	free(seqs);
	free(want);
	return rc;
}

/* ---- creation -------------------------------------------------------- */

int
fwd_create(const struct model *m, int max_tokens, int n_threads,
    struct fwd **out)
{
	const struct model_hparams *hp = model_hparams(m);
	size_t T, qd, kvd, E, K, kvrow;
	struct fwd *f;
	uint32_t i;
	int rc;

	*out = NULL;
	if (max_tokens < 1 || max_tokens > 65536 || n_threads < 1)
		return -EINVAL;
	if ((f = calloc(1, sizeof *f)) == NULL)
		return -ENOMEM;
	f->m = m;
	f->max_tokens = max_tokens;
	f->n_threads = n_threads;
	T = (size_t)max_tokens;
	qd = (size_t)hp->n_heads * hp->head_dim;
	kvd = (size_t)hp->n_kv_heads * hp->head_dim;
	E = hp->n_experts ? hp->n_experts : 1;
	K = hp->n_experts_used ? hp->n_experts_used : 1;
	kvrow = kvd * sizeof(float);	/* f32 is the widest cache type */
	if ((rc = pool_create(n_threads, &f->pool)) != 0) {
		free(f);
		return rc;
	}
#define FWD_ALLOC(p, count) \
	if (((p) = calloc((count), sizeof *(p))) == NULL) goto nomem
	FWD_ALLOC(f->inv_freq, hp->n_rot / 2 + 1);
	FWD_ALLOC(f->x, T * hp->dim);
	FWD_ALLOC(f->xb, T * hp->dim);
	FWD_ALLOC(f->xb2, T * hp->dim);
	FWD_ALLOC(f->q, T * qd);
	FWD_ALLOC(f->k, T * kvd);
	FWD_ALLOC(f->v, T * kvd);
	FWD_ALLOC(f->kq, T * kvrow);
	FWD_ALLOC(f->vq, T * kvrow);
	FWD_ALLOC(f->att, T * qd);
	FWD_ALLOC(f->hb, T * hp->ffn_dim);
	FWD_ALLOC(f->hb2, T * hp->ffn_dim);
	FWD_ALLOC(f->rope, T * (hp->n_rot / 2 + 1) * 2);
	FWD_ALLOC(f->tpos, T);
	FWD_ALLOC(f->trun, T);
	FWD_ALLOC(f->runs, T);
	FWD_ALLOC(f->qblocks, T);
	FWD_ALLOC(f->rlogits, T * E);
	FWD_ALLOC(f->sel, T * K);
	FWD_ALLOC(f->selw, T * K);
	FWD_ALLOC(f->ecount, E);
	FWD_ALLOC(f->estart, E + 1);
	FWD_ALLOC(f->etok, T * K);
	FWD_ALLOC(f->ew, T * K);
	FWD_ALLOC(f->xe, T * hp->dim);
	FWD_ALLOC(f->ye, T * hp->dim);
	FWD_ALLOC(f->want, T);
	FWD_ALLOC(f->th, (size_t)n_threads);
	/* every product's input is dim, ffn or the attention output wide */
	f->act_cols = hp->dim > hp->ffn_dim ? hp->dim : hp->ffn_dim;
	if ((int64_t)qd > f->act_cols)
		f->act_cols = (int64_t)qd;
	for (i = QUANT_ACT_Q8_0; i <= QUANT_ACT_Q8_K; i++)
		FWD_ALLOC(f->act[i], quant_act_bytes(QUANT_ACT_Q8_0,
		    f->act_cols, (int64_t)T));
#undef FWD_ALLOC
	for (i = 0; i < hp->n_rot / 2; i++)
		f->inv_freq[i] = pow((double)hp->rope_base,
		    -2.0 * i / (double)hp->n_rot);
	*out = f;
	return 0;
nomem:
	fwd_free(f);
	return -ENOMEM;
}

void
fwd_free(struct fwd *f)
{
	int i;

	if (f == NULL)
		return;
	pool_free(f->pool);
	if (f->th != NULL)
		for (i = 0; i < f->n_threads; i++) {
			free(f->th[i].scores);
			free(f->th[i].mm);
		}
	free(f->th);
	free(f->act[QUANT_ACT_Q8_0]);
	free(f->act[QUANT_ACT_Q8_K]);
	free(f->inv_freq);
	free(f->x);
	free(f->xb);
	free(f->xb2);
	free(f->q);
	free(f->k);
	free(f->v);
	free(f->kq);
	free(f->vq);
	free(f->att);
	free(f->hb);
	free(f->hb2);
	free(f->rope);
	free(f->tpos);
	free(f->trun);
	free(f->runs);
	free(f->qblocks);
	free(f->rlogits);
	free(f->sel);
	free(f->selw);
	free(f->ecount);
	free(f->estart);
	free(f->etok);
	free(f->ew);
	free(f->xe);
	free(f->ye);
	free(f->want);
	free(f);
}

int
fwd_max_tokens(const struct fwd *f)
{
	return f->max_tokens;
}
