/* A C client of examples/native/service.py: sends requests over a Unix
 * socket, each carrying a flow token, and records the replies' flows.
 *
 * Build: scripts/build-native, then
 *   gcc examples/native/c/client.c -Iinclude -Ltarget/release \
 *       -Wl,-rpath,$PWD/target/release -lrtrace -o c-client
 *   (or: gcc client.c $(pkg-config --cflags --libs rtrace), with
 *    PKG_CONFIG_PATH=target/release/pkgconfig)
 * Usage: c-client SOCKET [REQUESTS]   (records to $RTRACE_COLLECTOR, else
 *        to ./rtrace-c-client-<pid>.rtrace)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "rtrace.h"

/* Sends one request and waits for its reply; returns the result or -1. */
static long request(FILE *conn, int n) {
    char token[RTRACE_FLOW_TOKEN_SIZE];
    char line[256];
    char reply_token[128];
    long result = -1;

    rtrace_begin("request");
    rtrace_counter("c_in_flight", 1);
    rtrace_flow_out(token, sizeof token);
    fprintf(conn, "%s c-client %d\n", token, n);
    fflush(conn);
    if (fgets(line, sizeof line, conn) && sscanf(line, "%127s %ld", reply_token, &result) == 2) {
        rtrace_flow_in(reply_token);
    }
    rtrace_counter("c_in_flight", 0);
    rtrace_end();
    return result;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET [REQUESTS]\n", argv[0]);
        return 2;
    }
    int requests = argc > 2 ? atoi(argv[2]) : 5;
    rtrace_init("c-client", NULL); /* on failure: reported, the program runs untraced */
    rtrace_thread_name("c-main");

    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("c-client: connect");
        return 1;
    }
    FILE *conn = fdopen(fd, "r+");
    long total = 0;
    rtrace_begin("session");
    for (int i = 0; i < requests; i++) {
        total += request(conn, 1000 + i);
    }
    rtrace_end();
    fclose(conn);
    rtrace_shutdown();
    printf("c-client: %d requests, total %ld\n", requests, total);
    return 0;
}
