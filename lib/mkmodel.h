/*
 * mkmodel.h: write random llama-architecture GGUF models.
 *
 * Used by the tests (small models of any shape and type), by `make bench`
 * (models of real shapes such as TinyLlama's 1.1B) and by the daemon's
 * demo model.  The files are laid out as llama.cpp's converter and
 * llama-quantize write them: the same keys, tensor names, shapes and
 * types.  Weights are Gaussian from a seeded generator, so the same
 * parameters always give the same bytes; tensors are produced while the
 * file is written, so memory use stays a few MiB whatever the model size.
 */
#ifndef MKMODEL_H
#define MKMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

struct mkmodel_params {
	uint32_t	 dim;		/* embedding length */
	uint32_t	 n_layers;
	uint32_t	 n_heads;
	uint32_t	 n_kv_heads;
	uint32_t	 ffn_dim;	/* per expert for MoE */
	uint32_t	 n_experts;	/* 0: dense */
	uint32_t	 n_experts_used;
	uint32_t	 n_vocab;	/* >= 259; ignored with vocab_from */
	uint32_t	 ctx_len;
	uint32_t	 sliding_window; /* 0: none (key not written) */
	enum ggml_type	 type;		/* the big matrices */
	enum ggml_type	 output_type;	/* output.weight; GGML_TYPE_COUNT:
					   Q6_K with q4_k_m_mix, else type */
	int		 q4_k_m_mix;	/* llama-quantize's _K_M choice (with
					   type Q4_K or Q5_K): attn_v and
					   ffn_down(_exps) of some layers, the
					   last always, and output in Q6_K */
	int		 split_experts;	/* per-expert blk.N.ffn_gate.E.weight
					   instead of merged *_exps */
	int		 tied_output;	/* no output.weight */
	uint64_t	 seed;
	const char	*name;		/* general.name */
	const char	*vocab_from;	/* copy tokenizer.* from this GGUF;
					   NULL: synthetic vocabulary */
	float		 rope_base;
	float		 rms_eps;
};

/* A tiny dense model: dim 64, 2 layers, 4/2 heads, ffn 128, vocab 512,
 * ctx 2048, F32, seed 1, rope base 10000, rms eps 1e-5. */
void	 mkmodel_defaults(struct mkmodel_params *p);

/*
 * Write the model to path (through path.tmp, fsynced and renamed).
 * Returns 0, -EINVAL for inconsistent parameters (a shape that does not
 * divide, a row length that is not a multiple of the type's block size),
 * -ENOTSUP for a type quant_quantize_row() cannot produce, or a negative
 * errno from reading vocab_from or writing; err then holds one line.
 */
int	 mkmodel_write(const struct mkmodel_params *p, const char *path,
	     char *err, size_t errlen);

/* The llama_ftype number (general.file_type) for these parameters. */
uint32_t mkmodel_file_type(const struct mkmodel_params *p);

#endif /* MKMODEL_H */
