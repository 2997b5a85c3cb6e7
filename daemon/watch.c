/*
 * watch.c: the model file on disk while the daemon runs.
 *
 * Where the running model reads its weights decides what a change to the
 * file can do (lib/model.c DESIGN 1, model_weights_mapped()):
 *
 *  - In memory (the default): every weight the forward pass reads was
 *    copied out of the file at start.  Truncating the file, rewriting it
 *    in place or replacing it cannot reach the running model, which goes
 *    on giving the tokens it gave before.  The poll notices the change and
 *    says so once; the next start loads the file as it is then, and
 *    refuses it with model_load's error if it is damaged.
 *  - Mapped (MISTRAL_REPACK=0, or no memory for the copy): the weights are
 *    read straight from a read-only MAP_PRIVATE mapping of the file
 *    (lib/gguf.c).  Replaced atomically (a new file renamed over the path,
 *    as mv, install(1) and package managers do), the old inode stays
 *    mapped and whole until we unmap it: harmless, the poll says so once.
 *    Truncated in place (truncate(1), or cp onto it, which truncates
 *    first), the kernel unmaps the pages past the new end, and the next
 *    touch of one raises SIGBUS in whichever thread touched it, usually a
 *    compute thread in the middle of a forward pass; left alone, SIGBUS
 *    kills the process without a word.  Rewritten in place (same inode,
 *    new bytes), the mapping silently shows the new bytes, so replies
 *    would come from a mix of two models.
 *
 * In both modes the GGUF metadata (the start of the file) stays in the
 * mapping.  What the daemon needs of it is read at start (the tokenizer
 * by model_load, the chat template by residency_open), but the SIGBUS
 * handler stays installed whatever the mode, so that a read of the mapping
 * after the file shrank marks the model broken instead of killing us.
 *
 * DESIGN
 * 1. The SIGBUS handler (watch_sigbus_cb) looks at the faulting address.
 *    Inside the model's mapping, it maps anonymous zero pages over the rest
 *    of that mapping (MAP_FIXED, same protection), marks the model broken,
 *    writes one line to the log naming the file, and returns: the faulting
 *    instruction is retried, reads zeros, and the forward pass runs to its
 *    end on garbage that nobody will see (2).  Any other SIGBUS gets the
 *    default action, as if there were no handler.  mmap(2) is not on the
 *    POSIX list of async-signal-safe functions, but on Linux it is a bare
 *    system call wrapper that takes no user-space lock, and the alternative
 *    (siglongjmp out of a compute thread in the middle of a barrier) would
 *    wedge the thread pool.
 * 2. Broken means: the engine samples nothing from a step that ended with
 *    the model broken and fails every job with -EIO (engine_step); a job
 *    whose cache took part in that step is not snapshotted (its cache may
 *    hold garbage), so the session keeps its last good snapshot plus its
 *    transcript and the missing tokens are re-prefilled after a restart.
 *    Later turns are refused with UNAVAILABLE (method_dispatch) until a
 *    restart.  Everything else keeps working: listing, reading, exporting
 *    and deleting sessions, persistence, a clean SIGTERM.
 * 3. The poll (watch_timer_cb, every WATCH_POLL_MS, on the loop thread)
 *    fstat()s the inode loaded at start through a descriptor kept open
 *    since then, and stat()s the path: a smaller size (truncated), another
 *    size or modification time (rewritten in place, which raises no signal
 *    at all), or the path naming another inode or nothing (replaced,
 *    removed).  Mapped, truncated or rewritten marks the model broken
 *    before anything faults, and replaced is logged once as harmless.  In
 *    memory, the first change of any kind is logged once, with a systemd
 *    STATUS, and nothing is marked: turns go on.  The poll also turns a
 *    broken mark from the handler into a proper log line and a systemd
 *    STATUS.  Tests set MISTRALD_TEST_MODEL_POLL_MS (0 turns the poll
 *    off, so that the handler is what notices a truncation).
 *
 * The state is one atomic int written by the handler (any thread) and the
 * loop thread, and read by the engine worker; the mapping ranges are
 * written once before any thread starts, then only read.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mistrald.h"

#define WATCH_POLL_MS		1000
#define WATCH_POLL_ENV		"MISTRALD_TEST_MODEL_POLL_MS"
#define WATCH_MAX_RANGES	16

static atomic_int	 watch_state = WATCH_OK;
static uintptr_t	 watch_start_addr[WATCH_MAX_RANGES];
static uintptr_t	 watch_end_addr[WATCH_MAX_RANGES];
static int		 watch_nranges;
static long		 watch_pagesize;
static char		 watch_line[PATH_MAX + 256];	/* for the handler */
static size_t		 watch_line_len;

