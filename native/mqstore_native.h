/* mqstore's native helper: the public C interface.
 *
 * This file is both the C header (mqstore_internal.h includes it) and the cffi cdef
 * (native/build_native.py passes its text to ffibuilder.cdef), so it holds only what cffi's
 * parser accepts: integer #defines, plain prototypes, fixed-width types, no include guards.
 *
 * Every function takes the length of every buffer it reads and never reads outside it,
 * whatever the bytes say. All integers in the buffers are big-endian (Kafka, RocketMQ).
 * The behaviour of each function is defined by mqstore/_purepy.py; the tests in
 * tests/native/ check that both give the same results.
 */

/* ----- status codes of the scans (same values as mqstore._purepy.SCAN_*) ----- */
#define MQ_SCAN_OK 0       /* the data ended exactly at end */
#define MQ_SCAN_TORN 1     /* the last entry is incomplete: a torn tail */
#define MQ_SCAN_CORRUPT 2  /* an entry fails a check (size, magic, CRC, length) */
#define MQ_SCAN_BLANK 3    /* commitlog: the end-of-file blank marker */
#define MQ_SCAN_ZERO 4     /* commitlog: zero fill (preallocated, never written) */
#define MQ_SCAN_FULL 5     /* the output arrays are full: call again from *next_pos */

/* ----- error codes (negative, below -1 which means "no such entry"; mqstore/native.py maps
   them to exceptions in one table) ----- */
#define MQ_ERR_RANGE -2    /* a position, length or count reaches outside the buffer */
#define MQ_ERR_ARG -3      /* an argument is invalid (negative capacity, ...) */

/* ----- setup ----- */
/* Probe the CPU once and build the tables; force_software=1 ignores the hardware path.
   Returns 1 when CRC-32C runs on the SSE4.2 crc32 instruction, 0 otherwise. */
int mq_init(int force_software);
/* 1 when the hardware CRC-32C path is selected. */
int mq_crc32c_hardware(void);

/* ----- checksums ----- */
/* CRC-32C (Castagnoli) of data[0:len), continuing from a previous result crc (0 to start). */
uint32_t mq_crc32c(uint32_t crc, const uint8_t *data, size_t len);
/* The same through the portable slicing-by-8 tables only (for tests and benchmarks). */
uint32_t mq_crc32c_software(uint32_t crc, const uint8_t *data, size_t len);
/* CRC-32 (zlib's polynomial, zlib.crc32 semantics), for RocketMQ's body CRC. */
uint32_t mq_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* ----- small hash kernels ----- */
/* Java String.hashCode over n UTF-16 code units stored little-endian in units[0:2n). */
int32_t mq_java_string_hash(const uint8_t *units, size_t n);
/* Kafka's Utils.murmur2 (seed 0x9747b28c). */
int32_t mq_murmur2(const uint8_t *data, size_t len);

/* ----- Kafka index floor searches (warm section first, like AbstractIndex) ----- */
/* Slot of the last 8-byte .index entry (int32 relative offset, int32 position) whose
   relative offset <= target, -1 if none (or n <= 0), MQ_ERR_RANGE if n entries do not fit
   in buf_len bytes. */
int64_t mq_offset_index_floor(const uint8_t *buf, size_t buf_len, int64_t n, int64_t target);
/* Slot of the last 12-byte .timeindex entry (int64 timestamp, int32 relative offset) whose
   timestamp <= target, or -1, or MQ_ERR_RANGE (same contract). */
int64_t mq_time_index_floor(const uint8_t *buf, size_t buf_len, int64_t n, int64_t target);

/* ----- Kafka record batch scans ----- */
/* Position of the first batch at or after pos whose last offset >= target, -1 if none (or at
   a torn or malformed header), MQ_ERR_RANGE when pos < 0 or end > buf_len. Headers only. */
int64_t mq_find_batch(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t target);
/* Validate batches (size >= 61, magic 2, CRC-32C, int64 last offset) from pos up to end.
   Writes at most cap rows into the five arrays, sets *count and *next_pos (the end of the
   valid prefix so far) and returns an MQ_SCAN_* status, MQ_SCAN_FULL when cap rows were
   written and more may follow, or a negative MQ_ERR_*. */
