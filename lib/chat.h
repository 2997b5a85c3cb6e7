/*
 * chat.h: chat templates, rendered straight into token ids, one turn at a
 * time.
 *
 * A chat session keeps its conversation in a KV cache, so a new turn must
 * add only its own tokens: chat_render_turn() produces exactly the ids that
 * follow what the cache already holds (the previous reply).  Rendering a
 * whole stored conversation with chat_render_transcript() gives the same ids
 * as the turns and replies concatenated, so a cache rebuilt from a stored
 * transcript is the cache the live session had.
 *
 * Templates are built from token ids, not by tokenizing one rendered
 * string: the template's markers ([INST], <|im_start|>, ...) become their
 * control token when the vocabulary has one and text otherwise, while the
 * user's and the system prompt's text is tokenized without special-token
 * parsing, so a user who types "[INST]" or "<s>" gets those characters,
 * never a control token (nor one of the four markers when a vocabulary
 * stores them as user-defined tokens, which plain text would otherwise
 * match).
 *
 * The formats.  In the examples <s> and </s> are BOS and EOS, {sys} the
 * system prompt, {u1}, {u2} user messages and {a1} the reply the model
 * produced (its ids are used as they were generated, ending with the stop
 * token when the reply ended normally).  "|" separates the first turn, the
 * reply and the second turn; it is not part of the text.
 *
 * CHAT_TEMPLATE_MISTRAL (Mistral 7B Instruct v0.1, v0.2, v0.3, Mixtral
 * 8x7B Instruct; mistral-common's way of building the ids):
 *
 *	<s>[INST] {sys}\n\n{u1} [/INST] | {a1}</s> | [INST] {u2} [/INST]
 *
 *   With a vocabulary where [INST] and [/INST] are text (v0.1, v0.2,
 *   Mixtral: 32000 tokens) each marker is encoded as " [INST]" and
 *   " [/INST]", which is what SentencePiece's leading space gives, e.g.
 *   "<s>[INST] user message [/INST]" is, in Mistral's vocabulary,
 *   1 733 16289 28793 2188 2928 733 28748 16289 28793, that is
 *   <s> _[ INST ] _user _message _[ / INST ].  With a v0.3 vocabulary,
 *   where they are control tokens 3 and 4, the same turn is
 *   1 3 _user _message 4: the space before [/INST] goes, as in
 *   mistral-common.  The
 *   system prompt, if any, is put in front of the first user message
 *   followed by a blank line (mistral-common's default for v0.1; v0.3's
 *   template moves it to the last message, which a cache cannot follow).
 *
 * CHAT_TEMPLATE_LLAMA2 (Llama 2 chat, CodeLlama instruct):
 *
 *	<s>[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{u1} [/INST] | {a1}</s> |
 *	<s>[INST] {u2} [/INST]
 *
 *   Without a system prompt the first turn is "<s>[INST] {u1} [/INST]".
 *   Every turn starts with BOS, as Meta's reference code does.
 *
 * CHAT_TEMPLATE_CHATML (<|im_start|>/<|im_end|> fine-tunes):
 *
 *	<s><|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\n{u1}
 *	<|im_end|>\n<|im_start|>assistant\n | {a1}<|im_end|> |
 *	\n<|im_start|>user\n{u2}<|im_end|>\n<|im_start|>assistant\n
 *
 *   (one line each in reality; the first line break above is for width).
 *   Text that follows a control token gets SentencePiece's leading space,
 *   as llama.cpp and Hugging Face's tokenizers do for these models, so
 *   "<|im_start|>user\n" is <|im_start|> _user <0x0A>.  The system message
 *   is left out when there is no system prompt.
 *
 * CHAT_TEMPLATE_RAW: no markup.  The first turn is BOS (if the vocabulary
 *   adds one) and the system prompt followed directly by the user text,
 *   encoded with the leading-space convention; later turns are the user
 *   text alone, appended without one (after an EOS, with one).
 *
 * BOS is used for the first turn when tokenizer_add_bos() says so (and for
 * every Llama 2 turn under the same condition).
 *
 * Closing a reply.  A later turn begins by closing the previous reply when
 * it did not end with a stop token (max_tokens, a stop string, a cancel):
 * EOS for Mistral and Llama 2, "<|im_end|>" for ChatML, nothing for raw.
 * prev_reply_closed says whether the reply ended with a stop token; use
 * chat_reply_closed() to decide it.
 */
