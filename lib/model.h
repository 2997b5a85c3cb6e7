/*
 * model.h: a loaded Mistral/Mixtral/Llama model (GGUF architecture
 * "llama") and the batched forward pass over it.
 *
 * A struct model is immutable after model_load() and may be shared by any
 * number of threads; its weights are copied into memory at load, Q8_0 and
 * Q4_0 ones packed for the fast kernels (model.c, DESIGN 1).  All
 * per-sequence state lives in struct kvcache (kvcache.h), and all scratch
 * space in struct fwd, so one model serves many sequences.
 *
 * The forward pass takes a batch that mixes several sequences' tokens:
 * each token names its sequence (a kvcache); a sequence's tokens must be
 * consecutive in the batch and continue its cache in order (positions are
 * implied by the cache).  Matrix products run over all of the batch's
 * tokens at once, attention per sequence over its own rolling window, and
 * MoE layers group the tokens by expert so each expert is read once.
 */
#ifndef MODEL_H
#define MODEL_H

#include <stddef.h>
#include <stdint.h>

struct gguf_file;
struct kvcache;
struct tokenizer;

struct model_hparams {
	uint32_t	 n_vocab;
	uint32_t	 dim;		/* embedding length */
	uint32_t	 n_layers;
	uint32_t	 n_heads;
	uint32_t	 n_kv_heads;
	uint32_t	 head_dim;	/* dim / n_heads */
	uint32_t	 n_rot;		/* RoPE dimensions (<= head_dim) */
	uint32_t	 ffn_dim;	/* per expert for MoE */
	uint32_t	 n_experts;	/* 0 for dense */
	uint32_t	 n_experts_used;
	uint32_t	 ctx_len;	/* training context length */
	uint32_t	 swa_window;	/* trained sliding window, 0 if none */
	float		 rope_base;
	float		 rms_eps;
};

/* Where the trained window came from. */
enum model_swa_source {
	MODEL_SWA_NONE = 0,		/* full-attention model */
	MODEL_SWA_GGUF = 1,		/* llama.attention.sliding_window */
	MODEL_SWA_KNOWN = 2,		/* recognised checkpoint (general.name) */
};

/*
 * Map, validate and load a model.  Returns 0, or a negative errno code with
 * "PATH: what is wrong (where)" in err.  Unsupported architectures, missing
 * or misshapen tensors and unsupported tensor types are refused cleanly.
 */
int	 model_load(const char *path, struct model **out, char *err,
	     size_t errlen);
void	 model_free(struct model *m);

const struct model_hparams *model_hparams(const struct model *m);
const struct tokenizer *model_tokenizer(const struct model *m);
const struct gguf_file *model_gguf(const struct model *m);
enum model_swa_source model_swa_source(const struct model *m);
const char *model_name(const struct model *m);	/* general.name or file */
const char *model_file_type(const struct model *m); /* e.g. "Q4_K_M" */
const char *model_path(const struct model *m);
uint64_t model_n_params(const struct model *m);
uint64_t model_weight_bytes(const struct model *m);
/* 1 when the forward pass reads weights from the file mapping
 * (MISTRAL_REPACK=0, or the memory for the copy could not be had), so
 * that a change to the file on disk reaches it; 0 when every weight it
 * reads was copied into memory at load. */
int	 model_weights_mapped(const struct model *m);
/* 64-bit fingerprint of the hyperparameters, tensor table and a sample of
 * every tensor's bytes: equal for the same file, different after any
 * requantisation or re-conversion.  Printed as 16 hex digits. */
uint64_t model_fingerprint(const struct model *m);

/*
 * The attention window W a sequence gets, in this order: the explicit
 * request (if > 0), the GGUF's llama.attention.sliding_window, a known SWA
 * checkpoint, else the context length; then capped at cap (if > 0).
 * *exact is set to 1 when W covers everything the model was trained to
 * see (an SWA model at its own window or more, or a full-attention model
 * whose W is its context length), else 0: "evicting" mode, where tokens
 * the model would have attended to leave the window.
 */
uint32_t model_window(const struct model *m, uint32_t explicit_w,
	     uint32_t cap, int *exact);

/* A one-screen summary (architecture, parameters, file type, context,
 * window, experts, memory); window/n_global/kv bytes describe a sequence's
 * cache as configured (0 for defaults).  Returns the string length. */
int	 model_summary(const struct model *m, uint32_t window,
	     uint32_t n_global, size_t kv_bytes, char *buf, size_t cap);

/* ---- forward pass -------------------------------------------------- */

struct fwd;

/*
 * Scratch for batches of up to max_tokens tokens, and a compute pool of
 * n_threads threads (the caller's included).  Larger batches are run in
 * pieces of max_tokens.  Returns 0 or -ENOMEM.
 */
int	 fwd_create(const struct model *m, int max_tokens, int n_threads,
	     struct fwd **out);
void	 fwd_free(struct fwd *f);
int	 fwd_max_tokens(const struct fwd *f);

struct fwd_batch {
	int32_t			 n;	  /* tokens in the batch */
	const int32_t		*tokens;  /* n ids */
	struct kvcache *const	*seqs;	  /* n: each token's sequence */
	const uint8_t		*want;	  /* n: 1 = return this token's
					     logits; NULL = last of each
					     sequence's run */
};

/*
 * Run a batch: every token enters its sequence's cache, and the logits of
 * the wanted tokens are written to logits, one row of n_vocab floats per
 * wanted token in batch order.  Returns the number of rows written, or a
 * negative errno code (-EINVAL: a token id out of range, or a sequence's
 * tokens not consecutive; the caches are then unchanged).
 */
int	 fwd_run(struct fwd *f, const struct fwd_batch *b, float *logits);

/*
 * Convenience for one sequence: feed n tokens in chunks of chunk tokens
 * (0: the fwd's max), keeping the logits of every token (all != 0, logits
 * holds n rows) or only of the last (logits holds one row; may be NULL).
 */
int	 fwd_prefill(struct fwd *f, struct kvcache *kv, const int32_t *tokens,
	     int64_t n, int chunk, int all, float *logits);

/*
 * Reference forward pass for tests: recompute a sequence from scratch with
 * no cache, attention windowed by (window, n_global) exactly as the cached
 * path defines it, in plain loops over dequantized weights.  Writes n rows
 * of logits.  Slow; for small models.
 */
int	 model_forward_reference(const struct model *m, const int32_t *tokens,
	     int64_t n, int64_t pos0, uint32_t window, uint32_t n_global,
	     float *logits);

#endif /* MODEL_H */
