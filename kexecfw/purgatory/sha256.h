/* SHA-256 (FIPS 180-4) for the purgatory: freestanding, no libc, byte-wise memory access
 * (arm64 runs the purgatory with the MMU off, where unaligned loads fault). */
#ifndef KEXECFW_PURGATORY_SHA256_H
#define KEXECFW_PURGATORY_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32
#define SHA256_BLOCK_SIZE 64

struct sha256_ctx {
	uint32_t state[8];
	uint64_t length;                        /* bytes hashed so far */
	uint8_t block[SHA256_BLOCK_SIZE];       /* a partial block waiting for more input */
	size_t used;                            /* bytes in block[] */
};

void sha256_init(struct sha256_ctx *ctx);
void sha256_update(struct sha256_ctx *ctx, const uint8_t *data, size_t len);
void sha256_final(struct sha256_ctx *ctx, uint8_t digest[SHA256_DIGEST_SIZE]);

#endif
