/*
 * rtrace.h — record a C or C++ program's spans, instants, counters and flow
 * arrows on the same timeline as the Python processes it talks to.
 *
 * Link with -lrtrace (librtrace.so or librtrace.a from
 * `scripts/build-native`, in target/release/; with the static library also
 * link -lpthread -ldl -lm). pkg-config: target/release/pkgconfig/rtrace.pc.
 *
 *     rtrace_init("svc-c", NULL);        // $RTRACE_COLLECTOR, else ./rtrace-svc-c-<pid>.rtrace
 *     rtrace_begin("handle");
 *     rtrace_counter("queue_depth", 3);
 *     char token[RTRACE_FLOW_TOKEN_SIZE];
 *     rtrace_flow_out(token, sizeof token);   // send `token` with the message
 *     rtrace_end();
 *     rtrace_shutdown();                 // also runs at exit()
 *
 * Rules:
 * - Every function may be called from any thread. Spans nest per thread:
 *   rtrace_end() ends the innermost span that the same thread began.
 * - Strings are copied during the call; the library never keeps a pointer.
 *   Pass NUL-terminated UTF-8.
 * - Nothing here crashes the program on bad arguments or misuse: a NULL
 *   name (recorded as "(null)"), invalid UTF-8 (replaced by U+FFFD), an
 *   rtrace_end() without a span, a call before rtrace_init() or after
 *   rtrace_shutdown() (ignored), a malformed token, a too-small token
 *   buffer: each kind of problem is reported once on stderr, as a line
 *   starting with "rtrace: ", and the call returns.
 * - Spans still open at rtrace_shutdown() (or at exit) end then; a thread
 *   that exits hands its events over and ends its open spans.
 * - One recording per process. Not fork-safe: a child made by fork()
 *   records nothing (call rtrace_init() in it only after exec).
 */
#ifndef RTRACE_H
#define RTRACE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes a flow token needs: 55 characters and the terminating NUL. */
#define RTRACE_FLOW_TOKEN_SIZE 56

/*
 * Starts recording this process. session: the name shown in the timeline
 * (NULL: $RTRACE_SESSION, else the program's name). collector_or_NULL:
 * "unix:///path.sock" or "tcp://host:port" (NULL: $RTRACE_COLLECTOR, else a
 * local stream file $RTRACE_OUTPUT_DIR/rtrace-<session>-<pid>.rtrace, "."
 * by default). While the collector is unreachable, events go to a spill
 * file and the program never blocks.
 * Returns 0 on success, -1 on failure (already recording, bad address,
 * file not writable), with the reason on stderr.
 */
int rtrace_init(const char *session, const char *collector_or_NULL);

/* Stops recording: ends open spans, writes every event and the end marker.
 * Registered with atexit() by rtrace_init(); calling it again is a no-op. */
void rtrace_shutdown(void);

/* Begins a span named `name` on the calling thread. */
void rtrace_begin(const char *name);

/* Ends the innermost span open on the calling thread. */
void rtrace_end(void);

/* Records an instant (a point in time) named `name`. */
void rtrace_instant(const char *name);

/* Records the new value of the counter `name` (its own counter track). */
void rtrace_counter(const char *name, double value);

/*
 * Records the sending end of a flow arrow and writes its token — a W3C
 * traceparent "00-<32 hex>-<16 hex>-01", 55 characters — plus a NUL into
 * token_buf. Send the token with the message; the receiver (C, Rust or
 * Python) passes it to its flow_in. Returns the token's length, 55.
 * If token_buf is NULL or buf_len < RTRACE_FLOW_TOKEN_SIZE: records
 * nothing, writes "" when buf_len > 0, reports it, returns 0.
 * While not recording, still writes a valid token and returns 55.
 */
size_t rtrace_flow_out(char *token_buf, size_t buf_len);

/* Records the receiving end of the flow whose token arrived with a
 * message (from any rtrace process). Malformed tokens are reported. */
void rtrace_flow_in(const char *token);

/* Names the calling thread in the timeline (kept across recordings; may be
 * called before rtrace_init()). */
void rtrace_thread_name(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* RTRACE_H */