int mq_scan_batches(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end, int64_t cap,
                    int64_t *positions, int64_t *sizes, int64_t *base_offsets,
                    int64_t *last_offsets, int64_t *max_timestamps,
                    int64_t *count, int64_t *next_pos);

/* ----- RocketMQ CommitLog scans ----- */
/* Validate V1 / V2 messages, IPv4 or IPv6 hosts (size, magic, recomputed length, CRC: the
   __CRC32# record CRC when the message ends with that property, else the body CRC-32)
   from pos up to end;
   same output contract as mq_scan_batches, rows are position, size, queue id, queue offset,
   store timestamp. */
int mq_scan_commitlog(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end, int64_t cap,
                      int64_t *positions, int64_t *sizes, int64_t *queue_ids,
                      int64_t *queue_offsets, int64_t *store_timestamps,
                      int64_t *count, int64_t *next_pos);

/* ----- ConsumeQueue tag scans ----- */
/* Indexes (relative to start_unit) of the 20-byte units [start_unit, start_unit + n_units)
   whose int64 tag hash (at byte 12) is one of wanted[0:n_wanted]; written to out (room for
   n_units). Returns how many, or MQ_ERR_RANGE when the units run past the buffer. */
int64_t mq_cq_tag_scan(const uint8_t *buf, size_t buf_len, int64_t start_unit, int64_t n_units,
                       const int64_t *wanted, int64_t n_wanted, int64_t *out);

/* ----- Kafka record decoding (the fields of the records inside one batch) ----- */
/* Parse count magic-2 records from buf[pos:end) (the records section of an uncompressed
   batch). Row k of records (9 int64 each): offsetDelta, timestampDelta, key position, key
   length (-1 = null), value position, value length (-1 = null), index of the record's first
   row in headers, header count, record end. Row h of headers (4 int64 each): key position,
   key length, value position, value length (-1 = null). Positions are absolute in buf.
   Returns MQ_SCAN_OK (and *next_pos = end of the last record), MQ_SCAN_CORRUPT at the first
   record that does not parse (rows before it are kept), after count > 0 records that do not
   end at end (trailing bytes), or for count < 0; MQ_SCAN_FULL when headers_cap rows are not
   enough (call again with more room), or MQ_ERR_RANGE. The rules of "does not parse" are
   those of mqstore._purepy.decode_records (int32 varints of at most 5 bytes and 32 bits,
   the timestampDelta varlong of at most 10 bytes and 64 bits, lengths >= -1, ...). */
int mq_decode_records(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t count, int64_t records_cap, int64_t *records,
                      int64_t headers_cap, int64_t *headers,
                      int64_t *n_records, int64_t *n_headers, int64_t *next_pos);

/* ----- RocketMQ dispatch (ReputMessageService) ----- */
#define MQ_DISPATCH_COLUMNS 14
/* Walk V1 / V2 messages like mq_scan_commitlog, without the CRCs, writing one row of
   MQ_DISPATCH_COLUMNS int64 per message into rows (room for cap rows): position, size,
   queue id, queue offset, physical offset, store timestamp, topic position and length, then
   position and length of the TAGS, KEYS and UNIQ_KEY property values (-1, -1 if absent).
   Same statuses and count / next_pos contract as mq_scan_commitlog. */
int mq_dispatch_fields(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                       int64_t cap, int64_t *rows, int64_t *count, int64_t *next_pos);

/* ----- Kafka record encoding (the append_batch fast path) ----- */
/* Write the records section of a magic-2 batch holding n values (no key, no headers,
   timestampDelta 0, offsetDelta i): value i is blob[sum(lengths[:i]) : +lengths[i]].
   Returns the bytes written to out, MQ_ERR_ARG if the lengths are negative or do not add
   up to blob_len, MQ_ERR_RANGE if out_cap is too small (n * 19 + blob_len always is
   enough). */
int64_t mq_encode_value_records(const uint8_t *blob, size_t blob_len, const int64_t *lengths,
                                int64_t n, uint8_t *out, size_t out_cap);

