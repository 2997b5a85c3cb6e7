/*
 * sampler.h: choosing the next token from a row of logits.
 *
 * Greedy, temperature, top-k, top-p, min-p and a repetition penalty over the
 * last n accepted tokens, driven by a seeded xorshift-style RNG.  The same
 * parameters, seed and logits give the same choices on every machine.  The
 * whole state (RNG and penalty window) serialises to a small versioned byte
 * string, so a resumed chat continues exactly as if it had never stopped.
 */
#ifndef SAMPLER_H
#define SAMPLER_H

#include <stddef.h>
#include <stdint.h>

struct sampler_params {
	float		 temperature;	/* <= 0: greedy (argmax) */
	int32_t		 top_k;		/* <= 0: off */
	float		 top_p;		/* >= 1: off */
	float		 min_p;		/* <= 0: off */
	float		 repeat_penalty; /* 1: off */
	int32_t		 repeat_last_n;	/* window of the penalty, 0: off */
	uint64_t	 seed;
};

/* Defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat
 * penalty 1.1 over 64 tokens, seed 0 (a fixed seed, not a random one). */
void	 sampler_params_default(struct sampler_params *p);

struct sampler;

/* Returns NULL on allocation failure. */
struct sampler *sampler_create(const struct sampler_params *p, int32_t n_vocab);
void	 sampler_free(struct sampler *s);
/* Change parameters; the RNG is re-seeded only if reseed is set. */
void	 sampler_set_params(struct sampler *s, const struct sampler_params *p,
	     int reseed);
const struct sampler_params *sampler_params(const struct sampler *s);

/*
 * Choose a token from logits (n_vocab floats; the array is used as scratch
 * and may be modified).  Does not record the choice: call sampler_accept()
 * for every token that enters the sequence (prompt tokens too, so that the
 * penalty window sees them).  Returns the id, or a negative errno code.
 */
int32_t	 sampler_sample(struct sampler *s, float *logits);
void	 sampler_accept(struct sampler *s, int32_t id);
void	 sampler_reset(struct sampler *s);	/* clear window, re-seed */

/* Serialise: returns bytes needed (writes nothing if cap is too small). */
size_t	 sampler_save(const struct sampler *s, void *buf, size_t cap);
/* Restore state saved by sampler_save(); parameters are restored too.
 * Returns 0, or -EINVAL for a malformed or foreign buffer. */
int	 sampler_load(struct sampler *s, const void *buf, size_t len);

#endif /* SAMPLER_H */
