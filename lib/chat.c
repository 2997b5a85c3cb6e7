/*
 * chat.c: chat templates rendered into token ids, one turn at a time.
 *
 * The formats themselves are documented in chat.h.
 *
 * DESIGN
 *
 * 1. A turn is assembled from pieces, each turned into ids on its own:
 *      - ids pushed directly (BOS, EOS);
 *      - markers ([INST], [/INST], <|im_start|>, <|im_end|>): the control
 *        (or user-defined) token when the vocabulary has one, otherwise a
 *        fallback text tokenized as template text;
 *      - template text ("user\n", " <<SYS>>\n", ...), tokenized with
 *        TOKENIZE_SPECIAL;
 *      - the user's and system prompt's text, tokenized without it, so it
 *        can never produce a control token; and cut wherever it contains
 *        a marker that the vocabulary has as a user-defined token (which
 *        the tokenizer would match even in plain text), see
 *        chat_buf_content().
 *    Splitting at these boundaries is also how mistral-common builds its
 *    ids.  With the vocabularies each template is meant for, the
 *    boundaries fall before a space, after a newline (a byte token) or next
 *    to a control token, where SentencePiece would not merge across anyway.
 *
 * 2. Leading spaces.  Mistral and Llama 2 write every space explicitly and
 *    always tokenize with TOKENIZE_NO_PREFIX, so a text marker carries its
 *    space in the fallback (" [INST]") and vanishes with it when the
 *    marker is a control token.  ChatML and raw follow llama.cpp's rule
 *    instead: a text piece that comes first or right after a control (or
 *    user-defined) token gets SentencePiece's leading space, any other
 *    piece does not.  chat_buf.after_special carries that state across
 *    pieces; at the start of a later turn it is prev_reply_closed, since a
 *    closed reply ends with a stop token, which is such a token.
 *
 * 3. chat_render_transcript() uses the very same turn function as
 *    chat_render_turn(), with prev_reply_closed computed from each stored
 *    reply by chat_reply_closed(); that is what makes the two agree.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat.h"
#include "tokenizer.h"

static const char *chat_names[] = {
	[CHAT_TEMPLATE_RAW] = "raw",
	[CHAT_TEMPLATE_MISTRAL] = "mistral",
	[CHAT_TEMPLATE_LLAMA2] = "llama2",
	[CHAT_TEMPLATE_CHATML] = "chatml",
};
#define CHAT_N_TEMPLATES (sizeof chat_names / sizeof chat_names[0])

/* Ids being assembled; v is never NULL after chat_buf_init(). */
struct chat_buf {
	int32_t		*v;		/* (cap) */
	int64_t		 n;
	int64_t		 cap;
	int		 after_special;	/* see DESIGN 2 */
};

static int
chat_valid(enum chat_template t)
{
	return (unsigned)t < CHAT_N_TEMPLATES;
}

static int
chat_buf_init(struct chat_buf *b)
{
	b->n = 0;
	b->cap = 64;
	b->after_special = 1;
	if ((b->v = malloc((size_t)b->cap * sizeof *b->v)) == NULL)
		return -ENOMEM;
	return 0;
}

/* Make room for more ids. */
static int
chat_buf_grow(struct chat_buf *b, int64_t more)
{
	int64_t want;
	int32_t *v;

	if (more <= b->cap - b->n)
		return 0;
	if (more > (int64_t)(SIZE_MAX / sizeof *v / 2) - b->n)
		return -ENOMEM;
	want = b->cap;
	while (want < b->n + more)
		want *= 2;
	if ((v = realloc(b->v, (size_t)want * sizeof *v)) == NULL)
		return -ENOMEM;
	b->v = v;
	b->cap = want;
	return 0;
}

static int
chat_buf_id(struct chat_buf *b, int32_t id)
{
	int e;

	if ((e = chat_buf_grow(b, 1)) != 0)
		return e;
	b->v[b->n++] = id;
	b->after_special = 1;
	return 0;
}

