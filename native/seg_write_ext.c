/* mqstore._seg_write: whole RecordBatches (magic 2) of plain values, built in C from the
 * Python objects themselves (the segments engine's append path).
 *
 * The cffi helper (mqstore._native) takes buffers, so a list of values reached it only after
 * a b"".join and a numpy array of lengths: two passes over a megabyte before the encoder's
 * own copy. Here the encoder reads each bytes object where it lies and writes the finished
 * batch (61-byte header with baseOffset, batchLength and CRC-32C, then the records) in one
 * pass, plus the CRC pass. The write itself stays with the caller (os.pwrite), so the
 * engine's cut-back on a failed or short write, and tests that put faults into os, see it.
 *
 *   value_batch(base_offset, timestamp, value) -> bytes
 *       a one-record batch (no key, no headers): the single append() path
 *   values_batch_size(values) -> int
 *       the size of the batch values_batch_into would write (TypeError if a value is not
 *       exactly bytes: the engine then takes its general path)
 *   values_batch_into(buffer, base_offset, timestamp, values, size) -> int
 *       the batch of ``values`` (a list or tuple of bytes; record i has offsetDelta i, no
 *       key, no headers, timestampDelta 0) into buffer[:size]; size must be the one
 *       values_batch_size gave (ValueError otherwise: the list changed in between)
 *
 * The bytes are those of engines/segments/record_batch.py (encode_values / encode_one plus
 * batch_prefix); the pure-Python reference is mqstore/_purepy_batches.py (value_batch,
 * values_batch_size, values_batch_into), used under MQSTORE_NATIVE=off, and the two are
 * compared on random inputs by tests/segments/test_write_path.py.
 *
 * Every write into the buffer is bounded by the size computed first and checked against the
 * buffer's length. A batch of 256 KiB or more is built, and a large value's CRC computed,
 * without the GIL: values_batch_into first takes a tuple of the values (so another thread
 * changing the list frees none of them), and reads only their immutable bytes and the
 * caller's exported buffer. The CRC is computed along the copy, a chunk behind it.
 * CRC-32C comes from native/crc.c, compiled into this module too (hardware when the CPU has
 * SSE4.2; MQSTORE_CRC32C_HW=off forces the table path, as for mqstore._native).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mqstore_internal.h"

/* Above this many bytes the CRC pass releases the GIL (mqstore_gil.h's threshold). */
#define SEG_GIL_RELEASE_BYTES (256 * 1024)
/* Bytes copied between two CRC steps of values_batch_into: in L2, and long enough for the
   three-stream path of crc.c (3 x 8 KiB). */
#define SEG_CRC_CHUNK (48 * 1024)
/* The largest batch: batchLength (size - 12) is an int32, and so is every length. */
#define SEG_MAX_BATCH ((int64_t)INT32_MAX)

