/*
 * The physical floor of a tracing hook, for benches/overhead.py.
 *
 * One source, built twice by benches/floor.py with the benchmarked
 * interpreter's own headers (no setuptools, no pip):
 *
 *   FLOOR_STAMP=0  -> module _floor_noop:  every callback returns at once.
 *                     What the interpreter costs just to call a C hook.
 *   FLOOR_STAMP=1  -> module _floor_stamp: every callback reads the clock
 *                     and stores a 16-byte event (ticks, object | kind) into
 *                     a preallocated buffer. What any recorder must pay at
 *                     least: the dispatch plus a clock read and a store.
 *
 * The callbacks come in both of CPython's flavours:
 *   - a C profile function (PyEval_SetProfile; all threads on 3.12+), which
 *     sees call, return, c_call, c_return and c_exception;
 *   - sys.monitoring callbacks (3.12+), METH_FASTCALL C functions that
 *     benches/floor.py registers for the events rtrace uses: PY_START,
 *     PY_RESUME, PY_THROW, PY_RETURN, PY_YIELD, PY_UNWIND, CALL, C_RETURN,
 *     C_RAISE. CALL and C_RETURN store an event only for callables
 *     implemented in C (a PyCFunction or a method descriptor), as a
 *     recorder does: a Python callable is recorded by its PY_START.
 *
 * The buffer: one ring of RING_EVENTS events (16 MiB, the size of rtrace's
 * default buffer_events), written in place and reused when full, touched at
 * import so that page faults are not measured. All callbacks run with the
 * GIL held, which serialises them: one buffer serves every thread without
 * a lock. The floor therefore omits what a real recorder adds: telling
 * threads apart, naming functions, handing full buffers to a writer.
 *
 * The clock: the CPU's time-stamp counter where there is one (what the
 * quanta crate, and so rtrace, reads), else CLOCK_MONOTONIC; use_clock()
 * switches between the two.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define FLOOR_HAVE_TSC 1
#else
#define FLOOR_HAVE_TSC 0
#endif

#ifndef FLOOR_STAMP
#error "build with -DFLOOR_STAMP=0 (no-op) or -DFLOOR_STAMP=1 (stamp and store)"
#endif

#if FLOOR_STAMP
#define FLOOR_MODULE _floor_stamp
#else
#define FLOOR_MODULE _floor_noop
#endif
#define FLOOR_CAT2(a, b) a##b
#define FLOOR_CAT(a, b) FLOOR_CAT2(a, b)
#define FLOOR_STR2(a) #a
#define FLOOR_STR(a) FLOOR_STR2(a)

enum { KIND_CALL = 1, KIND_RETURN = 2, KIND_UNWIND = 3, KIND_C_CALL = 4, KIND_C_RETURN = 5 };

#if FLOOR_STAMP

#define RING_EVENTS ((size_t)1 << 20)

typedef struct {
    uint64_t ticks;
    uint64_t what; /* object address | kind */
} floor_event;

static floor_event *ring;
static size_t ring_next;
static uint64_t ring_wraps;
static int clock_tsc = FLOOR_HAVE_TSC;

static inline uint64_t floor_now(void)
{
#if FLOOR_HAVE_TSC
    if (clock_tsc) {
        return __rdtsc();
    }
#endif
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void floor_stamp(const void *object, unsigned kind)
{
    floor_event *event = &ring[ring_next];
    event->ticks = floor_now();
    event->what = (uint64_t)(uintptr_t)object | kind;
    if (++ring_next == RING_EVENTS) {
        ring_next = 0;
        ring_wraps++;
    }
}

#define STAMP(object, kind) floor_stamp((object), (kind))
#else
#define STAMP(object, kind) ((void)(object), (void)(kind))
#endif

static inline int is_c_callable(PyObject *callable)
{
    return PyCFunction_Check(callable) || Py_IS_TYPE(callable, &PyMethodDescr_Type);
}

/* ---- the C profile function ------------------------------------------- */

static int floor_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
#if FLOOR_STAMP
    switch (what) {
    case PyTrace_CALL:
        STAMP(frame, KIND_CALL);
        break;
    case PyTrace_RETURN:
        STAMP(frame, KIND_RETURN);
        break;
    case PyTrace_C_CALL:
        STAMP(arg, KIND_C_CALL);
        break;
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        STAMP(arg, KIND_C_RETURN);
        break;
    default:
        break;
    }
#else
    (void)frame, (void)what, (void)arg;
#endif
    return 0;
}