static char		*watch_path;
static int		 watch_fd = -1;
static struct stat	 watch_st;		/* the inode loaded at start */
static int		 watch_mapped;		/* weights read from the file */
static int		 watch_replaced;	/* mapped: logged once */
static int		 watch_changed;		/* in memory: logged once */
static int		 watch_reported;	/* broken: logged */
static char		*watch_message;		/* for clients */
static uv_timer_t	 watch_timer;
static int		 watch_timer_on;

/* SIGBUS (any thread): DESIGN 1. */
static void
watch_sigbus_cb(int sig, siginfo_t *si, void *uctx)
{
	uintptr_t a = (uintptr_t)si->si_addr, page;
	int expected = WATCH_OK;

	for (int i = 0; i < watch_nranges; i++) {
		if (a < watch_start_addr[i] || a >= watch_end_addr[i])
			continue;
		page = a & ~(uintptr_t)(watch_pagesize - 1);
		if (mmap((void *)page, watch_end_addr[i] - page, PROT_READ,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
		    MAP_FAILED)
			break;
		if (atomic_compare_exchange_strong(&watch_state, &expected,
		    WATCH_TRUNCATED))
			(void)!write(log_fileno(), watch_line, watch_line_len);
		return;
	}
	signal(SIGBUS, SIG_DFL);
	raise(SIGBUS);
}

/*
 * Find where the file (dev, ino) is mapped, from /proc/self/maps.  Lines
 * are "start-end perms offset major:minor inode path".
 */
static void
watch_find_ranges(const struct stat *st)
{
	unsigned long long start, end, off, ino;
	unsigned int maj, min;
	char line[PATH_MAX + 128], perms[8];
	FILE *f;

	watch_nranges = 0;
	if ((f = fopen("/proc/self/maps", "re")) == NULL) {
		log_warn("watch_find_ranges: /proc/self/maps");
		return;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &start, &end,
		    perms, &off, &maj, &min, &ino) != 7)
			continue;
		if (ino != (unsigned long long)st->st_ino ||
		    maj != major(st->st_dev) || min != minor(st->st_dev))
			continue;
		if (watch_nranges == WATCH_MAX_RANGES)
			break;
		watch_start_addr[watch_nranges] = (uintptr_t)start;
		watch_end_addr[watch_nranges] = (uintptr_t)end;
		watch_nranges++;
	}
	fclose(f);
}

/* The model is broken: tell the log, systemd and later clients (loop). */
static void
watch_report(void)
{
	int state = atomic_load(&watch_state);

	if (state == WATCH_OK || watch_reported)
		return;
	watch_reported = 1;
	if (state == WATCH_TRUNCATED)
		xasprintf(&watch_message, "the model file %s was truncated "
		    "while in use; restart mistrald once it is whole again",
		    watch_path);
	else
		xasprintf(&watch_message, "the model file %s was modified in "
		    "place while in use; restart mistrald to load it again",
		    watch_path);
	log_warnx("MODEL FILE DAMAGED: %s.  Turns are refused until a "
	    "restart; sessions, their transcripts and persistence are not "
	    "affected (replace model files by renaming a new file over them, "
	    "never by writing into them)", watch_message);
	sd_notifyf("STATUS=model file damaged; refusing turns until a "
	    "restart");
}

/* What became of the inode loaded at start: WATCH_OK (unchanged, or
 * unknown), WATCH_TRUNCATED (smaller) or WATCH_MODIFIED (another size or
 * modification time). */
static int
watch_inode_state(void)
{
	struct stat st;

	if (watch_fd == -1 || fstat(watch_fd, &st) != 0)
		return WATCH_OK;
	if (st.st_size < watch_st.st_size)
		return WATCH_TRUNCATED;
	if (st.st_size != watch_st.st_size ||
	    st.st_mtim.tv_sec != watch_st.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != watch_st.st_mtim.tv_nsec)
		return WATCH_MODIFIED;
	return WATCH_OK;
}

/* Whether the path now names another inode, or nothing. */
static int
watch_path_moved(void)
{
	struct stat st;

	return stat(watch_path, &st) != 0 || st.st_ino != watch_st.st_ino ||
	    st.st_dev != watch_st.st_dev;
}

