/* CRC-32C (Castagnoli), the checksum of weir's chunk records. Uses the CPU's crc32
 * instruction where there is one (SSE 4.2 on x86-64), else a table-driven loop: zlib's CRC-32
 * cost a fifth of the buffer's ingest time; the instruction makes it a rounding error. */
#ifndef WEIR_CRC32C_H
#define WEIR_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) over n bytes. */
uint32_t weir_crc32c(uint32_t crc, const void *data, size_t n);

#endif