static PyObject *profile_install(PyObject *module, PyObject *all_threads)
{
    (void)module;
    int all = PyObject_IsTrue(all_threads);
    if (all < 0) {
        return NULL;
    }
    if (all) {
#if PY_VERSION_HEX >= 0x030C0000
        PyEval_SetProfileAllThreads(floor_profile, NULL);
#else
        PyErr_SetString(PyExc_RuntimeError, "PyEval_SetProfileAllThreads needs Python 3.12+");
        return NULL;
#endif
    } else {
        PyEval_SetProfile(floor_profile, NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *profile_uninstall(PyObject *module, PyObject *all_threads)
{
    (void)module;
    int all = PyObject_IsTrue(all_threads);
    if (all < 0) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (all) {
        PyEval_SetProfileAllThreads(NULL, NULL);
        Py_RETURN_NONE;
    }
#endif
    PyEval_SetProfile(NULL, NULL);
    Py_RETURN_NONE;
}

/* ---- sys.monitoring callbacks (METH_FASTCALL) -------------------------- */

/* PY_START, PY_RESUME, PY_THROW: (code, offset[, exception]) */
static PyObject *py_start(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs > 0) {
        STAMP(args[0], KIND_CALL);
    }
    Py_RETURN_NONE;
}

/* PY_RETURN, PY_YIELD: (code, offset, value) */
static PyObject *py_return(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs > 0) {
        STAMP(args[0], KIND_RETURN);
    }
    Py_RETURN_NONE;
}

/* PY_UNWIND: (code, offset, exception) */
static PyObject *py_unwind(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs > 0) {
        STAMP(args[0], KIND_UNWIND);
    }
    Py_RETURN_NONE;
}

/* CALL: (code, offset, callable, arg0) */
static PyObject *call(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs > 2 && is_c_callable(args[2])) {
        STAMP(args[2], KIND_C_CALL);
    }
    Py_RETURN_NONE;
}

/* C_RETURN, C_RAISE: (code, offset, callable, arg0) */
static PyObject *c_return(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    if (nargs > 2 && is_c_callable(args[2])) {
        STAMP(args[2], KIND_C_RETURN);
    }
    Py_RETURN_NONE;
}

/* ---- bookkeeping -------------------------------------------------------- */

static PyObject *events(PyObject *module, PyObject *unused)
{
    (void)module, (void)unused;
#if FLOOR_STAMP
    return PyLong_FromUnsignedLongLong(ring_wraps * RING_EVENTS + ring_next);
#else
    return PyLong_FromLong(0);
#endif
}

static PyObject *use_clock(PyObject *module, PyObject *name)
{
    (void)module;
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL) {
        return NULL;
    }
    if (strcmp(s, "monotonic") == 0) {
#if FLOOR_STAMP
        clock_tsc = 0;
#endif
    } else if (strcmp(s, "tsc") == 0) {
        if (!FLOOR_HAVE_TSC) {
            PyErr_SetString(PyExc_ValueError, "no time-stamp counter on this CPU architecture");
            return NULL;
        }
#if FLOOR_STAMP
        clock_tsc = 1;
#endif
    } else {
        PyErr_Format(PyExc_ValueError, "clock must be 'tsc' or 'monotonic', not %R", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef floor_methods[] = {
    {"profile_install", profile_install, METH_O,
     "profile_install(all_threads): install the C profile function"},
    {"profile_uninstall", profile_uninstall, METH_O,
     "profile_uninstall(all_threads): remove it"},
    {"py_start", (PyCFunction)(void (*)(void))py_start, METH_FASTCALL,
     "sys.monitoring PY_START/PY_RESUME/PY_THROW callback"},
    {"py_return", (PyCFunction)(void (*)(void))py_return, METH_FASTCALL,
     "sys.monitoring PY_RETURN/PY_YIELD callback"},
    {"py_unwind", (PyCFunction)(void (*)(void))py_unwind, METH_FASTCALL,
     "sys.monitoring PY_UNWIND callback"},
    {"call", (PyCFunction)(void (*)(void))call, METH_FASTCALL, "sys.monitoring CALL callback"},
    {"c_return", (PyCFunction)(void (*)(void))c_return, METH_FASTCALL,
     "sys.monitoring C_RETURN/C_RAISE callback"},
    {"events", events, METH_NOARGS, "events stored so far (0 for the no-op floor)"},
    {"use_clock", use_clock, METH_O, "use_clock('tsc' | 'monotonic'): the clock stamped"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef floor_module = {
    PyModuleDef_HEAD_INIT,
    FLOOR_STR(FLOOR_MODULE),
    "The floor of a tracing hook (benches/floor_hooks.c).",
    -1,
    floor_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC FLOOR_CAT(PyInit_, FLOOR_MODULE)(void)
{
#if FLOOR_STAMP
    if (ring == NULL) {
        ring = PyMem_RawMalloc(RING_EVENTS * sizeof(floor_event));
        if (ring == NULL) {
            return PyErr_NoMemory();
        }
        memset(ring, 0, RING_EVENTS * sizeof(floor_event)); /* fault the pages in now */
    }
#endif
    PyObject *module = PyModule_Create(&floor_module);
    if (module != NULL) {
        const char *stamp = FLOOR_STAMP ? "stamp" : "noop";
        if (PyModule_AddStringConstant(module, "VARIANT", stamp) < 0) {
            Py_DECREF(module);
            return NULL;
        }
    }
    return module;
}