/*
 * Tokenize len bytes onto b.  special: template text (TOKENIZE_SPECIAL);
 * prefix: this template follows llama.cpp's leading-space rule (DESIGN 2).
 */
static int
chat_buf_text(struct chat_buf *b, const struct tokenizer *tok,
    const char *text, size_t len, int special, int prefix)
{
	int flags = special ? TOKENIZE_SPECIAL : 0;
	int64_t r, r2;
	enum token_type ty;
	int e;

	if (len == 0)
		return 0;
	if (!(prefix && b->after_special))
		flags |= TOKENIZE_NO_PREFIX;
	r = tokenizer_encode(tok, text, len, flags, b->v + b->n, b->cap - b->n);
	if (r < 0)
		return (int)r;
	if (r > b->cap - b->n) {
		if ((e = chat_buf_grow(b, r)) != 0)
			return e;
		r2 = tokenizer_encode(tok, text, len, flags, b->v + b->n,
		    b->cap - b->n);
		if (r2 != r)
			return r2 < 0 ? (int)r2 : -EIO;
	}
	if (r > 0) {
		b->n += r;
		ty = tokenizer_type(tok, b->v[b->n - 1]);
		b->after_special = ty == TOKEN_TYPE_CONTROL ||
		    ty == TOKEN_TYPE_USER_DEFINED;
	}
	return 0;
}

static const char *chat_markers[] = {
	"[INST]", "[/INST]", "<|im_start|>", "<|im_end|>",
};
#define CHAT_N_MARKERS (sizeof chat_markers / sizeof chat_markers[0])

/* The id of piece when it is a control or user-defined token, else -1. */
static int32_t
chat_special_id(const struct tokenizer *tok, const char *piece)
{
	enum token_type ty;
	int32_t id;

	if ((id = tokenizer_find(tok, piece)) < 0)
		return -1;
	ty = tokenizer_type(tok, id);
	if (ty != TOKEN_TYPE_CONTROL && ty != TOKEN_TYPE_USER_DEFINED)
		return -1;
	return id;
}

/*
 * Tokenize the user's or system's text.  The tokenizer matches user-defined
 * pieces even in plain text, and some GGUFs store the template markers as
 * user-defined tokens rather than control ones; so the text is cut one byte
 * into every occurrence of such a marker and the parts are tokenized one
 * after the other (continuing without a leading space), which leaves the
 * marker as ordinary text.  Text without markers is tokenized in one go.
 */
static int
chat_buf_content(struct chat_buf *b, const struct tokenizer *tok,
    const char *text, size_t len, int prefix)
{
	const char *guard[CHAT_N_MARKERS], *p;
	size_t n_guard = 0, i, cut;
	int32_t id;
	int e;

	for (i = 0; i < CHAT_N_MARKERS; i++) {
		id = tokenizer_find(tok, chat_markers[i]);
		if (id >= 0 &&
		    tokenizer_type(tok, id) == TOKEN_TYPE_USER_DEFINED)
			guard[n_guard++] = chat_markers[i];
	}
	for (;;) {
		cut = len;
		for (i = 0; i < n_guard; i++) {
			p = memmem(text, len, guard[i], strlen(guard[i]));
			if (p != NULL && (size_t)(p - text) + 1 < cut)
				cut = (size_t)(p - text) + 1;
		}
		if ((e = chat_buf_text(b, tok, text, cut, 0, prefix)) != 0 ||
		    cut == len)
			return e;
		text += cut;
		len -= cut;
		b->after_special = 0;
	}
}

/* The user's or system's text: n strings (NULL ones skipped), joined and
 * tokenized as one, without special-token parsing. */
