/* mqstore._rows: make the Python objects of a read (the values, the Record tuples) in C.
 *
 * The cffi helper (mqstore._native) cannot create Python objects, and after a native decode
 * the objects are all that is left: a bytes object per value and a Record tuple per record.
 * This small CPython extension makes them in one C loop each, for mqstore/records.py, which
 * keeps the equal pure-Python code as the fallback (MQSTORE_NATIVE=off, or no compiler).
 *
 * Every position and length is checked against the buffer before it is used; a bad one
 * raises ValueError (the columns come from mqstore's own decoders, so that is a bug, never
 * a property of the data). Thread-safety: pure functions; they hold the GIL throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A read-only, C-contiguous, one-dimensional int64 buffer (a numpy int64 array) of n items;
   n < 0 takes its length. Returns 0 and fills view, or -1 with an exception set. */
static int get_i64(PyObject *obj, Py_buffer *view, Py_ssize_t *n, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if (view->itemsize != 8 || view->ndim != 1 || (strcmp(f, "q") && strcmp(f, "l"))) {
        PyErr_Format(PyExc_TypeError, "%s must be a one-dimensional int64 array", what);
        PyBuffer_Release(view);
        return -1;
    }
    Py_ssize_t len = view->len / 8;
    if (*n >= 0 && len != *n) {
        PyErr_Format(PyExc_ValueError, "%s has %zd items, expected %zd", what, len, *n);
        PyBuffer_Release(view);
        return -1;
    }
    *n = len;
    return 0;
}

/* value i = data[starts[i] : starts[i] + sizes[i]] as a new bytes object, or NULL */
static PyObject *slice_at(const char *data, Py_ssize_t data_len, int64_t start, int64_t size)
{
    if (start < 0 || size < 0 || start > data_len || size > data_len - start) {
        PyErr_Format(PyExc_ValueError, "value [%lld, +%lld) lies outside the %zd-byte buffer",
                     (long long)start, (long long)size, data_len);
        return NULL;
    }
    return PyBytes_FromStringAndSize(data + start, (Py_ssize_t)size);
}

/* values(buffer, starts, sizes) -> list[bytes] */
static PyObject *rows_values(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *buf_obj, *starts_obj, *sizes_obj;
    if (!PyArg_ParseTuple(args, "OOO", &buf_obj, &starts_obj, &sizes_obj))
        return NULL;
    Py_buffer buf, st, sz;
    Py_ssize_t n = -1;
    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (get_i64(starts_obj, &st, &n, "starts") < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (get_i64(sizes_obj, &sz, &n, "sizes") < 0) {
        PyBuffer_Release(&st);
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *out = PyList_New(n);
    const int64_t *s = st.buf, *z = sz.buf;
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *v = slice_at(buf.buf, buf.len, s[i], z[i]);
        if (v == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, v);
    }
    PyBuffer_Release(&sz);
    PyBuffer_Release(&st);
    PyBuffer_Release(&buf);
    return out;
}

/* A column that is None (every row takes the default) or a list of n items. */
static int check_column(PyObject *col, Py_ssize_t n, const char *what)
{
    if (col == Py_None)
        return 0;
    if (!PyList_CheckExact(col) || PyList_GET_SIZE(col) != n) {
        PyErr_Format(PyExc_TypeError, "%s must be None or a list of %zd items", what, n);
        return -1;
    }
    return 0;
}

/* records(record_type, topic, partition, buffer, offsets, timestamps, starts, sizes,
           keys, headers, tags, empty_headers) -> list[record_type]
   Row i is record_type(topic, partition, offsets[i], timestamps[i], keys[i], value i,
   headers[i], tags[i]); a None column gives None (keys, tags) or empty_headers. */
static PyObject *rows_records(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *type_obj, *topic, *partition, *buf_obj, *off_obj, *ts_obj, *st_obj, *sz_obj;
    PyObject *keys, *headers, *tags, *empty_headers;
    if (!PyArg_ParseTuple(args, "O!OOOOOOOOOOO", &PyType_Type, &type_obj, &topic, &partition,
                          &buf_obj, &off_obj, &ts_obj, &st_obj, &sz_obj, &keys, &headers,
                          &tags, &empty_headers))
        return NULL;
    PyTypeObject *type = (PyTypeObject *)type_obj;
    if (!PyType_IsSubtype(type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "record_type must be a tuple subclass");
        return NULL;
    }
    Py_buffer buf, off, ts, st, sz;
    Py_ssize_t n = -1;
    int got = 0;
    PyObject *out = NULL;
    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    got = 1;
    if (get_i64(off_obj, &off, &n, "offsets") < 0)
        goto done;
    got = 2;
    if (get_i64(ts_obj, &ts, &n, "timestamps") < 0)
        goto done;
    got = 3;
    if (get_i64(st_obj, &st, &n, "starts") < 0)
        goto done;
    got = 4;
    if (get_i64(sz_obj, &sz, &n, "sizes") < 0)
        goto done;
    got = 5;
    if (check_column(keys, n, "keys") < 0 || check_column(headers, n, "headers") < 0 ||
        check_column(tags, n, "tags") < 0)
        goto done;
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    const int64_t *o = off.buf, *t = ts.buf, *s = st.buf, *z = sz.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = slice_at(buf.buf, buf.len, s[i], z[i]);
        PyObject *po = value ? PyLong_FromLongLong(o[i]) : NULL;
        PyObject *pt = po ? PyLong_FromLongLong(t[i]) : NULL;
        PyObject *rec = pt ? type->tp_alloc(type, 8) : NULL;
        if (rec == NULL) {
            Py_XDECREF(value);
            Py_XDECREF(po);
            Py_XDECREF(pt);
            Py_CLEAR(out);
            goto done;
        }
        PyObject *k = keys == Py_None ? Py_None : PyList_GET_ITEM(keys, i);
        PyObject *h = headers == Py_None ? empty_headers : PyList_GET_ITEM(headers, i);
        PyObject *g = tags == Py_None ? Py_None : PyList_GET_ITEM(tags, i);
        Py_INCREF(topic);
        Py_INCREF(partition);
        Py_INCREF(k);
        Py_INCREF(h);
        Py_INCREF(g);
        PyTuple_SET_ITEM(rec, 0, topic);
        PyTuple_SET_ITEM(rec, 1, partition);
        PyTuple_SET_ITEM(rec, 2, po);
        PyTuple_SET_ITEM(rec, 3, pt);
        PyTuple_SET_ITEM(rec, 4, k);
        PyTuple_SET_ITEM(rec, 5, value);
        PyTuple_SET_ITEM(rec, 6, h);
        PyTuple_SET_ITEM(rec, 7, g);
        PyList_SET_ITEM(out, i, rec);
    }
done:
    if (got >= 5)
        PyBuffer_Release(&sz);
    if (got >= 4)
        PyBuffer_Release(&st);
    if (got >= 3)
        PyBuffer_Release(&ts);
    if (got >= 2)
        PyBuffer_Release(&off);
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef rows_methods[] = {
    {"values", rows_values, METH_VARARGS,
     "values(buffer, starts, sizes) -> list[bytes]: buffer[starts[i]:starts[i]+sizes[i]]"},
    {"records", rows_records, METH_VARARGS,
     "records(record_type, topic, partition, buffer, offsets, timestamps, starts, sizes, "
     "keys, headers, tags, empty_headers) -> list of record_type tuples"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef rows_module = {
    PyModuleDef_HEAD_INIT, "mqstore._rows",
    "The Python objects of a read, made in C (see native/rows.c).", -1, rows_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rows(void)
{
    return PyModule_Create(&rows_module);
}
