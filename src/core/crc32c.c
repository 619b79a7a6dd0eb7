/* CRC-32C, reflected polynomial 0x82F63B78. The hardware path runs eight bytes per crc32
 * instruction; the software path (slicing-by-8 tables built on first use) serves CPUs without
 * it and is the reference the tests compare against. Both give identical results. */
#include "weir/crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t n)
{
    pthread_once(&table_once, build_table);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc; /* little-endian: the low four bytes take the running crc */
        crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
              table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
              table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) &&                            \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WEIR_CRC_HW 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                         size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t weir_crc32c(uint32_t crc, const void *data, size_t n)
{
    crc = ~crc;
#ifdef WEIR_CRC_HW
    static int hw = -1;
    if (hw < 0) hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    crc = hw ? crc_hw(crc, data, n) : crc_sw(crc, data, n);
#else
    crc = crc_sw(crc, data, n);
#endif
    return ~crc;
}

/* For the unit test: the portable path alone. */
uint32_t weir_crc32c_sw(uint32_t crc, const void *data, size_t n);
uint32_t weir_crc32c_sw(uint32_t crc, const void *data, size_t n)
{
    return ~crc_sw(~crc, data, n);
}