static int varint_size(uint64_t z)
{
    int n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

static size_t put_varint(uint8_t *p, uint64_t z)
{
    size_t n = 0;
    while (z >= 0x80) {
        p[n++] = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    p[n++] = (uint8_t)z;
    return n;
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* The bytes of record i (offsetDelta i) holding a value of len bytes: its body (attributes,
   timestampDelta 0, offsetDelta, key length -1, value length, value, header count 0) and
   the body's length varint. Lengths are non-negative: the zig-zag form is 2 * n. */
static int64_t record_body(int64_t i, int64_t len)
{
    return 1 + 1 + varint_size((uint64_t)i * 2) + 1 + varint_size((uint64_t)len * 2) + len + 1;
}

static int64_t record_size(int64_t i, int64_t len)
{
    int64_t body = record_body(i, len);
    return varint_size((uint64_t)body * 2) + body;
}

static size_t put_record(uint8_t *out, int64_t i, const char *value, int64_t len)
{
    int64_t body = record_body(i, len);
    size_t w = put_varint(out, (uint64_t)body * 2);
    out[w++] = 0; /* attributes */
    out[w++] = 0; /* timestampDelta 0 */
    w += put_varint(out + w, (uint64_t)i * 2);
    out[w++] = 0x01; /* key length -1: a null key */
    w += put_varint(out + w, (uint64_t)len * 2);
    memcpy(out + w, value, (size_t)len);
    w += (size_t)len;
    out[w++] = 0; /* no headers */
    return w;
}

/* The 61-byte header (CRC left for finish_batch): mqstore's fields, as record_batch.py
   writes them (partitionLeaderEpoch 0, no producer id / epoch / sequence). */
static void put_header(uint8_t *p, int64_t base, int64_t size, int64_t count, int64_t ts)
{
    put_be64(p, (uint64_t)base);
    put_be32(p + 8, (uint32_t)(size - 12));   /* batchLength */
    put_be32(p + 12, 0);                      /* partitionLeaderEpoch */
    p[16] = 2;                                /* magic */
    put_be16(p + 21, 0);                      /* attributes: uncompressed, CreateTime */
    put_be32(p + 23, (uint32_t)(count - 1));  /* lastOffsetDelta */
    put_be64(p + 27, (uint64_t)ts);           /* baseTimestamp */
    put_be64(p + 35, (uint64_t)ts);           /* maxTimestamp */
    put_be64(p + 43, UINT64_MAX);             /* producerId -1 */
    put_be16(p + 51, 0xFFFF);                 /* producerEpoch -1 */
    put_be32(p + 53, UINT32_MAX);             /* baseSequence -1 */
    put_be32(p + 57, (uint32_t)count);        /* recordsCount */
}

static void finish_batch(uint8_t *p, int64_t size)
{
    uint32_t crc;
    if (size < SEG_GIL_RELEASE_BYTES) {
        crc = mq_crc32c(0, p + MQ_BATCH_CRC_START, (size_t)(size - MQ_BATCH_CRC_START));
    } else {
        Py_BEGIN_ALLOW_THREADS
        crc = mq_crc32c(0, p + MQ_BATCH_CRC_START, (size_t)(size - MQ_BATCH_CRC_START));
        Py_END_ALLOW_THREADS
    }
    put_be32(p + 17, crc);
}

static int too_large(int64_t size)
{
    PyErr_Format(PyExc_OverflowError,
                 "a batch of %lld bytes does not fit a RecordBatch (at most %lld)",
                 (long long)size, (long long)SEG_MAX_BATCH);
    return -1;
}

/* value_batch(base_offset, timestamp, value) -> bytes */
static PyObject *seg_value_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "value_batch(base_offset, timestamp, value)");
        return NULL;
    }
    long long base = PyLong_AsLongLong(args[0]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
    long long ts = PyLong_AsLongLong(args[1]);
    if (ts == -1 && PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "value must be bytes, not %.100s",
                     Py_TYPE(args[2])->tp_name);
        return NULL;
    }
    int64_t len = PyBytes_GET_SIZE(args[2]);
    int64_t size = MQ_BATCH_OVERHEAD + record_size(0, len);
    if (size > SEG_MAX_BATCH) {
        too_large(size);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    put_header(p, base, size, 1, ts);
    put_record(p + MQ_BATCH_OVERHEAD, 0, PyBytes_AS_STRING(args[2]), len);
    finish_batch(p, size);
    return out;
}

/* The values (a list or tuple) as a new reference whose items are read directly: an exact
   list or tuple itself, a subclass as a tuple of what it iterates (as the reference does:
   sizing its storage and building from its iteration would disagree). NULL with an
   exception set. */
static PyObject *values_held(PyObject *values, int as_tuple)
{
    if (!PyList_Check(values) && !PyTuple_Check(values)) {
        PyErr_Format(PyExc_TypeError, "values must be a list or tuple of bytes, not %.100s",
                     Py_TYPE(values)->tp_name);
        return NULL;
    }
    if (!as_tuple && (PyList_CheckExact(values) || PyTuple_CheckExact(values))) {
        Py_INCREF(values);
        return values;
    }
    return PySequence_Tuple(values);
}

/* The batch size of an exact list or tuple of bytes (values_held), or -1 with an
   exception set. Runs no Python code. */
static int64_t batch_size(PyObject *values)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
    PyObject **items = PySequence_Fast_ITEMS(values);
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "a batch of values holds at least one value");
        return -1;
    }
    if (n > INT32_MAX)
        return too_large(SEG_MAX_BATCH + 1);
    int64_t size = MQ_BATCH_OVERHEAD;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_CheckExact(items[i])) {
            PyErr_Format(PyExc_TypeError, "values[%zd] must be bytes, not %.100s", i,
                         Py_TYPE(items[i])->tp_name);
            return -1;
        }
        int64_t len = PyBytes_GET_SIZE(items[i]);
        if (len > SEG_MAX_BATCH)
            return too_large(len);
        size += record_size(i, len);
        if (size > SEG_MAX_BATCH)
            return too_large(size);
    }
    return size;
}

