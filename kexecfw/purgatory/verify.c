/* The purgatory's integrity check, shared by every architecture.
 *
 * When it links the purgatory, kexecfw writes one region per other segment into
 * purgatory_sha256_regions: where the segment is, the sha256 of the bufsz bytes it
 * wrote there, and memsz. The rest of memsz was zero-filled by the kernel at load
 * time, so it is checked to be zero rather than hashed: the same bytes are covered,
 * without hashing tens of MiB of zeros at every load (an x86_64 kernel's init_size).
 * One digest per segment also lets kexecfw hash the segments side by side.
 * All regions stay zero with --skip-sha256. The purgatory runs with identity-mapped
 * (or no) translation, so a region's start is used as a pointer as is. */
#include "sha256.h"

#define PURGATORY_SHA256_REGIONS 16             /* KEXEC_SEGMENT_MAX, include/uapi/linux/kexec.h */

struct sha256_region {
	uint64_t start;                         /* physical address of the segment */
	uint64_t bufsz;                         /* bytes written by kexecfw: their sha256 is digest */
	uint64_t memsz;                         /* bufsz..memsz must still be zero */
	uint8_t digest[SHA256_DIGEST_SIZE];
};

/* In .data, not .bss: the linker must find them in the image it patches. */
struct sha256_region purgatory_sha256_regions[PURGATORY_SHA256_REGIONS]
	__attribute__((section(".data"), aligned(8))) = { { 0 } };

int purgatory_verify_sha256(void);

typedef uint64_t __attribute__((may_alias)) word_t;

/* Whether len bytes at p are all zero: aligned 64-bit loads in between (arm64 runs the purgatory
 * with the MMU off, where an unaligned load faults), bytes at the unaligned ends. */
static int all_zero(const uint8_t *p, uint64_t len)
{
	const word_t *w;
	uint64_t acc = 0;

	for (; len && ((uintptr_t)p & 7); len--)
		acc |= *p++;
	for (w = (const word_t *)p; len >= 8; len -= 8)
		acc |= *w++;
	for (p = (const uint8_t *)w; len; len--)
		acc |= *p++;
	return acc == 0;
}

int purgatory_verify_sha256(void)
{
	struct sha256_ctx ctx;
	uint8_t digest[SHA256_DIGEST_SIZE];
	uint8_t differ = 0;
	int i, j;

	for (i = 0; i < PURGATORY_SHA256_REGIONS; i++) {
		const struct sha256_region *r = &purgatory_sha256_regions[i];
		const uint8_t *base = (const uint8_t *)(uintptr_t)r->start;

		if (!r->memsz)
			continue;       /* an unused region; all of them with --skip-sha256 */
		if (r->bufsz > r->memsz)
			return 1;
		sha256_init(&ctx);
		sha256_update(&ctx, base, (size_t)r->bufsz);
		sha256_final(&ctx, digest);
		for (j = 0; j < SHA256_DIGEST_SIZE; j++)
			differ |= digest[j] ^ r->digest[j];
		if (!all_zero(base + r->bufsz, r->memsz - r->bufsz))
			differ = 1;
	}
	return differ ? 1 : 0;
}
