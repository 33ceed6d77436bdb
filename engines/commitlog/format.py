"""The commitlog engine's bytes on disk: constants and ``struct.Struct`` objects only.

Everything is big-endian (RocketMQ writes with Java's ByteBuffer). The prose description,
with the RocketMQ source each field comes from, is in FORMATS.md ("commitlog engine") and
reference/rocketmq-store.md; this module names each field once so the rest of the engine
never spells an offset or a format string.

Message (CommitLog entry), version V1 with IPv4 hosts, 91 bytes + body + topic + properties::

    off  size  field
      0     4  TOTALSIZE            whole entry, this field included
      4     4  MAGICCODE            MESSAGE_MAGIC_V1 (BLANK_MAGIC for the end-of-file blank)
      8     4  BODYCRC              zlib.crc32(body) & 0x7FFFFFFF
     12     4  QUEUEID
     16     4  FLAG                 0
     20     8  QUEUEOFFSET          offset in the (topic, queue), assigned at append
     28     8  PHYSICALOFFSET       commitlog offset of this entry
     36     4  SYSFLAG              0 (no compression, not transactional, IPv4 hosts)
     40     8  BORNTIMESTAMP        the record's timestamp_ms
     48     8  BORNHOST             4-byte IPv4 + 4-byte port
     56     8  STORETIMESTAMP       append time, non-decreasing along the log
     64     8  STOREHOSTADDRESS     4-byte IPv4 + 4-byte port
     72     4  RECONSUMETIMES       0
     76     8  PREPARED TX OFFSET   0
     84  4+n   BODY                 int32 length + bytes
         1+n   TOPIC                length byte + UTF-8
         2+n   PROPERTIES           int16 length + ``name\\x01value\\x02`` pairs (UTF-8)
"""
from __future__ import annotations

import struct

import numpy as np

# ----- CommitLog message -----
MESSAGE_MAGIC_V1 = 0xDAA320A7
#: RocketMQ's V2 (MessageVersion.MESSAGE_VERSION_V2): the topic length is 2 bytes. mqstore
#: reads it (a RocketMQ 5 store holds such messages) and writes V1.
MESSAGE_MAGIC_V2 = 0xDAA320AB
#: SYSFLAG bits (MessageSysFlag): an IPv6 born host / store host takes 16 + 4 bytes instead
#: of 4 + 4. mqstore reads both and writes IPv4 hosts.
SYSFLAG_BORNHOST_V6 = 0x10
SYSFLAG_STOREHOST_V6 = 0x20
SYSFLAG_IPV6_HOSTS = SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6
HOST_V4_SIZE = 8
HOST_V6_SIZE = 20
POS_SYSFLAG = 36
BLANK_MAGIC = 0xCBD43194
#: fixed part of a V1 message with IPv4 hosts (everything but body, topic and properties)
MSG_FIXED_OVERHEAD = 91
#: a file always keeps room for the 8-byte blank (RocketMQ END_FILE_MIN_BLANK_LENGTH)
END_FILE_MIN_BLANK_LENGTH = 8
#: V1 stores the topic length in one byte (mqstore reads it unsigned, see docs/commitlog.md)
TOPIC_MAX_BYTES = 255
#: the properties length is a signed short
PROPERTIES_MAX_BYTES = 32767

#: TOTALSIZE .. PREPARED TX OFFSET: the 84-byte message header
MSG_HEADER = struct.Struct(">iIIiiqqiq8sq8siq")
MSG_HEADER_SIZE = MSG_HEADER.size  # 84
TOTALSIZE = struct.Struct(">i")
TOTALSIZE_AND_MAGIC = struct.Struct(">iI")
BODY_LENGTH = struct.Struct(">i")
TOPIC_LENGTH = struct.Struct(">B")
PROPERTIES_LENGTH = struct.Struct(">h")
QUEUEOFFSET = struct.Struct(">q")
PHYSICALOFFSET = struct.Struct(">q")
STORETIMESTAMP = struct.Struct(">q")
#: QUEUEOFFSET and PHYSICALOFFSET are adjacent, patched together under the append lock
QUEUEOFFSET_PHYSICALOFFSET = struct.Struct(">qq")

# byte positions of fields inside a message
POS_TOTALSIZE = 0
POS_MAGICCODE = 4
POS_BODYCRC = 8
POS_QUEUEID = 12
POS_QUEUEOFFSET = 20
POS_PHYSICALOFFSET = 28
POS_BORNTIMESTAMP = 40
POS_STORETIMESTAMP = 56
POS_BODY = 84

BODY_CRC_MASK = 0x7FFFFFFF
SYSFLAG_NONE = 0
#: 127.0.0.1, port 0 (the producer is in-process)
BORNHOST = bytes([127, 0, 0, 1]) + struct.pack(">i", 0)
#: 127.0.0.1, port 10911 (RocketMQ's default broker listen port)
STOREHOST = bytes([127, 0, 0, 1]) + struct.pack(">i", 10911)

