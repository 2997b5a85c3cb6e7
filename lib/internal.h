/*
 * internal.h: the model's and the KV cache's insides, shared by model.c,
 * forward.c and kvcache.c only.  Nothing outside lib/ includes this.
 */
#ifndef INTERNAL_H
#define INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kvcache.h"
#include "model.h"
#include "quant.h"

/* A 2-D weight matrix: rows of `cols` elements, in the file mapping or in
 * the model's weight memory (model.c, DESIGN 1). */
struct mtensor {
	enum ggml_type	 type;
	const void	*data;
	const void	*packed;	/* quant_pack()ed copy, or NULL */
	int64_t		 rows;		/* ne[1] */
	int64_t		 cols;		/* ne[0] */
	size_t		 row_size;	/* bytes per row */
};

struct layer {
	float		*attn_norm;	/* (dim), owned */
	float		*ffn_norm;	/* (dim), owned */
	struct mtensor	 wq;		/* (n_heads * head_dim, dim) */
	struct mtensor	 wk;		/* (n_kv_heads * head_dim, dim) */
	struct mtensor	 wv;		/* (n_kv_heads * head_dim, dim) */
	struct mtensor	 wo;		/* (dim, n_heads * head_dim) */
	/* dense FFN */
	struct mtensor	 w_gate;	/* (ffn, dim) */
	struct mtensor	 w_up;		/* (ffn, dim) */
	struct mtensor	 w_down;	/* (dim, ffn) */
	/* MoE: router and per-expert matrices (n_experts each) */
	float		*router;	/* (n_experts, dim), owned */
	struct mtensor	*e_gate;	/* (ffn, dim) x n_experts, owned array */
	struct mtensor	*e_up;
	struct mtensor	*e_down;	/* (dim, ffn) x n_experts */
};

struct model {
	char			*path;
	char			*name;
	char			 file_type[24];
	struct gguf_file	*gguf;
	struct tokenizer	*tok;
	struct model_hparams	 hp;
	enum model_swa_source	 swa_source;
	uint64_t		 fingerprint;
	uint64_t		 n_params;
	uint64_t		 weight_bytes;

	struct mtensor		 tok_embd;	/* (n_vocab, dim) */
	float			*output_norm;	/* (dim), owned */
	struct mtensor		 output;	/* (n_vocab, dim); may alias
						   tok_embd when tied */
	struct layer		*layers;	/* n_layers */
	void			*wmem;		/* weight memory (mmap) */
	size_t			 wmem_len;
	int			 packed;	/* some matrix is packed */
	int			 no_room;	/* mapped: no memory for a copy */
};

/*
 * The cache: for each layer, K and V each hold G + W slots of kv_dim
 * elements of `type`.  Slot g < G holds global position base + g; slot
 * G + (p mod W) holds ring position p (p >= base + G).  Each kv head's
 * slots are contiguous, (n_layers, n_kv_heads, n_slots, head_bytes): the
 * attention of one head streams its keys in one run of memory (with
 * whole-slot rows, 128 bytes of every 512 an f16 head read, the scores
 * over a window in memory ran 3.2-3.7x slower on Zen 3 in a one-thread
 * harness; kvcache.c, DESIGN 4).
 */
struct kvcache {
	const struct model	*model;
	struct kv_params	 p;		/* window and n_global resolved */
	uint32_t		 n_layers;
	uint32_t		 n_heads;	/* kv heads */
	uint32_t		 kv_dim;	/* n_heads * head_dim */
	uint32_t		 n_slots;	/* G + W */
	size_t			 row_bytes;	/* one slot of kv_dim elements */
	size_t			 head_bytes;	/* one slot of one head */
	uint8_t			*k;		/* (n_layers, n_heads, n_slots,
						   head_bytes) */
	uint8_t			*v;
	int64_t			 base;
	int64_t			 pos;		/* next position */
};

static inline size_t
kvcache_slot_of(const struct kvcache *kv, int64_t p)
{
	int64_t rel = p - kv->base;

	if (rel < (int64_t)kv->p.n_global)
		return (size_t)rel;
	return kv->p.n_global + (size_t)(p % kv->p.window);
}

/* Kv head h of a slot; the next slot's is head_bytes further on. */
static inline uint8_t *
kvcache_k_head(const struct kvcache *kv, uint32_t layer, uint32_t h,
    size_t slot)
{
	return kv->k + (((size_t)layer * kv->n_heads + h) * kv->n_slots +
	    slot) * kv->head_bytes;
}

static inline uint8_t *
kvcache_v_head(const struct kvcache *kv, uint32_t layer, uint32_t h,
    size_t slot)
{
	return kv->v + (((size_t)layer * kv->n_heads + h) * kv->n_slots +
	    slot) * kv->head_bytes;
}

/* Layer `layer`'s K and V of a slot to (put) or from (get) rows of kv_dim
 * elements, the heads' pieces in order: the form the forward pass
 * computes them in and the snapshot stream carries (kvcache.c). */
void	kvcache_put_rows(struct kvcache *kv, uint32_t layer, size_t slot,
	    const uint8_t *k, const uint8_t *v);
void	kvcache_get_rows(const struct kvcache *kv, uint32_t layer, size_t slot,
	    uint8_t *k, uint8_t *v);

/* The ggml type a cache element type is stored as. */
enum ggml_type kv_type_ggml(enum kv_type t);

/* Dequantize row `r` of a matrix into dst (cols floats). */
static inline void
mtensor_row(const struct mtensor *t, int64_t r, float *dst)
{
	quant_dequantize_row(t->type, (const uint8_t *)t->data +
	    (size_t)r * t->row_size, dst, t->cols);
}

#endif /* INTERNAL_H */
