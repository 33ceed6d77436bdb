"""Byte layouts of Kafka's log (magic 2), as constants and ``struct.Struct`` objects only.

The tables these come from are in FORMATS.md ("segments engine") and
``reference/kafka-storage.md`` section 2-3. All integers are big-endian.

RecordBatch header (61 bytes)::

    off size field                 off size field
      0    8 baseOffset             27    8 baseTimestamp
      8    4 batchLength (size-12)  35    8 maxTimestamp
     12    4 partitionLeaderEpoch   43    8 producerId
     16    1 magic (2)              51    2 producerEpoch
     17    4 crc (CRC-32C of 21..)  53    4 baseSequence
     21    2 attributes             57    4 recordsCount
     23    4 lastOffsetDelta        61    . records
"""
from __future__ import annotations

import struct

# ----- RecordBatch v2 -----
MAGIC = 2
#: baseOffset + batchLength: Kafka's LOG_OVERHEAD
LOG_OVERHEAD = 12
#: the whole header: Kafka's RECORD_BATCH_OVERHEAD
RECORD_BATCH_OVERHEAD = 61
#: first byte covered by the CRC (the attributes field)
CRC_START = 21
#: position of the fields read when walking batch headers
LAST_OFFSET_DELTA_POS = 23
MAX_TIMESTAMP_POS = 35
RECORDS_COUNT_POS = 57

#: bytes [0, 21): baseOffset, batchLength, partitionLeaderEpoch, magic, crc
BATCH_PREFIX = struct.Struct(">qiibI")
#: bytes [21, 61): attributes, lastOffsetDelta, baseTimestamp, maxTimestamp, producerId,
#: producerEpoch, baseSequence, recordsCount
BATCH_CRC_HEADER = struct.Struct(">hiqqqhii")
#: the whole 61-byte header
BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
#: bytes [0, 27): enough to know which offsets a batch holds
BATCH_OFFSETS = struct.Struct(">qiibIhi")
BASE_OFFSET_AND_LENGTH = struct.Struct(">qi")
LAST_OFFSET_DELTA = struct.Struct(">i")
MAX_TIMESTAMP = struct.Struct(">q")
#: the crc field (uint32 at 17)
CRC = struct.Struct(">I")
CRC_POS = 17

# attributes bits
COMPRESSION_CODEC_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08  # 1 = LogAppendTime
TRANSACTIONAL_FLAG_MASK = 0x10
CONTROL_FLAG_MASK = 0x20
DELETE_HORIZON_FLAG_MASK = 0x40
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = 0  # what mqstore writes (kafka-python writes 0 too)
NO_TIMESTAMP = -1

#: mqstore's tag travels as this record header (Kafka has no tags)
TAG_HEADER = "mqstore.tag"
TAG_HEADER_BYTES = TAG_HEADER.encode("utf-8")

# ----- indexes -----
#: ``.index`` entry: int32 relative offset, int32 position in ``.log``
OFFSET_INDEX_ENTRY = struct.Struct(">ii")
OFFSET_INDEX_ENTRY_SIZE = 8
#: ``.timeindex`` entry: int64 timestamp, int32 relative offset
TIME_INDEX_ENTRY = struct.Struct(">qi")
TIME_INDEX_ENTRY_SIZE = 12
#: largest relative offset an index entry can hold (a roll is forced before it)
MAX_RELATIVE_OFFSET = 2**31 - 1
#: largest ``.log`` size: positions are int32
MAX_SEGMENT_POSITION = 2**31 - 1

# ----- files -----
FILENAME_DIGITS = 20
LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
TXN_INDEX_SUFFIX = ".txnindex"
DELETED_SUFFIX = ".deleted"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
LOCK_FILE = ".lock"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
CHECKPOINT_VERSION = 0
#: ``<root>/.creating/<topic>`` exists while ``create_topic`` makes the topic's directories
CREATING_DIR = ".creating"

# ----- internal topics -----
CONSUMER_OFFSETS_TOPIC = "__consumer_offsets"
