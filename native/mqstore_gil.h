/* GIL policy of the cffi wrappers; included only by the module cffi generates
 * (build_native.py's set_source), after Python.h and before the wrappers.
 *
 * cffi releases the GIL around every C call. For the small kernels (murmur2, a Java hash,
 * an index lookup, a CRC of a few records) the release and re-acquire cost more than the
 * call, and when another thread is waiting (the commitlog dispatcher, a flusher) the caller
 * then waits a whole switch interval (5 ms) to get the GIL back: profiling showed murmur2
 * taking a third of append_batch that way. So the generated wrappers keep the GIL, and the
 * calls that can run long release it themselves when their input is large.
 */
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }

/* Above this many bytes a call releases the GIL (about 20 us of CRC work or more). */
#define MQ_GIL_RELEASE_BYTES (256 * 1024)

static uint32_t mq_crc32c_gil(uint32_t crc, const uint8_t *data, size_t len)
{
    if (len < MQ_GIL_RELEASE_BYTES)
        return (mq_crc32c)(crc, data, len);
    uint32_t result;
    PyThreadState *save = PyEval_SaveThread();
    result = (mq_crc32c)(crc, data, len);
    PyEval_RestoreThread(save);
    return result;
}

#define MQ_SCAN_GIL(NAME)                                                                    \
    static int NAME##_gil(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,     \
                          int64_t cap, int64_t *a, int64_t *b, int64_t *c, int64_t *d,       \
                          int64_t *e, int64_t *count, int64_t *next_pos)                     \
    {                                                                                        \
        if (end - pos < MQ_GIL_RELEASE_BYTES)                                                \
            return (NAME)(buf, buf_len, pos, end, cap, a, b, c, d, e, count, next_pos);      \
        int result;                                                                          \
        PyThreadState *save = PyEval_SaveThread();                                           \
        result = (NAME)(buf, buf_len, pos, end, cap, a, b, c, d, e, count, next_pos);        \
        PyEval_RestoreThread(save);                                                          \
        return result;                                                                       \
    }

MQ_SCAN_GIL(mq_scan_batches)
MQ_SCAN_GIL(mq_scan_commitlog)

static int mq_dispatch_fields_gil(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                                  int64_t cap, int64_t *rows, int64_t *count, int64_t *next_pos)
{
    if (end - pos < MQ_GIL_RELEASE_BYTES)
        return (mq_dispatch_fields)(buf, buf_len, pos, end, cap, rows, count, next_pos);
    int result;
    PyThreadState *save = PyEval_SaveThread();
    result = (mq_dispatch_fields)(buf, buf_len, pos, end, cap, rows, count, next_pos);
    PyEval_RestoreThread(save);
    return result;
}

/* The generated wrappers call these names: route the long-running ones through the
   GIL-releasing versions (function-like macros: taking the address is unaffected). */
#define mq_crc32c(crc, data, len) mq_crc32c_gil(crc, data, len)
#define mq_scan_batches(...) mq_scan_batches_gil(__VA_ARGS__)
#define mq_scan_commitlog(...) mq_scan_commitlog_gil(__VA_ARGS__)
#define mq_dispatch_fields(...) mq_dispatch_fields_gil(__VA_ARGS__)