/* ----- RocketMQ IndexFile inserts (IndexFile.putKey for a run of keys) ----- */
/* buf is a whole IndexFile (40-byte header, hash_slots int32 slots, index_entries 20-byte
   entries), written in place. state[0..3] = indexCount, hashSlotCount, beginTimestamp,
   beginPhyOffset, updated. For each key i while indexCount < index_entries: entry
   indexCount = (hash, phy_offset, seconds since beginTimestamp clamped to [0, 2^31-1], 0 when
   beginTimestamp <= 0, previous slot value or 0 if it was not a valid entry number), then
   the slot points at it; the first entry of a file sets beginTimestamp / beginPhyOffset.
   Returns how many keys were put (fewer than n when the file fills up), MQ_ERR_RANGE if
   the file is smaller than its layout, MQ_ERR_ARG for hash_slots < 1 or a hash outside
   int32 (nothing written then). The header itself is not written. */
int64_t mq_index_put_keys(uint8_t *buf, size_t buf_len, int64_t hash_slots,
                          int64_t index_entries, int64_t *state, const int64_t *hashes,
                          const int64_t *phy_offsets, const int64_t *store_timestamps,
                          int64_t n);

/* Java String.hashCode of n strings whose UTF-16 code units (little-endian) are concatenated
   in units; string i has lengths[i] units. Writes the signed hashes to out. Returns 0, or
   MQ_ERR_ARG if the lengths are negative or do not add up to n_units. */
int mq_java_string_hashes(const uint8_t *units, size_t n_units, const int64_t *lengths,
                          int64_t n, int64_t *out);

/* Undo, newest first, every IndexFile entry whose commitlog offset >= phy_offset (recovery
   truncation): each slot goes back to the entry it replaced (or 0), the entry is zeroed.
   state[0..1] = indexCount, hashSlotCount (updated); the walk starts at
   min(indexCount, index_entries) - 1. *last_phy_offset = offset of the newest entry kept, -1
   if none. Returns the entries removed, or MQ_ERR_RANGE / MQ_ERR_ARG as mq_index_put_keys. */
int64_t mq_index_truncate_from(uint8_t *buf, size_t buf_len, int64_t hash_slots,
                               int64_t index_entries, int64_t *state, int64_t phy_offset,
                               int64_t *last_phy_offset);

/* ===== [segments read] whole-read decoding of Kafka batches (native/batch_decode.c) ===== */
/* statuses of mq_decode_batches (same values as mqstore._purepy_batches.BATCHES_*) */
#define MQ_BATCHES_END 0          /* the walk reached end exactly */
#define MQ_BATCHES_TORN 1         /* the next batch runs past end: read more to go on */
#define MQ_BATCHES_BAD_HEADER 2   /* size < 61, magic != 2, lastOffsetDelta < 0, int64 overflow */
#define MQ_BATCHES_BAD_CRC 3      /* CRC-32C mismatch (check_crcs) */
#define MQ_BATCHES_BAD_CHAIN 4    /* baseOffset != the previous batch's last offset + 1 */
#define MQ_BATCHES_BAD_RECORDS 6  /* the records do not parse, or a header name / tag is not UTF-8 */
#define MQ_BATCHES_COMPRESSED 7   /* a compressed batch (checked, not decoded) at *next_pos */
#define MQ_BATCHES_LIMIT 8        /* stopped after max_records / max_bytes, or at end_offset */
/* Walk the batches of buf[pos:end) and decode their records into rows of 9 int64:
   offset, timestamp (LogAppendTime batches: maxTimestamp), key position, key length (-1 =
   null), value position, value length (-1 = null), first row in headers, header count, the
   header row of the mqstore.tag header (-1 = none; it is among the record's header rows, the
   last one wins). headers rows: key position, key length, value position, value length.
   Positions are absolute in buf. Records with offset < min_offset are left out; the walk
   stops before a batch with baseOffset >= end_offset, and after the batch that makes the
   records >= max_records or the value bytes > max_bytes (MQ_BATCHES_LIMIT). Control batches
   are skipped. state (int64[5]): in state[0] the expected baseOffset of the first batch (-1:
   not checked); out: [0] the expected baseOffset of the next batch, [1] rows written, [2]
   header rows written, [3] next_pos (where the walk stopped: the batch a problem or
   MQ_BATCHES_COMPRESSED names, the batch that did not fit for MQ_SCAN_FULL, else the end of
   the last batch read), [4] value bytes of the rows. Rows of the batches before a stop are
   kept. MQ_SCAN_FULL: the arrays are full (call again from next_pos with room for
   (end - pos) / 7 + 1 rows and (end - pos) / 2 + 1 header rows, always enough);
   MQ_ERR_RANGE / MQ_ERR_ARG as the scans. */