#ifndef CHAT_H
#define CHAT_H

#include <stddef.h>
#include <stdint.h>

struct tokenizer;

enum chat_template {
	CHAT_TEMPLATE_RAW,
	CHAT_TEMPLATE_MISTRAL,
	CHAT_TEMPLATE_LLAMA2,
	CHAT_TEMPLATE_CHATML,
};

/*
 * Recognise a GGUF's tokenizer.chat_template (len bytes, need not be
 * NUL-terminated; NULL when the file has none).  In this order: a template
 * mentioning "<|im_start|>" is ChatML, one mentioning "<<SYS>>" is Llama 2,
 * one mentioning "[INST]" is Mistral.  Anything else (absent, empty or
 * unknown) falls back to ChatML if tok (which may be NULL) has both
 * "<|im_start|>" and "<|im_end|>" as tokens, else to Mistral.
 */
enum chat_template chat_template_detect(const char *jinja, size_t len,
	     const struct tokenizer *tok);

/* "raw", "mistral", "llama2", "chatml"; NULL for a value out of range. */
const char *chat_template_name(enum chat_template t);
/* The inverse, for configuration files: 0, or -EINVAL for an unknown name
 * (*out untouched). */
int	 chat_template_parse(const char *name, enum chat_template *out);

/*
 * Render one user turn: the ids to prefill after what the cache holds.
 * first_turn: nothing precedes (BOS and the system prompt are included);
 * otherwise prev_reply_closed tells whether the previous reply ended with
 * a stop token (see chat_reply_closed()).  system may be NULL or "" (no
 * system prompt; ignored after the first turn); user must not be NULL.
 * On success returns 0 and sets *ids to a malloc'd array of *n ids (free
 * it with free()); on failure returns a negative errno code (-EINVAL for a
 * bad argument, -ENOMEM, or the tokenizer's error) and leaves *ids NULL
 * and *n 0.
 */
int	 chat_render_turn(enum chat_template t, const struct tokenizer *tok,
	     const char *system, int first_turn, int prev_reply_closed,
	     const char *user, int32_t **ids, int64_t *n);

enum chat_role {
	CHAT_ROLE_USER,
	CHAT_ROLE_ASSISTANT,
};

struct chat_message {
	enum chat_role	 role;
	const char	*text;	/* user: the message; assistant: used
				   only when ids is NULL */
	const int32_t	*ids;	/* assistant: the reply as generated,
				   with its stop token if it had one */
	int64_t		 n_ids;
};

/*
 * Render a whole conversation: the first message must come from the user.
 * Each user message is rendered as chat_render_turn() would render it,
 * after the replies that precede it; an assistant message contributes its
 * ids unchanged (or, if it has only text, that text encoded as it stands,
 * with no leading space added).  Two user messages in a row mean an empty
 * reply that did not close (a turn cancelled before its first token); two
 * assistant messages in a row are -EINVAL.  Ids outside the vocabulary are
 * -EINVAL.  Returns and fills *ids and *n as chat_render_turn() does.
 */
int	 chat_render_transcript(enum chat_template t,
	     const struct tokenizer *tok, const char *system,
	     const struct chat_message *msgs, size_t n_msgs, int32_t **ids,
	     int64_t *n);

/*
 * The ids that end a reply: EOS, and for ChatML also <|im_end|> when the
 * vocabulary has it as a token.  Fills out[] and returns how many (0 to
 * CHAT_MAX_STOP_IDS), or -EINVAL.  Cache the result: it looks pieces up.
 */
#define CHAT_MAX_STOP_IDS	2
int	 chat_stop_ids(enum chat_template t, const struct tokenizer *tok,
	     int32_t out[CHAT_MAX_STOP_IDS]);

/* Whether a reply of n ids ended with a stop id (what a later turn's
 * prev_reply_closed should be).  0 for an empty reply. */
int	 chat_reply_closed(enum chat_template t, const struct tokenizer *tok,
	     const int32_t *ids, int64_t n);

#endif /* CHAT_H */
