/* mqstore._cl_write: the commitlog append path's plain values, encoded in C straight from
 * the Python objects into the destination buffer (the mapped CommitLog file, or the
 * transient store pool's buffer).
 *
 * The cffi helper (mqstore._native) takes buffers and numpy columns, so a batch of plain
 * values reached mq_cl_encode only after a b"".join, a numpy array of lengths and their
 * cumulative sums, and a single append() paid a cffi from_buffer of the whole mapping per
 * call. Here each bytes object is read where it lies and each message is written by
 * mq_cl_encode_one (native/cl_encode.c, compiled into this module too), so the bytes are
 * those of the batch encoder by construction.
 *
 *   values_scan(values, overhead, limit) -> (total, bad)
 *       values: a list or tuple whose items are all exactly bytes (TypeError otherwise:
 *       the engine then takes its general path); total = sum of overhead + len(value);
 *       bad = the first index whose overhead + len(value) exceeds limit, or -1
 *   values_fit(values, first, overhead, room) -> (count, nbytes)
 *       the longest run values[first:first + count] whose sizes (overhead + len) add up to
 *       at most room bytes, and that sum
 *   encode_values_into(buf, pos, topic, values, first, count, uniq_prefix, uniq_first,
 *                      queue_id, queue_offset, phys_offset, store_timestamp) -> int
 *       messages values[first:first + count] back to back into buf[pos:], message j with
 *       UNIQ_KEY number uniq_first + j, QUEUEOFFSET queue_offset + j and PHYSICALOFFSET its
 *       own offset from phys_offset; returns the bytes written. ValueError when they do not
 *       fit buf or an argument is out of range (nothing meaningful was written then)
 *   encode_one_into(buf, pos, topic, body, uniq_prefix, uniq_number, queue_id,
 *                   queue_offset, phys_offset, store_timestamp) -> int
 *       one message (the single append() path); the same errors
 *
 * CRC-32 comes from native/crc.c, compiled into this module too and initialised at import
 * (PCLMULQDQ when the CPU has it), as in mqstore._native.
 *
 * The pure-Python reference is mqstore/_purepy_cl_write.py (the same four names), used
 * under MQSTORE_NATIVE=off; tests/commitlog/test_write_path.py compares the two.
 *
 * Every write is bounded by the destination's length (mq_cl_encode checks each message
 * against the capacity left before writing it). The GIL is held throughout: the values are
 * Python objects that another thread could drop from the list, and a batch's encoding is
 * short (about 0.3 ms for a megabyte, the same as the cffi kernel, which keeps it too).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mqstore_internal.h"

static int values_items(PyObject *values, PyObject ***items, Py_ssize_t *n)
{
    if (PyList_CheckExact(values)) {
        *items = ((PyListObject *)values)->ob_item;
        *n = PyList_GET_SIZE(values);
    } else if (PyTuple_CheckExact(values)) {
        *items = ((PyTupleObject *)values)->ob_item;
        *n = PyTuple_GET_SIZE(values);
    } else {
        PyErr_SetString(PyExc_TypeError, "values must be a list or tuple of bytes");
        return -1;
    }
    return 0;
}

static int as_i64(PyObject *o, int64_t *out)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

static PyObject *clw_values_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    PyObject **items;
    Py_ssize_t n;
    int64_t overhead, limit;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "values_scan(values, overhead, limit)");
        return NULL;
    }
    /* the numbers first: PyLong_AsLongLong may run an __index__ that changes the list */
    if (as_i64(args[1], &overhead) < 0 || as_i64(args[2], &limit) < 0 ||
        values_items(args[0], &items, &n) < 0)
        return NULL;
    if (overhead < 0 || overhead > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "overhead outside [0, 2^31)");
        return NULL;
    }
    int64_t total = 0, bad = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_CheckExact(items[i])) {
            PyErr_SetString(PyExc_TypeError, "values must all be bytes");
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t size = overhead + (int64_t)PyBytes_GET_SIZE(items[i]);
        if (bad < 0 && size > limit)
            bad = (int64_t)i;
        total += size;
    }
    return Py_BuildValue("(LL)", (long long)total, (long long)bad);
}

