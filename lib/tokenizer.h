/*
 * tokenizer.h: the SentencePiece-style BPE used by Llama and Mistral GGUFs.
 *
 * Built from the tokenizer.ggml.* metadata (model "llama"): tokens, scores,
 * token types, bos/eos/unk/pad ids and the add_bos/add_eos flags.  Spaces
 * become U+2581, a leading space is added as SentencePiece does, and any
 * byte not covered by the vocabulary falls back to a <0xNN> token.  Control
 * tokens are never produced from plain text unless the caller asks for
 * special-token parsing.
 *
 * Decoding is streaming-safe: tokenizer_decoder hands out only whole UTF-8
 * characters, holding back an incomplete tail until the next token
 * completes it (or flush gives it up as U+FFFD).
 */
#ifndef TOKENIZER_H
#define TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

struct gguf_file;
struct tokenizer;

enum token_type {
	TOKEN_TYPE_UNDEFINED = 0,
	TOKEN_TYPE_NORMAL = 1,
	TOKEN_TYPE_UNKNOWN = 2,
	TOKEN_TYPE_CONTROL = 3,
	TOKEN_TYPE_USER_DEFINED = 4,
	TOKEN_TYPE_UNUSED = 5,
	TOKEN_TYPE_BYTE = 6,
};

/*
 * Build a tokenizer from an open GGUF file (which may hold no tensors).
 * The tokenizer copies what it needs; f may be closed afterwards.
 * Returns 0 or a negative errno code with a message in err.
 */
int	 tokenizer_load(const struct gguf_file *f, struct tokenizer **out,
	     char *err, size_t errlen);
void	 tokenizer_free(struct tokenizer *t);

int32_t	 tokenizer_n_vocab(const struct tokenizer *t);
int32_t	 tokenizer_bos(const struct tokenizer *t);	/* -1 if none */
int32_t	 tokenizer_eos(const struct tokenizer *t);
int32_t	 tokenizer_unk(const struct tokenizer *t);
int	 tokenizer_add_bos(const struct tokenizer *t);	/* GGUF default */
int	 tokenizer_add_eos(const struct tokenizer *t);
/* The piece of token id as stored (with U+2581), or NULL if out of range. */
const char *tokenizer_piece(const struct tokenizer *t, int32_t id);
enum token_type tokenizer_type(const struct tokenizer *t, int32_t id);
/* Id of an exact piece (e.g. "[INST]"), or -1. */
int32_t	 tokenizer_find(const struct tokenizer *t, const char *piece);

#define TOKENIZE_ADD_BOS	0x1	/* prepend BOS */
#define TOKENIZE_SPECIAL	0x2	/* parse control tokens written in text */
#define TOKENIZE_NO_PREFIX	0x4	/* no leading-space convention (used for
					   text that continues earlier text) */

/*
 * Tokenize len bytes of text (any bytes; invalid UTF-8 becomes byte
 * tokens).  Writes up to cap ids to out and returns the total count needed
 * (which may exceed cap: call again with a larger buffer), or a negative
 * errno code.
 */
int64_t	 tokenizer_encode(const struct tokenizer *t, const char *text,
	     size_t len, int flags, int32_t *out, int64_t cap);

/*
 * Streaming decoder: feed ids one at a time; each call appends to buf the
 * text that is now complete (whole UTF-8 characters only) and returns the
 * number of bytes written (or needed, if more than cap: nothing is written
 * then), or a negative errno code.  Control tokens decode to nothing unless
 * DECODE_SPECIAL is set.  The leading space the tokenizer added to the
 * first piece of a sequence is dropped when DECODE_STRIP_LEADING is set.
 */
#define DECODE_SPECIAL		0x1
#define DECODE_STRIP_LEADING	0x2

struct tokenizer_decoder {
	const struct tokenizer *tok;
	int		 flags;
	int		 at_start;	/* nothing emitted yet */
	unsigned char	 pending[8];	/* incomplete UTF-8 tail */
	int		 n_pending;
};

void	 tokenizer_decoder_init(struct tokenizer_decoder *d,
	     const struct tokenizer *t, int flags);
int	 tokenizer_decoder_push(struct tokenizer_decoder *d, int32_t id,
	     char *buf, size_t cap);
/* Emit whatever is held back (an incomplete tail becomes U+FFFD). */
int	 tokenizer_decoder_flush(struct tokenizer_decoder *d, char *buf,
	     size_t cap);

/* Convenience: decode a whole id array into a NUL-terminated malloc'd
 * string (invalid bytes as U+FFFD).  Returns NULL on allocation failure. */
char	*tokenizer_decode(const struct tokenizer *t, const int32_t *ids,
	     int64_t n, int flags);

#endif /* TOKENIZER_H */
