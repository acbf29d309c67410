// rtrace.hpp — header-only C++ wrapper over rtrace.h: scoped spans and
// std::string tokens. Link with -lrtrace as for the C API.
//
//     rtrace::Session session("svc-cpp");     // rtrace_init / rtrace_shutdown
//     {
//         rtrace::Span span("handle");        // ends at the closing brace
//         std::string token = rtrace::flow_out();
//     }
#ifndef RTRACE_HPP
#define RTRACE_HPP

#include <string>

#include "rtrace.h"

namespace rtrace {

// A span on the calling thread from construction to destruction. Not
// copyable or movable: it must end on the thread, and in the scope, that
// began it.
class Span {
public:
    explicit Span(const char *name) noexcept { rtrace_begin(name); }
    explicit Span(const std::string &name) noexcept { rtrace_begin(name.c_str()); }
    ~Span() { rtrace_end(); }
    Span(const Span &) = delete;
    Span &operator=(const Span &) = delete;
    Span(Span &&) = delete;
    Span &operator=(Span &&) = delete;
};

// Records from construction to destruction (rtrace_init / rtrace_shutdown).
class Session {
public:
    explicit Session(const char *session = nullptr, const char *collector = nullptr) noexcept
        : ok_(rtrace_init(session, collector) == 0) {}
    ~Session() {
        if (ok_) rtrace_shutdown();
    }
    // False if rtrace_init failed (the reason is on stderr).
    bool ok() const noexcept { return ok_; }
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

private:
    bool ok_;
};

inline void instant(const char *name) noexcept { rtrace_instant(name); }
inline void counter(const char *name, double value) noexcept { rtrace_counter(name, value); }
inline void thread_name(const char *name) noexcept { rtrace_thread_name(name); }
inline void flow_in(const std::string &token) noexcept { rtrace_flow_in(token.c_str()); }

// Records the sending end of a flow; returns the token to send.
inline std::string flow_out() {
    char buf[RTRACE_FLOW_TOKEN_SIZE];
    size_t n = rtrace_flow_out(buf, sizeof buf);
    return std::string(buf, n);
}

}  // namespace rtrace

#endif  // RTRACE_HPP
