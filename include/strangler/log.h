/* The error log: one line per event on stderr, with time and level. */
#ifndef STRANGLER_LOG_H
#define STRANGLER_LOG_H

enum sg_log_level { SG_LOG_DEBUG = 0, SG_LOG_INFO, SG_LOG_WARN, SG_LOG_ERROR };

extern enum sg_log_level sg_log_threshold;

void sg_log(enum sg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sg_debug(...) do { if (sg_log_threshold <= SG_LOG_DEBUG) sg_log(SG_LOG_DEBUG, __VA_ARGS__); } while (0)
#define sg_info(...) sg_log(SG_LOG_INFO, __VA_ARGS__)
#define sg_warn(...) sg_log(SG_LOG_WARN, __VA_ARGS__)
#define sg_error(...) sg_log(SG_LOG_ERROR, __VA_ARGS__)

#endif
