"""Every named limit of the ledger, in one place.

Limits are enforced at the gRPC edge (with a precise error naming the field) and asserted again
in the core. Units come last in names (`timeout_seconds_max`), as in TigerBeetle's style.
"""

from __future__ import annotations

# Identifiers: client-chosen ids of accounts, transfers and requests.
ID_LENGTH_MAX = 64
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
REQUEST_ID_LENGTH_MAX = 64

# Batches.
ACCOUNTS_PER_BATCH_MAX = 1_000
TRANSFERS_PER_BATCH_MAX = 8_000
POSTINGS_PER_ENTRY_MAX = 64
POSTINGS_PER_ENTRY_MIN = 2

# Money. Amounts are integer minor units; one posting may move at most 10^15 minor units
# (ten trillion pounds), and running totals stay within a signed 64-bit integer.
AMOUNT_MINOR_MAX = 10**15
TOTAL_MINOR_MAX = 2**63 - 1

# Free text and metadata.
DESCRIPTION_LENGTH_MAX = 256
METADATA_KEYS_MAX = 16
METADATA_KEY_LENGTH_MAX = 64
METADATA_BYTES_MAX = 4_096
ACCOUNT_CODE_LENGTH_MAX = 32
OWNER_LENGTH_MAX = 128

# Two-phase entries.
PENDING_TIMEOUT_SECONDS_MAX = 90 * 24 * 3600
PENDING_TIMEOUT_SECONDS_DEFAULT = 0  # 0 = the hold never expires by itself

# Effective (value) dates accepted relative to the business date.
EFFECTIVE_DATE_PAST_DAYS_MAX = 3_660
EFFECTIVE_DATE_FUTURE_DAYS_MAX = 366

# Paging.
PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1_000
PAGE_TOKEN_LENGTH_MAX = 512

# Change feed.
WATCH_PAGE_SIZE_DEFAULT = 500
WATCH_PAGE_SIZE_MAX = 1_000

# Transport.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024
RPC_DEADLINE_SECONDS_DEFAULT = 30.0