static int
chat_buf_plain(struct chat_buf *b, const struct tokenizer *tok, int prefix,
    int n, ...)
{
	const char *part[4];
	size_t len[4], total = 0;
	va_list ap;
	char *s;
	int i, e;

	if (n < 0 || n > 4)
		return -EINVAL;
	va_start(ap, n);
	for (i = 0; i < n; i++) {
		part[i] = va_arg(ap, const char *);
		len[i] = part[i] != NULL ? strlen(part[i]) : 0;
		if (len[i] > SIZE_MAX - 1 - total) {
			va_end(ap);
			return -ENOMEM;
		}
		total += len[i];
	}
	va_end(ap);
	if ((s = malloc(total + 1)) == NULL)
		return -ENOMEM;
	total = 0;
	for (i = 0; i < n; i++) {
		memcpy(s + total, part[i] != NULL ? part[i] : "", len[i]);
		total += len[i];
	}
	e = chat_buf_content(b, tok, s, total, prefix);
	free(s);
	return e;
}

static int
chat_buf_glue(struct chat_buf *b, const struct tokenizer *tok,
    const char *text, int prefix)
{
	return chat_buf_text(b, tok, text, strlen(text), 1, prefix);
}

static int
chat_buf_marker(struct chat_buf *b, const struct tokenizer *tok,
    const char *piece, const char *fallback, int prefix)
{
	int32_t id;

	if ((id = chat_special_id(tok, piece)) >= 0)
		return chat_buf_id(b, id);
	return chat_buf_glue(b, tok, fallback, prefix);
}

static int
chat_turn_raw(struct chat_buf *b, const struct tokenizer *tok,
    const char *sys, int first, const char *user)
{
	return chat_buf_plain(b, tok, 1, 2, first ? sys : NULL, user);
}

static int
chat_turn_mistral(struct chat_buf *b, const struct tokenizer *tok,
    const char *sys, int first, int closed, const char *user)
{
	int32_t eos = tokenizer_eos(tok);
	int e;

	if (!first && !closed && eos >= 0 && (e = chat_buf_id(b, eos)) != 0)
		return e;
	if ((e = chat_buf_marker(b, tok, "[INST]", " [INST]", 0)) != 0)
		return e;
	if (first && sys != NULL)
		e = chat_buf_plain(b, tok, 0, 4, " ", sys, "\n\n", user);
	else if (*user != '\0')
		e = chat_buf_plain(b, tok, 0, 2, " ", user);
	if (e != 0)
		return e;
	return chat_buf_marker(b, tok, "[/INST]", " [/INST]", 0);
}

static int
chat_turn_llama2(struct chat_buf *b, const struct tokenizer *tok,
    const char *sys, int first, int closed, const char *user)
{
	int32_t bos = tokenizer_bos(tok), eos = tokenizer_eos(tok);
	int e;

	if (!first) {
		if (!closed && eos >= 0 && (e = chat_buf_id(b, eos)) != 0)
			return e;
		if (tokenizer_add_bos(tok) && bos >= 0 &&
		    (e = chat_buf_id(b, bos)) != 0)
			return e;
	}
	if ((e = chat_buf_marker(b, tok, "[INST]", " [INST]", 0)) != 0)
		return e;
	if (first && sys != NULL) {
		if ((e = chat_buf_glue(b, tok, " <<SYS>>\n", 0)) != 0 ||
		    (e = chat_buf_plain(b, tok, 0, 1, sys)) != 0 ||
		    (e = chat_buf_glue(b, tok, "\n<</SYS>>\n\n", 0)) != 0 ||
		    (e = chat_buf_plain(b, tok, 0, 1, user)) != 0)
			return e;
	} else if (*user != '\0') {
		if ((e = chat_buf_plain(b, tok, 0, 2, " ", user)) != 0)
			return e;
	}
	return chat_buf_marker(b, tok, "[/INST]", " [/INST]", 0);
}

/* One ChatML message header: <|im_start|>role\n */
static int
chat_chatml_start(struct chat_buf *b, const struct tokenizer *tok,
    const char *role_nl)
{
	int e;

	if ((e = chat_buf_marker(b, tok, "<|im_start|>", "<|im_start|>",
	    1)) != 0)
		return e;
	return chat_buf_glue(b, tok, role_nl, 1);
}

/* <|im_end|>\n */
static int
chat_chatml_end(struct chat_buf *b, const struct tokenizer *tok)
{
	int e;

	if ((e = chat_buf_marker(b, tok, "<|im_end|>", "<|im_end|>", 1)) != 0)
		return e;
	return chat_buf_glue(b, tok, "\n", 1);
}

