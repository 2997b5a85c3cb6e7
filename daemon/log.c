/*
 * log.c: the daemon's log, one line per event with a level.
 *
 * Lines go to stderr (journald picks them up under systemd) or, when a
 * log file is configured, are appended to it; SIGHUP reopens the file so
 * logrotate can move it away.  Under journald (JOURNAL_STREAM set and
 * naming our stderr) each line starts with the "<N>" priority prefix
 * that journald understands; elsewhere with a timestamp and the level.
 *
 * Any thread may log: a line is formatted into a local buffer and
 * written with one write(2) on an O_APPEND descriptor, so lines from the
 * loop and the engine worker never interleave.  The descriptor itself is
 * swapped by log_open() on the loop thread with dup2(), which is atomic
 * for concurrent writers.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mistrald.h"

static int	 log_level_now = LOG_LEVEL_INFO;
static int	 log_fd = STDERR_FILENO;
static int	 log_journal;		/* stderr is a journald stream */

static const char *const log_names[] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARN] = "warning",
	[LOG_LEVEL_FATAL] = "fatal",
};
static const int log_syslog_prio[] = {
	[LOG_LEVEL_DEBUG] = 7,
	[LOG_LEVEL_INFO] = 6,
	[LOG_LEVEL_WARN] = 4,
	[LOG_LEVEL_FATAL] = 2,
};

/* Parse a level name for the log-level setting.  Returns the level or -1. */
int
log_level_parse(const char *s)
{
	if (strcmp(s, "debug") == 0)
		return LOG_LEVEL_DEBUG;
	if (strcmp(s, "info") == 0)
		return LOG_LEVEL_INFO;
	if (strcmp(s, "warning") == 0 || strcmp(s, "warn") == 0)
		return LOG_LEVEL_WARN;
	return -1;
}

/* Is stderr the stream journald gave us?  JOURNAL_STREAM is "dev:ino". */
static int
log_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (e == NULL || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

/*
 * Set the level and (re)open the destination: path NULL or "" means
 * stderr.  Called at start and on SIGHUP.  Returns 0, or -1 with errno
 * set when the file cannot be opened (the old destination is kept).
 */
int
log_open(int level, const char *path)
{
	int fd;

	log_level_now = level;
	if (path == NULL || *path == '\0') {
		if (log_fd != STDERR_FILENO)
			close(log_fd);
		log_fd = STDERR_FILENO;
		log_journal = log_is_journal();
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1)
		return -1;
	if (log_fd == STDERR_FILENO) {
		log_fd = fd;
	} else {
		dup2(fd, log_fd);
		close(fd);
	}
	log_journal = 0;
	return 0;
}

/* The descriptor lines go to; a signal handler may write(2) to it. */
int
log_fileno(void)
{
	return log_fd;
}

/* Append to a line buffer, clamping at its end. */
static void
log_append(char *line, size_t cap, size_t *len, int n)
{
	if (n > 0)
		*len += (size_t)n < cap - *len ? (size_t)n : cap - *len - 1;
}

static void
log_vwrite(int level, int errnum, const char *fmt, va_list ap)
{
	char line[2048];
	size_t len = 0, cap = sizeof line - 1;

	if (level < log_level_now)
		return;
	if (log_journal) {
		log_append(line, cap, &len, snprintf(line, cap, "<%d>",
		    log_syslog_prio[level]));
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		log_append(line, cap, &len, snprintf(line, cap,
		    "%04d-%02d-%02d %02d:%02d:%02d.%03ld %s: ",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
		    log_names[level]));
	}
	log_append(line, cap, &len, vsnprintf(line + len, cap - len, fmt, ap));
	if (errnum != 0 && cap - len > 3) {
		memcpy(line + len, ": ", 2);
		len += 2;
		log_append(line, cap, &len, snprintf(line + len, cap - len,
		    "%s", strerror(errnum)));
	}
	/* Control characters from outside (a client's session name, say)
	 * must not forge log lines. */
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
			line[i] = '?';
	}
	line[len++] = '\n';
	(void)!write(log_fd, line, len);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_DEBUG, 0, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_INFO, 0, fmt, ap);
	va_end(ap);
}

/* A warning that appends strerror(errno). */
void
log_warn(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_WARN, saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_WARN, 0, fmt, ap);
	va_end(ap);
}

/* Start-up failures only: log with strerror(errno) and exit 1. */
void
fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_FATAL, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_FATAL, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