int mq_decode_batches(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t min_offset, int64_t end_offset, int check_crcs,
                      int64_t max_records, int64_t max_bytes,
                      int64_t records_cap, int64_t *records,
                      int64_t headers_cap, int64_t *headers, int64_t *state);
/* The whole batches of buf[pos:end) a transfer sends: walks batch headers (no CRC) while a
   batch is whole inside end, its header sound (as mq_decode_batches checks it) and its
   baseOffset < end_offset. out[0] = the end of the last such batch (pos if none), out[1] =
   its last offset + 1 (-1 if none). Returns how many, or MQ_ERR_RANGE. */
int64_t mq_batch_span(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t end_offset, int64_t *out);
/* (native/records.c) The records section of a magic-2 batch of n mqstore messages: record
   i has offsetDelta i, timestampDelta timestamp_deltas[i], key keys[...][0:key_lengths[i]]
   (-1: null key), value values[...][0:value_lengths[i]] and, when extra_lengths[i] > 0, the
   bytes extras[...][0:extra_lengths[i]] as its headers section (header count and headers,
   already encoded), else a header count of 0; the blobs hold the fields back to back.
   Returns the bytes written, MQ_ERR_ARG if a length is negative (key: below -1) or the
   lengths do not add up to the blobs, MQ_ERR_RANGE if out_cap is too small
   (blob lengths + 32 * n always is enough). */
int64_t mq_encode_records(const uint8_t *values, size_t values_len,
                          const int64_t *value_lengths, const uint8_t *keys, size_t keys_len,
                          const int64_t *key_lengths, const int64_t *timestamp_deltas,
                          const uint8_t *extras, size_t extras_len,
                          const int64_t *extra_lengths, int64_t n, uint8_t *out,
                          size_t out_cap);

/* ===== [commitlog write] batch encoding and dispatch (native/cl_encode.c) ===== */
/* Size of one V1 message (IPv4 hosts) with the given topic, body and PROPERTIES lengths;
   props_len < 0 means the plain properties mq_cl_encode writes itself (UNIQ_KEY only). The
   __CRC32# property (20 bytes) is counted. MQ_ERR_ARG if the topic is over 255 bytes, the
   body length negative or the properties over 32767 bytes. */
int64_t mq_cl_encoded_size(size_t topic_len, int64_t body_len, int64_t props_len,
                           size_t uniq_prefix_len);
/* Encode n messages of one append_batch into out, back to back, the first at commitlog
   offset phys_offset (RocketMQ MessageExtEncoder + DefaultAppendMessageCallback#doAppend):
   message i is a V1 message with IPv4 hosts (BORNHOST 127.0.0.1:0, STOREHOST
   127.0.0.1:10911), QUEUEID queue_ids[i], QUEUEOFFSET queue_offsets[i], PHYSICALOFFSET its
   own offset, BORNTIMESTAMP born_timestamps[i] (store_timestamp when negative or when
   born_timestamps is NULL), STORETIMESTAMP store_timestamp, BODYCRC, body
   bodies[body_offsets[i]:+body_lengths[i]], and PROPERTIES either
   props[props_offsets[i]:+props_lengths[i]] or, when props_lengths is NULL or
   props_lengths[i] < 0, "UNIQ_KEY\x01" + uniq_prefix + %016X of (uniq_first + i) + "\x02";
   then the __CRC32# property with the record CRC. Returns the bytes written, MQ_ERR_ARG for
   a bad length, offset or queue id (outside int32), MQ_ERR_RANGE when out_cap is too small
   (nothing is meaningful in out then). */