/* values_batch_size(values) -> int */
static PyObject *seg_values_batch_size(PyObject *self, PyObject *values)
{
    (void)self;
    PyObject *held = values_held(values, 0);
    if (held == NULL)
        return NULL;
    int64_t size = batch_size(held);
    Py_DECREF(held);
    return size < 0 ? NULL : PyLong_FromLongLong(size);
}

/* The batch of the n bytes objects items[] (its size checked: every record fits) into p.
   Reads only the objects' bytes, so it may run without the GIL while they are held. */
static void build_values(uint8_t *p, int64_t base, int64_t ts, PyObject **items, Py_ssize_t n,
                         int64_t size)
{
    put_header(p, base, size, n, ts);
    /* The CRC follows the copy a chunk behind, over bytes still in the cache (a separate
       pass after a megabyte of copying reads them back from L3: measured 150 us for 1,000 x
       1 KiB against 63 us for the b"".join alone). */
    uint32_t crc = mq_crc32c(0, p + MQ_BATCH_CRC_START, MQ_BATCH_OVERHEAD - MQ_BATCH_CRC_START);
    size_t w = MQ_BATCH_OVERHEAD, done = MQ_BATCH_OVERHEAD;
    for (Py_ssize_t i = 0; i < n; i++) {
        w += put_record(p + w, i, PyBytes_AS_STRING(items[i]), PyBytes_GET_SIZE(items[i]));
        if (w - done >= SEG_CRC_CHUNK) {
            crc = mq_crc32c(crc, p + done, w - done);
            done = w;
        }
    }
    crc = mq_crc32c(crc, p + done, w - done);
    put_be32(p + 17, crc);
}

/* values_batch_into(buffer, base_offset, timestamp, values, size) -> int */
static PyObject *seg_values_batch_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "values_batch_into(buffer, base_offset, timestamp, values, size)");
        return NULL;
    }
    long long base = PyLong_AsLongLong(args[1]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
    long long ts = PyLong_AsLongLong(args[2]);
    if (ts == -1 && PyErr_Occurred())
        return NULL;
    long long expect = PyLong_AsLongLong(args[4]);
    if (expect == -1 && PyErr_Occurred())
        return NULL;
    /* One tuple of the values is sized and built: it keeps every bytes object alive while
       the batch is built without the GIL (another thread may change the list meanwhile;
       bytes never change), and a subclass is taken as it iterates, once. */
    PyObject *held = values_held(args[3], 1);
    if (held == NULL)
        return NULL;
    int64_t size = batch_size(held);
    if (size < 0) {
        Py_DECREF(held);
        return NULL;
    }
    if (size != expect) {
        Py_DECREF(held);
        PyErr_Format(PyExc_ValueError,
                     "the batch of these values has %lld bytes, not %lld (the list changed?)",
                     (long long)size, expect);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(held);
        return NULL;
    }
    if (view.len < size) {
        PyErr_Format(PyExc_ValueError, "buffer of %zd bytes is smaller than the %lld-byte "
                     "batch", view.len, (long long)size);
        PyBuffer_Release(&view);
        Py_DECREF(held);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(held);
    PyObject **items = &PyTuple_GET_ITEM(held, 0);
    if (size < SEG_GIL_RELEASE_BYTES) {
        build_values(view.buf, base, ts, items, n, size);
    } else {
        Py_BEGIN_ALLOW_THREADS
        build_values(view.buf, base, ts, items, n, size);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(held);
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(size);
}

static PyMethodDef seg_methods[] = {
    {"value_batch", (PyCFunction)(void (*)(void))seg_value_batch, METH_FASTCALL,
     "value_batch(base_offset, timestamp, value) -> bytes: a one-record batch"},
    {"values_batch_size", seg_values_batch_size, METH_O,
     "values_batch_size(values) -> int: the size of the batch of these values"},
    {"values_batch_into", (PyCFunction)(void (*)(void))seg_values_batch_into, METH_FASTCALL,
     "values_batch_into(buffer, base_offset, timestamp, values, size) -> int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef seg_module = {
    PyModuleDef_HEAD_INIT, "mqstore._seg_write",
    "Whole RecordBatches of plain values built in C (see native/seg_write_ext.c).", -1,
    seg_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__seg_write(void)
{
    const char *hw = getenv("MQSTORE_CRC32C_HW");
    int force_software = hw != NULL && (!strcasecmp(hw, "off") || !strcmp(hw, "0") ||
                                        !strcasecmp(hw, "false"));
    mq_crc_init(force_software);
    return PyModule_Create(&seg_module);
}
