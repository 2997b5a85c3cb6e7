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
	struct fwd_mm_job *mm_job;

	/* int8 activations, one buffer per format (quant.h) */
	uint8_t		*act[3];	/* (T, widest input); Q8_0 is the
					   larger format, so it sizes both */
	int64_t		 act_cols;
};

/* ---- parallel helpers ---------------------------------------------- */

/*
 * Matrix products as pool jobs.  A job holds one or more products (Q, K
 * and V of a layer; the gate and up products of an FFN, or of every
 * expert a step chose), and the rows of all of them are cut into items
 * that shrink as the job goes on: each takes a 2 * threads'th of the rows
 * left, down to a small floor, so the threads start on large pieces and
 * end within a small one of each other (a thread that started late or
 * was preempted holds the others up by at most that).  Items are whole
 * groups of 8 rows, so a packed matrix (quant.h) is never cut inside a
 * group.
 *
 * A product with `up` set is an FFN's gate: its item computes the same
 * rows of x.w (into y) and x.up (into y2), then y = silu(y) * y2 for those
 * rows (vec_swiglu(), whose result for an element does not depend on
 * where the item starts), so SwiGLU needs no job of its own.
 */
#define FWD_MM_MAX	16	/* products per job */
#define FWD_MM_ITEMS	256	/* at most, per job */

struct fwd_mm {
	const struct mtensor	*w;
	const struct mtensor	*up;	/* or NULL */
	const float		*x;	/* (n, w->cols) */
	int64_t			 n;
	float			*y;	/* (n, w->rows) */
	float			*y2;	/* (n, w->rows) if up */
	const struct quant_act	*act[2];	/* int8 inputs of w and up,
						   or NULL: float product */
};

struct fwd_mm_item {
	int32_t			 mm;		/* product */
	int32_t			 r0, r1;	/* its rows */
};

struct fwd_mm_job {
	struct fwd		*f;
	const struct fwd_mm	*mm;
	struct fwd_mm_item	 item[FWD_MM_ITEMS + FWD_MM_MAX];
};