int64_t mq_cl_encode(const uint8_t *topic, size_t topic_len,
                     const uint8_t *bodies, size_t bodies_len, const int64_t *body_offsets,
                     const int64_t *body_lengths,
                     const uint8_t *props, size_t props_blob_len, const int64_t *props_offsets,
                     const int64_t *props_lengths,
                     const uint8_t *uniq_prefix, size_t uniq_prefix_len, int64_t uniq_first,
                     const int64_t *queue_ids, const int64_t *queue_offsets,
                     const int64_t *born_timestamps, int64_t n, int64_t phys_offset,
                     int64_t store_timestamp, uint8_t *out, size_t out_cap);
/* mq_cl_encode of one plain value (the single append path): n = 1, body at 0, plain
   properties, store timestamp as BORNTIMESTAMP. */
int64_t mq_cl_encode_one(const uint8_t *topic, size_t topic_len, const uint8_t *body,
                         size_t body_len, const uint8_t *uniq_prefix, size_t uniq_prefix_len,
                         int64_t uniq_number, int64_t queue_id, int64_t queue_offset,
                         int64_t phys_offset, int64_t store_timestamp, uint8_t *out,
                         size_t out_cap);
/* IndexFile hashes (abs of Java String.hashCode, MIN_VALUE -> 0) of n keys "prefix" + key,
   key i being buf[positions[i]:+lengths[i]] and prefix_hashes[i] the Java hash of its
   prefix (topic + "#"). A key holding a byte >= 0x80 or a space gets -1 (the caller hashes
   its decoded text, or splits it). Returns 0, MQ_ERR_RANGE if a key reaches outside buf,
   MQ_ERR_ARG for n < 0 or a prefix hash outside int32. */
int64_t mq_index_key_hashes(const uint8_t *buf, size_t buf_len, const int64_t *positions,
                            const int64_t *lengths, const int64_t *prefix_hashes, int64_t n,
                            int64_t *out);

/* ===== [commitlog read] gathering the messages of a read (native/cl_read.c) ===== */
/* Columns of mq_cl_gather (rows holds MQ_CLR_COLUMNS columns of rows_cap int64 each, column
   j at rows[j * rows_cap]): queue offset, body position and length in out, born timestamp,
   properties position and length in out (without the trailing __CRC32# property; -1, -1
   and not copied when flags is 0: nothing but UNIQ_KEY), TAGS value position and length in
   out (-1, -1: none), KEYS value position and length (-1, -1: none), flags. */
#define MQ_CLR_COLUMNS 11
#define MQ_CLR_HAS_HEADERS 1  /* flag: a named property besides TAGS, KEYS, UNIQ_KEY, __CRC32# */
#define MQ_CLR_KEY_PLAIN 2    /* flag: the KEYS value is ASCII and not escaped (key = its bytes) */
#define MQ_CLR_TAG_PLAIN 4    /* flag: the TAGS value is ASCII and not escaped (tag = its text) */
#define MQ_CLR_HAS_KEY 8      /* flag: a KEYS property */
#define MQ_CLR_HAS_TAG 16     /* flag: a TAGS property */
#define MQ_CLR_KEY_OTHER 32   /* flag: a KEYS value that is not plain (escaped or not ASCII) */
/* Statuses: the walk ended (units done, or rows_cap messages taken), or why it stopped at a
   unit (its message not taken). */
#define MQ_CLR_OK 0
#define MQ_CLR_LIMIT 1        /* sound and the unit's, but its body would pass max_bytes */
#define MQ_CLR_CORRUPT 2      /* a length does not fit TOTALSIZE or the file, or a CRC differs */
#define MQ_CLR_MISMATCH 3     /* sound, but not the message its unit names */
#define MQ_CLR_FULL 5         /* out has no room for it: call again with more room */
#define MQ_CLR_FOREIGN 6      /* not V1 with IPv4 hosts, or TOTALSIZE out of range: the
                                 per-message reader decides */