static int
chat_turn_chatml(struct chat_buf *b, const struct tokenizer *tok,
    const char *sys, int first, int closed, const char *user)
{
	int e;

	if (first && sys != NULL) {
		if ((e = chat_chatml_start(b, tok, "system\n")) != 0 ||
		    (e = chat_buf_plain(b, tok, 1, 1, sys)) != 0 ||
		    (e = chat_chatml_end(b, tok)) != 0)
			return e;
	} else if (!first) {
		e = closed ? chat_buf_glue(b, tok, "\n", 1) :
		    chat_chatml_end(b, tok);
		if (e != 0)
			return e;
	}
	if ((e = chat_chatml_start(b, tok, "user\n")) != 0 ||
	    (e = chat_buf_plain(b, tok, 1, 1, user)) != 0 ||
	    (e = chat_chatml_end(b, tok)) != 0)
		return e;
	return chat_chatml_start(b, tok, "assistant\n");
}

/* Append one user turn to b (arguments as chat_render_turn()). */
static int
chat_turn(struct chat_buf *b, enum chat_template t,
    const struct tokenizer *tok, const char *sys, int first, int closed,
    const char *user)
{
	int32_t bos = tokenizer_bos(tok);
	int e;

	if (sys != NULL && *sys == '\0')
		sys = NULL;
	b->after_special = first ? 1 : (closed != 0);
	if (first && tokenizer_add_bos(tok) && bos >= 0 &&
	    (e = chat_buf_id(b, bos)) != 0)
		return e;
	switch (t) {
	case CHAT_TEMPLATE_RAW:
		return chat_turn_raw(b, tok, sys, first, user);
	case CHAT_TEMPLATE_MISTRAL:
		return chat_turn_mistral(b, tok, sys, first, closed, user);
	case CHAT_TEMPLATE_LLAMA2:
		return chat_turn_llama2(b, tok, sys, first, closed, user);
	case CHAT_TEMPLATE_CHATML:
		return chat_turn_chatml(b, tok, sys, first, closed, user);
	}
	return -EINVAL;
}

/* Hand b's ids to the caller, or free them on error. */
static int
chat_finish(struct chat_buf *b, int e, int32_t **ids, int64_t *n)
{
	if (e != 0) {
		free(b->v);
		return e;
	}
	*ids = b->v;
	*n = b->n;
	return 0;
}

int
chat_render_turn(enum chat_template t, const struct tokenizer *tok,
    const char *system, int first_turn, int prev_reply_closed,
    const char *user, int32_t **ids, int64_t *n)
{
	struct chat_buf b;
	int e;

	if (ids != NULL)
		*ids = NULL;
	if (n != NULL)
		*n = 0;
	if (!chat_valid(t) || tok == NULL || user == NULL || ids == NULL ||
	    n == NULL)
		return -EINVAL;
	if ((e = chat_buf_init(&b)) != 0)
		return e;
	e = chat_turn(&b, t, tok, system, first_turn, prev_reply_closed, user);
	return chat_finish(&b, e, ids, n);
}