static PyObject *clw_values_fit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    PyObject **items;
    Py_ssize_t n;
    int64_t first, overhead, room;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "values_fit(values, first, overhead, room)");
        return NULL;
    }
    if (as_i64(args[1], &first) < 0 || as_i64(args[2], &overhead) < 0 ||
        as_i64(args[3], &room) < 0 || values_items(args[0], &items, &n) < 0)
        return NULL;
    if (first < 0 || first > (int64_t)n || overhead < 0 || overhead > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "first outside the values, or overhead outside "
                        "[0, 2^31)");
        return NULL;
    }
    int64_t used = 0, i = first;
    for (; i < (int64_t)n; i++) {
        if (!PyBytes_CheckExact(items[i])) {
            PyErr_SetString(PyExc_TypeError, "values must all be bytes");
            return NULL;
        }
        int64_t size = overhead + (int64_t)PyBytes_GET_SIZE(items[i]);
        if (size > room - used)
            break;
        used += size;
    }
    return Py_BuildValue("(LL)", (long long)(i - first), (long long)used);
}

/* The destination buffer (writable, contiguous) and the position in it (parsed already). */
static int dest_buffer(PyObject *buf, const int64_t *pos, Py_buffer *view)
{
    if (PyObject_GetBuffer(buf, view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) { /* as the reference: TypeError */
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "the destination must be a writable buffer");
        }
        return -1;
    }
    if (*pos < 0 || *pos > (int64_t)view->len) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "position outside the buffer");
        return -1;
    }
    return 0;
}

static PyObject *encode_error(int64_t rc)
{
    PyErr_SetString(PyExc_ValueError,
                    rc == MQ_ERR_RANGE ? "the messages do not fit the buffer"
                                       : "a length, offset or queue id is out of range");
    return NULL;
}

static PyObject *clw_encode_values_into(PyObject *self, PyObject *const *args,
                                        Py_ssize_t nargs)
{
    (void)self;
    PyObject **items;
    Py_ssize_t n;
    int64_t first, count, uniq_first, queue_id, queue_offset, phys, ts, pos;
    char *topic, *prefix;
    Py_ssize_t topic_len, prefix_len;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_values_into(buf, pos, topic, values, first, count, uniq_prefix, "
                        "uniq_first, queue_id, queue_offset, phys_offset, store_timestamp)");
        return NULL;
    }
    /* Every number first (PyLong_AsLongLong may run an __index__, which may change the
       list), then the objects; no Python code runs from values_items on. */
    if (as_i64(args[1], &pos) < 0 || as_i64(args[4], &first) < 0 ||
        as_i64(args[5], &count) < 0 || as_i64(args[7], &uniq_first) < 0 ||
        as_i64(args[8], &queue_id) < 0 || as_i64(args[9], &queue_offset) < 0 ||
        as_i64(args[10], &phys) < 0 || as_i64(args[11], &ts) < 0 ||
        PyBytes_AsStringAndSize(args[2], &topic, &topic_len) < 0 ||
        PyBytes_AsStringAndSize(args[6], &prefix, &prefix_len) < 0 ||
        values_items(args[3], &items, &n) < 0)
        return NULL;
    if (first < 0 || count < 0 || first > (int64_t)n || count > (int64_t)n - first ||
        uniq_first < 0 || uniq_first > INT64_MAX - count || phys < 0 || queue_offset < 0 ||
        queue_offset > INT64_MAX - count || topic_len > 255 || prefix_len > 32767) {
        PyErr_SetString(PyExc_ValueError, "first / count outside the values, a uniq_first, "
                        "queue_offset or phys_offset out of range, or a topic / prefix too "
                        "long");
        return NULL;
    }
    for (int64_t j = 0; j < count; j++) {
        if (!PyBytes_CheckExact(items[first + j])) {
            PyErr_SetString(PyExc_TypeError, "values must all be bytes");
            return NULL;
        }
    }
    Py_buffer view;
    if (dest_buffer(args[0], &pos, &view) < 0)
        return NULL;
    uint8_t *out = (uint8_t *)view.buf + pos;
    size_t cap = (size_t)(view.len - pos);
    if (phys > INT64_MAX - (int64_t)cap) { /* every PHYSICALOFFSET stays an int64 */
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "phys_offset out of range");
        return NULL;
    }
    int64_t written = 0;
    for (int64_t j = 0; j < count; j++) {
        PyObject *v = items[first + j];
        int64_t rc = mq_cl_encode_one(
            (const uint8_t *)topic, (size_t)topic_len, (const uint8_t *)PyBytes_AS_STRING(v),
            (size_t)PyBytes_GET_SIZE(v), (const uint8_t *)prefix, (size_t)prefix_len,
            uniq_first + j, queue_id, queue_offset + j, phys + written, ts, out + written,
            cap - (size_t)written);
        if (rc < 0) {
            PyBuffer_Release(&view);
            return encode_error(rc);
        }
        written += rc;
    }
    PyBuffer_Release(&view);
    return PyLong_FromLongLong((long long)written);
}