#define MQ_CLR_OTHER_FILE 7   /* the unit points outside this CommitLog file */
/* Walk the 20-byte ConsumeQueue units units[first_unit, first_unit + n_units) (unit r has
   queue offset first_queue_offset + r), or only those at the relative indexes
   select[0:n_select) when select is not NULL, from index state[0]; skip fillers (size
   0x7FFFFFFF) and gather the messages of the others from the CommitLog file buf[0:limit)
   that starts at commitlog offset file_from, for a read of queue queue_id. Each message must
   have its unit's size and queue offset and the queue id; with check_crcs, the __CRC32#
   record CRC where the message ends with one, else the body CRC (a message at or after
   commitlog offset crc_required_from without __CRC32# is corrupt). A message is taken while
   nothing was taken before it (taken plus this call's messages is 0) or the taken body bytes
   plus its body stay <= max_bytes; at most rows_cap are taken. Body, then properties, are
   copied into out.
   state (int64[8]): [0] in/out the next index, [1] in/out the output position, [2] in/out
   the body bytes taken by the read, [3] out messages gathered, [4] out the OR of their
   flags, [5] [6] [7] out commitlog offset, size and queue offset of the unit the walk
   stopped at. Returns an MQ_CLR_* status, MQ_ERR_RANGE when the units, limit or output
   position are outside their buffers, MQ_ERR_ARG for a negative count, a start index past
   the end or a select index outside [0, n_units). The rules are those of
   mqstore._purepy_cl_read.cl_gather. */
int mq_cl_gather(const uint8_t *units, size_t units_len, int64_t first_unit, int64_t n_units,
                 const int64_t *select, int64_t n_select, int64_t first_queue_offset,
                 const uint8_t *buf, size_t buf_len, int64_t limit, int64_t file_from,
                 int64_t queue_id, int check_crcs, int64_t crc_required_from, int64_t taken,
                 int64_t max_bytes, uint8_t *out, size_t out_cap, int64_t *rows,
                 int64_t rows_cap, int64_t *state);
/* transfer_to's slices: walk the units units[first_unit, first_unit + n_units) from index
   state[0] (fillers skipped) and plan each message while nothing is planned yet (state[2]
   == 0) or the planned sizes (state[1]) plus its size stay <= max_bytes; messages adjacent
   in the CommitLog file [file_from, file_from + limit) join one slice (start, end as file
   positions; a message's end is clamped to the file) in slices[2 * j], at most cap slices.
   state (int64[6]): [0] in/out the next index, [1] in/out the planned bytes, [2] in/out 1
   once a message is planned, [3] out slices written, [4] [5] out commitlog offset and size
   of the last unit looked at. Returns MQ_CLR_OK (units done), MQ_CLR_LIMIT (the unit at
   state[0] would pass max_bytes), MQ_CLR_OTHER_FILE (it is outside the file), MQ_CLR_FULL
   (cap slices written: call again), MQ_ERR_RANGE / MQ_ERR_ARG as mq_cl_gather. The rules
   are those of mqstore._purepy_cl_read.cl_transfer_plan. */
int mq_cl_transfer_plan(const uint8_t *units, size_t units_len, int64_t first_unit,
                        int64_t n_units, int64_t file_from, int64_t limit, int64_t max_bytes,
                        int64_t *slices, int64_t cap, int64_t *state);

/* ----- [cl-write] (native/cl_write.c) ----- */

/* ----- [seg-write] (native/seg_write.c) ----- */

/* ----- [cl-recovery] (native/cl_recover.c) ----- */

/* The record-CRC rule of commitlog recovery over n messages a scan accepted (message i at
   buf[positions[i]], sizes[i] bytes): a message "has" the record CRC when it is at least
   min_size bytes and its last reserved bytes are "__CRC32#" 0x01 ... 0x02. Once one message
   has it, every later one must. *required (in/out): 1 if the rule already applies; else it
   starts at the first message that has it, whose index goes to *first (and *required
   becomes 1). Returns the index of the first message under the rule without it, -1 if
   none, MQ_ERR_RANGE if a message reaches outside buf, MQ_ERR_ARG. Reference:
   mqstore/_purepy_cl_recover.py first_missing_record_crc. */
int64_t mq_cl_record_crc_rule(const uint8_t *buf, size_t buf_len, const int64_t *positions,
                              const int64_t *sizes, int64_t n, int64_t min_size,
                              int64_t reserved, int64_t *required, int64_t *first);