int
chat_render_transcript(enum chat_template t, const struct tokenizer *tok,
    const char *system, const struct chat_message *msgs, size_t n_msgs,
    int32_t **ids, int64_t *n)
{
	const struct chat_message *m;
	struct chat_buf b;
	int32_t n_vocab;
	int64_t j;
	size_t i;
	int e, first, closed, after_reply;

	if (ids != NULL)
		*ids = NULL;
	if (n != NULL)
		*n = 0;
	if (!chat_valid(t) || tok == NULL || (msgs == NULL && n_msgs > 0) ||
	    ids == NULL || n == NULL)
		return -EINVAL;
	if ((e = chat_buf_init(&b)) != 0)
		return e;
	n_vocab = tokenizer_n_vocab(tok);
	first = 1;
	closed = 0;
	after_reply = 0;
	for (i = 0; i < n_msgs && e == 0; i++) {
		m = &msgs[i];
		if (m->role == CHAT_ROLE_USER) {
			if (m->text == NULL) {
				e = -EINVAL;
				break;
			}
			if (!after_reply)
				closed = 0;	/* an empty reply */
			e = chat_turn(&b, t, tok, system, first, closed,
			    m->text);
			first = 0;
			after_reply = 0;
		} else if (m->role == CHAT_ROLE_ASSISTANT) {
			if (first || after_reply) {
				e = -EINVAL;
				break;
			}
			if (m->ids != NULL) {
				if (m->n_ids < 0 ||
				    (e = chat_buf_grow(&b, m->n_ids)) != 0) {
					e = e ? e : -EINVAL;
					break;
				}
				for (j = 0; j < m->n_ids; j++) {
					if (m->ids[j] < 0 ||
					    m->ids[j] >= n_vocab) {
						e = -EINVAL;
						break;
					}
					b.v[b.n++] = m->ids[j];
				}
				closed = chat_reply_closed(t, tok, m->ids,
				    m->n_ids);
			} else {
				if (m->text == NULL) {
					e = -EINVAL;
					break;
				}
				b.after_special = 0;
				e = chat_buf_text(&b, tok, m->text,
				    strlen(m->text), 0, 0);
				closed = 0;
			}
			after_reply = 1;
		} else {
			e = -EINVAL;
		}
	}
	return chat_finish(&b, e, ids, n);
}

int
chat_stop_ids(enum chat_template t, const struct tokenizer *tok,
    int32_t out[CHAT_MAX_STOP_IDS])
{
	int32_t eos, im_end;
	int n = 0;

	if (!chat_valid(t) || tok == NULL || out == NULL)
		return -EINVAL;
	if ((eos = tokenizer_eos(tok)) >= 0)
		out[n++] = eos;
	if (t == CHAT_TEMPLATE_CHATML &&
	    (im_end = chat_special_id(tok, "<|im_end|>")) >= 0 && im_end != eos)
		out[n++] = im_end;
	return n;
}

int
chat_reply_closed(enum chat_template t, const struct tokenizer *tok,
    const int32_t *ids, int64_t n)
{
	int32_t stop[CHAT_MAX_STOP_IDS];
	int i, k;

	if (ids == NULL || n <= 0 || (k = chat_stop_ids(t, tok, stop)) <= 0)
		return 0;
	for (i = 0; i < k; i++)
		if (ids[n - 1] == stop[i])
			return 1;
	return 0;
}

/* memmem over a string that need not be NUL-terminated. */
static int
chat_contains(const char *s, size_t len, const char *needle)
{
	return memmem(s, len, needle, strlen(needle)) != NULL;
}

enum chat_template
chat_template_detect(const char *jinja, size_t len,
    const struct tokenizer *tok)
{
	if (jinja != NULL && len > 0) {
		if (chat_contains(jinja, len, "<|im_start|>"))
			return CHAT_TEMPLATE_CHATML;
		if (chat_contains(jinja, len, "<<SYS>>"))
			return CHAT_TEMPLATE_LLAMA2;
		if (chat_contains(jinja, len, "[INST]"))
			return CHAT_TEMPLATE_MISTRAL;
	}
	if (tok != NULL && chat_special_id(tok, "<|im_start|>") >= 0 &&
	    chat_special_id(tok, "<|im_end|>") >= 0)
		return CHAT_TEMPLATE_CHATML;
	return CHAT_TEMPLATE_MISTRAL;
}

const char *
chat_template_name(enum chat_template t)
{
	return chat_valid(t) ? chat_names[t] : NULL;
}

int
chat_template_parse(const char *name, enum chat_template *out)
{
	size_t i;

	if (name == NULL || out == NULL)
		return -EINVAL;
	for (i = 0; i < CHAT_N_TEMPLATES; i++) {
		if (strcasecmp(name, chat_names[i]) == 0) {
			*out = (enum chat_template)i;
			return 0;
		}
	}
	return -EINVAL;
}