static PyObject *clw_encode_one_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    int64_t uniq, queue_id, queue_offset, phys, ts, pos;
    char *topic, *prefix;
    Py_ssize_t topic_len, prefix_len;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_one_into(buf, pos, topic, body, uniq_prefix, uniq_number, "
                        "queue_id, queue_offset, phys_offset, store_timestamp)");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "body must be bytes");
        return NULL;
    }
    if (as_i64(args[1], &pos) < 0 || as_i64(args[5], &uniq) < 0 ||
        as_i64(args[6], &queue_id) < 0 || as_i64(args[7], &queue_offset) < 0 ||
        as_i64(args[8], &phys) < 0 || as_i64(args[9], &ts) < 0 ||
        PyBytes_AsStringAndSize(args[2], &topic, &topic_len) < 0 ||
        PyBytes_AsStringAndSize(args[4], &prefix, &prefix_len) < 0)
        return NULL;
    Py_buffer view;
    if (dest_buffer(args[0], &pos, &view) < 0)
        return NULL;
    int64_t rc = mq_cl_encode_one(
        (const uint8_t *)topic, (size_t)topic_len, (const uint8_t *)PyBytes_AS_STRING(args[3]),
        (size_t)PyBytes_GET_SIZE(args[3]), (const uint8_t *)prefix, (size_t)prefix_len, uniq,
        queue_id, queue_offset, phys, ts, (uint8_t *)view.buf + pos, (size_t)(view.len - pos));
    PyBuffer_Release(&view);
    if (rc < 0)
        return encode_error(rc);
    return PyLong_FromLongLong((long long)rc);
}

static PyMethodDef clw_methods[] = {
    {"values_scan", (PyCFunction)(void (*)(void))clw_values_scan, METH_FASTCALL,
     "values_scan(values, overhead, limit) -> (total, first index over limit or -1)"},
    {"values_fit", (PyCFunction)(void (*)(void))clw_values_fit, METH_FASTCALL,
     "values_fit(values, first, overhead, room) -> (count, nbytes)"},
    {"encode_values_into", (PyCFunction)(void (*)(void))clw_encode_values_into, METH_FASTCALL,
     "encode plain values as CommitLog messages into a writable buffer"},
    {"encode_one_into", (PyCFunction)(void (*)(void))clw_encode_one_into, METH_FASTCALL,
     "encode one plain value as a CommitLog message into a writable buffer"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef clw_module = {
    PyModuleDef_HEAD_INIT, "mqstore._cl_write",
    "CommitLog messages of plain values encoded from the Python objects (native/cl_write_ext.c)",
    -1, clw_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cl_write(void)
{
    /* this module's own copy of crc.c: select the PCLMULQDQ CRC-32 as mqstore._native does
       (MQSTORE_CRC32C_HW=off forces the table path in both) */
    const char *hw = getenv("MQSTORE_CRC32C_HW");
    int force_software = hw != NULL && (!strcasecmp(hw, "off") || !strcmp(hw, "0") ||
                                        !strcasecmp(hw, "false"));
    mq_crc_init(force_software);
    return PyModule_Create(&clw_module);
}
