/*
 * reference.c: a deliberately plain forward pass, for tests only.
 *
 * It recomputes a whole sequence from scratch with no KV cache: every
 * layer's keys and values for all positions, then windowed attention with
 * the mask written out directly (key j is visible to query t when j <= t
 * and either t - j < W or j is one of the first G positions).  Weights are
 * dequantized with the scalar reference routines, sums run in double, RoPE
 * angles come straight from pow().  It shares no code with forward.c
 * beyond the model's tensor table, so agreement between the two checks
 * the rolling buffer, the chunking and the batching of forward.c.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* y[r] = sum_c W[r][c] x[c], W dequantized row by row. */
static void
ref_matvec(const struct mtensor *w, const float *x, float *y, float *row)
{
	int64_t r, c;

	for (r = 0; r < w->rows; r++) {
		double s = 0.0;

		quant_dequantize_row_ref(w->type, (const uint8_t *)w->data +
		    (size_t)r * w->row_size, row, w->cols);
		for (c = 0; c < w->cols; c++)
			s += (double)row[c] * x[c];
		y[r] = (float)s;
	}
}

static void
ref_rmsnorm(float *o, const float *x, const float *w, int64_t n, float eps)
{
	double ss = 0.0;
	int64_t i;

	for (i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	ss = 1.0 / sqrt(ss / (double)n + eps);
	for (i = 0; i < n; i++)
		o[i] = (float)(x[i] * ss * w[i]);
}

static void
ref_rope(float *v, int n_heads, int head_dim, int n_rot, int64_t pos,
    double base)
{
	int h, i;

	for (h = 0; h < n_heads; h++)
		for (i = 0; i < n_rot / 2; i++) {
			double th = (double)pos * pow(base, -2.0 * i / n_rot);
			double c = cos(th), s = sin(th);
			float *p = v + h * head_dim + 2 * i;
			double a = p[0], b = p[1];

			p[0] = (float)(a * c - b * s);
			p[1] = (float)(a * s + b * c);
		}
}

static void
ref_ffn(const struct mtensor *g, const struct mtensor *u,
    const struct mtensor *d, const float *x, float *out, float *h1,
    float *h2, float *row)
{
	int64_t i;

	ref_matvec(g, x, h1, row);
	ref_matvec(u, x, h2, row);
	for (i = 0; i < g->rows; i++)
		h1[i] = (float)(h1[i] / (1.0 + exp(-(double)h1[i])) * h2[i]);
	ref_matvec(d, h1, out, row);
}

int
model_forward_reference(const struct model *m, const int32_t *tokens,
    int64_t n, int64_t pos0, uint32_t window, uint32_t n_global,
    float *logits)
{
	const struct model_hparams *hp = &m->hp;
	int64_t qd = (int64_t)hp->n_heads * hp->head_dim;
	int64_t kvd = (int64_t)hp->n_kv_heads * hp->head_dim;
	int64_t maxc = hp->dim > hp->ffn_dim ? hp->dim : hp->ffn_dim;
	int64_t t, j, i;
	int rep = (int)(hp->n_heads / hp->n_kv_heads), h, e, kk;
	float *x, *xb, *q, *k, *v, *att, *tmp, *h1, *h2, *row, *ffo;
	double *sc;
	uint32_t l;

	if (window == 0)
		window = model_window(m, 0, 0, NULL);
	x = calloc((size_t)n * hp->dim, sizeof *x);
	xb = calloc((size_t)hp->dim, sizeof *xb);
	q = calloc((size_t)n * qd, sizeof *q);
	k = calloc((size_t)n * kvd, sizeof *k);
	v = calloc((size_t)n * kvd, sizeof *v);
	att = calloc((size_t)qd, sizeof *att);
	tmp = calloc((size_t)maxc, sizeof *tmp);
	h1 = calloc((size_t)hp->ffn_dim, sizeof *h1);
	h2 = calloc((size_t)hp->ffn_dim, sizeof *h2);
	row = calloc((size_t)(maxc > (int64_t)hp->n_vocab ? maxc :
	    hp->n_vocab), sizeof *row);
	ffo = calloc((size_t)hp->dim, sizeof *ffo);
	sc = calloc((size_t)n, sizeof *sc);
	if (!x || !xb || !q || !k || !v || !att || !tmp || !h1 || !h2 ||
	    !row || !ffo || !sc) {
		n = -ENOMEM;
		goto out;
	}
	for (t = 0; t < n; t++)
		quant_dequantize_row_ref(m->tok_embd.type,
		    (const uint8_t *)m->tok_embd.data +
		    (size_t)tokens[t] * m->tok_embd.row_size,
		    x + t * hp->dim, hp->dim);

	for (l = 0; l < hp->n_layers; l++) {
		const struct layer *ly = &m->layers[l];

		for (t = 0; t < n; t++) {
			ref_rmsnorm(xb, x + t * hp->dim, ly->attn_norm, hp->dim,
			    hp->rms_eps);
			ref_matvec(&ly->wq, xb, q + t * qd, row);
			ref_matvec(&ly->wk, xb, k + t * kvd, row);
			ref_matvec(&ly->wv, xb, v + t * kvd, row);
			ref_rope(q + t * qd, (int)hp->n_heads,
			    (int)hp->head_dim, (int)hp->n_rot, pos0 + t,
			    hp->rope_base);
			ref_rope(k + t * kvd, (int)hp->n_kv_heads,
			    (int)hp->head_dim, (int)hp->n_rot, pos0 + t,
			    hp->rope_base);
		}
		/* attention, then the FFN, one position at a time; the
		 * residual of position t only changes after all keys of this
		 * layer were computed above. */
		for (t = 0; t < n; t++) {
			for (h = 0; h < (int)hp->n_heads; h++) {
				const float *qh = q + t * qd + h * hp->head_dim;
				int kvh = h / rep;
				double mx = -INFINITY, sum = 0.0;

				for (j = 0; j <= t; j++) {
					const float *kj;
					double s = 0.0;

					sc[j] = -INFINITY;
					if (!(t - j < (int64_t)window ||
					    j < (int64_t)n_global))
						continue;
					kj = k + j * kvd + kvh * hp->head_dim;
					for (i = 0; i < hp->head_dim; i++)
						s += (double)qh[i] * kj[i];
					sc[j] = s / sqrt((double)hp->head_dim);
					if (sc[j] > mx)
						mx = sc[j];
				}
				for (j = 0; j <= t; j++) {
					sc[j] = sc[j] == -INFINITY ? 0.0 :
					    exp(sc[j] - mx);
					sum += sc[j];
				}
				for (i = 0; i < hp->head_dim; i++) {
					double a = 0.0;

					for (j = 0; j <= t; j++)
						a += sc[j] * v[j * kvd + kvh *
						    hp->head_dim + i];
					att[h * hp->head_dim + i] =
					    (float)(a / sum);
				}
			}
			ref_matvec(&ly->wo, att, tmp, row);
			for (i = 0; i < hp->dim; i++)
				x[t * hp->dim + i] += tmp[i];
		}
		for (t = 0; t < n; t++) {
			float *xt = x + t * hp->dim;

			ref_rmsnorm(xb, xt, ly->ffn_norm, hp->dim, hp->rms_eps);
			if (hp->n_experts == 0) {
				ref_ffn(&ly->w_gate, &ly->w_up, &ly->w_down, xb,
				    ffo, h1, h2, row);
				for (i = 0; i < hp->dim; i++)
					xt[i] += ffo[i];
				continue;
			}
			/* softmax over router logits, top k, renormalise */
			double rl[256], mx = -INFINITY, wsum = 0.0;
			int chosen[256];

			for (e = 0; e < (int)hp->n_experts; e++) {
				double s = 0.0;

				for (i = 0; i < hp->dim; i++)
					s += (double)ly->router[e * hp->dim +
					    i] * xb[i];
				rl[e] = s;
				chosen[e] = 0;
				if (s > mx)
					mx = s;
			}
			for (kk = 0; kk < (int)hp->n_experts_used; kk++) {
				int best = -1;

				for (e = 0; e < (int)hp->n_experts; e++)
					if (!chosen[e] && (best < 0 ||
					    rl[e] > rl[best]))
						best = e;
				chosen[best] = 1;
				wsum += exp(rl[best] - mx);
			}
			for (e = 0; e < (int)hp->n_experts; e++) {
				double w;

				if (!chosen[e])
					continue;
				w = exp(rl[e] - mx) / wsum;
				ref_ffn(&ly->e_gate[e], &ly->e_up[e],
				    &ly->e_down[e], xb, ffo, h1, h2, row);
				for (i = 0; i < hp->dim; i++)
					xt[i] += (float)(w * ffo[i]);
			}
		}
	}
	for (t = 0; t < n; t++) {
		ref_rmsnorm(xb, x + t * hp->dim, m->output_norm, hp->dim,
		    hp->rms_eps);
		ref_matvec(&m->output, xb, logits + t * hp->n_vocab, row);
	}
out:
	free(x);
	free(xb);
	free(q);
	free(k);
	free(v);
	free(att);
	free(tmp);
	free(h1);
	free(h2);
	free(row);
	free(ffo);
	free(sc);
	return n < 0 ? (int)n : 0;
}
