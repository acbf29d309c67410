/* Misuses the C API in every way the header lists; must run to the end,
 * report each kind of problem once and leave a valid stream. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "rtrace.h"

static void *worker(void *arg) {
    (void)arg;
    rtrace_thread_name("worker");
    rtrace_begin("worker span never ended");
    rtrace_instant("worker instant");
    return NULL; /* thread exit ends the span */
}

int main(void) {
    char token[RTRACE_FLOW_TOKEN_SIZE];
    char small[10] = "xxxxxxxxx";

    rtrace_begin("before init"); /* not recording: reported, ignored */
    rtrace_thread_name(NULL);    /* NULL: reported */
    if (rtrace_flow_out(token, sizeof token) != 55) return 10; /* unrecorded token */

    if (rtrace_init("abuse", NULL) != 0) return 11;
    if (rtrace_init("again", NULL) != -1) return 12; /* already recording */

    rtrace_end();                          /* unbalanced */
    rtrace_end();
    rtrace_begin(NULL);                    /* a span named "(null)" */
    rtrace_instant("\xff\xfe bad utf-8");  /* replaced */
    rtrace_counter(NULL, 1.5);
    rtrace_end();                          /* closes "(null)" */
    rtrace_flow_in(NULL);
    rtrace_flow_in("not a token");
    if (rtrace_flow_out(small, sizeof small) != 0 || small[0] != '\0') return 13;
    if (rtrace_flow_out(NULL, 100) != 0) return 14;
    if (rtrace_flow_out(token, sizeof token) != 55 || strlen(token) != 55) return 15;
    rtrace_flow_in(token);

    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) return 16;
    pthread_join(t, NULL);

    rtrace_begin("open at shutdown");
    rtrace_shutdown();
    rtrace_shutdown();
    rtrace_end(); /* after shutdown: ignored */
    puts("survived");
    return 0;
}