# ----- the record CRC (RocketMQ 5 enabledAppendPropCRC) -----
#: the last property of every message mqstore writes: ``__CRC32#`` \x01 10 ASCII digits
#: \x02, the digits being UtilAll.crc32 (zlib.crc32 & 0x7FFFFFFF) of the whole message up
#: to this property, least-significant digit first (MessageDecoder#createCrc32). RocketMQ
#: checks it on recovery with forceVerifyPropCRC; mqstore always does, and on every read.
PROPERTY_CRC32 = "__CRC32#"
CRC32_PREFIX = b"__CRC32#\x01"
CRC32_DIGITS = 10
#: CommitLog.CRC32_RESERVED_LEN: len("__CRC32#") + 1 + 10 + 1
CRC32_RESERVED_LEN = 20
#: the placeholder encode() writes; patch() fills the digits once the position is known
CRC32_PLACEHOLDER = CRC32_PREFIX + b"0" * CRC32_DIGITS + b"\x02"

# ----- the skip marker -----
#: topic of the message recovery writes over a damaged range it skips
#: (on_corruption="skip"): a sound V1 message (its PHYSICALOFFSET its own offset, QUEUEID 0,
#: QUEUEOFFSET 0, no properties but the record CRC) that every reader and the dispatcher
#: ignore. '%' is outside mqstore's topic names, so no user topic can collide (RocketMQ's
#: own system topics use it the same way, e.g. %RETRY%).
SKIPPED_TOPIC = "%SKIPPED%"
#: the body starts with this text, then zeros
SKIPPED_BODY = b"mqstore recovery: damaged bytes skipped here (on_corruption=skip)"

# ----- message properties (MessageConst / MessageDecoder) -----
NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"
#: marks an escaped (base64) property name or value; see message.py
ESCAPE = "\x03"
PROPERTY_TAGS = "TAGS"
PROPERTY_KEYS = "KEYS"
PROPERTY_UNIQ_KEY = "UNIQ_KEY"
KEY_SEPARATOR = " "

# ----- the end-of-file blank -----
#: TOTALSIZE = bytes left in the file, MAGICCODE = BLANK_MAGIC
BLANK = struct.Struct(">iI")

# ----- ConsumeQueue unit -----
#: int64 commitlog offset, int32 TOTALSIZE, int64 tag hash
CQ_UNIT = struct.Struct(">qiq")
CQ_UNIT_SIZE = 20
#: RocketMQ fills the head of a queue first created at a non-zero offset with these units
CQ_FILLER_SIZE = 0x7FFFFFFF

# ----- IndexFile -----
#: beginTimestamp, endTimestamp, beginPhyOffset, endPhyOffset, hashSlotCount, indexCount
INDEX_HEADER = struct.Struct(">qqqqii")
INDEX_HEADER_SIZE = 40
INDEX_SLOT = struct.Struct(">i")
INDEX_SLOT_SIZE = 4
#: keyHash, phyOffset, timeDiff (seconds since beginTimestamp), prevIndex
INDEX_ENTRY = struct.Struct(">iqii")
INDEX_ENTRY_SIZE = 20
#: the same entry as a numpy structured dtype (validation and verify read entries in bulk)
INDEX_ENTRY_DTYPE = np.dtype([("hash", ">i4"), ("phy", ">i8"), ("diff", ">i4"),
                              ("prev", ">i4")])
#: entry 0 is never used: indexCount starts at 1 and 0 means "no entry"
INDEX_INVALID = 0
INDEX_KEY_SEPARATOR = "#"
INDEX_FILE_NAME_FORMAT = "%Y%m%d%H%M%S"  # + 3-digit milliseconds: yyyyMMddHHmmssSSS

# ----- StoreCheckpoint -----
CHECKPOINT_FILE_SIZE = 4096
#: physicMsgTimestamp, logicsMsgTimestamp, indexMsgTimestamp
CHECKPOINT = struct.Struct(">qqq")
#: RocketMQ's StoreCheckpoint.getMinTimestamp() slack
CHECKPOINT_SLACK_MS = 3000

# ----- names under the store root -----
COMMITLOG_DIR = "commitlog"
CONSUMEQUEUE_DIR = "consumequeue"
INDEX_DIR = "index"
CONFIG_DIR = "config"
CHECKPOINT_FILE = "checkpoint"
ABORT_FILE = "abort"
LOCK_FILE = "lock"
TOPICS_FILE = "topics.json"
CONSUMER_OFFSET_FILE = "consumerOffset.json"
#: logStart.json (store root): {"commitlogMinOffset": n}, where retention left the CommitLog's
#: first file (mqstore's; RocketMQ keeps no such record): a first file after it was lost
LOG_START_FILE = "logStart.json"
FILE_NAME_DIGITS = 20