/* Rows [r0, r1) of the product of w and input x or act into y. */
static void
fwd_mm_rows(struct fwd_thread *th, const struct mtensor *w, const float *x,
    int64_t n, const struct quant_act *act, float *y, int64_t r0, int64_t r1)
{
	size_t need;

	if (act != NULL && w->packed != NULL) {
		quant_matmul_packed(w->type, w->packed, w->rows, w->cols, act,
		    y, w->rows, r0, r1);
		return;
	}
	if (act != NULL) {
		quant_matmul_act(w->type, w->data, w->rows, w->cols, act, y,
		    w->rows, r0, r1);
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
	quant_matmul(w->type, w->data, w->rows, w->cols, x, n, y, w->rows, r0,
	    r1, th->mm_cap >= need ? th->mm : NULL);
}

static void
fwd_matmul_cb(void *arg, long item, int ith)
{
	struct fwd_mm_job *j = arg;
	struct fwd_thread *th = &j->f->th[ith];
	const struct fwd_mm *p = &j->mm[j->item[item].mm];
	int64_t r0 = j->item[item].r0, r1 = j->item[item].r1;
	int64_t rows = p->w->rows, c;

	fwd_mm_rows(th, p->w, p->x, p->n, p->act[0], p->y, r0, r1);
	if (p->up == NULL)
		return;
	fwd_mm_rows(th, p->up, p->x, p->n, p->act[1], p->y2, r0, r1);
	for (c = 0; c < p->n; c++)
		vec_swiglu(p->y + c * rows + r0, p->y2 + c * rows + r0,
		    r1 - r0);
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
 * Quantize the n inputs x (n, cols) to int8 format fmt into a, in f's
 * buffer for fmt (a batch of more than a few inputs in parallel).
 */
static void
fwd_quantize(struct fwd *f, struct quant_act *a, int fmt, const float *x,
    int64_t cols, int64_t n)
{
	struct fwd_act_job aj = { a, x, n };

	quant_act_bind(a, f->act[fmt], fmt, cols, n);
	if (n > 2)
		pool_run(f->pool, fwd_act_cb, &aj, (long)((n + FWD_ACT_ITEM -
		    1) / FWD_ACT_ITEM));
	else
		quant_act_fill(a, x, 0, n);
}

/* The format w takes its input in, or QUANT_ACT_NONE for a float product
 * (a type without int8 kernels, or an input wider than the buffers). */
static int
fwd_act_fmt(const struct fwd *f, const struct mtensor *w)
{
	if (w->cols > f->act_cols)
		return QUANT_ACT_NONE;
	return quant_act_fmt(w->type, w->cols);
}

/*
 * Run n_mm products as one pool job.  A product whose act[] is NULL but
 * whose matrix takes int8 inputs has its x quantized here, once per
 * format; products of one job that quantize here share that x.  (The MoE
 * path quantizes its gathered inputs itself and passes views.)
 */
static void
fwd_products(struct fwd *f, struct fwd_mm *mm, int n_mm)
{
	struct quant_act act[3];
	struct fwd_mm_job *j = f->mm_job;
	int64_t total = 0, left, floor, r, n;
	long items = 0;
	int i, k, fmt, have = 0;

	for (i = 0; i < n_mm; i++)
		for (k = 0; k < 2; k++) {
			const struct mtensor *w = k == 0 ? mm[i].w : mm[i].up;

			if (w == NULL || mm[i].act[k] != NULL ||
			    (fmt = fwd_act_fmt(f, w)) == QUANT_ACT_NONE)
				continue;
			if (!(have & 1 << fmt)) {
				fwd_quantize(f, &act[fmt], fmt, mm[i].x,
				    w->cols, mm[i].n);
				have |= 1 << fmt;
			}
			mm[i].act[k] = &act[fmt];
		}
	j->f = f;
	j->mm = mm;
	for (i = 0; i < n_mm; i++)
		total += mm[i].w->rows;
	/* the floor keeps the item count within FWD_MM_ITEMS: the shrinking
	 * items number about 2 * threads * ln(rows / floor), the floor-sized
	 * ones at most 2 * threads more */
	floor = (total / (FWD_MM_ITEMS / 2) + 7) & ~(int64_t)7;
	if (floor < 32)
		floor = 32;
	left = total;
	for (i = 0; i < n_mm; i++)
		for (r = 0; r < mm[i].w->rows; r += n, left -= n) {
			n = (left / (2 * f->n_threads) + 7) & ~(int64_t)7;
			if (n < floor)
				n = floor;
			if (items >= FWD_MM_ITEMS)	/* the bound above */
				n = mm[i].w->rows - r;	/* holds; a guard */
			if (n > mm[i].w->rows - r)
				n = mm[i].w->rows - r;
			j->item[items++] = (struct fwd_mm_item){ i, (int32_t)r,
			    (int32_t)(r + n) };
		}
	pool_run(f->pool, fwd_matmul_cb, j, items);
}

/* y (n, w->rows) = x (n, w->cols) . w^T */
static void
fwd_matmul(struct fwd *f, const struct mtensor *w, const float *x, int64_t n,
    float *y)
{
	struct fwd_mm mm = { w, NULL, x, n, y, NULL, { NULL, NULL } };

	fwd_products(f, &mm, 1);
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
		seg[ns++] = (struct fwd_seg){ kvcache_k_head(kv, layer, h,
		    kvcache_slot_of(kv, a)), kvcache_v_head(kv, layer, h,
		    kvcache_slot_of(kv, a)), kv->head_bytes,
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
			kvcache_put_rows(kv, layer, slot, f->kq +
			    (size_t)(sr->t0 + i) * kv->row_bytes, f->vq +
			    (size_t)(sr->t0 + i) * kv->row_bytes);
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
	struct fwd_mm gu = { &ly->w_gate, &ly->w_up, f->xb, n, f->hb, f->hb2,
	    { NULL, NULL } };
	int64_t i;

	fwd_products(f, &gu, 1);
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

/*
 * Sort the step's (token, expert) choices by expert: expert e's tokens are
 * etok[estart[e] .. estart[e] + ecount[e]), in token order, with their
 * routing weights in ew.
 */
static void
fwd_group_experts(struct fwd *f, int32_t n)
{
	uint32_t E = f->m->hp.n_experts, K = f->m->hp.n_experts_used, e, k;
	int32_t t, i;

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
}

/* The normed inputs of choices [i0, i0 + n) (in expert order) into the
 * first n rows of xe. */
static void
fwd_gather(struct fwd *f, int32_t i0, int32_t n)
{
	int64_t dim = f->m->hp.dim;
	int32_t i;

	for (i = 0; i < n; i++)
		memcpy(f->xe + (size_t)i * dim, f->xb + (size_t)f->etok[i0 +
		    i] * dim, dim * sizeof(float));
}

/* Whether every expert of the layer takes its gate/up and its down input in
 * one format each, so one quantization of the gathered inputs serves all. */
static int
fwd_moe_uniform(const struct fwd *f, const struct layer *ly)
{
	uint32_t e;

	for (e = 1; e < f->m->hp.n_experts; e++)
		if (fwd_act_fmt(f, &ly->e_gate[e]) != fwd_act_fmt(f,
		    &ly->e_gate[0]) || fwd_act_fmt(f, &ly->e_up[e]) !=
		    fwd_act_fmt(f, &ly->e_gate[0]) || fwd_act_fmt(f,
		    &ly->e_down[e]) != fwd_act_fmt(f, &ly->e_down[0]))
			return 0;
	return fwd_act_fmt(f, &ly->e_up[0]) == fwd_act_fmt(f, &ly->e_gate[0]);
}

/*
 * The products of every expert the step chose, into mm: gate/up (with
 * SwiGLU) over the gathered inputs xe, or (down) down over their results
 * hb, into hb/hb2 or ye at the expert's rows.  a holds all those inputs
 * quantized (or NULL: float products); each product takes its rows of it
 * through v.  Returns the number of products.
 */
static int
fwd_expert_mm(struct fwd *f, const struct layer *ly, int down,
    const struct quant_act *a, struct quant_act *v, struct fwd_mm *mm)
{
	const struct model_hparams *hp = &f->m->hp;
	int64_t in = down ? hp->ffn_dim : hp->dim;
	int64_t out = down ? hp->dim : hp->ffn_dim;
	uint32_t e;
	int nm = 0;

	for (e = 0; e < hp->n_experts; e++) {
		int64_t s = f->estart[e], c = f->ecount[e];

		if (c == 0)
			continue;
		if (a != NULL)
			v[nm] = quant_act_slice(a, s, c);
		mm[nm] = (struct fwd_mm){ down ? &ly->e_down[e] :
		    &ly->e_gate[e], down ? NULL : &ly->e_up[e], (down ? f->hb :
		    f->xe) + s * in, c, (down ? f->ye : f->hb) + s * out,
		    down ? NULL : f->hb2 + s * out, { a != NULL ? &v[nm] :
		    NULL, a != NULL && !down ? &v[nm] : NULL } };
		nm++;
	}
	return nm;
}

/*
 * Each chosen expert once, over all the tokens that chose it.  When the
 * step's choices fit the buffers (n * K tokens: every decode step) and
 * the experts agree on their input formats, the inputs are gathered by
 * expert and quantized once, and all the experts' gate/up products run
 * as one pool job and all their down products as another; otherwise
 * (long prefill chunks) expert by expert.  Either way each output is the
 * same arithmetic, and the weighted outputs are added to the residual in
 * expert order, then token order: the same bits.
 */
static void
fwd_ffn_moe(struct fwd *f, const struct layer *ly, int32_t n)
{
	const struct model_hparams *hp = &f->m->hp;
	uint32_t E = hp->n_experts, K = hp->n_experts_used, e;
	int32_t i, c;
	int all = (int64_t)n * K <= f->max_tokens && E <= FWD_MM_MAX &&
	    fwd_moe_uniform(f, ly);
	struct fwd_mm mm[FWD_MM_MAX];
	struct quant_act ax, ah, v[FWD_MM_MAX];
	int fx = fwd_act_fmt(f, &ly->e_gate[0]);
	int fh = fwd_act_fmt(f, &ly->e_down[0]);

	fwd_route(f, ly, n);
	fwd_group_experts(f, n);
	if (all) {
		fwd_gather(f, 0, f->estart[E]);
		if (fx != QUANT_ACT_NONE)
			fwd_quantize(f, &ax, fx, f->xe, hp->dim, f->estart[E]);
		fwd_products(f, mm, fwd_expert_mm(f, ly, 0, fx !=
		    QUANT_ACT_NONE ? &ax : NULL, v, mm));
		if (fh != QUANT_ACT_NONE)
			fwd_quantize(f, &ah, fh, f->hb, hp->ffn_dim,
			    f->estart[E]);
		fwd_products(f, mm, fwd_expert_mm(f, ly, 1, fh !=
		    QUANT_ACT_NONE ? &ah : NULL, v, mm));
	}
	for (e = 0; e < E; e++) {
		const float *ye = f->ye + (size_t)(all ? f->estart[e] : 0) *
		    hp->dim;

		if ((c = f->ecount[e]) == 0)
			continue;
		if (!all) {
			fwd_gather(f, f->estart[e], c);
			mm[0] = (struct fwd_mm){ &ly->e_gate[e], &ly->e_up[e],
			    f->xe, c, f->hb, f->hb2, { NULL, NULL } };
			fwd_products(f, mm, 1);
			fwd_matmul(f, &ly->e_down[e], f->hb, c, f->ye);
		}
		for (i = 0; i < c; i++)
			vec_axpy_f32(f->x + (size_t)f->etok[f->estart[e] + i] *
			    hp->dim, f->ew[f->estart[e] + i], ye +
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
		struct fwd_mm qkv[3] = {
			{ &ly->wq, NULL, f->xb, n, f->q, NULL, { NULL, NULL } },
			{ &ly->wk, NULL, f->xb, n, f->k, NULL, { NULL, NULL } },
			{ &ly->wv, NULL, f->xb, n, f->v, NULL, { NULL, NULL } },
		};

		fwd_products(f, qkv, 3);
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
	FWD_ALLOC(f->mm_job, 1);
	/* every product's input is dim, ffn or the attention output wide */
	f->act_cols = hp->dim > hp->ffn_dim ? hp->dim : hp->ffn_dim;
	if ((int64_t)qd > f->act_cols)
		f->act_cols = (int64_t)qd;
	for (i = QUANT_ACT_Q8_0; i <= QUANT_ACT_Q8_K; i++)
		FWD_ALLOC(f->act[i], quant_act_bytes(i, f->act_cols,
		    (int64_t)T));
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
	free(f->mm_job);
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