/* In memory: log the first change to the file, once, unless a read of
 * the mapping already found it broken (DESIGN 3). */
static void
watch_note_change(void)
{
	int state;

	if (watch_changed || atomic_load(&watch_state) != WATCH_OK)
		return;
	if ((state = watch_inode_state()) == WATCH_OK && !watch_path_moved())
		return;
	watch_changed = 1;
	log_warnx("the model file %s was %s on disk; still serving the model "
	    "as loaded at start (its weights were copied to memory, which the "
	    "change does not reach); the next start loads the file as it is "
	    "then, and refuses it if it is damaged", watch_path,
	    state == WATCH_TRUNCATED ? "truncated" : state == WATCH_MODIFIED ?
	    "modified in place" : "replaced or removed");
	sd_notifyf("STATUS=serving %s as loaded at start; the model file "
	    "changed on disk since", model_name(model));
}

/* The poll (loop thread): DESIGN 3. */
static void
watch_timer_cb(uv_timer_t *t)
{
	int state, expected = WATCH_OK;

	if (!watch_mapped) {
		watch_note_change();
		watch_report();
		return;
	}
	if (atomic_load(&watch_state) == WATCH_OK &&
	    (state = watch_inode_state()) != WATCH_OK)
		atomic_compare_exchange_strong(&watch_state, &expected, state);
	watch_report();
	if (!watch_replaced && watch_path_moved()) {
		watch_replaced = 1;
		log_info("the model file %s was replaced or removed on disk; "
		    "still serving the model loaded at start (restart to load "
		    "the new file)", watch_path);
	}
}

/*
 * Start watching the model file at path, which the model was just loaded
 * from: install the SIGBUS handler and the poll, whether the weights are
 * read from the file or from memory (DESIGN 3).  Call before any other
 * thread starts.  Failures only make the watch blind; they are logged.
 */
void
watch_start(uv_loop_t *l, const char *path)
{
	struct sigaction sa;
	const char *env;
	uint64_t poll_ms = WATCH_POLL_MS;
	int n;

	watch_path = xstrdup(path);
	watch_pagesize = sysconf(_SC_PAGESIZE);
	n = snprintf(watch_line, sizeof watch_line, "mistrald: fatal: SIGBUS "
	    "reading the model file %s: it was truncated while in use; the "
	    "running turns fail, and further turns are refused until a "
	    "restart\n", path);
	watch_line_len = n > 0 && (size_t)n < sizeof watch_line ? (size_t)n :
	    sizeof watch_line - 1;

	if ((watch_fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 ||
	    fstat(watch_fd, &watch_st) != 0) {
		log_warn("watch_start: %s", path);
		if (watch_fd != -1)
			close(watch_fd);
		watch_fd = -1;
	} else
		watch_find_ranges(&watch_st);
	watch_mapped = model_weights_mapped(model);
	log_debug("watch_start: %s mapped in %d range(s), weights read from "
	    "%s", path, watch_nranges, watch_mapped ? "the mapping" : "memory");

	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = watch_sigbus_cb;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) != 0)
		log_warn("watch_start: sigaction");

	if ((env = getenv(WATCH_POLL_ENV)) != NULL)
		poll_ms = strtoull(env, NULL, 10);
	uv_timer_init(l, &watch_timer);
	watch_timer_on = 1;
	if (poll_ms > 0)
		uv_timer_start(&watch_timer, watch_timer_cb, poll_ms, poll_ms);
	uv_unref((uv_handle_t *)&watch_timer);
}

/* The model's state: WATCH_OK, or why it must not be used (any thread). */
int
watch_state_now(void)
{
	return atomic_load(&watch_state);
}

/* NULL while the model is usable, else a sentence for clients (loop). */
const char *
watch_error(void)
{
	if (atomic_load(&watch_state) == WATCH_OK)
		return NULL;
	watch_report();
	return watch_message;
}

/* Stop the poll (shutdown). */
void
watch_stop(void)
{
	if (watch_timer_on) {
		watch_timer_on = 0;
		uv_close((uv_handle_t *)&watch_timer, NULL);
	}
	if (watch_fd != -1) {
		close(watch_fd);
		watch_fd = -1;
	}
	free(watch_path);
	watch_path = NULL;
	free(watch_message);
	watch_message = NULL;
}
